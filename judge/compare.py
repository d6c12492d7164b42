"""Compare grader versions on a gold set: run each through the normal runner, score against the humans.

Each grader (with its rubric) judges the gold set's conversations in a run of its own, in the gold set's
project, through the cache: a second comparison of the same graders makes no provider call. Then, per
dimension the gold set labels: coverage, accuracy, macro-F1 and kappa with bootstrap intervals, per-label
precision/recall/F1, confusion matrices, paired tests between every two graders and against the majority
baseline (always the most frequent gold answer); per dimension it does not label: how far the graders
agree with each other. Cost, tokens and latency per 1,000 conversations come from the stored usage. The
report is stored with the comparison, as JSON and as a self-contained HTML page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from judge.cache import VerdictCache
from judge.compare_models import (
    CompareRequest,
    ComparisonReport,
    Coverage,
    DimensionReport,
    GoldSummary,
    GraderInfo,
    GraderRef,
    evaluate_gate,
    parse_gate,
)
from judge.compare_usage import stored_usage
from judge.errors import InputError, NotFoundError
from judge.gold import gold_items, require_gold_set, stored_map
from judge.gold_maps import LabelMap, TruthColumn, check_map, identity_map, parse_label_map, truth_columns
from judge.metrics import METHOD, BootstrapSettings
from judge.providers.base import parse_grader
from judge.rubric import Rubric, load_rubric
from judge.runner import Runner, RunOptions, RunSummary
from judge.scoring import agreement_only, evaluate_multi, evaluate_single
from judge.store.gold_tables import Comparison, GoldSet
from judge.store.tables import (
    ConversationRecord,
    Grader,
    Judgement,
    JudgementLabel,
    Project,
    RubricVersion,
    Run,
    utcnow,
)

MAJORITY = "majority"
Progress = Callable[[str, int], Callable[[int], None]]
"""Given a grader's name and how many conversations it will judge, a callback for each finished batch."""
Predictions = dict[str, dict[str, list[str] | None]]
"""Conversation id -> dimension -> labels (None: unscored)."""


@dataclass
class _Contender:
    """A grader of the comparison with its rubric, its run and what it said."""

    name: str
    ref: GraderRef
    rubric: Rubric
    rubric_source: str
    run: Run | None = None
    summary: RunSummary | None = None
    predictions: Predictions | None = None


def start(session: Session, owner: Project, request: CompareRequest) -> Comparison:
    """Check the request (gold set, graders, rubrics, gate) and store the comparison as ``running``."""
    gold = require_gold_set(session, owner.id or 0, request.gold)
    contenders, _map = _prepare(session, gold, request)
    comparison = Comparison(
        project_id=owner.id or 0,
        gold_set_id=gold.id or 0,
        request=request.model_dump(mode="json"),
        graders=[c.name for c in contenders],
    )
    session.add(comparison)
    session.commit()
    return comparison


async def execute(
    session: Session,
    comparison: Comparison,
    cache: VerdictCache | None = None,
    progress: Progress | None = None,
    render: Callable[[ComparisonReport], str] | None = None,
) -> ComparisonReport:
    """Run the graders and build, store and return the report; a failure is stored with its reason."""
    try:
        report = await _execute(session, comparison, cache, progress)
        report.id = comparison.id
        comparison.report = report.model_dump(mode="json")
        comparison.html = render(report) if render is not None else None
        comparison.gate_passed = report.gate.passed if report.gate else None
        comparison.status = "completed"
    except BaseException as error:
        session.rollback()
        comparison.status, comparison.error = "failed", str(error) or type(error).__name__
        raise
    finally:
        comparison.finished_at = utcnow()
        session.add(comparison)
        session.commit()
    return report


