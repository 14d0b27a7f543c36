"""Sharded image generation and evaluation under ``torchrun``: N processes write what one process writes.

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
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from .. import distributed
from ..data.image_io import read_recipe, save_png
from ..errors import ConfigError, DataError, GenLoopError
from ..serialization import remove_strays, write_text
from .pipelines import ImageOutput

CHUNK = 256  # the pipelines' default batch size: a chunk is one batch of a single-process call
INDEX = "index.jsonl"  # the merged record of a sharded generation, one line per sample in item order
MAX_SHARDED = 100_000  # images a sharded generate may write (one process: the writer's 10 000)
GRID_MAX = 10_000  # the grid shows the first this many (all of them for any n one process accepts)


def refuse(what: str) -> None:
    """A one-line error for work that is not sharded yet (text and music): every rank stops the same way."""
    if distributed.launched().world_size > 1:
        raise ConfigError(
            f"{what} does not run on several processes yet (image runs do); run it without torchrun or --nproc"
        )


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


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0, in rank order (None elsewhere); objects may differ in size, which
    :func:`genloop.distributed.gather_rows` does not allow."""
    if not distributed.active():
        return [obj]
    box: list[Any] | None = [None] * distributed.world_size() if distributed.is_main() else None
    dist.gather_object(obj, box, dst=0)
    return box


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
    parts = gather_to_main(mine)
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
                save_png(paths[i], out.tensors[i - rows.start], item_recipe(whole, i, labels))
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
