"""Drive the real runner (litellm + instructor + batching + cache + SQL store) against the stand-in
provider and print, per scenario, throughput against the provider's limit, token efficiency and faults.

    python bench/run.py [--quick | --full] [--db sqlite|postgres] [--only NAME ...] [--profile DIR]

Each run executes in a fresh child process (``bench/child.py``) so its CPU seconds and peak RSS are its
own; wall and CPU cover ``execute`` only (imports and model loading are start-up). The stand-in
(``bench/standin.py``) answers after a latency L with at most C calls in flight, so a run judging K
conversations per call can reach at most K x C / L conversations a second: the "limit" column.
Columns: conversations/s, the limit and the ratio to it; calls, prompt and completion tokens per
conversation; cache hits (judgements), unscored judgements, retries (our retries of failed calls), peak
RSS and CPU seconds per call. ``--quick`` (``make bench``) runs the scenarios in a few minutes and writes
``bench/results/quick.md``; ``--full`` adds 100,000 conversations streamed from the database and mixed
faults, and writes ``bench/results/full.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import BENCH, PROJECT, ROOT, Standin, ingest, run_child, scratch_database

GOLD = ROOT.parent / "shared" / "gold" / "uss_mwoz.jsonl"
MODEL = "litellm:openai/standin"
ANALYTICS = {
    "topic": ["topic"],
    "sentiment & emotion": ["sentiment_start", "sentiment_end", "emotion"],
    "business risk": ["risk"],
    "implicit feedback": ["feedback"],
    "failure cause": ["failure"],
}
"""The default rubric's dimensions by analytic: one call per analytic is the five-call baseline."""


@dataclass
class Scenario:
    name: str
    k: int = 10
    c: int = 32
    latency: float = 1.0
    n: int = 0
    faults: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def limit(self) -> float | None:
        return self.k * self.c / self.latency if self.latency > 0 else None

    def size(self, seconds: float) -> int:
        """Enough conversations to keep the provider busy for ``seconds`` at its limit."""
        if self.n:
            return self.n
        return max(self.k * self.c * 4, int(self.k * self.c / self.latency * seconds))


@dataclass
class Row:
    scenario: str
    conversations: int
    wall_s: float
    limit: float | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cache_hits: int
    unscored: int
    retries: int
    requests: int
    peak_rss_mb: float
    cpu_s: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.conversations / self.wall_s if self.wall_s else 0.0

    def cells(self) -> list[str]:
        n = max(self.conversations, 1)
        limit = f"{self.limit:,.0f}" if self.limit else "none (CPU)"
        ratio = f"{self.rate / self.limit:.0%}" if self.limit else "-"
        per_call = f"{self.cpu_s / self.calls * 1000:.1f} ms" if self.calls else "-"
        return [
            self.scenario,
            f"{self.conversations:,}",
            f"{self.wall_s:.2f}",
            f"{self.rate:,.0f}",
            limit,
            ratio,
            f"{self.calls / n:.2f}",
            f"{self.prompt_tokens / n:,.0f}",
            f"{self.completion_tokens / n:,.0f}",
            f"{self.cache_hits:,}",
            f"{self.unscored:,}",
            f"{self.retries:,}",
            f"{self.peak_rss_mb:,.0f}",
            per_call,
            self.note,
        ]


HEADER = [
    "scenario",
    "conversations",
    "wall s",
    "conv/s",
    "limit KxC/L",
    "ratio",
    "calls/conv",
    "prompt tok/conv",
    "completion tok/conv",
    "cache hits",
    "unscored",
    "retries",
    "peak RSS MB",
    "CPU/call",
    "note",
]


