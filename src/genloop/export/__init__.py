"""Exports: a trained run in a format other tools load (``genloop export RUN --format ...``).

Each format is one module with one ``export_<format>(run, out) -> Path`` function, found through
:data:`FORMATS`; a format that cannot represent a run refuses it with one line saying why (never a file that
loads but computes something else).

- ``transformers`` (:mod:`.huggingface`): a ``gpt`` run as a GPT-2 folder that
  ``transformers.AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load.
- ``onnx`` (:mod:`.onnx_export`): an image run's generator, VAE decoder or DDPM UNet step as ``model.onnx``,
  checked with onnxruntime against PyTorch before it is kept (needs ``onnx`` and ``onnxruntime``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runs import RunStore


def _transformers(run: Any, out: Path, checkpoint: str) -> Path:
    from .huggingface import export_transformers

    return export_transformers(run, out, checkpoint)


def _onnx(run: Any, out: Path, checkpoint: str) -> Path:
    from .onnx_export import export_onnx

    return export_onnx(run, out, checkpoint)


FORMATS: dict[str, Callable[[Any, Path, str], Path]] = {"transformers": _transformers, "onnx": _onnx}


def export_run(
    run_id: str,
    fmt: str,
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
    checkpoint: str = "last",
) -> Path:
    """Write run ``run_id`` in format ``fmt`` to ``out`` (default ``<run>/export/<fmt>``); returns the folder."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    run = RunStore(runs_dir).get(run_id)
    target = Path(out) if out is not None else run.dir / "export" / fmt
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out {target} is a file, not a folder")
    return FORMATS[fmt](run, target, checkpoint)


__all__ = ["FORMATS", "export_run"]
