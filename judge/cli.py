"""The ``judge`` command: ingest, run, report, demo and rubric tools.

Exit codes: 0 success; 1 partly done (some input lines rejected, some judgements unscored);
2 the user's input is wrong (bad file, unknown rubric or grader), with a message naming what and where.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from judge import analytics, report
from judge.cli_compare import compare, gold_app
from judge.conversation import Conversation, LineError, read_jsonl
from judge.errors import InputError, JudgeError
from judge.resources import SAMPLE_CONVERSATIONS
from judge.rubric import available_rubrics, json_schema, load_rubric, load_rubric_file
from judge.runner import Runner, RunOptions, RunSummary
from judge.scope import Scope
from judge.settings import open_cache
from judge.store.conversations import ensure_project, store_conversations
from judge.store.db import session
from judge.store.judgements import latest_run
from judge.store.tables import Run

app = typer.Typer(help="User analytics for conversational AI, built on LLM-as-judge.", no_args_is_help=True)
rubric_app = typer.Typer(help="Inspect and validate rubrics.", no_args_is_help=True)
app.add_typer(rubric_app, name="rubric")
project_app = typer.Typer(help="Projects and their API keys.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(gold_app, name="gold")
app.command("compare")(compare)
console = Console()
errors = Console(stderr=True)

Db = Annotated[
    str | None, typer.Option("--db", envvar="DATABASE_URL", help="Database URL (default sqlite:///judge.db).")
]
ProjectName = Annotated[str, typer.Option("--project", help="Project the data belongs to.")]
INGEST_CHUNK = 500


def _fail(error: JudgeError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {error}")
    return typer.Exit(2)


@app.command()
def ingest(
    file: Annotated[
        Path, typer.Argument(help="JSONL file: our shape or OpenAI chat messages, one per line.")
    ],
    db: Db = None,
    project: ProjectName = "default",
) -> None:
    """Store conversations; bad lines are reported by line and field, valid lines still land."""
    if not file.is_file():
        raise _fail(InputError(f"{file}: no such file"))
    counts: dict[str, int] = {}
    rejected: list[LineError] = []
    with session(db) as opened:
        project_id = ensure_project(opened, project).id or 0
        batch: list[Conversation] = []
        for item in read_jsonl(file):
            if isinstance(item, LineError):
                rejected.append(item)
                continue
            batch.append(item)
            if len(batch) >= INGEST_CHUNK:
                _store(opened, project_id, batch, counts)
                batch = []
        _store(opened, project_id, batch, counts)
    summary = ", ".join(f"{n} {outcome.replace('_', ' ')}" for outcome, n in sorted(counts.items()))
    console.print(f"{file}: {summary or 'no conversations'}; {len(rejected)} rejected")
    for problem in rejected[:50]:
        errors.print(f"[red]{file}:{problem.line}[/] {problem.message}")
    if len(rejected) > 50:
        errors.print(f"... and {len(rejected) - 50} more rejected lines")
    if rejected:
        raise typer.Exit(2 if not counts else 1)


def _store(opened: Any, project_id: int, batch: list[Conversation], counts: dict[str, int]) -> None:
    for item in store_conversations(opened, project_id, batch) if batch else []:
        counts[item.outcome.value] = counts.get(item.outcome.value, 0) + 1


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@app.command()
def run(
    rubric: Annotated[str, typer.Option(help="Rubric name or path of a YAML file.")] = "default",
    grader: Annotated[
        str, typer.Option(help="local, fake, or a litellm model such as openai/gpt-4o-mini.")
    ] = "local",
    batch_size: Annotated[int | None, typer.Option(help="Conversations per provider call.")] = None,
    concurrency: Annotated[int, typer.Option(help="Provider calls in flight at once.")] = 4,
    dimension: Annotated[list[str] | None, typer.Option(help="Judge only these dimensions.")] = None,
    limit: Annotated[int | None, typer.Option(help="Judge at most this many conversations.")] = None,
    api_base: Annotated[str | None, typer.Option(help="Base URL of an OpenAI-compatible server.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Grader parameter KEY=VALUE (JSON value).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore and do not fill the cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    resume: Annotated[
        int | None, typer.Option("--resume", help="Continue interrupted run RUN_ID; its own options apply.")
    ] = None,
    db: Db = None,
    project: ProjectName = "default",
) -> None:
    """Judge the stored conversations with a grader and a rubric, then print the run summary."""
    if resume is not None:
        try:
            summary = _resume(resume, db, project, use_cache=not no_cache, show_progress=not as_json)
        except JudgeError as error:
            raise _fail(error) from None
        _print_summary(summary, as_json)
        return
    try:
        grader_options = _parse_params(param or [])
        if api_base:
            grader_options["api_base"] = api_base
        options = RunOptions(
            rubric=rubric,
            grader=grader,
            grader_options=grader_options,
            dimensions=dimension,
            limit=limit,
            batch_size=batch_size,
            concurrency=concurrency,
            project=project,
        )
        summary = _execute(options, db, use_cache=not no_cache, show_progress=not as_json)
    except JudgeError as error:
        raise _fail(error) from None
    _print_summary(summary, as_json)


def _print_summary(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(summary.model_dump_json(indent=2) + "\n")
    else:
        report.run_summary(console, summary)
    if summary.unscored:
        raise typer.Exit(1)


def _resume(
    run_id: int, db: str | None, project: str, use_cache: bool = True, show_progress: bool = True
) -> RunSummary:
    """Continue run ``run_id`` (interrupted, cancelled, failed or killed): only what it has not stored
    is judged, with the options and rubric version it started with."""
    with session(db) as opened:
        found = opened.get(Run, run_id)
        project_id = ensure_project(opened, project).id
        if found is None or found.project_id != project_id:
            raise InputError(f"no run {run_id} in project {project!r}")
        if found.status == "completed":
            raise InputError(f"run {run_id} is completed; nothing to resume")
        runner = Runner.resume(opened, found, cache=open_cache(use_cache))
        columns = (TextColumn("[bold]resuming"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True, disable=not show_progress) as bar:
            task = bar.add_task("resuming", total=found.total, completed=found.conversations)
            return asyncio.run(runner.execute(found, lambda n: bar.advance(task, n)))


def _execute(
    options: RunOptions, db: str | None, use_cache: bool = True, show_progress: bool = True
) -> RunSummary:
    with session(db) as opened:
        runner = Runner(opened, options, cache=open_cache(use_cache))
        run_row = runner.start()
        columns = (TextColumn("[bold]judging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True, disable=not show_progress) as bar:
            task = bar.add_task("judging", total=None)
            return asyncio.run(runner.execute(run_row, lambda n: bar.advance(task, n)))


@app.command("report")
def report_command(
    run_id: Annotated[int | None, typer.Option("--run", help="Run id (default: the latest).")] = None,
    level: Annotated[int, typer.Option(help="Topic depth for failure intelligence (0 = full label).")] = 0,
    db: Db = None,
    project: ProjectName = "default",
) -> None:
    """Print the five analytics and failure intelligence of a run."""
    with session(db) as opened:
        project_id = ensure_project(opened, project).id or 0
        chosen = opened.get(Run, run_id) if run_id else latest_run(opened, project_id)
        if chosen is None or chosen.project_id != project_id:
            raise _fail(InputError(f"no run {run_id}" if run_id else "no runs yet: try `judge run`"))
        console.rule(f"Run {chosen.id} ({chosen.status}), {chosen.conversations:,} conversations")
        snapshot = analytics.Snapshot(opened, Scope(project_id=project_id, run_id=chosen.id))
        report.analytics(console, analytics.dimension_summaries(snapshot))
        report.failures(console, analytics.failure_intelligence(snapshot, level=level))


@app.command()
def demo(db: Db = None) -> None:
    """Ingest the bundled sample conversations, judge them with the offline grader, print the report."""
    ingest(SAMPLE_CONVERSATIONS, db=db, project="default")
    try:
        summary = _execute(RunOptions(rubric="default", grader="local"), db)
    except JudgeError as error:
        raise _fail(error) from None
    report.run_summary(console, summary)
    report_command(run_id=summary.run_id, level=0, db=db, project="default")


@rubric_app.command("validate")
def rubric_validate(files: Annotated[list[Path], typer.Argument(help="Rubric YAML files.")]) -> None:
    """Check rubric files; errors name the file, dimension and label."""
    failed = False
    for file in files:
        try:
            rubric = load_rubric_file(file)
        except JudgeError as error:
            errors.print(f"[bold red]invalid:[/] {error}")
            failed = True
            continue
        labels = sum(len(d.labels) for d in rubric.dimensions.values())
        console.print(
            f"[green]ok[/] {file}: {rubric.name} v{rubric.version}, "
            f"{len(rubric.dimensions)} dimensions, {labels} labels"
        )
    if failed:
        raise typer.Exit(2)


@rubric_app.command("list")
def rubric_list() -> None:
    """The rubrics found (your folders in JUDGE_RUBRICS_PATH first, then the built-in ones)."""
    for name, path in available_rubrics().items():
        try:
            rubric = load_rubric(str(path))
            console.print(f"{name} v{rubric.version}: {', '.join(rubric.dimensions)}  [dim]{path}[/]")
        except JudgeError as error:
            errors.print(f"[red]{name}[/]: {error}")


@rubric_app.command("schema")
def rubric_schema() -> None:
    """Print the JSON Schema of rubric files (point your editor's YAML plugin at it)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@project_app.command("create")
def project_create(name: Annotated[str, typer.Argument(help="Project name.")], db: Db = None) -> None:
    """Create a project and print its API key (shown once; only a hash is stored)."""
    from judge.projects import create_project

    try:
        with session(db) as opened:
            _project, key = create_project(opened, name)
    except JudgeError as error:
        raise _fail(error) from None
    errors.print(f"project {name!r} created; its API key (shown once, keep it secret):")
    sys.stdout.write(key + "\n")


@project_app.command("rotate-key")
def project_rotate(name: Annotated[str, typer.Argument(help="Project name.")], db: Db = None) -> None:
    """Issue a new API key for a project; the old one stops working."""
    from sqlmodel import select

    from judge.projects import rotate_key
    from judge.store.tables import Project

    with session(db) as opened:
        project = opened.exec(select(Project).where(Project.name == name)).first()
        if project is None:
            raise _fail(InputError(f"no project {name!r}"))
        sys.stdout.write(rotate_key(opened, project) + "\n")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    db: Db = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs) on the embedded defaults: SQLite and the local grader."""
    import os

    import uvicorn

    from api.app import create_app
    from api.settings import Settings

    if db:
        os.environ["DATABASE_URL"] = db
    try:
        application = create_app(Settings())
    except Exception as error:  # settings and database problems stop start-up with their message
        errors.print(f"[bold red]error:[/] cannot start: {error}")
        raise typer.Exit(2) from None
    uvicorn.run(application, host=host, port=port, log_level="info")