class Bench:
    def __init__(self, url: str, scratch: Path, profile: Path | None) -> None:
        self.url = url
        self.scratch = scratch
        self.profile = profile
        self.rows: list[Row] = []
        self.checks: list[tuple[str, bool, str]] = []
        self._logs = 0

    def standin(self, scenario: Scenario) -> Standin:
        self._logs += 1
        log = self.scratch / f"standin-{self._logs}.jsonl"
        latency = scenario.latency
        return Standin(log, latency=latency, max_concurrency=scenario.c, seed=self._logs, **scenario.faults)

    def run(
        self,
        scenario: Scenario,
        standin: Standin | None,
        n: int,
        *,
        label: str | None = None,
        record: bool = True,
        **choices: Any,
    ) -> tuple[Row, dict[str, Any]]:
        """One run of ``n`` conversations in a fresh process (``choices``: see ``_spec``)."""
        name = label or scenario.name
        before = len(standin.requests()) if standin is not None else 0
        result = run_child(self._spec(scenario, standin, n, name, **choices))
        requests = (len(standin.requests()) - before) if standin is not None else 0
        return self._row(scenario, name, result, requests, record, choices.get("grader", MODEL)), result

    def series(
        self, scenario: Scenario, standin: Standin, n: int, runs: dict[str, dict[str, Any]]
    ) -> list[Row]:
        """Several runs one after the other in one process (start-up paid once): label -> choices. Not
        recorded in the table; peak RSS is the process's over all of them."""
        specs = [self._spec(scenario, standin, n, label, **choices) for label, choices in runs.items()]
        results = run_child({"runs": specs})["runs"]
        return [
            self._row(scenario, label, result, 0, False, MODEL)
            for label, result in zip(runs, results, strict=True)
        ]

    def _spec(
        self,
        scenario: Scenario,
        standin: Standin | None,
        n: int,
        name: str,
        *,
        dimensions: list[str] | None = None,
        k: int | None = None,
        cache: Path | None = None,
        grader: str = MODEL,
        project: str = PROJECT,
        rubric: str = "default",
    ) -> dict[str, Any]:
        options: dict[str, Any] = {
            "rubric": rubric,
            "grader": grader,
            "batch_size": k or scenario.k or None,
            "concurrency": scenario.c,
            "limit": n,
            "project": project,
            "dimensions": dimensions,
        }
        if standin is not None:
            timeout = max(30.0, 10 * scenario.latency)
            options["grader_options"] = {"api_base": standin.url, "api_key": "bench", "timeout": timeout}
        spec: dict[str, Any] = {
            "url": self.url,
            "options": options,
            "cache_dir": str(cache) if cache else None,
            "warm": grader == "local",
        }
        if self.profile is not None:
            spec["profile"] = str(self.profile / f"{name.replace(' ', '_').replace('/', '-')}.txt")
        return spec

    def _row(
        self, scenario: Scenario, name: str, result: dict[str, Any], requests: int, record: bool, grader: str
    ) -> Row:
        summary = result["summary"]
        row = Row(
            scenario=name,
            conversations=summary["conversations"],
            wall_s=result["wall_s"],
            limit=scenario.limit if grader == MODEL else None,
            calls=summary["calls"],
            prompt_tokens=summary["prompt_tokens"],
            completion_tokens=summary["completion_tokens"],
            cache_hits=summary["cache_hits"],
            unscored=summary["unscored"],
            retries=summary["retries"],
            requests=requests,
            peak_rss_mb=result["peak_rss_mb"],
            cpu_s=result["cpu_s"],
            note=scenario.note,
        )
        if record:
            self.rows.append(row)
        print(_line(row), flush=True)
        return row

    def check(self, what: str, ok: bool, detail: str) -> None:
        self.checks.append((what, ok, detail))
        print(f"  {'PASS' if ok else 'FAIL'}  {what}: {detail}", flush=True)


def _line(row: Row) -> str:
    cells = row.cells()
    return f"{cells[0]:<28} " + "  ".join(f"{h}={c}" for h, c in zip(HEADER[1:], cells[1:], strict=True))


# --- scenarios ------------------------------------------------------------------------------------------


