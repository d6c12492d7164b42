"""Tier 3: the litellm path replayed from HTTP cassettes recorded against a real model.

The cassettes in ``cassettes/`` hold real exchanges between the runner (through litellm and instructor)
and SmolLM2-135M-Instruct served by llama.cpp on 127.0.0.1; ``scripts/record_cassettes.py`` made them and
wrote ``cassettes/manifest.json`` (the run options and what the recording run stored). Here they are
replayed with recording off: no model server, no llama-cpp-python, no network.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

vcr = pytest.importorskip("vcr")

from sqlmodel import select  # noqa: E402

from judge.conversation import Conversation, read_jsonl  # noqa: E402
from judge.rubric import Rubric, load_rubric  # noqa: E402
from judge.runner import RunOptions, RunSummary, run_once  # noqa: E402
from judge.store.conversations import ensure_project, store_conversations  # noqa: E402
from judge.store.db import session  # noqa: E402
from judge.store.tables import (  # noqa: E402
    ConversationRecord,
    Grader,
    Judgement,
    JudgementLabel,
    ProviderCall,
    Run,
)

ROOT = Path(__file__).resolve().parent.parent
CASSETTES = ROOT / "cassettes"
SCRIPTS = ROOT / "scripts"
MANIFEST: dict[str, Any] = json.loads((CASSETTES / "manifest.json").read_text(encoding="utf-8"))
BATCHED, INVALID = "litellm_batch_of_3", "litellm_invalid_reply"


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_scripts_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cassette_tools = _load_script("with_cassette")
recorder = _load_script("record_cassettes")  # importing it starts nothing; it never imports llama_cpp


def _interactions(name: str) -> list[dict[str, Any]]:
    import yaml

    data = yaml.safe_load((CASSETTES / MANIFEST[name]["cassette"]).read_text(encoding="utf-8"))
    return list(data["interactions"])


def _request_body(interaction: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(interaction["request"]["body"]))


def _reply_arguments(interaction: dict[str, Any]) -> str:
    body = json.loads(interaction["response"]["body"]["string"])
    return str(body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])


def _first_attempts(name: str) -> list[dict[str, Any]]:
    """The requests that open a judge call (system + user prompt), as opposed to instructor's re-asks."""
    bodies = [_request_body(i) for i in _interactions(name)]
    return [b for b in bodies if [m["role"] for m in b["messages"]] == ["system", "user"]]


def _conversation_ids(prompt: str) -> list[str]:
    ids = sorted({c.id for c in _conversations()})
    return [i for i in ids if f'<conversation id="{i}"' in prompt]


def _conversations() -> list[Conversation]:
    return [c for c in read_jsonl(CASSETTES / "conversations.jsonl") if isinstance(c, Conversation)]


def _options(name: str) -> RunOptions:
    scenario = MANIFEST[name]
    return RunOptions(
        rubric=str(CASSETTES / scenario["rubric"]),
        grader=scenario["grader"],
        grader_options={
            "api_base": scenario["api_base"],
            "api_key": cassette_tools.API_KEY_PLACEHOLDER,
            **scenario["grader_options"],
        },
        dimensions=scenario["dimensions"],
        ids=scenario["ids"],
        batch_size=scenario["batch_size"],
        concurrency=scenario["concurrency"],
    )


def _rubric(name: str) -> Rubric:
    return load_rubric(str(CASSETTES / MANIFEST[name]["rubric"]))


def _ingest(url: str) -> None:
    with session(url) as opened:
        store_conversations(opened, ensure_project(opened, "default").id or 0, _conversations())


@dataclass
class Replay:
    url: str
    summary: RunSummary
    played: int
    recorded: int


def _replay(name: str, tmp_path: Path) -> Replay:
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    _ingest(url)
    cassette_file = str(CASSETTES / MANIFEST[name]["cassette"])
    with session(url) as opened, cassette_tools.make_vcr("none").use_cassette(cassette_file) as cassette:
        summary = asyncio.run(run_once(opened, _options(name)))
        return Replay(url, summary, cassette.play_count, len(cassette.data))


def _stored(url: str) -> tuple[list[Judgement], dict[int, list[JudgementLabel]], dict[int, str]]:
    with session(url) as opened:
        judgements = list(opened.exec(select(Judgement)))
        labels: dict[int, list[JudgementLabel]] = {}
        for label in opened.exec(select(JudgementLabel)):
            labels.setdefault(label.judgement_id, []).append(label)
        external = {r.id or 0: r.external_id for r in opened.exec(select(ConversationRecord))}
    return judgements, labels, external


