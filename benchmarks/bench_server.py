"""Load on the studio server from a second process, on loopback: SQLite against PostgreSQL in one run.

For each database backend a fresh ``genloop serve`` (with its worker) is started on 127.0.0.1 over a run
store holding one tiny VAE; ``--clients`` concurrent clients then loop for ``--seconds``, each request
picked from a fixed mix: submit a one-image generation job (POST /v1/generations), read a job
(GET /v1/jobs/{id}), list the gallery (GET /v1/generations), rate a generation (POST .../ratings),
health (GET /v1/health). Recorded per backend: sustained requests/s, p50/p99 latency per route and
overall, 429s (the bounded queue saying no, with Retry-After, which is not a loss), and — after the
worker drains the queue — the audit: every accepted job succeeded exactly once (attempts == 1), each
produced exactly one generation, and no generation exists that no job accounts for. Zero lost, zero
duplicated, or the run says otherwise.

    python benchmarks/bench_server.py                    # ~3 minutes; PostgreSQL via scripts/test-postgres.sh
    python benchmarks/bench_server.py --seconds 10 --clients 8 --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "server.json"
TINY_VAE = [
    "data.image_size=8",
    "train.batch_size=16",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.sample_every=0",
    "model.z_dim=4",
    "model.width=8",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


async def client_loop(
    c: httpx.AsyncClient, run_id: str, until: float, rng: random.Random, lat: dict, jobs: list, gens: list, counts: dict
) -> None:
    while time.perf_counter() < until:
        r = rng.random()
        t0 = time.perf_counter()
        if r < 0.25:
            route = "POST /v1/generations"
            resp = await c.post("/v1/generations", json={"run_id": run_id, "n": 1, "seed": rng.randrange(10**6)})
            if resp.status_code == 202:
                jobs.append(resp.json()["id"])
            elif resp.status_code == 429:
                counts["429"] += 1
        elif r < 0.5 and jobs:
            route = "GET /v1/jobs/{id}"
            resp = await c.get(f"/v1/jobs/{rng.choice(jobs)}")
            if resp.status_code == 200 and resp.json()["result"]:
                gens.extend(resp.json()["result"]["generation_ids"])
        elif r < 0.75:
            route = "GET /v1/generations"
            resp = await c.get("/v1/generations", params={"limit": 20})
        elif r < 0.9 and gens:
            route = "POST /v1/generations/{id}/ratings"
            resp = await c.post(f"/v1/generations/{rng.choice(gens)}/ratings", json={"stars": rng.randint(1, 5)})
        else:
            route = "GET /v1/health"
            resp = await c.get("/v1/health")
        dt = time.perf_counter() - t0
        if resp.status_code >= 500:
            counts["5xx"] += 1
        lat.setdefault(route, []).append(dt)


async def load(base: str, run_id: str, clients: int, seconds: float, seed: int) -> dict:
    lat: dict[str, list[float]] = {}
    jobs: list[str] = []
    gens: list[str] = []
    counts = {"429": 0, "5xx": 0}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as c:
        t0 = time.perf_counter()
        until = t0 + seconds
        await asyncio.gather(
            *(client_loop(c, run_id, until, random.Random(seed + i), lat, jobs, gens, counts) for i in range(clients))
        )
        wall = time.perf_counter() - t0
    total = sum(len(v) for v in lat.values())
    every = [x for v in lat.values() for x in v]
    return {
        "requests": total,
        "seconds": round(wall, 2),
        "requests_per_s": round(total / wall, 1),
        "p50_ms": round(1000 * pct(every, 0.5), 2),
        "p99_ms": round(1000 * pct(every, 0.99), 2),
        "routes": {
            k: {"n": len(v), "p50_ms": round(1000 * pct(v, 0.5), 2), "p99_ms": round(1000 * pct(v, 0.99), 2)}
            for k, v in sorted(lat.items())
        },
        "accepted_jobs": len(jobs),
        "rejected_429": counts["429"],
        "server_errors_5xx": counts["5xx"],
        "job_ids": jobs,
    }


def audit(base: str, job_ids: list[str], timeout: float) -> dict:
    """Wait for the queue to drain, then account for every accepted job and every generation."""
    c = httpx.Client(base_url=base, timeout=60)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        h = c.get("/v1/health").json()["queue"]
        if h["queued"] == 0 and h["running"] == 0:
            break
        time.sleep(0.5)
    states, attempts, produced = {}, [], []
    for jid in job_ids:
        j = c.get(f"/v1/jobs/{jid}").json()
        states[j["status"]] = states.get(j["status"], 0) + 1
        attempts.append(j["attempts"])
        produced.extend((j.get("result") or {}).get("generation_ids", []))
    stored = c.get("/v1/generations", params={"limit": 1}).json()["total"]
    return {
        "job_states": states,
        "lost": len(job_ids) - states.get("succeeded", 0),
        "duplicated_runs": sum(a > 1 for a in attempts),
        "generations_from_jobs": len(produced),
        "distinct": len(set(produced)),
        "generations_stored": stored,
        "duplicated_generations": (len(produced) - len(set(produced))) + max(0, stored - len(produced)),
    }


def run_backend(name: str, db_url: str | None, runs: Path, run_id: str, args: argparse.Namespace) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GENLOOP_RUNS_DIR": str(runs)}
    cmd = [
        sys.executable,
        "-m",
        "genloop",
        "serve",
        "--port",
        str(port),
        "--max-queued",
        str(args.max_queued),
        "--workers",
        str(args.workers),
    ]
    if db_url:
        cmd += ["--db", db_url]
    server = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = asyncio.run(load(base, run_id, args.clients, args.seconds, args.seed))
        r["audit"] = audit(base, r.pop("job_ids"), timeout=600)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    print(
        f"{name:10s} {r['requests_per_s']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
        f"jobs {r['accepted_jobs']} (429: {r['rejected_429']})  lost {r['audit']['lost']}  "
        f"duplicated {r['audit']['duplicated_runs'] + r['audit']['duplicated_generations']}",
        flush=True,
    )
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-queued", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import genloop

    tmp = Path(tempfile.mkdtemp(prefix="genloop-bench-server-"))
    runs = tmp / "runs"
    run = genloop.train("vae", "digits", overrides=TINY_VAE, steps=20, runs_dir=runs, progress=False)
    results = {
        "clients": args.clients,
        "seconds": args.seconds,
        "max_queued": args.max_queued,
        "workers": args.workers,
        "mix": "25% POST generations (n=1), 25% GET job, 25% GET gallery, 15% POST rating, 10% GET health",
        "cpu": f"{os.cpu_count()} cores",
        "backends": {},
    }
    for name in args.backends.split(","):
        url = None
        if name == "postgresql":
            pg = (
                os.environ.get("GENLOOP_TEST_PG_URL")
                or subprocess.run(
                    [str(ROOT / "scripts" / "test-postgres.sh"), "start"], capture_output=True, text=True
                ).stdout.strip()
            )
            if not pg:
                print("postgresql: no server (install postgresql); skipped")
                continue
            import psycopg

            dbname = f"genloop_bench_{int(time.time())}"
            admin = pg.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{dbname}"')
            url = pg.rsplit("/", 1)[0] + f"/{dbname}"
        results["backends"][name] = run_backend(name, url, runs if name == "sqlite" else runs, run.id, args)
    if {"sqlite", "postgresql"} <= set(results["backends"]):
        s, p = results["backends"]["sqlite"], results["backends"]["postgresql"]
        results["postgresql_over_sqlite"] = {
            "requests_per_s": round(p["requests_per_s"] / s["requests_per_s"], 3),
            "p99": round(p["p99_ms"] / s["p99_ms"], 3),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
