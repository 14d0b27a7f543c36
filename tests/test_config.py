"""Typed config: YAML files, --set overrides, and errors that name what is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from genloop.api import resolve_config
from genloop.config import apply_overrides, from_dict, load_yaml
from genloop.data import DataConfig
from genloop.errors import ConfigError, NotFoundError
from genloop.training import TrainConfig


def test_defaults_layering_and_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  z_dim: 32\ntrain:\n  lr: 0.001\n  batch_size: 8\n")
    rc = resolve_config(
        "dcgan", "digits", cfg_file, ["train.lr=3e-4", "train.betas=[0.0, 0.9]", "train.ema_decay=null"], steps=7
    )
    assert rc.model.z_dim == 32 and rc.model.name == "dcgan"
    assert rc.train.lr == pytest.approx(3e-4)  # --set beats the file, which beats the family default
    assert rc.train.betas == [0.0, 0.9] and rc.train.ema_decay is None
    assert rc.train.batch_size == 8 and rc.train.steps == 7 and rc.train.time_budget is None
    assert resolve_config("dcgan").train.betas == [0.5, 0.999]  # the family's preferred Adam betas
    tb = resolve_config("vae", time_budget=30.0)
    assert tb.train.steps is None and tb.train.time_budget == 30.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.nope=1"], "unknown config key 'train.nope'; valid keys: steps,"),
        (["model.nope=1"], "unknown config key 'model.nope'; valid keys: name, z_dim"),
        (["train.lr=abc"], "train.lr: expected float, got 'abc'"),
        (["train.steps=1.5"], "train.steps: expected int | null"),
        (["train.precision=fp8"], "train.precision: expected 'auto' | 'fp32' | 'bf16' | 'fp16'"),
        (["train.tensorboard=maybe"], "train.tensorboard: expected bool"),
        (["nosection.x=1"], "unknown config section 'nosection'"),
        (["train.lr"], "--set expects key=value"),
        (["train.lr.x=1"], "'lr' is a value, not a section"),
        (["model.name=vae"], "model.name cannot be changed"),
        (["data.split=[0.5,0.6,0.1]"], "data.split must be three non-negative fractions summing to 1"),
        (["train.batch_size=0"], "train.batch_size must be >= 1"),
    ],
)
def test_bad_settings_name_what_is_valid(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_config("dcgan", overrides=overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(
        NotFoundError,
        match="unknown model 'gpt9'; valid: beta-vae, cgan, cvae, dcgan, ddpm, ddpm-distill, ddpm-text, gpt, "
        "hf-causal-lm, music-gpt, resgan, vae, wgan-gp",
    ):
        resolve_config("gpt9")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "other.yaml").write_text("model:\n  name: vae\n")
    with pytest.raises(ConfigError, match="is for model 'vae'"):
        resolve_config("dcgan", config=tmp_path / "other.yaml")
    (tmp_path / "flat.yaml").write_text("model: dcgan\n")
    with pytest.raises(ConfigError, match="config section 'model' must be a mapping of settings, got 'dcgan'"):
        resolve_config("dcgan", config=tmp_path / "flat.yaml")
    (tmp_path / "sect.yaml").write_text("optimizer:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown config section 'optimizer'; valid sections: model, data, train"):
        resolve_config("dcgan", config=tmp_path / "sect.yaml")


def test_coercion_of_strings() -> None:
    t = from_dict(TrainConfig, {"steps": "1_000", "grad_clip": "1.5", "tensorboard": "no", "time_budget": "none"})
    assert t.steps == 1000 and t.grad_clip == 1.5 and t.tensorboard is False and t.time_budget is None
    d = from_dict(DataConfig, {"split": "0.7,0.2,0.1", "channels": "3"})
    assert d.split == [0.7, 0.2, 0.1] and d.channels == 3


def test_apply_overrides_does_not_mutate() -> None:
    base = {"train": {"lr": 1}}
    out = apply_overrides(base, ["train.lr=2", "data.name=x"])
    assert base == {"train": {"lr": 1}} and out == {"train": {"lr": "2"}, "data": {"name": "x"}}
