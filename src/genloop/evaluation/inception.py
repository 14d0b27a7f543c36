"""Optional Inception-v3 feature backend: FIDs comparable with published numbers, from a local weights file.

GenLoop's default yardstick is a small net trained on the dataset itself (:mod:`.features`), because
GenLoop works offline. Users who want numbers comparable with the literature can point GenLoop at the
standard FID Inception weights, ``pt_inception-2015-12-05-6726825d.pth`` — the TensorFlow FID graph
ported to PyTorch and distributed with pytorch-fid (tag ``fid_weights`` of its GitHub releases). The
file is a plain state dict. Without ``--weights``, GenLoop downloads it once into its cache
(``~/.cache/genloop/weights``, or ``$GENLOOP_CACHE_DIR/weights``) the way it downloads MNIST
(:func:`genloop.data.builtin.download`): streamed into a temporary file that is kept only if its sha256
starts with the published ``6726825d`` (the checksum prefix in the file name, torch hub's convention), and
its 472 tensor names and shapes are then checked too. Offline, the error says where to put the file.

The network is written out here in plain torch, because torchvision is not a dependency. It is
Inception-v3 (Szegedy et al., 2016) with the module names of torchvision's ``Inception3``, which the
weights file uses (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_var``, ...,
``fc.weight``), and with the three quirks of the TensorFlow FID graph:

* 1008 output classes and no auxiliary classifier;
* the average pools inside the A, C and E blocks ignore the zero padding (``count_include_pad=False``,
  TensorFlow's behaviour);
* the pool branch of the last block (``Mixed_7c``) is a *max* pool — a slip in the original graph that
  every FID implementation has to keep.

The file holds 472 tensors: 94 conv layers x (conv weight + BatchNorm weight, bias, running mean,
running var) plus ``fc.weight`` (1008 x 2048) and ``fc.bias``; a copy re-saved by a newer torch may
add the 94 ``bn.num_batches_tracked`` counters, which are accepted and ignored. 23,850,960 parameters.

Features are the 2048-d "pool3" activations (global average pool after ``Mixed_7c``), the ones FID
is defined on; class probabilities are the softmax of ``fc``, for the Inception Score.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.image import to_float
from ..errors import DataError, NotFoundError
from ..paths import cache_dir
from ..serialization import sha256_file, warn_foreign_weights

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SOURCE = "the pytorch-fid GitHub releases (tag fid_weights)"
FID_WEIGHTS_URLS = [f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_NAME}"]
# The published checksum: the sha256 prefix in the file name (torch hub's naming convention).
FID_WEIGHTS_SHA256 = "6726825d"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
# Counters that BatchNorm state dicts gained in torch 0.4.1; the 2018 weights file predates them.
_OPTIONAL_SUFFIX = ".num_batches_tracked"


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001, as in TensorFlow) -> ReLU; named ``conv`` and ``bn`` like the file."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int | tuple[int, int], **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow's, averages only the pixels inside the image."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches, concatenated (64 + 64 + 96 + pool_features)."""

    def __init__(self, in_ch: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_ch, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_ch, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, strided double 3x3 and a max pool (384 + 96 + in_ch)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1); 4 x 192 output channels."""

    def __init__(self, in_ch: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: strided 3x3, a 7x7-then-strided-3x3 branch and a max pool (320 + 192 + in_ch)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 heads: 320 + 768 + 768 + 192 = 2048 channels.

    ``pool`` is the FID graph's pooling for the pool branch: average (``Mixed_7b``) or max (``Mixed_7c``).
    """

    def __init__(self, in_ch: int, pool: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_ch, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_ch, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """The FID variant of Inception-v3. Takes (N, 3, 299, 299) in [-1, 1]; ``forward`` returns (pool3, logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool=_avg_pool_same)
        self.Mixed_7c = InceptionE(2048, pool=_max_pool_same)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """The 2048-d features FID uses: the global average pool after the last block."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
            self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ):  # fmt: skip
            x = block(x)
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.pool3(x)
        return f, self.fc(f)


