"""Built-in datasets, by name: ``digits`` and ``photos`` (ship with scikit-learn / scikit-image, work offline),
``mnist``, ``fashion-mnist``.

MNIST and Fashion-MNIST are downloaded on first use from known mirrors into the cache, each file checked
against its published md5, and never again once a good copy is there. Offline, the error says which
files to put where, or how to point ``--data`` at a local copy instead.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..paths import cache_dir
from ..registry import Registry
from ..serialization import atomic_write
from .sources import Decoded, read_idx_pair

datasets: Registry = Registry("dataset")


class _ChecksumMismatch(Exception):
    pass


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _sha256_ok(digest: str, expected: str) -> bool:
    """``digest`` equals ``expected``, or starts with it when only a prefix is published (>= 8 hex digits).

    Why a prefix: files named after torch hub's convention (``name-<first 8+ sha256 digits>.pth``, e.g. the
    FID Inception weights) publish only that much of their checksum.
    """
    expected = expected.lower()
    return digest == expected if len(expected) >= 64 else len(expected) >= 8 and digest.startswith(expected)


def _matches(path: Path, md5: str | None, sha256: str | None) -> bool:
    return (md5 is None or _digest(path, "md5") == md5.lower()) and (
        sha256 is None or _sha256_ok(_digest(path, "sha256"), sha256)
    )


def download(
    urls: list[str], dest: Path, md5: str | None = None, sha256: str | None = None, timeout: float = 30
) -> Path:
    """Fetch ``dest`` from the first of ``urls`` that works and matches the checksum(s); return ``dest``.

    A ``dest`` that already exists with the right checksum is kept (no network). The bytes stream into a
    temporary file that is renamed over ``dest`` only once the checksum is right, so an interrupted or
    corrupt download never leaves a file that a later run would trust. A wrong checksum moves on to the
    next mirror; if none works, a one-line DataError lists why each failed. ``sha256`` may be a published
    prefix of at least 8 hex digits (torch hub file names carry one).
    """
    dest = Path(dest)
    failures = []
    if dest.is_file():
        if _matches(dest, md5, sha256):
            return dest
        failures.append(f"the existing {dest} has the wrong checksum")  # replaced below if a mirror works
    for url in urls:
        h_md5, h_sha = hashlib.md5(), hashlib.sha256()
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "genloop"})
            with urllib.request.urlopen(request, timeout=timeout) as response, atomic_write(dest) as f:
                while block := response.read(1 << 20):
                    f.write(block)
                    h_md5.update(block)
                    h_sha.update(block)
                if md5 and h_md5.hexdigest() != md5.lower():
                    raise _ChecksumMismatch(f"md5 {h_md5.hexdigest()}, expected {md5}")
                if sha256 and not _sha256_ok(h_sha.hexdigest(), sha256):
                    raise _ChecksumMismatch(f"sha256 {h_sha.hexdigest()}, expected {sha256}")
            return dest
        except _ChecksumMismatch as e:
            failures.append(f"{url}: wrong checksum ({e})")
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts, refused, bad URL
            failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
    raise DataError(f"could not download {dest.name}: {'; '.join(failures) or 'no URLs given'}")


# ---------------------------------------------------------------------------------------------------


@dataclass
class Digits:
    """scikit-learn's 1,797 real 8x8 handwritten digits (values 0..16); no download needed."""

    name: str = "digits"
    version: str = "sklearn-load_digits-1"  # part of the cache key: bump if the preparation changes
    description: str = "1,797 handwritten digits, 8x8 grey, 10 classes (bundled with scikit-learn)"
    class_names: list[str] = field(default_factory=lambda: [str(i) for i in range(10)])

    def load(self) -> Decoded:
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.round(d.images * 255.0 / 16.0).clip(0, 255).astype(np.uint8)[..., None]
        return Decoded(images, d.target.astype(np.int64), list(self.class_names))


@dataclass
class DigitsCaptions:
    """The digits with a caption each, in English or Chinese, naming the class and the stroke thickness, slant and
    size measured from the pixels (:mod:`genloop.data.digit_captions` says how they are measured and binned)."""

    name: str = "digits-captions"
    version: str = "digits-captions-1"  # part of the cache key: bump if the captions change
    description: str = (
        "the 1,797 digits, each with an English or Chinese caption naming its class and its measured thickness, "
        "slant and size (for text-to-image)"
    )
    class_names: list[str] = field(default_factory=lambda: [str(i) for i in range(10)])
    seed: int = 0

    def load(self) -> Decoded:
        from .digit_captions import digit_captions

        raw = Digits().load()
        return Decoded(raw.images, raw.labels, raw.class_names, digit_captions(raw.images, raw.labels, self.seed))


# The colour photographs bundled inside the scikit-image wheel (``skimage.data``; lily, kidney etc. need a
# download and are left out) and scikit-learn (``load_sample_images``). chelsea and cat are one photo; colorwheel
# and logo are drawings; stereo_motorcycle is used through its left view.
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
    "stereo_motorcycle",
)


