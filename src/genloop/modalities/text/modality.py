"""The text modality: what a language model's data, outputs, evaluation, feedback and studio controls are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..base import BUILTIN_CLAIM, Modality


class TextModality(Modality):
    name = "text"
    noun = "text"
    prompted = True
    can_shard = True  # text i is drawn in the same chunk on any number of processes (generation/sharding.py)
    default_eval_n = 100
    probe_label = "chars"
    own_settings = ("train.eval_tokens", "data_spec.vocab_size")  # the report shows these only for text runs
    generate_keys = (
        "prompt",
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "stop",
        "watermark",
    )
    # they shape only what the worker reports or records about a text (messages: a chat reply's conversation)
    report_keys = ("logprobs", "echo", "messages")
    finetune_method = "dpo"
    default_family = "gpt"

    def data_claim(self, name: str) -> int:
        from .sources import TEXT_SUFFIXES, _folder_files, builtin_corpora

        if name in builtin_corpora():
            return BUILTIN_CLAIM
        path = Path(name).expanduser()
        if path.is_dir():
            return len(_folder_files(path)[0])
        return int(path.is_file() and (path.suffix.lower() in TEXT_SUFFIXES or path.suffix.lower() == ".jsonl"))

    def builtin_data(self) -> dict[str, str]:
        from .sources import builtin_corpora, builtin_description

        return {name: builtin_description(name) for name in builtin_corpora()}

    # --- data -----------------------------------------------------------------------------------
    @property
    def data_config_cls(self) -> type:
        from .sources import TextDataConfig

        return TextDataConfig

    def load_data(self, rc: Any) -> Any:
        """The tokenised corpus (with the tokenizer a pretrained model brings)."""
        from .cache import load_text_dataset

        return load_text_dataset(rc.data, tokenizer=rc.system_cls.tokenizer_source(rc.model))

    def load_run_data(self, run: Any) -> Any:
        return None  # a text simulation and its raters need no reference data

    def data_spec(self, dataset: Any) -> Any:
        from ...systems.base import DataSpec

        return DataSpec(vocab_size=dataset.tokenizer.vocab_size)

    def batches(self, dataset: Any, rc: Any, system: Any) -> Any:
        from .batches import TokenBatches

        if getattr(dataset, "chat", None) is not None:  # conversations: packed, loss on the assistant's tokens
            return self.chat_batches(dataset, rc.train.batch_size, system.block_size, rc.train.seed)
        return TokenBatches(dataset.train, rc.train.batch_size, system.block_size, seed=rc.train.seed)

    @staticmethod
    def chat_batches(dataset: Any, batch_size: int, block_size: int, seed: int) -> Any:
        """A chat data set's packed batches; what truncation did is added to the data info (and the run's
        run.json) and, when it removed anything, said once as a warning."""
        import warnings

        from .chat import ChatBatches

        batches = ChatBatches(dataset.chat, dataset.tokenizer.eot_id, batch_size, block_size, seed=seed)
        s = batches.stats
        dataset.info_.setdefault("chat", {})["train_fit"] = dict(s)
        said = []
        if s["truncated"]:
            said.append(f"{s['truncated']} conversation(s) lost {s['turns_removed']} oldest turn(s)")
        if s["dropped"]:
            said.append(f"{s['dropped']} did not fit even as their last exchange and were left out")
        if said:
            warnings.warn(
                f"chat data longer than the context of {block_size} tokens: {'; '.join(said)}",
                UserWarning,
                stacklevel=2,
            )
        return batches

    def bind(self, system: Any, dataset: Any, folder: Path, *, new: bool) -> None:
        """The tokenizer travels with the weights."""
        from .tokenizers import load_tokenizer

        if new:
            system.tokenizer = dataset.tokenizer
            dataset.tokenizer.save(folder)
            return
        if not folder.is_dir():  # killed before train() saved it: the data's is the same one
            dataset.tokenizer.save(folder)
        system.tokenizer = load_tokenizer(folder)
        if getattr(dataset, "chat", None) is not None:  # chat data is tokenised as batches are made: by the run's own
            from .chat import ChatTemplate

            dataset.chat.template = ChatTemplate(system.tokenizer)

    def restore(self, system: Any, folder: Path) -> None:
        """A language model decodes with the tokenizer it was trained with."""
        from .tokenizers import load_tokenizer

        system.tokenizer = load_tokenizer(folder)

    # --- generation -----------------------------------------------------------------------------
    def pipeline(self, system: Any, info: dict[str, Any]) -> Any:
        from ...generation.text_pipeline import TextPipeline

        return TextPipeline(system, info)

    def items(self, output: Any) -> Any:
        return output.texts

    def store_item(self, store: Any, row: Any, output: Any, index: int) -> Path | None:
        """The text in the row, and beside the media a one-record texts JSONL (``<id>.jsonl``, the format
        ``genloop generate`` writes) whose record carries the signed manifest naming this generation's id."""
        import json

        from ...safety import provenance
        from ...serialization import atomic_write

        row.text, row.prompt = output.texts[index], output.prompt
        record: dict[str, Any] = {"text": row.text, "recipe": output.recipe_of(index)}
        if provenance.enabled():
            record["manifest"] = provenance.sign(record["recipe"], provenance.text_sha256(row.text), row.id)
        path = _texts_file(store, row)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path

    def signed_file(self, store: Any, row: Any) -> Path | None:
        path = _texts_file(store, row)
        return path if path.is_file() else None  # texts stored before the studio signed them have none

    def item_ref(self, store: Any, row: Any) -> str:
        return row.text or ""

    def same_item(self, store: Any, a: Any, b: Any) -> bool:
        return bool(a.text == b.text)

    def preview(self, system: Any, files: Any, step: int, generator: Any, **sizes: Any) -> Path:
        from ...generation.preview import text_preview

        return text_preview(system, files, step, generator, n=sizes["texts"], max_tokens=sizes["max_tokens"])

    # --- evaluation -----------------------------------------------------------------------------
    def quick_evaluator(self, dataset: Any, cfg: Any, progress: bool) -> Callable[[Any], dict[str, float]]:
        """Validation loss of the current weights on the first ``train.eval_tokens`` validation tokens, in
        non-overlapping windows of the model's context (nanoGPT's protocol; cheap enough to run often)."""
        from ...evaluation.text_metrics import sliding_window_loss

        def quick(system: Any) -> dict[str, float]:
            lm = system.causal_lm()
            if getattr(dataset, "chat", None) is not None:  # a chat set is scored on the assistant's tokens only
                from .chat import assistant_loss

                device = next(system.parameters()).device
                r = assistant_loss(lm, dataset.chat, dataset.tokenizer.eot_id, lm.block_size, device=device)
                return {"val_loss": float(r["loss"])}
            r = sliding_window_loss(
                lambda idx: lm(idx),
                dataset.val,
                lm.block_size,
                stride=lm.block_size,
                max_tokens=cfg.eval_tokens or None,
                device=next(system.parameters()).device,
            )
            return {"val_loss": float(r["loss"])}

        return quick

    def evaluate(self, store: Any, run: Any, pipe: Any, n: int, seed: int, t0: float, **options: Any) -> dict:
        from ...errors import ConfigError
        from ...evaluation.text_eval import evaluate_text

        image_knobs = ("sampler", "steps", "guidance", "eta")
        if any(options.get(k) is not None for k in image_knobs) or options.get("features", "ref") != "ref":
            raise ConfigError(
                "--sampler/--steps/--guidance/--eta/--features apply to image models; a text model is "
                "scored on validation loss and samples"
            )
        progress = options.get("progress")  # a callable: told each phase (genloop.progress.Phases)
        return evaluate_text(store, run, pipe, n, seed, t0, listener=progress if callable(progress) else None)

    def report_section(self, run_dir: Path, ev: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        from ...evaluation.report import _text

        return "text", _text(run_dir, ev, self.name)

    # --- feedback -------------------------------------------------------------------------------
    def reward_features(self, store: Any, rows: list[Any], runs_dir: str | Path | None) -> tuple[Any, dict]:
        from ...feedback.reward import TEXT_FEATURES, text_features

        return text_features([r.text or "" for r in rows]), dict(TEXT_FEATURES)

    def featurize(self, model: Any, items: Any) -> Any:
        from ...errors import ConfigError
        from ...feedback.reward import text_features

        if isinstance(items, str) or not all(isinstance(t, str) for t in items):
            raise ConfigError("a text reward model scores a list of strings")
        return text_features(list(items), model.features)

    def rerank(self, output: Any, pick: Any) -> dict[str, Any]:
        return {"texts": [output.texts[int(i)] for i in pick]}

    def item_summary(self, output: Any, index: int) -> str:
        return str(output.texts[index][:60])

    def simulation_options(self, text_options: dict[str, Any]) -> dict[str, Any]:
        return text_options

    def quality_probe(self, dataset: Any, seed: int) -> Callable[[Any], dict[str, Any]]:
        import numpy as np

        return lambda items: {"mean_chars": round(float(np.mean([len(t) for t in items])), 1)}

    def finetune(self, run_id: str, reward: Any, store: Any, job: str, cfgs: dict[str, Any], runs_dir: Any) -> dict:
        """DPO on the job's preference pairs."""
        return self.dpo(run_id, store, cfgs.get("dpo"), runs_dir, job_id=job)

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
        """DPO on the (prompt, chosen, rejected) texts of the store's pairs."""
        from ...feedback.optimize import dpo, preference_pairs

        return dpo(run_id, preference_pairs(store, run_id=run_filter, job_id=job_id), cfg, runs_dir=runs_dir)

    # --- studio ---------------------------------------------------------------------------------
    def describe(self, config: dict[str, Any], system_cls: type) -> dict[str, Any]:
        # the studio's own text fieldset (prompt, streaming, sampler knobs), named so the page needs no
        # comparison with the modality's name to pick it
        return {"conditional": False, "num_classes": None, "diffusion": False, "controls": "text-controls"}

    def generate_limit(self, n: int, limits: Any) -> str | None:
        if n > limits.max_completions:
            return f"n must be at most {limits.max_completions} for text, got {n}"
        return None


def _texts_file(store: Any, row: Any) -> Path:
    """Where the studio keeps a text generation's signed record: ``<media>/<id[:2]>/<id>.jsonl``."""
    return Path(store.media_dir) / row.id[:2] / f"{row.id}.jsonl"
