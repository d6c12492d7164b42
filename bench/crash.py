"""Crash safety: kill a run with SIGKILL at random points, resume it, and check nothing was lost or doubled.

    python bench/crash.py [--db sqlite postgres] [--kills 12] [--conversations 4000] [--seed 1]

For each database: store N synthetic conversations, start the stand-in provider with faults (429s,
500s, invalid replies), then start ``judge run`` (litellm grader, cache on) in a subprocess and kill it
with SIGKILL: most kills a random 0-1.5 s after the run has committed progress, some at a random moment
of start-up. Each time, ``judge run --resume RUN_ID`` continues it (a fresh ``judge run`` when the kill
came before the run existed). After the last kill the run is resumed to the end, and the database must
hold, for that run and grader, exactly one judgement per selected conversation and dimension: none
lost, none duplicated, unscored ones with their reason, counters equal to the rows.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Standin, ingest, scratch_database
from verify import run_integrity

PROJECT = "crash"
GRADER = "litellm:openai/standin"


def progress(url: str) -> tuple[int | None, int, str]:
    """The run of the crash project: (id, judgements committed, status), or (None, 0, '') before it exists."""
    from sqlalchemy import select

    from judge.store.db import session
    from judge.store.tables import Project, Run

    with session(url) as db:
        row = db.execute(
            select(Run.id, Run.judged, Run.status)
            .join(Project, Project.id == Run.project_id)
            .where(Project.name == PROJECT)
            .order_by(Run.id.desc())  # type: ignore[union-attr]
        ).first()
    return (int(row[0]), int(row[1]), str(row[2])) if row else (None, 0, "")


def launch(url: str, standin: Standin, run_id: int | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "judge", "run", "--db", url, "--project", PROJECT, "--json"]
    if run_id is None:
        command += ["--grader", GRADER, "--api-base", standin.url, "--batch-size", "5", "--concurrency", "8"]
        command += ["--param", "timeout=20"]
    else:
        command += ["--resume", str(run_id)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def crash_one(kind: str, kills: int, conversations: int, rng: random.Random, scratch: Path) -> dict[str, Any]:
    with scratch_database(kind, scratch) as url:
        ingest(url, conversations, project=PROJECT)
        env = {**os.environ, "OPENAI_API_KEY": "bench", "JUDGE_CACHE_DIR": str(scratch / f"cache-{kind}")}
        faults = {"rate_429": 0.05, "retry_after": 0.2, "rate_500": 0.03, "rate_invalid_json": 0.03}
        killed = {"executing": 0, "starting": 0}
        launches = 0
        with Standin(
            scratch / f"standin-{kind}.jsonl", latency="uniform:0.05:0.3", max_concurrency=8, **faults
        ) as standin:
            while sum(killed.values()) < kills:
                run_id, judged, status = progress(url)
                if status == "completed":
                    break
                process = launch(url, standin, run_id, env)
                launches += 1
                if rng.random() < 0.2:  # somewhere in start-up (imports, run row, first chunk)
                    time.sleep(rng.uniform(0.3, 4.0))
                    where = "starting"
                else:  # once it has committed progress past where it started
                    deadline = time.monotonic() + 60
                    while process.poll() is None and time.monotonic() < deadline:
                        current = progress(url)
                        if current[0] is not None and current[1] > judged:
                            break
                        time.sleep(0.05)
                    time.sleep(rng.uniform(0.0, 1.5))
                    where = "executing"
                if process.poll() is not None:  # it finished (or failed) before the kill
                    if process.returncode not in (0, 1):
                        raise RuntimeError(f"judge run failed: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                    break
                process.kill()
                process.wait()
                killed[where] += 1
                run_now, judged_now, _status = progress(url)
                count = sum(killed.values())
                print(
                    f"  {kind}: kill {count} ({where}), run {run_now}, {judged_now:,} judgements", flush=True
                )
            run_id, _judged, status = progress(url)
            while status != "completed":
                process = launch(url, standin, run_id, env)
                launches += 1
                _out, err = process.communicate(timeout=900)
                if process.returncode not in (0, 1):
                    raise RuntimeError(f"judge run --resume failed: {err.decode()[-2000:]}")
                run_id, _judged, status = progress(url)
        assert run_id is not None
        result = run_integrity(url, run_id, conversations)
        from sqlalchemy import func, select

        from judge.store.db import session
        from judge.store.tables import Project, Run

        with session(url) as db:
            runs = db.execute(
                select(func.count())
                .select_from(Run)
                .join(Project, Project.id == Run.project_id)
                .where(Project.name == PROJECT)
            ).scalar_one()
        result.update(kind=kind, kills=killed, launches=launches, runs=runs)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--conversations", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.db:
            print(f"{kind}: {args.conversations:,} conversations, killing {args.kills} times ...", flush=True)
            r = crash_one(kind, args.kills, args.conversations, rng, Path(folder))
            kills = sum(r["kills"].values())
            good = r["ok"] and r["counters_match"] and r["runs"] == 1 and kills >= args.kills
            ok &= good
            executing, starting = r["kills"]["executing"], r["kills"]["starting"]
            print(
                f"{'PASS' if good else 'FAIL'} {kind}: {kills} kills ({executing} while executing, "
                f"{starting} in start-up), {r['launches']} launches, {r['runs']} run; "
                f"{r['pairs']:,} judgements for {r['selected']:,} conversations "
                f"(expected {r['expected']:,}): {r['missing']} lost, {r['duplicated']} duplicated, "
                f"{r['extra']} extra; {r['unscored']} unscored ({r['unscored_without_reason']} without "
                f"reason, {r['labels_on_unscored']} with labels); run counters {r['counters']} "
                f"{'match' if r['counters_match'] else 'DO NOT match'} the rows",
                flush=True,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
