"""Time the offline grader alone: ``LocalProvider.judge`` on prepared batches, no runner, no storage.

    python bench/local_grader.py [--repeat N] [--gold PATH]

Two workloads: the USS gold dialogues (MultiWOZ) with ``rubrics/travel.yaml``, and the bundled sample
conversations with ``rubrics/default.yaml``; every dimension of the rubric, batches of 256 conversations
prepared with ``judge.batching.whole``, and the signals ``judge.signals.detect`` stores at ingestion (as the
runner and ``bench/gold_uss.py`` build the request). Each repeat runs in a fresh process: loading the models
and one warm-up conversation are not timed, then "cold" is the first pass over the workload (the grader
still learns its words and VADER scores, as in a real run) and "warm" the best of three more passes. The
figures are medians over the repeats, per second of wall time and per CPU second (steadier on a busy
machine). Only timings are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from judge.batching import whole  # noqa: E402
from judge.conversation import Conversation  # noqa: E402
from judge.providers.base import JudgeRequest, Provider, create  # noqa: E402
from judge.rubric import load_rubric  # noqa: E402
from judge.signals import detect  # noqa: E402

GOLD = ROOT.parent / "shared" / "gold" / "uss_mwoz.jsonl"
SAMPLE = ROOT / "judge" / "data" / "sample_conversations.jsonl"
BATCH = 256
GRADER = "local"
WARM_PASSES = 3


def load(path: Path) -> list[Conversation]:
    conversations = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                fields = {key: row[key] for key in ("id", "messages", "metadata") if key in row}
                conversations.append(Conversation.model_validate(fields))
    return conversations


def requests(conversations: list[Conversation], rubric_path: Path) -> list[JudgeRequest]:
    """The batches the runner would send: whole conversations, with their stored signals."""
    rubric = load_rubric(str(rubric_path))
    dimensions = tuple(rubric.dimensions)
    out = []
    for start in range(0, len(conversations), BATCH):
        chunk = conversations[start : start + BATCH]
        signals = {c.id: detect(c) for c in chunk}
        out.append(JudgeRequest(rubric, dimensions, [whole(c) for c in chunk], signals))
    return out


async def judge_all(provider: Provider, batches: list[JudgeRequest]) -> tuple[float, float]:
    """Wall and CPU seconds spent in ``judge`` over every batch, awaited in one event loop as the runner
    does (an ``asyncio.run`` per batch would also time Python formatting the task's result when it ends)."""
    started, cpu = time.perf_counter(), time.process_time()
    for request in batches:
        await provider.judge(request)
    return time.perf_counter() - started, time.process_time() - cpu


def one_pass(provider: Provider, batches: list[JudgeRequest]) -> tuple[float, float]:
    return asyncio.run(judge_all(provider, batches))


def measure(path: Path, rubric_path: Path) -> dict[str, Any]:
    """Conversations per wall and per CPU second of one cold pass (fresh grader) and of the best warm
    pass, in this process."""
    conversations = load(path)
    batches = requests(conversations, rubric_path)
    provider = create(GRADER)
    warm_up = JudgeRequest(batches[0].rubric, batches[0].dimensions, [whole(conversations[0])], {})
    asyncio.run(provider.judge(warm_up))
    cold, cold_cpu = one_pass(provider, batches)
    warm, warm_cpu = min(one_pass(provider, batches) for _ in range(WARM_PASSES))
    n = len(conversations)
    return {"n": n, "cold": n / cold, "cold_cpu": n / cold_cpu, "warm": n / warm, "warm_cpu": n / warm_cpu}


WORKLOADS = {
    "uss_mwoz / travel": (GOLD, ROOT / "rubrics" / "travel.yaml"),
    "samples / default": (SAMPLE, ROOT / "rubrics" / "default.yaml"),
}


def child(gold: Path) -> None:
    found = {}
    for name, (path, rubric) in WORKLOADS.items():
        found[name] = measure(gold if path == GOLD else path, rubric)
    print(json.dumps(found))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes to measure (default 5)")
    parser.add_argument("--gold", type=Path, default=GOLD, help=f"USS gold JSONL (default {GOLD})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.gold)
        return 0
    runs = []
    for _ in range(args.repeat):
        command = [sys.executable, __file__, "--child", "--gold", str(args.gold)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"# local grader alone, batches of {BATCH}, median of {args.repeat} fresh processes\n")
    print("Conversations per second of wall time (per CPU second of the process in brackets).\n")
    print("| workload | conversations | cold pass | warm pass | cold pass, every run |")
    print("|---|---:|---:|---:|---|")
    for name in WORKLOADS:
        median = {key: statistics.median(run[name][key] for run in runs) for key in runs[0][name]}
        every = ", ".join(f"{run[name]['cold']:,.0f}" for run in runs)
        print(
            f"| {name} | {runs[0][name]['n']:,} | {median['cold']:,.0f} ({median['cold_cpu']:,.0f}) | "
            f"{median['warm']:,.0f} ({median['warm_cpu']:,.0f}) | {every} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
