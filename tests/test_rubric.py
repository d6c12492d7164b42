"""Rubrics: strict loading with errors naming file, dimension and label; the typed response model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from judge.errors import NotFoundError, RubricError
from judge.resources import builtin_dir
from judge.rubric import json_schema, load_rubric, load_rubric_file
from judge.verdict import normalise, response_model

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _default_raw() -> dict:
    return yaml.safe_load((builtin_dir("rubrics") / "default.yaml").read_text())


def test_default_rubric_covers_the_five_analytics():
    rubric = load_rubric("default")
    analytics = {d.analytic.value for d in rubric.dimensions.values()}
    assert analytics == {
        "topic_intent",
        "sentiment_emotion",
        "business_risk",
        "implicit_feedback",
        "failure_cause",
    }
    assert len(rubric.dimension("risk").labels) >= 7
    assert all(label.description and label.examples for d in rubric.dimensions.values() for label in d.labels)


def test_error_names_file_dimension_and_label(tmp_path: Path):
    raw = _default_raw()
    del raw["dimensions"]["risk"]["labels"][2]["description"]
    path = _write(tmp_path, raw)
    with pytest.raises(RubricError) as caught:
        load_rubric_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert "dimension 'risk'" in message and "label 'product_unavailable'" in message
    assert "description" in message


def test_unknown_keys_and_duplicate_labels_are_rejected(tmp_path: Path):
    raw = _default_raw()
    raw["dimensions"]["failure"]["colour"] = "red"
    raw["dimensions"]["emotion"]["labels"].append(dict(raw["dimensions"]["emotion"]["labels"][0]))
    with pytest.raises(RubricError) as caught:
        load_rubric_file(_write(tmp_path, raw))
    message = str(caught.value)
    assert "dimension 'failure', field colour: Extra inputs are not permitted" in message
    assert "duplicate label ids: frustrated" in message


def test_unknown_rubric_lists_the_choices():
    with pytest.raises(NotFoundError) as caught:
        load_rubric("nope")
    assert "default" in str(caught.value)


def test_user_folder_shadows_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    raw = _default_raw()
    raw["version"] = 7
    (tmp_path / "default.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("JUDGE_RUBRICS_PATH", str(tmp_path))
    assert load_rubric("default").version == 7


def test_published_schema_is_current():
    published = json.loads((ROOT / "rubrics" / "rubric.schema.json").read_text())
    assert published == json_schema()


def test_response_model_accepts_rubric_labels_and_rejects_others():
    rubric = load_rubric("default")
    model = response_model(rubric, ["topic", "risk"], {"a": 3, "b": 2})
    good = {
        "results": [
            {
                "conversation_id": "a",
                "topic": {"label": "billing.refund", "evidence": [0]},
                "risk": {"labels": []},
            },
            {
                "conversation_id": "b",
                "topic": {"label": "other", "suggestion": "weather"},
                "risk": {"labels": [{"label": "fraud", "evidence": [1]}]},
            },
        ]
    }
    verdicts = normalise(model.model_validate(good), ["topic", "risk"])
    assert verdicts["b"]["risk"].labels[0].label == "fraud"
    assert verdicts["b"]["topic"].suggestion == "weather"
    bad_label = json.loads(json.dumps(good))
    bad_label["results"][0]["topic"]["label"] = "billing.refunds"
    with pytest.raises(ValidationError, match=r"billing\.refund"):
        model.model_validate(bad_label)
    missing = {"results": good["results"][:1]}
    with pytest.raises(ValidationError, match="missing conversation ids: b"):
        model.model_validate(missing)
    twice = {"results": [good["results"][0], good["results"][0], good["results"][1]]}
    with pytest.raises(ValidationError, match="more than once: a"):
        model.model_validate(twice)
    out_of_range = json.loads(json.dumps(good))
    out_of_range["results"][1]["risk"]["labels"][0]["evidence"] = [5]
    with pytest.raises(ValidationError, match=r"evidence \[5\] outside messages 0..1"):
        model.model_validate(out_of_range)


def test_a_new_risk_label_is_a_new_allowed_value(tmp_path: Path):
    raw = _default_raw()
    raw["dimensions"]["risk"]["labels"].append(
        {
            "id": "competitor_mention",
            "description": "The user names a competitor.",
            "examples": ["Acme is cheaper"],
        }
    )
    rubric = load_rubric_file(_write(tmp_path, raw))
    model = response_model(rubric, ["risk"], {"a": 1})
    reply = {"results": [{"conversation_id": "a", "risk": {"labels": [{"label": "competitor_mention"}]}}]}
    assert model.model_validate(reply).results[0].risk.labels[0].label == "competitor_mention"
