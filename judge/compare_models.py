"""What a grader comparison is asked for and what it reports, and the release gate over that report.

A grader "version" is the fingerprint of DESIGN.md (provider, model, parameters, prompt version) plus the
rubric it judges with; ``NAME[@RUBRIC][?key=value&...]`` names one on the command line, for example
``local``, ``signals@travel``, ``openai/gpt-4o-mini@my-rubrics/default.yaml?temperature=0``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, Field

from judge.errors import InputError, NotFoundError
from judge.metrics import Agreement, Evaluation, Interval
from judge.providers.base import parse_grader
from judge.rubric import available_rubrics

GATE_METRICS = ("accuracy", "macro_f1", "micro_f1", "kappa")
_RULE = re.compile(
    r"^\s*(?:(?P<dimension>[a-z][a-z0-9_]*):)?(?P<metric>[a-z0-9_]+)_drop\s*<=\s*(?P<limit>[0-9.]+)\s*$"
)


class GraderRef(BaseModel):
    """One grader version to compare: a grader name, the rubric it judges with, its parameters."""

    grader: str = Field(default="local", description="local, signals, fake, or a litellm model.")
    rubric: str | None = Field(
        default=None,
        description="Rubric name or YAML path; default: the gold set map's rubric, else default.",
    )
    grader_options: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, max_length=120, description="Display name in the report.")


def parse_grader_ref(text: str) -> GraderRef:
    """``NAME[@RUBRIC][?key=value&...]``; values are read as JSON when they parse (``temperature=0``)."""
    spec, _, query = text.strip().partition("?")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    grader, at, rubric = spec.rpartition("@")
    if not at:
        return GraderRef(grader=spec, grader_options=options)
    if rubric.endswith((".yaml", ".yml")) or Path(rubric).is_file() or rubric in available_rubrics():
        return GraderRef(grader=grader, rubric=rubric, grader_options=options)
    try:
        parse_grader(spec)  # a model name that contains '@' (vertex_ai/claude-3-5-sonnet@20240620)
    except NotFoundError:
        raise NotFoundError("rubric", rubric, available_rubrics()) from None
    return GraderRef(grader=spec, grader_options=options)


class CompareRequest(BaseModel):
    """A comparison: graders over a gold set's conversations, scored against its labels."""

    gold: str = Field(description="Name of a stored gold set.")
    graders: list[GraderRef] = Field(min_length=1, max_length=8)
    dimensions: list[str] | None = Field(default=None, description="Judge only these dimensions.")
    label_map: dict[str, Any] | None = Field(
        default=None, description="A label map (the YAML's content) to use instead of the gold set's."
    )
    resamples: int = Field(
        default=1000, ge=0, le=100_000, description="Bootstrap resamples (0: no intervals)."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = 0
    exact_bootstrap: bool = Field(default=False, description="scikit-learn on every resample (slow).")
    gate: str | None = Field(default=None, description="e.g. kappa_drop<=0.05,topic:macro_f1_drop<=0.03")
    baseline: int = Field(default=0, ge=0, description="Index in graders of the gate's baseline.")
    candidate: int = Field(default=1, ge=0, description="Index in graders of the gate's candidate.")
    batch_size: int | None = Field(default=None, ge=1, le=200)
    concurrency: int = Field(default=4, ge=1, le=64)
    token_budget: int = Field(default=12_000, ge=500)


class UsagePer1k(BaseModel):
    """What a grader costs, from the usage stored with its judgements of these conversations."""

    basis: int = Field(description="Conversations this grader and rubric judged fresh (not from cache).")
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    latency_source: str
    per_1k: dict[str, float | None]
    calls_this_comparison: int
    cached_this_comparison: int = Field(description="Judgements this comparison took from the cache.")
    judgements_this_comparison: int


class GraderInfo(BaseModel):
    name: str
    grader: str
    fingerprint: str
    provider: str
    model: str
    params: dict[str, Any]
    prompt: str
    rubric: str
    rubric_version: int
    rubric_hash: str
    rubric_source: str
    run_id: int
    usage: UsagePer1k


class Coverage(BaseModel):
    grader: str
    gold_items: int
    judged: int
    unscored: int


class DimensionReport(BaseModel):
    dimension: str
    kind: str
    analytic: str
    gold_field: str | None = None
    labels: list[str]
    collapse: dict[str, str] | None = None
    gold_items: int = 0
    unlabelled: int = 0
    excluded: dict[str, int] = Field(default_factory=dict)
    any_of: int = 0
    evaluated: int = 0
    majority: list[str] | None = None
    coverage: list[Coverage] = Field(default_factory=list)
    evaluation: Evaluation | None = None
    agreement: list[Agreement] = Field(default_factory=list)


class GateRule(BaseModel):
    dimension: str | None
    metric: str
    limit: float


class GateCheck(BaseModel):
    dimension: str
    metric: str
    baseline: float | None
    candidate: float | None
    drop: Interval
    limit: float
    significant: bool
    passed: bool
    message: str


class GateResult(BaseModel):
    spec: str
    baseline: str
    candidate: str
    passed: bool
    checks: list[GateCheck]
    failures: list[str]


class GoldSummary(BaseModel):
    name: str
    items: int
    data_project: str
    label_map: dict[str, Any] | None
    map_name: str | None


class ComparisonReport(BaseModel):
    id: int | None = None
    created_at: datetime
    gold: GoldSummary
    resamples: int
    confidence: float
    seed: int
    method: str
    graders: list[GraderInfo]
    dimensions: list[DimensionReport]
    unlabelled_dimensions: list[DimensionReport]
    gate: GateResult | None = None
    notes: list[str] = Field(default_factory=list)


def parse_gate(spec: str) -> list[GateRule]:
    """``[DIMENSION:]METRIC_drop<=LIMIT`` rules, comma-separated (metrics: see ``GATE_METRICS``)."""
    rules = []
    for part in (p for p in spec.split(",") if p.strip()):
        match = _RULE.match(part)
        if match is None:
            raise InputError(
                f"gate rule {part.strip()!r}: expected [DIMENSION:]METRIC_drop<=LIMIT, e.g. kappa_drop<=0.05"
            )
        if match["metric"] not in GATE_METRICS:
            raise NotFoundError("gate metric", match["metric"], GATE_METRICS)
        rules.append(
            GateRule(dimension=match["dimension"], metric=match["metric"], limit=float(match["limit"]))
        )
    if not rules:
        raise InputError("gate: no rule given; e.g. kappa_drop<=0.05,macro_f1_drop<=0.03")
    return rules


def evaluate_gate(spec: str, report: ComparisonReport, baseline: str, candidate: str) -> GateResult:
    """The candidate fails a rule on a dimension when its metric is lower than the baseline's by more
    than the limit and the paired bootstrap interval of the drop lies above zero (a real drop)."""
    rules = parse_gate(spec)
    known = {d.dimension: d for d in report.dimensions if d.evaluation is not None}
    checks = []
    for rule in rules:
        if rule.dimension is not None and rule.dimension not in known:
            raise NotFoundError("gold-labelled dimension in the gate", rule.dimension, known)
        for name, dimension in known.items():
            if rule.dimension in (None, name):
                check = _check(rule, dimension, baseline, candidate)
                if check is not None:
                    checks.append(check)
    failures = [c.message for c in checks if not c.passed]
    return GateResult(
        spec=spec,
        baseline=baseline,
        candidate=candidate,
        passed=not failures,
        checks=checks,
        failures=failures,
    )


def _check(rule: GateRule, dimension: DimensionReport, baseline: str, candidate: str) -> GateCheck | None:
    assert dimension.evaluation is not None
    sign, pair = 1.0, None
    for paired in dimension.evaluation.paired:
        if (paired.a, paired.b) == (baseline, candidate):
            pair = paired
        elif (paired.a, paired.b) == (candidate, baseline):
            sign, pair = -1.0, paired
    difference = next((d for d in pair.differences if d.metric == rule.metric), None) if pair else None
    if difference is None:
        return None  # micro_f1 on a single-label dimension: nothing to check
    delta = difference.delta
    # drop = baseline - candidate; delta is b - a
    drop = _scaled(delta, -sign)
    values = (difference.a, difference.b) if sign > 0 else (difference.b, difference.a)
    significant = drop.low is not None and drop.low > 0
    exceeded = drop.value is not None and drop.value > rule.limit
    passed = not (significant and exceeded)
    where = f"{dimension.dimension} {rule.metric}"
    if drop.value is None:
        message = f"{where}: undefined for one of the graders; not gated"
    elif passed:
        message = f"{where}: drop {drop.value:+.3f} within {rule.limit} or not significant"
    else:
        message = (
            f"{where} dropped by {drop.value:.3f} (CI {drop.low:.3f}..{drop.high:.3f}) > {rule.limit}: "
            f"{candidate} is significantly worse than {baseline}"
        )
    return GateCheck(
        dimension=dimension.dimension,
        metric=rule.metric,
        baseline=values[0],
        candidate=values[1],
        drop=drop,
        limit=rule.limit,
        significant=significant,
        passed=passed,
        message=message,
    )


def _scaled(interval: Interval, factor: float) -> Interval:
    def scale(value: float | None) -> float | None:
        return None if value is None else round(value * factor, 6) + 0.0  # + 0.0: no "-0.000"

    low, high = scale(interval.low), scale(interval.high)
    if low is not None and high is not None and low > high:
        low, high = high, low
    return Interval(value=scale(interval.value), low=low, high=high)
