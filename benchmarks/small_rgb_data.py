"""Two small RGB data sets for bench_small_rgb.py, built as folders of 64x64 PNGs under the GenLoop cache.

- ``pokemon``: the 1,352 Pokémon box sprites of msikma/pokesprite (``pokemon-gen8/regular/*.png``, 68x56
  RGBA), cropped to the sprite (its alpha's bounding box, so the creature fills the frame instead of a third
  of it), composited onto white, padded to a white square and resized to 64 px (LANCZOS). Read from a bare
  git mirror (default ``/work/.mirror/msikma+pokesprite/repo``) or from a checkout/folder (``--pokesprite``).
- ``photo-patches``: 1,500 random square crops (20-50 % of the short side, resized to 64 px, LANCZOS) of the
  colour photographs bundled with scikit-image (``skimage.data``, nothing downloaded) and scikit-learn
  (``load_sample_images``: china, flower); the same number of crops from each photo (proportional to area, one
  large retina scan would make up 40 % of the set). Seeded.

Each lands in ``$GENLOOP_CACHE_DIR/bench-data/<name>/`` (else ``~/.cache/genloop/bench-data/<name>/``), the
images directly in the folder (so GenLoop reads them as unlabelled data) and a hidden ``.complete.json``
marker written last; a complete folder is not rebuilt.

    python benchmarks/small_rgb_data.py                       # both
    python benchmarks/small_rgb_data.py pokemon --pokesprite ~/src/pokesprite
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

# The colour photographs that ship inside the scikit-image wheel: one list, kept with the `photos` built-in,
# which tiles the same photos without overlap for restoration.
from genloop.data.builtin import SKIMAGE_PHOTOS

DATASETS = ("pokemon", "photo-patches")
SIZE = 64
BUILD_VERSION = 3  # 3: sprites cropped to their bounding box; equal crops per photo
POKESPRITE_MIRROR = Path("/work/.mirror/msikma+pokesprite/repo")
POKESPRITE_DIR = "pokemon-gen8/regular"
N_POKEMON = 1352
N_PATCHES = 1500


def data_root(cache_dir: str | Path | None = None) -> Path:
    """``<cache>/bench-data``: ``cache_dir`` if given, else ``$GENLOOP_CACHE_DIR``, else ``~/.cache/genloop``."""
    root = Path(cache_dir or os.environ.get("GENLOOP_CACHE_DIR") or Path.home() / ".cache" / "genloop")
    return root / "bench-data"


def _complete(folder: Path, expected: dict) -> bool:
    marker = folder / ".complete.json"
    try:
        return json.loads(marker.read_text()) == expected
    except (OSError, ValueError):
        return False


def _finish(folder: Path, tmp: Path, expected: dict) -> Path:
    """Move a fully written temp folder into place, then write the marker (so a crash leaves no 'complete')."""
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    (folder / ".complete.json").write_text(json.dumps(expected))
    return folder


# ------------------------------------------------------------------------------------------------ pokemon
def _sprite(data: bytes):
    """68x56 RGBA sprite -> cropped to its opaque pixels, white background, padded to a white square, LANCZOS
    to 64 px, RGB."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGBA")
    box = img.getchannel("A").getbbox()
    if box is not None:
        img = img.crop(box)
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, img).convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return square.resize((SIZE, SIZE), Image.LANCZOS)


def _sprite_bytes(pokesprite: Path | None) -> list[tuple[str, bytes]]:
    """(name, PNG bytes) of every regular gen-8 box sprite (with the 20 in ``female/``), sorted by path."""
    if pokesprite is not None:
        folder = pokesprite / POKESPRITE_DIR if (pokesprite / POKESPRITE_DIR).is_dir() else pokesprite
        files = sorted(folder.rglob("*.png"))
        if not files:
            sys.exit(f"error: no PNG sprites in {folder} (expected a pokesprite checkout or its {POKESPRITE_DIR})")
        return [("_".join(p.relative_to(folder).parts), p.read_bytes()) for p in files]
    repo = POKESPRITE_MIRROR
    if not repo.exists():
        sys.exit(
            f"error: no pokesprite repository at {repo}; get it with "
            "`git clone https://github.com/msikma/pokesprite` and pass --pokesprite PATH"
        )
    names = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "HEAD", f"{POKESPRITE_DIR}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    names = sorted(n for n in names if n.endswith(".png"))
    out = []
    for n in names:
        blob = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{n}"], check=True, capture_output=True).stdout
        out.append((n[len(POKESPRITE_DIR) + 1 :].replace("/", "_"), blob))  # female/x.png -> female_x.png
    return out