def expected_keys(model: nn.Module | None = None) -> set[str]:
    """The state-dict keys a FID weights file must hold (without the optional BatchNorm counters): 472."""
    model = model if model is not None else FIDInceptionV3()
    return {k for k in model.state_dict() if not k.endswith(_OPTIONAL_SUFFIX)}


def _read_state_dict(path: Path, pinned: bool = False) -> dict[str, torch.Tensor]:
    """A plain {name: tensor} dict from .pth/.pt/.bin/.ckpt (torch.load, weights only) or .safetensors. A pickle
    file warns once (:func:`~genloop.serialization.warn_foreign_weights`) unless ``pinned``: the standard FID
    file, whose bytes were checked against the published sha256."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            if not pinned:
                warn_foreign_weights(path)
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise DataError(f"{path}: unknown weights format {suffix!r}; use a .pth/.pt state dict or .safetensors")
    except DataError:
        raise
    except Exception as e:  # torch and safetensors raise many types for truncated or foreign files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: not a readable weights file ({msg})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a checkpoint wrapping the state dict
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise DataError(f"{path}: expected a state dict of named tensors, got {type(state).__name__}")
    return state


def load_fid_inception_state(model: FIDInceptionV3, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` after checking names and shapes; one-line DataError on any mismatch."""
    own = model.state_dict()
    want = expected_keys(model)
    got = {k for k in state if not k.endswith(_OPTIONAL_SUFFIX)}
    missing, unexpected = sorted(want - got), sorted(got - want)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise DataError(
            f"{source}: not FID Inception-v3 weights: {len(missing)} of {len(want)} expected keys missing and "
            f"{len(unexpected)} unexpected (e.g. {example!r})"
        )
    bad_shape = sorted(k for k in want if tuple(state[k].shape) != tuple(own[k].shape))
    if bad_shape:
        k = bad_shape[0]
        raise DataError(
            f"{source}: {len(bad_shape)} tensors have the wrong shape for FID Inception-v3 "
            f"(e.g. {k!r}: {tuple(state[k].shape)}, expected {tuple(own[k].shape)})"
        )
    weights = {k: state[k].to(own[k].dtype) for k in want}
    model.load_state_dict(weights, strict=False)  # strict=False: the optional counters may be absent


def checked_rgb(x: torch.Tensor) -> torch.Tensor:
    """Images given to a pretrained backbone, checked (one-line errors) and as float RGB in [-1, 1]: uint8 or
    float, grey repeated to three channels. Every backbone (Inception, hf:PATH) takes its input through here."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"expected a tensor of images, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[-1] < 1 or x.shape[-2] < 1:
        raise DataError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = to_float(x)
    if not x.is_floating_point():
        raise DataError(f"images must be float in [-1, 1] or uint8, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise DataError("images contain NaN or infinite values")
    return _to_rgb(x)


def _to_rgb(x: torch.Tensor) -> torch.Tensor:
    """1 channel -> repeated to 3; 2 (grey + alpha) -> grey repeated; 3 -> as is; 4 (RGBA) -> alpha dropped."""
    c = x.shape[1]
    if c in (1, 2):
        return x[:, :1].expand(-1, 3, -1, -1)
    if c in (3, 4):
        return x[:, :3]
    raise DataError(f"Inception takes images with 1 to 4 channels, got {c}")


class InceptionFeatureExtractor:
    """FID Inception-v3 with :class:`~genloop.evaluation.features.FeatureExtractor`'s interface.

    It accepts images of any size and 1-4 channels (float in [-1, 1] or uint8; grey is repeated to
    RGB, alpha dropped) and resizes them bilinearly to 299x299 as pytorch-fid does, so ``channels``
    and ``image_size`` are None: there is no fixed input shape. ``accuracy`` is NaN — the net was not
    trained on the user's data, so it has no accuracy to report.

    Batches are processed ``max_batch`` images at a time whatever ``batch_size`` says: at 299 px one
    image needs tens of MB of activations, so a caller's 256 would need gigabytes on a CPU.
    """

    kind = "inception"

    def __init__(
        self, net: FIDInceptionV3, *, sha256: str, device: torch.device | str = "cpu", max_batch: int = 32
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.sha256 = sha256
        self.id = f"inception-v3-fid:{sha256[:12]}"
        self.accuracy = float("nan")
        self.accuracy_split: str | None = None
        self.feature_dim = FEATURE_DIM
        self.num_classes = NUM_CLASSES
        self.channels: int | None = None
        self.image_size: int | None = None
        self.max_batch = max(1, int(max_batch))

    def __repr__(self) -> str:
        return (
            f"InceptionFeatureExtractor(id={self.id!r}, feature_dim={self.feature_dim}, num_classes={self.num_classes})"
        )

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        return checked_rgb(x)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return x

    @torch.no_grad()
    def features_and_probs(self, x: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """pool3 features (N, 2048) and softmax over the 1008 classes (N, 1008), float64 on the CPU."""
        x = self._check(x)
        step = max(1, min(int(batch_size), self.max_batch))
        feats, probs = [], []
        for i in range(0, x.shape[0], step):
            f, logits = self.net(self._prepare(x[i : i + step]))
            feats.append(f.double().cpu())
            probs.append(F.softmax(logits.double(), dim=1).cpu())
        return (
            torch.cat(feats) if feats else torch.empty(0, FEATURE_DIM, dtype=torch.float64),
            torch.cat(probs) if probs else torch.empty(0, NUM_CLASSES, dtype=torch.float64),
        )

    def features(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """pool3 activations, float64 (N, 2048)."""
        return self.features_and_probs(x, batch_size)[0]

    def probs(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Softmax over the 1008 Inception classes, float64 (N, 1008)."""
        return self.features_and_probs(x, batch_size)[1]