def bundled_photos() -> dict[str, np.ndarray]:
    """The bundled colour photographs, name -> uint8 (H, W, 3): scikit-image's :data:`SKIMAGE_PHOTOS` and
    scikit-learn's sample images (china, flower). A photo that does not load offline is a DataError, not a gap:
    the data set must be the same everywhere."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out: dict[str, np.ndarray] = {}
    for name in SKIMAGE_PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception as e:  # noqa: BLE001 - an older/newer scikit-image without it, or one that wants a download
            raise DataError(f"skimage.data.{name} does not load offline ({type(e).__name__}: {e})") from None
        out[name] = np.asarray(img[0] if isinstance(img, tuple) else img)  # stereo_motorcycle: (left, right, disp)
    sample = load_sample_images()
    for fname, img in zip(sample.filenames, sample.images):
        out[Path(fname).stem] = np.asarray(img)
    for name, img in out.items():
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise DataError(f"bundled photo {name} is {img.dtype} {img.shape}, not uint8 RGB")
    return out


@dataclass
class Photos:
    """Natural-image tiles for restoration and small RGB models: every photo of :func:`bundled_photos` cut into
    non-overlapping ``tile`` x ``tile`` squares at its own resolution (offered at 32 px by default, 64 px natively).

    Why non-overlapping: any split of the tiles (``data.split``, a seeded permutation) then shares no pixel between
    train and held-out images, so a restorer is scored on pixels it never trained on. Tiles whose grey levels vary
    by less than ``min_std`` (the black surround of the retina scan, empty sky) are dropped, and a photo gives at most
    ``per_photo`` tiles (a seeded choice), so the two large scans do not make up most of the set. Each tile is
    labelled with its photo: the reference classifier then learns which photo a tile comes from, and "class kept"
    asks whether a restored tile still looks like its photo.
    """

    name: str = "photos"
    version: str = "photos-tiles-1"  # part of the cache key: bump if the tiling changes
    tile: int = 64
    per_photo: int = 160
    min_std: float = 4.0  # of the luma, in grey levels (0..255)
    seed: int = 0
    description: str = (
        "about 750 non-overlapping 64 px RGB tiles of the 10 colour photos bundled with scikit-image and "
        "scikit-learn, labelled by photo"
    )

    def tiles(self) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, int, int]]]:
        """(uint8 (N, tile, tile, 3) tiles, int64 labels, class names, (photo, top, left) of each tile)."""
        photos = bundled_photos()
        names = sorted(photos)
        rng = np.random.default_rng(self.seed)
        t = self.tile
        images, labels, boxes = [], [], []
        for label, name in enumerate(names):
            img = photos[name]
            grey = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            corners = [
                (y, x)
                for y in range(0, img.shape[0] - t + 1, t)
                for x in range(0, img.shape[1] - t + 1, t)
                if grey[y : y + t, x : x + t].std() >= self.min_std
            ]
            if len(corners) > self.per_photo:
                keep = np.sort(rng.choice(len(corners), size=self.per_photo, replace=False))
                corners = [corners[i] for i in keep]
            for y, x in corners:
                images.append(img[y : y + t, x : x + t])
                labels.append(label)
                boxes.append((name, y, x))
        return np.stack(images), np.asarray(labels, dtype=np.int64), names, boxes

    def load(self) -> Decoded:
        images, labels, names, _ = self.tiles()
        return Decoded(np.ascontiguousarray(images), labels, names)


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass
class IdxDownload:
    """A dataset published as the four standard gzipped IDX files (MNIST and its look-alikes)."""

    name: str
    title: str
    mirrors: list[str]  # base URLs, tried in order
    md5: dict[str, str]  # file name -> md5
    class_names: list[str]
    description: str
    version: str = "idx-1"

    def folder(self) -> Path:
        return cache_dir("datasets", self.name)

    def fetch(self) -> Path:
        """The cache folder with all four files present and verified, downloading what is missing."""
        folder = self.folder()
        for file, md5 in self.md5.items():
            try:
                download([base.rstrip("/") + "/" + file for base in self.mirrors], folder / file, md5=md5)
            except DataError as e:
                raise DataError(
                    f"could not download {self.title} (offline?): put {', '.join(self.md5)} into {folder}, "
                    f"or use a local copy with --data PATH [{e}]"
                ) from None
        return folder

    def load(self) -> Decoded:
        folder = self.fetch()
        train = read_idx_pair(folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz")
        test = read_idx_pair(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
        labels = np.concatenate([train.labels, test.labels])
        return Decoded(np.concatenate([train.images, test.images]), labels, list(self.class_names))


datasets.register("digits", Digits())
datasets.register("photos", Photos())
datasets.register("digits-captions", DigitsCaptions())
datasets.register(
    "mnist",
    IdxDownload(
        name="mnist",
        title="MNIST",
        mirrors=["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        md5=dict(
            zip(
                _IDX_FILES,
                [
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ],
            )
        ),
        class_names=[str(i) for i in range(10)],
        description="70,000 handwritten digits, 28x28 grey, 10 classes (downloaded once, ~11 MB)",
    ),
)
datasets.register(
    "fashion-mnist",
    IdxDownload(
        name="fashion-mnist",
        title="Fashion-MNIST",
        mirrors=["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        md5=dict(
            zip(
                _IDX_FILES,
                [
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83fd310",
                ],
            )
        ),
        class_names=[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        description="70,000 clothing images, 28x28 grey, 10 classes (downloaded once, ~30 MB)",
    ),
)
