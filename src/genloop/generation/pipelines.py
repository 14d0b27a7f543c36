"""Inference pipelines: a trained run in, images out. Inference only; the loop fits on one screen.

Every image ``i`` of a call with ``seed=s`` is drawn from its own seed ``s + i`` (as generation UIs
do), so any single image can be regenerated alone with ``n=1, seed=s+i``, and every output carries
the recipe that made it: run, checkpoint sha256, model, seed, sampler settings, GenLoop version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..config import from_dict
from ..data.image import to_uint8
from ..errors import NotFoundError
from ..serialization import load_tensors, read_json, sha256_file
from ..systems import DataSpec, System, models


@dataclass
class ImageOutput:
    tensors: torch.Tensor  # (n, C, H, W) floats in [-1, 1]
    recipe: dict[str, Any] = field(default_factory=dict)  # shared by the batch; image i used seed + i

    @property
    def images(self) -> list:
        """The images as PIL images."""
        from .io import tensor_to_pil

        return [tensor_to_pil(t) for t in self.tensors]

    def recipe_of(self, i: int) -> dict[str, Any]:
        return {**self.recipe, "seed": self.recipe["seed"] + i, "n": 1, "index": i, "batch_seed": self.recipe["seed"]}


class ImagePipeline:
    def __init__(self, system: System, info: dict[str, Any]) -> None:
        self.system = system.eval()
        self.info = info  # run_id, model, checkpoint_sha256, step

    @property
    def device(self) -> torch.device:
        return next(self.system.parameters()).device

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> "ImagePipeline":
        """Rebuild the model from ``config.json`` and load its inference weights (``model.safetensors``)."""
        run_dir = Path(run_dir)
        weights = run_dir / "model.safetensors"
        if not weights.is_file():
            raise NotFoundError(f"run {run_dir.name} has no trained weights yet ({weights} is missing); train it first")
        config = read_json(run_dir / "config.json")
        cls_ = models[config["model"]["name"]]
        system = cls_(from_dict(cls_.Config, config["model"], "model."), DataSpec(**config["data_spec"]))
        tensors, state = load_tensors(weights)
        system.load_state_dict(tensors)
        info = {
            "run_id": run_dir.name,
            "model": config["model"]["name"],
            "checkpoint_sha256": sha256_file(weights),
            "step": (state or {}).get("step"),
        }
        return cls(system.to(device), info)

    def latents(self, n: int, seed: int) -> torch.Tensor:
        return torch.cat([self.system.sample_latents(1, torch.Generator().manual_seed(seed + i)) for i in range(n)])

    @torch.no_grad()
    def decode(self, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        out = [self.system.decode(z[i : i + batch_size].to(self.device)).float().cpu() for i in range(0, len(z), batch_size)]
        return torch.cat(out).clamp_(-1, 1)

    def recipe(self, **settings: Any) -> dict[str, Any]:
        return {**self.info, "sampler": "latent-gaussian", **settings, "genloop_version": __version__}

    def __call__(self, n: int = 16, seed: int = 0, batch_size: int = 256) -> ImageOutput:
        images = self.decode(self.latents(n, seed), batch_size)
        return ImageOutput(images, self.recipe(seed=seed, n=n))

    def interpolate(self, rows: int = 6, steps: int = 10, seed: int = 0) -> ImageOutput:
        """Each row walks in a straight line between two random latents (seeds seed+2r and seed+2r+1)."""
        a, b = self.latents(2 * rows, seed).view(rows, 2, -1).unbind(1)
        t = torch.linspace(0, 1, steps)[None, :, None]
        z = (a[:, None] * (1 - t) + b[:, None] * t).reshape(rows * steps, -1)
        return ImageOutput(self.decode(z), self.recipe(seed=seed, kind="interpolation", rows=rows, steps=steps))

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> reconstructions (models with an encoder, e.g. the VAE)."""
        if not hasattr(self.system, "reconstruct"):
            raise NotFoundError(f"model '{self.info['model']}' has no encoder, so it cannot reconstruct images")
        return self.system.reconstruct(images.to(self.device)).float().cpu().clamp_(-1, 1)


def as_uint8(output: ImageOutput) -> torch.Tensor:
    return to_uint8(output.tensors)
