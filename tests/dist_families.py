"""Under torchrun: train every family a few steps on 2 processes; rank 0 prints {label: run id} as JSON.

One torchrun launch for all of them (start-up is most of the cost of a tiny run). Called by
tests/test_distributed.py with the run store and the plan (its data: a tiny local Hugging Face model, music files).
"""

from __future__ import annotations

import json
import sys

from genloop import api, distributed


def main(runs: str, plan_json: str) -> None:
    plan = json.loads(plan_json)  # {label: [family, data or null, overrides, steps]}
    ids = {}
    for label, (family, data, overrides, steps) in plan.items():
        run = api.train(family, data, overrides=overrides, steps=steps, runs_dir=runs, progress=False)
        ids[label] = run.id
    if distributed.is_main():
        print(json.dumps(ids), flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
