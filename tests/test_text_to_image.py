"""Text to image: captioned data in both conventions, the digit attributes, ddpm-text and its guidance, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, tiny
from PIL import Image

import genloop
from genloop.data import DataConfig, load_dataset
from genloop.data.digit_captions import bins_of, caption, measure, parse_prompt, thresholds
from genloop.data.image_io import read_recipe
from genloop.errors import ConfigError, DataError
from genloop.models.text_unet import encode_texts
from genloop.systems import DataSpec, models


def _images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name in names:
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8), "L").save(p)
        paths.append(p)
    return paths


def _load(folder: Path) -> genloop.data.ImageDataset:
    return load_dataset(DataConfig(name=str(folder), image_size=8, split=[0.5, 0.25, 0.25]))


# --- caption loading ---------------------------------------------------------------------------------------------
def test_metadata_jsonl_captions_follow_their_files(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    _images(root, ["cats/a.png", "cats/b.png", "dogs/c.png", "dogs/d.png"])
    lines = [
        {"file_name": "cats/b.png", "text": "second"},
        {"file_name": "cats/a.png", "text": "first 一"},
        {"file_name": "dogs/d.png", "text": " fourth "},
    ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    # a metadata.jsonl in a sub-folder names files relative to itself, as ImageFolder reads it
    (root / "dogs" / "metadata.jsonl").write_text(json.dumps({"file_name": "c.png", "text": "third"}) + "\n")
    ds = _load(root)
    assert ds.captions == ["first 一", "second", "third", "fourth"]  # in the files' sorted order
    assert ds.class_names == ["cats", "dogs"]  # sub-folders are still classes
    assert ds.info()["captioned"] is True
    assert ds.get_captions("train") == [ds.captions[i] for i in ds.splits["train"].tolist()]
    again = _load(root)  # from the prepared cache, with its captions
    assert again.meta["from_cache"] and again.captions == ds.captions
    (root / "metadata.jsonl").write_text((root / "metadata.jsonl").read_text().replace("second", "2nd"))
    assert _load(root).captions[1] == "2nd"  # a caption edit is a new cache key


def test_txt_captions_beside_images(tmp_path: Path) -> None:
    root = tmp_path / "txt"
    for p, text in zip(_images(root, ["x.png", "y.jpg"]), ["a thick seven\n", "细的三"]):
        p.with_suffix(".txt").write_text(text, encoding="utf-8")
    assert _load(root).captions == ["a thick seven", "细的三"]


def test_an_uncaptioned_folder_loads_as_before(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    _images(root, ["a.png", "b.png"])
    (root / "README.txt").write_text("not a caption: no image is called README")
    ds = _load(root)
    assert ds.captions is None
    with pytest.raises(DataError, match="has no captions"):
        ds.get_captions("train")


@pytest.mark.parametrize(
    ("lines", "txt", "match"),
    [
        ([{"file_name": "a.png", "text": "x"}, {"file_name": "gone.png", "text": "y"}], {}, "'gone.png', which is not"),
        ([{"file_name": "a.png", "text": "x"}], {}, r"1 of 2 images have no caption \(first: b.png\)"),
        ([{"file_name": "a.png", "text": "x"}, {"file_name": "b.png", "text": "  "}], {}, "caption of b.png is empty"),
        ([{"file_name": "a.png", "caption": "x"}], {}, "needs 'file_name' and 'text'"),
        ([{"file_name": "a.png", "text": "x"}, {"file_name": "a.png", "text": "y"}], {}, "captions 'a.png' again"),
        ([{"file_name": "a.png", "text": "x"}, {"file_name": "b.png", "text": "y"}], {"a": "z"}, "keep one convention"),
        (None, {"a": "only one"}, r"1 of 2 images have no caption \(first: b.png\)"),
        (None, {"a": "", "b": "y"}, r"caption of a.png is empty \(a.txt\)"),
        ("{broken", {}, "line 1 is not JSON"),
    ],
)
def test_bad_captions_are_one_line_errors(tmp_path: Path, lines, txt: dict, match: str) -> None:
    root = tmp_path / "bad"
    _images(root, ["a.png", "b.png"])
    if isinstance(lines, str):
        (root / "metadata.jsonl").write_text(lines + "\n")
    elif lines is not None:
        (root / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    for stem, text in txt.items():
        (root / f"{stem}.txt").write_text(text)
    with pytest.raises(DataError, match=match) as e:
        _load(root)
    assert "\n" not in str(e.value)


# --- the built-in captioned digits and their attributes ---------------------------------------------------------
def _digit(thickness: float = 1.0, shear: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """A synthetic vertical bar ("one") at 8 px, sheared and scaled: (1, 1, 8, 8) in [-1, 1]."""
    img = torch.full((8, 8), -1.0)
    for y in range(8):
        yc = (y - 3.5) * scale
        if abs(yc) > 3.5:
            continue
        x = 3.5 - shear * yc
        for dx in np.arange(-thickness / 2, thickness / 2 + 1e-6, 0.25):
            xi = int(round(x + dx))
            if 0 <= xi < 8:
                img[y, xi] = 1.0
    return img[None, None]


def test_attribute_measurements_move_the_right_way() -> None:
    base = measure(_digit())
    assert measure(_digit(thickness=2.5))["thickness"][0] > base["thickness"][0]
    right, left = measure(_digit(shear=0.4))["slant"][0], measure(_digit(shear=-0.4))["slant"][0]
    assert right > 0.2 and left < -0.2 and abs(base["slant"][0]) < 1e-6  # leaning right (/) is positive
    assert measure(_digit(scale=1.6))["size"][0] < base["size"][0]  # scaled up rows fall outside: less spread
    # the same measurement at any size: measured on the 8 x 8 grid
    big = torch.nn.functional.interpolate(_digit(shear=0.4), size=32, mode="nearest")
    assert measure(big)["slant"][0] == pytest.approx(right, abs=1e-6)


def test_bins_are_per_class_terciles() -> None:
    t = thresholds()
    assert set(t) == {"thickness", "slant", "size"} and t["slant"].shape == (10, 2)
    assert (t["thickness"][:, 0] < t["thickness"][:, 1]).all()
    values = {a: np.array([t[a][1, 0] - 1e-3, t[a][1].mean(), t[a][1, 1] + 1e-3]) for a in t}
    b = bins_of(values, np.array([1, 1, 1]))
    assert all(b[a].tolist() == [0, 1, 2] for a in t)


def test_captions_name_what_was_measured_and_parse_back() -> None:
    import random

    rng = random.Random(0)
    texts = [caption(7, {"thickness": 2, "slant": 0, "size": 1}, rng) for _ in range(60)]
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts)  # both languages occur
    assert any(t.isascii() for t in texts)
    for t in texts:
        r = parse_prompt(t)
        assert r.label == 7 and r.attributes.get("thickness", "high") == "high" and "size" not in r.attributes
        assert r.attributes.get("slant", "low") == "low"
    assert parse_prompt("a thick slanted seven") == parse_prompt("一个粗的、向右倾斜的数字七")
    assert parse_prompt("a thick slanted seven").attributes == {"thickness": "high", "slant": "high"}
    assert parse_prompt("").label is None


def test_digits_captions_builtin() -> None:
    ds = load_dataset(DataConfig(name="digits-captions", image_size=8))
    assert len(ds.captions) == ds.images.shape[0] == 1797 and ds.num_classes == 10
    parsed = [parse_prompt(c) for c in ds.captions]
    assert all(p.label == y for p, y in zip(parsed, ds.labels.tolist()))
    measured = bins_of(measure(ds.images), ds.labels.numpy())
    names = ("low", "mid", "high")
    for i, p in enumerate(parsed):  # every attribute a caption names is the one measured
        assert all(names[measured[a][i]] == b for a, b in p.attributes.items())
    assert max(len(c.encode()) for c in ds.captions) <= 64


# --- the model ---------------------------------------------------------------------------------------------------
def _system(**kw) -> torch.nn.Module:
    cls = models["ddpm-text"]
    cfg = cls.Config(width=8, channel_mults=[1, 2], text_width=16, text_layers=1, text_heads=2, **kw)
    torch.manual_seed(0)
    return cls(cfg, DataSpec(1, 8, 10, captioned=True)).eval()


def test_shapes_guidance_one_is_conditional_and_zero_is_the_empty_prompt() -> None:
    s = _system()
    with torch.no_grad():  # the zero-initialised output layers would make every prediction 0
        for p in s.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, 1, 8, 8)
    tokens = s.tokenize(["a thick seven", "一个细的三", "small zero"])
    cond = s.unet(x, torch.full((3,), 5), tokens)
    assert cond.shape == x.shape
    assert torch.allclose(s.predict(x, 5, tokens, guidance=1.0), cond)
    empty = s.unet(x, torch.full((3,), 5), s.tokenize(["", "", ""]))
    assert torch.allclose(s.predict(x, 5, tokens, guidance=0.0), empty)
    assert not torch.allclose(cond, empty)
    g = s.predict(x, 5, tokens, guidance=3.0)
    assert torch.allclose(g, empty + 3 * (cond - empty), atol=1e-5)


def test_caption_too_long_and_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="reads at most 4"):
        encode_texts(["七七"], 4)  # 6 bytes
    assert encode_texts(["ab", ""], 4).tolist() == [[98, 99, 0, 0], [0, 0, 0, 0]]
    cls = models["ddpm-text"]
    with pytest.raises(ConfigError, match="needs captioned data"):
        cls(cls.Config(width=8, channel_mults=[1, 2]), DataSpec(1, 8, 10))
    with pytest.raises(ConfigError, match="caption_dropout"):
        _system(caption_dropout=1.0)


def test_training_needs_captions() -> None:
    with pytest.raises(ConfigError, match="needs captioned data"):
        genloop.train("ddpm-text", data="digits", overrides=tiny("ddpm-text"), steps=1, progress=False)


@pytest.fixture(scope="module")
def t2i_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    runs = tmp_path_factory.mktemp("t2i-runs")
    run = genloop.train(
        "ddpm-text", data="digits-captions", overrides=tiny("ddpm-text"), steps=3, progress=False, runs_dir=runs
    )
    return run.id, runs


def test_pipeline_prompt_determinism_and_recipe(t2i_run) -> None:
    run_id, runs = t2i_run
    pipe = genloop.load(run_id, runs_dir=runs)
    out = pipe(n=3, seed=5, prompt="a thick slanted seven", guidance=3)
    assert out.tensors.shape == (3, 1, 8, 8) and out.tensors.abs().max() <= 1
    assert torch.equal(out.tensors, pipe(n=3, seed=5, prompt="a thick slanted seven", guidance=3).tensors)
    assert not torch.equal(out.tensors, pipe(n=3, seed=6, prompt="a thick slanted seven", guidance=3).tensors)
    r = out.recipe_of(2)
    assert r["prompt"] == "a thick slanted seven" and r["guidance"] == 3.0 and r["seed"] == 7
    # image i alone with seed + i is the same image
    assert torch.equal(out.tensors[2], pipe(n=1, seed=7, prompt="a thick slanted seven", guidance=3).tensors[0])
    # the empty prompt is the unconditional model: any prompt at guidance 0
    assert torch.equal(pipe(n=2, seed=0, prompt="").tensors, pipe(n=2, seed=0, prompt="a thin one", guidance=0).tensors)
    assert torch.equal(pipe(n=2, seed=0).tensors, pipe(n=2, seed=0, prompt="").tensors)
    many = pipe(n=2, seed=0, prompt=["a thick seven", "一个细的三"])
    assert [many.recipe_of(i)["prompt"] for i in range(2)] == ["a thick seven", "一个细的三"]
    with pytest.raises(ConfigError, match="not --class"):
        pipe(n=2, class_label=3)
    with pytest.raises(ConfigError, match="3 prompts for 2 images"):
        pipe(n=2, prompt=["a", "b", "c"])


def test_eval_reports_adherence(t2i_run, monkeypatch) -> None:
    from genloop.evaluation import clip_score

    monkeypatch.setattr(clip_score, "TRAIN_STEPS", 20)  # the scorer's numbers are not what this test checks
    run_id, runs = t2i_run
    r = genloop.evaluate(run_id, n=30, steps=2, runs_dir=runs)
    for key in ("fid", "fid_floor", "class_accuracy", "class_accuracy_floor", "clip_score", "clip_score_floor"):
        assert key in r, key
    assert 0 <= r["attribute_accuracy"] <= 1 and r["attribute_requests"] > 0
    assert 0 <= r["clip_retrieval_top1"] <= r["clip_retrieval_top5"] <= 1
    assert r["class_accuracy_floor"] > 0.8


def test_studio_descriptor_gives_a_prompt_box(t2i_run) -> None:
    from genloop.modalities import modalities
    from genloop.runs import RunStore

    run_id, runs = t2i_run
    config = RunStore(runs).get(run_id).config
    d = modalities["image"].describe(config, models["ddpm-text"])
    assert d["prompt"] is True and d["default_guidance"] == 3.0 and d["diffusion"] is True
    ddpm = modalities["image"].describe({"model": {"name": "ddpm"}, "data_spec": {}}, models["ddpm"])
    assert ddpm["prompt"] is False


def test_cli_train_generate_with_prompt(capsys, tmp_path: Path) -> None:
    sets = [a for item in tiny("ddpm-text") for a in ("--set", item)]
    code, out, err = cli(capsys, "train", "ddpm-text", "--data", "digits-captions", "--steps", "2", *sets)
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    code, out, err = cli(
        capsys, "generate", run_id, "--n", "3", "--prompt", "a thick slanted seven", "--guidance", "3", "--steps", "2"
    )
    assert code == 0, err
    files = sorted((tmp_path / "runs" / run_id / "generated").glob("sample_*.png"))
    assert len(files) == 3 and read_recipe(files[0])["prompt"] == "a thick slanted seven"
    code, out, err = cli(capsys, "generate", run_id, "--n", "2", "--class", "3")
    assert code == 2 and "not --class" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "generate", run_id, "--n", "2", "--prompt", "x" * 80)
    assert code == 2 and "reads at most 64" in err


def test_cli_prompt_refused_by_an_image_model_without_text(capsys) -> None:
    run = genloop.train("ddpm", data="digits", overrides=tiny("ddpm"), steps=1, progress=False)
    code, out, err = cli(capsys, "generate", run.id, "--n", "2", "--prompt", "a seven")
    assert code == 2 and "--prompt" in err
