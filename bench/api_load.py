"""Ingest N conversations through the running HTTP server, judge them, and time every analytics read.

    python bench/api_load.py [--conversations 10000] [--chunk 500] [--db URL] [--reads 20]

Starts ``judge serve`` as a subprocess on a free loopback port (a temporary SQLite file unless --db is
given), creates a project, posts conversations made from the bundled sample (new ids, varied text and
dates), starts a ``local`` run and waits for it, then reads each analytics endpoint ``--reads`` times.
Prints conversations per second for ingestion and judging, and each endpoint's median and p95 latency.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "judge" / "data" / "sample_conversations.jsonl"
ENDPOINTS = ["topics", "sentiment", "risks", "implicit-feedback", "failures"]


def synthetic(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    base = [json.loads(line) for line in SAMPLE.open()]
    out = []
    for i in range(n):
        template = base[i % len(base)]
        day = 1 + rng.randrange(28)
        messages = [
            dict(
                m,
                content=m["content"] + ("" if rng.random() < 0.5 else f" (ref {rng.randrange(10**6)})"),
                timestamp=f"2026-10-{day:02d}T{8 + k % 12:02d}:{rng.randrange(60):02d}:00Z",
            )
            for k, m in enumerate(template["messages"])
        ]
        out.append(dict(template, id=f"load-{i:06d}", messages=messages))
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="judge-bench-"))
    env = {
        **os.environ,
        "DATABASE_URL": args.db or f"sqlite:///{workdir / 'bench.db'}",
        "JUDGE_CACHE_DIR": str(workdir / "cache"),
    }
    judge = [sys.executable, "-m", "judge"]
    key = subprocess.run(
        [*judge, "project", "create", f"bench-{int(time.time())}"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    server = subprocess.Popen(
        [*judge, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        conversations = synthetic(args.conversations)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
            started = time.perf_counter()
            created = 0
            for i in range(0, len(conversations), args.chunk):
                reply = client.post(
                    "/v1/conversations", json={"conversations": conversations[i : i + args.chunk]}
                )
                reply.raise_for_status()
                created += reply.json()["counts"]["created"]
            ingest_s = time.perf_counter() - started
            started = time.perf_counter()
            run = client.post("/v1/runs", json={"grader": "local"}).json()
            while (run := client.get(f"/v1/runs/{run['id']}").json())["status"] == "running":
                time.sleep(0.2)
            judge_s = time.perf_counter() - started
            latencies: dict[str, list[float]] = {}
            for name in ENDPOINTS:
                for params in ({}, {"bucket": "week"}):
                    label = name + (" ?bucket=week" if params else "")
                    for _ in range(args.reads):
                        t = time.perf_counter()
                        client.get(f"/v1/analytics/{name}", params=params).raise_for_status()
                        latencies.setdefault(label, []).append((time.perf_counter() - t) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=30)

    database = "PostgreSQL" if args.db and args.db.startswith("postgres") else "SQLite"
    print(f"\n## API load: {args.conversations:,} conversations, {database}, chunks of {args.chunk}\n")
    print("| measure | value |\n|---|---:|")
    print(
        f"| ingest (POST /v1/conversations) | {created / ingest_s:,.0f} conversations/s ({ingest_s:.1f} s) |"
    )
    print(
        f"| judge (local grader, background run, {run['status']}) | "
        f"{run['conversations'] / judge_s:,.0f} conversations/s ({judge_s:.1f} s) |"
    )
    print("\n| endpoint | median ms | p95 ms |\n|---|---:|---:|")
    for label, values in latencies.items():
        print(f"| /v1/analytics/{label} | {statistics.median(values):.1f} | {percentile(values, 0.95):.1f} |")


if __name__ == "__main__":
    main()
