"""Image datasets as tensors, and a resumable, seeded stream of training batches.

Prepared images are kept as ``uint8`` (N, C, H, W) — a quarter of the memory of float32 — and turned into
floats in [-1, 1] one batch at a time. The batch stream is a pure function of (seed, epoch, position), so
a checkpoint only needs those three numbers to continue exactly where training stopped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

SPLITS = ("train", "val", "test")


@dataclass
class DataConfig:
    """Which images to train on and how to prepare them."""

    name: str = "digits"  # a built-in dataset (see `genloop data list`) or a path: image folder, IDX, .npz
    image_size: int = 32  # square side in pixels; sources are resized (and centre-cropped) to it
    channels: int | None = None  # 1 grey, 3 RGB, 4 RGBA; None keeps the source's own
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train / val / test fractions
    split_seed: int = 0  # the split is a seeded permutation: same seed, same split
    flip: bool = False  # augmentation: random horizontal flips (off for digits: a flipped 7 is no 7)
    shift: int = 0  # augmentation: random shifts of up to this many pixels
    cache: bool = True  # keep the prepared tensors keyed by source hash, so a second run does not re-decode

    def __post_init__(self) -> None:
        from ..errors import ConfigError

        if not 4 <= self.image_size <= 1024:
            raise ConfigError(f"data.image_size must be between 4 and 1024, got {self.image_size}")
        if self.channels not in (None, 1, 3, 4):
            raise ConfigError(f"data.channels must be 1, 3, 4 or null, got {self.channels}")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"data.split must be three non-negative fractions summing to 1, got {self.split}")
        if self.shift < 0:
            raise ConfigError(f"data.shift must be >= 0, got {self.shift}")


@dataclass
class ImageDataset:
    """Every image of one dataset, prepared, with its split."""

    name: str
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor | None  # int64 (N,), or None for unlabelled data
    class_names: list[str] | None
    splits: dict[str, torch.Tensor]  # "train" / "val" / "test" -> int64 indices into images
    source_hash: str  # sha256 over the source files and the preparation settings
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    captions: list[str] | None = None  # one per image (captioned folders, digits-captions); None: uncaptioned

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    def get(self, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The uint8 images (and labels) of one split."""
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; valid: {', '.join(self.splits)}")
        idx = self.splits[split]
        return self.images[idx], (self.labels[idx] if self.labels is not None else None)

    def get_captions(self, split: str) -> list[str]:
        """The captions of one split, in the order of :meth:`get`; DataError for an uncaptioned dataset."""
        if self.captions is None:
            from ..errors import DataError

            raise DataError(
                f"dataset {self.name!r} has no captions; give a folder a metadata.jsonl (file_name, text) or a .txt "
                "beside each image, or use --data digits-captions"
            )
        return [self.captions[i] for i in self.splits[split].tolist()]

    def float_images(self, split: str) -> torch.Tensor:
        return to_float(self.get(split)[0])

    def info(self) -> dict[str, Any]:
        """What `genloop data info` prints."""
        out: dict[str, Any] = {
            "name": self.name,
            "images": int(self.images.shape[0]),
            "shape": list(self.images.shape[1:]),
            "channels": self.channels,
            "image_size": self.image_size,
            "classes": self.num_classes,
            "captioned": self.captions is not None,
            "class_names": self.class_names,
            "value_range": [int(self.images.min()), int(self.images.max())] if self.images.numel() else None,
            "splits": {k: int(v.numel()) for k, v in self.splits.items()},
            "source_hash": self.source_hash[:16],
        }
        out.update({k: v for k, v in self.meta.items() if k not in out})
        return out


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped, rounded)."""
    return images.detach().float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def augment(x: torch.Tensor, flip: bool, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and integer shifts (zero padding, i.e. -1 after normalisation)."""
    n = x.shape[0]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    if shift > 0:
        h, w = x.shape[-2:]
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift), value=-1.0)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    return x


class ImageBatches:
    """An endless, seeded stream of (images, labels) batches over one split.

    Each epoch is a fresh permutation drawn from ``seed + epoch``; the last partial batch is dropped.
    ``state_dict()`` is just (epoch, position), so resuming replays nothing and skips nothing.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        batch_size: int,
        seed: int = 0,
        flip: bool = False,
        shift: int = 0,
        device: torch.device | str = "cpu",
        tokens: torch.Tensor | None = None,
    ) -> None:
        n = images.shape[0]
        if n == 0:
            from ..errors import DataError

            raise DataError("the training split is empty; use more images or a larger train fraction in data.split")
        self.images, self.labels = images, labels
        self.tokens = tokens  # per-image caption token ids (N, L), batched as a third element when given
        self.batch_size = min(batch_size, n)
        self.seed, self.flip, self.shift = seed, flip, shift
        self.device = torch.device(device)
        self.epoch, self.position = 0, 0
        self._order: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._order is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._order = torch.randperm(self.images.shape[0], generator=g)
        return self._order

    @property
    def population(self) -> int:
        """How many examples batches are drawn from (differential privacy's sample rate is batch_size / this)."""
        return int(self.images.shape[0])

    def __iter__(self) -> ImageBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        if self.position + self.batch_size > self.images.shape[0]:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        idx = self._permutation()[self.position : self.position + self.batch_size]
        batch = self._batch(idx, (self.seed * 1_000_003 + self.epoch) * 1_000_033 + self.position)
        self.position += self.batch_size
        return batch

    def take(self, indices: np.ndarray | torch.Tensor, step: int) -> tuple[torch.Tensor, ...]:
        """The batch of exactly these examples (any number, also none), augmented from a generator seeded by
        ``(seed, step)``: how differential privacy's Poisson sampling (genloop.training.dp) draws its batches.
        The stream's own position does not move."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self._batch(idx, (self.seed * 1_000_003 + step) * 1_000_033 + 999_983)

    def _batch(self, idx: torch.Tensor, aug_seed: int) -> tuple[torch.Tensor, ...]:
        x = to_float(self.images[idx])
        if (self.flip or self.shift) and len(idx):
            x = augment(x, self.flip, self.shift, torch.Generator().manual_seed(aug_seed))
        y = self.labels[idx] if self.labels is not None else None
        if self.device.type == "cuda":  # page-locked memory: the copy to the GPU overlaps the next step's work
            x, y = x.pin_memory(), (y.pin_memory() if y is not None else None)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True) if y is not None else None
        if self.tokens is None:
            return x, y
        return x, y, self.tokens[idx].to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._order = int(state["epoch"]), int(state["position"]), None
