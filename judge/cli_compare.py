"""``judge gold import|list`` and ``judge compare``: gold sets and grader comparisons from the terminal.

Exit codes as for the rest of ``judge`` (0 done; 1 some gold lines rejected; 2 the input is wrong), and
3 when ``--gate`` fails: the candidate is significantly worse than the baseline beyond a rule's limit,
named by dimension and metric, so a CI job can block the change.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlmodel import Session, select

from judge import compare as comparisons
from judge import compare_report
from judge.compare_models import CompareRequest, ComparisonReport, GraderRef, parse_grader_ref
from judge.errors import InputError, JudgeError
from judge.gold import ADAPTERS, gold_items, import_gold_set, list_gold_sets, read_gold
from judge.gold_maps import LabelMap, load_label_map, truth_columns
from judge.rubric import load_rubric
from judge.settings import open_cache
from judge.store.conversations import ensure_project
from judge.store.db import session
from judge.store.gold_tables import GoldSet

gold_app = typer.Typer(
    help="Gold sets: conversations labelled by people, to measure graders.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)
GATE_FAILED = 3

Db = Annotated[
    str | None, typer.Option("--db", envvar="DATABASE_URL", help="Database URL (default sqlite:///judge.db).")
]
ProjectName = Annotated[str, typer.Option("--project", help="Project that owns the gold set.")]


def _fail(error: JudgeError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {error}")
    return typer.Exit(2)


@gold_app.command("import")
def gold_import(
    file: Annotated[Path, typer.Argument(help="Gold JSONL: our gold format, or a shared USS/DBDC3 file.")],
    name: Annotated[str, typer.Option("--name", help="Name of the gold set.")],
    adapter: Annotated[
        str, typer.Option(help=f"How to read the lines: auto, {', '.join(ADAPTERS)}.")
    ] = "auto",
    label_map: Annotated[
        Path | None, typer.Option("--map", help="YAML label map into a rubric (see gold/maps/).")
    ] = None,
    description: Annotated[str, typer.Option(help="What the gold set is.")] = "",
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a gold set of that name.")] = False,
    db: Db = None,
    project: ProjectName = "default",
) -> None:
    """Store a gold set: its conversations (in their own project) and the human labels."""
    try:
        mapping = load_label_map(label_map) if label_map else None
        items, problems, used = read_gold(file, adapter)
        if items:
            with session(db) as opened:
                owner = ensure_project(opened, project)
                gold = import_gold_set(
                    opened,
                    owner,
                    name,
                    items,
                    adapter=used,
                    label_map=mapping,
                    map_name=label_map.name if label_map else None,
                    source_file=str(file),
                    description=description,
                    replace=replace,
                )
                _describe_import(opened, gold, mapping)
    except JudgeError as error:
        raise _fail(error) from None
    for problem in problems[:50]:
        errors.print(f"[red]{file}:{problem.line}[/] {problem.message}")
    if len(problems) > 50:
        errors.print(f"... and {len(problems) - 50} more rejected lines")
    if not items:
        raise _fail(InputError(f"{file}: no valid gold line"))
    console.print(
        f"{file}: {len(items):,} items imported with adapter {used!r}; {len(problems)} lines rejected"
    )
    if problems:
        raise typer.Exit(1)


def _describe_import(opened: Session, gold: GoldSet, mapping: LabelMap | None) -> None:
    labelled = ", ".join(f"{k} {v:,}" for k, v in sorted(gold.labelled.items())) or "nothing"
    console.print(f"gold set {gold.name!r}: {gold.items:,} conversations; labelled: {labelled}")
    if mapping is None or mapping.rubric is None:
        return
    rows = gold_items(opened, gold)
    columns = truth_columns([(r.external_id, r.labels) for r in rows], mapping, load_rubric(mapping.rubric))
    for column in columns.values():
        excluded = sum(column.excluded.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(column.excluded.items()))
        console.print(
            f"  map -> {mapping.rubric}.{column.dimension}: {len(column.truths):,} usable, "
            f"{excluded:,} excluded{f' ({detail})' if detail else ''}, {column.unlabelled:,} unlabelled"
        )


@gold_app.command("list")
def gold_list(db: Db = None, project: ProjectName = "default") -> None:
    """The project's gold sets with their sizes, labelled fields and label maps."""
    with session(db) as opened:
        owner = ensure_project(opened, project)
        found = list_gold_sets(opened, owner.id or 0)
    table = Table(title="Gold sets")
    for column in ("name", "items", "labelled", "adapter", "map", "conversations in", "updated"):
        table.add_column(column, justify="right" if column == "items" else "left")
    for g in found:
        table.add_row(
            g.name,
            f"{g.items:,}",
            ", ".join(f"{k} {v:,}" for k, v in sorted(g.labelled.items())),
            g.adapter,
            g.map_name or "-",
            g.data_project,
            f"{g.updated_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def compare(
    gold: Annotated[str | None, typer.Option("--gold", help="Name of the gold set.")] = None,
    grader: Annotated[
        list[str] | None,
        typer.Option(
            help="A grader version, NAME@RUBRIC?key=value (rubric and parameters optional): local, "
            "signals@travel, openai/gpt-4o-mini@my-rubrics/default.yaml?temperature=0"
        ),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="The gate's baseline grader version (like --grader).")
    ] = None,
    candidate: Annotated[
        str | None, typer.Option(help="The gate's candidate grader version (like --grader).")
    ] = None,
    gate: Annotated[
        str | None,
        typer.Option(
            help="Rules like 'kappa_drop<=0.05,macro_f1_drop<=0.03' (DIM:rule for one dimension), "
            "checked for --candidate against --baseline (else the second --grader against the first); "
            "exit code 3 when one fails."
        ),
    ] = None,
    dimension: Annotated[
        list[str] | None, typer.Option(help="Judge and compare only these dimensions.")
    ] = None,
    label_map: Annotated[
        Path | None, typer.Option("--map", help="Label map to use instead of the stored one.")
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples (0: no intervals).")] = 1000,
    confidence: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    exact_bootstrap: Annotated[
        bool,
        typer.Option("--exact-bootstrap", help="Call scikit-learn on every resample (slow; same result)."),
    ] = False,
    batch_size: Annotated[int | None, typer.Option(help="Conversations per provider call.")] = None,
    concurrency: Annotated[int, typer.Option(help="Provider calls in flight at once.")] = 4,
    html: Annotated[Path | None, typer.Option(help="Where to write the HTML report.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    list_past: Annotated[bool, typer.Option("--list", help="List past comparisons and exit.")] = False,
    show: Annotated[
        int | None, typer.Option(help="Print a stored comparison (and --html it) and exit.")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore and do not fill the cache.")] = False,
    db: Db = None,
    project: ProjectName = "default",
) -> None:
    """Compare grader versions on a gold set: agreement with the humans (with intervals), paired tests,
    cost per 1,000 conversations; optionally a release gate. Reports are stored (see --list, --show)."""
    try:
        if list_past:
            _list(db, project)
            return
        if show is not None:
            report = _show(db, project, show, html)
        else:
            settings = {
                "resamples": resamples,
                "confidence": confidence,
                "seed": seed,
                "exact_bootstrap": exact_bootstrap,
                "batch_size": batch_size,
                "concurrency": concurrency,
            }
            request = _request(gold, grader, baseline, candidate, gate, dimension, label_map, settings)
            report = _run(db, project, request, not no_cache, html, quiet=as_json)
    except JudgeError as error:
        raise _fail(error) from None
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        compare_report.terminal(console, report)
    if report.gate is not None and not report.gate.passed:
        for failure in report.gate.failures:
            errors.print(f"[bold red]gate failed:[/] {failure}")
        raise typer.Exit(GATE_FAILED)


def _request(
    gold: str | None,
    graders: list[str] | None,
    baseline: str | None,
    candidate: str | None,
    gate: str | None,
    dimensions: list[str] | None,
    label_map: Path | None,
    settings: dict[str, Any],
) -> CompareRequest:
    if gold is None:
        raise InputError("--gold: name the gold set to compare on (see `judge gold list`)")
    if (baseline is None) != (candidate is None):
        raise InputError("--baseline and --candidate go together")
    refs: list[GraderRef] = []
    if baseline is not None and candidate is not None:
        refs += [parse_grader_ref(baseline), parse_grader_ref(candidate)]
    refs += [parse_grader_ref(g) for g in graders or []]
    if not refs:
        raise InputError("--grader: give at least one grader (or --baseline and --candidate)")
    if gate is not None and len(refs) < 2:
        raise InputError("--gate needs two graders: --baseline and --candidate (or two --grader)")
    mapping = (
        load_label_map(label_map).model_dump(mode="json", by_alias=True, exclude_none=True)
        if label_map
        else None
    )
    try:
        return CompareRequest(
            gold=gold,
            graders=refs,
            dimensions=dimensions,
            label_map=mapping,
            gate=gate,
            **settings,
        )
    except ValidationError as error:
        problems = [
            f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" for e in error.errors()
        ]
        raise InputError("; ".join(problems)) from None


def _run(
    db: str | None, project: str, request: CompareRequest, use_cache: bool, html: Path | None, quiet: bool
) -> ComparisonReport:
    with session(db) as opened:
        owner = ensure_project(opened, project)
        comparison = comparisons.start(opened, owner, request)
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=errors, transient=True, disable=quiet) as bar:

            def progress(name: str, total: int) -> Callable[[int], None]:
                task = bar.add_task(name, total=total)
                return lambda n: bar.advance(task, n)

            report = asyncio.run(
                comparisons.execute(
                    opened, comparison, open_cache(use_cache), progress=progress, render=compare_report.html
                )
            )
        _write_html(html or Path(f"comparison-{comparison.id}.html"), comparison.html or "")
    return report


def _write_html(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    errors.print(f"HTML report: {path}")


def _show(db: str | None, project: str, comparison_id: int, html: Path | None) -> ComparisonReport:
    with session(db) as opened:
        owner = ensure_project(opened, project)
        found = comparisons.require_comparison(opened, owner.id or 0, comparison_id)
        if found.report is None:
            raise InputError(
                f"comparison {comparison_id} is {found.status}: {found.error or 'no report yet'}"
            )
        if html is not None:
            _write_html(html, found.html or "")
        return ComparisonReport.model_validate(found.report)


def _list(db: str | None, project: str) -> None:
    with session(db) as opened:
        owner = ensure_project(opened, project)
        found = comparisons.list_comparisons(opened, owner.id or 0)
        gold_names = {
            g.id: g.name for g in opened.exec(select(GoldSet).where(GoldSet.project_id == owner.id))
        }
    table = Table(title="Comparisons, newest first")
    for column in ("id", "gold set", "graders", "status", "gate", "created"):
        table.add_column(column)
    for c in found:
        gate = "-" if c.gate_passed is None else ("passed" if c.gate_passed else "[red]failed[/]")
        table.add_row(
            str(c.id),
            gold_names.get(c.gold_set_id, "?"),
            ", ".join(c.graders),
            c.status,
            gate,
            f"{c.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)
