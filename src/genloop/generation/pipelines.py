"""Inference pipelines: a trained run in, images out. Inference only; each loop fits on one screen.

Every image ``i`` of a call with ``seed=s`` is drawn from its own seed ``s + i`` (as generation UIs
do), so any single image can be regenerated alone with ``n=1, seed=s+i``, and every output carries
the recipe that made it: run, checkpoint sha256, model, seed, sampler settings, GenLoop version.

- :class:`ImagePipeline` serves one-step generators (GANs, VAEs): latents -> decoder -> images.
- :class:`DiffusionPipeline` serves diffusion models: noise -> a scheduler's loop -> images, with the
  sampler and its number of steps chosen per call, not at training time. Its ``edit`` turns the same model
  into an editing tool (inpainting, image-to-image, ...: :mod:`genloop.generation.editing`).

``load_pipeline`` picks the right one for a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .. import __version__
from ..config import from_dict
from ..data.image import to_uint8
from ..errors import ConfigError, NotFoundError
from ..modalities import modalities
from ..run_layout import RunLayout
from ..serialization import sha256_file
from ..systems import DataSpec, System, models


@dataclass
class ImageOutput:
    modality: ClassVar[str] = "image"  # which registered modality stores and scores it
    tensors: torch.Tensor  # (n, C, H, W) floats in [-1, 1]
    recipe: dict[str, Any] = field(default_factory=dict)  # shared by the batch; image i used seed + i
    labels: torch.Tensor | None = None  # the class each image was asked for (conditional models)
    moderation: dict[int, dict[str, Any]] = field(default_factory=dict)  # image i flagged or withheld: why

    @property
    def images(self) -> list:
        """The images as PIL images."""
        from ..data.image_io import tensor_to_pil

        return [tensor_to_pil(t) for t in self.tensors]

    def _repr_png_(self) -> bytes:
        """Jupyter shows the batch as one grid (:mod:`genloop.generation.display`)."""
        from .display import image_grid_png

        return image_grid_png(self.tensors)

    def recipe_of(self, i: int) -> dict[str, Any]:
        r = {**self.recipe, "seed": self.recipe["seed"] + i, "n": 1, "index": i, "batch_seed": self.recipe["seed"]}
        r.pop("class_labels", None)
        if self.labels is not None:
            r["class_label"] = int(self.labels[i])
        if i in self.moderation:
            r["moderation"] = self.moderation[i]
        return r


def moderate_images(output: ImageOutput, store: str | Path | None = None) -> ImageOutput:
    """Run the registered image checks (:func:`genloop.safety.moderation.register_image_check`) on every image: a
    blocked one is replaced by a black image, a flagged one kept; both are marked in their recipe and logged.
    Nothing happens (no cost) when no check is registered or moderation is off."""
    from ..safety import moderation

    m = moderation.get()
    if not moderation.has_image_checks() or not m.enabled:
        return output
    request_id = moderation.new_request_id()
    for i in range(output.tensors.shape[0]):
        d = m.check_image(output.tensors[i], request_id, store)
        if d.action == "block":
            output.tensors[i] = -1.0
        if d.action != "allow":
            output.moderation[i] = {**d.recipe(), "target": "image"}
    return output


def load_system(run_dir: str | Path, checkpoint: str = "last") -> tuple[System, dict[str, Any]]:
    """Rebuild a run's model from ``config.json`` and load its inference weights (EMA where trained with it)."""
    files = RunLayout(Path(run_dir))
    config, tensors, state = files.load_pretrained(checkpoint)
    cls_ = models[config["model"]["name"]]
    model_cfg = from_dict(cls_.Config, cls_.saved_model_config(config["model"]), "model.")
    system = cls_(model_cfg, DataSpec(**config["data_spec"]))
    system.load_state_dict(tensors)
    modalities[system.modality].restore(system, files.tokenizer)  # e.g. a language model's tokenizer
    info = {
        "run_id": files.root.name,
        "model": config["model"]["name"],
        "checkpoint": checkpoint,
        "checkpoint_sha256": sha256_file(files.weights_for(checkpoint)),
        "step": (state or {}).get("step"),
    }
    return system, info