def fid_weights_path(timeout: float = 60) -> Path:
    """The cached FID weights file, downloaded on first use and checked against the published sha256 prefix.

    Why download at all: numbers comparable with the literature need these exact weights, and asking every
    user to fetch a 91 MB file by hand is where most stop. A cached copy with the right checksum is used
    without touching the network. A download with the wrong checksum is never kept, and neither is a cached
    copy that fails the check; offline, one NotFoundError line says what to download and where to put it.
    """
    from ..data.builtin import download

    dest = cache_dir("weights") / FID_WEIGHTS_NAME
    try:
        return download(FID_WEIGHTS_URLS, dest, sha256=FID_WEIGHTS_SHA256, timeout=timeout)
    except DataError as e:
        dest.unlink(missing_ok=True)  # a cached copy that failed the checksum must not be trusted later
        raise NotFoundError(
            f"no FID Inception weights: {e} (offline?); download {FID_WEIGHTS_NAME} from {FID_WEIGHTS_SOURCE} "
            f"into {dest.parent}, or pass --weights PATH"
        ) from None


def load_inception(
    path: str | os.PathLike | None = None, device: torch.device | str = "cpu"
) -> InceptionFeatureExtractor:
    """Build FID Inception-v3 from a local weights file (.pth/.pt state dict or .safetensors).

    ``path`` None: the cached standard file, downloaded on first use (:func:`fid_weights_path`). A missing
    file raises NotFoundError saying where to get it; a file with other tensors, DataError.
    """
    pinned = path is None
    if path is None:
        path = fid_weights_path()
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(
            f"{path}: no such Inception weights file; download {FID_WEIGHTS_NAME} from {FID_WEIGHTS_SOURCE} "
            "and pass its path (or leave out --weights to download it into the cache)"
        )
    state = _read_state_dict(path, pinned=pinned)
    net = FIDInceptionV3()
    load_fid_inception_state(net, state, str(path))
    return InceptionFeatureExtractor(net, sha256=sha256_file(path), device=device)


__all__ = [
    "FID_WEIGHTS_NAME",
    "FID_WEIGHTS_SHA256",
    "FID_WEIGHTS_URLS",
    "FIDInceptionV3",
    "InceptionFeatureExtractor",
    "expected_keys",
    "fid_weights_path",
    "load_fid_inception_state",
    "load_inception",
]