def throughput(bench: Bench, seconds: float) -> dict[str, Row]:
    """K, C and L varied one at a time around K=10, C=32, L=1 s (no faults, no cache)."""
    grid = [Scenario("K=10 C=32 L=1s", note="the reference")]
    grid += [Scenario(f"K={k} C=32 L=1s", k=k) for k in (1, 5, 20)]
    grid += [Scenario(f"K=10 C={c} L=1s", c=c) for c in (8, 64)]
    grid += [Scenario(f"K=10 C=32 L={latency:g}s", latency=latency, n=3000) for latency in (0.2, 0.0)]
    rows = {}
    for scenario in grid:
        with bench.standin(scenario) as standin:
            rows[scenario.name], _ = bench.run(scenario, standin, scenario.size(seconds))
    reference = rows["K=10 C=32 L=1s"]
    bench.check(
        "C=32, L=1 s, K=10 reaches 85% of the limit",
        reference.rate >= 0.85 * 320,
        f"{reference.rate:,.0f} conv/s of 320 ({reference.rate / 320:.0%})",
    )
    return rows


def rate_limited(bench: Bench, seconds: float, reference: Row | None) -> None:
    scenario = Scenario(
        "429 x 20%, Retry-After 1s", faults={"rate_429": 0.2, "retry_after": 1}, note="20% of calls get 429"
    )
    n = scenario.size(seconds)
    if reference is None or reference.conversations != n:
        with bench.standin(Scenario("K=10 C=32 L=1s")) as standin:
            reference, _ = bench.run(Scenario("K=10 C=32 L=1s"), standin, n, label="fault-free (same size)")
    with bench.standin(scenario) as standin:
        row, result = bench.run(scenario, standin, n)
        log = standin.requests()
    refused = sum(1 for r in log if r["status"] == 429)
    labelled = result["summary"]["judgements"] == n * 7 and row.unscored == 0
    bench.check(
        "20% 429s: every conversation labelled",
        labelled,
        f"{row.unscored} unscored, {refused} requests got 429",
    )
    ratio = row.wall_s / reference.wall_s
    bench.check(
        "20% 429s: wall time at most 1.5x fault-free",
        ratio <= 1.5,
        f"{ratio:.2f}x ({row.wall_s:.1f} s vs {reference.wall_s:.1f} s)",
    )


def invalid_replies(bench: Bench, n: int) -> None:
    """5% invalid replies (half not JSON, half breaking the schema) and a few conversations whose every
    reply is invalid, so some end unscored; then a re-run with the same cache must send exactly those."""
    from verify import run_integrity

    scenario = Scenario(
        "5% invalid replies",
        latency=0.2,
        faults={"rate_invalid_json": 0.025, "rate_bad_schema": 0.025, "rate_poison": 0.002},
        note="re-asked, split, else unscored; 0.2% of conversations always invalid",
    )
    cache = bench.scratch / "cache-invalid"
    with bench.standin(scenario) as standin:
        first, result = bench.run(scenario, standin, n, cache=cache)
        integrity = run_integrity(bench.url, result["summary"]["run_id"], n)
        unscored_ids = integrity["unscored_conversations"]
        before = len(standin.requests())
        again, second = bench.run(scenario, standin, n, cache=cache, label="5% invalid: re-run")
        sent = {cid for r in standin.requests()[before:] for cid in r["ids"]}
    bench.check(
        "5% invalid: each conversation x dimension stored once, labelled or unscored with a reason",
        integrity["ok"],
        f"{integrity['pairs']:,} judgements for {n:,} x 7, {integrity['missing']} lost, "
        f"{integrity['duplicated']} duplicated, {integrity['unscored']} unscored "
        f"({integrity['unscored_without_reason']} without reason), {integrity['labelled']} labelled",
    )
    bench.check(
        "5% invalid: the re-run judges only the unscored ones",
        bool(unscored_ids) and sent == set(unscored_ids) and again.cache_hits >= integrity["labelled"],
        f"re-run sent {len(sent)} conversations: exactly the {len(unscored_ids)} with unscored judgements; "
        f"{again.cache_hits:,} judgements from the cache",
    )
    del first, second