async def _execute(
    session: Session, comparison: Comparison, cache: VerdictCache | None, progress: Progress | None
) -> ComparisonReport:
    request = CompareRequest.model_validate(comparison.request)
    gold = session.get(GoldSet, comparison.gold_set_id)
    assert gold is not None
    contenders, label_map = _prepare(session, gold, request)
    data = session.get(Project, gold.data_project_id)
    assert data is not None
    rows = gold_items(session, gold)
    ids = [row.external_id for row in rows]
    for contender in contenders:
        options = RunOptions(
            rubric=contender.rubric_source,
            grader=contender.ref.grader,
            grader_options=contender.ref.grader_options,
            dimensions=request.dimensions,
            ids=ids,
            batch_size=request.batch_size,
            concurrency=request.concurrency,
            token_budget=request.token_budget,
            project=data.name,
        )
        runner = Runner(session, options, cache=cache, rubric=contender.rubric)
        run = runner.start()
        notify = progress(contender.name, run.total) if progress else None
        summary = await runner.execute(run, notify)
        if summary.status != "completed":
            raise RuntimeError(f"the run of {contender.name} ended {summary.status}")
        contender.run, contender.summary = run, summary
        contender.predictions = _predictions(session, run.id or 0)
    truths = truth_columns([(r.external_id, r.labels) for r in rows], label_map, contenders[0].rubric)
    settings = BootstrapSettings(request.resamples, request.confidence, request.seed, request.exact_bootstrap)
    judged = set(request.dimensions or contenders[0].rubric.dimensions)
    shared = _shared_dimensions(contenders, judged)
    labelled = [_gold_dimension(truths[d], contenders, settings) for d in shared if d in truths]
    unlabelled = [_agreement_dimension(d, contenders, ids, settings) for d in shared if d not in truths]
    report = ComparisonReport(
        created_at=comparison.created_at,
        gold=GoldSummary(
            name=gold.name,
            items=len(rows),
            data_project=data.name,
            label_map=label_map.model_dump(mode="json", by_alias=True, exclude_none=True),
            map_name=gold.map_name if request.label_map is None else "(given with the request)",
        ),
        resamples=request.resamples,
        confidence=request.confidence,
        seed=request.seed,
        method=f"{METHOD} bootstrap over conversations",
        graders=[_info(session, c, data.id or 0) for c in contenders],
        dimensions=labelled,
        unlabelled_dimensions=unlabelled,
        notes=_notes(labelled, truths, judged),
    )
    if request.gate:
        report.gate = evaluate_gate(
            request.gate, report, contenders[request.baseline].name, contenders[request.candidate].name
        )
    return report


def _prepare(session: Session, gold: GoldSet, request: CompareRequest) -> tuple[list[_Contender], LabelMap]:
    """Load every grader's rubric, fit the label map to each, name the graders, check the gate."""
    label_map = (
        parse_label_map(request.label_map, "given with the request")
        if request.label_map
        else stored_map(gold)
    )
    default_rubric = label_map.rubric if label_map and label_map.rubric else "default"
    contenders: list[_Contender] = []
    for ref in request.graders:
        source = ref.rubric or default_rubric
        rubric = load_rubric(source)
        parse_grader(ref.grader)  # an unknown grader fails now, not in the middle of the comparison
        shown = Path(source).stem if source.endswith((".yaml", ".yml")) else source
        contenders.append(_Contender(ref.name or f"{ref.grader}@{shown}", ref, rubric, source))
    _unique_names(contenders)
    if label_map is None:
        fields = {k for row in gold_items(session, gold) for k in row.labels}
        label_map = identity_map(contenders[0].rubric, fields)
        if label_map is None:
            raise InputError(
                f"gold set {gold.name!r} labels {', '.join(sorted(fields)) or 'nothing'}, none of which is a "
                f"dimension of rubric {contenders[0].rubric.name!r}; import it with a label map (--map)"
            )
    for contender in contenders:
        check_map(label_map, contender.rubric, contender.name)
    _same_labels(contenders, list(label_map.dimensions))
    if request.dimensions:
        for name in request.dimensions:
            contenders[0].rubric.dimension(name)
    if request.gate:
        parse_gate(request.gate)
        for index, role in ((request.baseline, "baseline"), (request.candidate, "candidate")):
            if index >= len(contenders):
                raise InputError(
                    f"gate {role}: grader index {index}, but only {len(contenders)} graders given"
                )
        if request.baseline == request.candidate:
            raise InputError("gate: the baseline and the candidate must be two different graders")
    return contenders, label_map


