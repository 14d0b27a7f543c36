"""Where each file of a run folder lives: the one place its layout is spelled.

A run folder is read and written by the trainer, the pipelines, the evaluators, the report, the feedback
loop, the CLI and the studio. Each used to spell the paths it needed (``run_dir / "checkpoints" /
"last.safetensors"``), so renaming one file meant finding every copy. :class:`RunLayout` names every file
and folder once; everything else asks it. The layout::

    <run>/config.json              the resolved recipe (model, data, train) and the data spec
    <run>/run.json                 status, step, timings, headline metrics (mirrored in runs/index.sqlite)
    <run>/metrics.jsonl            one JSON object per logged step (losses, quick evaluations)
    <run>/tb/                      the same metrics as TensorBoard events
    <run>/model.safetensors        inference weights (EMA where trained with it): what pipelines load
    <run>/best.safetensors         inference weights at the best quick evaluation (train.eval_every)
    <run>/checkpoints/last.safetensors          everything needed to resume (optimiser, data position...)
    <run>/checkpoints/step-0000500.safetensors  kept numbered checkpoints (hard links of last)
    <run>/tokenizer/               a language model's tokenizer, travelling with its weights
    <run>/samples/step-0000500.png (.txt for text)  samples drawn while training
    <run>/generated/               ``genloop generate`` output (grid.png, sample_*.png, texts.jsonl)
    <run>/eval/metrics.json        ``genloop eval`` (metrics_<features>.json for other feature nets)
    <run>/eval/...                 closest_pairs.png, samples.txt, sampler_sweep.json/.png, feedback_*.json
    <run>/feedback/reward-<job>/   reward models trained on a simulation's feedback
    <run>/feedback_data/           a feedback-finetuned run's own training images
    <run>/report.html              the self-contained report

:meth:`RunLayout.save_pretrained` and :meth:`RunLayout.load_pretrained` are the pair for what inference
needs (weights plus ``config.json``), in the spirit of diffusers' methods of the same names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from .errors import ConfigError, NotFoundError
from .serialization import load_tensors, read_json, save_tensors, write_json

# Which inference weights a pipeline loads: ``--checkpoint last`` (end of training) or ``best``.
CHECKPOINTS = {"last": "model.safetensors", "best": "best.safetensors"}

_STEP_RE = re.compile(r"step-(\d+)\.[a-z]+$")


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder. Pure naming: nothing is created or read by the properties."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # a str from a caller is a path all the same

    # --- the recipe and the record ---------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    # --- weights and checkpoints -----------------------------------------------------------------
    @property
    def weights(self) -> Path:
        return self.root / CHECKPOINTS["last"]

    @property
    def best_weights(self) -> Path:
        return self.root / CHECKPOINTS["best"]

    def weights_for(self, checkpoint: str) -> Path:
        """The inference weights a ``--checkpoint`` name ("last" or "best") stands for."""
        if checkpoint not in CHECKPOINTS:
            raise ConfigError(f"unknown checkpoint '{checkpoint}'; valid: {', '.join(CHECKPOINTS)}")
        return self.root / CHECKPOINTS[checkpoint]

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.safetensors"

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}.safetensors"

    def step_checkpoints(self) -> list[Path]:
        """The numbered checkpoints on disk, oldest first (the zero-padded names sort by step)."""
        return sorted(self.checkpoints.glob("step-*.safetensors"))

    # --- what a run makes ------------------------------------------------------------------------
    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def sample(self, step: int, ext: str) -> Path:
        """Samples drawn at training ``step``: ``png`` (an image grid) or ``txt`` (text continuations)."""
        return self.samples / f"step-{step:07d}.{ext}"

    def training_samples(self, ext: str) -> list[tuple[int, Path]]:
        """``(step, path)`` of every training sample file with extension ``ext``, in step order."""
        if not self.samples.is_dir():
            return []
        found = ((step_of(p), p) for p in self.samples.glob(f"step-*.{ext}") if p.is_file())
        return sorted((s, p) for s, p in found if s is not None)

    # ``genloop generate`` writes these names into ``generated/`` or into the folder ``--out`` names
    GENERATED_GRID: ClassVar[str] = "grid.png"
    GENERATED_TEXTS: ClassVar[str] = "texts.jsonl"

    @property
    def generated(self) -> Path:
        return self.root / "generated"

    @property
    def generated_grid(self) -> Path:
        return self.generated / self.GENERATED_GRID

    @property
    def generated_texts(self) -> Path:
        return self.generated / self.GENERATED_TEXTS

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def eval_metrics(self, features: str = "ref") -> Path:
        """``genloop eval``'s result: ``metrics.json`` on the reference net, ``metrics_<features>.json`` else."""
        return self.eval / ("metrics.json" if features == "ref" else f"metrics_{features}.json")

    @property
    def eval_samples(self) -> Path:
        return self.eval / "samples.txt"

    @property
    def closest_pairs(self) -> Path:
        return self.eval / "closest_pairs.png"

    @property
    def sampler_sweep_json(self) -> Path:
        return self.eval / "sampler_sweep.json"

    @property
    def sampler_sweep_png(self) -> Path:
        return self.eval / "sampler_sweep.png"

    def eval_feedback(self, name: str) -> Path:
        """``genloop feedback simulate``'s result for one rater (``name``: the rater, made file-safe)."""
        return self.eval / f"feedback_{name}.json"

    @property
    def feedback(self) -> Path:
        return self.root / "feedback"

    def reward_model(self, job: str) -> Path:
        """The folder of a reward model trained on one simulation's feedback (``job``: its feedback job id)."""
        return self.feedback / f"reward-{job}"

    @property
    def feedback_data(self) -> Path:
        """A feedback-finetuned run's training images (its kept samples and real images), inside the run."""
        return self.root / "feedback_data"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    # --- inference weights + config --------------------------------------------------------------
    def save_pretrained(
        self,
        weights: dict[str, torch.Tensor],
        state: dict[str, Any],
        checkpoint: str = "last",
        config: dict[str, Any] | None = None,
    ) -> str:
        """Write inference ``weights`` (with JSON ``state`` such as the step) as the ``checkpoint`` ("last" or
        "best") weights, and ``config`` as ``config.json`` when given; both atomically. Returns the sha256."""
        if config is not None:
            write_json(self.config, config)
        return save_tensors(self.weights_for(checkpoint), weights, state)

    def load_pretrained(self, checkpoint: str = "last") -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
        """``(config, weights, state)`` of the ``checkpoint`` weights, with an error that says what to do when a
        run has none yet."""
        path = self.weights_for(checkpoint)
        if not path.is_file():
            if checkpoint == "best":
                raise NotFoundError(
                    f"run {self.root.name} has no best checkpoint; train it with train.eval_every > 0 to keep one"
                )
            raise NotFoundError(f"run {self.root.name} has no trained weights yet ({path} is missing); train it first")
        config = read_json(self.config)
        tensors, state = load_tensors(path)
        return config, tensors, state


def step_of(path: str | Path) -> int | None:
    """The training step in a ``step-0000500.<ext>`` file name, or None for any other name."""
    m = _STEP_RE.search(Path(path).name)
    return int(m.group(1)) if m else None
