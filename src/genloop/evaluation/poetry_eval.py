"""``genloop eval RUN --form wujue``: how a language-model run is scored as a poet of one form.

Protocol (recorded in the result): the held-out documents of the run's data that are poems of the form
(``title + "\\n" + poem``, the layout of :mod:`genloop.modalities.text.poetry`), read from the data as
written (the run's own train/val split of documents), are the floor; sample ``i``
continues the title of held-out poem ``i mod k`` under the form's constraint (seed ``seed + i``, temperature
1, no top-k/top-p), so samples and floor answer the same titles. Metrics: :func:`poetry_report`.
"""

from __future__ import annotations

from typing import Any

from ..config import from_dict
from ..errors import DataError
from ..modalities.text import TextDataConfig
from ..modalities.text.poetry import get_form, is_form, poem_constraint, title_prompt
from ..modalities.text.sources import read_documents, split_documents
from ..runs import Run
from ..serialization import write_json
from .poetry_metrics import poetry_report

POETRY_EVAL = {"temperature": 1.0, "top_p": 1.0}


def split_document(doc: str) -> tuple[str, str]:
    """(title, poem) of a poem document; a document without a title line is all poem."""
    head, sep, rest = doc.strip("\n").partition("\n")
    return (head, rest) if sep and "，" not in head else ("", doc.strip("\n"))


def held_out_poems(documents: list[str], form: str) -> list[tuple[str, str]]:
    return [(t, p) for t, p in map(split_document, documents) if is_form(p, form)]


def sample_poems(
    pipe: Any,
    titles: list[str],
    n: int,
    seed: int,
    form: str,
    acrostic: str | None = None,
    constrained: bool = True,
    rhyme: bool = True,
    **sampling: Any,
) -> list[str]:
    """``n`` poems, sample ``i`` continuing ``titles[i % len(titles)]`` with seed ``seed + i``, under the form's
    constraint (``constrained=False``: the model alone, with room for one poem of the form and end-of-text;
    ``rhyme=False``: the layout constrained, the rhyme left to the model).
    ``sampling`` overrides :data:`POETRY_EVAL` (temperature, top_p, ...)."""
    f = get_form(form)
    constraint = poem_constraint(f, acrostic, rhyme) if constrained else None
    texts = []
    for i in range(n):
        out = pipe(
            prompt=title_prompt(titles[i % len(titles)]) if titles else "",
            seed=seed + i,
            max_tokens=f.length + 1,
            constraint=constraint,
            **{**POETRY_EVAL, **sampling},
        )
        texts.append(out.texts[0])
    return texts


def evaluate_poetry(
    run: Run,
    pipe: Any,
    form: str,
    n: int,
    seed: int = 0,
    constrained: bool = True,
    rhyme: bool = True,
    write: bool = True,
    **sampling: Any,
) -> dict[str, Any]:
    """Sample and score ``n`` poems of ``form``; written to ``eval/poetry_<form>.json`` in the run (``write``).
    ``constrained=False`` scores the model without the constraint (what the constraint adds), ``rhyme=False``
    with the layout constrained but not the rhyme; ``sampling``
    overrides the protocol's settings (recorded)."""
    f = get_form(form)
    cfg = from_dict(TextDataConfig, run.config["data"], "data.")
    docs, _ = read_documents(cfg)  # the raw text: a char tokenizer's <unk> would spoil held-out poems
    train_docs, val_docs, _ = split_documents(docs, cfg.val_fraction, cfg.seed)
    real = held_out_poems(val_docs, f.name)
    if not real:
        raise DataError(
            f"run {run.id}'s held-out documents hold no {f.chinese} ({f.name}) poem in the layout "
            "'title\\nline，line。\\nline，line。'; nothing to compare with"
        )
    titles = [t for t, _ in real]
    samples = sample_poems(pipe, titles, n, 1_000_000 + seed, f.name, constrained=constrained, rhyme=rhyme, **sampling)
    result = poetry_report(samples, [p for _, p in real], "\n".join(train_docs), f)
    result.update(
        {
            "run_id": run.id,
            "step": pipe.info.get("step"),
            "sample_settings": {
                **POETRY_EVAL,
                **sampling,
                "constraint": f.name if constrained else None,
                "rhyme": "forced" if constrained and rhyme else "free",
                "prompt": "held-out titles",
            },
            "sample_seed": 1_000_000 + seed,
            "samples": samples[:20],
        }
    )
    if write:
        write_json(run.files.eval / f"poetry_{f.name}.json", result)
    return result
