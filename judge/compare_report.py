"""A comparison report for people: rich tables in the terminal, and one self-contained HTML page whose
charts (confusion matrices as heat maps, per-label F1 and the headline metrics with their intervals) are
matplotlib images inlined as PNG, so a reviewer can look rather than read and the file travels alone."""

from __future__ import annotations

import base64
import io
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from rich.console import Console
from rich.table import Table

from judge.compare_models import ComparisonReport, DimensionReport
from judge.metrics import Interval, Scores
from judge.resources import PACKAGE_DIR

METRIC_NAMES = {"accuracy": "accuracy", "micro_f1": "micro-F1", "macro_f1": "macro-F1", "kappa": "kappa"}


def interval(value: Interval | None, digits: int = 3) -> str:
    if value is None or value.value is None:
        return "n/a"
    if value.low is None or value.high is None:
        return f"{value.value:.{digits}f}"
    return f"{value.value:.{digits}f} [{value.low:.{digits}f}, {value.high:.{digits}f}]"


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _metrics(dimension: DimensionReport) -> list[str]:
    headline = ["accuracy", "micro_f1", "macro_f1", "kappa"]
    return headline if dimension.kind == "multi" else [m for m in headline if m != "micro_f1"]


def _value(scores: Scores, metric: str) -> Interval | None:
    found: Interval | None = getattr(scores, metric)
    return found


# -- terminal ------------------------------------------------------------------------------------------


def terminal(console: Console, report: ComparisonReport) -> None:
    console.rule(
        f"Comparison {report.id}: gold set {report.gold.name!r} ({report.gold.items:,} conversations); "
        f"{report.confidence:.0%} intervals, {report.method}, {report.resamples:,} resamples, "
        f"seed {report.seed}"
    )
    graders = Table(title="Graders (usage per 1,000 conversations, from stored usage)", title_justify="left")
    for column in (
        "grader",
        "fingerprint",
        "rubric",
        "run",
        "calls now",
        "cached now",
        "calls",
        "prompt tok",
        "compl. tok",
    ):
        graders.add_column(
            column, justify="right" if column not in {"grader", "fingerprint", "rubric"} else "left"
        )
    graders.add_column("cost USD", justify="right")
    graders.add_column("latency s", justify="right")
    for g in report.graders:
        per = g.usage.per_1k
        graders.add_row(
            g.name,
            g.fingerprint[:12],
            f"{g.rubric} v{g.rubric_version} ({g.rubric_hash[:8]})",
            str(g.run_id),
            f"{g.usage.calls_this_comparison:,}",
            f"{g.usage.cached_this_comparison:,}/{g.usage.judgements_this_comparison:,}",
            _number(per["calls"], 1),
            _number(per["prompt_tokens"], 0),
            _number(per["completion_tokens"], 0),
            _number(per["cost_usd"], 4),
            _number(per["latency_s"], 2),
        )
    console.print(graders)
    for dimension in report.dimensions:
        _dimension(console, dimension)
    if report.unlabelled_dimensions:
        _agreement(console, report)
    for note in report.notes:
        console.print(f"[dim]note:[/] {note}")
    if report.gate is not None:
        _gate(console, report)