def cached(bench: Bench, n: int) -> None:
    scenario = Scenario("cache re-run", k=20, latency=0.0, note="second run, same grader and rubric")
    cache = bench.scratch / "cache-rerun"
    with bench.standin(scenario) as standin:
        bench.run(scenario, standin, n, cache=cache, label="cache fill (L=0, K=20)")
        row, _ = bench.run(scenario, standin, n, cache=cache, label=f"cache re-run of {n:,}")
    bench.check(
        f"cache re-run of {n:,}: zero calls and at least 5,000 conv/s",
        row.calls == 0 and row.rate >= 5000,
        f"{row.calls} calls, {row.rate:,.0f} conv/s",
    )


def tokens(bench: Bench, n: int) -> None:
    """K=10 with every dimension in one call, against K=1 with one call per analytic (five calls) and
    with one call per dimension (seven), on the same conversations."""
    scenario = Scenario("tokens", latency=0.0)
    with bench.standin(scenario) as standin:
        ours, _ = bench.run(scenario, standin, n, label="tokens: K=10, all dimensions")
        per_analytic = bench.series(
            scenario,
            standin,
            n,
            {f"tokens: K=1, {name}": {"k": 1, "dimensions": dims} for name, dims in ANALYTICS.items()},
        )
        per_dimension = bench.series(
            scenario,
            standin,
            n,
            {f"tokens: K=1, {d}": {"k": 1, "dimensions": [d]} for dims in ANALYTICS.values() for d in dims},
        )
    five = sum(r.prompt_tokens for r in per_analytic) / n
    seven = sum(r.prompt_tokens for r in per_dimension) / n
    mine = ours.prompt_tokens / n
    bench.rows.append(_total("tokens: K=1, one call per analytic (5)", per_analytic, n))
    bench.rows.append(_total("tokens: K=1, one call per dimension (7)", per_dimension, n))
    bench.check(
        "K=10 prompt tokens per conversation at most 1/6 of one call per analytic (5 calls, K=1)",
        mine * 6 <= five,
        f"{mine:,.0f} vs {five:,.0f} tokens/conv (1/{five / mine:.1f}); one call per dimension: "
        f"{seven:,.0f} (1/{seven / mine:.1f})",
    )


def _total(name: str, rows: list[Row], n: int) -> Row:
    return Row(
        scenario=name,
        conversations=n,
        wall_s=sum(r.wall_s for r in rows),
        limit=None,
        calls=sum(r.calls for r in rows),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
        cache_hits=0,
        unscored=sum(r.unscored for r in rows),
        retries=sum(r.retries for r in rows),
        requests=sum(r.requests for r in rows),
        peak_rss_mb=max(r.peak_rss_mb for r in rows),
        cpu_s=sum(r.cpu_s for r in rows),
        note="sum of the runs",
    )


def local(bench: Bench) -> None:
    if not GOLD.is_file():
        print(f"  skip  local grader: {GOLD} not found")
        return
    from judge.conversation import Conversation
    from judge.store.conversations import ensure_project, store_conversations
    from judge.store.db import session

    conversations = []
    for line in GOLD.open(encoding="utf-8"):
        if line.strip():
            row = json.loads(line)
            meta = {"source": row["source"]}
            conversations.append(Conversation(id=row["id"], messages=row["messages"], metadata=meta))
    with session(bench.url) as db:
        project_id = ensure_project(db, "uss").id or 0
        for start in range(0, len(conversations), 500):
            store_conversations(db, project_id, conversations[start : start + 500])
    scenario = Scenario(
        "local grader, USS gold",
        k=0,  # the grader's own batch size, as `judge run --grader local` uses
        c=4,
        latency=0.0,
        note="travel rubric, 6 dimensions, no cache",
    )
    row, _ = bench.run(
        scenario,
        None,
        len(conversations),
        grader="local",
        project="uss",
        rubric=str(ROOT / "rubrics" / "travel.yaml"),
    )
    bench.check(
        "local grader: at least 1,000 conversations/s on uss_mwoz.jsonl",
        row.rate >= 1000,
        f"{row.rate:,.0f} conv/s ({row.conversations} dialogues in {row.wall_s:.2f} s)",
    )


