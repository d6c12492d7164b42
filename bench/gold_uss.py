"""Measure the offline grader against human labels: USS gold dialogues (MultiWOZ), travel rubric.

    python bench/gold_uss.py [--limit N] [--db URL] [--gold PATH] [--rubric travel]

Converts each gold line into a Conversation (id, messages, metadata.source), stores them in a temporary
SQLite database (or --db), judges them with the ``local`` grader through the real runner, then prints:
- conversations per second of the run (and of the grader alone, the rest being signals and storage);
- topic accuracy: a prediction counts when it is one of the dialogue's gold domains (the travel rubric's
  topic ids are the domain names), beside always predicting the most frequent domain;
- satisfaction agreement (accuracy and Cohen's kappa) beside always predicting "neutral".
The gold set has no labels for the other dimensions; they are judged (and timed) but not scored.

Data: USS (Sun et al., "Simulating User Satisfaction for the Evaluation of Task-oriented Dialogue
Systems", SIGIR 2021), MultiWOZ part; every line keeps its ``source``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from judge.batching import prepare  # noqa: E402
from judge.conversation import Conversation  # noqa: E402
from judge.providers.base import JudgeReply, JudgeRequest, Provider, create  # noqa: E402
from judge.rubric import load_rubric  # noqa: E402
from judge.runner import RunOptions, run_once  # noqa: E402
from judge.store.conversations import ensure_project, store_conversations  # noqa: E402
from judge.store.db import session  # noqa: E402
from judge.store.tables import ConversationRecord, Judgement, JudgementLabel  # noqa: E402

GOLD = ROOT.parent / "shared" / "gold" / "uss_mwoz.jsonl"
PROJECT = "uss-gold"
LOCAL_TOKEN_BUDGET = 10_000_000
"""The local grader has no context window: let the runner fill its batches of 256 conversations."""
SATISFACTION = ["dissatisfied", "neutral", "satisfied"]


class Timed:
    """Wraps a provider to time its ``judge`` calls: the grader's share of the run's wall time."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.default_batch_size = getattr(inner, "default_batch_size", 10)
        self.counts_tokens = getattr(inner, "counts_tokens", True)
        self.uses_signals = getattr(inner, "uses_signals", True)
        self.seconds = 0.0

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        started = time.perf_counter()
        try:
            return await self.inner.judge(request)
        finally:
            self.seconds += time.perf_counter() - started


def warm_up(provider: Timed, rubric: str, conversation: Conversation) -> float:
    """Load the grader's models on one conversation, so the run measures judging, not start-up."""
    started = time.perf_counter()
    loaded = load_rubric(rubric)
    request = JudgeRequest(loaded, tuple(loaded.dimensions), [prepare(conversation, 4_000)], {})
    asyncio.run(provider.inner.judge(request))
    return time.perf_counter() - started


