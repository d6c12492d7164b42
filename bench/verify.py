"""Check in the database that a run stored exactly one judgement per selected conversation and dimension:
none lost, none duplicated, each labelled or unscored with its reason, and counters that match."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select


def run_integrity(url: str, run_id: int, expected_conversations: int | None = None) -> dict[str, Any]:
    from judge.store.conversations import select_latest
    from judge.store.db import session
    from judge.store.tables import ConversationRecord, Judgement, JudgementLabel, Run

    with session(url) as db:
        run = db.get(Run, run_id)
        assert run is not None, f"no run {run_id}"
        options = run.options
        selected = [
            row
            for rows in select_latest(db, run.project_id, options.get("ids"), options.get("limit"), 5000)
            for row in rows
        ]
        dimensions = list(run.dimensions)
        expected = {(row.id, d) for row in selected for d in dimensions}
        stored = db.execute(
            select(Judgement.conversation_id, Judgement.dimension, Judgement.status, Judgement.reason).where(
                Judgement.run_id == run_id
            )
        ).all()
        counts = Counter((c, d) for c, d, _s, _r in stored)
        labels = dict(
            db.execute(
                select(JudgementLabel.judgement_id, func.count())
                .where(JudgementLabel.run_id == run_id)
                .group_by(JudgementLabel.judgement_id)
            ).all()
        )
        judgement_labels = db.execute(
            select(Judgement.id, Judgement.status).where(Judgement.run_id == run_id)
        ).all()
        names = dict(
            db.execute(
                select(ConversationRecord.id, ConversationRecord.external_id).where(
                    ConversationRecord.project_id == run.project_id
                )
            ).all()
        )
        run_counters = {"judged": run.judged, "conversations": run.conversations, "status": run.status}
    unscored = [(c, d, r) for c, d, s, r in stored if s == "unscored"]
    labels_on_unscored = sum(
        1 for jid, status in judgement_labels if status == "unscored" and labels.get(jid)
    )
    missing = expected - set(counts)
    extra = set(counts) - expected
    duplicated = sum(1 for n in counts.values() if n > 1)
    result = {
        "run_id": run_id,
        "selected": len(selected),
        "pairs": len(stored),
        "expected": len(expected),
        "missing": len(missing),
        "extra": len(extra),
        "duplicated": duplicated,
        "unscored": len(unscored),
        "unscored_without_reason": sum(1 for _c, _d, r in unscored if not r),
        "labels_on_unscored": labels_on_unscored,
        "labelled": len(stored) - len(unscored),
        "unscored_conversations": sorted({names[c] for c, _d, _r in unscored}),
        "counters": run_counters,
        "counters_match": run_counters["judged"] == len(stored)
        and run_counters["conversations"] == len(selected),
    }
    size_ok = expected_conversations is None or len(selected) == expected_conversations
    result["ok"] = (
        size_ok
        and not missing
        and not extra
        and not duplicated
        and result["unscored_without_reason"] == 0
        and labels_on_unscored == 0
    )
    return result
