"""The HTTP API through FastAPI's TestClient: every route, every error class, project isolation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app
from api.settings import Settings
from judge.resources import SAMPLE_CONVERSATIONS
from judge.store.db import engine

SAMPLE = [json.loads(line) for line in SAMPLE_CONVERSATIONS.open()]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        cache_dir=tmp_path / "cache",
        max_conversations_per_request=200,
        max_body_bytes=2 * 2**20,
        max_sync_conversations=5,
    )


def _wait(client: TestClient, headers: dict[str, str], run_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/v1/runs/{run_id}", headers=headers).json()
        if run["status"] not in {"running"}:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still running after {timeout}s")


def _judged(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    assert (
        client.post("/v1/conversations", json={"conversations": SAMPLE}, headers=headers).status_code == 200
    )
    started = client.post("/v1/runs", json={"grader": "local"}, headers=headers)
    assert started.status_code == 202, started.text
    return _wait(client, headers, started.json()["id"])


def test_submitting_twice_creates_nothing_new(client: TestClient, alice: dict[str, str]):
    first = client.post("/v1/conversations", json={"conversations": SAMPLE}, headers=alice).json()
    assert first["counts"]["created"] == len(SAMPLE)
    second = client.post("/v1/conversations", json={"conversations": SAMPLE}, headers=alice).json()
    assert second["counts"] == {"created": 0, "unchanged": len(SAMPLE), "new_revision": 0, "rejected": 0}
    changed = dict(
        SAMPLE[0], messages=[*SAMPLE[0]["messages"], {"role": "user", "content": "one more thing"}]
    )
    third = client.post("/v1/conversations", json={"conversations": [changed]}, headers=alice).json()
    assert third["items"][0] == {
        "id": SAMPLE[0]["id"],
        "outcome": "new_revision",
        "revision": 2,
        "error": None,
    }


def test_per_item_rejections_name_the_field(client: TestClient, alice: dict[str, str]):
    body = {
        "conversations": [
            {"id": "ok", "messages": [{"role": "user", "content": "hi"}]},
            {"id": "bad", "messages": [{"role": "robot", "content": "hi"}]},
            {"messages": [{"role": "user", "content": "openai shaped"}]},
        ]
    }
    items = client.post("/v1/conversations", json=body, headers=alice).json()["items"]
    assert [i["outcome"] for i in items] == ["created", "rejected", "created"]
    assert items[1]["error"].startswith("conversations.1.messages.0.role:")
    all_bad = client.post(
        "/v1/conversations", json={"conversations": [body["conversations"][1]]}, headers=alice
    )
    assert all_bad.status_code == 422 and "messages.0.role" in all_bad.json()["detail"]


def test_a_project_never_sees_another_projects_data(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
):
    run = _judged(client, alice)
    assert run["status"] == "completed" and run["conversations"] == len(SAMPLE)
    assert client.get("/v1/conversations", headers=bob).json() == {"items": [], "next_cursor": None}
    assert client.get(f"/v1/conversations/{SAMPLE[0]['id']}", headers=bob).status_code == 404
    assert client.get(f"/v1/runs/{run['id']}", headers=bob).status_code == 404
    assert client.post(f"/v1/runs/{run['id']}/cancel", headers=bob).status_code == 404
    assert client.get("/v1/runs", headers=bob).json() == []
    assert client.get("/v1/graders", headers=bob).json() == []
    risks = client.get("/v1/analytics/risks", headers=bob).json()
    assert risks["dimensions"] == [] and risks["scope"]["runs"] == []
    assert client.get(f"/v1/analytics/topics?run_id={run['id']}", headers=bob).status_code == 404
    # and alice sees hers
    assert len(client.get("/v1/conversations?limit=500", headers=alice).json()["items"]) == len(SAMPLE)


def test_auth_errors_are_401_problems(client: TestClient):
    missing = client.get("/v1/conversations")
    assert missing.status_code == 401 and missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.get("/v1/conversations", headers={"Authorization": "Bearer jk_nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"


def test_listing_filters_and_cursor_pagination(client: TestClient, alice: dict[str, str]):
    _judged(client, alice)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 20, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/conversations", params=params, headers=alice).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == len(SAMPLE)
    german = client.get("/v1/conversations", params={"metadata": "language=de"}, headers=alice).json()[
        "items"
    ]
    assert german and all(item["language"] == "de" for item in german)
    assert len(german) == sum(1 for c in SAMPLE if c["metadata"].get("language") == "de")
    november = client.get(
        "/v1/conversations",
        params={"start": "2026-11-10T00:00:00Z", "end": "2026-11-20T00:00:00Z", "limit": 500},
        headers=alice,
    ).json()["items"]
    assert november and all("2026-11-10" <= item["started_at"][:10] < "2026-11-20" for item in november)
    detail = client.get(f"/v1/conversations/{SAMPLE[0]['id']}", headers=alice).json()
    topic = next(j for j in detail["judgements"] if j["dimension"] == "topic")["labels"][0]["label"]
    by_topic = client.get(
        "/v1/conversations", params={"topic": topic.split(".")[0], "limit": 500}, headers=alice
    ).json()["items"]
    assert SAMPLE[0]["id"] in [item["id"] for item in by_topic]
    by_label = client.get(
        "/v1/conversations", params={"label": f"topic:{topic}", "limit": 500}, headers=alice
    ).json()["items"]
    assert SAMPLE[0]["id"] in [item["id"] for item in by_label] and len(by_label) <= len(by_topic)
    risks = client.get("/v1/analytics/risks", headers=alice).json()["dimensions"][0]["labels"]
    present = next(r for r in risks if r["conversations"])
    with_risk = client.get(
        "/v1/conversations", params={"risk": present["label"], "limit": 500}, headers=alice
    ).json()["items"]
    assert len(with_risk) == present["conversations"]
    bad = client.get("/v1/conversations", params={"label": "nodim:x"}, headers=alice)
    assert bad.status_code == 422 and "topic" in bad.json()["detail"]
    assert client.get("/v1/conversations", params={"cursor": "garbage"}, headers=alice).status_code == 422


def test_conversation_detail_has_messages_signals_and_evidence(client: TestClient, alice: dict[str, str]):
    insulting = {
        "id": "rude",
        "messages": [
            {"role": "user", "content": "I want to cancel my subscription"},
            {"role": "assistant", "content": "Here are our plans."},
            {"role": "user", "content": "I said I want to cancel my subscription, you stupid bot"},
        ],
    }
    client.post("/v1/conversations", json={"conversations": [insulting]}, headers=alice)
    _wait(client, alice, client.post("/v1/runs", json={}, headers=alice).json()["id"])
    detail = client.get("/v1/conversations/rude", headers=alice).json()
    assert [m["role"] for m in detail["transcript"]] == ["user", "assistant", "user"]
    assert {s["signal"] for s in detail["signals"]} >= {"rephrase_retry", "insult"}
    assert {j["dimension"] for j in detail["judgements"]} == {
        "topic",
        "sentiment_start",
        "sentiment_end",
        "emotion",
        "risk",
        "feedback",
        "failure",
    }
    feedback = next(j for j in detail["judgements"] if j["dimension"] == "feedback")
    insult = next(label for label in feedback["labels"] if label["label"] == "insult")
    assert insult["evidence"] == [2]


def test_analytics_endpoints(client: TestClient, alice: dict[str, str]):
    _judged(client, alice)
    topics = client.get("/v1/analytics/topics", headers=alice).json()
    assert topics["dimensions"][0]["scored"] == len(SAMPLE)
    assert sum(c["conversations"] for c in topics["dimensions"][0]["labels"]) == len(SAMPLE)
    weekly = client.get("/v1/analytics/sentiment?bucket=week", headers=alice).json()
    weeks = {p["key"] for p in weekly["series"]}
    assert len(weeks) >= 4 and all(time.strptime(w, "%Y-%m-%d").tm_wday == 0 for w in weeks)
    per_week = {}
    for point in weekly["series"]:
        if point["dimension"] == "sentiment_end":
            per_week[point["key"]] = per_week.get(point["key"], 0) + point["conversations"]
    assert sum(per_week.values()) == len(SAMPLE)
    by_language = client.get("/v1/analytics/risks?group_by=language", headers=alice).json()
    assert {p["key"] for p in by_language["series"]} <= {c["metadata"].get("language") for c in SAMPLE}
    feedback = client.get("/v1/analytics/implicit-feedback", headers=alice).json()
    assert feedback["signals"]["insult"] >= 1
    failures = client.get("/v1/analytics/failures?level=1", headers=alice).json()
    ranked = [t["priority"] for t in failures["topics"]]
    assert ranked == sorted(ranked, reverse=True)
    assert sum(t["conversations"] for t in failures["topics"]) == len(SAMPLE)
    channel = client.get("/v1/analytics/topics", params={"metadata": "channel=email"}, headers=alice).json()
    emails = sum(1 for c in SAMPLE if c["metadata"].get("channel") == "email")
    assert channel["dimensions"][0]["scored"] == emails
    both = client.get("/v1/analytics/topics?bucket=day&group_by=language", headers=alice)
    assert both.status_code == 422
    bad_bucket = client.get("/v1/analytics/topics?bucket=year", headers=alice)
    assert bad_bucket.status_code == 422 and "bucket" in bad_bucket.json()["detail"]


def test_runs_cancel_resume_and_errors(client: TestClient, alice: dict[str, str]):
    run = _judged(client, alice)
    assert client.post(f"/v1/runs/{run['id']}/cancel", headers=alice).status_code == 409
    assert client.post(f"/v1/runs/{run['id']}/resume", headers=alice).status_code == 409
    unknown = client.post("/v1/runs", json={"rubric": "nope"}, headers=alice)
    assert unknown.status_code == 404 and "default" in unknown.json()["detail"]
    grader = client.post("/v1/runs", json={"grader": "nonsense"}, headers=alice)
    assert grader.status_code == 404 and "local" in grader.json()["detail"]
    version = client.post("/v1/runs", json={"rubric_version": 9}, headers=alice)
    assert version.status_code == 404 and "v1" in version.json()["detail"]
    dims = client.post("/v1/runs", json={"dimensions": ["risk", "colour"]}, headers=alice)
    assert dims.status_code == 404 and "colour" in dims.json()["detail"]
    again = _wait(
        client, alice, client.post("/v1/runs", json={"dimensions": ["risk"]}, headers=alice).json()["id"]
    )
    assert again["cache_hits"] == len(SAMPLE) and again["calls"] == 0
    listed = client.get("/v1/runs", headers=alice).json()
    assert [r["id"] for r in listed] == [again["id"], run["id"]]
    assert client.get("/v1/runs/999", headers=alice).status_code == 404


def test_judge_now_returns_judgements(client: TestClient, alice: dict[str, str]):
    body = {"conversations": SAMPLE[:3], "dimensions": ["topic", "risk"]}
    result = client.post("/v1/judge", json=body, headers=alice)
    assert result.status_code == 200, result.text
    data = result.json()
    assert data["run"]["status"] == "completed"
    assert [c["id"] for c in data["conversations"]] == [c["id"] for c in SAMPLE[:3]]
    assert all({j["dimension"] for j in c["judgements"]} == {"topic", "risk"} for c in data["conversations"])
    too_many = client.post("/v1/judge", json={"conversations": SAMPLE[:6]}, headers=alice)
    assert too_many.status_code == 413 and "at most 5" in too_many.json()["detail"]


def test_catalog(client: TestClient, alice: dict[str, str]):
    rubrics = {r["name"]: r for r in client.get("/v1/rubrics", headers=alice).json()}
    assert "risk" in [d["name"] for d in rubrics["default"]["dimensions"]]
    one = client.get("/v1/rubrics/default", headers=alice).json()
    assert one["json_schema"]["title"] == "judge rubric" and one["rubric"]["name"] == "default"
    missing = client.get("/v1/rubrics/nope", headers=alice)
    assert missing.status_code == 404 and "default" in missing.json()["detail"]
    _judged(client, alice)
    graders = client.get("/v1/graders", headers=alice).json()
    assert [(g["provider"], g["runs"], g["calls"]) for g in graders] == [("local", 1, 0)]


def test_size_limits_and_malformed_bodies(client: TestClient, alice: dict[str, str]):
    many = {
        "conversations": [{"id": f"c{i}", "messages": [{"role": "user", "content": "x"}]} for i in range(201)]
    }
    assert client.post("/v1/conversations", json=many, headers=alice).status_code == 413
    huge = b'{"conversations": [' + b" " * (3 * 2**20) + b"]}"
    big = client.post(
        "/v1/conversations", content=huge, headers={**alice, "content-type": "application/json"}
    )
    assert big.status_code == 413 and big.json()["status"] == 413
    broken = client.post(
        "/v1/conversations", content=b"{nope", headers={**alice, "content-type": "application/json"}
    )
    assert broken.status_code == 400 and broken.headers["content-type"] == "application/problem+json"
    wrong_type = client.post("/v1/conversations", json={"conversations": "abc"}, headers=alice)
    assert wrong_type.status_code == 422 and wrong_type.json()["errors"][0]["field"] == "body.conversations"
    assert client.get("/v1/nothing-here", headers=alice).status_code == 404


def test_docs_list_every_route(client: TestClient):
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/runs",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/cancel",
        "/v1/runs/{run_id}/resume",
        "/v1/judge",
        "/v1/analytics/topics",
        "/v1/analytics/sentiment",
        "/v1/analytics/risks",
        "/v1/analytics/implicit-feedback",
        "/v1/analytics/failures",
        "/v1/rubrics",
        "/v1/rubrics/{name}",
        "/v1/graders",
    } <= paths
    assert client.get("/docs").status_code == 200


def test_a_run_left_running_by_a_dead_server_is_marked_and_resumable(
    settings: Settings, alice: dict[str, str]
):
    from judge.store.tables import Run

    with TestClient(create_app(settings)) as client:
        client.post("/v1/conversations", json={"conversations": SAMPLE[:10]}, headers=alice)
        run_id = _wait(client, alice, client.post("/v1/runs", json={}, headers=alice).json()["id"])["id"]
    with Session(engine(settings.database_url)) as session:  # as if the server died mid-run
        run = session.get(Run, run_id)
        run.status = "running"
        session.add(run)
        session.commit()
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/v1/runs/{run_id}", headers=alice).json()["status"] == "interrupted"
        assert client.post(f"/v1/runs/{run_id}/resume", headers=alice).status_code == 202
        resumed = _wait(client, alice, run_id)
        assert resumed["status"] == "completed" and resumed["judged"] == 10 * 7
