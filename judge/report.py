"""Rich tables for the terminal: the run summary, the five analytics and failure intelligence."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from judge.analytics import DimensionSummary, TopicFailures
from judge.rubric import Analytic
from judge.runner import RunSummary

TITLES = {
    Analytic.topic_intent: "Topic & intent",
    Analytic.sentiment_emotion: "Sentiment & emotion",
    Analytic.business_risk: "Business risk",
    Analytic.implicit_feedback: "Implicit feedback",
    Analytic.failure_cause: "Failure cause",
}


def run_summary(console: Console, summary: RunSummary) -> None:
    n = max(summary.conversations, 1)
    table = Table(title=f"Run {summary.run_id}: {summary.grader} x {summary.rubric} ({summary.status})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("conversations", f"{summary.conversations:,}"),
        ("judgements (conversation x dimension)", f"{summary.judgements:,}"),
        ("cache hits", f"{summary.cache_hits:,}"),
        ("judged fresh", ", ".join(f"{d} {c:,}" for d, c in summary.fresh_by_dimension.items()) or "none"),
        ("unscored", f"{summary.unscored:,}"),
        ("provider calls", f"{summary.calls:,} ({summary.retries:,} retries)"),
        ("prompt tokens / conversation", f"{summary.prompt_tokens / n:,.1f}"),
        ("completion tokens / conversation", f"{summary.completion_tokens / n:,.1f}"),
        ("cost (USD)", f"{summary.cost_usd:,.4f}"),
        ("wall time", f"{summary.wall_s:,.2f} s"),
    ]
    for reason, count in summary.unscored_reasons.items():
        rows.append((f"  unscored: {reason}", f"{count:,}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def analytics(console: Console, summaries: list[DimensionSummary], top: int = 8) -> None:
    for analytic, title in TITLES.items():
        group = [s for s in summaries if s.analytic is analytic]
        if not group:
            continue
        table = Table(title=title, title_justify="left")
        table.add_column("dimension")
        table.add_column("label")
        table.add_column("conversations", justify="right")
        table.add_column("share", justify="right")
        for summary in group:
            shown = [c for c in summary.labels if c.conversations][:top]
            note = f" ({summary.unscored} unscored)" if summary.unscored else ""
            for n, count in enumerate(shown or []):
                table.add_row(
                    summary.dimension + note if n == 0 else "",
                    count.label,
                    f"{count.conversations:,}",
                    f"{count.share:.0%}",
                )
            if not shown:
                table.add_row(summary.dimension + note, "(none)", "0", "")
            table.add_section()
        console.print(table)


def failures(console: Console, topics: list[TopicFailures], top: int = 10) -> None:
    table = Table(
        title="Failure intelligence: topics ranked by volume x failure rate",
        caption="failed = given a failure cause or negative implicit feedback; "
        "example conversations: GET /v1/analytics/failures",
        title_justify="left",
    )
    table.add_column("topic", no_wrap=True)
    for name in ("conv.", "failed", "rate"):
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    for name in ("causes", "risks", "languages"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for topic in topics[:top]:
        table.add_row(
            topic.topic,
            f"{topic.conversations:,}",
            f"{topic.failed:,}",
            f"{topic.failure_rate:.0%}",
            _top(topic.causes),
            _top(topic.risks),
            _top(topic.languages),
        )
    console.print(table)


def _top(counts: dict[str, int], n: int = 3) -> str:
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return "\n".join(f"{k} {v}" for k, v in ranked) or "-"
