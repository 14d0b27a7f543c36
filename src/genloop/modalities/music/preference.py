"""Music generations back into the token sequences a music model sampled, for DPO on A/B choices.

The feedback store keeps a music generation as MIDI carrying its recipe (the conditions of the prefix
``BOS Style Key Meter Bars``, which slots were given and which the model drew, whether it stopped at EOS),
not as token ids. To score it under a model we re-tokenise it with the run's own tokenizer: the prefix is
rebuilt from the recipe exactly as the pipeline wrote it, the notes are encoded by MidiTok as in training.

What counts as the model's choice (the part DPO scores) and what was context: the pipeline's *given* slots
are context; everything from the first slot the model *drew* on is the model's choice, because a drawn key
or meter is part of what a rater liked or not (an ``in-key:C`` rater prefers pieces whose drawn key fits).
A continued MIDI prompt (``prompt_bars``) is context too when every slot before it was given; the scored
part is one contiguous stretch, so with a drawn slot the prompt's bars are scored along with the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import DataError
from .tokenizer import PREFIX_TYPES, MusicTokenizer

SLOTS = (("Style", "style"), ("Key", "key"), ("Meter", "time_signature"))  # prefix slot, recipe field if given


def _midi_bytes(item: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item), "MIDI bytes"
    path = Path(item)
    if not path.is_file():
        raise DataError(f"{path}: the generation's MIDI file is missing")
    return path.read_bytes(), str(path)


def generation_tokens(tokenizer: MusicTokenizer, item: str | Path | bytes) -> tuple[list[str], list[str]]:
    """``(context, chosen)`` base tokens of a stored generation (a ``.mid`` path or MIDI bytes); see the
    module docstring for where one ends and the other begins."""
    from symusic import Score

    from .piece import piece_from_score
    from .render import read_recipe

    data, name = _midi_bytes(item)
    recipe = read_recipe(data) or {}
    try:
        piece = piece_from_score(Score.from_midi(data), "feedback", name)
    except Exception as e:  # noqa: BLE001 - read_recipe already refused unreadable files; be safe anyway
        raise DataError(f"{name}: not a readable MIDI file ({' '.join(str(e).split())[:120]})") from None
    body: list[str] = []
    if piece.num_notes:
        tokens = tokenizer.tokens(tokenizer.encode(piece))
        body = [t for t in tokens if t.split("_", 1)[0] not in PREFIX_TYPES]
    own = tokenizer.prefix_tokens(piece)  # the piece's own prefix: the fallback for a condition not recorded
    conditions = recipe.get("conditions") or {}
    prefix = ["BOS_None"]
    for i, kind in enumerate(("Style", "Key", "Meter", "Bars"), start=1):
        token = f"{kind}_{conditions[kind]}" if conditions.get(kind) else own[i]
        prefix.append(token if token in tokenizer.tok.vocab else own[i])
    if recipe.get("finish_reason") == "eos":
        body.append("EOS_None")  # stopping was the model's choice too
    if not recipe:  # not one of ours: all we know is the notes, so the whole prefix is context
        return prefix, body
    drawn = [i for i, (_, field) in enumerate(SLOTS, start=1) if recipe.get(field) is None]
    if drawn:
        return prefix[: drawn[0]], prefix[drawn[0] :] + body
    cut = 0
    if recipe.get("prompt_bars"):  # the prompt's bars were written, not chosen: context up to the next Bar
        bars = [j for j, t in enumerate(body) if t == "Bar_None"]
        cut = bars[int(recipe["prompt_bars"])] if len(bars) > int(recipe["prompt_bars"]) else len(body)
    return prefix + body[:cut], body[cut:]


def encode_generation(tokenizer: MusicTokenizer, item: str | Path | bytes, block: int) -> tuple[list[int], int]:
    """Ids of a stored generation cut to ``block + 1`` tokens, and where the model's choice starts (the
    ``(ids, start)`` that :func:`~genloop.feedback.optimize.sequence_logprobs` scores)."""
    from ...feedback.optimize import fit_context
    from .pipeline import encode_tokens

    context, chosen = generation_tokens(tokenizer, item)
    return fit_context(encode_tokens(tokenizer, context), encode_tokens(tokenizer, chosen), block)


def preference_midis(
    store: Any, run_id: str | None = None, job_id: str | None = None, user: str | None = None
) -> list[tuple[Path, Path]]:
    """The store's music preferences as ``(chosen .mid, rejected .mid)`` paths."""
    _, prefs, gens = store.feedback_rows(run_id=run_id, job_id=job_id, user=user, modality="music")
    mid = lambda gid: store.image_path(gens[gid]).with_suffix(".mid")  # noqa: E731
    return [(mid(p.chosen_id), mid(p.rejected_id)) for p in prefs]


def dpo_music(
    run_id: str, pairs: Sequence[tuple[Any, Any]], cfg: Any = None, runs_dir: str | Path | None = None
) -> dict[str, Any]:
    """DPO of a music run on ``(chosen, rejected)`` generations (``.mid`` paths or MIDI bytes); a new run.

    The pairs are re-tokenised with the *parent's* tokenizer (the one the policy and its frozen reference
    read), then trained exactly as text DPO is (:func:`~genloop.feedback.optimize.dpo_on_tokens`)."""
    from ...feedback.optimize import dpo_on_tokens

    if not pairs:
        raise DataError(
            "DPO needs preference pairs of this run's pieces; record some with `genloop feedback prefer CHOSEN "
            "REJECTED` (or let `genloop feedback simulate` rate them)"
        )
    details: dict[str, Any] = {"items": "midi-retokenised"}

    def encode(policy: Any) -> list[tuple[tuple[list[int], int], tuple[list[int], int]]]:
        block = policy.causal_lm().block_size
        out = []
        for chosen, rejected in pairs:
            c, r = (
                encode_generation(policy.tokenizer, chosen, block),
                encode_generation(policy.tokenizer, rejected, block),
            )
            if len(c[0]) > c[1] and len(r[0]) > r[1]:  # both hold something the model chose
                out.append((c, r))
        scored = [len(ids) - start for pair in out for ids, start in pair]
        details["mean_scored_tokens"] = round(sum(scored) / max(len(scored), 1), 1)
        return out

    return dpo_on_tokens(run_id, encode, cfg, runs_dir, "music", details)
