"""Data loading: built-ins, user folders / IDX / .npz, splits, the prepared-data cache, downloads, batches.

Every test builds its own small files under tmp_path; nothing touches the network (downloads use file://
URLs and a closed local port).
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image

from genloop.data import DataConfig, ImageBatches, dataset_names, datasets, download, load_dataset, prepare, sources
from genloop.errors import DataError, NotFoundError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOOP_CACHE_DIR", str(tmp_path / "cache"))


def load(name, **kw):
    return load_dataset(DataConfig(name=str(name), **kw))


# ---------------------------------------------------------------------------------------------------
# built-ins


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits(size):
    ds = load("digits", image_size=size)
    assert ds.images.shape == (1797, 1, size, size) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (1797,) and ds.labels.dtype == torch.int64
    assert ds.class_names == [str(i) for i in range(10)] and set(ds.labels.tolist()) == set(range(10))
    assert int(ds.images.min()) == 0 and int(ds.images.max()) == 255
    assert sum(v.numel() for v in ds.splits.values()) == 1797


def test_digits_channels_replicated():
    ds = load("digits", image_size=8, channels=3)
    assert ds.images.shape == (1797, 3, 8, 8)
    assert torch.equal(ds.images[:, 0], ds.images[:, 1]) and torch.equal(ds.images[:, 0], ds.images[:, 2])


def test_names_and_unknown_dataset(tmp_path):
    assert dataset_names() == ["digits", "digits-captions", "fashion-mnist", "mnist", "photos"]
    assert len(datasets["fashion-mnist"].class_names) == 10
    valid = r"\(digits, digits-captions, fashion-mnist, mnist, photos\)"
    with pytest.raises(NotFoundError, match=r"unknown dataset 'xyz': not a built-in " + valid):
        load("xyz")
    with pytest.raises(NotFoundError, match="no such file or folder"):
        load(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------
# image folders


def save(path, array, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array), mode).save(path, **kw)
    return path


def rng_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_folder_with_classes_and_modes(tmp_path):
    root = tmp_path / "pics"
    save(root / "cat" / "grey.png", rng_image((12, 10)))
    save(root / "cat" / "rgb.jpg", rng_image((9, 9, 3)))
    save(root / "dog" / "rgba.png", rng_image((10, 10, 4)))
    pal = Image.fromarray(rng_image((10, 10, 3))).convert("P")
    pal.save(root / "dog" / "palette.gif")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\x00\x01junk")
    ds = load(root, image_size=8)
    assert ds.class_names == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 1, 1]  # sorted by path: cat/grey, cat/rgb, dog/palette, dog/rgba
    assert ds.images.shape == (4, 4, 8, 8)  # an RGBA source makes auto mode pick 4 channels
    assert ds.images[:3, 3].eq(255).all()  # opaque sources get an opaque alpha
    assert ds.meta["kind"] == "folder"


def test_folder_unlabelled_centre_crop(tmp_path):
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, :10, 0] = 255  # red | green | blue thirds: the centre crop is all green
    wide[:, 10:20, 1] = 255
    wide[:, 20:, 2] = 255
    save(tmp_path / "f" / "wide.png", wide)
    ds = load(tmp_path / "f", image_size=8)
    assert ds.labels is None and ds.class_names is None
    assert ds.images.shape == (1, 3, 8, 8)
    inner = ds.images[0, :, :, 1:-1]  # the resampling kernel may touch the cropped-off neighbours at the edges
    assert inner[1].min() == 255 and inner[0].max() == 0 and inner[2].max() == 0
    assert ds.images[0, 1].min() > 200


@pytest.mark.parametrize(
    "kinds, auto",
    [(["L", "I;16"], 1), (["L", "RGB"], 3), (["L", "P"], 3), (["RGB", "P_trns"], 4), (["L", "LA"], 4)],
)
def test_channel_auto_detection(tmp_path, kinds, auto):
    root = tmp_path / "f"
    for i, kind in enumerate(kinds):
        if kind == "L":
            save(root / f"{i}.png", rng_image((8, 8)))
        elif kind == "I;16":
            save(root / f"{i}.png", np.full((8, 8), 65535, np.uint16))
        elif kind == "LA":
            save(root / f"{i}.png", rng_image((8, 8, 2)), "LA")
        elif kind == "RGB":
            save(root / f"{i}.png", rng_image((8, 8, 3)))
        else:
            img = Image.fromarray(rng_image((8, 8, 3))).convert("P")
            img.save(root / f"{i}.png", **({"transparency": 0} if kind == "P_trns" else {}))
    assert load(root, image_size=8).channels == auto
    for c in (1, 3, 4):
        assert load(root, image_size=8, channels=c).images.shape == (len(kinds), c, 8, 8)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    save(tmp_path / "f" / "a.png", np.full((8, 8), 32896, np.uint16))  # 32896 / 257 = 128
    assert load(tmp_path / "f", image_size=8).images.unique().tolist() == [128]


def test_channel_conversion_values():
    rgba = np.array([[[[200, 100, 50, 0], [200, 100, 50, 255]]]], np.uint8)  # (1, 1, 2, 4)
    rgb = sources.convert_channels(rgba, 3)
    assert rgb[0, 0, 0].tolist() == [0, 0, 0]  # fully transparent: composited onto black
    assert rgb[0, 0, 1].tolist() == [200, 100, 50]
    assert sources.convert_channels(rgb, 1)[0, 0, 1, 0] == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    grey = np.array([[[[7]]]], np.uint8)
    assert sources.convert_channels(grey, 4)[0, 0, 0].tolist() == [7, 7, 7, 255]


def test_truncated_png_and_corrupt_jpeg_name_the_file(tmp_path):
    root = tmp_path / "f"
    png = save(root / "ok.png", rng_image((32, 32, 3)))
    bad = root / "bad.png"
    bad.write_bytes(png.read_bytes()[:200])
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        load(root, image_size=8)
    bad.unlink()
    jpg = save(root / "x.jpg", rng_image((64, 64, 3)), quality=95)
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])  # truncated JPEG
    with pytest.raises(DataError, match="x.jpg: not a readable image"):
        load(root, image_size=8)
    jpg.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError, match="x.jpg"):
        load(root, image_size=8)


def test_empty_folders_and_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("hi")
    with pytest.raises(DataError, match="no images found"):
        load(tmp_path / "text")
    (tmp_path / "zero.npz").write_bytes(b"")
    with pytest.raises(DataError, match="zero.npz: file is empty"):
        load(tmp_path / "zero.npz")


def test_root_images_mixed_with_class_folders_is_an_error(tmp_path):
    save(tmp_path / "f" / "a.png", rng_image((8, 8)))
    save(tmp_path / "f" / "cls" / "b.png", rng_image((8, 8)))
    with pytest.raises(DataError, match="both in the folder itself"):
        load(tmp_path / "f")


# ---------------------------------------------------------------------------------------------------
# IDX


def idx_bytes(array, code=0x08):
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path, array, gz=False, **kw):
    data = idx_bytes(array, **kw)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_idx_file_with_labels(tmp_path, gz):
    sfx = ".gz" if gz else ""
    x, y = rng_image((6, 5, 5)), np.array([0, 1, 2, 3, 4, 2], np.uint8)
    images = write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", x, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", y, gz)
    ds = load(images, image_size=5)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(x)) and ds.labels.tolist() == y.tolist()
    assert ds.class_names == ["0", "1", "2", "3", "4"]
    assert load(images, image_size=8).images.shape == (6, 1, 8, 8)


def test_idx_folder_concatenates_train_and_test(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng_image((3, 4, 4), 1), gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 7, 7], np.uint8), gz=True)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng_image((5, 4, 4), 2))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    ds = load(tmp_path, image_size=4)
    assert ds.images.shape == (8, 1, 4, 4) and ds.labels.tolist() == [0] * 5 + [7] * 3  # train first
    unlabelled = tmp_path / "only"
    unlabelled.mkdir()
    write_idx(unlabelled / "train-images-idx3-ubyte", rng_image((5, 4, 4)))
    assert load(unlabelled, image_size=4).labels is None


def test_idx_errors(tmp_path):
    x = rng_image((4, 5, 5))
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34" + idx_bytes(x)[2:])
    with pytest.raises(DataError, match="bad-images-idx3-ubyte: not an IDX file"):
        load(bad, image_size=5)
    bad.write_bytes(idx_bytes(x)[:-7])
    with pytest.raises(DataError, match="bad-images-idx3-ubyte: IDX file is truncated"):
        load(bad, image_size=5)
    write_idx(bad, x.astype(np.float32), code=0x0D)
    with pytest.raises(DataError, match="data type 0x0d"):
        load(bad, image_size=5)
    gz = tmp_path / "g-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(idx_bytes(x))[:-10])
    with pytest.raises(DataError, match="g-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load(gz, image_size=5)
    write_idx(tmp_path / "c-images-idx3-ubyte", x)
    write_idx(tmp_path / "c-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="3 labels but c-images-idx3-ubyte has 4 images"):
        load(tmp_path / "c-images-idx3-ubyte", image_size=5)


# ---------------------------------------------------------------------------------------------------
# .npz


@pytest.mark.parametrize(
    "shape, channels",
    [((5, 6, 6), 1), ((5, 6, 6, 1), 1), ((5, 6, 6, 3), 3), ((5, 6, 6, 4), 4), ((5, 1, 6, 6), 1), ((5, 3, 6, 6), 3)],
)
def test_npz_shapes(tmp_path, shape, channels):
    x = rng_image(shape)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    ds = load(tmp_path / "d.npz", image_size=6)
    assert ds.images.shape == (5, channels, 6, 6) and ds.labels.tolist() == [0, 1, 2, 3, 4]
    chw = x.reshape(5, 6, 6, -1).transpose(0, 3, 1, 2) if shape[1] == 6 else x
    assert torch.equal(ds.images, torch.from_numpy(np.ascontiguousarray(chw)))


def test_npz_keys_and_floats(tmp_path):
    unit = np.linspace(0, 1, 5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    np.savez(tmp_path / "a.npz", images=unit, labels=np.array([1, 0, 1, 0, 1]))
    ds = load(tmp_path / "a.npz", image_size=4)
    assert ds.images.min() == 0 and ds.images.max() == 255 and ds.labels.tolist() == [1, 0, 1, 0, 1]
    np.savez(tmp_path / "b.npz", unit * 2 - 1)  # the only array, in [-1, 1]
    assert torch.equal(load(tmp_path / "b.npz", image_size=4).images, ds.images)
    assert load(tmp_path / "b.npz", image_size=4).labels is None
    np.savez(tmp_path / "c.npz", x=unit * 3)
    with pytest.raises(DataError, match=r"c.npz: array 'x' has float values in \[0, 3\]"):
        load(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", x=rng_image((2, 5, 6, 7)))
    with pytest.raises(DataError, match="d.npz: array 'x' has shape"):
        load(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", a=unit, b=unit)
    with pytest.raises(DataError, match="no images array; name it 'x' or 'images'"):
        load(tmp_path / "e.npz")


def test_npz_pickled_object_array_is_refused(tmp_path):
    objects = np.empty(2, dtype=object)
    objects[:] = [rng_image((4, 4)), rng_image((4, 4))]
    np.savez(tmp_path / "p.npz", x=objects)
    with pytest.raises(DataError, match="p.npz: holds pickled or object arrays"):
        load(tmp_path / "p.npz")
    (tmp_path / "q.npz").write_bytes(b"definitely not a zip archive")
    with pytest.raises(DataError, match="q.npz"):
        load(tmp_path / "q.npz")


# ---------------------------------------------------------------------------------------------------
# split and cache


def test_split_is_deterministic_and_partitions():
    a = prepare.split_indices(103, [0.7, 0.2, 0.1], seed=1)
    b = prepare.split_indices(103, [0.7, 0.2, 0.1], seed=1)
    c = prepare.split_indices(103, [0.7, 0.2, 0.1], seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["train"], c["train"])
    assert [a[k].numel() for k in ("train", "val", "test")] == [72, 21, 10]
    assert torch.cat(list(a.values())).sort().values.tolist() == list(range(103))  # no overlap, nothing lost
    assert all(v.dtype == torch.int64 for v in a.values())
    odd = prepare.split_indices(3, [0.5, 0.5, 0.0], seed=0)
    assert sum(v.numel() for v in odd.values()) == 3


def _two_images(tmp_path):
    save(tmp_path / "f" / "a.png", rng_image((8, 8, 3), 1))
    save(tmp_path / "f" / "b.png", rng_image((8, 8, 3), 2))
    return tmp_path / "f"


def test_cache_hit_does_not_decode(tmp_path, monkeypatch):
    root = _two_images(tmp_path)
    first = load(root, image_size=8, split=[0.5, 0.5, 0.0])
    assert first.meta["from_cache"] is False

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(prepare, "_decode", boom)
    second = load(root, image_size=8, split=[0.5, 0.5, 0.0])
    assert second.meta["from_cache"] is True and second.source_hash == first.source_hash
    assert torch.equal(second.images, first.images)
    assert all(torch.equal(second.splits[k], first.splits[k]) for k in first.splits)
    moved = root.rename(tmp_path / "moved")  # same content elsewhere: still a hit
    assert load(moved, image_size=8).source_hash == first.source_hash
    with pytest.raises(AssertionError, match="decoded again"):  # other settings: another key
        load(moved, image_size=4)
    save(moved / "a.png", rng_image((8, 8, 3), 3))  # changed content: another key
    with pytest.raises(AssertionError, match="decoded again"):
        load(moved, image_size=8)
    monkeypatch.undo()
    monkeypatch.setenv("GENLOOP_CACHE_DIR", str(tmp_path / "cache"))
    assert load(moved, image_size=8, cache=False).meta["from_cache"] is False


def test_corrupt_cache_is_redecoded_and_overwritten(tmp_path, monkeypatch):
    root = _two_images(tmp_path)
    first = load(root, image_size=8)
    cache_file = prepare._cache_path(first.source_hash)
    assert cache_file.is_file()
    cache_file.write_bytes(b"garbage" * 10)
    calls = []
    real = prepare._decode
    monkeypatch.setattr(prepare, "_decode", lambda *a: calls.append(1) or real(*a))
    again = load(root, image_size=8)
    assert calls == [1] and torch.equal(again.images, first.images)
    assert load(root, image_size=8).meta["from_cache"] is True and calls == [1]


# ---------------------------------------------------------------------------------------------------
# downloads


def test_download_file_url(tmp_path):
    src = tmp_path / "remote.bin"
    src.write_bytes(b"hello genloop" * 100)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "file.bin"
    assert download([src.as_uri()], dest, md5=md5, sha256=sha) == dest
    assert dest.read_bytes() == src.read_bytes()
    src.unlink()  # already there with the right checksum: no download needed
    assert download([src.as_uri()], dest, md5=md5) == dest


def test_download_wrong_checksum_leaves_nothing(tmp_path):
    src = tmp_path / "remote.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "dl" / "file.bin"
    with pytest.raises(DataError, match="wrong checksum"):
        download([src.as_uri()], dest, md5="0" * 32)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_download_unreachable_fails_fast(tmp_path):
    t = time.perf_counter()
    with pytest.raises(DataError, match=r"could not download x\.gz: http://127\.0\.0\.1:9/x"):
        download(["http://127.0.0.1:9/x"], tmp_path / "x.gz", timeout=5)
    assert time.perf_counter() - t < 5


def test_mnist_download_via_mirror_and_offline_message(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for split, n in (("train", 4), ("t10k", 2)):
        write_idx(mirror / f"{split}-images-idx3-ubyte.gz", rng_image((n, 28, 28)), gz=True)
        write_idx(mirror / f"{split}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8), gz=True)
    spec = datasets["mnist"]
    md5 = {f: hashlib.md5((mirror / f).read_bytes()).hexdigest() for f in spec.md5}
    monkeypatch.setattr(spec, "md5", md5)
    monkeypatch.setattr(spec, "mirrors", ["http://127.0.0.1:9/", mirror.as_uri()])
    ds = load("mnist", image_size=28)
    assert ds.images.shape == (6, 1, 28, 28) and ds.labels.tolist() == [0, 1, 2, 3, 0, 1]
    assert ds.class_names == [str(i) for i in range(10)]
    assert sorted(p.name for p in spec.folder().iterdir()) == sorted(md5)

    monkeypatch.setattr(spec, "mirrors", ["http://127.0.0.1:9/"])
    for f in spec.folder().iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"could not download MNIST \(offline\?\): put train-images-idx3-ubyte.gz") as e:
        load("mnist", image_size=8)
    assert "--data PATH" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------
# batches


@pytest.mark.parametrize("flip, shift", [(False, 0), (True, 2)])
def test_batches_deterministic_and_resumable(flip, shift):
    images = torch.randint(0, 256, (10, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(10)

    def stream():
        return ImageBatches(images, labels, batch_size=4, seed=3, flip=flip, shift=shift)

    full = [next(b) for b in [stream()] for _ in range(5)]  # 2 batches per epoch: crosses two boundaries
    again = stream()
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(full, [next(again) for _ in range(5)]))
    for k in (1, 2, 3):  # resume mid-epoch and exactly at an epoch boundary
        first = stream()
        for _ in range(k):
            next(first)
        resumed = stream()
        resumed.load_state_dict(first.state_dict())
        for x, y in full[k:]:
            rx, ry = next(resumed)
            assert torch.equal(rx, x) and torch.equal(ry, y)
    assert not torch.equal(full[0][1], full[2][1])  # a new epoch is a new order
