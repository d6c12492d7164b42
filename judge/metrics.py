"""Agreement with gold labels and between graders, with bootstrap confidence intervals.

Every reported figure is a scikit-learn metric (accuracy, F1, precision/recall, Cohen's kappa, confusion
matrices) computed on the items, and every interval comes from ``scipy.stats.bootstrap`` (percentile
method, resampling conversations). One bootstrap per dimension evaluates all graders on the same
resamples, so the interval of a difference between two graders is a paired bootstrap; McNemar's exact
test (``scipy.stats.binomtest`` on the discordant items) backs it for accuracy.

Inside the bootstrap, calling scikit-learn once per resample costs ~2 ms a call in input checks alone
(40-70 s per dimension at 1,000 resamples), and it has no batched form. So by default the resampled
values come from each resample's confusion counts, all resamples at once (the ``*_fast`` functions), and
before any interval is used that computation is checked against scikit-learn on the full sample: if they
ever disagree, the comparison fails rather than report an interval around a different number.
``BootstrapSettings(exact=True)`` calls scikit-learn on every resample instead; the tests check that
both give the same intervals.

Macro-F1 averages the F1 of the labels the gold set uses (a prediction of another label still costs
recall), leaving out a label absent from a resample. Multi-label dimensions: accuracy is exact-match
(every label right), micro-F1 counts every label given or expected, kappa is pooled over the item x label
yes/no decisions, and each label also gets its own kappa. A label absent from a resample scores F1 0
there (scikit-learn's ``zero_division=0``), so rare labels have wide, pessimistic intervals.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel
from scipy import stats
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

METHOD = "percentile"
HEADLINE = ("accuracy", "macro_f1", "kappa")
MULTI_HEADLINE = ("accuracy", "micro_f1", "macro_f1", "kappa")
TOLERANCE = 1e-9
Floats = NDArray[np.float64]
Index = NDArray[np.intp]
Statistic = Callable[[Index], Floats]


class Interval(BaseModel):
    """A point estimate and its bootstrap confidence interval (None where undefined)."""

    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    exact: bool = False
    """Call scikit-learn on every resample (same resamples, same intervals, ~200x slower)."""


class LabelScore(BaseModel):
    label: str
    support: int
    predicted: int
    precision: float
    recall: float
    f1: Interval
    kappa: float | None = None


class Confusion(BaseModel):
    """Single-label: rows are gold labels, columns predictions. Multi-label: per label TP, FN, FP, TN."""

    rows: list[str]
    columns: list[str]
    matrix: list[list[int]]


class Scores(BaseModel):
    grader: str
    n: int
    accuracy: Interval
    macro_f1: Interval
    kappa: Interval
    micro_f1: Interval | None = None
    labels: list[LabelScore]
    confusion: Confusion


class Difference(BaseModel):
    """``delta`` is b minus a; significant when its paired interval excludes zero."""

    metric: str
    a: float | None
    b: float | None
    delta: Interval
    significant: bool


class McNemar(BaseModel):
    """Items only ``a`` got right, items only ``b`` got right, and the exact two-sided p-value."""

    a_only: int
    b_only: int
    p_value: float


class Paired(BaseModel):
    a: str
    b: str
    n: int
    differences: list[Difference]
    mcnemar: McNemar
    verdict: str


class Agreement(BaseModel):
    """Two graders against each other (no gold needed): Cohen's kappa and the share of equal answers."""

    a: str
    b: str
    n: int
    kappa: Interval
    observed: float


class Evaluation(BaseModel):
    scores: list[Scores]
    paired: list[Paired]
    agreement: list[Agreement]


class Layout:
    """Names the slots of a statistic's vector, so one bootstrap carries every figure of a dimension."""

    def __init__(self) -> None:
        self.slots: dict[tuple[str, ...], int] = {}

    def add(self, *key: str) -> None:
        self.slots[key] = len(self.slots)

    def interval(self, key: tuple[str, ...], point: Floats, low: Floats, high: Floats) -> Interval:
        i = self.slots[key]
        return Interval(value=rounded(point[i]), low=rounded(low[i]), high=rounded(high[i]))


def rounded(value: Any) -> float | None:
    number = float(value)
    return None if np.isnan(number) else round(number, 6)


# -- scikit-learn: the definition of every figure ---------------------------------------------------------


def cohen_kappa(a: Any, b: Any) -> float:
    return float(cohen_kappa_score(a, b, replace_undefined_by=np.nan))


def single_figures(t: Index, p: Index, gold_labels: list[int], used: list[int]) -> list[float]:
    return [
        float(accuracy_score(t, p)),
        float(f1_score(t, p, labels=gold_labels, average="macro", zero_division=np.nan)),
        cohen_kappa(t, p),
        *f1_score(t, p, labels=used, average=None, zero_division=0),
    ]


def indicator(x: Any) -> Any:
    """scikit-learn reads a one-column indicator as binary classes; an all-zero column keeps it multilabel
    and changes no F1 (it has no positives, given or expected). Kappa is never computed on it."""
    return np.hstack([x, np.zeros_like(x[:, :1])]) if x.shape[1] == 1 else x


def multi_figures(full_t: Any, full_p: Any, t: Any, p: Any, gold_labels: list[int]) -> list[float]:
    exact = float(accuracy_score(full_t, full_p))
    width = t.shape[1]
    if width == 0:  # no label anywhere: every (empty) answer is right; F1 and kappa are undefined
        return [exact, np.nan, np.nan, np.nan]
    kappa = cohen_kappa(t.ravel(), p.ravel())
    t, p = indicator(t), indicator(p)
    macro = (
        f1_score(t, p, labels=gold_labels, average="macro", zero_division=np.nan) if gold_labels else np.nan
    )
    return [
        exact,
        float(f1_score(t, p, average="micro", zero_division=0)),
        float(macro),
        kappa,
        *f1_score(t, p, average=None, zero_division=0)[:width],
    ]