def _unique_names(contenders: list[_Contender]) -> None:
    seen: Counter[str] = Counter()
    for contender in contenders:
        seen[contender.name] += 1
        if seen[contender.name] > 1:
            contender.name = f"{contender.name}#{seen[contender.name]}"


def _same_labels(contenders: list[_Contender], dimensions: list[str]) -> None:
    first = contenders[0]
    for other in contenders[1:]:
        for name in dimensions:
            a, b = first.rubric.dimensions[name], other.rubric.dimensions[name]
            if (a.kind, a.label_ids) != (b.kind, b.label_ids):
                raise InputError(
                    f"dimension {name!r} has different labels in {first.name} and {other.name}; "
                    f"graders compared on one gold label must answer with the same labels"
                )


def _shared_dimensions(contenders: list[_Contender], judged: set[str]) -> list[str]:
    """Dimensions every grader judged with the same kind and labels, in the first rubric's order."""
    first = contenders[0].rubric
    shared = []
    for name, dimension in first.dimensions.items():
        if name not in judged:
            continue
        others = [c.rubric.dimensions.get(name) for c in contenders[1:]]
        if all(
            o is not None and (o.kind, o.label_ids) == (dimension.kind, dimension.label_ids) for o in others
        ):
            shared.append(name)
    return shared


def _predictions(session: Session, run_id: int) -> Predictions:
    query = (
        select(ConversationRecord.external_id, Judgement.dimension, Judgement.status, JudgementLabel.label)
        .join(Judgement, col(Judgement.conversation_id) == col(ConversationRecord.id))
        .join(JudgementLabel, col(JudgementLabel.judgement_id) == col(Judgement.id), isouter=True)
        .where(Judgement.run_id == run_id)
        .order_by(col(Judgement.id), col(JudgementLabel.id))
    )
    found: Predictions = {}
    for external_id, dimension, status, label in session.exec(query):
        per = found.setdefault(external_id, {})
        if status != "scored":
            per[dimension] = None
            continue
        labels = per.setdefault(dimension, [])
        if labels is not None and label is not None:
            labels.append(label)
    return found


def _gold_dimension(
    column: TruthColumn, contenders: list[_Contender], settings: BootstrapSettings
) -> DimensionReport:
    dimension = contenders[0].rubric.dimensions[column.dimension]
    coverage = []
    items = list(column.truths)
    for contender in contenders:
        judged = sum(1 for i in items if _said(contender, i, column.dimension) is not None)
        coverage.append(
            Coverage(
                grader=contender.name, gold_items=len(items), judged=judged, unscored=len(items) - judged
            )
        )
    evaluated = [i for i in items if all(_said(c, i, column.dimension) is not None for c in contenders)]
    truths = [column.truths[i] for i in evaluated]
    report = DimensionReport(
        dimension=column.dimension,
        kind=column.kind,
        analytic=dimension.analytic.value,
        gold_field=column.source,
        labels=column.labels,
        collapse=column.collapse,
        gold_items=len(items),
        unlabelled=column.unlabelled,
        excluded=dict(column.excluded),
        any_of=sum(1 for t in column.truths.values() if t.any_of),
        evaluated=len(evaluated),
        coverage=coverage,
    )
    if not evaluated:
        return report
    names = [c.name for c in contenders]
    if column.kind == "single":
        counts = Counter(label for t in truths for label in t.labels)
        majority = max(column.labels, key=lambda label: (counts[label], -column.labels.index(label)))
        single: dict[str, list[str]] = {
            c.name: [column.scoring_label(_first(_said(c, i, column.dimension))) for i in evaluated]
            for c in contenders
        }
        single[MAJORITY] = [majority] * len(evaluated)
        report.majority = [majority]
        report.evaluation = evaluate_single(truths, single, column.labels, settings, [*names, MAJORITY])
    else:
        counts = Counter(label for t in truths for label in t.labels)
        common = tuple(label for label in column.labels if counts[label] * 2 > len(truths))
        multi: dict[str, list[tuple[str, ...]]] = {
            c.name: [tuple(_said(c, i, column.dimension) or ()) for i in evaluated] for c in contenders
        }
        multi[MAJORITY] = [common] * len(evaluated)
        report.majority = list(common)
        report.evaluation = evaluate_multi(truths, multi, column.labels, settings, [*names, MAJORITY])
    report.evaluation.agreement = [a for a in report.evaluation.agreement if MAJORITY not in (a.a, a.b)]
    return report


