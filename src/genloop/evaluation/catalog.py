"""The one home of what GenLoop knows about each metric: its label, which way is better, its floor.

Before this module the same facts were written out five times (the checkpoint selector, the CLI's
tables, the HTML report, ``genloop compare`` and the quick evaluator) and drifted: the CLI called the
ELBO "higher is better" while the report had no direction for it, and a metric added to one table was
missing from the others. Every reader now asks :data:`CATALOG`, so a new metric is one entry here.

The catalogue holds facts, not values: the numbers themselves are in ``eval/metrics.json`` (written
by ``genloop eval``) and in the quick evaluations of ``metrics.jsonl``. Keys of those files that are not
metrics (sample counts, seeds, checksums, timings of the evaluation itself) are named in
:data:`BOOKKEEPING`, so that a test can prove every number an evaluator writes is either described here
or deliberately left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["lower", "higher", "closer", "none"]
"""Which way is better: ``closer`` means closer to the real-data floor (diversity statistics, where
both too little and too much are wrong); ``none`` is a diagnostic with no better side (the VAE's KL)."""

Modality = Literal["image", "text", "music", "any"] | tuple[str, ...]
"""A registered modality's name, ``any``, or a tuple of the modalities whose evaluators write the key."""


@dataclass(frozen=True)
class Metric:
    """What one metric key means and how to show it.

    ``floor`` names the key that holds the same statistic for real held-out data (the best a model can
    hope for at this sample size); ``spread`` the key of its standard deviation, shown as ``± std``.
    ``fmt`` is a ``str.format`` pattern for tables; ``unit`` is folded into ``label`` where it helps a
    reader and kept apart for plots and machine output; ``short`` is the column title of wide tables
    (``genloop compare``), the label when not given. ``selectable`` metrics can pick
    ``best.safetensors`` during training (``train.select_metric``): the quick evaluators measure them.
    """

    key: str
    label: str
    direction: Direction
    modality: Modality
    fmt: str = "{:.3f}"
    floor: str | None = None
    spread: str | None = None
    unit: str = ""
    selectable: bool = False
    help: str = ""
    short: str = ""

    @property
    def title(self) -> str:
        """The column title of wide tables: ``short``, else ``label``."""
        return self.short or self.label

    def format(self, value: Any) -> str:
        """``value`` with this metric's format; ``-`` for a missing or NaN value (a table cell never breaks)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.fmt.format(value)
        return str(value)

    def badness(self, value: float, floor: float | None = None) -> float:
        """A number that is smaller for a better ``value``: what ranking and checkpoint selection sort by.

        ``closer`` metrics need their ``floor`` (the distance to it is the badness); without one they,
        like ``none`` metrics, cannot be ranked and raise ValueError rather than rank by accident.
        """
        if self.direction == "lower":
            return value
        if self.direction == "higher":
            return -value
        if self.direction == "closer" and floor is not None:
            return abs(value - floor)
        raise ValueError(
            f"metric '{self.key}' ({self.direction}) has no better side to rank by"
            + ("" if self.direction != "closer" else " without its floor")
        )

    @property
    def better_word(self) -> str:
        """The "better" column of a table: ``lower``, ``higher``, ``closer to real`` or empty."""
        return {"lower": "lower", "higher": "higher", "closer": "closer to real", "none": ""}[self.direction]


def _m(*args: Any, **kwargs: Any) -> tuple[str, Metric]:
    metric = Metric(*args, **kwargs)
    return metric.key, metric


# Order matters: tables (CLI, report, compare) list metrics in this order.
CATALOG: dict[str, Metric] = dict(
    [
        # --- images: distances and scores on the feature net (genloop.evaluation.suite) ----------------------
        _m(
            "fid",
            "FID",
            "lower",
            "image",
            "{:.3f}",
            floor="fid_floor",
            selectable=True,
            help="Fréchet distance between generated and held-out real features",
        ),
        _m(
            "kid",
            "KID",
            "lower",
            "image",
            "{:.4f}",
            floor="kid_floor",
            spread="kid_std",
            selectable=True,
            help="kernel (MMD) distance between generated and held-out real features, unbiased at any sample size",
        ),
        _m(
            "is",
            "Inception Score",
            "higher",
            "image",
            "{:.3f}",
            short="IS",
            floor="is_real",
            spread="is_std",
            selectable=True,
            help="how confidently and how variously the feature network classifies the samples",
        ),
        _m(
            "precision",
            "precision (fidelity)",
            "higher",
            "image",
            short="precision",
            floor="precision_floor",
            selectable=True,
            help="share of generated images inside the real images' k-NN manifold",
        ),
        _m(
            "recall",
            "recall (diversity)",
            "higher",
            "image",
            short="recall",
            floor="recall_floor",
            selectable=True,
            help="share of real images inside the generated images' k-NN manifold",
        ),
        _m(
            "density",
            "density",
            "higher",
            "image",
            floor="density_floor",
            selectable=True,
            help="how many real neighbourhoods hold each sample (about 1 for real data)",
        ),
        _m(
            "coverage",
            "coverage",
            "higher",
            "image",
            floor="coverage_floor",
            selectable=True,
            help="share of real images with a sample in their neighbourhood",
        ),
        _m(
            "class_accuracy",
            "class accuracy",
            "higher",
            "image",
            short="class acc",
            floor="class_accuracy_floor",
            selectable=True,
            help="samples the reference classifier puts in their requested class",
        ),
        # --- images: prompt adherence of text-to-image runs (evaluation.text_image, evaluation.clip_score) ---------
        _m(
            "attribute_accuracy",
            "attributes followed",
            "higher",
            "image",
            short="attr acc",
            help="named attributes (thick, slanted, small...) measured in the requested tercile of their class "
            "(chance 1/3)",
        ),
        _m(
            "attribute_direction_accuracy",
            "attributes on the requested side",
            "higher",
            "image",
            short="attr side",
            help="named attributes measured on the requested side of the class median (upright: middle third)",
        ),
        _m(
            "clip_score",
            "CLIP-score analogue",
            "higher",
            "image",
            "{:.2f}",
            short="CLIP score",
            floor="clip_score_floor",
            help="100 x cosine of image and prompt in a small contrastive scorer trained on the data set",
        ),
        _m(
            "clip_retrieval_top1",
            "scorer retrieval top-1",
            "higher",
            "image",
            short="retr@1",
            help="the scorer's own held-out text-to-image retrieval accuracy: how far to trust the CLIP score",
        ),
        _m(
            "clip_retrieval_top5",
            "scorer retrieval top-5",
            "higher",
            "image",
            short="retr@5",
            help="the scorer's held-out text-to-image retrieval, top 5",
        ),
        _m(
            "per_class_fid_mean",
            "per-class FID (mean)",
            "lower",
            "image",
            short="class FID",
            floor="per_class_fid_floor_mean",
            help="FID within each class, averaged",
        ),
        # --- images: likelihood bounds of the VAE family (systems.vae.VAESystem.evaluate) ---------------------
        _m(
            "elbo_nats",
            "ELBO (nats / image)",
            "higher",
            "image",
            "{:.2f}",
            short="ELBO",
            unit="nats",
            help="the variational bound on the log-likelihood of held-out images",
        ),
        _m(
            "elbo_bits_per_dim",
            "ELBO bits per dimension",
            "lower",
            "image",
            "{:.4f}",
            short="ELBO b/dim",
            unit="bits/dim",
            help="the negative ELBO expressed per pixel channel",
        ),
        _m(
            "recon_nats",
            "reconstruction (nats / image)",
            "lower",
            "image",
            "{:.2f}",
            short="recon",
            unit="nats",
            help="the decoder's negative log-likelihood",
        ),
        _m(
            "kl_nats",
            "KL (nats / image)",
            "none",
            "image",
            "{:.2f}",
            short="KL",
            unit="nats",
            help="how much the encoder's posterior departs from the prior",
        ),
        _m(
            "iwae_nats",
            "IWAE bound (nats / image)",
            "higher",
            "image",
            "{:.2f}",
            short="IWAE",
            unit="nats",
            help="a tighter log-likelihood bound than the ELBO (k importance samples)",
        ),
        _m(
            "iwae_bits_per_dim",
            "IWAE bits per dimension",
            "lower",
            "image",
            "{:.4f}",
            short="IWAE b/dim",
            unit="bits/dim",
            help="the IWAE bound per pixel channel",
        ),
        # --- text: likelihood on held-out text (genloop eval of a language model; quick evaluations) --------
        _m(
            "val_loss",
            "validation loss (nats / token)",
            "lower",
            ("text", "music"),
            "{:.4f}",
            short="val loss",
            unit="nats/token",
            selectable=True,
            help="cross-entropy of the held-out split",
        ),
        _m("perplexity", "perplexity", "lower", "text", "{:.3f}", help="exp of the validation loss"),
        _m(
            "bits_per_char",
            "bits per character",
            "lower",
            "text",
            "{:.4f}",
            short="bits/char",
            unit="bits/char",
            help="the validation loss per character of text, comparable across tokenizers",
        ),
        _m(
            "bits_per_byte",
            "bits per byte",
            "lower",
            "text",
            "{:.4f}",
            short="bits/byte",
            unit="bits/byte",
            help="the validation loss per UTF-8 byte, comparable across tokenizers and scripts",
        ),
        # --- text: diversity of samples, beside held-out real text of the same length -------------------------
        _m(
            "distinct_1",
            "distinct-1",
            "closer",
            "text",
            floor="distinct_1_floor",
            help="share of distinct words among all words of the samples",
        ),
        _m("distinct_2", "distinct-2", "closer", "text", floor="distinct_2_floor", help="share of distinct word pairs"),
        _m(
            "distinct_3",
            "distinct-3",
            "closer",
            "text",
            floor="distinct_3_floor",
            help="share of distinct word triples",
        ),
        _m(
            "self_bleu",
            "self-BLEU",
            "closer",
            "text",
            floor="self_bleu_floor",
            help="how much each sample repeats the others (BLEU of one against the rest)",
        ),
        _m(
            "longest_span_mean",
            "longest verbatim span (mean chars)",
            "lower",
            "text",
            "{:.1f}",
            short="span",
            floor="longest_span_mean_floor",
            unit="chars",
            help="longest stretch of a sample found in the training text",
        ),
        # --- music: likelihood beside n-gram baselines (genloop.modalities.music.evaluate) ------------------
        _m(
            "val_nll_per_token",
            "validation NLL (nats / token)",
            "lower",
            "music",
            "{:.4f}",
            short="NLL/tok",
            floor="ngram_nll_per_token",
            unit="nats/token",
            help="the model's next-token cross-entropy on the held-out pieces; its floor column is the best n-gram's",
        ),
        _m(
            "val_nll_per_note",
            "validation NLL (nats / note)",
            "lower",
            "music",
            "{:.3f}",
            short="NLL/note",
            floor="ngram_nll_per_note",
            unit="nats/note",
            help="total held-out nats over the number of held-out notes (comparable across tokenizers)",
        ),
        _m(
            "nll_ratio_to_ngram",
            "NLL ratio to the best n-gram",
            "lower",
            "music",
            short="NLL/n-gram",
            help="validation NLL per token over the best Kneser-Ney n-gram's on the same tokens (< 0.8 is the bar)",
        ),
        _m(
            "unigram_nll_per_token",
            "unigram baseline NLL (nats / token)",
            "none",
            "music",
            "{:.4f}",
            unit="nats/token",
            help="add-one unigram fitted on the training tokens, scored on the held-out ones",
        ),
        _m(
            "ngram_best_order",
            "best n-gram order",
            "none",
            "music",
            "{:.0f}",
            help="which of the 2/3/4-gram baselines scored best (its NLL is the NLL floor column)",
        ),
        *[
            _m(
                f"ngram_{k}_nll_per_token",
                f"{k}-gram baseline NLL (nats / token)",
                "none",
                "music",
                "{:.4f}",
                unit="nats/token",
                help=f"interpolated Kneser-Ney {k}-gram fitted on the training tokens, scored on the held-out ones",
            )
            for k in (2, 3, 4)
        ],
        # --- music: sample descriptors beside training pieces (floor), both against held-out pieces ----------
        *[
            _m(
                f"{name}_dist",
                f"{label} distance",
                "lower",
                "music",
                "{:.4f}",
                floor=f"{name}_dist_floor",
                help=f"distance between the samples' and the held-out pieces' {label} "
                "(W1 over the held-out spread, or Jensen-Shannon bits for histograms)",
            )
            for name, label in (
                ("pitch_class_entropy", "pitch-class entropy"),
                ("scale_consistency", "scale consistency"),
                ("pitch_range", "pitch range"),
                ("polyphony", "polyphony"),
                ("empty_beat_rate", "empty-beat rate"),
                ("groove_consistency", "groove consistency"),
                ("note_length_hist", "note-length histogram"),
                ("interval_hist", "interval histogram"),
                ("descriptor_mean", "mean descriptor"),
            )
        ],
        # --- music: four-part chorale checks (when the held-out pieces are SATB) -----------------------------
        _m(
            "satb_range_share",
            "notes in their SATB voice range",
            "closer",
            "music",
            floor="satb_range_share_floor",
            help="share of each voice's notes inside its soprano/alto/tenor/bass range, averaged",
        ),
        _m(
            "parallel_fifths_per_100_beats",
            "parallel fifths (per 100 beats)",
            "closer",
            "music",
            "{:.2f}",
            floor="parallel_fifths_per_100_beats_floor",
            help="consecutive parallel fifths between any two voices",
        ),
        _m(
            "parallel_octaves_per_100_beats",
            "parallel octaves (per 100 beats)",
            "closer",
            "music",
            "{:.2f}",
            floor="parallel_octaves_per_100_beats_floor",
            help="consecutive parallel octaves and unisons between any two voices",
        ),
        # --- music: memorisation and empties ---------------------------------------------------------------
        _m(
            "memorisation_longest_span",
            "longest span copied from training (steps)",
            "lower",
            "music",
            "{:.1f}",
            short="copied span",
            floor="memorisation_longest_span_floor",
            help="median over samples of the longest transposition-invariant (interval, duration) run found "
            "verbatim in a training voice; floor: the same for held-out pieces",
        ),
        _m(
            "samples_empty_share",
            "samples with no notes",
            "lower",
            "music",
            short="empty",
            help="share of samples that decode to no notes (left out of the descriptor panel)",
        ),
        # --- both: memorisation and speed ------------------------------------------------------------------
        _m(
            "copy_rate",
            "near-copies of training data",
            "lower",
            "any",
            short="copies",
            floor="copy_rate_floor",
            help="share of samples that are near copies of a training image, or that copy a long span of training text",
        ),
        _m(
            "sampling_ms_per_image",
            "sampling time (ms / image)",
            "lower",
            "image",
            "{:.1f}",
            short="ms/img",
            unit="ms",
            help="wall time to generate one image on the evaluation device",
        ),
        _m(
            "generation_tokens_per_s",
            "generation speed (tokens / s)",
            "higher",
            ("text", "music"),
            "{:.0f}",
            short="tok/s",
            unit="tokens/s",
            help="tokens sampled per second on the evaluation device",
        ),
    ]
)

# Keys of eval/metrics.json (and of quick evaluations) that are numbers but not metrics: what was scored
# and how, and the evaluation's own cost. A companion of a metric (its floor or spread) is not listed:
# :func:`companions` covers those.
BOOKKEEPING: frozenset[str] = frozenset(
    {
        "step",
        "seed",
        "seconds",
        "n",
        "n_generated",
        "n_reference",
        "n_floor",
        "steps",
        "guidance",
        "eta",
        "is_real_std",
        "kid_floor_std",
        "sample_seed",
        "mean_sample_chars",
        "val_tokens",
        "val_notes",
        "n_samples",
        "prompts_from",
        "attribute_accuracy_by",
        "attribute_direction_accuracy_by",
        "attribute_requests",
        "attribute_prompts",
        "attribute_chance",
        "clip_retrieval_chance_top1",
        "clip_retrieval_pool",
    }
)


def companions() -> frozenset[str]:
    """Floor and spread keys of every catalogued metric (``fid_floor``, ``kid_std``, ``is_real``...)."""
    return frozenset(k for m in CATALOG.values() for k in (m.floor, m.spread) if k)


def get(key: str) -> Metric:
    """The catalogue entry of ``key``; KeyError names the known keys, since a typo is the likely cause."""
    try:
        return CATALOG[key]
    except KeyError:
        raise KeyError(f"unknown metric '{key}'; catalogued: {', '.join(CATALOG)}") from None


def applies(metric: Metric, modality: str) -> bool:
    """Whether ``metric`` is one of ``modality``'s (its own, ``any``, or one of a tuple of modalities)."""
    kinds = metric.modality if isinstance(metric.modality, tuple) else (metric.modality,)
    return modality in kinds or "any" in kinds


def for_modality(modality: str) -> Iterator[Metric]:
    """Metrics that apply to runs of ``modality``, in table order (``any`` metrics go with every one)."""
    return (m for m in CATALOG.values() if applies(m, modality))


def selectable() -> tuple[str, ...]:
    """Keys ``train.select_metric`` accepts: the metrics the quick evaluators measure."""
    return tuple(k for k, m in CATALOG.items() if m.selectable)


__all__ = [
    "BOOKKEEPING",
    "CATALOG",
    "Direction",
    "Metric",
    "applies",
    "companions",
    "for_modality",
    "get",
    "selectable",
]
