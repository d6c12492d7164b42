"""One judge run in its own interpreter, so its CPU time and peak memory are its own.

Reads a JSON spec on stdin: ``url``, ``options`` (a ``RunOptions``), ``cache_dir`` (absent: no cache)
and optionally ``profile`` (a file for a pyinstrument text profile of the run); or ``runs``, a list of
such specs run one after the other. Prints one JSON line: the run summary, wall and CPU seconds of
``execute`` alone (start-up and imports excluded), and the process's peak RSS (``runs``: a list).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    spec = json.loads(sys.stdin.read())
    if "runs" in spec:  # several runs one after the other, start-up paid once
        result: dict[str, object] = {"runs": [run(one) for one in spec["runs"]]}
    else:
        result = run(spec)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from judge.cache import DiskVerdictCache, NoCache, VerdictCache
    from judge.runner import Runner, RunOptions
    from judge.store.db import session

    cache: VerdictCache = DiskVerdictCache(Path(spec["cache_dir"])) if spec.get("cache_dir") else NoCache()
    options = RunOptions.model_validate(spec["options"])
    with session(spec["url"]) as db:
        runner = Runner(db, options, cache=cache)
        mode = getattr(runner.provider, "mode", None)
        if mode is not None:  # import litellm and instructor now: seconds that are start-up, not the run
            from judge.providers.litellm import _client

            _client(mode)
        if runner.counts_tokens:
            from judge.batching import encoding

            encoding()
        if spec.get("warm"):  # load the grader's models on one conversation: start-up, not the run
            from judge.batching import whole
            from judge.conversation import Conversation
            from judge.providers.base import JudgeRequest

            sample = Conversation.model_validate(
                {"id": "warm", "messages": [{"role": "user", "content": "hi"}]}
            )
            request = JudgeRequest(runner.rubric, tuple(runner.dimensions), [whole(sample)], {})
            asyncio.run(runner.provider.judge(request))
        started = runner.start()
        profiler = None
        if spec.get("profile"):
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.002, async_mode="disabled")
            profiler.start()
        cpu, wall = time.process_time(), time.perf_counter()
        summary = asyncio.run(runner.execute(started))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profiler is not None:
            profiler.stop()
            target = Path(spec["profile"])
            target.write_text(profiler.output_text(show_all=False, color=False), encoding="utf-8")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "summary": summary.model_dump(mode="json"),
        "wall_s": wall,
        "cpu_s": cpu,
        "storage_cpu_s": runner.storage_cpu_s,
        "peak_rss_mb": peak,
    }


if __name__ == "__main__":
    raise SystemExit(main())
