"""``genloop train --nproc N``: start N training processes with torchrun's own launcher (not a copy of it).

The command is exactly what a user would type themselves::

    torchrun --standalone --nproc-per-node N [--max-restarts K] -m genloop train ...

and the workers are ordinary ``genloop train`` processes that find torchrun's environment (see
:mod:`genloop.distributed`). For several machines, run torchrun directly with its rendezvous flags
(README, "Scaling out").
"""

from __future__ import annotations

import sys

from .errors import ConfigError, GenLoopError


class Interrupted(GenLoopError):
    """Ctrl-C or SIGTERM reached the launcher (and, through it or the terminal, every process)."""

    exit_code = 130


def torchrun_args(nproc: int, genloop_args: list[str], max_restarts: int = 0) -> list[str]:
    """torchrun's command line (without the program name) for ``genloop <genloop_args>`` on ``nproc`` processes."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if max_restarts < 0:
        raise ConfigError(f"--max-restarts must be >= 0, got {max_restarts}")
    return [
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "-m",
        "genloop",
        *genloop_args,
    ]


def torchrun_command(nproc: int, genloop_args: list[str], max_restarts: int = 0) -> list[str]:
    """The same as a subprocess command: ``python -m torch.distributed.run ...`` (torchrun's module)."""
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(nproc, genloop_args, max_restarts)]


def launch(nproc: int, genloop_args: list[str], max_restarts: int = 0) -> None:
    """Run ``genloop <genloop_args>`` on ``nproc`` local processes under torchrun; returns when all have ended."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    parser = get_args_parser()
    parser.allow_abbrev = False  # else genloop's own --n reads as an ambiguous abbreviation of torchrun's --nnodes
    try:
        run(parser.parse_args(torchrun_args(nproc, genloop_args, max_restarts)))
    except SignalException as e:  # the workers got the signal too: they stop at a step boundary and checkpoint
        raise Interrupted(f"interrupted ({e.sigval.name}); the processes were told to stop and save") from None
    except ChildFailedError as e:
        failures = e.failures
        first = failures[min(failures)] if failures else None
        code = first.exitcode if first is not None else 1
        raise GenLoopError(
            f"{len(failures)} of {nproc} processes failed (exit code {code}); their errors are above"
        ) from None