def load(path: Path, limit: int | None) -> tuple[list[Conversation], dict[str, dict[str, Any]]]:
    conversations, labels = [], {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            conversations.append(
                Conversation(id=row["id"], messages=row["messages"], metadata={"source": row["source"]})
            )
            labels[row["id"]] = row["labels"]
            if limit is not None and len(conversations) >= limit:
                break
    return conversations, labels


def predictions(db: Session, run_id: int, dimension: str) -> dict[str, str | None]:
    """Conversation id -> its (first) label in ``dimension``; None when the judgement is unscored."""
    query = (
        select(ConversationRecord.external_id, Judgement.status, JudgementLabel.label)
        .join(Judgement, col(Judgement.conversation_id) == col(ConversationRecord.id))
        .join(JudgementLabel, col(JudgementLabel.judgement_id) == col(Judgement.id), isouter=True)
        .where(Judgement.run_id == run_id, Judgement.dimension == dimension)
    )
    found: dict[str, str | None] = {}
    for external_id, status, label in db.exec(query):
        if status == "scored" and found.get(external_id) is None:
            found[external_id] = label
        else:
            found.setdefault(external_id, None)
    return found


def kappa(pairs: list[tuple[str, str]]) -> float:
    """Cohen's kappa of (gold, predicted) pairs: agreement beyond what the two marginals give by chance."""
    n = len(pairs)
    if not n:
        return float("nan")
    observed = sum(g == p for g, p in pairs) / n
    gold, pred = Counter(g for g, _ in pairs), Counter(p for _, p in pairs)
    expected = sum(gold[k] * pred[k] for k in gold) / (n * n)
    return 0.0 if expected == 1 else (observed - expected) / (1 - expected)


def topic_scores(
    topics: dict[str, str | None], labels: dict[str, dict[str, Any]]
) -> tuple[float, float, str, int]:
    gold = {i: set(lab["topic_intent"]["domains"]) for i, lab in labels.items() if _domains(lab)}
    majority, _ = Counter(d for domains in gold.values() for d in domains).most_common(1)[0]
    hits = sum(topics.get(i) in domains for i, domains in gold.items())
    baseline = sum(majority in domains for domains in gold.values())
    return hits / len(gold), baseline / len(gold), majority, len(gold)


def _domains(labels: dict[str, Any]) -> bool:
    topic = labels.get("topic_intent")
    return bool(topic and topic.get("domains"))


def satisfaction_pairs(
    predicted: dict[str, str | None], labels: dict[str, dict[str, Any]]
) -> list[tuple[str, str]]:
    """(gold, predicted) per dialogue with a gold satisfaction; an unscored judgement counts as wrong."""
    pairs = []
    for i, lab in labels.items():
        feedback = lab.get("implicit_feedback") or {}
        if feedback.get("satisfaction"):
            pairs.append((feedback["satisfaction"], predicted.get(i) or "unscored"))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gold", type=Path, default=GOLD, help=f"gold JSONL (default {GOLD})")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N dialogues")
    parser.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--rubric", default=str(ROOT / "rubrics" / "travel.yaml"), help="rubric name or file")
    args = parser.parse_args()

    conversations, labels = load(args.gold, args.limit)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.db or f"sqlite:///{Path(scratch) / 'uss.db'}"
        with session(url) as db:
            project_id = ensure_project(db, PROJECT).id or 0
            for start in range(0, len(conversations), 500):
                store_conversations(db, project_id, conversations[start : start + 500])
            provider = Timed(create("local"))
            loading = warm_up(provider, args.rubric, conversations[0])
            options = RunOptions(
                rubric=args.rubric,
                grader="local",
                project=PROJECT,
                ids=[c.id for c in conversations],
                token_budget=LOCAL_TOKEN_BUDGET,
            )
            started = time.perf_counter()
            summary = asyncio.run(run_once(db, options, provider=provider))
            wall = time.perf_counter() - started
            topics = predictions(db, summary.run_id, "topic")
            satisfaction = predictions(db, summary.run_id, "satisfaction")

    topic_acc, topic_base, majority, topic_n = topic_scores(topics, labels)
    pairs = satisfaction_pairs(satisfaction, labels)
    sat_acc = sum(g == p for g, p in pairs) / len(pairs)
    base_pairs = [(g, "neutral") for g, _ in pairs]
    base_acc = sum(g == p for g, p in base_pairs) / len(pairs)
    n = summary.conversations
    print(f"# USS gold ({args.gold.name}), {n} dialogues, rubric {summary.rubric}, grader {summary.grader}\n")
    print(
        f"- run: {wall:.2f} s, **{n / wall:,.0f} conversations/s** ({summary.judgements:,} judgements, "
        f"{summary.unscored} unscored)"
    )
    print(
        f"- grader alone: {provider.seconds:.2f} s, {n / provider.seconds:,.0f} conversations/s; "
        f"the rest is selection, signals, token counting and storage"
    )
    print(f"- not counted: loading the embedding model and VADER once per process, {loading:.2f} s\n")
    print("| dimension | metric | local grader | majority baseline | n |")
    print("|---|---|---:|---:|---:|")
    print(
        f"| topic | accuracy (one of the gold domains) | {topic_acc:.3f} | {topic_base:.3f} "
        f"(always `{majority}`) | {topic_n} |"
    )
    print(f"| satisfaction | accuracy | {sat_acc:.3f} | {base_acc:.3f} (always `neutral`) | {len(pairs)} |")
    print(f"| satisfaction | Cohen's kappa | {kappa(pairs):.3f} | {kappa(base_pairs):.3f} | {len(pairs)} |")
    print("\nSatisfaction confusion (rows gold, columns predicted):\n")
    print("| gold \\ predicted | " + " | ".join(SATISFACTION) + " |")
    print("|---|" + "---:|" * len(SATISFACTION))
    confusion = Counter(pairs)
    for g in SATISFACTION:
        print(f"| {g} | " + " | ".join(str(confusion[(g, p)]) for p in SATISFACTION) + " |")
    print(
        "\nThe gold set labels only topic and satisfaction; the other dimensions are judged but not scored."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
