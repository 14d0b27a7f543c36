"""Sharded generation and evaluation (image, text, music) under ``torchrun``: N processes write what one process writes.

Image i always uses seed ``seed + i``, and an image pipeline samples in batches of :func:`chunk_size` rows
counted from image 0 (256; ``GENLOOP_SAMPLE_BATCH`` changes it for one and for N processes alike). A chunk
(images ``k * size`` to ``(k + 1) * size - 1``) is therefore the unit of work: rank
``r`` of ``w`` takes chunks ``k`` with ``k % w == r`` and samples each in one call, so every image is computed
in the very batch a single process computes it in. The PNGs are byte-identical for any number of processes,
and the samples an evaluation gathers on rank 0 are the single-process tensors, so the metrics are equal.

Generation writes each sample atomically; a sample whose PNG is there with the expected recipe is not made
again, so re-running a crashed command finishes the rest (with any number of processes). Each rank records
what it holds in ``index-rank<r>.jsonl``; rank 0, after a barrier, merges those into one ``index.jsonl`` in
item order and removes them. Without torchrun none of this runs: the writer and the protocol keep their
single-process code path.

Text and music follow the same rule. Completion (piece) i uses seed ``seed + i``, but the text sampler
batches rows and the music pipeline groups rows by their conditioning prefix, so which items share a call
could matter; one process therefore also samples them in chunks of :func:`chunk_size` counted from item 0
(one call, as before, for ``n <= 256``). Text generation records each finished chunk in
``texts-rank<r>.jsonl`` (reused by a re-run of the same command); rank 0 appends the completions to
``texts.jsonl`` in item order, as one process does. Music saves each piece's four files per chunk (a piece
complete with this request's recipe is kept) and merges ``index.jsonl`` like images. Evaluations gather
the samples on rank 0, which alone scores likelihood and samples and writes.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import distributed
from ..data.image_io import read_recipe, save_png
from ..errors import ConfigError, DataError, GenLoopError
from ..safety import image_watermark, provenance
from ..serialization import remove_strays, write_text
from .pipelines import ImageOutput

CHUNK = 256  # the pipelines' default batch size: a chunk is one batch of a single-process call
INDEX = "index.jsonl"  # the merged record of a sharded generation, one line per sample in item order
MAX_SHARDED = 100_000  # images a sharded generate may write (one process: the writer's 10 000)
GRID_MAX = 10_000  # the grid shows the first this many (all of them for any n one process accepts)


def refuse(what: str) -> None:
    """A one-line error for work of a modality that does not declare ``can_shard`` (image, text and music all
    do): every rank stops the same way."""
    if distributed.launched().world_size > 1:
        raise ConfigError(f"{what} does not run on several processes; run it without torchrun or --nproc")


def join(device: str) -> str:
    """Join torchrun's process group (a no-op without it) and return this rank's device name: under torchrun,
    ``cuda`` means the GPU of ``LOCAL_RANK``, as it does for training."""
    ctx = distributed.launched()
    if ctx.world_size == 1:
        return device  # one process: the device goes to the pipeline as it always has
    if device == "cuda":
        device = f"cuda:{ctx.local_rank % max(torch.cuda.device_count(), 1)}"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {device!r}; valid: cpu, cuda, cuda:N") from None
    distributed.setup(dev)
    return device


def sharded() -> bool:
    """True inside a process group of more than one process: the work is split over the ranks."""
    return distributed.world_size() > 1


def chunk_size() -> int:
    """Images per sampling batch: ``GENLOOP_SAMPLE_BATCH`` or 256 (the pipelines' default). Smaller saves
    memory and lets tests spread a few images over several ranks; any value gives the same images."""
    text = os.environ.get("GENLOOP_SAMPLE_BATCH", "").strip()
    if not text:
        return CHUNK
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise ConfigError(f"GENLOOP_SAMPLE_BATCH must be a positive integer, got {text!r}")
    return size


def chunks(n: int) -> list[range]:
    """The item ranges of ``n`` items, one per pipeline batch."""
    size = chunk_size()
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def my_chunks(n: int) -> list[tuple[int, range]]:
    """(chunk number, items) of this rank's chunks: round robin, so shares differ by one chunk at most."""
    w, r = distributed.world_size(), distributed.rank()
    return [(k, rows) for k, rows in enumerate(chunks(n)) if k % w == r]


def _chunk_call(pipe: Any, rows: range, seed: int, labels: torch.Tensor | None, options: dict[str, Any]) -> Any:
    """Sample the items ``rows`` exactly as a single-process call of ``n >= rows.stop`` samples them."""
    class_label = None if labels is None else [int(v) for v in labels[rows.start : rows.stop]]
    return pipe(n=len(rows), seed=seed + rows.start, class_label=class_label, batch_size=chunk_size(), **options)


def _whole_recipe(chunk_recipe: dict[str, Any], n: int, seed: int, labels: torch.Tensor | None) -> dict[str, Any]:
    """The batch recipe a single-process call of ``n`` items returns, from any one chunk's (same key order)."""
    recipe = {**chunk_recipe, "seed": seed, "n": n}
    if labels is not None:
        recipe["class_labels"] = labels.tolist()
    return recipe


def sample_images(pipe: Any, n: int, seed: int, class_label: Any = None, **options: Any) -> ImageOutput | None:
    """``pipe(n=n, seed=seed, ...)``, its chunks sampled across the ranks: the whole output on rank 0 (equal,
    tensor for tensor, to the single-process call), None on the other ranks."""
    if not sharded():
        whole: ImageOutput = pipe(n=n, seed=seed, class_label=class_label, batch_size=chunk_size(), **options)
        return whole
    labels = pipe.labels(n, class_label)  # every rank checks the request before any sampling
    mine = []
    for k, rows in my_chunks(n):
        out = _chunk_call(pipe, rows, seed, labels, options)
        mine.append((k, out.tensors, out.recipe))
    parts = distributed.gather_to_main(mine)
    if parts is None:
        return None
    ordered = sorted((p for rank_parts in parts for p in rank_parts), key=lambda p: p[0])
    tensors = torch.cat([t for _, t, _ in ordered])
    return ImageOutput(tensors, _whole_recipe(ordered[0][2], n, seed, labels), labels)


# ------------------------------------------------------------------------------------------- generation
def sample_name(seed: int, i: int) -> str:
    return f"sample_{seed + i:06d}.png"


def item_recipe(whole: dict[str, Any], i: int, labels: torch.Tensor | None) -> dict[str, Any]:
    """Item ``i``'s recipe, as :meth:`ImageOutput.recipe_of` writes it in a single-process call."""
    return ImageOutput(torch.empty(0), whole, labels).recipe_of(i)


def _as_json(obj: Any) -> Any:
    """``obj`` as it reads back from a PNG's recipe chunk (tuples become lists, odd values strings)."""
    return json.loads(json.dumps(obj, ensure_ascii=False, default=str))


def _complete(path: Path, expected: dict[str, Any]) -> bool:
    """True when ``path`` is a readable PNG carrying ``expected`` as its recipe: written (atomically) by the
    same command, so it need not be made again."""
    if not path.is_file():
        return False
    try:
        return read_recipe(path) == _as_json(expected)
    except GenLoopError:
        return False


def _record(path: Path, i: int, seed: int, labels: torch.Tensor | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"index": i, "file": path.name, "seed": seed + i}
    if labels is not None:
        rec["class_label"] = int(labels[i])
    rec["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return rec


def shard_name(rank: int) -> str:
    return f"index-rank{rank}.jsonl"


def write_samples(
    pipe: Any, out_dir: Path, n: int, seed: int, class_label: Any, options: dict[str, Any]
) -> tuple[list[Path], dict[str, Any]]:
    """This rank's share of ``sample_<seed + i>.png``, skipping samples already complete, then (rank 0) the
    merged ``index.jsonl``. Returns (every sample's path, the batch recipe) on rank 0, ([], {}) elsewhere."""
    labels = pipe.labels(n, class_label)
    r = distributed.rank()
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_strays(out_dir)  # temporaries of a crashed run; no rank writes before the barrier below
    distributed.barrier()
    shard = out_dir / shard_name(r)
    shard.write_text("", encoding="utf-8")  # this run's record; a crashed run's partial one is dropped
    whole: dict[str, Any] | None = None

    def whole_recipe() -> dict[str, Any]:
        nonlocal whole
        if whole is None:  # a one-image call (item 0's class) tells what the recipe of this request is
            probe = _chunk_call(pipe, range(0, 1), seed, labels, options)
            whole = _whole_recipe(probe.recipe, n, seed, labels)
        return whole

    for _, rows in my_chunks(n):
        paths = {i: out_dir / sample_name(seed, i) for i in rows}
        existing = [i for i in rows if paths[i].is_file()]
        todo = [i for i in rows if i not in existing or not _complete(paths[i], item_recipe(whole_recipe(), i, labels))]
        if todo:
            out = _chunk_call(pipe, rows, seed, labels, options)
            whole = whole or _whole_recipe(out.recipe, n, seed, labels)
            for i in todo:
                save_png(
                    paths[i],
                    out.tensors[i - rows.start],
                    item_recipe(whole, i, labels),
                    sign=provenance.enabled(),
                    watermark=image_watermark.enabled(),
                )
        with shard.open("a", encoding="utf-8") as f:  # whole lines per finished chunk
            f.write("".join(json.dumps(_record(paths[i], i, seed, labels)) + "\n" for i in rows))
    distributed.barrier()
    if not distributed.is_main():
        return [], {}
    index = merge_shards(out_dir, n, distributed.world_size())
    return [out_dir / rec["file"] for rec in index], whole_recipe()


def merge_shards(out_dir: Path, n: int, world: int) -> list[dict[str, Any]]:
    """Rank 0: the rank records merged into ``index.jsonl`` (item order), then removed (stale ones of a run
    with more processes too). Every item must be recorded exactly once."""
    records: dict[int, dict[str, Any]] = {}
    for r in range(world):
        for line in (out_dir / shard_name(r)).read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            records[rec["index"]] = rec
    missing = [i for i in range(n) if i not in records]
    if missing:
        raise DataError(f"{len(missing)} of {n} samples are missing from the rank records in {out_dir}")
    index = [records[i] for i in range(n)]
    write_text(out_dir / INDEX, "".join(json.dumps(rec) + "\n" for rec in index))
    for stale in out_dir.glob("index-rank*.jsonl"):
        stale.unlink(missing_ok=True)
    return index


def read_png_tensor(path: Path) -> torch.Tensor:
    """A sample PNG as the float (C, H, W) tensor in [-1, 1] whose :func:`~genloop.data.image.to_uint8` gives
    back its bytes exactly (u / 127.5 - 1 rounds back to u), so a grid made from the files equals one made
    from the sampled tensors."""
    with Image.open(path) as im:
        a = np.asarray(im)
    t = torch.from_numpy(a.copy())
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t.float().div(127.5).sub(1.0)


def load_samples(paths: list[Path]) -> torch.Tensor:
    return torch.stack([read_png_tensor(p) for p in paths])


# ------------------------------------------------------------------------------------------------ text
MAX_TEXTS = 10_000  # completions one generate or eval call may ask for (the text pipeline's own limit)


def text_shard_name(rank: int) -> str:
    return f"texts-rank{rank}.jsonl"


def text_recipe(pipe: Any, prompt: str, n: int, seed: int, sampling: dict[str, Any]) -> dict[str, Any]:
    """The batch recipe ``pipe(prompt=prompt, n=n, seed=seed, **sampling)`` returns, without sampling: the
    settings are checked as the call checks them, on every rank before any sampling."""
    keys = inspect.signature(pipe.params).parameters
    params = pipe.params(**{k: v for k, v in sampling.items() if k in keys})
    return pipe.recipe(prompt=prompt, seed=seed, n=n, **vars(params))  # type: ignore[no-any-return]


def _text_chunk(pipe: Any, k: int, rows: range, prompt: str, seed: int, sampling: dict[str, Any]) -> list[str]:
    """The texts of items ``rows`` (chunk ``k``): one pipeline call, as one process makes it."""
    return list(_text_chunk_output(pipe, k, rows, prompt, seed, sampling).texts)


def _text_chunk_output(pipe: Any, k: int, rows: range, prompt: str, seed: int, sampling: dict[str, Any]) -> Any:
    """Chunk ``k``'s :class:`TextOutput` (texts and their moderation marks). Only chunk 0 issues the prompt's
    warnings, so a long run warns once, as a single call did."""
    with warnings.catch_warnings():
        if k:
            warnings.simplefilter("ignore")
        return pipe(prompt=prompt, n=len(rows), seed=seed + rows.start, **sampling)


def _check_texts(n: int) -> None:
    if not 1 <= n <= MAX_TEXTS:
        raise ConfigError(f"--n must be between 1 and {MAX_TEXTS}, got {n}")


def sample_texts(pipe: Any, prompt: str, n: int, seed: int, **sampling: Any) -> Any:
    """``pipe(prompt=prompt, n=n, seed=seed, ...)`` as a :class:`TextOutput`, sampled chunk by chunk
    (:func:`chunk_size` completions counted from 0) on one process too: a completion is then drawn in the same
    batch whichever process draws it, so it is the same text. For ``n <= chunk_size()`` this is the one call
    it always was. Under torchrun the chunks are shared out; rank 0 gets the whole output, the others None."""
    from .text_pipeline import TextOutput

    _check_texts(n)
    recipe = text_recipe(pipe, prompt, n, seed, sampling)
    if not sharded():
        outs = [_text_chunk_output(pipe, k, rows, prompt, seed, sampling) for k, rows in enumerate(chunks(n))]
        marks = [m for o in outs for m in (o.moderation or [None] * len(o.texts))]  # flagged / withheld texts
        return TextOutput([t for o in outs for t in o.texts], prompt, recipe, marks)
    mine = [(k, _text_chunk(pipe, k, rows, prompt, seed, sampling)) for k, rows in my_chunks(n)]
    parts = distributed.gather_to_main(mine)
    if parts is None:
        return None
    ordered = sorted((p for rank_parts in parts for p in rank_parts), key=lambda p: p[0])
    return TextOutput([t for _, texts in ordered for t in texts], prompt, recipe)


def _text_records(out_dir: Path, expected: Any) -> dict[int, str]:
    """Texts already recorded in any ``texts-rank*.jsonl`` by a run of the same command (same recipe), by
    item; a line cut by a crash or recorded by another command is ignored."""
    found: dict[int, str] = {}
    for path in sorted(out_dir.glob("texts-rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                i = int(rec["index"])
                if 0 <= i < len(expected.texts) and rec["recipe"] == _as_json(expected.recipe_of(i)):
                    found[i] = str(rec["text"])
            except (ValueError, KeyError, TypeError):
                continue
    return found


def write_texts(pipe: Any, out_dir: Path, prompt: str, n: int, seed: int, sampling: dict[str, Any]) -> Any:
    """This rank's chunks of ``n`` completions, each finished chunk recorded in ``texts-rank<r>.jsonl``
    (completions recorded by a crashed run of the same command are reused, not drawn again); then rank 0
    collects them in item order and removes the records. Returns the whole :class:`TextOutput` on rank 0
    (the single-process texts), None elsewhere; the caller appends it to ``texts.jsonl``."""
    from .text_pipeline import TextOutput

    _check_texts(n)
    whole = TextOutput([""] * n, prompt, text_recipe(pipe, prompt, n, seed, sampling))
    r = distributed.rank()
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_strays(out_dir)
    distributed.barrier()
    done = _text_records(out_dir, whole)
    distributed.barrier()  # every rank has read what a crashed run left before any rank starts its own record
    shard = out_dir / text_shard_name(r)
    shard.write_text("", encoding="utf-8")
    for k, rows in my_chunks(n):
        if all(i in done for i in rows):
            texts = [done[i] for i in rows]
        else:
            texts = _text_chunk(pipe, k, rows, prompt, seed, sampling)
        lines = [{"index": i, "text": t, "recipe": whole.recipe_of(i)} for i, t in zip(rows, texts)]
        with shard.open("a", encoding="utf-8") as f:  # whole lines per finished chunk
            f.write("".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in lines))
    distributed.barrier()
    if not distributed.is_main():
        return None
    found = _text_records(out_dir, whole)
    missing = [i for i in range(n) if i not in found]
    if missing:
        raise DataError(f"{len(missing)} of {n} completions are missing from the rank records in {out_dir}")
    # removed before texts.jsonl grows: a crash in between draws them again rather than appending them twice
    for stale in out_dir.glob("texts-rank*.jsonl"):
        stale.unlink(missing_ok=True)
    return TextOutput([found[i] for i in range(n)], prompt, whole.recipe)


# ----------------------------------------------------------------------------------------------- music
MUSIC_FILES = (".mid", ".mid.json", ".wav", ".png")  # what each piece is saved as, in the order it is written


def _music_chunk(pipe: Any, rows: range, seed: int, options: dict[str, Any]) -> list[Any]:
    """The samples of items ``rows``: one pipeline call, as one process makes it, each sample's recipe
    numbered as in a single call of all items (``index`` counted from item 0, ``batch_seed`` the call's)."""
    out = pipe(n=len(rows), seed=seed + rows.start, **options)
    return [
        replace(s, recipe={**s.recipe, "index": i, "batch_seed": seed}, _wav=None) for i, s in zip(rows, out.samples)
    ]


def sample_music(pipe: Any, n: int, seed: int, **options: Any) -> Any:
    """``pipe(n=n, seed=seed, ...)`` as a :class:`MusicOutput`, sampled chunk by chunk (:func:`chunk_size`
    pieces counted from 0) on one process too, so a piece is drawn in the same batch by any process (the
    pipeline batches rows by their prefix, so which rows share a call matters). For ``n <= chunk_size()``
    this is the one call it always was. Under torchrun the chunks are shared out; rank 0 gets the whole
    output, the other ranks None."""
    from ..modalities.music.pipeline import MusicOutput, MusicSample, clip_to_bars, safe_decode

    recipe = pipe.recipe_for(n, seed, **options)  # every rank checks the request before any sampling
    if not sharded():
        return MusicOutput([s for rows in chunks(n) for s in _music_chunk(pipe, rows, seed, options)], recipe)
    # token ids and recipes travel (a score need not pickle); rank 0 decodes them as the pipeline does
    mine = [(k, [(s.ids, s.recipe) for s in _music_chunk(pipe, rows, seed, options)]) for k, rows in my_chunks(n)]
    parts = distributed.gather_to_main(mine)
    if parts is None:
        return None
    ordered = sorted((p for rank_parts in parts for p in rank_parts), key=lambda p: p[0])
    tok = pipe.tokenizer
    samples = [
        MusicSample(clip_to_bars(safe_decode(tok, ids), int(rec["bars"])), ids, rec)
        for _, chunk in ordered
        for ids, rec in chunk
    ]
    return MusicOutput(samples, recipe)


def music_base(out_dir: Path, seed: int, i: int) -> Path:
    return out_dir / f"sample_{seed + i:06d}"


def _music_done(base: Path, expected: dict[str, Any]) -> bool:
    """True when every file of the piece is there (each is written atomically, the PNG last) and its
    ``.mid.json`` records this request: a piece a crashed run of the same command finished."""
    if not all(base.with_name(base.name + ext).is_file() for ext in MUSIC_FILES):
        return False
    try:
        got = json.loads(base.with_name(base.name + ".mid.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    drawn = ("conditions", "tokens", "finish_reason")  # what the sampling decided, not the request
    return isinstance(got, dict) and {k: v for k, v in got.items() if k not in drawn} == _as_json(expected)


def write_music(pipe: Any, out_dir: Path, n: int, seed: int, options: dict[str, Any]) -> list[Path]:
    """This rank's chunks of ``n`` pieces saved as ``sample_<seed + i>.{mid,mid.json,wav,png}`` (a chunk whose
    pieces are all complete is not sampled again), recorded in ``index-rank<r>.jsonl``; rank 0 merges the
    records into ``index.jsonl``. Returns every piece's files in item order on rank 0, [] elsewhere."""
    whole = pipe.recipe_for(n, seed, **options)
    r = distributed.rank()
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_strays(out_dir)
    distributed.barrier()
    shard = out_dir / shard_name(r)
    shard.write_text("", encoding="utf-8")
    for _, rows in my_chunks(n):
        expected = {i: {**whole, "seed": seed + i, "n": 1, "index": i, "batch_seed": seed} for i in rows}
        todo = [i for i in rows if not _music_done(music_base(out_dir, seed, i), expected[i])]
        if todo:
            for i, sample in zip(rows, _music_chunk(pipe, rows, seed, options)):
                if i in todo:
                    sample.save(music_base(out_dir, seed, i))
        records = []
        for i in rows:
            mid = music_base(out_dir, seed, i).with_suffix(".mid")
            sha = hashlib.sha256(mid.read_bytes()).hexdigest()
            records.append({"index": i, "file": mid.name, "seed": seed + i, "sha256": sha})
        with shard.open("a", encoding="utf-8") as f:  # whole lines per finished chunk
            f.write("".join(json.dumps(rec) + "\n" for rec in records))
    distributed.barrier()
    if not distributed.is_main():
        return []
    index = merge_shards(out_dir, n, distributed.world_size())
    base = [out_dir / Path(rec["file"]).stem for rec in index]
    return [b.with_name(b.name + ext) for b in base for ext in MUSIC_FILES]
