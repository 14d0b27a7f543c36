"""Preview samples written during training: ``samples/step-N.png`` grids and ``samples/step-N.txt`` texts.

The engine decides *when* a preview is due (``train.sample_every`` and the end of training) and *with which
weights* (the EMA average, in eval mode, under a forked RNG so that previews never change training); what a
preview is and how it is written lives here, with the rest of generation. The caller that builds a run
(``genloop.api``) hands the engine :func:`preview_writer`'s callback, so ``training/`` needs nothing from
``generation/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch

from ..data.image_io import make_grid, save_png
from ..modalities import modalities
from ..run_layout import RunLayout
from ..serialization import write_text
from ..systems.base import System
from ..systems.lm import LanguageModelSystem
from .text_sampling import SamplingParams, generate_text

PREVIEW_SEED = 1234  # every preview of a run draws the same latents, so the grids show training progress
TEXT_RULE = "\n\n-----\n\n"  # between the continuations of a text preview

Preview = Callable[[System, int], Path]


def preview_writer(run_dir: Path, ema: bool, images: int = 64, texts: int = 4, max_tokens: int = 200) -> Preview:
    """A callback ``(system, step) -> path`` writing ``images`` samples as one grid, or ``texts`` continuations.

    ``ema`` is recorded in the PNG's recipe: whether the engine swapped in the EMA weights it samples.
    """
    files = RunLayout(Path(run_dir))

    def write(system: System, step: int) -> Path:
        generator = torch.Generator().manual_seed(PREVIEW_SEED)
        return modalities[system.modality].preview(  # type: ignore[no-any-return]
            system, files, step, generator, ema=ema, images=images, texts=texts, max_tokens=max_tokens
        )

    return write


def image_preview(system: System, files: RunLayout, step: int, generator: torch.Generator, ema: bool, n: int) -> Path:
    """``samples/step-N.png``: ``n`` samples as one grid, the recipe saying whether they are EMA samples."""
    path = files.sample(step, "png")
    grid = make_grid(system.sample(n, generator).cpu())
    save_png(path, grid, {"train_step": step, "seed": PREVIEW_SEED, "ema": ema}, upscale=2)
    return path


def text_preview(
    system: LanguageModelSystem, files: RunLayout, step: int, generator: torch.Generator, n: int, max_tokens: int
) -> Path:
    """``samples/step-N.txt``: ``n`` continuations of an empty prompt, between rules."""
    path = files.sample(step, "txt")
    write_text(path, TEXT_RULE.join(_continuations(system, n, generator, max_tokens)) + "\n")
    return path


def _continuations(system: LanguageModelSystem, n: int, generator: torch.Generator, max_tokens: int) -> list[str]:
    """``n`` new documents from a language model, sampled as a user would (temperature 0.8, top-p 0.95)."""
    tok = system.tokenizer
    if tok is None:  # a model trained without a tokenizer attached (a bare Trainer): nothing to decode with
        return []
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    params = SamplingParams(max_tokens=max_tokens, temperature=0.8, top_k=0, top_p=0.95)
    texts = generate_text(system.causal_lm(), tok.encode, tok.decode, "", params, seed=seed, n=n, eot_id=tok.eot_id)
    return cast(list[str], texts)  # not streamed: the finished texts