def build_pokemon(root: Path, pokesprite: Path | None = None) -> Path:
    folder = root / "pokemon"
    expected = {"version": BUILD_VERSION, "size": SIZE, "source": str(pokesprite or POKESPRITE_MIRROR)}
    if _complete(folder, expected):
        return folder
    sprites = _sprite_bytes(pokesprite)
    if pokesprite is None and len(sprites) != N_POKEMON:
        print(f"note: {len(sprites)} sprites in the mirror (expected {N_POKEMON})", file=sys.stderr)
    tmp = root / ".pokemon.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in sprites:
        _sprite(data).save(tmp / name)
    print(f"pokemon: {len(sprites)} sprites -> {folder}", file=sys.stderr)
    return _finish(folder, tmp, expected)


# ------------------------------------------------------------------------------------------- photo patches
def photos() -> dict[str, np.ndarray]:
    """The bundled colour photographs, name -> uint8 (H, W, 3); any that do not load offline are skipped."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out: dict[str, np.ndarray] = {}
    for name in SKIMAGE_PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception as e:  # noqa: BLE001 - a photo that needs a download (or a newer skimage) is skipped
            print(f"photo-patches: skipping skimage.data.{name} ({type(e).__name__})", file=sys.stderr)
            continue
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)
        if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
            out[name] = img
    sample = load_sample_images()
    for fname, img in zip(sample.filenames, sample.images):
        out[Path(fname).stem] = img
    return out


def build_photo_patches(root: Path, n: int = N_PATCHES, seed: int = 0) -> Path:
    from PIL import Image

    folder = root / "photo-patches"
    expected = {"version": BUILD_VERSION, "size": SIZE, "n": n, "seed": seed}
    if _complete(folder, expected):
        return folder
    imgs = photos()
    names = sorted(imgs)
    counts = np.full(len(names), n // len(names))
    counts[: n - counts.sum()] += 1  # the remainder, one each to the first photos
    rng = np.random.default_rng(seed)
    tmp = root / ".photo-patches.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, count in zip(names, counts):
        img = imgs[name]
        h, w = img.shape[:2]
        short = min(h, w)
        for j in range(int(count)):
            side = int(rng.integers(round(0.2 * short), round(0.5 * short) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(img[y : y + side, x : x + side]).resize((SIZE, SIZE), Image.LANCZOS)
            crop.save(tmp / f"{name}_{j:04d}.png")
    print(
        f"photo-patches: {n} crops of {len(names)} photos ({', '.join(f'{a} {c}' for a, c in zip(names, counts))})"
        f" -> {folder}",
        file=sys.stderr,
    )
    return _finish(folder, tmp, expected)


# ----------------------------------------------------------------------------------------------- helpers
def ensure(name: str, root: Path | None = None, pokesprite: Path | None = None) -> Path:
    """The folder of data set ``name``, built first if it is missing or incomplete."""
    root = root or data_root()
    root.mkdir(parents=True, exist_ok=True)
    if name == "pokemon":
        return build_pokemon(root, pokesprite)
    if name == "photo-patches":
        return build_photo_patches(root)
    raise SystemExit(f"error: unknown data set {name!r}; valid: {', '.join(DATASETS)}")


def subset(folder: Path, limit: int, seed: int = 0) -> Path:
    """A sibling folder with a seeded random ``limit`` of ``folder``'s images (for quick runs)."""
    files = sorted(p for p in folder.glob("*.png"))
    if limit >= len(files):
        return folder
    out = folder.parent / f"{folder.name}-limit{limit}-seed{seed}"
    expected = {"source": str(folder), "limit": limit, "seed": seed}
    if _complete(out, expected):
        return out
    pick = np.random.default_rng(seed).choice(len(files), size=limit, replace=False)
    tmp = folder.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i in sorted(pick):
        shutil.copyfile(files[i], tmp / files[i].name)
    return _finish(out, tmp, expected)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=list(DATASETS), help=f"any of: {', '.join(DATASETS)}")
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: $GENLOOP_CACHE_DIR or ~/.cache/genloop")
    ap.add_argument("--pokesprite", type=Path, default=None, help="a pokesprite checkout (or its sprite folder)")
    args = ap.parse_args()
    for name in args.datasets:
        folder = ensure(name, data_root(args.cache_dir), args.pokesprite)
        print(f"{name}: {len(list(folder.glob('*.png')))} images in {folder}")


if __name__ == "__main__":
    main()
