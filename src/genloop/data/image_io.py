"""Image files: grids, PNGs that carry their own recipe, and reading that recipe back.

Training (sample grids), generation, evaluation (closest-pair grids) and feedback (rated samples) all write
images the same way, so these helpers live with the image data code rather than with any one of them.

Every PNG GenLoop writes embeds the *recipe* that made it (model, checkpoint, seed, sampler settings...)
so an image found on disk months later can be regenerated exactly. The recipe is stored twice:

* one ``iTXt`` chunk named ``genloop`` holding the whole recipe as UTF-8 JSON — the machine-readable
  copy that :func:`read_recipe` returns, lossless for nested values and non-ASCII text;
* one plain text chunk per top-level key, so image viewers and ``exiftool``/``identify`` show the
  settings without any GenLoop code. Values that Latin-1 cannot hold (e.g. ``"数字"``) go into an
  ``iTXt`` chunk instead of being mangled, as the PNG spec requires.

Files are written through :func:`genloop.serialization.atomic_write`, so a crash never leaves half a PNG.

Generated outputs are also *signed* (``save_png(..., sign=True)``): a ``genloop-manifest`` iTXt chunk holds
the signed provenance manifest of :mod:`genloop.safety.provenance` (its content hash is that of the decoded
pixels), and the same manifest is written beside the file as ``<file>.manifest.json``. They are also
*watermarked* (``save_png(..., watermark=True)``): the invisible mark of :mod:`genloop.safety.image_watermark`
carries, in the pixels themselves (so it outlives a stripped manifest), the hash of the image's content id —
the same pixels always get the same mark, so an image regenerated from its recipe is still identical — and the
run store's watermark index maps it to the generation id. It is put in *before* signing (the manifest hashes
the marked pixels).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image, PngImagePlugin

from ..errors import DataError, NotFoundError
from ..serialization import atomic_write
from .image import to_uint8

RECIPE_KEY = "genloop"
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# Above this size the JSON chunk is deflated; small recipes stay uncompressed so that even naive
# chunk dumpers can read them.
_ZIP_THRESHOLD = 2048


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("cannot make a grid of zero images")
    if images.shape[1] not in _MODES:
        raise ValueError(f"images must have 1, 3 or 4 channels, got {images.shape[1]}")


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile ``N`` float images in [-1, 1] of shape (N, C, H, W) into one (C, H', W') image.

    ``nrow`` is the number of images per row (default ``ceil(sqrt(N))``, so the grid is near square).
    Tiles are separated — and the grid framed — by ``padding`` pixels of ``pad_value`` (default 1.0,
    white; for RGBA that also means opaque, so the frame stays visible on any background).
    """
    _check_images(images)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = images.shape
    ncol = max(1, min(nrow if nrow is not None else math.ceil(math.sqrt(n)), n))
    nrows = math.ceil(n / ncol)
    step_h, step_w = h + padding, w + padding
    grid = torch.full(
        (c, nrows * step_h + padding, ncol * step_w + padding),
        float(pad_value),
        dtype=torch.float32,
    )
    src = images.detach().float().cpu()
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = padding + r * step_h, padding + col * step_w
        grid[:, y : y + h, x : x + w] = src[i]
    return grid


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One float (C, H, W) image in [-1, 1] -> PIL image ("L", "RGB" or "RGBA" for C = 1, 3, 4)."""
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] not in _MODES:
        raise ValueError(f"expected one image of shape (C, H, W) with C in 1, 3, 4; got {tuple(image.shape)}")
    c = int(image.shape[0])
    array = to_uint8(image.cpu()).permute(1, 2, 0).contiguous().numpy()
    if c == 1:
        array = array[:, :, 0]
    # fromarray infers "L" / "RGB" / "RGBA" from a uint8 array's shape (its ``mode`` argument is deprecated).
    return Image.fromarray(array)


def _text_value(value: Any) -> str:
    """Plain-chunk form of a recipe value: strings as they are, containers as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    return str(value)


def _valid_keyword(key: str) -> bool:
    """PNG keywords: 1-79 Latin-1 printable characters, no leading/trailing/double spaces."""
    if not 1 <= len(key) <= 79 or key != key.strip() or "  " in key:
        return False
    try:
        raw = key.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return all(32 <= b <= 126 or 161 <= b <= 255 for b in raw)


