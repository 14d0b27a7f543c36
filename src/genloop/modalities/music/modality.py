"""The music modality: what a music language model's data, outputs, evaluation, feedback and studio controls are.

Data is a :class:`~genloop.modalities.music.dataset.MusicDataConfig` (a built-in corpus ``bach``, ``essen``,
``ryans-mammoth``, or a MIDI/MusicXML/ABC/kern file or folder), read and split by :mod:`.dataset` and
tokenised by a :class:`~genloop.modalities.music.tokenizer.MusicTokenizer` whose styles are the data's;
the tokenizer is saved in the run's ``tokenizer/`` folder. Outputs are :class:`~.pipeline.MusicOutput`
(MIDI carrying its recipe, WAV, piano-roll PNG); the studio stores each as ``<id>.mid``, ``<id>.wav`` and
``<id>.png`` (the PNG is the generation's ``media``, so image routes show the piano roll).
"""

from __future__ import annotations

import base64
import math
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ..base import BUILTIN_CLAIM, Modality

PREVIEW_BARS = 4
PREVIEW_SAMPLES = 2
PREVIEW_MAX_TOKENS = 384
# How `genloop eval` samples a music model (recorded in the result): 8 bars at temperature 1, no top-p.
MUSIC_EVAL = {"bars": 8, "temperature": 1.0, "top_p": 1.0, "max_tokens": 1024}
TONICS = ("C", "G", "D", "A", "E", "B", "F#", "F", "Bb", "Eb", "Ab", "Db")
KEYS = [f"{t} {m}" for m in ("major", "minor") for t in TONICS]
TIME_SIGNATURES = ["2/4", "3/4", "4/4", "6/8", "3/8", "9/8", "12/8", "2/2", "3/2"]
REPORT_PLAYERS = 4  # audio players in a report: the newest generated pieces and evaluation samples, half each
# each player embeds a small excerpt (render.preview_wav), not the full render: ~260 KB of WAV, not ~1 MB
REPORT_AUDIO_RATE = 11025
REPORT_AUDIO_SECONDS = 12.0


@dataclass
class MusicRunData:
    """A music run's data: the split pieces, the tokenizer built for them, and the token ids per split."""

    dataset: Any  # MusicDataset
    tokenizer: Any  # MusicTokenizer
    ids: dict[str, list[np.ndarray]]

    @property
    def heldout_ids(self) -> list[np.ndarray]:
        return self.ids.get("val") or self.ids.get("test") or []


def build_tokenizer(dataset: Any) -> Any:
    from .tokenizer import MusicTokenizer, MusicTokenizerConfig

    return MusicTokenizer(MusicTokenizerConfig(styles=sorted({p.style for p in dataset.pieces})))


def load_music_run_data(data_cfg: Any, tokenizer: Any = None) -> MusicRunData:
    """Read, split and tokenise; a data set with no training or no held-out pieces is refused (DataError)."""
    from ...errors import DataError
    from .dataset import load_music_dataset, tokenize_dataset

    ds = load_music_dataset(data_cfg)
    train, held = ds.splits["train"], ds.splits["val"] or ds.splits["test"]
    if not train or not held:
        raise DataError(
            f"music data {ds.name}: {len(ds.pieces)} piece(s) give {len(train)} for training and {len(held)} "
            "held out; a run needs at least one of each (add pieces, or change data.split)"
        )
    tok = tokenizer if tokenizer is not None else build_tokenizer(ds)
    return MusicRunData(ds, tok, tokenize_dataset(ds, tok, cache=data_cfg.cache))


def _samples_of(output: Any) -> list[Any]:
    """The MusicSamples of a pipeline output or of a best-of-n rerank (both hold them in ``samples``)."""
    return list(output.samples)


def _pieces(items: Any) -> list[Any]:
    from .piece import Piece

    return [it if isinstance(it, Piece) else it.piece for it in items]


def _piece_of_midi(path: Path) -> Any:
    from symusic import Score

    from .piece import piece_from_score

    return piece_from_score(Score.from_midi(path.read_bytes()), path.name)


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _condition(recipe: dict[str, Any]) -> str:
    c = recipe.get("conditions") or {}
    parts = [f"{k.lower()} {c[k]}" for k in ("Style", "Key", "Meter") if c.get(k)]
    return ", ".join(parts)


