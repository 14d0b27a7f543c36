"""Decoders for the user's own data: a folder of images, MNIST-style IDX files, or a ``.npz`` archive.

Every decoder ends in the same place: a :class:`Decoded` holding ``uint8`` images (N, H, W, C), square
at the requested size, with the requested channel count, plus optional ``int64`` labels and class names.
Anything wrong with a file raises a one-line :class:`~genloop.errors.DataError` that names the file, so
the user can fix or remove it; nothing is skipped silently except files that are plainly not images.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError

# Files with these suffixes are decoded (and must decode); anything else in an image folder is skipped.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RESAMPLE = Image.Resampling.BICUBIC  # antialiased when shrinking, smooth when enlarging

# An IDX file: "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte", "train-images.idx3-ubyte", ...
_IDX_NAME = re.compile(r"idx\d.*ubyte(\.gz)?$")
_IDX_DTYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}


@dataclass
class Decoded:
    """Images as decoded from a source, before they become tensors."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray | None = None  # int64 (N,)
    class_names: list[str] | None = None
    captions: list[str] | None = None  # one per image: a captioned folder (data/captions.py) or built-in


# ---------------------------------------------------------------------------------------------------
# what a path is


def _visible(path: Path) -> bool:
    """Hidden files (.DS_Store, macOS "._x.png" resource forks, our own temp files) are never data."""
    return not path.name.startswith(".")


def is_idx_file(path: Path) -> bool:
    return path.is_file() and _visible(path) and bool(_IDX_NAME.search(path.name))


def idx_image_files(folder: Path) -> list[Path]:
    """The IDX image files directly in ``folder``: train first, then t10k/test, then any others.

    A folder holding both ``x-ubyte`` and ``x-ubyte.gz`` uses only one of the pair.
    """
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if is_idx_file(p) and "images" in p.name and "idx3" in p.name:
            found.setdefault(p.name.removesuffix(".gz"), p)

    def order(p: Path) -> tuple[int, str]:
        return (0 if "train" in p.name else 1 if ("t10k" in p.name or "test" in p.name) else 2), p.name

    return sorted(found.values(), key=order)


def source_kind(path: Path) -> str:
    """The decoder for a path: "folder", "idx" or "npz"; DataError for anything else."""
    if path.is_dir():
        return "idx" if idx_image_files(path) else "folder"
    if path.suffix.lower() == ".npz":
        return "npz"
    if is_idx_file(path):
        if "labels" in path.name or "idx1" in path.name:
            raise DataError(f"{path}: is an IDX labels file; pass the images file (...-images-idx3-ubyte[.gz]) instead")
        return "idx"
    raise DataError(
        f"{path}: not a dataset GenLoop can read; valid: a folder of images, a .npz file, "
        "an IDX images file (*-images-idx3-ubyte[.gz]) or a folder of IDX files"
    )


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder`` (by suffix), skipping hidden files and hidden folders."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


def source_files(path: Path) -> list[Path]:
    """Every file the decoder for ``path`` would read: the fingerprint of the source for the cache."""
    kind = source_kind(path)
    if kind == "folder":
        from .captions import caption_files

        images = _image_files(path)
        return images + caption_files(path, images)
    if kind == "npz":
        return [path]
    images = idx_image_files(path) if path.is_dir() else [path]
    labels = [lab for p in images if (lab := labels_file_for(p)) is not None]
    return images + labels


def decode(path: Path, image_size: int, channels: int | None) -> Decoded:
    """Decode any supported source into square ``image_size`` images with ``channels`` channels."""
    kind = source_kind(path)
    if kind == "folder":
        return load_folder(path, image_size, channels)
    raw = read_idx(path) if kind == "idx" else read_npz(path)
    return finish(raw, image_size, channels, path)


def finish(raw: Decoded, image_size: int, channels: int | None, where: object = "dataset") -> Decoded:
    """Resize native-size decoded images to ``image_size`` and convert them to ``channels``."""
    if raw.images.shape[0] == 0:
        raise DataError(f"{where}: holds no images")
    c = channels or auto_channels([raw.images.shape[-1]])
    images = convert_channels(resize_images(raw.images, image_size), c)
    return Decoded(np.ascontiguousarray(images), raw.labels, raw.class_names, raw.captions)