def _dimension(console: Console, dimension: DimensionReport) -> None:
    scoring = f", scored as {', '.join(dimension.labels)}" if dimension.collapse else ""
    excluded = sum(dimension.excluded.values())
    title = (
        f"{dimension.dimension} ({dimension.kind}-label, gold field {dimension.gold_field!r}{scoring}): "
        f"{dimension.gold_items:,} gold items, {excluded:,} excluded (no mapping), {dimension.evaluated:,} "
        f"evaluated"
    )
    evaluation = dimension.evaluation
    if evaluation is None:
        console.print(f"[yellow]{title}: nothing to evaluate[/]")
        return
    table = Table(title=title, title_justify="left")
    table.add_column("grader")
    table.add_column("judged / gold", justify="right")
    for metric in _metrics(dimension):
        table.add_column(METRIC_NAMES[metric], justify="right")
    coverage = {c.grader: c for c in dimension.coverage}
    for scores in evaluation.scores:
        judged = coverage.get(scores.grader)
        table.add_row(
            scores.grader,
            f"{judged.judged:,}/{judged.gold_items:,}" if judged else "baseline",
            *[interval(_value(scores, m)) for m in _metrics(dimension)],
        )
    console.print(table)
    paired = Table(
        title=f"{dimension.dimension}: paired tests (b - a, paired bootstrap; McNemar exact)",
        title_justify="left",
    )
    paired.add_column("a")
    paired.add_column("b")
    for metric in _metrics(dimension):
        paired.add_column(f"Δ {METRIC_NAMES[metric]}", justify="right")
    paired.add_column("McNemar p", justify="right")
    paired.add_column("verdict")
    for test in evaluation.paired:
        cells = [
            ("[bold]" if d.significant else "") + interval(d.delta) + ("[/]" if d.significant else "")
            for d in test.differences
        ]
        paired.add_row(test.a, test.b, *cells, f"{test.mcnemar.p_value:.4f}", test.verdict)
    console.print(paired)
    for pair in evaluation.agreement:
        console.print(
            f"{dimension.dimension}: {pair.a} vs {pair.b} agree: kappa {interval(pair.kappa)}, "
            f"same answer {pair.observed:.1%}"
        )
    labels = Table(title=f"{dimension.dimension}: per-label F1", title_justify="left")
    labels.add_column("label")
    labels.add_column("gold", justify="right")
    for scores in evaluation.scores:
        labels.add_column(scores.grader, justify="right")
    rows = {label.label: label.support for label in evaluation.scores[0].labels}
    for name, support in rows.items():
        cells = []
        for scores in evaluation.scores:
            found = next((x for x in scores.labels if x.label == name), None)
            cells.append(interval(found.f1, 2) if found else "n/a")
        labels.add_row(name, str(support), *cells)
    console.print(labels)


def _agreement(console: Console, report: ComparisonReport) -> None:
    table = Table(
        title="Grader-versus-grader agreement where the gold set has no label", title_justify="left"
    )
    for column in ("dimension", "a", "b", "kappa", "same answer", "n"):
        table.add_column(column, justify="right" if column in {"kappa", "same answer", "n"} else "left")
    for dimension in report.unlabelled_dimensions:
        for pair in dimension.agreement:
            table.add_row(
                dimension.dimension, pair.a, pair.b, interval(pair.kappa), f"{pair.observed:.1%}", str(pair.n)
            )
    if table.row_count:
        console.print(table)


def _gate(console: Console, report: ComparisonReport) -> None:
    gate = report.gate
    assert gate is not None
    table = Table(
        title=f"Release gate {gate.spec!r}: candidate {gate.candidate} vs baseline {gate.baseline}",
        title_justify="left",
    )
    for column in ("dimension", "metric", "baseline", "candidate", "drop [CI]", "limit", "result"):
        table.add_column(column, justify="left" if column in {"dimension", "metric", "result"} else "right")
    for check in gate.checks:
        table.add_row(
            check.dimension,
            check.metric,
            _number(check.baseline),
            _number(check.candidate),
            interval(check.drop),
            f"{check.limit}",
            "[green]pass[/]" if check.passed else "[bold red]FAIL[/]",
        )
    console.print(table)
    console.print("[bold green]gate passed[/]" if gate.passed else "[bold red]gate failed[/]")


