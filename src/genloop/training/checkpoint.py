"""Checkpoints: one safetensors file holding everything needed to continue exactly.

Tensors: the system's weights (``model/``), the EMA weights (``ema/``), every optimizer's state
(``optim/<group>/<param index>/<key>``), the grad scaler, and the RNG states (``rng/``). Everything
else (step, data position, optimizer hyper-parameters, elapsed time) is JSON in the file's metadata.
Written through ``serialization.save_tensors``, so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..serialization import load_tensors, save_tensors
from .ema import EMA


def _optimizer_to_flat(name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    sd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim/{name}/{idx}/{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(
    name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix) :].split("/", 1)
            state.setdefault(int(idx), {})[field] = value
    for idx, fields in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(fields)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    path: Path,
    system: torch.nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    ema: EMA | None,
    scaler: torch.amp.GradScaler | None,
    state: dict[str, Any],
) -> str:
    """Write a checkpoint; returns its sha256."""
    tensors: dict[str, torch.Tensor] = {f"model/{k}": v for k, v in system.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ema.shadow.state_dict().items()})
    meta = dict(state)
    meta["optimizers"] = {name: _optimizer_to_flat(name, opt, tensors) for name, opt in optimizers.items()}
    if scaler is not None and scaler.is_enabled():
        meta["scaler"] = {k: (v.item() if torch.is_tensor(v) else v) for k, v in scaler.state_dict().items()}
    tensors["rng/cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    return save_tensors(path, tensors, meta)


def load_checkpoint(
    path: Path,
    system: torch.nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    ema: EMA | None = None,
    scaler: torch.amp.GradScaler | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into live objects; returns the JSON state."""
    tensors, meta = load_tensors(path)
    meta = meta or {}
    system.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    if ema is not None:
        ema_sd = {k[4:]: v for k, v in tensors.items() if k.startswith("ema/")}
        if ema_sd:
            ema.shadow.load_state_dict(ema_sd)
    for name, opt in (optimizers or {}).items():
        _optimizer_from_flat(name, opt, tensors, meta["optimizers"][name])
    if scaler is not None and "scaler" in meta:
        scaler.load_state_dict(meta["scaler"])
    if restore_rng:
        torch.set_rng_state(tensors["rng/cpu"])
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
    return meta


def inference_state(system: torch.nn.Module, ema: EMA | None, ema_target: str) -> dict[str, torch.Tensor]:
    """The system's weights with the EMA average in place of its inference module: what generates."""
    sd = dict(system.state_dict())
    if ema is not None:
        sd.update({f"{ema_target}.{k}": v for k, v in ema.shadow.state_dict().items()})
    return sd
