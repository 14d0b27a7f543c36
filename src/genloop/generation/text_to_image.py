"""The text-to-image pipeline: a prompt (or one per image) in, images out, with the prompt in every recipe.

It is :class:`~genloop.generation.pipelines.DiffusionPipeline` with the caption's byte tokens as the per-row
condition the denoising loop hands the model (``denoise(..., labels=tokens, ...)``, where a class model gets
class labels). No prompt, or ``""``, is the unconditional model; ``guidance`` (default: the run's
``model.guidance``) scales classifier-free guidance on the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from .pipelines import DiffusionPipeline, ImageOutput, moderate_images

MAX_PROMPT_CHARS = 1000


@dataclass
class TextImageOutput(ImageOutput):
    """An :class:`ImageOutput` whose image ``i`` was asked for by ``prompts[i]`` (its recipe's ``prompt``)."""

    prompts: list[str] = field(default_factory=list)

    def recipe_of(self, i: int) -> dict[str, Any]:
        r = super().recipe_of(i)
        r.pop("prompts", None)
        r["prompt"] = self.prompts[i]
        return r


def prompt_list(prompt: str | Sequence[str] | None, n: int) -> list[str]:
    """One prompt per image: the same one ``n`` times, or a list of exactly ``n``; None is the empty prompt."""
    prompts = [prompt or ""] * n if prompt is None or isinstance(prompt, str) else list(prompt)
    if len(prompts) != n:
        raise ConfigError(f"got {len(prompts)} prompts for {n} images")
    for p in prompts:
        if not isinstance(p, str):
            raise ConfigError(f"a prompt must be text, got {type(p).__name__}")
        if len(p) > MAX_PROMPT_CHARS:
            raise ConfigError(f"a prompt is {len(p):,} characters; at most {MAX_PROMPT_CHARS:,}")
    return prompts


class TextToImagePipeline(DiffusionPipeline):
    """``pipe(n, seed, prompt="a thick slanted seven", guidance=3)``; image ``i`` uses seed ``seed + i``."""

    takes_prompt = True

    @property
    def num_classes(self) -> int:
        return 0  # conditioned on text, not on a class: grids are 8 wide

    def labels(self, n: int, class_label: Any) -> torch.Tensor | None:
        if class_label is not None:
            raise ConfigError(
                f"model '{self.info['model']}' is conditioned on text; describe the image with --prompt, not --class"
            )
        return None

    def __call__(  # type: ignore[override]
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
        prompt: str | Sequence[str] | None = None,
    ) -> TextImageOutput:
        self.labels(n, class_label)
        prompts = prompt_list(prompt, n)
        tokens = self.system.tokenize(prompts)
        cfg = self.system.config
        sampler = sampler or cfg.sampler
        steps = steps or cfg.sampling_steps
        guidance = cfg.guidance if guidance is None else float(guidance)
        options = {} if eta is None else {"eta": eta}
        images = self.sample(n, seed, tokens, batch_size, sampler, steps, guidance, options, progress)
        same = len(set(prompts)) == 1
        settings = {"sampler": sampler, "sampling_steps": steps, **options, "guidance": guidance}
        settings.update({"prompt": prompts[0]} if same else {"prompts": prompts})
        recipe = self.recipe(seed=seed, n=n, **settings)
        return moderate_images(TextImageOutput(images, recipe, None, prompts=prompts))
