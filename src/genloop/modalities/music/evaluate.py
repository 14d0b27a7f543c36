"""Evaluate a music language model: likelihood beside n-gram baselines, samples beside real-data floors.

:func:`evaluate_music` returns one flat dict of floats. Every sample metric ``X`` comes with ``X_floor``,
the same number for real music (what samples can at best match); likelihoods come with baselines.

Likelihood (validation split, as written: no transposition):
  ``val_nll_per_token``      the model's mean next-token cross-entropy (nats) on the validation pieces
                             end to end, strided windows (:func:`~genloop.evaluation.text_metrics.
                             sliding_window_loss`, stride = block_size // 2 unless given)
  ``val_nll_per_note``       total nats over the validation stream / number of validation notes
  ``unigram_nll_per_token``  add-one unigram on the same tokens (fitted on the training ids)
  ``ngram_nll_per_token``    the best interpolated Kneser-Ney 2/3/4-gram on the same tokens
                             (``ngram_best_order`` says which; ``ngram_{2,3,4}_nll_per_token`` each)
  ``ngram_nll_per_note``     that best n-gram's total nats / number of validation notes
  ``nll_ratio_to_ngram``     val_nll_per_token / ngram_nll_per_token (the benchmark bar: <= 0.8)

Descriptors (``n_samples`` samples vs the held-out pieces; floor: ``n_samples`` training pieces drawn with
the seed vs the same held-out pieces, so both sides have the same finite-sample noise). For each of
``pitch_class_entropy, scale_consistency, pitch_range, polyphony, empty_beat_rate, groove_consistency,
note_length_hist, interval_hist`` and their ``descriptor_mean``: ``<name>_dist`` and ``<name>_dist_floor``
(:func:`~genloop.modalities.music.metrics.descriptor_distances`: W1 over the held-out spread for scalars,
Jensen-Shannon bits for histograms; lower is better).

Chorales (when the held-out pieces are four-part, or ``chorale=True``), per piece then averaged:
  ``satb_range_share`` / ``_floor``              share of each voice's notes in its SATB range (held-out's own)
  ``parallel_fifths_per_100_beats`` / ``_floor``  consecutive parallel fifths between any two voices
  ``parallel_octaves_per_100_beats`` / ``_floor`` the same for octaves and unisons

Memorisation: ``memorisation_longest_span`` / ``_floor``: median over samples (over held-out pieces) of
the longest transposition-invariant run of (interval, duration) steps found verbatim in a training voice.

Also: ``samples_empty_share`` (samples with no notes: left out of the descriptor panel),
``generation_tokens_per_s``, ``val_tokens``, ``val_notes``, ``n_samples``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from ...errors import DataError
from . import metrics
from .dataset import MusicDataset, tokenize_dataset
from .piece import Piece

DESCRIPTOR_NAMES = (*metrics.SCALAR_DESCRIPTORS, *metrics.HISTOGRAM_DESCRIPTORS)


def metric_keys(chorale: bool = True) -> list[str]:
    """Every key :func:`evaluate_music` returns (chorale keys only with ``chorale``), in report order."""
    keys = [
        "val_nll_per_token",
        "val_nll_per_note",
        "unigram_nll_per_token",
        "ngram_nll_per_token",
        "ngram_nll_per_note",
        "ngram_best_order",
        "ngram_2_nll_per_token",
        "ngram_3_nll_per_token",
        "ngram_4_nll_per_token",
        "nll_ratio_to_ngram",
    ]
    for name in (*DESCRIPTOR_NAMES, "descriptor_mean"):
        keys += [f"{name}_dist", f"{name}_dist_floor"]
    if chorale:
        for name in ("satb_range_share", "parallel_fifths_per_100_beats", "parallel_octaves_per_100_beats"):
            keys += [name, f"{name}_floor"]
    keys += ["memorisation_longest_span", "memorisation_longest_span_floor"]
    keys += ["samples_empty_share", "generation_tokens_per_s", "val_tokens", "val_notes", "n_samples"]
    return keys


@torch.inference_mode()
def validation_nll(
    system: Any, val_ids: list[np.ndarray], stride: int | None = None, max_tokens: int | None = None
) -> dict[str, float]:
    """The model's strided-window loss on the validation pieces end to end: nats/token and the total."""
    from ...evaluation.text_metrics import sliding_window_loss

    stream = np.concatenate([np.asarray(a, dtype=np.int64) for a in val_ids])
    lm = system.causal_lm()
    was_training = system.training
    system.eval()
    try:
        out = sliding_window_loss(lm, stream, int(lm.block_size), stride=stride, max_tokens=max_tokens)
    finally:
        system.train(was_training)
    return {
        "loss": float(out["loss"]),
        "tokens": int(out["tokens_scored"]),
        "total": out["loss"] * out["tokens_scored"],
    }


def _chorale_panel(pieces: list[Piece]) -> dict[str, float]:
    if not pieces:
        return {k: math.nan for k in ("satb", "fifths", "octaves")}
    shares = [np.mean(list(metrics.voice_range_share(p).values()) or [0.0]) for p in pieces]
    par = [metrics.parallel_perfects(p) for p in pieces]
    return {
        "satb": float(np.mean(shares)),
        "fifths": float(np.mean([d["fifths_per_100_beats"] for d in par])),
        "octaves": float(np.mean([d["octaves_per_100_beats"] for d in par])),
    }


