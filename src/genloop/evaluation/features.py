"""A small reference network, trained on the dataset itself, whose features the image metrics compare.

FID, KID and the Inception Score are usually computed on an Inception-v3 trained on ImageNet. GenLoop
must work offline, and ImageNet features say little about 16-pixel digits anyway. So, once per dataset,
GenLoop trains a small CNN on that dataset's training split and caches it; the metrics then compare
images in *its* feature space. The numbers are therefore not comparable with published FIDs, only with
each other on the same dataset and feature net, which is why every result names the net (``id``,
``sha256``) and is reported next to the floor that real held-out images reach.

Labelled datasets train a classifier. Unlabelled ones train the same net, self-supervised, to tell which
of 0/90/180/270 degrees an image was rotated by: solving that needs shape and orientation, so the
penultimate features still describe the content (Gidaris et al., 2018).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.image import ImageBatches, ImageDataset, to_float
from ..errors import DataError, NotFoundError
from ..paths import cache_dir
from ..serialization import load_tensors, save_tensors, sha256_file

# Bump whenever the architecture or the training recipe changes: it is part of the cache key, so
# stale nets are never reused, and part of the extractor id printed with every metric.
REFNET_VERSION = "refnet-v1"


@dataclass(frozen=True)
class RefNetConfig:
    """Everything needed to rebuild a ReferenceNet before loading its weights."""

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    feature_dim: int = 128
    width: int = 32


@dataclass(frozen=True)
class TrainRecipe:
    """How the reference net is trained: a few epochs of Adam, one-cycle schedule (warm-up, cosine decay)."""

    batch_size: int = 64
    epochs: int = 8
    min_steps: int = 200  # tiny datasets still get enough updates
    max_steps: int = 2000  # large datasets stay quick on a CPU; the net is a yardstick, not a product
    lr: float = 3e-3


def _strides(image_size: int) -> list[int]:
    """Halve the resolution in each of the three blocks while it is at least 8 px, so the last map is 4-8 px.

    That keeps the cost near-constant per pixel budget: 16x16 inputs run at 8/4/4, 32x32 at 16/8/4.
    """
    strides, size = [], image_size
    for _ in range(3):
        s = 2 if size >= 8 else 1
        strides.append(s)
        size = (size + s - 1) // s
    return strides


class ReferenceNet(nn.Module):
    """Three conv blocks (conv 3x3, BatchNorm, ReLU), global average pool, a ``feature_dim`` layer, a head.

    ``features(x)`` are the penultimate activations (after ReLU, like Inception's pool3 features);
    ``forward(x)`` returns the head's logits.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        feature_dim: int = 128,
        width: int = 32,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3, 4):
            raise DataError(f"the reference net takes 1, 3 or 4 channels, got {in_channels}")
        if not 8 <= image_size <= 64:
            raise DataError(f"the reference net takes images of 8 to 64 px, got {image_size}")
        self.config = RefNetConfig(in_channels, image_size, num_classes, feature_dim, width)
        chans = [in_channels, width, 2 * width, 4 * width]
        blocks: list[nn.Module] = []
        for c_in, c_out, stride in zip(chans[:-1], chans[1:], _strides(image_size)):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(chans[-1], feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureExtractor:
    """A trained ReferenceNet in eval mode: batched, gradient-free features and class probabilities.

    ``id`` names the net (version + cache key) and ``sha256`` its weights file, so a metric can always
    say exactly which yardstick measured it.
    """

    def __init__(
        self,
        net: ReferenceNet,
        *,
        id: str,
        sha256: str,
        accuracy: float,
        kind: str,
        accuracy_split: str = "val",
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.id, self.sha256, self.accuracy, self.kind = id, sha256, float(accuracy), kind
        self.accuracy_split = accuracy_split
        self.num_classes = net.config.num_classes
        self.feature_dim = net.config.feature_dim
        self.channels = net.config.in_channels
        self.image_size = net.config.image_size

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor(id={self.id!r}, kind={self.kind!r}, accuracy={self.accuracy:.4f}, "
            f"feature_dim={self.feature_dim}, num_classes={self.num_classes})"
        )

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise DataError(f"expected a tensor of images, got {type(x).__name__}")
        if x.dtype == torch.uint8:
            x = to_float(x)
        want = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise DataError(
                f"images of shape {tuple(x.shape)} do not fit the feature net, "
                f"which expects (N, {', '.join(map(str, want))})"
            )
        if not torch.isfinite(x).all():
            raise DataError("images contain NaN or infinite values")
        return x

    @torch.no_grad()
    def features_and_probs(self, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (N, D) and softmax probabilities (N, K), both float64 on the CPU, in one pass."""
        x = self._check(x)
        feats, probs = [], []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(self.device, torch.float32)
            f = self.net.features(xb)
            feats.append(f.double().cpu())
            probs.append(F.softmax(self.net.head(f).double(), dim=1).cpu())
        d, k = self.feature_dim, self.num_classes
        return (
            torch.cat(feats) if feats else torch.empty(0, d, dtype=torch.float64),
            torch.cat(probs) if probs else torch.empty(0, k, dtype=torch.float64),
        )

    def features(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Penultimate activations, float64 (N, feature_dim)."""
        return self.features_and_probs(x, batch_size)[0]

    def probs(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Softmax over the head's classes (digits, or the 4 rotations), float64 (N, num_classes)."""
        return self.features_and_probs(x, batch_size)[1]


def cache_key(dataset: ImageDataset, seed: int = 0) -> str:
    """sha256 over what determines the trained net: the data, its shape, the recipe version and the seed."""
    payload = {
        "source_hash": dataset.source_hash,
        "image_size": dataset.image_size,
        "channels": dataset.channels,
        "version": REFNET_VERSION,
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate image i by k[i] * 90 degrees."""
    out = x.clone()
    for r in range(1, 4):
        m = k == r
        if m.any():
            out[m] = torch.rot90(x[m], r, dims=(-2, -1))
    return out


def _all_rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xs = torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])
    ys = torch.arange(4).repeat_interleave(x.shape[0])
    return xs, ys


@torch.no_grad()
def _accuracy(net: ReferenceNet, x: torch.Tensor, y: torch.Tensor, device: torch.device, bs: int = 512) -> float:
    net.eval()
    correct = 0
    for i in range(0, x.shape[0], bs):
        logits = net(x[i : i + bs].to(device))
        correct += int((logits.argmax(1).cpu() == y[i : i + bs]).sum())
    return correct / max(1, x.shape[0])


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Train on one intra-op thread on the CPU, restoring the caller's setting afterwards.

    Two reasons. Reproducibility: the thread count changes the order of floating-point reductions, so
    the same seed gives different weights (and a different ``sha256``) on machines with different core
    counts; with one thread the net is a function of the data and seed alone. Robustness: this net is
    too small to gain much from more threads, while on a shared, busy machine OpenMP threads that spin
    waiting for each other made training ~10x slower (4 s -> 50 s on digits) in our measurements.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_reference_net(
    dataset: ImageDataset,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
    recipe: TrainRecipe = TrainRecipe(),
) -> tuple[ReferenceNet, dict[str, Any]]:
    """Train a ReferenceNet on ``dataset``'s train split; return it and its state (accuracy, kind, ...).

    Never looks at the test split unless the val split is empty, and then only to report accuracy.
    Seeded and, on the CPU, single-threaded: the same dataset and seed give bit-identical weights (for the
    same torch version and device type).
    """
    device = torch.device(device)
    labels = dataset.labels
    n_classes = dataset.num_classes or (int(labels.max()) + 1 if labels is not None and labels.numel() else 0)
    kind = "classifier" if labels is not None and n_classes >= 2 else "rotation"
    num_classes = n_classes if kind == "classifier" else 4

    train_x, train_y = dataset.get("train")
    if train_x.shape[0] == 0:
        raise DataError(f"dataset {dataset.name!r} has an empty train split; the feature net has nothing to learn from")
    eval_split = next((s for s in ("val", "test") if s in dataset.splits and dataset.splits[s].numel()), "train")
    eval_x, eval_y = dataset.get(eval_split)
    eval_x = to_float(eval_x)
    if kind == "rotation":
        eval_x, eval_y = _all_rotations(eval_x)
        train_y = None

    shift = max(1, dataset.image_size // 16)  # ~2 px at 32 px: enough to stop memorising positions
    batches = ImageBatches(train_x, train_y, recipe.batch_size, seed=seed, shift=shift, device="cpu")
    steps_per_epoch = max(1, train_x.shape[0] // batches.batch_size)
    steps = min(recipe.max_steps, max(recipe.min_steps, recipe.epochs * steps_per_epoch))

    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        net = ReferenceNet(dataset.channels, dataset.image_size, num_classes).to(device)
    rot_gen = torch.Generator().manual_seed(seed + 7)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.15)

    t0 = time.perf_counter()
    net.train()
    with _one_cpu_thread(device):
        _fit(net, batches, opt, sched, steps, kind, rot_gen, device, progress, steps_per_epoch)
        acc = _accuracy(net, eval_x, eval_y, device)
    train_seconds = time.perf_counter() - t0
    if progress:
        print(f"feature net ({kind}) {eval_split} accuracy {acc:.4f} in {train_seconds:.1f}s", file=sys.stderr)
    state = {
        "version": REFNET_VERSION,
        "kind": kind,
        "num_classes": num_classes,
        "accuracy": acc,
        "accuracy_split": eval_split,
        "arch": asdict(net.config),
        "recipe": asdict(recipe),
        "steps": steps,
        "seed": int(seed),
        "dataset": dataset.name,
        "source_hash": dataset.source_hash,
    }
    return net.eval(), state


def _fit(
    net: ReferenceNet,
    batches: ImageBatches,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    steps: int,
    kind: str,
    rot_gen: torch.Generator,
    device: torch.device,
    progress: bool,
    log_every: int,
) -> None:
    """The training loop: cross-entropy on labels, or on the rotation applied to each image."""
    for step in range(steps):
        x, y = next(batches)
        if kind == "rotation":
            y = torch.randint(0, 4, (x.shape[0],), generator=rot_gen)
            x = _rotate(x, y)
        loss = F.cross_entropy(net(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step + 1) % log_every == 0:
            print(f"feature net step {step + 1}/{steps} loss {loss.item():.4f}", file=sys.stderr)


def _load_cached(path: Path, device: torch.device) -> tuple[ReferenceNet, dict[str, Any]] | None:
    """The cached net and state, or None if the file is missing, corrupt or from another version."""
    try:
        tensors, state = load_tensors(path)
        if not isinstance(state, dict) or state.get("version") != REFNET_VERSION:
            return None
        net = ReferenceNet(**state["arch"])
        net.load_state_dict(tensors)
        float(state["accuracy"]), str(state["kind"])  # the fields get_feature_extractor reads
    except (DataError, NotFoundError, KeyError, TypeError, ValueError, RuntimeError):
        return None
    return net.to(device).eval(), state


def get_feature_extractor(
    dataset: ImageDataset, device: torch.device | str = "cpu", seed: int = 0, progress: bool = False
) -> FeatureExtractor:
    """The reference feature net for ``dataset``: loaded from the cache, or trained once and cached.

    The cache file is ``cache_dir("features")/<key>.safetensors``; a corrupt or stale file is retrained
    over (atomically, so a concurrent reader never sees half a file).
    """
    device = torch.device(device)
    key = cache_key(dataset, seed)
    path = cache_dir("features") / f"{key}.safetensors"
    loaded = _load_cached(path, device) if path.is_file() else None
    if loaded is None:
        net, state = train_reference_net(dataset, device=device, seed=seed, progress=progress)
        sha = save_tensors(path, net.state_dict(), state)
    else:
        net, state = loaded
        sha = sha256_file(path)
    return FeatureExtractor(
        net,
        id=f"{REFNET_VERSION}-{key[:12]}",
        sha256=sha,
        accuracy=float(state["accuracy"]),
        kind=state["kind"],
        accuracy_split=state.get("accuracy_split", "val"),
        device=device,
    )


__all__ = [
    "REFNET_VERSION",
    "RefNetConfig",
    "TrainRecipe",
    "ReferenceNet",
    "FeatureExtractor",
    "cache_key",
    "train_reference_net",
    "get_feature_extractor",
]
