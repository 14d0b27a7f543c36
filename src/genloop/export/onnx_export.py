"""An image run's network as ONNX, checked with onnxruntime against PyTorch before it is kept.

What is exported is the part of generation that is a fixed function of tensors:

- one-step generators (GANs, the VAE decoders): ``images = decoder(latents[, labels])``, images in [-1, 1]
  (exactly what :meth:`~genloop.generation.pipelines.ImagePipeline.decode` computes);
- diffusion models: one UNet step, ``prediction = unet(x, t[, labels])`` (the network's raw output, as the
  run's ``prediction`` setting defines it); the sampler loop and its noise schedule stay with the caller, and
  ``genloop_export.json`` records the model settings that define them. Classifier-free guidance is two calls,
  the second with the null class (``labels = num_classes``).

The batch dimension is dynamic. Right after export the file is run with onnxruntime on a fresh seeded batch of
another size and compared with PyTorch; a difference above :data:`TOLERANCE` refuses the export (no file that
loads but computes something else is left behind). Needs the ``onnx`` and ``onnxruntime`` packages.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..generation.pipelines import DiffusionPipeline, ImagePipeline, load_pipeline

TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| accepted, in the output's units ([-1, 1] images, unit noise)
OPSET = 17
CHECK_BATCH = 5  # a batch size other than the traced one, so the dynamic axis is exercised


class _Decoder(torch.nn.Module):
    def __init__(self, system: Any) -> None:
        super().__init__()
        self.system = system

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.system.decode(latents, labels).float()


class _UNetStep(torch.nn.Module):
    def __init__(self, system: Any) -> None:
        super().__init__()
        self.unet = system.unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, t, labels).float()


def _inputs(pipe: Any, n: int, seed: int) -> tuple[torch.nn.Module, str, dict[str, torch.Tensor]]:
    """The module to export, what it is, and named example inputs for a batch of ``n``."""
    system = pipe.system
    g = torch.Generator().manual_seed(seed)
    first = system.sample_latents(n, g)
    labels = {"labels": torch.randint(0, system.spec.num_classes, (n,), generator=g)} if system.conditional else {}
    if isinstance(pipe, DiffusionPipeline):
        t = torch.randint(0, system.config.num_train_timesteps, (n,), generator=g)
        return _UNetStep(system).eval(), "unet-step", {"x": first, "t": t, **labels}
    return _Decoder(system).eval(), "decoder", {"latents": first, **labels}


def export_onnx(run: Any, out: Path, checkpoint: str = "last") -> Path:
    """Write ``run``'s generator (or UNet step) to ``out/model.onnx`` with ``out/genloop_export.json``."""
    try:
        import onnx  # noqa: F401 - torch.onnx.export writes through it
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "--format onnx needs the onnx and onnxruntime packages: pip install onnx onnxruntime"
        ) from None
    pipe = load_pipeline(run.dir, "cpu", checkpoint)
    if not isinstance(pipe, ImagePipeline):
        raise ConfigError(
            f"--format onnx exports image generators (GANs, VAE decoders, the DDPM UNet step); run {run.id} is a "
            f"{pipe.info['model']} run"
        )
    module, kind, example = _inputs(pipe, 2, 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        build = Path(tmp) / "model"
        build.mkdir()
        path = build / "model.onnx"
        names = list(example)
        output = "images" if kind == "decoder" else "prediction"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes on tracing are not the user's concern
            torch.onnx.export(
                module,
                tuple(example.values()),
                str(path),
                input_names=names,
                output_names=[output],
                dynamic_axes={**{k: {0: "batch"} for k in [*names, output]}},
                opset_version=OPSET,
                dynamo=False,
            )
        _, _, check = _inputs(pipe, CHECK_BATCH, 1)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {k: v.numpy() for k, v in check.items()})[0]
        with torch.no_grad():
            want = module(*check.values()).numpy()
        diff = float(abs(got - want).max())
        if got.shape != want.shape or not diff <= TOLERANCE:
            raise ConfigError(
                f"--format onnx: onnxruntime's output differs from PyTorch's by {diff:.3g} (> {TOLERANCE}); not written"
            )
        system = pipe.system
        meta = {
            "format": "genloop-onnx-export",
            "run_id": run.id,
            "model": pipe.info["model"],
            "checkpoint": checkpoint,
            "checkpoint_sha256": pipe.info["checkpoint_sha256"],
            "graph": kind,
            "inputs": {
                k: {"shape": ["batch", *v.shape[1:]], "dtype": str(v.dtype).removeprefix("torch.")}
                for k, v in example.items()
            },
            "output": output,
            "opset": OPSET,
            "checked_with_onnxruntime": {"batch": CHECK_BATCH, "max_abs_diff": diff, "tolerance": TOLERANCE},
            "model_config": dataclasses.asdict(system.config) if dataclasses.is_dataclass(system.config) else {},
            "data_spec": dataclasses.asdict(system.spec) if dataclasses.is_dataclass(system.spec) else {},
        }
        (build / "genloop_export.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        build.rename(out)
    return out