def evaluate_music(
    system: Any,
    dataset: MusicDataset,
    n_samples: int = 32,
    seed: int = 0,
    bars: int = 16,
    temperature: float = 0.9,
    top_p: float = 0.95,
    top_k: int = 0,
    tokens: dict[str, list[np.ndarray]] | None = None,
    samples: list[Piece] | None = None,
    chorale: bool | None = None,
    stride: int | None = None,
    max_val_tokens: int | None = None,
    max_tokens: int | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Every metric of the module docstring for ``system`` (its ``tokenizer`` attached) on ``dataset``.

    ``tokens`` reuses :func:`tokenize_dataset`'s output; ``samples`` reuses pieces already generated
    (otherwise ``n_samples`` are drawn with :class:`MusicPipeline`, sample ``i`` from ``seed + i``).
    ``chorale`` None: the chorale checks run when every held-out piece has four voices.
    """
    tok = system.tokenizer
    if tok is None:
        raise DataError("the music model has no tokenizer attached")
    heldout = dataset.split("val") or dataset.split("test")
    train = dataset.split("train")
    if not heldout or not train:
        raise DataError(
            f"music evaluation needs training and held-out pieces; {dataset.name} has {len(train)} and {len(heldout)}"
        )
    ids = tokens if tokens is not None else tokenize_dataset(dataset, tok, cache=True)
    val_ids = ids["val"] if ids.get("val") else ids["test"]
    out: dict[str, float] = {}

    # --- likelihood beside the n-gram baselines, on the same tokens
    nll = validation_nll(system, val_ids, stride=stride, max_tokens=max_val_tokens)
    n_notes = sum(p.num_notes for p in heldout)
    scored_stream = np.concatenate([np.asarray(a, dtype=np.int64) for a in val_ids])[: nll["tokens"] + 1]
    base = metrics.ngram_baselines(list(ids["train"]), [scored_stream], tok.vocab_size)
    notes_scored = n_notes * nll["tokens"] / max(1, len(scored_stream) - 1) if max_val_tokens else n_notes
    out["val_nll_per_token"] = nll["loss"]
    out["val_nll_per_note"] = nll["total"] / max(notes_scored, 1)
    out["unigram_nll_per_token"] = base["unigram"]
    out["ngram_nll_per_token"] = base["best"]
    out["ngram_nll_per_note"] = base["best"] * len(scored_stream) / max(notes_scored, 1)
    out["ngram_best_order"] = base["best_order"]
    for n in (2, 3, 4):
        out[f"ngram_{n}_nll_per_token"] = base[f"{n}-gram"]
    out["nll_ratio_to_ngram"] = nll["loss"] / base["best"]

    # --- samples
    gen_seconds, gen_tokens = 0.0, 0
    if samples is None:
        from .pipeline import MusicPipeline

        t0 = time.perf_counter()
        made = MusicPipeline(system, info or {})(
            n=n_samples,
            bars=bars,
            seed=seed,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=max_tokens,
        )
        gen_seconds = time.perf_counter() - t0
        gen_tokens = sum(len(s.ids) for s in made)
        samples = made.pieces
        system.train(False)
    nonempty = [p for p in samples if p.num_notes > 0]
    out["samples_empty_share"] = 1 - len(nonempty) / max(len(samples), 1)
    out["generation_tokens_per_s"] = gen_tokens / gen_seconds if gen_seconds else math.nan

    rng = np.random.default_rng(seed)
    floor_set = [train[i] for i in rng.permutation(len(train))[: max(1, len(samples))]]
    floor = metrics.descriptor_distances(heldout, floor_set)
    got = metrics.descriptor_distances(heldout, nonempty) if nonempty else {k: math.nan for k in floor}
    for name in (*DESCRIPTOR_NAMES, "descriptor_mean"):
        key = "mean" if name == "descriptor_mean" else name
        out[f"{name}_dist"] = float(got[key])
        out[f"{name}_dist_floor"] = float(floor[key])

    if chorale is None:
        chorale = all(len(p.score.tracks) == 4 for p in heldout)
    if chorale:
        real, fake = _chorale_panel(heldout), _chorale_panel(nonempty)
        for name, k in (
            ("satb_range_share", "satb"),
            ("parallel_fifths_per_100_beats", "fifths"),
            ("parallel_octaves_per_100_beats", "octaves"),
        ):
            out[name], out[f"{name}_floor"] = fake[k], real[k]

    mem = metrics.memorisation(nonempty, train, heldout)
    out["memorisation_longest_span"] = mem["samples_median"] if nonempty else math.nan
    out["memorisation_longest_span_floor"] = mem["heldout_median"]
    out["val_tokens"] = float(nll["tokens"])
    out["val_notes"] = float(n_notes)
    out["n_samples"] = float(len(samples))
    return {k: float(v) for k, v in out.items()}


__all__ = ["evaluate_music", "metric_keys", "validation_nll", "DESCRIPTOR_NAMES"]
