"""Scoring graders: against gold labels (single- and multi-label dimensions) and against each other.

One bootstrap per dimension carries every grader's figures on the same resamples (``judge.metrics``), so
each difference between two graders gets a paired interval; McNemar's exact test backs it for accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.preprocessing import MultiLabelBinarizer

from judge.gold_maps import Truth
from judge.metrics import (
    HEADLINE,
    MULTI_HEADLINE,
    Agreement,
    BootstrapSettings,
    Confusion,
    Difference,
    Evaluation,
    Floats,
    Index,
    LabelScore,
    Layout,
    McNemar,
    Paired,
    Scores,
    bootstrap,
    cohen_kappa,
    confusion_tables,
    draw_counts,
    indicator,
    kappa_of_counts,
    kappa_of_tables,
    multi_figures,
    multi_figures_fast,
    rounded,
    single_figures,
    single_figures_fast,
)


def evaluate_single(
    truths: Sequence[Truth],
    predictions: dict[str, list[str]],
    labels: list[str],
    settings: BootstrapSettings,
    compare: Sequence[str] | None = None,
) -> Evaluation:
    """Score single-label predictions (aligned with ``truths``) of each grader against the gold labels.
    ``compare`` names the graders to test pairwise and to measure agreement between (default: all)."""
    code = {label: i for i, label in enumerate(labels)}
    names = list(predictions)
    gold = {
        g: np.array([code[t.resolve(p)] for t, p in zip(truths, predictions[g], strict=True)]) for g in names
    }
    pred = {g: np.array([code[p] for p in predictions[g]]) for g in names}
    used = sorted({int(c) for g in names for c in (*gold[g], *pred[g])})
    gold_labels = sorted({code[label] for t in truths for label in t.labels})
    pairs = list(combinations(compare if compare is not None else names, 2))
    layout = Layout()
    for g in names:
        for metric in HEADLINE:
            layout.add(g, metric)
        for c in used:
            layout.add(g, "f1", labels[c])
    for a, b in pairs:
        for metric in HEADLINE:
            layout.add("delta", a, b, metric)
        layout.add("agreement", a, b)

    def exact(idx: Index) -> Floats:
        figures = {g: single_figures(gold[g][idx], pred[g][idx], gold_labels, used) for g in names}
        values = [v for g in names for v in figures[g]]
        for a, b in pairs:
            values += [figures[b][m] - figures[a][m] for m in range(len(HEADLINE))]
            values.append(cohen_kappa(pred[a][idx], pred[b][idx]))
        return np.asarray(values, dtype=np.float64)

    def fast(idx: Index) -> Floats:
        heads: dict[str, tuple[Floats, ...]] = {}
        rows: list[Floats] = []
        for g in names:
            table = confusion_tables(gold[g], pred[g], idx, len(labels))
            accuracy, macro, kappa, f1 = single_figures_fast(table, gold_labels)
            heads[g] = (accuracy, macro, kappa)
            rows += [accuracy, macro, kappa, *f1[:, used].T]
        for a, b in pairs:
            rows += [heads[b][m] - heads[a][m] for m in range(len(HEADLINE))]
            table = confusion_tables(pred[a], pred[b], idx, len(labels))
            rows.append(kappa_of_tables(table))
        return np.stack(rows)

    point, low, high = bootstrap(exact, fast, len(truths), settings)
    scores = [_single_scores(g, gold[g], pred[g], labels, used, layout, (point, low, high)) for g in names]
    correct = {g: gold[g] == pred[g] for g in names}
    return Evaluation(
        scores=scores,
        paired=[_paired(a, b, layout, (point, low, high), HEADLINE, scores, correct) for a, b in pairs],
        agreement=_agreements(pairs, pred, layout, (point, low, high)),
    )


def _agreements(
    pairs: list[tuple[str, str]], predictions: dict[str, Any], layout: Layout, ci: tuple[Floats, ...]
) -> list[Agreement]:
    """Grader-versus-grader kappa (with its interval) and raw agreement, for each pair."""
    point, low, high = ci
    return [
        Agreement(
            a=a,
            b=b,
            n=len(predictions[a]),
            kappa=layout.interval(("agreement", a, b), point, low, high),
            observed=round(float(accuracy_score(predictions[a], predictions[b])), 6),
        )
        for a, b in pairs
    ]


def _single_scores(
    g: str, t: Index, p: Index, labels: list[str], used: list[int], layout: Layout, ci: tuple[Floats, ...]
) -> Scores:
    precision, recall, _f1, _support = precision_recall_fscore_support(
        t, p, labels=used, average=None, zero_division=0
    )
    names = [labels[c] for c in used]
    return Scores(
        grader=g,
        n=len(t),
        accuracy=layout.interval((g, "accuracy"), *ci),
        macro_f1=layout.interval((g, "macro_f1"), *ci),
        kappa=layout.interval((g, "kappa"), *ci),
        labels=[
            LabelScore(
                label=labels[c],
                support=int((t == c).sum()),
                predicted=int((p == c).sum()),
                precision=round(float(precision[k]), 6),
                recall=round(float(recall[k]), 6),
                f1=layout.interval((g, "f1", labels[c]), *ci),
            )
            for k, c in enumerate(used)
        ],
        confusion=Confusion(rows=names, columns=names, matrix=confusion_matrix(t, p, labels=used).tolist()),
    )


def evaluate_multi(
    truths: Sequence[Truth],
    predictions: dict[str, list[tuple[str, ...]]],
    labels: list[str],
    settings: BootstrapSettings,
    compare: Sequence[str] | None = None,
) -> Evaluation:
    """Score multi-label predictions (label tuples aligned with ``truths``) against the gold labels."""
    binarizer = MultiLabelBinarizer(classes=labels)
    gold_all = binarizer.fit_transform([t.labels for t in truths]).astype(bool)
    names = list(predictions)
    pred_all = {g: binarizer.transform(predictions[g]).astype(bool) for g in names}
    active = gold_all.any(axis=0)
    for g in names:
        active |= pred_all[g].any(axis=0)
    used = [label for label, keep in zip(labels, active, strict=True) if keep]
    gold = gold_all[:, active]
    pred = {g: pred_all[g][:, active] for g in names}
    gold_labels = [k for k in range(len(used)) if gold[:, k].any()]
    exact_match = {g: (gold_all == pred_all[g]).all(axis=1) for g in names}
    pairs = list(combinations(compare if compare is not None else names, 2))
    layout = Layout()
    for g in names:
        for metric in MULTI_HEADLINE:
            layout.add(g, metric)
        for label in used:
            layout.add(g, "f1", label)
    for a, b in pairs:
        for metric in MULTI_HEADLINE:
            layout.add("delta", a, b, metric)
        layout.add("agreement", a, b)
    heads = len(MULTI_HEADLINE)

    def exact(idx: Index) -> Floats:
        figures = {
            g: multi_figures(gold_all[idx], pred_all[g][idx], gold[idx], pred[g][idx], gold_labels)
            for g in names
        }
        values = [v for g in names for v in figures[g]]
        for a, b in pairs:
            values += [figures[b][m] - figures[a][m] for m in range(heads)]
            values.append(cohen_kappa(pred[a][idx].ravel(), pred[b][idx].ravel()) if used else np.nan)
        return np.asarray(values, dtype=np.float64)

    def fast(idx: Index) -> Floats:
        weights = draw_counts(idx, len(truths))
        figures = {g: multi_figures_fast(weights, gold, pred[g], exact_match[g], gold_labels) for g in names}
        rows = [row for g in names for row in figures[g]]
        for a, b in pairs:
            rows += [figures[b][m] - figures[a][m] for m in range(heads)]
            first, second = pred[a], pred[b]
            rows.append(
                kappa_of_counts(
                    (weights @ (first & second)).sum(axis=1),
                    (weights @ (first & ~second)).sum(axis=1),
                    (weights @ (~first & second)).sum(axis=1),
                    weights.sum(axis=1) * len(used),
                )
            )
        return np.stack(rows)

    point, low, high = bootstrap(exact, fast, len(truths), settings)
    scores = [_multi_scores(g, gold, pred[g], used, layout, (point, low, high)) for g in names]
    return Evaluation(
        scores=scores,
        paired=[
            _paired(a, b, layout, (point, low, high), MULTI_HEADLINE, scores, exact_match) for a, b in pairs
        ],
        agreement=_agreements(pairs, pred_all, layout, (point, low, high)),
    )


def _multi_scores(
    g: str, gold: Any, pred: Any, used: list[str], layout: Layout, ci: tuple[Floats, ...]
) -> Scores:
    labels: list[LabelScore] = []
    rows: list[list[int]] = []
    if used:
        precision, recall, _f1, _support = precision_recall_fscore_support(
            indicator(gold), indicator(pred), average=None, zero_division=0
        )
        matrices = multilabel_confusion_matrix(indicator(gold), indicator(pred))[: len(used)]
        for k, (label, matrix) in enumerate(zip(used, matrices, strict=True)):
            (tn, fp), (fn, tp) = matrix.tolist()
            rows.append([tp, fn, fp, tn])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kappa = cohen_kappa(gold[:, k], pred[:, k])
            labels.append(
                LabelScore(
                    label=label,
                    support=int(gold[:, k].sum()),
                    predicted=int(pred[:, k].sum()),
                    precision=round(float(precision[k]), 6),
                    recall=round(float(recall[k]), 6),
                    f1=layout.interval((g, "f1", label), *ci),
                    kappa=rounded(kappa),
                )
            )
    return Scores(
        grader=g,
        n=len(gold),
        accuracy=layout.interval((g, "accuracy"), *ci),
        macro_f1=layout.interval((g, "macro_f1"), *ci),
        kappa=layout.interval((g, "kappa"), *ci),
        micro_f1=layout.interval((g, "micro_f1"), *ci),
        labels=labels,
        confusion=Confusion(rows=used, columns=["TP", "FN", "FP", "TN"], matrix=rows),
    )


def _paired(
    a: str,
    b: str,
    layout: Layout,
    ci: tuple[Floats, ...],
    metrics: Sequence[str],
    scores: list[Scores],
    correct: dict[str, Any],
) -> Paired:
    by_name = {s.grader: s for s in scores}
    differences = []
    for metric in metrics:
        delta = layout.interval(("delta", a, b, metric), *ci)
        significant = delta.low is not None and delta.high is not None and (delta.low > 0 or delta.high < 0)
        differences.append(
            Difference(
                metric=metric,
                a=getattr(by_name[a], metric).value,
                b=getattr(by_name[b], metric).value,
                delta=delta,
                significant=significant,
            )
        )
    a_only = int((correct[a] & ~correct[b]).sum())
    b_only = int((correct[b] & ~correct[a]).sum())
    p_value = float(stats.binomtest(a_only, a_only + b_only).pvalue) if a_only + b_only else 1.0
    return Paired(
        a=a,
        b=b,
        n=len(correct[a]),
        differences=differences,
        mcnemar=McNemar(a_only=a_only, b_only=b_only, p_value=round(p_value, 6)),
        verdict=_verdict(b, differences),
    )


def _verdict(b: str, differences: list[Difference]) -> str:
    better = [d.metric for d in differences if d.significant and (d.delta.value or 0) > 0]
    worse = [d.metric for d in differences if d.significant and (d.delta.value or 0) < 0]
    parts = []
    if better:
        parts.append(f"{b} better on {', '.join(better)}")
    if worse:
        parts.append(f"{b} worse on {', '.join(worse)}")
    return "; ".join(parts) if parts else "no significant difference"


def agreement_only(
    predictions: dict[str, list[Any]], kind: str, labels: list[str], settings: BootstrapSettings
) -> list[Agreement]:
    """Graders against each other on a dimension without gold labels: kappa with its interval."""
    names = list(predictions)
    pairs = list(combinations(names, 2))
    if not pairs:
        return []
    n = len(predictions[names[0]])
    layout = Layout()
    for a, b in pairs:
        layout.add(a, b)
    if kind == "multi":
        binarizer = MultiLabelBinarizer(classes=labels)
        full = {g: binarizer.fit_transform(predictions[g]).astype(bool) for g in names}
        active = np.zeros(len(labels), dtype=bool)
        for g in names:
            active |= full[g].any(axis=0)
        coded = {g: full[g][:, active] for g in names}

        def fast(idx: Index) -> Floats:
            weights = draw_counts(idx, n)
            return np.stack(
                [
                    kappa_of_counts(
                        (weights @ (coded[a] & coded[b])).sum(axis=1),
                        (weights @ (coded[a] & ~coded[b])).sum(axis=1),
                        (weights @ (~coded[a] & coded[b])).sum(axis=1),
                        weights.sum(axis=1) * int(active.sum()),
                    )
                    for a, b in pairs
                ]
            )

        observed = {(a, b): float(accuracy_score(full[a], full[b])) for a, b in pairs}
    else:
        code = {label: i for i, label in enumerate(labels)}
        coded = {g: np.array([code[p] for p in predictions[g]]) for g in names}
        size = len(labels)

        def fast(idx: Index) -> Floats:
            return np.stack(
                [kappa_of_tables(confusion_tables(coded[a], coded[b], idx, size)) for a, b in pairs]
            )

        observed = {(a, b): float(accuracy_score(coded[a], coded[b])) for a, b in pairs}

    def exact(idx: Index) -> Floats:
        if coded[names[0]].size == 0:  # no grader gave any label: kappa is undefined
            return np.full(len(pairs), np.nan)
        return np.asarray([cohen_kappa(coded[a][idx].ravel(), coded[b][idx].ravel()) for a, b in pairs])

    point, low, high = bootstrap(exact, fast, n, settings)
    return [
        Agreement(
            a=a,
            b=b,
            n=n,
            kappa=layout.interval((a, b), point, low, high),
            observed=round(observed[(a, b)], 6),
        )
        for a, b in pairs
    ]
