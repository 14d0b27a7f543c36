"""``genloop summarize RUN FILE`` and ``genloop data-to-text RUN FILE``: the text tasks of
:mod:`genloop.modalities.text.tasks` from the command line.

Each reads one input (a text file or ``-`` for standard input; for data-to-text a JSON object) or, given a
``.jsonl`` file, one input per line (``{"document": ...}`` / ``{"data": {...}}``, so a held-out file of task
records works as it is), and prints the output (one per line for ``.jsonl``, as JSON strings). Decoding is
greedy unless ``--temperature`` is given.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError


def _read(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def _records(path: Path, key: str) -> list[Any] | None:
    """The ``key`` value of each line of a ``.jsonl`` file, or None when ``path`` is not one."""
    if path.suffix.lower() != ".jsonl":
        return None
    out = []
    for n, line in enumerate(_read(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or key not in record:
            raise ConfigError(f"{path}:{n}: expected an object with '{key}'")
        out.append(record[key])
    if not out:
        raise ConfigError(f"{path}: no records")
    return out


def _load(run_id: str, runs_dir: Path | None, device: str, checkpoint: str) -> Any:
    from .. import api

    pipe = api.load(run_id, device=device, runs_dir=runs_dir, checkpoint=checkpoint)
    if not hasattr(pipe, "summarize"):
        raise ConfigError(f"{run_id} is not a text run; text tasks need a language model trained on task records")
    return pipe


def _sampling(max_tokens: int, temperature: float | None) -> dict[str, Any]:
    return {"max_tokens": max_tokens, **({} if temperature is None else {"temperature": temperature})}


RUN = typer.Argument(..., help="Run id (or a unique prefix, or the run's folder) of a text run.")
MAX_TOKENS = typer.Option(200, "--max-tokens", help="New tokens per output at most.")
TEMPERATURE = typer.Option(None, "--temperature", help="Sample at this temperature (default: greedy).")
SEED = typer.Option(0, "--seed")
CHECKPOINT = typer.Option("last", "--checkpoint", help="last, or best.")
RUNS_DIR = typer.Option(None, "--runs-dir", help="Run store folder.")
DEVICE = typer.Option("cpu", "--device")


def _answer(inputs: list[Any] | None, single: Any, write: Callable[[Any], str]) -> None:
    """One input: print its output as is. A .jsonl of inputs: one JSON string per line."""
    if inputs is None:
        print(write(single()))
        return
    for value in inputs:
        print(json.dumps(write(value), ensure_ascii=False))


def summarize_command(
    run_id: str = RUN,
    file: Path = typer.Argument(..., help="A text file (or - for standard input), or a .jsonl of {document}."),
    words: int | None = typer.Option(None, "--words", help="Ask for a summary of about this many words."),
    max_tokens: int = MAX_TOKENS,
    temperature: float | None = TEMPERATURE,
    seed: int = SEED,
    checkpoint: str = CHECKPOINT,
    runs_dir: Path | None = RUNS_DIR,
    device: str = DEVICE,
) -> None:
    """Summarise a document with a run trained on {"document", "summary"} records."""
    pipe = _load(run_id, runs_dir, device, checkpoint)
    sampling = _sampling(max_tokens, temperature)
    _answer(
        _records(file, "document"),
        lambda: _read(file),
        lambda doc: pipe.summarize(str(doc), words=words, seed=seed, **sampling),
    )


def data_to_text_command(
    run_id: str = RUN,
    file: Path = typer.Argument(..., help="A JSON object of fields (or - for standard input), or a .jsonl of {data}."),
    max_tokens: int = MAX_TOKENS,
    temperature: float | None = TEMPERATURE,
    seed: int = SEED,
    checkpoint: str = CHECKPOINT,
    runs_dir: Path | None = RUNS_DIR,
    device: str = DEVICE,
) -> None:
    """Write a report from a record of fields with a run trained on {"data", "text"} records."""
    pipe = _load(run_id, runs_dir, device, checkpoint)
    sampling = _sampling(max_tokens, temperature)

    def one() -> Any:
        try:
            return json.loads(_read(file))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{file}: not valid JSON ({e.msg} at line {e.lineno})") from None

    def write(data: Any) -> str:
        if not isinstance(data, dict):
            raise ConfigError(
                f'{file}: the data must be a JSON object of fields, like {{"home": "Ashford", "goals": 2}}'
            )
        return str(pipe.data_to_text(data, seed=seed, **sampling))

    _answer(_records(file, "data"), one, write)


__all__ = ["data_to_text_command", "summarize_command"]