def _png_info(recipe: dict[str, Any]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    blob = json.dumps(recipe, ensure_ascii=False, default=str)
    info.add_itxt(RECIPE_KEY, blob, zip=len(blob.encode("utf-8")) > _ZIP_THRESHOLD)
    for key, value in recipe.items():
        key = str(key)
        # Keys PNG cannot name are skipped here: the full recipe is in the JSON chunk anyway.
        if key == RECIPE_KEY or not _valid_keyword(key):
            continue
        # add_text writes tEXt, and switches to iTXt by itself when the value is not Latin-1.
        info.add_text(key, _text_value(value))
    return info


def save_png(
    path: str | os.PathLike,
    image: Image.Image | torch.Tensor,
    recipe: dict[str, Any] | None = None,
    upscale: int = 1,
    sign: bool = False,
    generation_id: str | None = None,
    watermark: bool = False,
) -> Path:
    """Write ``image`` (PIL, or a float (C, H, W) tensor in [-1, 1]) as a PNG, atomically.

    ``recipe`` is embedded as described in the module docstring. ``upscale`` > 1 enlarges by that
    integer factor with nearest neighbour — crisp pixels, no invented detail — because an 8-32 px
    image is unreadable at native size; keep it at 1 where the pixels themselves are the data. ``sign``
    embeds a signed provenance manifest of the recipe and the pixels (under ``generation_id``, default a new
    one), and writes it as a sidecar too. ``watermark`` embeds the invisible mark (of the pixels' content id) first
    (images under 8x8 px stay unmarked), recorded in the run store's watermark index inside
    :func:`genloop.safety.image_watermark.indexing_to` (as generation does).
    """
    if upscale < 1 or int(upscale) != upscale:
        raise ValueError(f"upscale must be a positive integer, got {upscale}")
    pil = tensor_to_pil(image) if isinstance(image, torch.Tensor) else image
    if upscale > 1:
        pil = pil.resize((pil.width * int(upscale), pil.height * int(upscale)), Image.Resampling.NEAREST)
    path = Path(path)
    info = _png_info(recipe) if recipe is not None else None
    envelope = None
    marked = False
    if watermark:
        import uuid

        from ..safety import image_watermark

        generation_id = generation_id or uuid.uuid4().hex
        if image_watermark.capacity(pil.height, pil.width):
            mark_id = image_watermark.content_id(pil)  # the same pixels get the same mark: replays stay exact
            pil = image_watermark.embed(pil, mark_id)
            marked = True
    if sign:
        from ..safety import provenance

        envelope = provenance.sign(recipe or {}, provenance.image_sha256(pil), generation_id)
        info = info or PngImagePlugin.PngInfo()
        info.add_itxt(provenance.MANIFEST_KEY, provenance.dumps(envelope), zip=False)
    with atomic_write(path) as f:
        pil.save(f, format="PNG", pnginfo=info)
    if envelope is not None:
        provenance.write_sidecar(path, envelope)
    if marked:
        image_watermark.record_if_indexing(str(generation_id), mark_id, recipe, "image", path)
    return path


def read_recipe(path: str | os.PathLike) -> dict[str, Any] | None:
    """The recipe embedded by :func:`save_png`, or None for a PNG without one."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})  # .text also reads chunks after the pixel data
    except (OSError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    blob = text.get(RECIPE_KEY)
    if blob is None:
        return None
    try:
        recipe = json.loads(str(blob))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: the '{RECIPE_KEY}' chunk is not valid JSON ({e})") from None
    if not isinstance(recipe, dict):
        raise DataError(f"{path}: the '{RECIPE_KEY}' chunk holds {type(recipe).__name__}, expected an object")
    return upgrade_recipe(recipe)


def upgrade_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` with each count under its own key, whenever it was written.

    Older recipes used ``step`` for the checkpoint's training step and ``steps`` for the
    sampler's step count — except in an interpolation's recipe, where ``steps`` counted the interpolation
    points and ``sampler_steps`` the sampler's. Now they are ``train_step``, ``sampling_steps`` and
    ``interpolation_steps``; an old PNG or a stored generation reads as if written today, so a replay or a
    comparison never mistakes one count for another. A current recipe comes back unchanged (as a copy).
    """
    r = dict(recipe)
    renames = [("step", "train_step")]
    if r.get("kind") == "interpolation":
        renames += [("steps", "interpolation_steps"), ("sampler_steps", "sampling_steps")]
    else:
        renames += [("steps", "sampling_steps")]
    for old, new in renames:
        if old in r and new not in r:
            r[new] = r.pop(old)
    return r


def save_images(
    images: torch.Tensor,
    out_dir: str | os.PathLike,
    recipe: dict[str, Any],
    prefix: str = "sample",
    grid_name: str = "grid.png",
    nrow: int | None = None,
    grid_upscale: int = 4,
) -> list[Path]:
    """Write every image of (N, C, H, W) floats in [-1, 1] as ``{prefix}_{i:04d}.png``, plus a grid.

    Each single image carries ``recipe`` plus its own ``"index"`` (its position in the batch, which a
    sampler needs to regenerate exactly that one). Singles stay at native size — they are the output;
    the grid is for looking at, so it is enlarged ``grid_upscale`` times. Returns the paths, grid first.
    """
    _check_images(images)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid_path = save_png(out / grid_name, make_grid(images, nrow=nrow), recipe=recipe, upscale=grid_upscale)
    paths = [grid_path]
    for i in range(images.shape[0]):
        paths.append(save_png(out / f"{prefix}_{i:04d}.png", images[i], recipe={**recipe, "index": i}))
    return paths
