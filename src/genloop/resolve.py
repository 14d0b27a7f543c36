"""Resolving a training recipe: which settings a run trains with, layered from four places.

The layering (family defaults < recipe < config file < ``--set`` overrides < explicit arguments) lives here, beside
:mod:`genloop.config` (which turns one dict into typed dataclasses), because both ``train`` and ``resume``
need the same answer and a run's ``config.json`` is only ever written from a :class:`ResolvedConfig`.
It is a module of its own rather than part of ``config.py`` because it needs the model registry, and the
model families themselves import ``config.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import apply_overrides, from_dict, load_yaml, to_dict
from .errors import ConfigError
from .systems import System, models
from .training.config import TrainConfig

SECTIONS = ("model", "data", "train")


@dataclass
class ResolvedConfig:
    """The typed settings of one run: its family's class and the three sections of ``config.json``."""

    system_cls: type[System]
    model: Any
    data: Any  # DataConfig (images) or TextDataConfig (text), by the family's modality
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"model": to_dict(self.model), "data": to_dict(self.data), "train": to_dict(self.train)}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, nested mappings merged key by key (a file sets one key, not a section)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(
    model: str,
    data: str | None = None,
    config: str | Path | dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    steps: int | None = None,
    time_budget: float | None = None,
    seed: int | None = None,
    recipe: dict[str, dict[str, Any]] | None = None,
) -> ResolvedConfig:
    """Layer the settings: family defaults < recipe (:mod:`genloop.recipes`) < config file < ``--set`` overrides
    < explicit arguments."""
    cls = models[model]
    layered: dict[str, Any] = {"model": {"name": model}, "data": {}, "train": dict(cls.train_defaults)}
    if recipe:
        layered = _merge(layered, {k: v for k, v in recipe.items() if v})
    if config is not None:
        file_cfg = config if isinstance(config, dict) else load_yaml(config)
        named = file_cfg["model"].get("name") if isinstance(file_cfg.get("model"), dict) else None
        if named and named != model:
            raise ConfigError(f"the config file is for model '{named}' but the command trains '{model}'")
        layered = _merge(layered, file_cfg)
    layered = apply_overrides(layered, list(overrides))
    for key, section in layered.items():
        if key not in SECTIONS:
            raise ConfigError(f"unknown config section '{key}'; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(section, dict):
            raise ConfigError(f"config section '{key}' must be a mapping of settings, got {section!r}")
    if layered["model"].get("name", model) != model:
        raise ConfigError("model.name cannot be changed with --set; train another model with `genloop train NAME`")
    if data is not None:
        layered["data"]["name"] = data
    if steps is not None:
        layered["train"]["steps"] = steps
        if time_budget is None:
            layered["train"]["time_budget"] = None
    if time_budget is not None:
        layered["train"]["time_budget"] = time_budget
        if steps is None:
            layered["train"]["steps"] = None
    if seed is not None:
        layered["train"]["seed"] = seed
    train = layered["train"]
    dp = train.get("dp") if isinstance(train.get("dp"), dict) else {}
    dp_on = any(dp.get(k) not in (None, "null", "none", "None", "~") for k in ("epsilon", "noise_multiplier"))
    if dp_on and train.get("grad_clip") == cls.train_defaults.get("grad_clip"):
        # the family's whole-batch clipping gives way to DP's per-example clipping (train.dp.max_grad_norm)
        train["grad_clip"] = None
    model_cfg = from_dict(cls.Config, layered["model"], "model.")
    data_cfg = from_dict(_data_config_cls(cls), layered["data"], "data.")
    train_cfg = from_dict(TrainConfig, layered["train"], "train.")
    if train_cfg.dp.enabled:  # the family refuses DP, or adapts its networks to it (a GAN: GroupNorm for BatchNorm)
        model_cfg = cls.dp_config(model_cfg)
    return ResolvedConfig(cls, model_cfg, data_cfg, train_cfg)


def _data_config_cls(cls: type[System]) -> type:
    """A family's modality decides which data settings it accepts (a text model has no image_size)."""
    from .modalities import modalities

    return modalities[cls.modality].data_config_cls