# ---------------------------------------------------------------------------------------------------
# pixels: resizing and channel conversion


def fit(img: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` and keep the centre square: one resampling step via ``box``."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return img.resize((size, size), RESAMPLE, box=(left, top, left + side, top + side))


_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, size, size, C), each image through :func:`fit`."""
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    out = np.empty((n, size, size, c), dtype=np.uint8)
    for i in range(n):
        img = Image.fromarray(images[i, :, :, 0] if c == 1 else images[i], _MODES[c])
        out[i] = np.asarray(fit(img, size)).reshape(size, size, c)
    return out


def auto_channels(counts: list[int]) -> int:
    """1 if every source is grey, 4 if any has alpha (LA = 2 or RGBA = 4), else 3."""
    if any(c in (2, 4) for c in counts):
        return 4
    return 1 if all(c == 1 for c in counts) else 3


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(..., C) uint8 with C in 1 (L), 2 (LA), 3 (RGB), 4 (RGBA) -> (..., channels) uint8.

    Dropping alpha composites onto black, so whatever colour hides under fully transparent pixels
    (often garbage) does not leak into the image. Colour to grey uses the ITU-R 601 luma, as PIL does.
    """
    c = images.shape[-1]
    if c == channels:
        return images
    x = images.astype(np.float32)
    colour, alpha = (x[..., :-1], x[..., -1:]) if c in (2, 4) else (x, None)
    if channels == 4:
        rgb = np.repeat(colour, 3, axis=-1) if colour.shape[-1] == 1 else colour
        a = alpha if alpha is not None else np.full_like(colour[..., :1], 255.0)
        out = np.concatenate([rgb, a], axis=-1)
    else:
        if alpha is not None:
            colour = colour * (alpha / 255.0)
        if channels == 1 and colour.shape[-1] == 3:
            colour = colour @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)
        elif channels == 3 and colour.shape[-1] == 1:
            colour = np.repeat(colour, 3, axis=-1)
        out = colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# a folder of images


def _canonical(img: Image.Image) -> Image.Image:
    """Any PIL mode -> L, LA, RGB or RGBA, keeping transparency and the full range of 16-bit grey."""
    if "transparency" in img.info and img.mode in ("L", "RGB", "P"):
        return img.convert("RGBA")  # palette / tRNS transparency becomes a real alpha channel
    if img.mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if img.mode == "P":
        return img.convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        # 16-bit grey (I;16, or I from older Pillow): scale 0..65535 to 0..255 instead of clipping at 255
        a = np.asarray(img).astype(np.float64)
        scale = 1.0 if img.mode == "F" else 257.0
        return Image.fromarray(np.clip(np.round(a / scale), 0, 255).astype(np.uint8), "L")
    if img.mode == "1":
        return img.convert("L")
    return img.convert("RGBA" if "A" in img.getbands() else "RGB")  # CMYK, YCbCr, PA, La, RGBa, ...


def read_image(path: Path, size: int) -> np.ndarray:
    """One image file -> (size, size, C) uint8, C in 1..4 as the file has it. DataError names the file."""
    try:
        with Image.open(path) as img:
            img.draft(None, (size, size))  # JPEG: let the decoder shrink big photos (much faster)
            img.load()  # decode now, inside the try: truncated files fail here (LOAD_TRUNCATED_IMAGES stays off)
            img = _canonical(ImageOps.exif_transpose(img))  # phone photos: honour the orientation tag
            a = np.asarray(fit(img, size))
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable image ({msg}); fix or remove the file") from None
    return a.reshape(size, size, -1)


# the channels a file's header promises, by PIL mode (before :func:`_canonical`; "P" may still carry alpha)
_MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1, "LA": 2, "La": 2, "RGBA": 4}


def peek_image(path: Path) -> tuple[int, int, int]:
    """(width, height, channels) of one image file from its header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            alpha = "transparency" in img.info and img.mode in ("L", "RGB", "P")
            channels = 4 if alpha or "A" in img.getbands() else _MODE_CHANNELS.get(img.mode, 3)
            w, h = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):
                w, h = h, w  # a phone photo's orientation tag turns it on its side
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable image ({msg}); fix or remove the file") from None
    return w, h, channels


def folder_files(root: Path) -> tuple[list[Path], list[str]]:
    """A folder's image files and its class names (sorted sub-folder names; [] when the images sit in ``root``).

    Mixing the two is an error rather than a guess: there is no label to give the root images.
    """
    files = _image_files(root)
    if not files:
        raise DataError(f"{root}: no images found; valid image files: {', '.join(IMAGE_SUFFIXES)}")
    top = [f for f in files if f.parent == root]
    classes = sorted({f.relative_to(root).parts[0] for f in files if f.parent != root})
    if top and classes:
        raise DataError(
            f"{root}: has images both in the folder itself ({top[0].name}, ...) and in class sub-folders "
            f"({', '.join(classes[:3])}, ...); put every image in a class sub-folder, or all of them in the folder"
        )
    return files, classes


def load_folder(root: Path, image_size: int, channels: int | None) -> Decoded:
    """A folder of images. Sub-folders are classes (sorted names); images directly in ``root`` are unlabelled.
    Captions (a ``metadata.jsonl`` or a ``.txt`` beside each image) are read by :mod:`genloop.data.captions`."""
    from .captions import folder_captions

    files, classes = folder_files(root)
    captions = folder_captions(root, files)  # before decoding: a caption problem is found at once
    images = [read_image(f, image_size) for f in files]
    c = channels or auto_channels([a.shape[-1] for a in images])
    stacked = np.stack([convert_channels(a, c) for a in images])
    if not classes:
        return Decoded(stacked, captions=captions)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[f.relative_to(root).parts[0]] for f in files], dtype=np.int64)
    return Decoded(stacked, labels, classes, captions)


# ---------------------------------------------------------------------------------------------------
# MNIST-style IDX files


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":  # gzip magic: decide by content, not by the name
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip file ({e}); download it again") from None


def read_idx_array(path: Path, ndim: int) -> np.ndarray:
    """One IDX file as a uint8 array, checking magic number, data type, dimensions and length."""
    data = _read_bytes(path)
    what = "images (N x H x W)" if ndim == 3 else "labels (N)"
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic number {data[:4].hex() or 'missing'}, expected 0000080{ndim})")
    code, nd = data[2], data[3]
    if code != 0x08:
        kind = _IDX_DTYPES.get(code, "unknown")
        raise DataError(f"{path}: IDX data type 0x{code:02x} ({kind}) is not supported; valid: 0x08 (unsigned byte)")
    if nd != ndim:
        raise DataError(f"{path}: IDX file has {nd} dimensions; expected {ndim} for {what}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise DataError(f"{path}: IDX file is truncated ({len(data)} bytes, header alone needs {header})")
    dims = struct.unpack(f">{nd}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(f"{path}: IDX file is {state}: {len(data)} bytes, but shape {list(dims)} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def labels_file_for(images_path: Path) -> Path | None:
    """``train-images-idx3-ubyte[.gz]`` -> ``train-labels-idx1-ubyte[.gz]`` if it exists (gzipped or not)."""
    name = images_path.name.replace("images", "labels").replace("idx3", "idx1")
    base = name.removesuffix(".gz")
    for candidate in (name, base, base + ".gz"):
        p = images_path.with_name(candidate)
        if p != images_path and p.is_file():
            return p
    return None


def read_idx_pair(images_path: Path, labels_path: Path | None) -> Decoded:
    """An IDX images file and (optionally) its labels, at native size."""
    images = read_idx_array(images_path, 3)
    labels = None
    if labels_path is not None:
        labels = read_idx_array(labels_path, 1).astype(np.int64)
        if len(labels) != len(images):
            raise DataError(f"{labels_path}: has {len(labels)} labels but {images_path.name} has {len(images)} images")
    return Decoded(images[..., None], labels)


def read_idx(path: Path) -> Decoded:
    """An IDX images file, or a folder of them (train then t10k, concatenated, each with its labels)."""
    parts = [read_idx_pair(p, labels_file_for(p)) for p in (idx_image_files(path) if path.is_dir() else [path])]
    shapes = {p.images.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise DataError(f"{path}: IDX image files have different image sizes {sorted(shapes)}; use one file")
    images = np.concatenate([p.images for p in parts])
    # labels only if every part has them: a half-labelled dataset has no int64 representation
    labels = np.concatenate([p.labels for p in parts]) if all(p.labels is not None for p in parts) else None
    return Decoded(images, labels, _numbered_classes(labels))


def _numbered_classes(labels: np.ndarray | None) -> list[str] | None:
    return [str(i) for i in range(int(labels.max()) + 1)] if labels is not None and len(labels) else None


# ---------------------------------------------------------------------------------------------------
# .npz arrays

_IMAGE_KEYS, _LABEL_KEYS = ("x", "images"), ("y", "labels")


def read_npz(path: Path) -> Decoded:
    """A .npz archive: images under ``x``/``images`` (or the only array), labels under ``y``/``labels``.

    Loaded with ``allow_pickle=False``: a pickled object array could run code, so it is refused.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # a .npy saved under a .npz name: it can only be the images
            arrays = {"x": loaded}
        else:
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(
                f"{path}: holds pickled or object arrays, which GenLoop does not load (unpickling can run code); "
                "save plain numeric arrays with np.savez"
            ) from None
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    except Exception as e:  # BadZipFile, OSError, EOFError, ... for a damaged archive
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None

    candidates = [k for k in arrays if k not in _LABEL_KEYS and k != "class_names"]
    key = next((k for k in _IMAGE_KEYS if k in arrays), candidates[0] if len(candidates) == 1 else None)
    if key is None:
        raise DataError(f"{path}: no images array; name it 'x' or 'images' (found: {', '.join(arrays) or 'nothing'})")
    images = _npz_images(path, key, arrays[key])
    label_key = next((k for k in _LABEL_KEYS if k in arrays), None)
    labels = _npz_labels(path, label_key, arrays[label_key], len(images)) if label_key else None
    class_names = _numbered_classes(labels)
    if labels is not None and "class_names" in arrays and arrays["class_names"].dtype.kind in "US":
        names = [str(s) for s in arrays["class_names"].ravel()]
        if len(names) < len(class_names):
            raise DataError(f"{path}: has {len(names)} class_names but labels go up to {len(class_names) - 1}")
        class_names = names
    return Decoded(images, labels, class_names)


def _npz_images(path: Path, key: str, a: np.ndarray) -> np.ndarray:
    """Any accepted layout and dtype -> uint8 (N, H, W, C)."""
    layouts = "(N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4"
    if a.ndim == 3:
        a = a[..., None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4):
        pass  # channels last wins when both readings are possible
    elif a.ndim == 4 and a.shape[1] in (1, 3, 4):
        a = a.transpose(0, 2, 3, 1)
    else:
        raise DataError(f"{path}: array '{key}' has shape {list(a.shape)}; valid: {layouts}")
    if a.shape[0] == 0:
        raise DataError(f"{path}: array '{key}' holds no images")
    valid = "uint8 0..255, or float in [0, 1] or [-1, 1]"
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DataError(f"{path}: array '{key}' contains NaN or infinity; valid: {valid}")
        lo, hi, eps = float(a.min()), float(a.max()), 1e-3
        if lo >= -1 - eps and hi <= 1 + eps:
            x = (a.astype(np.float64) + 1) * 127.5 if lo < 0 else a.astype(np.float64) * 255
            return np.clip(np.round(x), 0, 255).astype(np.uint8)
        raise DataError(f"{path}: array '{key}' has float values in [{lo:g}, {hi:g}]; valid: {valid}")
    if a.dtype.kind in "iu" and a.min() >= 0 and a.max() <= 255:
        return a.astype(np.uint8)  # e.g. int64 pixel values: unambiguous, so accepted
    raise DataError(f"{path}: array '{key}' has dtype {a.dtype} (range {a.min()}..{a.max()}); valid: {valid}")


def _npz_labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: labels '{key}' have shape {list(y.shape)}; expected ({n},), one per image")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu" or (n and y.min() < 0):
        raise DataError(f"{path}: labels '{key}' must be non-negative integers (class indices), got dtype {y.dtype}")
    return y.astype(np.int64)
