"""What an edit is given, made ready for the model: images and masks read, checked, converted and resized.

Everything here works on float images in [-1, 1] shaped (C, H, W), at the size the user gave them:

- **images** may be PIL images, paths, (C, H, W) / (N, C, H, W) float tensors, or a list of those. A file is
  decoded like the data loader decodes training images (EXIF orientation applied, 16-bit grey scaled, palette
  expanded); an alpha channel is dropped (the RGB or grey pixels are kept as they are).
- **masks**: white (1) = fill, black (0) = keep. A file or PIL image is read as grey and thresholded at half
  (>= 128 is white), a tensor at 0.5; one mask serves every image, or give one per image. A mask must have
  its image's size, and must have at least one white pixel.
- **channels**: a grey image for an RGB model is repeated to three channels; an RGB image for a grey model
  becomes its luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, as PIL's "L").
- **size**: images are resized with PIL's bicubic filter on float pixels ("F" mode, so nothing is rounded
  to 8 bits on the way), stretched to the model's square and back; an image already at the target size is
  left untouched. A mask goes to the model's size with a box filter and "any white pixel makes it white", so
  a pixel the model keeps was entirely known.
- **sha256**: of an image's or mask's decoded pixels (mode, size and pixels, as
  :func:`genloop.safety.provenance.image_sha256`, so a path and the same PIL image hash the same), or of a
  tensor's float32 values and shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ...errors import ConfigError, DataError, NotFoundError

_LUMA = (0.299, 0.587, 0.114)


@dataclass
class Source:
    """One input image as given: pixels (C, H, W) in [-1, 1] with C = 1 or 3, where it came from, its hash."""

    pixels: torch.Tensor
    name: str  # a file stem, or "input<i>": what output files are named after
    sha256: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL says it."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[1])


def _items(given: Any, what: str) -> list[Any]:
    """A single image (or a (N, C, H, W) tensor) or a list of them -> a list of single items."""
    if isinstance(given, torch.Tensor) and given.ndim == 4:
        return list(given.unbind(0))
    if isinstance(given, (list, tuple)):
        items = [t for g in given for t in (g.unbind(0) if isinstance(g, torch.Tensor) and g.ndim == 4 else [g])]
    else:
        items = [given]
    if not items:
        raise ConfigError(f"no {what} given")
    return items


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise NotFoundError(f"{path}: no such {what} file")
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable image ({msg})") from None


def _pil_pixels(im: Image.Image) -> torch.Tensor:
    """A PIL image of any mode -> (1 or 3, H, W) floats in [-1, 1] (alpha dropped)."""
    from ...data.sources import _canonical

    im = _canonical(im)
    im = im.convert({"LA": "L", "RGBA": "RGB"}.get(im.mode, im.mode))
    a = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())
    a = a[None] if a.ndim == 2 else a.permute(2, 0, 1)
    return a.float().div(127.5).sub(1.0)


def _tensor_sha256(t: torch.Tensor) -> str:
    h = hashlib.sha256(f"tensor float32 {list(t.shape)}\n".encode())
    h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _pil_sha256(im: Image.Image) -> str:
    from ...safety.provenance import image_sha256

    return image_sha256(im)


def load_images(images: Any) -> list[Source]:
    """The inputs as :class:`Source` s, in order (see the module docstring for what is accepted)."""
    out = []
    for i, item in enumerate(_items(images, "input image")):
        if isinstance(item, (str, Path)):
            im = _open(Path(item), "input image")
            out.append(Source(_pil_pixels(im), Path(item).stem or f"input{i}", _pil_sha256(im)))
        elif isinstance(item, Image.Image):
            out.append(Source(_pil_pixels(item), f"input{i}", _pil_sha256(item)))
        elif isinstance(item, torch.Tensor):
            out.append(Source(_check_tensor(item, i), f"input{i}", _tensor_sha256(item)))
        else:
            raise ConfigError(
                f"input {i}: a {type(item).__name__} is not an image; give a PIL image, a path, or a float tensor "
                "(C, H, W) in [-1, 1]"
            )
    return out


def _check_tensor(t: torch.Tensor, i: int) -> torch.Tensor:
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ConfigError(f"input {i}: a tensor image must be shaped (C, H, W) with C = 1 or 3, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ConfigError(f"input {i}: give float pixels in [-1, 1], not {t.dtype} (genloop.data.image.to_float)")
    t = t.detach().cpu().float()
    if not torch.isfinite(t).all() or t.min() < -1 or t.max() > 1:
        raise ConfigError(
            f"input {i}: tensor pixels must be finite and in [-1, 1], got {t.min().item():.3g}..{t.max().item():.3g}"
        )
    return t


def load_masks(mask: Any, sources: Sequence[Source]) -> tuple[list[torch.Tensor], list[str]]:
    """One (1, H, W) bool mask per source (True = fill) and their sha256s; every check is one line."""
    items = _items(mask, "mask")
    if len(items) not in (1, len(sources)):
        raise ConfigError(f"got {len(items)} masks for {len(sources)} images; give one mask, or one per image")
    masks, hashes = [], []
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            im = _open(Path(item), "mask")
            m, h = _pil_mask(im), _pil_sha256(im)
        elif isinstance(item, Image.Image):
            m, h = _pil_mask(item), _pil_sha256(item)
        elif isinstance(item, torch.Tensor):
            m, h = _tensor_mask(item, i), _tensor_sha256(item.float())
        else:
            raise ConfigError(f"mask {i}: a {type(item).__name__} is not a mask; give a PIL image, a path or a tensor")
        masks.append(m)
        hashes.append(h)
    if len(masks) == 1:
        masks, hashes = masks * len(sources), hashes * len(sources)
    for i, (m, src) in enumerate(zip(masks, sources, strict=True)):
        w, h = src.size
        if tuple(m.shape[1:]) != (h, w):
            which = "the mask" if len(items) == 1 else f"mask {i}"
            raise ConfigError(
                f"{which} is {m.shape[2]}x{m.shape[1]} but input {i} is {w}x{h}; a mask must have its image's size"
            )
        if not m.any():
            raise ConfigError(
                f"{'the mask' if len(items) == 1 else f'mask {i}'} has no white pixel, so there is nothing to fill "
                "(white = fill, black = keep)"
            )
    return masks, hashes


def _pil_mask(im: Image.Image) -> torch.Tensor:
    from ...data.sources import _canonical

    a = np.asarray(_canonical(im).convert("L"), dtype=np.uint8)
    return torch.from_numpy(a >= 128)[None]


def _tensor_mask(t: torch.Tensor, i: int) -> torch.Tensor:
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] != 1:
        raise ConfigError(f"mask {i}: a tensor mask must be shaped (H, W) or (1, H, W), got {tuple(t.shape)}")
    if t.dtype == torch.bool:
        return t.cpu()
    t = t.detach().cpu().float()
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise ConfigError(f"mask {i}: tensor values must be in [0, 1] (1 = fill), got {t.min():.3g}..{t.max():.3g}")
    return t > 0.5


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, H, W) with C in 1, 3 -> ``channels`` channels: grey repeated to RGB, RGB to its luminance."""
    c = x.shape[0]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(3, -1, -1).clone()
    if c == 3 and channels == 1:
        w = torch.tensor(_LUMA, dtype=x.dtype)[:, None, None]
        return (x * w).sum(0, keepdim=True)
    raise ConfigError(f"cannot convert a {c}-channel image for a {channels}-channel model")


def resize(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(C, H, W) floats -> (C, height, width) with PIL's bicubic filter on float pixels, clamped to [-1, 1]."""
    if tuple(x.shape[1:]) == (height, width):
        return x
    planes = [
        np.asarray(Image.fromarray(p.numpy().astype(np.float32)).resize((width, height), Image.Resampling.BICUBIC))
        for p in x.detach().cpu().float()
    ]
    return torch.from_numpy(np.stack(planes)).clamp_(-1, 1)


def resize_mask(m: torch.Tensor, size: int) -> torch.Tensor:
    """(1, H, W) bool -> (1, size, size) bool: a pixel is white when any white pixel falls in its box."""
    if tuple(m.shape[1:]) == (size, size):
        return m
    plane = Image.fromarray(m[0].numpy().astype(np.float32)).resize((size, size), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(plane) > 0)[None]
