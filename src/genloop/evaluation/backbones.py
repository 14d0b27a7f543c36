"""Features from a local Hugging Face vision model (``--features hf:PATH``): DINOv2, CLIP image towers, others.

Why: FID and its companions are only as good as the features they are computed on. GenLoop's own reference
net works offline on any data, and Inception-v3 makes numbers comparable with the literature, but the
Fréchet distance on DINOv2 features tracks human judgement of image quality better than Inception's
(Stein et al., "Exposing flaws of generative model evaluation metrics", NeurIPS 2023). A user who has such
a model folder (``save_pretrained`` output, or a hub snapshot) can point ``genloop eval`` at it; nothing is
downloaded (``local_files_only=True``).

What is loaded: the folder's ``config.json`` decides the class — ``dinov2`` → ``Dinov2Model``; ``clip`` or
``clip_vision_model`` → ``CLIPVisionModel`` (the image tower only: the text tower of a full CLIP folder is
not loaded); ``siglip``/``siglip_vision_model`` → ``SiglipVisionModel``; anything else → ``AutoModel``. The
features are the pooled output (``pooler_output``: DINOv2's and CLIP's layer-normed CLS token), else the
first token of ``last_hidden_state``, else its spatial mean (convolutional nets).

Preprocessing follows the folder's ``preprocessor_config.json`` when present — resize (shortest edge, or
height x width), centre crop, rescale to [0, 1], normalise by ``image_mean``/``image_std`` — and is done in
torch here rather than by ``AutoImageProcessor``, whose fast processors need torchvision (not a GenLoop
dependency) and whose slow ones go through PIL one image at a time. Resizing is torch's antialiased
bicubic/bilinear, close to but not bit-identical with PIL's. Without a preprocessor config, images are
resized to the model's ``image_size`` and normalised with ImageNet's (CLIP's, for CLIP) statistics.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError, NotFoundError
from ..serialization import sha256_file, warn_if_pickle_folder

HF_PREFIX = "hf:"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# PIL's resample codes, as preprocessor configs store them; torch has no Lanczos, so it falls back to bicubic
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def features_tag(features: str) -> str:
    """A file-name-safe name for a ``--features`` choice: ``ref``, ``inception``, or ``hf-<folder>-<hash8>``.

    Why: the result goes to ``eval/metrics_<tag>.json``, and ``hf:/models/dinov2-small`` is not a file name;
    the hash of the resolved path keeps two folders with the same name apart.
    """
    if not features.startswith(HF_PREFIX):
        return features
    path = Path(features[len(HF_PREFIX) :]).expanduser().resolve()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-.") or "model"
    return f"hf-{name[:40]}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Preprocess:
    """What the model expects: resize, optional centre crop, and per-channel normalisation (of [0, 1] pixels)."""

    resize: tuple[int, int] | int | None  # (height, width), or an int: the shortest edge
    crop: tuple[int, int] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str = "bicubic"
    normalize: bool = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> the model's input."""
        x = (x + 1) / 2  # the [0, 1] that rescale_factor 1/255 gives from uint8
        if self.resize is not None:
            h, w = x.shape[-2:]
            if isinstance(self.resize, int):
                s = self.resize / min(h, w)
                size = (max(1, round(h * s)), max(1, round(w * s)))
            else:
                size = self.resize
            if tuple(size) != (h, w):
                kwargs: dict[str, Any] = {} if self.mode == "nearest" else {"align_corners": False, "antialias": True}
                x = F.interpolate(x, size=size, mode=self.mode, **kwargs)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if h < ch or w < cw:  # pad like the HF processors do for too-small images
                ph, pw = max(ch - h, 0), max(cw - w, 0)
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
                h, w = x.shape[-2:]
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        if self.normalize:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x


def _hw(value: Any) -> tuple[int, int] | int | None:
    """A preprocessor ``size``/``crop_size``: int (square), {height, width}, or {shortest_edge} (an int)."""
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"]))
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
    raise DataError(f"unsupported image size in preprocessor_config.json: {value!r}")


def read_preprocess(folder: Path, config: Any) -> Preprocess:
    """The folder's preprocessing (``preprocessor_config.json``), or the model type's usual one without it."""
    is_clip = "clip" in str(getattr(config, "model_type", ""))
    default_mean, default_std = (CLIP_MEAN, CLIP_STD) if is_clip else (IMAGENET_MEAN, IMAGENET_STD)
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        size = getattr(config, "image_size", None) or getattr(getattr(config, "vision_config", None), "image_size", 224)
        return Preprocess(resize=(int(size), int(size)), crop=None, mean=default_mean, std=default_std)
    try:
        pc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{file}: not a readable preprocessor config ({e})") from None
    resize = _hw(pc.get("size")) if pc.get("do_resize", True) else None
    crop = _hw(pc.get("crop_size")) if pc.get("do_center_crop", False) else None
    if isinstance(crop, int):
        crop = (crop, crop)
    mean = tuple(float(v) for v in pc.get("image_mean") or default_mean)
    std = tuple(float(v) for v in pc.get("image_std") or default_std)
    if len(mean) != 3 or len(std) != 3:
        raise DataError(f"{file}: image_mean and image_std must have 3 values (RGB)")
    return Preprocess(
        resize=resize,
        crop=crop,
        mean=mean,
        std=std,
        mode=_RESAMPLE.get(int(pc.get("resample", 3)), "bicubic"),
        normalize=bool(pc.get("do_normalize", True)),
    )


