"""``genloop`` with one fault: under torchrun, rank ``GENLOOP_TEST_KILL_RANK`` SIGKILLs itself just before
training step ``GENLOOP_TEST_KILL_STEP`` of the job's first attempt (``TORCHELASTIC_RESTART_COUNT`` 0).

Run as torchrun's script in place of ``-m genloop`` (tests/test_distributed.py). A real SIGKILL: no handler, no
clean-up, exactly what an out-of-memory killer or a lost machine does to a worker.
"""

from __future__ import annotations

import os
import signal
import sys

from genloop.cli.main import main
from genloop.training import engine

_original = engine.learning_rate


def _learning_rate_or_die(cfg, step, progress):  # type: ignore[no-untyped-def]
    if (
        step == int(os.environ["GENLOOP_TEST_KILL_STEP"])
        and os.environ.get("RANK") == os.environ.get("GENLOOP_TEST_KILL_RANK", "1")
        and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    ):
        os.kill(os.getpid(), signal.SIGKILL)
    return _original(cfg, step, progress)


engine.learning_rate = _learning_rate_or_die

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