class ImagePipeline:
    def __init__(self, system: System, info: dict[str, Any]) -> None:
        self.system = system.eval()
        self.info = info  # run_id, model, checkpoint, checkpoint_sha256, step
        self.modality = system.modality

    @property
    def device(self) -> torch.device:
        return next(self.system.parameters()).device

    @property
    def num_classes(self) -> int:
        return self.system.spec.num_classes if self.system.conditional else 0

    @classmethod
    def from_run(
        cls, run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str = "last"
    ) -> ImagePipeline:
        system, info = load_system(run_dir, checkpoint)
        return cls(system.to(device), info)

    def latents(self, n: int, seed: int) -> torch.Tensor:
        return torch.cat([self.system.sample_latents(1, torch.Generator().manual_seed(seed + i)) for i in range(n)])

    def labels(self, n: int, class_label: int | Sequence[int] | None) -> torch.Tensor | None:
        """The class of each of ``n`` images: as asked, or the classes in turn for a conditional model."""
        if class_label is None:
            return self.system.default_labels(n)
        if not self.system.conditional:
            raise ConfigError(
                f"model '{self.info['model']}' is unconditional, so it takes no class; "
                "train cgan, cvae, or ddpm with model.class_conditional=true"
            )
        labels = torch.as_tensor(
            [class_label] * n if isinstance(class_label, int) else list(class_label), dtype=torch.long
        )
        if labels.shape != (n,):
            raise ConfigError(f"got {labels.numel()} class labels for {n} images")
        k = self.system.spec.num_classes
        if labels.numel() and (labels.min() < 0 or labels.max() >= k):
            raise ConfigError(f"class labels must be between 0 and {k - 1}, got {sorted(set(labels.tolist()))}")
        return labels

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
        out = []
        for i in range(0, len(z), batch_size):
            y = None if labels is None else labels[i : i + batch_size].to(self.device)
            out.append(self.system.decode(z[i : i + batch_size].to(self.device), y).float().cpu())
        return torch.cat(out).clamp_(-1, 1)

    def recipe(self, **settings: Any) -> dict[str, Any]:
        return {**recipe_info(self.info), "sampler": "latent-gaussian", **settings, "genloop_version": __version__}

    def _no_sampler_options(self, **given: Any) -> None:
        asked = [k for k, v in given.items() if v is not None]
        if asked:
            raise ConfigError(
                f"model '{self.info['model']}' generates in one step; {', '.join(asked)} apply to diffusion models only"
            )

    def __call__(
        self,
        n: int = 16,
        seed: int = 0,
        class_label: int | Sequence[int] | None = None,
        batch_size: int = 256,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        eta: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        prompt: str | None = None,
    ) -> ImageOutput:
        _no_prompt(prompt, self.info)
        self._no_sampler_options(steps=steps, sampler=sampler, guidance=guidance, eta=eta)
        labels = self.labels(n, class_label)
        images = self.decode(self.latents(n, seed), labels, batch_size)
        if progress is not None:  # one step: decoding is done
            progress(1, 1)
        return moderate_images(ImageOutput(images, self.recipe(seed=seed, n=n, **_label_recipe(labels)), labels))

    def interpolate(self, rows: int = 6, steps: int = 10, seed: int = 0) -> ImageOutput:
        """Each row walks in a straight line between two random latents (seeds seed+2r and seed+2r+1).

        A conditional model keeps one class per row (row r: class r mod classes), so only the style moves.
        """
        a, b = self.latents(2 * rows, seed).view(rows, 2, -1).unbind(1)
        t = torch.linspace(0, 1, steps)[None, :, None]
        z = (a[:, None] * (1 - t) + b[:, None] * t).reshape(rows * steps, -1)
        row_labels = self.system.default_labels(rows)
        labels = None if row_labels is None else row_labels.repeat_interleave(steps)
        recipe = self.recipe(seed=seed, kind="interpolation", rows=rows, interpolation_steps=steps)
        return ImageOutput(self.decode(z, labels), recipe, labels)

    def edit(self, images: Any, task: str = "inpaint", **options: Any) -> ImageOutput:
        """Editing needs a diffusion model as the prior: a one-step generator refuses with one line."""
        from .editing.editor import refusal

        raise refusal(task, self.info)

    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] -> reconstructions (models with an encoder, e.g. the VAE)."""
        if not hasattr(self.system, "reconstruct"):
            raise NotFoundError(f"model '{self.info['model']}' has no encoder, so it cannot reconstruct images")
        args = (
            (images.to(self.device),)
            if not self.system.conditional
            else (images.to(self.device), labels.to(self.device))
        )
        return self.system.reconstruct(*args).float().cpu().clamp_(-1, 1)


@torch.no_grad()
def denoise(
    system: System,
    scheduler: Any,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    guidance: float,
    generator: torch.Generator | list[torch.Generator] | None = None,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """The reverse diffusion loop: from noise ``x`` at the scheduler's first timestep to a clean image.
    ``on_step`` is called after each step (a progress bar)."""
    for t in scheduler.timesteps:
        model_output = system.predict(x, int(t), labels, guidance)
        x = scheduler.step(model_output, int(t), x, generator=generator)
        if on_step is not None:
            on_step()
    return x


class DiffusionPipeline(ImagePipeline):
    """Noise -> scheduler loop -> images. ``sampler`` and ``steps`` are per call: one model, any sampler."""

    def recipe(self, **settings: Any) -> dict[str, Any]:
        return {**recipe_info(self.info), **settings, "genloop_version": __version__}

    def __call__(
        self,
        n: int = 16,
        seed: int = 0,
        class_label: int | Sequence[int] | None = None,
        batch_size: int = 256,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        eta: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        prompt: str | None = None,
    ) -> ImageOutput:
        """``progress(done, total)`` is called after each denoising step of each batch (``total``: steps times
        batches), so a caller can show how far sampling is."""
        _no_prompt(prompt, self.info)
        cfg = self.system.config
        sampler = sampler or cfg.sampler
        steps = steps or cfg.sampling_steps
        labels = self.labels(n, class_label)
        if guidance is not None and labels is None:
            raise ConfigError(f"guidance needs a class-conditional model; run {self.info['run_id']} is unconditional")
        guidance = cfg.guidance if guidance is None else float(guidance)
        options = {} if eta is None else {"eta": eta}
        images = self.sample(n, seed, labels, batch_size, sampler, steps, guidance, options, progress)
        settings = {"sampler": sampler, "sampling_steps": steps, **options, **_label_recipe(labels)}
        if labels is not None:
            settings["guidance"] = guidance
        return moderate_images(ImageOutput(images, self.recipe(seed=seed, n=n, **settings), labels))

    def sample(
        self,
        n: int,
        seed: int,
        condition: torch.Tensor | None,
        batch_size: int,
        sampler: str,
        steps: int,
        guidance: float,
        options: dict[str, Any],
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """``n`` images in [-1, 1] by the reverse process, in batches of ``batch_size``; image ``j`` draws its
        starting and sampler noise from seed ``seed + j`` alone, so it does not depend on the batching.
        ``condition`` holds one row per image that the model is conditioned on (class labels, a caption's tokens;
        None: unconditional). ``progress(done, total)`` is called after every denoising step of every batch."""
        images = []
        total, done = steps * -(-n // batch_size), 0

        def tick() -> None:
            nonlocal done
            done += 1
            progress(done, total)  # type: ignore[misc] - only passed to denoise when given

        for i in range(0, n, batch_size):
            rows = range(i, min(i + batch_size, n))
            # one generator per image: it draws that image's starting noise, then its sampler noise
            gens = [torch.Generator().manual_seed(seed + j) for j in rows]
            x = torch.cat([self.system.sample_latents(1, g) for g in gens]).to(self.device)
            y = None if condition is None else condition[rows.start : rows.stop].to(self.device)
            scheduler = self.system.make_scheduler(sampler, **options)
            scheduler.set_timesteps(steps)
            on_step = tick if progress is not None else None
            images.append(denoise(self.system, scheduler, x, y, guidance, gens, on_step).float().cpu())
        return torch.cat(images).clamp_(-1, 1)

    def edit(
        self,
        images: Any,
        task: str = "inpaint",
        mask: Any = None,
        seed: int = 0,
        steps: int | None = None,
        sampler: str | None = None,
        class_label: int | Sequence[int] | None = None,
        guidance: float | None = None,
        **task_options: Any,
    ) -> ImageOutput:
        """Edit images with this model as the prior (no retraining): a task of
        :data:`~genloop.generation.editing.tasks.EDIT_TASKS` (``inpaint``, ``inpaint-fast``, ``img2img``, ...).

        ``images``: a PIL image, a path, a float tensor (C, H, W) or (N, C, H, W) in [-1, 1], or a list of them.
        ``mask`` (masked tasks): the same kinds, white (1) = fill, black (0) = keep; one for all images or one per
        image, each of its image's size. Inputs of any size are stretched to the model's square with PIL's bicubic
        filter (masks: a pixel is white when any white pixel falls in it); a grey input for an RGB model is
        repeated to RGB, an RGB input for a grey model becomes its luminance. Image ``i`` uses seed ``seed + i``.
        ``steps``/``sampler``: the sampler's (defaults: the task's, else the model's).
        ``class_label``/``guidance``: steer a class-conditional model (without a class it edits unconditionally).
        ``task_options``: the task's own (``inpaint``: ``jump_length``, ``jump_n_sample``; ``img2img``:
        ``strength``); an option the task does not take is an error.

        Returns an :class:`~genloop.generation.editing.editor.EditOutput`, an ImageOutput whose ``tensors`` are the
        results at the model's size and whose ``full_size[i]`` is result ``i`` resized back to its input's size
        (for a masked task the input's known pixels are put back exactly there, as they are in ``tensors``). Its
        recipe holds the task, settings, seed, ``model_calls`` and the sha256 of every input and mask.
        """
        from .editing.editor import edit

        return edit(self, images, task, mask, seed, steps, sampler, class_label, guidance, **task_options)

    def interpolate(self, rows: int = 6, steps: int = 10, seed: int = 0) -> ImageOutput:
        """Spherical interpolation between starting noises, sampled with the deterministic DDIM (η = 0).

        Gaussian noise lives near a sphere, so a straight line would pass through unlikely, low-norm noise.
        """
        a, b = self.latents(2 * rows, seed).flatten(1).view(rows, 2, -1).unbind(1)
        t = torch.linspace(0, 1, steps)[None, :, None]
        omega = torch.arccos(
            (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True))
        )
        so = torch.sin(omega)[:, None]
        z = torch.sin((1 - t) * omega[:, None]) / so * a[:, None] + torch.sin(t * omega[:, None]) / so * b[:, None]
        s = self.system.spec
        z = z.reshape(rows * steps, s.channels, s.image_size, s.image_size).to(self.device)
        row_labels = self.system.default_labels(rows)
        labels = None if row_labels is None else row_labels.repeat_interleave(steps).to(self.device)
        scheduler = self.system.make_scheduler("ddim", eta=0.0)
        scheduler.set_timesteps(self.system.config.sampling_steps)
        x = denoise(self.system, scheduler, z, labels, self.system.config.guidance).float().cpu().clamp_(-1, 1)
        recipe = self.recipe(
            seed=seed,
            kind="interpolation",
            rows=rows,
            interpolation_steps=steps,
            sampler="ddim",
            sampling_steps=self.system.config.sampling_steps,
        )
        return ImageOutput(x, recipe, None if labels is None else labels.cpu())


def _no_prompt(prompt: Any, info: dict[str, Any]) -> None:
    """A model not conditioned on text refuses a prompt (an empty one asks for nothing, so it passes)."""
    if prompt:
        raise ConfigError(
            f"model '{info['model']}' is not conditioned on text, so it takes no prompt; train ddpm-text on captioned "
            "data for text to image"
        )


def recipe_info(info: dict[str, Any]) -> dict[str, Any]:
    """A pipeline's ``info`` as recipe keys: its ``step`` (the checkpoint's training step) is ``train_step``, so
    that no recipe holds two different counts under ``step`` and ``steps``."""
    return {("train_step" if k == "step" else k): v for k, v in info.items()}


def _label_recipe(labels: torch.Tensor | None) -> dict[str, Any]:
    return {} if labels is None else {"class_labels": labels.tolist()}


def load_pipeline(run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str = "last") -> Any:
    """The pipeline that fits the run's model family (image, diffusion, text), as its modality builds it."""
    system, info = load_system(run_dir, checkpoint)
    pipe = modalities[system.modality].pipeline(system.to(device), info)
    if hasattr(pipe, "run_dir"):  # a text pipeline finds its run store's watermark key from here
        pipe.run_dir = Path(run_dir)
    return pipe


def as_uint8(output: ImageOutput) -> torch.Tensor:
    return to_uint8(output.tensors)