def _calls(url: str) -> list[ProviderCall]:
    with session(url) as opened:
        return list(opened.exec(select(ProviderCall)))


# --- the cassette files themselves -------------------------------------------------------------------


def test_manifest_names_existing_cassettes():
    assert set(MANIFEST) == {BATCHED, INVALID}
    assert {p.name for p in CASSETTE_FILES} == {s["cassette"] for s in MANIFEST.values()}
    for name, scenario in MANIFEST.items():
        assert len(_interactions(name)) == scenario["requests"] > 0, name


RUBRIC_FILES = {scenario["rubric"] for scenario in MANIFEST.values()}
CASSETTE_FILES = sorted(p for p in CASSETTES.glob("*.yaml") if p.name not in RUBRIC_FILES)


@pytest.mark.parametrize("path", CASSETTE_FILES, ids=lambda p: p.name)
def test_cassettes_hold_no_credentials(path: Path):
    import yaml

    text = path.read_text(encoding="utf-8")
    assert cassette_tools.API_KEY_PLACEHOLDER not in text
    assert "bearer" not in text.lower()
    for interaction in yaml.safe_load(text)["interactions"]:
        request = interaction["request"]
        names = {n.lower() for n in request["headers"]}
        assert not names & set(cassette_tools.FILTER_HEADERS), names
        assert not any(n.startswith("x-stainless-") for n in names)
        assert request["uri"] == f"{cassette_tools.CANONICAL_BASE}/chat/completions"
        assert request["method"] == "POST"


def test_batched_cassette_sends_three_conversations_in_one_call():
    first = _first_attempts(BATCHED)
    everyone = sorted(MANIFEST[BATCHED]["ids"])
    assert len(everyone) == 3
    batched = [b for b in first if _conversation_ids(b["messages"][1]["content"]) == everyone]
    assert len(batched) == 1, "exactly one request carries all three conversations"
    body = batched[0]
    # instructor's TOOLS mode: one forced function whose schema lists exactly the batch's ids and the
    # chosen dimensions, with the rubric's labels as enums
    assert body["tool_choice"] == {"type": "function", "function": {"name": "BatchReply"}}
    schema = body["tools"][0]["function"]["parameters"]
    result = schema["$defs"]["ConversationResult"]
    assert sorted(result["properties"]["conversation_id"]["enum"]) == everyone
    assert set(result["required"]) == {"conversation_id", *MANIFEST[BATCHED]["dimensions"]}
    rubric = _rubric(BATCHED)
    failure_labels = schema["$defs"]["FailureVerdict"]["properties"]["label"]["enum"]
    assert failure_labels == rubric.dimension("failure").label_ids
    assert body["model"] == "smollm2-135m-instruct"
    assert body["temperature"] == 0 and body["seed"] == 0
    # the conversations (data) come before the instructions, as the prompt promises
    prompt = body["messages"][1]["content"]
    assert prompt.index("</conversations>") < prompt.index("Instructions")


def test_re_asks_show_the_model_its_validation_error():
    for name in (BATCHED, INVALID):
        for interaction in _interactions(name):
            messages = _request_body(interaction)["messages"]
            if messages[-1]["role"] == "tool":
                assert messages[-1]["content"].startswith("Validation Error found")
                assert messages[-2]["role"] == "assistant" and messages[-2]["tool_calls"]
                assert len(messages) in (4, 6), "at most two re-asks per call"


# --- replaying through the runner --------------------------------------------------------------------


def test_batched_replay_stores_one_judgement_per_conversation_and_dimension(tmp_path: Path):
    replay = _replay(BATCHED, tmp_path)
    scenario = MANIFEST[BATCHED]
    assert replay.played == replay.recorded == scenario["requests"], "the runner sent every recorded request"
    judgements, labels, external = _stored(replay.url)
    pairs = [(external[j.conversation_id], j.dimension) for j in judgements]
    expected = {(c, d) for c in scenario["ids"] for d in scenario["dimensions"]}
    assert len(pairs) == len(set(pairs)) == len(expected), "none lost, none duplicated"
    assert set(pairs) == expected
    assert replay.summary.judgements == len(expected)
    assert replay.summary.unscored == sum(j.status == "unscored" for j in judgements)

    rubric = _rubric(BATCHED)
    for judgement in judgements:
        found = labels.get(judgement.id or 0, [])
        if judgement.status == "scored":
            assert found, "a scored judgement has its label rows"
            assert {label.label for label in found} <= set(rubric.dimension(judgement.dimension).label_ids)
            if rubric.dimension(judgement.dimension).kind == "single":
                assert len(found) == 1
            assert judgement.call_id is not None
        else:
            assert judgement.status == "unscored" and not found
            assert "validation" in (judgement.reason or "")