# -- the same figures from confusion counts, for all resamples at once ------------------------------------


def cell_counts(cells: Index, idx: Index, size: int) -> Floats:
    """Per resample (row of ``idx``), how many items fall in each cell: shape (resamples, size)."""
    offsets = cells[idx] + size * np.arange(idx.shape[0])[:, None]
    return (
        np.bincount(offsets.ravel(), minlength=size * idx.shape[0]).reshape(idx.shape[0], size).astype(float)
    )


def confusion_tables(first: Index, second: Index, idx: Index, k: int) -> Floats:
    """Per resample, the k x k table of (first, second) label codes: shape (resamples, k, k)."""
    return cell_counts(first * k + second, idx, k * k).reshape(-1, k, k)


def draw_counts(idx: Index, n: int) -> Floats:
    """How often each item is drawn in each resample: shape (resamples, n)."""
    return cell_counts(np.arange(n), idx, n)


def ratio(top: Floats, bottom: Floats, undefined: float) -> Floats:
    safe = np.where(bottom > 0, bottom, 1.0)
    return np.where(bottom > 0, top / safe, undefined)


def kappa_of_tables(confusion: Floats) -> Floats:
    """Cohen's kappa of each (resamples, L, L) confusion table; nan where chance agreement is total."""
    n = confusion.sum(axis=(1, 2))
    observed = np.trace(confusion, axis1=1, axis2=2) / n
    chance = (confusion.sum(axis=2) * confusion.sum(axis=1)).sum(axis=1) / n**2
    return ratio(observed - chance, 1 - chance, np.nan)


def kappa_of_counts(both: Floats, first: Floats, second: Floats, total: Floats) -> Floats:
    """Kappa from pooled yes/no counts: both yes, only the first yes, only the second yes, all decisions."""
    neither = total - both - first - second
    table = np.stack([np.stack([both, first], axis=-1), np.stack([second, neither], axis=-1)], axis=-2)
    return kappa_of_tables(table)


def macro_average(f1: Floats, defined: Any, labels: list[int]) -> Floats:
    """Mean F1 over ``labels``, leaving out those undefined in a resample (no gold, no prediction)."""
    present = defined[:, labels]
    return ratio((f1[:, labels] * present).sum(axis=1), present.sum(axis=1).astype(float), np.nan)


def single_figures_fast(confusion: Floats, gold_labels: list[int]) -> tuple[Floats, Floats, Floats, Floats]:
    """Accuracy, macro-F1 (over the gold labels), kappa and per-label F1 from confusion tables."""
    n = confusion.sum(axis=(1, 2))
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    both = confusion.sum(axis=2) + confusion.sum(axis=1)
    f1 = ratio(2 * hits, both, 0.0)
    return hits.sum(axis=1) / n, macro_average(f1, both > 0, gold_labels), kappa_of_tables(confusion), f1


def multi_figures_fast(
    weights: Floats, gold: Any, pred: Any, exact: Any, gold_labels: list[int]
) -> list[Floats]:
    """Exact-match accuracy, micro-F1, macro-F1, pooled kappa and per-label F1 for each resample."""
    n = weights.sum(axis=1)
    accuracy = weights @ exact / n
    if gold.shape[1] == 0:
        undefined = np.full_like(n, np.nan)
        return [accuracy, undefined, undefined, undefined]
    tp, fp, fn = weights @ (gold & pred), weights @ (~gold & pred), weights @ (gold & ~pred)
    decided = 2 * tp + fp + fn
    f1 = ratio(2 * tp, decided, 0.0)
    macro = macro_average(f1, decided > 0, gold_labels) if gold_labels else np.full_like(n, np.nan)
    micro = ratio(2 * tp.sum(axis=1), decided.sum(axis=1), 0.0)
    kappa = kappa_of_counts(tp.sum(axis=1), fn.sum(axis=1), fp.sum(axis=1), n * gold.shape[1])
    return [accuracy, micro, macro, kappa, *f1.T]


def bootstrap(exact: Statistic, fast: Statistic, n: int, settings: BootstrapSettings) -> tuple[Floats, ...]:
    """Point estimates (scikit-learn, all ``n`` items) and percentile intervals over resampled items.

    ``fast`` must give the figures of ``exact`` for every row of a (resamples, n) index array; it is
    checked against ``exact`` on the full sample before its resamples are used."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined metrics on small samples are expected, and reported
        point = np.asarray(exact(np.arange(n)), dtype=np.float64)
    with np.errstate(all="ignore"):
        check = fast(np.arange(n)[None, :])[:, 0]
    if not np.allclose(point, check, atol=TOLERANCE, equal_nan=True):
        worst = int(np.nanargmax(np.abs(point - check)))
        raise RuntimeError(
            f"bootstrap figures disagree with scikit-learn at slot {worst}: {check[worst]} != {point[worst]}"
        )
    if n < 2 or settings.resamples < 1:
        empty = np.full_like(point, np.nan)
        return point, empty, empty
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (np.arange(n),),
            exact if settings.exact else lambda idx, axis=-1: fast(idx),
            n_resamples=settings.resamples,
            confidence_level=settings.confidence,
            method=METHOD,
            vectorized=not settings.exact,
            rng=np.random.default_rng(settings.seed),
        )
    return point, result.confidence_interval.low, result.confidence_interval.high