def streamed(bench: Bench, n: int) -> None:
    scenario = Scenario(f"{n:,} streamed", k=20, c=32, latency=0.0, note="L=0, K=20: CPU-bound")
    print(f"ingesting {n:,} more conversations ...", flush=True)
    took = ingest(bench.url, n, start=10_000_000, project="stream")
    print(f"  ingested in {took:.0f} s ({n / took:,.0f} conv/s)", flush=True)
    with bench.standin(scenario) as standin:
        row, _ = bench.run(scenario, standin, n, project="stream")
    bench.check(
        f"{n:,} conversations streamed: peak RSS under 600 MB",
        row.peak_rss_mb < 600 and row.conversations == n,
        f"{row.peak_rss_mb:,.0f} MB, {row.conversations:,} conversations",
    )


def mixed_faults(bench: Bench, seconds: float) -> None:
    scenario = Scenario(
        "5% 500s + 1% timeouts",
        faults={"rate_500": 0.05, "rate_timeout": 0.01, "hang": 60},
        note="timeout 30 s, retried",
    )
    with bench.standin(scenario) as standin:
        row, result = bench.run(scenario, standin, scenario.size(seconds))
    n = row.conversations
    bench.check(
        "500s and timeouts: every conversation labelled",
        row.unscored == 0 and result["summary"]["judgements"] == n * 7,
        f"{row.unscored} unscored, {row.retries} retries",
    )


# --- main -----------------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the scenarios of `make bench` (default)")
    mode.add_argument(
        "--full", action="store_true", help="also 100,000 streamed conversations and mixed faults"
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="throughput, 429, invalid, cache, tokens, local, stream, mixed",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="target length of the throughput runs")
    parser.add_argument(
        "--stream", type=int, default=100_000, help="conversations of the streamed run (--full)"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="write a pyinstrument profile per run here"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="markdown file (default bench/results/<mode>.md)"
    )
    args = parser.parse_args()
    wanted = set(args.only or ["throughput", "429", "invalid", "cache", "tokens", "local"])
    if args.full and args.only is None:
        wanted |= {"stream", "mixed"}
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, scratch_database(args.db) as url:
        scratch = Path(folder)
        bench = Bench(url, scratch, args.profile)
        print(f"database: {args.db}; ingesting 10,000 synthetic conversations ...", flush=True)
        took = ingest(url, 10_000)
        print(f"  ingested in {took:.1f} s ({10_000 / took:,.0f} conv/s)", flush=True)
        rows: dict[str, Row] = {}
        if "throughput" in wanted:
            rows = throughput(bench, args.seconds)
        if "429" in wanted:
            rate_limited(bench, args.seconds, rows.get("K=10 C=32 L=1s"))
        if "invalid" in wanted:
            invalid_replies(bench, 2000)
        if "cache" in wanted:
            cached(bench, 10_000)
        if "tokens" in wanted:
            tokens(bench, 100)
        if "local" in wanted:
            local(bench)
        if "mixed" in wanted:
            mixed_faults(bench, args.seconds)
        if "stream" in wanted:
            streamed(bench, args.stream)
    elapsed = time.perf_counter() - started
    name = "full" if args.full else "quick"
    out = args.out or BENCH / "results" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    checks = "\n".join(f"- {'PASS' if ok else 'FAIL'} {what}: {detail}" for what, ok, detail in bench.checks)
    text = (
        f"# bench/run.py --{name} ({args.db})\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M')}, {elapsed:.0f} s in all; wall and CPU of `execute` only, "
        f"each run in a fresh process on the same machine as the stand-in provider.\n\n"
        f"{table(bench.rows)}\n\n{checks}\n"
    )
    out.write_text(text, encoding="utf-8")
    print("\n" + text)
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if all(ok for _, ok, _ in bench.checks) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
