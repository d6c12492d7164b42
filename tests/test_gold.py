"""Gold sets: the format, the adapters of the shared files, label maps, storage, and the signals grader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, col, func, select
from typer.testing import CliRunner

from judge.cli import app
from judge.conversation import Conversation
from judge.errors import ConflictError, InputError, NotFoundError
from judge.gold import GoldItem, data_project_name, dbdc3, detect_adapter, import_gold_set, read_gold, uss
from judge.gold_maps import check_map, identity_map, load_label_map, parse_label_map, truth_columns
from judge.providers.signals_only import decide
from judge.rubric import load_rubric
from judge.signals import detect
from judge.store.conversations import ensure_project
from judge.store.db import engine
from judge.store.gold_tables import GoldItemRow
from judge.store.tables import ConversationRecord, Project

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "gold"
MAPS = ROOT / "gold" / "maps"
OWN = ROOT / "gold" / "own" / "own_gold.jsonl"

USS_LINE = {
    "id": "uss-mwoz-0042",
    "source": "sunnweiwei/user-satisfaction-simulation@8ba06bd:dataset/MWOZ.txt#session42",
    "messages": [
        {"role": "user", "content": "I need a cheap hotel and a taxi to it."},
        {"role": "assistant", "content": "The Alpha guesthouse is cheap. Shall I book a taxi?"},
        {"role": "user", "content": "Yes please, thanks."},
    ],
    "labels": {
        "topic_intent": {"domains": ["hotel", "taxi"]},
        "sentiment_emotion": None,
        "business_risk": None,
        "implicit_feedback": {"satisfaction": "satisfied", "rephrase_retry": None, "frustration": None},
        "failure_cause": None,
        "turn_labels": [{"i": 0, "act": "Hotel-Inform", "sat": [4, 4, 5]}],
        "raw": {"overall_satisfaction_scores": [4, 4, 5], "overall_satisfaction_mean": 4.33},
        "meta": {"language": "en", "corpus": "MultiWOZ 2.1"},
    },
}
DBDC3_LINE = {
    "id": "dbdc3-en-CIC_115-CIC0003",
    "source": "dbd-challenge/dbdc3@c0927f9:docs/data/DBDC3.zip!DBDC3/dbdc3_revised/en/dev/CIC_115/CIC0003",
    "messages": [
        {"role": "assistant", "content": "Hello. Ask me anything."},
        {"role": "user", "content": "Is hunting requeres an license?"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Is hunting requires an license?"},
    ],
    "labels": {
        "topic_intent": None,
        "sentiment_emotion": None,
        "business_risk": None,
        "implicit_feedback": None,
        "failure_cause": {"failure_present": True, "cause": None},
        "turn_labels": [{"i": 2, "OTX": [2, 3, 25], "plurality": "X"}],
        "raw": {"dialogue-id": "CIC0003"},
        "meta": {"language": "en", "subset": "CIC_115", "n_annotators_per_system_turn": 30},
    },
}


def test_adapters_read_the_shared_shapes():
    assert detect_adapter(USS_LINE) == "uss" and detect_adapter(DBDC3_LINE) == "dbdc3"
    assert detect_adapter({"id": "x", "messages": [], "labels": {"topic": "other"}}) == "native"
    item = GoldItem.model_validate(uss(USS_LINE))
    assert item.labels == {"domains": ["hotel", "taxi"], "satisfaction": "satisfied"}
    assert item.raters == {"satisfaction": 3} and item.metadata == {"language": "en"}
    assert item.conversation().metadata["source"] == USS_LINE["source"]
    failed = GoldItem.model_validate(dbdc3(DBDC3_LINE))
    assert failed.labels == {"failure_present": "true"} and failed.raters == {"failure_present": 30}
    assert failed.conversation().messages[2].content == ""  # the bot sent nothing: kept as it was


def test_read_gold_reports_bad_lines_by_number_and_field(tmp_path: Path):
    good = {"id": "g-1", "messages": [{"role": "user", "content": "hi"}], "labels": {"topic": "other"}}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "g-2", "messages": [{"role": "robot", "content": "hi"}]}),
        json.dumps({**good, "id": "g-3", "messages": [{"role": "assistant", "content": "only me"}]}),
        json.dumps(good),
        json.dumps({**good, "id": "g-4", "labels": {"topic": 3}}),
    ]
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items, problems, adapter = read_gold(path)
    assert adapter == "native" and [i.id for i in items] == ["g-1"]
    assert [p.line for p in problems] == [2, 3, 4, 5, 6]
    assert problems[1].message.startswith("messages.0.role:")
    assert "at least one user message" in problems[2].message
    assert "appears twice" in problems[3].message and problems[4].message.startswith("labels.topic")
    with pytest.raises(NotFoundError, match="valid choices: auto, dbdc3, native, uss"):
        read_gold(path, "csv")


def test_label_maps_translate_count_exclusions_and_never_guess():
    default = load_rubric("default")
    mapping = parse_label_map(
        yaml.safe_load(
            """
            rubric: default
            dimensions:
              failure: {from: broke, labels: {true: failed, false: none}, collapse: {none: none, "*": failed}}
              topic: {from: asked, labels: {refund: billing.refund, weather: ~}}
            """
        ),
        "test",
    )
    assert mapping.dimensions["failure"].labels == {"true": "failed", "false": "none"}
    check_map(mapping, default, "test")
    items = [
        ("a", {"broke": "true", "asked": "refund"}),
        ("b", {"broke": "false", "asked": "weather"}),
        ("c", {"broke": None, "asked": "poetry"}),
        ("d", {"asked": ["refund", "poetry"]}),
    ]
    columns = truth_columns(items, mapping, default)
    failure, topic = columns["failure"], columns["topic"]
    assert {k: v.labels for k, v in failure.truths.items()} == {"a": ("failed",), "b": ("none",)}
    assert failure.unlabelled == 2 and failure.labels == ["none", "failed"]
    assert failure.scoring_label("wrong_answer") == "failed" and failure.scoring_label("none") == "none"
    assert list(topic.truths) == ["a"] and topic.excluded == {"weather": 1, "poetry": 2}
    identity = identity_map(default, ["topic", "emotion", "unknown_field"])
    assert identity is not None and set(identity.dimensions) == {"topic", "emotion"}
    own = truth_columns([("x", {"topic": "no.such.topic", "emotion": ["grateful"]})], identity, default)
    assert own["topic"].excluded == {"no.such.topic": 1} and own["emotion"].truths["x"].labels == (
        "grateful",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("dimensions: {mood: {from: x}}", "dimension 'mood' is not in rubric 'default'"),
        ("dimensions: {topic: {from: x, labels: {a: billing.nope}}}", "valid choices: account.login"),
        ("dimensions: {failure: {from: x, collapse: {none: none}}}", "leaves off_topic_request"),
        ("dimensions: {emotion: {from: x, collapse: {'*': any}}}", "multi-label"),
        ("dimensions: {topic: {from: x, labels: {a: other}, extra: 1}}", "dimensions.topic.extra"),
    ],
)
def test_bad_label_maps_name_the_dimension_and_label(body: str, message: str):
    with pytest.raises(InputError, match=message):
        check_map(parse_label_map(yaml.safe_load(body), "test"), load_rubric("default"), "test")


def test_the_shipped_maps_fit_their_rubrics():
    for name in ("uss-travel.yaml", "dbdc3-default.yaml"):
        mapping = load_label_map(MAPS / name)
        assert mapping.rubric is not None
        check_map(mapping, load_rubric(mapping.rubric), name)


@pytest.mark.skipif(not (SHARED / "uss_mwoz.jsonl").is_file(), reason="the shared gold files are not here")
def test_the_shared_gold_files_convert_without_loss():
    uss_items, problems, adapter = read_gold(SHARED / "uss_mwoz.jsonl")
    assert (len(uss_items), problems, adapter) == (1000, [], "uss")
    columns = truth_columns(
        [(i.id, i.labels) for i in uss_items], load_label_map(MAPS / "uss-travel.yaml"), load_rubric("travel")
    )
    assert len(columns["topic"].truths) == 999 and columns["topic"].unlabelled == 1
    assert not columns["topic"].excluded and sum(t.any_of for t in columns["topic"].truths.values()) > 700
    satisfaction = [t.labels[0] for t in columns["satisfaction"].truths.values()]
    assert (satisfaction.count("dissatisfied"), satisfaction.count("neutral")) == (53, 758)
    dbdc3_items, problems, adapter = read_gold(SHARED / "dbdc3_en.jsonl")
    assert (len(dbdc3_items), problems, adapter) == (615, [], "dbdc3")
    failure = truth_columns(
        [(i.id, i.labels) for i in dbdc3_items],
        load_label_map(MAPS / "dbdc3-default.yaml"),
        load_rubric("default"),
    )["failure"]
    assert [t.labels[0] for t in failure.truths.values()].count("failed") == 480


@pytest.mark.skipif(not OWN.is_file(), reason="the project's own gold set is not written yet")
def test_the_own_gold_set_uses_only_rubric_labels():
    items, problems, _ = read_gold(OWN)
    assert problems == [] and len(items) >= 80
    default = load_rubric("default")
    mapping = identity_map(default, {k for i in items for k in i.labels})
    assert mapping is not None and set(mapping.dimensions) == set(default.dimensions)
    for name, column in truth_columns([(i.id, i.labels) for i in items], mapping, default).items():
        assert not column.excluded, (name, column.excluded)
        assert len(column.truths) + column.unlabelled == len(items)
    assert (OWN.parent / "GUIDELINE.md").is_file()


def test_gold_conversations_live_in_their_own_project(database_url: str):
    item = GoldItem.model_validate(uss(USS_LINE))
    with Session(engine(database_url), expire_on_commit=False) as db:
        owner = ensure_project(db, "default")
        gold = import_gold_set(db, owner, "uss", [item], adapter="uss")
        data = db.get(Project, gold.data_project_id)
        assert data is not None and data.name == "gold:uss" and data.key_hash is None
        in_default = db.exec(
            select(func.count())
            .select_from(ConversationRecord)
            .where(ConversationRecord.project_id == owner.id)
        ).one()
        assert in_default == 0
        with pytest.raises(ConflictError, match="already exists"):
            import_gold_set(db, owner, "uss", [item])
        changed = item.model_copy(update={"labels": {"domains": ["taxi"], "satisfaction": None}})
        gold = import_gold_set(db, owner, "uss", [changed], replace=True)
        rows = db.exec(select(GoldItemRow).where(col(GoldItemRow.gold_set_id) == gold.id)).all()
        assert [r.labels for r in rows] == [{"domains": ["taxi"], "satisfaction": None}]
        assert gold.labelled == {"domains": 1}
        with pytest.raises(InputError, match="lower-case"):
            import_gold_set(db, owner, "Bad Name", [item])
    assert data_project_name("acme", "uss") == "gold:acme:uss"


def test_cli_import_reports_rejected_lines(tmp_path: Path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(USS_LINE) + "\n" + json.dumps({**USS_LINE, "id": "bad id!"}) + "\n")
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["gold", "import", str(path), "--name", "mini", "--map", str(MAPS / "uss-travel.yaml"), "--db", db],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 1, result.output
    assert "mixed.jsonl:2" in result.output and "id: String should match pattern" in result.output
    assert "travel.topic: 1 usable" in result.output
    listed = runner.invoke(app, ["gold", "list", "--db", db], env={"COLUMNS": "200"})
    assert "mini" in listed.output and "uss-travel.yaml" in listed.output
    missing = runner.invoke(app, ["gold", "import", str(tmp_path / "nope.jsonl"), "--name", "x", "--db", db])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_the_signals_grader_says_only_what_signals_show():
    conversation = Conversation.model_validate(
        {
            "id": "c",
            "messages": [
                {"role": "user", "content": "I want to cancel my subscription"},
                {"role": "assistant", "content": "Sorry, I did not understand."},
                {"role": "user", "content": "I said I want to cancel my subscription, you stupid bot"},
            ],
        }
    )
    hits = detect(conversation)
    default, travel = load_rubric("default"), load_rubric("travel")
    feedback = decide(default.dimension("feedback"), hits, [0, 2])
    assert {v.label for v in feedback.labels} >= {"rephrase_retry", "insult"}
    assert decide(default.dimension("failure"), hits, [0, 2]).labels[0].label == "off_topic_request"
    assert decide(default.dimension("sentiment_end"), hits, [0, 2]).labels[0].label == "negative"
    assert decide(default.dimension("sentiment_start"), hits, [0, 2]).labels[0].label == "neutral"
    assert decide(default.dimension("topic"), hits, [0, 2]).labels[0].label == "account.login"
    assert decide(default.dimension("risk"), hits, [0, 2]).labels == []
    assert decide(travel.dimension("satisfaction"), hits, [0, 2]).labels[0].label == "dissatisfied"
    assert decide(travel.dimension("satisfaction"), [], [0]).labels[0].label == "neutral"
