"""The one small interface every modality implements.

A modality (image, text, ...) owns everything that differs between kinds of output: its data settings,
loader and batches; the pipeline that generates and the output type it returns; how outputs are stored
and read back; its evaluator and report section; the features a reward model scores it on; and what the
studio shows and accepts for it. Code outside ``genloop.modalities`` never compares a modality name: it
looks the modality up (``modalities[name]``) and calls it.

A modality package (``genloop/modalities/<name>/``) holds at least :data:`REQUIRED_MODULES`; its
``modality.py`` defines the :class:`Modality` subclass, and ``genloop/modalities/__init__.py`` registers
one instance of it (``tests/test_modalities.py`` checks both).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

REQUIRED_MODULES = ("__init__.py", "modality.py")
BUILTIN_CLAIM = 1 << 30  # :meth:`Modality.data_claim` of a built-in dataset's name: it outranks any folder


class Modality(ABC):
    """What one kind of output (its data, generation, storage, evaluation, feedback, studio) needs."""

    name: ClassVar[str]  # the registry key a model family declares as its ``modality``
    noun: ClassVar[str]  # one output, in messages: "image", "text"
    default_eval_n: ClassVar[int]  # samples ``genloop eval`` scores by default
    probe_label: ClassVar[str]  # the column heading of :meth:`quality_probe`'s number in a simulation table
    prompted: ClassVar[bool] = False  # True: generation continues a prompt (``genloop generate --prompt``)
    generate_keys: ClassVar[tuple[str, ...]] = ()  # generate-job params that shape the output (a replay copies them)
    report_keys: ClassVar[tuple[str, ...]] = ()  # generate-job params that shape only the job's report
    can_finetune: ClassVar[bool] = True  # False: :meth:`finetune` refuses (a simulation skips that stage)
    can_shard: ClassVar[bool] = False  # True: `generate`/`eval` can share their sampling over torchrun processes
    can_score_watermarked: ClassVar[bool] = False  # True: `eval --watermarked` marks samples as generate does
    # "dpo": fine-tuning learns from the stored A/B pairs themselves (:meth:`dpo`, a language model's tokens);
    # "reward-filtered": from samples a reward model scored (images)
    finetune_method: ClassVar[str] = "reward-filtered"
    default_family: ClassVar[str] = ""  # the model family `genloop train --recipe auto` picks for this data
    # dotted keys of a run's config that only runs of this modality use (the shared sections hold every modality's
    # knobs): the report leaves out those another modality owns and this one does not
    own_settings: ClassVar[tuple[str, ...]] = ()

    # --- data -----------------------------------------------------------------------------------
    @property
    @abstractmethod
    def data_config_cls(self) -> type:
        """The dataclass of the run's ``data`` section."""

    @abstractmethod
    def load_data(self, rc: Any) -> Any:
        """The prepared dataset of a resolved recipe (``rc.data``, ``rc.system_cls``, ``rc.model``)."""

    @abstractmethod
    def data_spec(self, dataset: Any) -> Any:
        """The :class:`~genloop.systems.DataSpec` a system sizes its networks from."""

    @abstractmethod
    def batches(self, dataset: Any, rc: Any, system: Any) -> Any:
        """The resumable training batch stream."""

    @abstractmethod
    def bind(self, system: Any, dataset: Any, folder: Path, *, new: bool) -> None:
        """Attach what the system needs besides weights (a tokenizer) and save it beside the run (``folder``)."""

    @abstractmethod
    def restore(self, system: Any, folder: Path) -> None:
        """Attach what :meth:`bind` saved in ``folder`` to a system rebuilt from a checkpoint."""

    # --- generation -----------------------------------------------------------------------------
    @abstractmethod
    def pipeline(self, system: Any, info: dict[str, Any]) -> Any:
        """The inference pipeline of a trained system; it sets ``.modality`` to :attr:`name`."""

    @abstractmethod
    def items(self, output: Any) -> Any:
        """The generated items of a pipeline output, in order (a tensor batch, a list of strings)."""

    @abstractmethod
    def store_item(self, store: Any, row: Any, output: Any, index: int) -> Path | None:
        """Fill a feedback-store row with item ``index`` of ``output``; return the media file written, if any."""

    def signed_file(self, store: Any, row: Any) -> Path | None:
        """The stored file of a generation that carries its signed manifest (what the studio verifies and offers
        for download), or None. Default: the row's media file."""
        return store.image_path(row) if row.media else None

    @abstractmethod
    def item_ref(self, store: Any, row: Any) -> str:
        """How an exported row points at its item (the text itself, a media path)."""

    @abstractmethod
    def same_item(self, store: Any, a: Any, b: Any) -> bool:
        """Whether two stored generations hold the same output (a replay's check)."""

    @abstractmethod
    def preview(self, system: Any, files: Any, step: int, generator: Any, **sizes: Any) -> Path:
        """Write the training preview at ``step`` into the run folder ``files`` (``sizes``: ema, images, texts,
        max_tokens); return its path."""

    # --- evaluation -----------------------------------------------------------------------------
    @abstractmethod
    def quick_evaluator(self, dataset: Any, cfg: Any, progress: bool) -> Callable[[Any], dict[str, float]]:
        """What the engine calls every ``train.eval_every`` steps."""

    @abstractmethod
    def evaluate(self, store: Any, run: Any, pipe: Any, n: int, seed: int, t0: float, **options: Any) -> dict:
        """The full evaluation (metrics beside their real-data floors); ``options`` are the CLI's knobs."""

    @abstractmethod
    def report_section(self, run_dir: Path, ev: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """``(section name the report template switches on, its context)``; None: nothing to show."""

    # --- feedback -------------------------------------------------------------------------------
    @abstractmethod
    def reward_features(self, store: Any, rows: list[Any], runs_dir: str | Path | None) -> tuple[Any, dict]:
        """Features of stored generations for a reward model, and the spec to recompute them."""

    @abstractmethod
    def featurize(self, model: Any, items: Any) -> Any:
        """Features of fresh items (from :meth:`items`) for a trained reward ``model``."""

    @abstractmethod
    def load_run_data(self, run: Any) -> Any:
        """The data a run was trained on, as a rater or a quality probe needs it (None: not needed)."""

    @abstractmethod
    def rerank(self, output: Any, pick: Any) -> dict[str, Any]:
        """The picked items of ``output`` as the field(s) a reranked output holds them in, the same field its
        pipeline output uses (``tensors``, ``texts``, ``samples``), so :meth:`items` and :meth:`store_item`
        read both alike."""

    @abstractmethod
    def simulation_options(self, text_options: dict[str, Any]) -> dict[str, Any]:
        """The generation options a simulated-feedback loop passes to the pipeline."""

    @abstractmethod
    def quality_probe(self, dataset: Any, seed: int) -> Callable[[Any], dict[str, Any]]:
        """A cheap measure of a batch of items that a simulation reports beside the rater's verdict."""

    @abstractmethod
    def finetune(self, run_id: str, reward: Any, store: Any, job: str, cfgs: dict[str, Any], runs_dir: Any) -> dict:
        """Fine-tune a run on a job's feedback (``cfgs``: ``finetune`` and ``dpo`` settings)."""

    def dpo(
        self,
        run_id: str,
        store: Any,
        cfg: Any,
        runs_dir: Any,
        *,
        run_filter: str | None = None,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        """DPO of a run on the store's A/B pairs (those on one run's generations, or of one job), for a modality
        whose :attr:`finetune_method` is ``"dpo"``; the others are fine-tuned from a reward model instead."""
        from ..errors import ConfigError

        raise ConfigError(f"{self.noun}s are fine-tuned from a reward model's scores, not on preference pairs")

    # --- studio ---------------------------------------------------------------------------------
    @abstractmethod
    def describe(self, config: dict[str, Any], system_cls: type) -> dict[str, Any]:
        """The ``/v1/models`` descriptor fields of a run (beyond model and modality).

        Must include ``controls``: a list of control specs the studio builds a form from, or the id of one of
        the studio's own fieldsets (``"image-controls"``, ``"text-controls"``); the page picks its form from
        this alone, never from the modality's name."""

    def make_rater(self, spec: str, dataset: Any) -> Any:
        """A scripted rater (:class:`~genloop.feedback.simulate.Rater`) of this modality's own kinds for
        ``spec``, or None when ``spec`` is not one of them (the shared image/text raters are tried next)."""
        return None

    def generate_files(
        self, run_id: str, n: int, seed: int, out: Any, runs_dir: Any, device: str, checkpoint: str, **options: Any
    ) -> list[Path] | None:
        """``genloop generate`` for a modality that writes its own files (``options``: its controls); None:
        the image writer (a prompted modality goes to the text writer before this is asked)."""
        return None

    def data_claim(self, name: str) -> int:
        """How strongly a ``--data`` name is this modality's data: 0 not at all, else how many of its files
        this modality would read (a built-in name: :data:`BUILTIN_CLAIM`). ``--recipe auto`` with no model
        trains the modality with the strongest claim."""
        return 0

    def generate_keys_of(self, system_cls: type) -> tuple[str, ...]:
        """The generate-job params a run of ``system_cls`` takes: :attr:`generate_keys` unless a family of this
        modality takes only some of them (an image family conditioned on text takes a prompt and no class)."""
        return self.generate_keys

    def data_warnings(self, dataset: Any, data_config: Any) -> list[str]:
        """What is wrong with ``dataset`` for the whole loop though training can run (checked before a run starts,
        e.g. too few held-out items for evaluation), each with what the user can do. None: an empty list."""
        return []

    def builtin_data(self) -> dict[str, str]:
        """This modality's built-in data sets: name -> one line saying what it is and how big (``genloop data
        list``). None built in: an empty dict."""
        return {}

    def data_summary(self, name: str) -> dict[str, Any] | None:
        """What ``--recipe auto`` looks at: ``count``, ``native_size``, ``channels``, ``class_names`` of the
        data (read cheaply), or None for a modality whose settings no recipe tunes (its family's defaults)."""
        return None

    def item_summary(self, output: Any, index: int) -> str:
        """A short line about item ``index`` of ``output`` for a CLI table (its text, class, length); "" if none."""
        return ""

    def generate_limit(self, n: int, limits: Any) -> str | None:
        """Why a generate job of ``n`` outputs is refused, or None."""
        return None

    def __repr__(self) -> str:
        return f"<modality {self.name}>"
