"""What the benchmarks share: synthetic conversations, scratch databases, the stand-in provider, and
running one judge run in a child process that reports its own CPU time and peak memory."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SAMPLE = ROOT / "judge" / "data" / "sample_conversations.jsonl"
POSTGRES_ADMIN = os.environ.get("JUDGE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PROJECT = "bench"
sys.path.insert(0, str(ROOT))


def synthetic(n: int, seed: int = 7, start: int = 0) -> Iterator[dict[str, Any]]:
    """``n`` distinct conversations made from the bundled samples: new ids, and a reference number in some
    messages so every conversation has its own content hash (the cache cannot confuse them)."""
    rng = random.Random(seed)
    base = [json.loads(line) for line in SAMPLE.open(encoding="utf-8")]
    for i in range(start, start + n):
        template = base[i % len(base)]
        messages = [
            {**m, "content": m["content"] + (f" (ref {i}-{k})" if k % 2 == 0 else "")}
            for k, m in enumerate(template["messages"])
        ]
        if rng.random() < 0.3:
            messages[0] = {**messages[0], "content": messages[0]["content"] + " please"}
        yield {**template, "id": f"bench-{i:07d}", "messages": messages}


def ingest(
    url: str, n: int, seed: int = 7, chunk: int = 1000, start: int = 0, project: str = PROJECT
) -> float:
    """Store ``n`` synthetic conversations through the normal ingestion path; returns the seconds taken."""
    from judge.conversation import Conversation
    from judge.store.conversations import ensure_project, store_conversations
    from judge.store.db import session

    started = time.perf_counter()
    with session(url) as db:
        project_id = ensure_project(db, project).id or 0
        batch: list[Conversation] = []
        for raw in synthetic(n, seed, start):
            batch.append(Conversation.model_validate(raw))
            if len(batch) >= chunk:
                store_conversations(db, project_id, batch)
                batch = []
        if batch:
            store_conversations(db, project_id, batch)
    return time.perf_counter() - started


@contextlib.contextmanager
def scratch_database(kind: str, folder: Path | None = None) -> Iterator[str]:
    """A new empty database, dropped afterwards: a SQLite file, or a database on the PostgreSQL server."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            yield f"sqlite:///{Path(scratch) / 'bench.db'}"
        return
    import psycopg

    name = f"judge_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_ADMIN.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        from judge.store.db import engine

        engine.cache_clear()
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Standin:
    """The stand-in provider (``bench/standin.py``) in a child process, with its request log."""

    def __init__(self, log: Path, **options: Any) -> None:
        self.log = log
        command = [sys.executable, str(BENCH / "standin.py"), "--log", str(log)]
        for key, value in options.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"stand-in did not start: {line!r}")
        self.url = line.removeprefix("listening on ") + "/v1"

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Standin:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def run_child(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Execute one run in a fresh interpreter (``bench/child.py``) and return what it measured."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "child.py")],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
