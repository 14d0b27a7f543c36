"""Every registered family through the whole loop, from the Python API and the CLI: train -> generate ->
evaluate (all metrics, each with its floor) -> report -> compare; plus the sampler sweep and the
Inception backend's errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_MODEL, cli, tiny

import genloop
from genloop.data.image_io import read_recipe
from genloop.errors import ConfigError, NotFoundError
from genloop.systems import models

FAMILIES = sorted(set(TINY_MODEL) - {"ddpm-text"})  # ddpm-text needs captions: tests/test_text_to_image.py
CONDITIONAL = {"cgan": [], "cvae": [], "ddpm": ["model.class_conditional=true"]}


def test_every_registered_family_has_a_tiny_config() -> None:
    """Every image family is exercised here but ddpm-distill, which needs a teacher run (test_ddpm_distill), and
    ddpm-text, which needs captions (test_text_to_image); the text families (gpt, hf-causal-lm) in
    test_text_loop/test_hf_lm."""
    image = {name for name in models.names() if models[name].modality == "image"}
    assert set(FAMILIES) | {"ddpm-distill", "ddpm-text"} == image
    assert image == {"dcgan", "wgan-gp", "cgan", "resgan", "vae", "beta-vae", "cvae", "ddpm", "ddpm-distill"} | {
        "ddpm-text"
    }
    assert {name for name in models.names() if models[name].modality == "text"} == {"gpt", "hf-causal-lm"}


@pytest.mark.parametrize("model", FAMILIES)
def test_family_trains_generates_and_evaluates(model: str) -> None:
    extra = CONDITIONAL.get(model, [])
    run = genloop.train(model, data="digits", overrides=tiny(model, *extra), steps=3, progress=False)
    pipe = genloop.load(run.id)
    conditional = model in CONDITIONAL
    out = pipe(n=4, seed=0, class_label=3 if conditional else None)
    assert out.tensors.shape == (4, 1, 8, 8) and out.tensors.abs().max() <= 1
    assert torch.equal(out.tensors, pipe(n=4, seed=0, class_label=3 if conditional else None).tensors)
    if conditional:
        assert out.labels.tolist() == [3] * 4 and out.recipe_of(0)["class_label"] == 3
    paths = genloop.generate(run.id, n=4, seed=0)
    assert read_recipe(paths[1])["model"] == model
    r = genloop.evaluate(run.id, n=40)
    for key in ("fid", "kid", "precision", "recall", "density", "coverage", "copy_rate", "sampling_ms_per_image"):
        assert key in r, key
        if key not in ("sampling_ms_per_image",):
            assert f"{key}_floor" in r, key
    assert r["feature_net"]["id"] and r["feature_net"]["sha256"] and r["n_generated"] == 40
    assert r["reference_split"] == "val+test" and r["seed"] == 0
    assert ("class_accuracy" in r) == conditional
    if conditional:
        assert 0 <= r["class_accuracy"] <= 1 and r["class_accuracy_floor"] > 0.8 and "per_class_fid" in r
    if "vae" in model:
        assert r["iwae_nats"] >= r["elbo_nats"] - 1.0  # k samples: a tighter bound (noise aside on 3 steps)
    if model == "ddpm":
        assert r["sampler"] == "dpmpp-2m" and r["steps"] == 4
    assert (run.dir / "eval" / "closest_pairs.png").is_file()
    assert genloop.report(run.id).is_file()


def test_memorization_flags_a_model_that_copies(monkeypatch) -> None:
    """A 'model' whose samples are training images is caught: its copy rate far above the floor."""
    from genloop.data import DataConfig, load_dataset
    from genloop.evaluation import evaluate_images, get_feature_extractor

    ds = load_dataset(DataConfig(name="digits", image_size=8))
    fe = get_feature_extractor(ds)
    copies = ds.float_images("train")[:100]
    r = evaluate_images(copies, ds, fe, metrics=("memorization",))
    assert r["copy_rate"] > 0.9 and r["copy_rate_floor"] < 0.05
    fresh = evaluate_images(ds.float_images("test")[:100], ds, fe, metrics=("memorization",))
    assert fresh["copy_rate"] < 0.05


def _sets(model: str, *extra: str) -> list[str]:
    return [a for item in tiny(model, *extra) for a in ("--set", item)]


def test_cli_conditional_generate_eval_compare_and_sweep(capsys, tmp_path) -> None:
    ids = {}
    for model, extra in (("cgan", []), ("ddpm", ["model.class_conditional=true"])):
        code, out, err = cli(
            capsys, "train", model, "--data", "digits", *_sets(model, *extra), "--steps", "3", "--quiet"
        )
        assert code == 0, err
        ids[model] = out.strip().splitlines()[-1]
    code, out, err = cli(
        capsys,
        "generate",
        ids["ddpm"],
        "--n",
        "3",
        "--class",
        "7",
        "--sampler",
        "ddim",
        "--steps",
        "2",
        "--guidance",
        "2",
        "--eta",
        "0.5",
        "--out",
        tmp_path / "g",
    )
    assert code == 0, err
    recipe = read_recipe(tmp_path / "g" / "sample_000001.png")
    assert (recipe["class_label"], recipe["sampler"], recipe["sampling_steps"], recipe["guidance"], recipe["eta"]) == (
        7,
        "ddim",
        2,
        2.0,
        0.5,
    )
    for rid in ids.values():
        code, out, err = cli(capsys, "eval", rid, "--n", "40")
        assert code == 0, err
        assert "class accuracy" in out and "precision" in out and "near-copies" in out
    code, out, err = cli(capsys, "compare", *ids.values(), "--out", tmp_path / "cmp")
    assert code == 0, err
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]
    assert [r["model"] for r in rows] == ["cgan", "ddpm"] and all("fid_x_floor" in r for r in rows)
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    assert "class_accuracy" in out.splitlines()[0]  # piped: a tab-separated header
    code, out, err = cli(capsys, "eval", ids["ddpm"], "--sweep", "1,2", "--samplers", "ddim,dpmpp-2m", "--n", "20")
    assert code == 0, err
    sweep = json.loads((genloop.api.RunStore().get(ids["ddpm"]).dir / "eval" / "sampler_sweep.json").read_text())
    assert [(p["sampler"], p["steps"]) for p in sweep["points"]] == [
        ("ddim", 1),
        ("ddim", 2),
        ("dpmpp-2m", 1),
        ("dpmpp-2m", 2),
    ]
    # 3 training steps: every point far above what real images score (the floor)
    assert all(p["ms_per_image"] > 0 and p["fid"] > 2 * sweep["fid_floor"] > 0 for p in sweep["points"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--class", "3"], "unconditional"),
        (["--steps", "10"], "apply to diffusion models only"),
        (["--checkpoint", "best"], "no best checkpoint"),
        (["--checkpoint", "first"], "unknown checkpoint 'first'"),
    ],
)
def test_cli_generate_bad_options_are_one_line_errors(capsys, args, message) -> None:
    code, out, err = cli(capsys, "train", "dcgan", "--data", "digits", *_sets("dcgan"), "--steps", "2", "--quiet")
    rid = out.strip().splitlines()[-1]
    code, out, err = cli(capsys, "generate", rid, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_eval_errors(capsys, tmp_path, monkeypatch) -> None:
    from genloop.evaluation import inception

    # without --weights the standard file is downloaded: here from nowhere, as on an offline machine
    monkeypatch.setattr(inception, "FID_WEIGHTS_URLS", [(tmp_path / "offline" / "missing.pth").as_uri()])
    code, out, err = cli(capsys, "train", "dcgan", "--data", "digits", *_sets("dcgan"), "--steps", "2", "--quiet")
    rid = out.strip().splitlines()[-1]
    for args, message in (
        (["--features", "inception"], "or pass --weights PATH"),
        (["--features", "inception", "--weights", tmp_path / "nope.pth"], "nope.pth"),
        (["--features", "clip"], "unknown --features 'clip'"),
        (["--features", f"hf:{tmp_path / 'no-model'}"], "no such model folder"),
        (["--sweep", "5,10"], "needs a diffusion run"),
        (["--sweep", "a,b"], "--sweep takes step counts"),
    ):
        code, out, err = cli(capsys, "eval", rid, "--n", "20", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    code, out, err = cli(capsys, "compare", rid, "--out", tmp_path / "c")
    assert code == 2 and "has not been evaluated yet" in err


def test_eval_with_inception_backend_from_a_local_file(tmp_path) -> None:
    """The Inception path end to end on a weights file made here (random weights: only the plumbing is tested)."""
    import numpy as np
    from safetensors.torch import save_file

    from genloop.evaluation.inception import FIDInceptionV3

    torch.manual_seed(0)
    save_file(FIDInceptionV3().state_dict(), str(tmp_path / "inception.safetensors"))
    # a small RGB dataset, so that the 299-px network sees few held-out images (it costs ~6 GFLOPs each)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", images=rng.integers(0, 255, (60, 8, 8, 3), dtype=np.uint8), labels=np.arange(60) % 2)
    run = genloop.train("dcgan", data=str(tmp_path / "rgb.npz"), overrides=tiny("dcgan"), steps=2, progress=False)
    r = genloop.evaluate(run.id, n=12, features="inception", weights=tmp_path / "inception.safetensors")
    assert r["feature_net"]["kind"] == "inception" and r["feature_net"]["feature_dim"] == 2048
    assert r["feature_net"]["accuracy"] is None
    # the same FID computed independently: the samples `evaluate` draws (seed 1_000_000), the held-out
    # val+test images, and the Fréchet distance of their features under the same weights
    from genloop.config import from_dict
    from genloop.data import DataConfig, load_dataset
    from genloop.evaluation import frechet_distance
    from genloop.evaluation.inception import load_inception

    net = load_inception(tmp_path / "inception.safetensors")
    ds = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
    real = torch.cat([ds.get(s)[0] for s in ("val", "test")])
    fake = genloop.load(run.id)(n=12, seed=1_000_000).tensors
    fr, ff = (net.features_and_probs(x, 64)[0].double().numpy() for x in (real, fake))
    expected = frechet_distance(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert r["fid"] == pytest.approx(expected, rel=1e-4)
    assert (run.dir / "eval" / "metrics_inception.json").is_file()
    with pytest.raises(NotFoundError):
        genloop.evaluate(run.id, n=12, features="inception", weights=tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="--weights goes with --features inception"):
        genloop.evaluate(run.id, n=12, weights=tmp_path / "inception.safetensors")


def test_train_help_names_every_registered_family(capsys) -> None:
    code, out, err = cli(capsys, "train", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert all(name in text for name in models.names()), text