def folder_sha256(folder: Path) -> str:
    """One sha256 over the files that decide the features: config, preprocessor config and weights.

    Why: ``feature_net.sha256`` in a result must change when the model does, or two evaluations on
    different weights would look comparable.
    """
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.name in ("config.json", "preprocessor_config.json") or f.suffix in _WEIGHT_SUFFIXES):
            h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _model_class(model_type: str) -> Any:
    import transformers

    if model_type == "dinov2":
        return transformers.Dinov2Model
    if model_type in ("clip", "clip_vision_model"):
        return transformers.CLIPVisionModel
    if model_type in ("siglip", "siglip_vision_model"):
        return transformers.SiglipVisionModel
    return transformers.AutoModel


class HFFeatureExtractor:
    """A local Hugging Face vision model with :class:`~genloop.evaluation.features.FeatureExtractor`'s interface.

    Accepts images of any size and 1-4 channels (float in [-1, 1] or uint8; grey repeated to RGB, alpha
    dropped). It has no classes, so ``probs`` is (N, 0): the suite skips the Inception Score and the class
    metrics for it. ``accuracy`` is NaN (nothing was trained on the user's data).
    """

    kind = "hf"

    def __init__(
        self,
        model: Any,
        preprocess: Preprocess,
        *,
        name: str,
        sha256: str,
        feature_dim: int,
        device: torch.device | str = "cpu",
        max_batch: int = 64,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.sha256 = sha256
        self.id = f"hf:{name}:{sha256[:12]}"
        self.accuracy = float("nan")
        self.accuracy_split: str | None = None
        self.feature_dim = int(feature_dim)
        self.num_classes = 0
        self.channels: int | None = None
        self.image_size: int | None = None
        self.max_batch = max(1, int(max_batch))

    def __repr__(self) -> str:
        return f"HFFeatureExtractor(id={self.id!r}, feature_dim={self.feature_dim})"

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        from .inception import checked_rgb

        return checked_rgb(x)

    def _pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            hidden = out.last_hidden_state
            pooled = hidden[:, 0] if hidden.dim() == 3 else hidden.flatten(2).mean(2)
        return pooled.reshape(pooled.shape[0], -1)

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Pooled features, float64 (N, feature_dim) on the CPU."""
        x = self._check(x)
        step = max(1, min(int(batch_size), self.max_batch))
        dtype = next(self.model.parameters()).dtype
        feats = [
            self._pooled(self.preprocess(x[i : i + step].to(self.device, torch.float32)).to(dtype)).double().cpu()
            for i in range(0, x.shape[0], step)
        ]
        return torch.cat(feats) if feats else torch.empty(0, self.feature_dim, dtype=torch.float64)

    def probs(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """No classes: an (N, 0) tensor."""
        return torch.empty(x.shape[0], 0, dtype=torch.float64)

    def features_and_probs(self, x: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x, batch_size)
        return f, torch.empty(f.shape[0], 0, dtype=torch.float64)


def load_hf_backbone(path: str | os.PathLike, device: torch.device | str = "cpu") -> HFFeatureExtractor:
    """A feature extractor from a local Hugging Face model folder; never downloads. One-line errors."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise NotFoundError(f"{folder}: no such model folder (--features hf:PATH takes a local Hugging Face folder)")
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder}: not a Hugging Face model folder (no config.json)")
    import transformers

    warn_if_pickle_folder(folder)  # transformers reads a .bin with torch.load(weights_only=True)
    verbosity, bars = transformers.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # a full CLIP folder's unused text tower is expected, not news
    transformers.utils.logging.disable_progress_bar()  # a bar per load is noise beside eval's own progress
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        model_type = str(getattr(config, "model_type", ""))
        model = _model_class(model_type).from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for foreign or partial folders
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{folder}: cannot load a vision model from it ({msg})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    if "pixel_values" not in inspect.signature(model.forward).parameters:
        raise ConfigError(f"{folder}: a {model_type} model does not take images; use a DINOv2 or CLIP vision folder")
    preprocess = read_preprocess(folder, config)
    extractor = HFFeatureExtractor(
        model,
        preprocess,
        name=f"{model_type}:{folder.name}",
        sha256=folder_sha256(folder),
        feature_dim=0,
        device=device,
    )
    side = preprocess.crop or preprocess.resize or (224, 224)
    h, w = (side, side) if isinstance(side, int) else side
    extractor.feature_dim = int(extractor.features(torch.zeros(1, 3, max(h, 1), max(w, 1))).shape[1])
    if extractor.feature_dim < 1:
        raise DataError(f"{folder}: the model gives no features")
    return extractor


__all__ = ["HFFeatureExtractor", "Preprocess", "features_tag", "folder_sha256", "load_hf_backbone", "read_preprocess"]