def _said(contender: _Contender, item: str, dimension: str) -> list[str] | None:
    """What the grader said (None: unscored; a single-label verdict without a label counts as unscored)."""
    assert contender.predictions is not None
    said = contender.predictions.get(item, {}).get(dimension)
    if said is not None and not said and contender.rubric.dimensions[dimension].kind == "single":
        return None
    return said


def _first(said: list[str] | None) -> str:
    assert said, "only items every grader scored are evaluated"
    return said[0]


def _agreement_dimension(
    name: str, contenders: list[_Contender], ids: list[str], settings: BootstrapSettings
) -> DimensionReport:
    dimension = contenders[0].rubric.dimensions[name]
    items = [i for i in ids if all(_said(c, i, name) is not None for c in contenders)]
    report = DimensionReport(
        dimension=name,
        kind=dimension.kind,
        analytic=dimension.analytic.value,
        labels=dimension.label_ids,
        evaluated=len(items),
    )
    if len(contenders) < 2 or not items:
        return report
    predictions: dict[str, list[Any]] = {}
    for contender in contenders:
        said = [_said(contender, i, name) or [] for i in items]
        predictions[contender.name] = (
            [tuple(s) for s in said] if dimension.kind == "multi" else [s[0] for s in said]
        )
    report.agreement = agreement_only(predictions, dimension.kind, dimension.label_ids, settings)
    return report


def _info(session: Session, contender: _Contender, data_project_id: int) -> GraderInfo:
    run, summary = contender.run, contender.summary
    assert run is not None and run.id is not None and summary is not None
    grader = session.get(Grader, run.grader_id)
    rubric = session.get(RubricVersion, run.rubric_version_id)
    assert grader is not None and rubric is not None
    return GraderInfo(
        name=contender.name,
        grader=contender.ref.grader,
        fingerprint=grader.id,
        provider=grader.provider,
        model=grader.model,
        params=grader.params,
        prompt=f"{grader.prompt_name} v{grader.prompt_version}",
        rubric=rubric.name,
        rubric_version=rubric.version,
        rubric_hash=rubric.content_hash[:12],
        rubric_source=contender.rubric_source,
        run_id=run.id,
        usage=stored_usage(session, data_project_id, grader.id, rubric.id or 0, summary),
    )


def _notes(labelled: list[DimensionReport], truths: dict[str, TruthColumn], judged: set[str]) -> list[str]:
    notes = []
    for report in labelled:
        if report.excluded:
            listed = ", ".join(f"{label} ({n})" for label, n in sorted(report.excluded.items()))
            notes.append(
                f"{report.dimension}: items left out because their gold label has no mapping: {listed}"
            )
        if report.any_of:
            notes.append(
                f"{report.dimension}: {report.any_of} items have several acceptable gold labels; a "
                f"prediction is right when it is one of them, else scored against the first"
            )
        unscored = [c for c in report.coverage if c.unscored]
        for c in unscored:
            notes.append(
                f"{report.dimension}: {c.grader} left {c.unscored} of {c.gold_items} gold items unscored"
            )
    missing = sorted(set(truths) - judged)
    if missing:
        notes.append(f"gold labels not compared (dimensions not judged): {', '.join(missing)}")
    return notes


def list_comparisons(session: Session, project_id: int, limit: int = 50) -> list[Comparison]:
    query = (
        select(Comparison)
        .where(Comparison.project_id == project_id)
        .order_by(col(Comparison.id).desc())
        .limit(limit)
    )
    return list(session.exec(query))


def require_comparison(session: Session, project_id: int, comparison_id: int) -> Comparison:
    found = session.get(Comparison, comparison_id)
    if found is None or found.project_id != project_id:
        raise NotFoundError("comparison", str(comparison_id))
    return found