def test_batched_replay_reproduces_the_recorded_run(tmp_path: Path):
    replay = _replay(BATCHED, tmp_path)
    with session(replay.url) as opened:
        snapshot = recorder.snapshot(opened, replay.summary.run_id)
    assert snapshot["judgements"] == MANIFEST[BATCHED]["judgements"]
    assert snapshot["provider_calls"] == MANIFEST[BATCHED]["provider_calls"]


def test_batched_replay_splits_the_batch_the_model_failed(tmp_path: Path):
    """The 135M model left conversations out of its batched reply, even after two re-asks: the runner
    recorded the failed call of 3 and split the batch instead of guessing."""
    calls = MANIFEST[BATCHED]["provider_calls"]
    batched = [c for c in calls if c["conversations"] == 3]
    assert len(batched) == 1
    replay = _replay(BATCHED, tmp_path)
    stored = _calls(replay.url)
    assert sorted(c.conversations for c in stored) == sorted(c["conversations"] for c in calls)
    if batched[0]["status"] == "failed":
        three = next(c for c in stored if c.conversations == 3)
        assert "validation" in (three.error or "")
        assert sum(c.conversations for c in stored if c.conversations < 3) == 3, "the halves cover the batch"


def test_provider_calls_store_the_request_and_raw_reply(tmp_path: Path):
    replay = _replay(BATCHED, tmp_path)
    recorded = _interactions(BATCHED)
    sent = [_request_body(i)["messages"] for i in recorded]
    replies = {_reply_arguments(i) for i in recorded}
    ok = [c for c in _calls(replay.url) if c.status == "ok"]
    assert ok, "the recording has at least one call whose reply validated"
    for call in ok:
        assert call.request["model"] == MANIFEST[BATCHED]["grader"].removeprefix("litellm:")
        assert call.request["mode"] == "TOOLS"
        assert call.request["messages"] in [m[:2] for m in sent], "the stored request is what was sent"
        raw = json.loads(call.raw_reply or "{}")
        assert raw["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] in replies
        assert call.prompt_tokens > 0 and call.calls >= 1
        assert call.dimensions == MANIFEST[BATCHED]["dimensions"]


def test_invalid_replies_are_re_asked_split_and_stored_unscored(tmp_path: Path):
    scenario = MANIFEST[INVALID]
    first = _first_attempts(INVALID)
    # one call for the batch of 2, then one per half: each asked once and re-asked twice
    assert sorted(len(_conversation_ids(b["messages"][1]["content"])) for b in first) == [1, 1, 2]
    assert scenario["requests"] == 3 * len(first)

    replay = _replay(INVALID, tmp_path)
    assert replay.played == replay.recorded == scenario["requests"]
    judgements, labels, external = _stored(replay.url)
    expected = {(c, d) for c in scenario["ids"] for d in scenario["dimensions"]}
    assert sorted((external[j.conversation_id], j.dimension) for j in judgements) == sorted(expected)
    assert all(j.status == "unscored" for j in judgements), "an invalid reply never becomes a label"
    assert not labels
    for judgement in judgements:
        assert (judgement.reason or "").startswith("invalid reply: reply failed validation after 3 attempt")
    assert replay.summary.unscored == len(expected)
    assert replay.summary.unscored_reasons == {"invalid reply": len(expected)}
    calls = _calls(replay.url)
    assert sorted(c.conversations for c in calls) == [1, 1, 2]
    assert {c.status for c in calls} == {"failed"}
    with session(replay.url) as opened:
        run = opened.get(Run, replay.summary.run_id)
        assert run is not None and run.status == "completed" and run.unscored == len(expected)


def test_a_request_missing_from_the_cassette_is_refused():
    import httpx

    body = _request_body(_interactions(BATCHED)[0])
    body["seed"] = 1  # any change to what the grader sends must not replay the recorded answer
    cassette_file = str(CASSETTES / MANIFEST[BATCHED]["cassette"])
    with cassette_tools.make_vcr("none").use_cassette(cassette_file):
        with pytest.raises(vcr.errors.CannotOverwriteExistingCassetteException):
            httpx.post(f"{cassette_tools.CANONICAL_BASE}/chat/completions", json=body)
        body["seed"] = 0
        reply = httpx.post(f"{cassette_tools.CANONICAL_BASE}/chat/completions", json=body)
        assert reply.status_code == 200 and reply.json()["model"] == "smollm2-135m-instruct"


# --- the real CLI, in a subprocess, inside a cassette ---------------------------------------------------


def test_cli_judges_three_conversations_in_one_call_from_the_cassette(tmp_path: Path):
    scenario = MANIFEST[BATCHED]
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _ingest(url)
    dimensions = [arg for d in scenario["dimensions"] for arg in ("--dimension", d)]
    params = [arg for k, v in scenario["grader_options"].items() for arg in ("--param", f"{k}={v}")]
    command = [
        sys.executable,
        str(SCRIPTS / "with_cassette.py"),
        str(CASSETTES / scenario["cassette"]),
        "--all-played",
        "--",
        "judge",
        "run",
        "--rubric",
        str(CASSETTES / scenario["rubric"]),
        "--grader",
        scenario["grader"],
        "--api-base",
        scenario["api_base"],
        "--batch-size",
        str(scenario["batch_size"]),
        "--concurrency",
        "1",
        *dimensions,
        *params,
        "--no-cache",
        "--db",
        url,
    ]
    env = {**os.environ, "OPENAI_API_KEY": cassette_tools.API_KEY_PLACEHOLDER, "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    unscored = sum(j["status"] == "unscored" for j in scenario["judgements"])
    assert done.returncode == (1 if unscored else 0), done.stdout + done.stderr
    played = f"{scenario['requests']} of {scenario['requests']} recorded interactions replayed"
    assert played in done.stderr
    assert "judgements (conversation x dimension)" in done.stdout
    calls = _calls(url)
    assert any(c.conversations == 3 for c in calls), "the CLI judged the three conversations in one call"
    with session(url) as opened:
        run = opened.exec(select(Run)).one()
        snapshot = recorder.snapshot(opened, run.id or 0)
    assert snapshot["judgements"] == scenario["judgements"], "the CLI and the runner send the same requests"


# --- the network guard -------------------------------------------------------------------------------


def test_network_guard_rejects_non_loopback_addresses():
    with pytest.raises(RuntimeError, match="loopback"), socket.socket() as raw:
        raw.connect(("203.0.113.1", 80))
    with pytest.raises(RuntimeError, match="loopback"):
        socket.create_connection(("203.0.113.1", 80), timeout=1)
    with pytest.raises(RuntimeError, match="loopback"):
        socket.getaddrinfo("example.com", 443)


def test_network_guard_allows_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=1):
            pass


# --- what a reviewer of a failed call and the run's totals rely on ---------------------------------------


def test_unscored_reason_names_what_failed(tmp_path: Path):
    replay = _replay(INVALID, tmp_path)
    judgements, _, _ = _stored(replay.url)
    assert all("last_exception" not in (j.reason or "") for j in judgements)


def test_failed_calls_keep_their_request_and_usage(tmp_path: Path):
    replay = _replay(INVALID, tmp_path)
    for call in _calls(replay.url):
        assert call.request is not None and call.raw_reply is not None
        assert call.calls == 3 and call.prompt_tokens > 0


def test_run_totals_count_every_request(tmp_path: Path):
    replay = _replay(BATCHED, tmp_path)
    prompt_tokens = sum(
        json.loads(i["response"]["body"]["string"])["usage"]["prompt_tokens"] for i in _interactions(BATCHED)
    )
    assert replay.summary.prompt_tokens == prompt_tokens
    assert replay.summary.calls == MANIFEST[BATCHED]["requests"]


def test_grader_row_holds_no_api_key(tmp_path: Path):
    replay = _replay(BATCHED, tmp_path)
    with session(replay.url) as opened:
        for grader in opened.exec(select(Grader)):
            assert "api_key" not in grader.params
            assert cassette_tools.API_KEY_PLACEHOLDER not in json.dumps(grader.params)
        for run in opened.exec(select(Run)):
            assert cassette_tools.API_KEY_PLACEHOLDER not in json.dumps(run.options)