# -- HTML ----------------------------------------------------------------------------------------------


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _heatmap(
    title: str, rows: list[str], columns: list[str], matrix: list[list[int]], axes_names: str
) -> str:
    """Counts in their cells, shaded by their share of the row: how each gold label's items ended up."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shade = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure = Figure(figsize=(max(3.5, 0.42 * len(columns) + 2.2), max(2.6, 0.36 * len(rows) + 1.4)))
    axes = figure.subplots()
    axes.imshow(shade, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(range(len(columns)), labels=columns, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(len(rows)), labels=rows, fontsize=7)
    for (i, j), value in np.ndenumerate(counts):
        if value:
            color = "white" if shade[i, j] > 0.6 else "black"
            axes.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=6, color=color)
    y_name, x_name = axes_names.split("/")
    axes.set_xlabel(x_name)
    axes.set_ylabel(y_name)
    axes.set_title(title, fontsize=9)
    return _png(figure)


def _f1_chart(dimension: DimensionReport) -> str:
    import numpy as np
    from matplotlib.figure import Figure

    assert dimension.evaluation is not None
    scores = dimension.evaluation.scores
    labels = [label.label for label in scores[0].labels]
    if not labels:
        return ""
    height = 0.8 / len(scores)
    figure = Figure(figsize=(7.5, max(2.5, 0.28 * len(labels) * len(scores) + 1)))
    axes = figure.subplots()
    for k, grader in enumerate(scores):
        found = {label.label: label.f1 for label in grader.labels}
        values = np.array([found[label].value or 0.0 if label in found else 0.0 for label in labels])
        low = np.array(
            [
                found[label].low if label in found and found[label].low is not None else np.nan
                for label in labels
            ]
        )
        high = np.array(
            [
                found[label].high if label in found and found[label].high is not None else np.nan
                for label in labels
            ]
        )
        errors = np.vstack([np.nan_to_num(values - low), np.nan_to_num(high - values)])
        positions = np.arange(len(labels)) + k * height
        axes.barh(positions, values, height=height, xerr=errors, capsize=2, label=grader.grader)
    axes.set_yticks(np.arange(len(labels)) + height * (len(scores) - 1) / 2, labels=labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("F1 (bars: 95% bootstrap interval)")
    axes.legend(fontsize=7, loc="lower right")
    axes.set_title(f"{dimension.dimension}: per-label F1", fontsize=9)
    return _png(figure)


def _headline_chart(dimension: DimensionReport) -> str:
    from matplotlib.figure import Figure

    assert dimension.evaluation is not None
    metrics = _metrics(dimension)
    figure = Figure(figsize=(2.6 * len(metrics), 0.35 * len(dimension.evaluation.scores) + 1.3))
    axes_list = figure.subplots(1, len(metrics), sharey=True)
    names = [s.grader for s in dimension.evaluation.scores]
    for axes, metric in zip(axes_list, metrics, strict=True):
        for row, scores in enumerate(dimension.evaluation.scores):
            value = _value(scores, metric)
            if value is None or value.value is None:
                continue
            low = value.value - value.low if value.low is not None else 0.0
            high = value.high - value.value if value.high is not None else 0.0
            axes.errorbar(value.value, row, xerr=[[low], [high]], fmt="o", capsize=3)
        axes.set_title(METRIC_NAMES[metric], fontsize=9)
        lows = [
            v.low if v.low is not None else v.value
            for s in dimension.evaluation.scores
            if (v := _value(s, metric)) and v.value is not None
        ]
        axes.set_xlim(min([0.0, *lows]) - 0.05, 1.02)
        axes.grid(axis="x", alpha=0.3)
    axes_list[0].set_yticks(range(len(names)), labels=names, fontsize=7)
    axes_list[0].invert_yaxis()
    return _png(figure)


def html(report: ComparisonReport) -> str:
    """The report as one HTML page with its charts inlined."""
    charts: dict[str, dict[str, Any]] = {}
    for dimension in report.dimensions:
        if dimension.evaluation is None:
            continue
        single = dimension.kind == "single"
        confusion = [  # multi-label: TP, FN, FP per label (true negatives would drown the colours)
            _heatmap(
                f"{dimension.dimension}: {s.grader}",
                s.confusion.rows,
                s.confusion.columns if single else s.confusion.columns[:3],
                s.confusion.matrix if single else [row[:3] for row in s.confusion.matrix],
                "gold/predicted" if single else "label/outcome",
            )
            for s in dimension.evaluation.scores
            if s.confusion.rows
        ]
        charts[dimension.dimension] = {
            "headline": _headline_chart(dimension),
            "f1": _f1_chart(dimension),
            "confusion": confusion,
        }
    environment = Environment(
        loader=FileSystemLoader(PACKAGE_DIR / "templates"), autoescape=select_autoescape(default=True)
    )
    template = environment.get_template("compare_report.html.j2")
    return template.render(
        r=report,
        charts=charts,
        names=METRIC_NAMES,
        metrics=_metrics,
        ci=interval,
        num=_number,
        cover=lambda d, g: next((c for c in d.coverage if c.grader == g), None),
        label=lambda s, name: next(x for x in s.labels if x.label == name),
    )