class MusicModality(Modality):
    name = "music"
    noun = "piece"
    prompted = False
    default_eval_n = 32
    probe_label = "notes"
    finetune_method = "dpo"  # a language model over tokens: DPO on the A/B choices, as text
    can_shard = True  # piece i is drawn in the same chunk on any number of processes (generation/sharding.py)
    own_settings = ("train.eval_tokens", "data_spec.vocab_size")  # the report shows these only for music runs
    generate_keys = ("bars", "temperature", "top_p", "key", "time_signature", "style", "prompt_midi", "prompt_bars")
    default_family = "music-gpt"

    def data_claim(self, name: str) -> int:
        from .sources import CORPORA, MUSIC_SUFFIXES, music_files

        if name in CORPORA:
            return BUILTIN_CLAIM
        path = Path(name).expanduser()
        if path.is_dir():
            return len(music_files(path))
        return int(path.is_file() and path.suffix.lower() in MUSIC_SUFFIXES)

    def builtin_data(self) -> dict[str, str]:
        from .sources import CORPUS_DESCRIPTIONS

        return dict(CORPUS_DESCRIPTIONS)

    # --- data -----------------------------------------------------------------------------------
    @property
    def data_config_cls(self) -> type:
        from .dataset import MusicDataConfig

        return MusicDataConfig

    def load_data(self, rc: Any) -> Any:
        return load_music_run_data(rc.data)

    def load_run_data(self, run: Any) -> Any:
        return None  # the music raters and the probe judge pieces on their own

    def data_spec(self, dataset: Any) -> Any:
        from ...systems.base import DataSpec

        return DataSpec(vocab_size=dataset.tokenizer.vocab_size)

    def batches(self, dataset: Any, rc: Any, system: Any) -> Any:
        """Random windows over the training pieces end to end; a stream shorter than one window is repeated."""
        from ..text.batches import TokenBatches

        if not dataset.ids["train"]:
            from ...errors import DataError

            raise DataError("no tokenised training pieces")
        stream = np.concatenate([np.asarray(p, dtype=np.int64) for p in dataset.ids["train"]])
        block = system.block_size
        if len(stream) < block + 1:
            stream = np.tile(stream, -(-(block + 1) // len(stream)) + 1)
        return TokenBatches(stream, rc.train.batch_size, block, seed=rc.train.seed)

    def bind(self, system: Any, dataset: Any, folder: Path, *, new: bool) -> None:
        from .tokenizer import MusicTokenizer

        if new or not folder.is_dir():
            dataset.tokenizer.save(folder)
        system.tokenizer = dataset.tokenizer if new else MusicTokenizer.load(folder)

    def restore(self, system: Any, folder: Path) -> None:
        from .tokenizer import MusicTokenizer

        system.tokenizer = MusicTokenizer.load(folder)

    # --- generation -----------------------------------------------------------------------------
    def pipeline(self, system: Any, info: dict[str, Any]) -> Any:
        from .pipeline import MusicPipeline

        class StoredMusicPipeline(MusicPipeline):
            """MusicPipeline whose prompt continues its first 4 bars (fewer when fewer are asked for) unless told
            otherwise."""

            @staticmethod
            def _defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
                if kwargs.get("prompt_midi") is not None and kwargs.get("prompt_bars") is None:
                    kwargs["prompt_bars"] = max(1, min(4, int(kwargs.get("bars") or 16) - 1))  # leave bars to write
                return kwargs

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                return super().__call__(*args, **self._defaults(kwargs))

            def recipe_for(self, n: int = 1, seed: int = 0, **options: Any) -> dict[str, Any]:
                return super().recipe_for(n, seed, **self._defaults(options))

        return StoredMusicPipeline(system, info)

    def items(self, output: Any) -> Any:
        return _pieces(_samples_of(output))

    def store_item(self, store: Any, row: Any, output: Any, index: int) -> Path | None:
        """``<id>.mid`` (recipe inside), ``<id>.wav`` and ``<id>.png`` (the piano roll: the row's media)."""
        from ...safety import image_watermark, provenance
        from .render import write_midi, write_wav

        sample = _samples_of(output)[index]
        recipe = output.recipe_of(index)
        base = store.media_dir / row.id[:2] / row.id
        written: list[Path] = []
        try:
            signed = provenance.enabled()
            mid = write_midi(
                base.with_suffix(".mid"),
                sample.score,
                recipe,
                signed,
                generation_id=row.id,
                watermark=image_watermark.enabled(),  # the switch images use: on unless inside watermarking(False)
            )
            written.append(mid)
            if signed:
                written.append(provenance.sidecar(written[0]))
            audio, rate = sample.wav
            written.append(write_wav(base.with_suffix(".wav"), audio, rate))
            png = base.with_suffix(".png")
            sample.piano_roll_png(png)
            written.append(png)
        except BaseException:
            for f in written:
                f.unlink(missing_ok=True)
            raise
        row.media, row.prompt = f"{row.id[:2]}/{row.id}.png", _condition(recipe)
        return png

    def item_ref(self, store: Any, row: Any) -> str:
        return str(store.image_path(row).with_suffix(".mid"))

    def signed_file(self, store: Any, row: Any) -> Path | None:
        """The MIDI file (its manifest in a meta event), not the piano roll the row's media shows."""
        return store.image_path(row).with_suffix(".mid") if row.media else None

    def same_item(self, store: Any, a: Any, b: Any) -> bool:
        """The same notes (the MIDI files carry recipes that differ in their ids)."""
        pa = _piece_of_midi(store.image_path(a).with_suffix(".mid"))
        pb = _piece_of_midi(store.image_path(b).with_suffix(".mid"))
        return bool(np.array_equal(pa.notes, pb.notes))

    def preview(self, system: Any, files: Any, step: int, generator: Any, **sizes: Any) -> Path:
        """``samples/step-N.mid`` and ``.png`` (the first sample), ``step-N.K.mid``/``.png`` for the others."""
        from ...generation.preview import PREVIEW_SEED
        from .render import write_midi

        path = files.sample(step, "mid")
        if getattr(system, "tokenizer", None) is None:
            return path
        out = self.pipeline(system, {"run_id": files.root.name, "model": system.config.name})(
            n=PREVIEW_SAMPLES, bars=PREVIEW_BARS, seed=PREVIEW_SEED, max_tokens=PREVIEW_MAX_TOKENS
        )
        for i, s in enumerate(out):
            stem = f"step-{step:07d}" + (f".{i}" if i else "")
            recipe = {**s.recipe, "train_step": step}
            write_midi(files.samples / f"{stem}.mid", s.score, recipe)
            s.piano_roll_png(files.samples / f"{stem}.png")
        return path

    def generate_files(
        self, run_id: str, n: int, seed: int, out: Any, runs_dir: Any, device: str, checkpoint: str, **options: Any
    ) -> list[Path]:
        from ...generation.writer import generate_music

        return generate_music(run_id, n, seed, out, runs_dir, device, checkpoint, **options)

    # --- evaluation -----------------------------------------------------------------------------
    def quick_evaluator(self, dataset: Any, cfg: Any, progress: bool) -> Callable[[Any], dict[str, float]]:
        """Validation loss (nats per token) on the held-out pieces end to end, in non-overlapping windows."""
        from .evaluate import validation_nll

        def quick(system: Any) -> dict[str, float]:
            block = system.causal_lm().block_size
            r = validation_nll(system, dataset.heldout_ids, stride=block, max_tokens=cfg.eval_tokens or None)
            return {"val_loss": float(r["loss"])}

        return quick

    def evaluate(self, store: Any, run: Any, pipe: Any, n: int, seed: int, t0: float, **options: Any) -> dict:
        """:func:`~.evaluate.evaluate_music` on the run's data: likelihood beside n-gram baselines, ``n``
        samples (seeds apart from ``generate``'s) beside real-data floors; writes ``eval/metrics.json`` and
        the first samples to ``eval/samples/``.

        Under torchrun the ranks share the sampling (:func:`~genloop.generation.sharding.sample_music`) and
        rank 0 alone reads the data, scores the likelihood and the gathered pieces (the single-process ones)
        and writes; the other ranks return an empty dict."""
        from ... import __version__
        from ...config import from_dict
        from ...errors import ConfigError
        from ...generation import sharding
        from ...progress import Phases
        from ...serialization import write_json
        from .dataset import MusicDataConfig
        from .evaluate import evaluate_music

        image_knobs = ("sampler", "steps", "guidance", "eta")
        if any(options.get(k) is not None for k in image_knobs) or options.get("features", "ref") != "ref":
            raise ConfigError(
                "--sampler/--steps/--guidance/--eta/--features apply to image models; a music model is "
                "scored on validation likelihood and samples"
            )
        progress = options.get("progress")  # a callable: told each phase (genloop.progress.Phases)
        phase = Phases(False, listener=progress if callable(progress) else None)
        phase(f"sampling {n} pieces")
        t_sample = time.perf_counter()
        # under torchrun the ranks share the sampling and rank 0 gets the single-process pieces
        made = sharding.sample_music(pipe, n, 1_000_000 + seed, **MUSIC_EVAL)
        seconds = time.perf_counter() - t_sample
        if made is None:
            return {}
        phase("scoring the likelihood and the pieces against the held-out music")
        data = load_music_run_data(from_dict(MusicDataConfig, run.config["data"], "data."), pipe.tokenizer)
        r = evaluate_music(
            pipe.system, data.dataset, n_samples=n, seed=seed, tokens=data.ids, samples=made.pieces, info=pipe.info
        )
        r["generation_tokens_per_s"] = sum(len(s.ids) for s in made) / max(seconds, 1e-9)
        result: dict[str, Any] = {
            "run_id": run.id,
            "model": pipe.info["model"],
            "step": pipe.info["step"],
            "checkpoint": pipe.info["checkpoint"],
            "checkpoint_sha256": pipe.info["checkpoint_sha256"],
            **{k: _finite(v) for k, v in r.items()},
            "n": n,
            "sample_settings": dict(MUSIC_EVAL),
            "sample_seed": 1_000_000 + seed,
            "seconds": round(time.perf_counter() - t0, 2),
            "genloop_version": __version__,
        }
        write_json(run.files.eval_metrics(), result)
        folder = run.files.eval / "samples"
        for s in made.samples[:REPORT_PLAYERS]:
            s.save(folder / f"sample_{s.recipe['seed']:07d}")
        keys = ("val_nll_per_token", "nll_ratio_to_ngram", "descriptor_mean_dist", "memorisation_longest_span")
        store.update(run, summary={k: result[k] for k in keys if result.get(k) is not None})
        return result

    def report_section(self, run_dir: Path, ev: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Piano rolls with ``<audio>`` players (WAVs as data URIs) of the newest generated and evaluation
        samples, and the metric table beside the floors. None for a run that is not music."""
        from ...evaluation import catalog
        from ...run_layout import RunLayout

        files = RunLayout(run_dir)
        metrics: list[dict[str, str]] = []
        if "val_nll_per_token" in ev:
            for m in catalog.for_modality(self.name):
                if m.key in ev:
                    floor = ev.get(m.floor) if m.floor else None
                    metrics.append(
                        {
                            "label": m.label,
                            "value": m.format(ev[m.key]),
                            "floor": m.format(floor) if m.floor else "",
                            "better": m.better_word,
                        }
                    )
        from .render import preview_wav

        players = []
        for caption, folder in (("generated", files.generated), ("evaluation sample", files.eval / "samples")):
            wavs = sorted(folder.glob("*.wav"), key=lambda p: (p.stat().st_mtime, p.name))[-REPORT_PLAYERS // 2 :]
            for wav in wavs:
                png = wav.with_suffix(".png")
                try:
                    audio, cut = preview_wav(wav, REPORT_AUDIO_RATE, REPORT_AUDIO_SECONDS)
                except (OSError, EOFError, wave.Error, DataError):
                    continue  # an unreadable render is left out of the report, never the reason it fails
                players.append(
                    {
                        "caption": f"{caption} {wav.stem}" + (f" (first {REPORT_AUDIO_SECONDS:g} s)" if cut else ""),
                        "audio": "data:audio/wav;base64," + base64.b64encode(audio).decode("ascii"),
                        "roll": _data_uri(png, "image/png") if png.is_file() else None,
                    }
                )
        rolls = [(step, p) for step, p in files.training_samples("png") if p.with_suffix(".mid").is_file()]
        training = None
        if rolls:
            step, p = rolls[-1]
            training = {"caption": f"training sample at step {step:,}", "roll": _data_uri(p, "image/png")}
        if not metrics and not players and training is None:
            return "music", None
        return "music", {
            "metrics": metrics,
            "players": players,
            "training": training,
            "n": ev.get("n"),
            "settings": ev.get("sample_settings"),
        }

    # --- feedback -------------------------------------------------------------------------------
    def reward_features(self, store: Any, rows: list[Any], runs_dir: str | Path | None) -> tuple[Any, dict]:
        import torch

        from .features import FEATURE_DIM, feature_vector

        pieces = [_piece_of_midi(store.image_path(r).with_suffix(".mid")) for r in rows]
        x = torch.from_numpy(np.stack([feature_vector(p) for p in pieces])) if pieces else torch.zeros(0, FEATURE_DIM)
        return x, {"kind": "music-features-v1", "dim": FEATURE_DIM}

    def featurize(self, model: Any, items: Any) -> Any:
        import torch

        from .features import feature_vector

        return torch.from_numpy(np.stack([feature_vector(p) for p in _pieces(items)]))

    def rerank(self, output: Any, pick: Any) -> dict[str, Any]:
        samples = _samples_of(output)
        return {"samples": [samples[int(i)] for i in pick]}

    def item_summary(self, output: Any, index: int) -> str:
        piece = _samples_of(output)[index].piece
        return f"{piece.bars()} bars, {piece.num_notes} notes"

    def simulation_options(self, text_options: dict[str, Any]) -> dict[str, Any]:
        return {"bars": 4, "max_tokens": 256, "temperature": text_options.get("temperature", 1.0)}

    def quality_probe(self, dataset: Any, seed: int) -> Callable[[Any], dict[str, Any]]:
        return lambda items: {"mean_notes": round(float(np.mean([p.num_notes for p in _pieces(items)])), 1)}

    def make_rater(self, spec: str, dataset: Any) -> Any:
        """``in-key:<key>`` (share of notes in the key's scale) and ``range:<low>-<high>`` (share of notes in
        that MIDI pitch range); preferred: at least 90% (in-key) or 80% (range) of the notes."""
        from ...feedback.simulate import Rater
        from .features import scripted_rater

        kind = spec.partition(":")[0]
        if kind not in ("in-key", "range"):
            return None
        score = scripted_rater(spec if ":" in spec else f"{spec}:C")
        words = {"in-key": "prefers notes in the key", "range": "prefers notes in the pitch range"}[kind]
        threshold = 0.9 if kind == "in-key" else 0.8
        return Rater(spec, self.name, f"{words} ({spec})", params={"score": score, "threshold": threshold})

    def finetune(self, run_id: str, reward: Any, store: Any, job: str, cfgs: dict[str, Any], runs_dir: Any) -> dict:
        """DPO on the job's preference pairs, re-tokenised from their MIDI (as text fine-tuning does on texts)."""
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
        """DPO on the stored pairs' pieces, each re-tokenised with the run's tokenizer and the prefix its recipe
        records (:mod:`.preference`)."""
        from .preference import dpo_music, preference_midis

        return dpo_music(run_id, preference_midis(store, run_id=run_filter, job_id=job_id), cfg, runs_dir)

    # --- studio ---------------------------------------------------------------------------------
    def describe(self, config: dict[str, Any], system_cls: type) -> dict[str, Any]:
        return {
            "conditional": False,
            "num_classes": None,
            "diffusion": False,
            "media": ["audio", "image"],
            "controls": [
                {"name": "n", "label": "Pieces", "type": "int", "min": 1, "max": 16, "default": 2},
                {"name": "seed", "label": "Seed", "type": "int", "min": 0, "default": 0},
                {"name": "bars", "label": "Bars", "type": "int", "min": 1, "max": 64, "default": 8},
                {"name": "temperature", "label": "Temperature", "type": "number", "min": 0, "max": 5, "default": 0.9},
                {"name": "top_p", "label": "Top-p", "type": "number", "min": 0.01, "max": 1, "default": 0.95},
                {"name": "key", "label": "Key", "type": "select", "options": KEYS, "default": None},
                {
                    "name": "time_signature",
                    "label": "Time signature",
                    "type": "select",
                    "options": TIME_SIGNATURES,
                    "default": None,
                },
                {"name": "style", "label": "Style", "type": "text", "default": None},
                {"name": "prompt_midi", "label": "Continue a MIDI file", "type": "upload", "accept": ".mid,.midi"},
                {"name": "prompt_bars", "label": "Its first bars", "type": "int", "min": 1, "max": 63, "default": None},
            ],
        }

    def generate_limit(self, n: int, limits: Any) -> str | None:
        if n > limits.max_completions:
            return f"n must be at most {limits.max_completions} for music, got {n}"
        return None
