"""Comparing graders: metrics against values computed by hand, intervals, paired tests, cache, gate."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sqlmodel import Session
from typer.testing import CliRunner

from judge.cache import DiskVerdictCache
from judge.cli import app
from judge.compare import execute, start
from judge.compare_models import CompareRequest, GraderRef, parse_gate, parse_grader_ref
from judge.errors import InputError, NotFoundError
from judge.gold import GoldItem, import_gold_set
from judge.gold_maps import Truth
from judge.metrics import BootstrapSettings
from judge.providers.base import GraderSpec, JudgeReply, JudgeRequest, Usage, register
from judge.resources import SAMPLE_CONVERSATIONS
from judge.scoring import evaluate_multi, evaluate_single
from judge.store.conversations import ensure_project
from judge.store.db import engine
from judge.verdict import DimensionVerdict, LabelVerdict

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "name": "tiny",
    "version": 1,
    "dimensions": {
        "outcome": {
            "analytic": "failure_cause",
            "kind": "single",
            "question": "Did the assistant help?",
            "labels": [
                {"id": "good", "description": "it helped"},
                {"id": "bad", "description": "it did not help"},
            ],
        },
        "mood": {
            "analytic": "sentiment_emotion",
            "kind": "multi",
            "question": "Which moods does the user show?",
            "labels": [
                {"id": "happy", "description": "a happy user"},
                {"id": "sad", "description": "a sad user"},
            ],
        },
    },
}
# 40 items: gold good x20, bad x20; the grader is right on 28 (7 in 10):
# good->good 16, good->bad 4, bad->good 8, bad->bad 12.
GOLD = ["good"] * 20 + ["bad"] * 20
GUESS = ["good"] * 16 + ["bad"] * 4 + ["good"] * 8 + ["bad"] * 12


@register("oracle")
class OracleProvider:
    """Answers what its ``answers`` parameter says for each conversation id: a grader of known quality."""

    default_batch_size = 8

    def __init__(
        self, answers: dict[str, dict[str, list[str]]], model: str = "oracle", **params: Any
    ) -> None:
        self.answers = answers
        self.spec = GraderSpec(
            provider="oracle",
            model=model,
            params={"answers": answers, **params},
            prompt_name="oracle",
            prompt_version=1,
            prompt_hash="oracle-v1",
        )

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        verdicts = {
            c.id: {
                d: DimensionVerdict(labels=[LabelVerdict(label=label) for label in self.answers[c.id][d]])
                for d in request.dimensions
            }
            for c in request.conversations
        }
        usage = Usage(calls=1, prompt_tokens=100 * len(verdicts), completion_tokens=10, cost_usd=0.001)
        return JudgeReply(verdicts=verdicts, usage=usage, request={"ids": list(verdicts)})


def _items() -> list[GoldItem]:
    return [
        GoldItem(
            id=f"t-{i:02d}",
            messages=[{"role": "user", "content": f"question number {i}"}],
            labels={"outcome": gold, "mood": ["happy"] if i % 2 else []},
        )
        for i, gold in enumerate(GOLD)
    ]


def _answers(outcomes: list[str]) -> dict[str, dict[str, list[str]]]:
    return {
        f"t-{i:02d}": {"outcome": [o], "mood": ["happy"] if i % 4 == 1 else []}
        for i, o in enumerate(outcomes)
    }


def test_single_label_metrics_match_hand_computed_values():
    truths = [Truth((g,)) for g in GOLD]
    evaluation = evaluate_single(
        truths, {"guess": GUESS, "perfect": GOLD}, ["good", "bad"], BootstrapSettings(resamples=2000, seed=7)
    )
    guess, perfect = evaluation.scores
    assert guess.accuracy.value == pytest.approx(28 / 40)
    # kappa from the 2x2 table: observed 0.7; chance = P(gold good) P(pred good) + P(gold bad) P(pred bad)
    chance = (20 / 40) * (24 / 40) + (20 / 40) * (16 / 40)
    assert guess.kappa.value == pytest.approx((0.7 - chance) / (1 - chance))  # = 0.4
    f1_good, f1_bad = 2 * 16 / (20 + 24), 2 * 12 / (20 + 16)
    assert guess.macro_f1.value == pytest.approx((f1_good + f1_bad) / 2, abs=1e-6)
    assert guess.confusion.matrix == [[16, 4], [8, 12]]
    for estimate in (guess.accuracy, guess.kappa, guess.macro_f1):
        assert estimate.low is not None and estimate.high is not None
        assert estimate.low < estimate.value < estimate.high
    # accuracy on 40 items: standard error sqrt(0.7 x 0.3 / 40) = 0.072, so a 95% interval ~0.28 wide
    assert 0.18 < guess.accuracy.high - guess.accuracy.low < 0.40
    assert perfect.accuracy.value == 1 and perfect.kappa.value == 1
    paired = evaluation.paired[0]
    accuracy = paired.differences[0]
    assert accuracy.delta.value == pytest.approx(0.3) and accuracy.significant
    # McNemar: 12 items only the perfect grader gets right, none the other way: exact p = 2 x 0.5^12
    assert (paired.mcnemar.a_only, paired.mcnemar.b_only) == (0, 12)
    assert paired.mcnemar.p_value == pytest.approx(2 * 0.5**12, rel=1e-3)


def test_multi_label_metrics_match_hand_computed_values():
    truths = [Truth(("a",)), Truth(("a", "b")), Truth(()), Truth(("b",))]
    predicted = [("a",), ("a",), ("b",), ("b",)]
    scores = evaluate_multi(
        truths, {"g": predicted}, ["a", "b", "c"], BootstrapSettings(resamples=200)
    ).scores[0]
    assert scores.accuracy.value == pytest.approx(2 / 4)  # exact match on items 1 and 4
    assert scores.micro_f1 is not None and scores.micro_f1.value == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # pooled yes/no decisions: both yes 3, only gold 1, only grader 1, neither 3 -> observed 0.75, chance 0.5
    assert scores.kappa.value == pytest.approx(0.5)
    assert [label.label for label in scores.labels] == ["a", "b"]  # c never occurs
    assert scores.labels[0].f1.value == pytest.approx(1.0) and scores.labels[1].f1.value == pytest.approx(0.5)


def test_fast_intervals_equal_scikit_learn_on_every_resample():
    rng = np.random.default_rng(3)
    labels = ["a", "b", "c", "d"]
    truths = [Truth(tuple(dict.fromkeys(rng.choice(labels, rng.integers(1, 3))))) for _ in range(50)]
    single = {
        g: [str(rng.choice(labels)) if rng.random() > q else t.labels[0] for t in truths]
        for g, q in (("x", 0.7), ("y", 0.5))
    }
    fast = evaluate_single(truths, single, labels, BootstrapSettings(resamples=150, seed=2))
    exact = evaluate_single(truths, single, labels, BootstrapSettings(resamples=150, seed=2, exact=True))
    assert fast == exact
    multi_truths = [Truth(tuple(label for label in labels if rng.random() < 0.3)) for _ in range(50)]
    multi = {
        g: [
            tuple(label for label in labels if (label in t.labels) == (rng.random() < q))
            for t in multi_truths
        ]
        for g, q in (("x", 0.8), ("y", 0.6))
    }
    fast_multi = evaluate_multi(multi_truths, multi, labels, BootstrapSettings(resamples=150, seed=2))
    assert fast_multi == evaluate_multi(
        multi_truths, multi, labels, BootstrapSettings(resamples=150, seed=2, exact=True)
    )


def test_any_of_gold_scores_a_prediction_against_the_matching_label():
    truth = Truth(("hotel", "taxi"), any_of=True)
    assert truth.resolve("taxi") == "taxi" and truth.resolve("train") == "hotel"
    evaluation = evaluate_single(
        [truth, Truth(("train",))], {"g": ["taxi", "hotel"]}, ["hotel", "taxi", "train"], BootstrapSettings(0)
    )
    assert evaluation.scores[0].accuracy.value == 0.5
    assert evaluation.scores[0].confusion.rows == ["hotel", "taxi", "train"]


def test_grader_refs_and_gate_rules_parse_or_name_the_problem(tmp_path: Path):
    assert parse_grader_ref("local") == GraderRef(grader="local")
    assert parse_grader_ref("signals@travel") == GraderRef(grader="signals", rubric="travel")
    ref = parse_grader_ref(f"openai/gpt-4o-mini@{tmp_path / 'mine.yaml'}?temperature=0&api_base=http://x")
    assert ref.rubric == str(tmp_path / "mine.yaml") and ref.grader_options == {
        "temperature": 0,
        "api_base": "http://x",
    }
    assert (
        parse_grader_ref("vertex_ai/claude-3-5-sonnet@20240620").grader
        == "vertex_ai/claude-3-5-sonnet@20240620"
    )
    with pytest.raises(NotFoundError, match="unknown rubric 'nosuch'"):
        parse_grader_ref("local@nosuch")
    rules = parse_gate("kappa_drop<=0.05, topic:macro_f1_drop<=0.03")
    assert [(r.dimension, r.metric, r.limit) for r in rules] == [
        (None, "kappa", 0.05),
        ("topic", "macro_f1", 0.03),
    ]
    with pytest.raises(NotFoundError, match="valid choices: accuracy, kappa, macro_f1, micro_f1"):
        parse_gate("precision_drop<=0.1")
    with pytest.raises(InputError, match="expected"):
        parse_gate("kappa<0.1")


def test_compare_through_the_runner_is_cached_and_stored(database_url: str, tmp_path: Path):
    rubric = tmp_path / "tiny.yaml"
    rubric.write_text(yaml.safe_dump(TINY))
    guess = GraderRef(
        grader="oracle", rubric=str(rubric), grader_options={"answers": _answers(GUESS)}, name="guess"
    )
    perfect = GraderRef(
        grader="oracle", rubric=str(rubric), grader_options={"answers": _answers(GOLD)}, name="perfect"
    )
    request = CompareRequest(gold="tiny", graders=[perfect, guess], resamples=500, gate="accuracy_drop<=0.05")
    cache = DiskVerdictCache(tmp_path / "cache")
    with Session(engine(database_url), expire_on_commit=False) as db:
        owner = ensure_project(db, "default")
        import_gold_set(db, owner, "tiny", _items())
        first = asyncio.run(execute(db, start(db, owner, request), cache))
        second = asyncio.run(execute(db, start(db, owner, request), cache))
    outcome = {d.dimension: d for d in first.dimensions}["outcome"]
    assert outcome.evaluation is not None
    scores = {s.grader: s for s in outcome.evaluation.scores}
    assert scores["guess"].accuracy.value == pytest.approx(0.7) and scores[
        "guess"
    ].kappa.value == pytest.approx(0.4)
    assert scores["majority"].accuracy.value == pytest.approx(0.5)
    assert [c.judged for c in outcome.coverage] == [40, 40]
    calls = [g.usage.calls_this_comparison for g in first.graders]
    assert all(c > 0 for c in calls)
    assert [g.usage.calls_this_comparison for g in second.graders] == [0, 0]
    assert all(
        g.usage.cached_this_comparison == g.usage.judgements_this_comparison == 80 for g in second.graders
    )
    # cost per 1,000 conversations from the stored usage, the same on the cached re-run
    assert second.graders[0].usage.per_1k == first.graders[0].usage.per_1k
    assert first.graders[0].usage.per_1k["prompt_tokens"] == pytest.approx(100_000)
    assert first.gate is not None and not first.gate.passed
    assert "outcome accuracy dropped by 0.300" in first.gate.failures[0]
    assert second.model_dump(exclude={"id", "created_at", "graders"}) == first.model_dump(
        exclude={"id", "created_at", "graders"}
    )


def _sample_gold(path: Path) -> Path:
    """The bundled sample conversations with their intended labels, as a gold file of our format."""
    labels = {
        row["id"]: row
        for row in map(json.loads, (SAMPLE_CONVERSATIONS.parent / "sample_conversations.labels.jsonl").open())
    }
    with path.open("w") as out:
        for line in SAMPLE_CONVERSATIONS.open():
            row = json.loads(line)
            gold = {k: v for k, v in labels[row["id"]].items() if k != "id"}
            item = {
                "id": row["id"],
                "messages": row["messages"],
                "metadata": row.get("metadata", {}),
                "labels": gold,
            }
            out.write(json.dumps(item) + "\n")
    return path


def _shuffled_rubric(folder: Path) -> Path:
    """The default rubric with its topic descriptions and examples moved to the wrong labels."""
    rubric = yaml.safe_load((ROOT / "rubrics" / "default.yaml").read_text())
    rubric["name"] = "default-shuffled"
    labels = rubric["dimensions"]["topic"]["labels"]
    texts = [(label["description"], label.get("examples", [])) for label in labels]
    shift = random.Random(0).randrange(1, len(labels))
    for i, label in enumerate(labels):  # a rotation: no label keeps its own description
        label["description"], label["examples"] = texts[(i + shift) % len(labels)]
    path = folder / "default-shuffled.yaml"
    path.write_text(yaml.safe_dump(rubric, sort_keys=False, allow_unicode=True))
    return path


def test_gate_blocks_a_shuffled_rubric_and_passes_the_default_against_itself(tmp_path: Path):
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'gate.db'}"
    imported = runner.invoke(
        app, ["gold", "import", str(_sample_gold(tmp_path / "sample.jsonl")), "--name", "sample", "--db", db]
    )
    assert imported.exit_code == 0, imported.output
    gate = "kappa_drop<=0.05,macro_f1_drop<=0.03"
    common = ["compare", "--gold", "sample", "--gate", gate, "--resamples", "500", "--db", db]
    same = runner.invoke(
        app,
        [
            *common,
            "--baseline",
            "local",
            "--candidate",
            "local",
            "--dimension",
            "topic",
            "--html",
            str(tmp_path / "same.html"),
        ],
    )
    assert same.exit_code == 0, same.output
    assert "gate passed" in same.output
    shuffled = _shuffled_rubric(tmp_path)
    worse = runner.invoke(
        app,
        [
            *common,
            "--baseline",
            "local",
            "--candidate",
            f"local@{shuffled}",
            "--dimension",
            "topic",
            "--html",
            str(tmp_path / "worse.html"),
        ],
    )
    assert worse.exit_code == 3, worse.output
    assert "topic kappa dropped by" in worse.output and "topic macro_f1 dropped by" in worse.output
    page = (tmp_path / "worse.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "FAILED" in page
    listed = runner.invoke(app, ["compare", "--list", "--db", db], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "local@default-shuffled" in listed.output and "failed" in listed.output
