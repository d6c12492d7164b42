"""Gold sets and comparisons over HTTP: import, background comparison, JSON and HTML reports, isolation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.settings import Settings
from judge.compare_background import ComparisonManager
from judge.store.db import engine
from judge.store.gold_tables import Comparison

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = {
    "ok": [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "It arrives tomorrow."},
        {"role": "user", "content": "thanks"},
    ],
    "retry": [
        {"role": "user", "content": "I want to cancel my subscription"},
        {"role": "assistant", "content": "Sorry, I did not understand."},
        {"role": "user", "content": "I said I want to cancel my subscription, you stupid bot"},
    ],
}


def _items(n: int = 12) -> list[dict[str, Any]]:
    items = []
    for i in range(n):
        kind = "retry" if i % 3 == 0 else "ok"
        items.append(
            {
                "id": f"g-{i}",
                "messages": MESSAGES[kind],
                "metadata": {"n": i},
                "labels": {
                    "broke": "yes" if kind == "retry" else "no",
                    "feedback": ["gratitude"] if kind == "ok" else [],
                },
            }
        )
    return items


LABEL_MAP = yaml.safe_load(
    """
    rubric: default
    dimensions:
      failure: {from: broke, labels: {"yes": failed, "no": none}, collapse: {none: none, "*": failed}}
      feedback: {from: feedback}
    """
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'api.db'}", cache_dir=tmp_path / "cache")


def _wait(client: TestClient, headers: dict[str, str], comparison_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = client.get(f"/v1/comparisons/{comparison_id}", headers=headers).json()
        if found["status"] != "running":
            return found
        time.sleep(0.1)
    raise AssertionError(f"comparison {comparison_id} still running")


def test_gold_sets_and_comparisons_over_http(client: TestClient, alice: dict[str, str], bob: dict[str, str]):
    body = {
        "name": "mini",
        "items": [*_items(), {"id": "bad", "messages": [], "labels": {}}],
        "label_map": LABEL_MAP,
    }
    created = client.post("/v1/gold-sets", json=body, headers=alice)
    assert created.status_code == 201, created.text
    assert created.json()["gold_set"]["data_project"] == "gold:alice:mini"
    assert [r["line"] for r in created.json()["rejected"]] == [12]
    assert client.post("/v1/gold-sets", json=body, headers=alice).status_code == 409
    assert [g["name"] for g in client.get("/v1/gold-sets", headers=alice).json()] == ["mini"]
    assert client.get("/v1/gold-sets", headers=bob).json() == []
    assert client.get("/v1/gold-sets/mini", headers=bob).status_code == 404

    request = {
        "gold": "mini",
        "graders": [{"grader": "signals"}, {"grader": "fake"}],
        "resamples": 200,
        "gate": "accuracy_drop<=0.05",
    }
    started = client.post("/v1/comparisons", json=request, headers=alice)
    assert started.status_code == 202, started.text
    assert started.json()["graders"] == ["signals@default", "fake@default"]
    done = _wait(client, alice, started.json()["id"])
    assert done["status"] == "completed", done
    report = done["report"]
    failure = next(d for d in report["dimensions"] if d["dimension"] == "failure")
    signals = next(s for s in failure["evaluation"]["scores"] if s["grader"] == "signals@default")
    assert signals["accuracy"]["value"] == 1.0  # every retry conversation is a failure, the rest are not
    assert failure["labels"] == ["none", "failed"] and failure["gold_items"] == 12
    assert {d["dimension"] for d in report["unlabelled_dimensions"]} >= {"topic", "risk"}
    assert report["gate"]["passed"] is False and done["gate_passed"] is False
    assert report["graders"][1]["usage"]["calls_this_comparison"] > 0

    page = client.get(f"/v1/comparisons/{done['id']}?format=html", headers=alice)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "data:image/png;base64," in page.text and "FAILED" in page.text
    by_accept = client.get(f"/v1/comparisons/{done['id']}", headers={**alice, "Accept": "text/html"})
    assert by_accept.text == page.text
    listed = client.get("/v1/comparisons", headers=alice).json()
    assert [c["id"] for c in listed] == [done["id"]] and "report" not in listed[0]
    assert client.get(f"/v1/comparisons/{done['id']}", headers=bob).status_code == 404

    again = _wait(client, alice, client.post("/v1/comparisons", json=request, headers=alice).json()["id"])
    assert [g["usage"]["calls_this_comparison"] for g in again["report"]["graders"]] == [0, 0]


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        ({"gold": "nope"}, 404, "unknown gold set 'nope'"),
        ({"graders": [{"grader": "nosuch"}]}, 404, "unknown grader 'nosuch'"),
        (
            {"label_map": {"dimensions": {"topic": {"from": "broke", "labels": {"yes": "billing.nope"}}}}},
            422,
            "dimension 'topic', gold label 'yes' maps to 'billing.nope'",
        ),
        ({"gate": "kappa<1"}, 422, "expected [DIMENSION:]METRIC_drop<=LIMIT"),
        ({"graders": [{"grader": "local"}], "gate": "kappa_drop<=0.1"}, 422, "only 1 graders"),
        ({"resamples": -1}, 422, "resamples"),
    ],
)
def test_bad_comparison_requests_are_problems(
    client: TestClient, alice: dict[str, str], change: dict[str, Any], status: int, detail: str
):
    client.post(
        "/v1/gold-sets", json={"name": "mini", "items": _items(3), "label_map": LABEL_MAP}, headers=alice
    )
    request = {"gold": "mini", "graders": [{"grader": "signals"}, {"grader": "local"}], **change}
    response = client.post("/v1/comparisons", json=request, headers=alice)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]


def test_a_comparison_left_running_is_marked_interrupted(
    settings: Settings, client: TestClient, alice: dict[str, str]
):
    client.post("/v1/gold-sets", json={"name": "mini", "items": _items(3)}, headers=alice)
    with Session(engine(settings.database_url)) as session:
        stale = Comparison(project_id=1, gold_set_id=1, request={}, graders=["x"])
        session.add(stale)
        session.commit()
        stale_id = stale.id
    assert ComparisonManager(settings.database_url).mark_interrupted() == 1
    with Session(engine(settings.database_url)) as session:
        found = session.get(Comparison, stale_id)
        assert found is not None and found.status == "interrupted"
    assert client.get(f"/v1/comparisons/{stale_id}?format=html", headers=alice).status_code == 409


def test_a_gold_set_that_labels_no_dimension_needs_a_map(client: TestClient, alice: dict[str, str]):
    odd = [{"id": "o-1", "messages": [{"role": "user", "content": "hi"}], "labels": {"mood": "calm"}}]
    assert client.post("/v1/gold-sets", json={"name": "odd", "items": odd}, headers=alice).status_code == 201
    response = client.post(
        "/v1/comparisons", json={"gold": "odd", "graders": [{"grader": "signals"}]}, headers=alice
    )
    assert (
        response.status_code == 422
        and "labels mood, none of which is a dimension" in response.json()["detail"]
    )
