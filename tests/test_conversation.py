"""Parsing conversations: our JSONL shape, the OpenAI chat shape, and errors that name line and field."""

from __future__ import annotations

import json
from pathlib import Path

from judge.conversation import Conversation, LineError, parse_line, read_jsonl


def _line(record: object) -> bytes:
    return json.dumps(record).encode()


def test_our_shape_parses_with_metadata_and_timestamps():
    record = {
        "id": "c-1",
        "end_user_id": "u-9",
        "metadata": {"channel": "web", "language": "de", "app_version": "4.2"},
        "messages": [{"role": "user", "content": "Hallo", "timestamp": "2026-11-02T09:00:00Z"}],
    }
    parsed = parse_line(_line(record), 1, "x")
    assert isinstance(parsed, Conversation)
    assert parsed.language == "de"
    assert parsed.started_at is not None and parsed.started_at.year == 2026


def test_openai_shape_gets_a_fallback_id_and_joins_content_parts():
    record = {
        "messages": [
            {"role": "developer", "content": "be nice"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "where is"}, {"type": "text", "text": "my order"}],
            },
        ]
    }
    parsed = parse_line(_line(record), 3, "chats-3")
    assert isinstance(parsed, Conversation)
    assert parsed.id == "chats-3"
    assert [m.role.value for m in parsed.messages] == ["system", "user"]
    assert parsed.messages[1].content == "where is\nmy order"


def test_errors_name_the_line_and_the_field(tmp_path: Path):
    lines = [
        _line({"id": "ok-1", "messages": [{"role": "user", "content": "hi"}]}),
        b"{not json",
        _line({"id": "empty", "messages": []}),
        _line({"id": "bad-role", "messages": [{"role": "robot", "content": "hi"}]}),
        _line({"id": "no-content", "messages": [{"role": "user"}]}),
        b'{"id": "latin", "messages": [{"role": "user", "content": "caf\xe9"}]}',
        _line({"id": "only-bot", "messages": [{"role": "assistant", "content": "hello"}]}),
        _line([1, 2]),
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    results = list(read_jsonl(path))
    assert isinstance(results[0], Conversation)
    errors = {e.line: e.message for e in results if isinstance(e, LineError)}
    assert "invalid JSON" in errors[2]
    assert errors[3].startswith("messages:") and "at least 1" in errors[3]
    assert errors[4].startswith("messages.0.role:") and "'user'" in errors[4]
    assert errors[5].startswith("messages.0.content:") and "required" in errors[5]
    assert "UTF-8" in errors[6]
    assert "at least one user message" in errors[7]
    assert "JSON object" in errors[8]


def test_content_hash_ignores_id_and_timestamps_but_not_text():
    base = {"id": "a", "messages": [{"role": "user", "content": "hi", "timestamp": "2026-11-02T09:00:00Z"}]}
    same = {"id": "b", "messages": [{"role": "user", "content": "hi"}]}
    changed = {"id": "a", "messages": [{"role": "user", "content": "hi!"}]}
    digest = Conversation.model_validate(base).content_hash()
    assert digest == Conversation.model_validate(same).content_hash()
    assert digest != Conversation.model_validate(changed).content_hash()
