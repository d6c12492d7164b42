"""The ``judge`` command as a user runs it: real subprocesses, a real SQLite file, a real cache folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from judge.resources import SAMPLE_CONVERSATIONS, builtin_dir


def judge(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "JUDGE_CACHE_DIR": str(tmp_path / "cache"),
        "COLUMNS": "200",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "judge", *args], capture_output=True, text=True, env=environment, timeout=300
    )


def test_ingest_reports_bad_lines_and_keeps_good_ones(tmp_path: Path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "messages": [{"role": "user", "content": "where is my order"}]}),
                json.dumps({"id": "b", "messages": [{"role": "robot", "content": "hi"}]}),
                "{oops",
                json.dumps({"messages": [{"role": "user", "content": "openai shaped"}]}),
            ]
        )
    )
    first = judge(tmp_path, "ingest", str(path))
    assert first.returncode == 1, first.stderr
    assert "2 created; 2 rejected" in first.stdout
    assert "mixed.jsonl:2" in first.stderr and "messages.0.role" in first.stderr
    assert "mixed.jsonl:3" in first.stderr and "invalid JSON" in first.stderr
    again = judge(tmp_path, "ingest", str(path))
    assert "2 unchanged; 2 rejected" in again.stdout
    path.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "where is my parcel"}]}))
    revised = judge(tmp_path, "ingest", str(path))
    assert revised.returncode == 0 and "1 new revision; 0 rejected" in revised.stdout


def test_nothing_valid_exits_2(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\xff\xfe not utf8\n")
    result = judge(tmp_path, "ingest", str(path))
    assert result.returncode == 2 and "not valid UTF-8" in result.stderr
    missing = judge(tmp_path, "ingest", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_demo_prints_the_five_analytics_and_a_rerun_is_all_cache(tmp_path: Path):
    demo = judge(tmp_path, "demo")
    assert demo.returncode == 0, demo.stderr
    for title in (
        "Topic & intent",
        "Sentiment & emotion",
        "Business risk",
        "Implicit feedback",
        "Failure cause",
        "Failure intelligence",
    ):
        assert title in demo.stdout
    conversations = sum(1 for _ in SAMPLE_CONVERSATIONS.open())
    assert f"{conversations} created" in demo.stdout
    rerun = judge(tmp_path, "run", "--grader", "local", "--json")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["cache_hits"] == summary["judgements"] == conversations * 7
    assert summary["calls"] == 0 and summary["fresh_by_dimension"] == {}


def test_rubric_edit_rejudges_only_risk_and_shows_the_new_category(tmp_path: Path):
    judge(tmp_path, "ingest", str(SAMPLE_CONVERSATIONS))
    conversations = sum(1 for _ in SAMPLE_CONVERSATIONS.open())
    first = judge(tmp_path, "run", "--grader", "fake", "--batch-size", "20", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["calls"] == -(-conversations // 20)
    second = json.loads(judge(tmp_path, "run", "--grader", "fake", "--json").stdout)
    assert second["calls"] == 0 and second["cache_hits"] == conversations * 7
    folder = tmp_path / "rubrics"
    folder.mkdir()
    raw = yaml.safe_load((builtin_dir("rubrics") / "default.yaml").read_text())
    raw["dimensions"]["risk"]["labels"].append(
        {
            "id": "competitor_mention",
            "description": "The user names a competitor they use instead.",
            "examples": ["netflix"],
        }
    )
    (folder / "default.yaml").write_text(yaml.safe_dump(raw))
    env = {"JUDGE_RUBRICS_PATH": str(folder)}
    edited = judge(tmp_path, "run", "--grader", "fake", "--json", env=env)
    assert edited.returncode == 0, edited.stderr
    assert json.loads(edited.stdout)["fresh_by_dimension"] == {"risk": conversations}
    report = judge(tmp_path, "report", env=env)
    assert "competitor_mention" in report.stdout


def test_bad_rubric_and_unknown_grader_exit_2(tmp_path: Path):
    raw = yaml.safe_load((builtin_dir("rubrics") / "default.yaml").read_text())
    raw["dimensions"]["risk"]["labels"][0]["id"] = "Churn Intent"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = judge(tmp_path, "rubric", "validate", str(path))
    assert result.returncode == 2
    assert "dimension 'risk'" in result.stderr and "label 'Churn Intent'" in result.stderr
    good = judge(tmp_path, "rubric", "validate", str(builtin_dir("rubrics") / "default.yaml"))
    assert good.returncode == 0 and "7 dimensions" in good.stdout
    grader = judge(tmp_path, "run", "--grader", "nonsense")
    assert (
        grader.returncode == 2 and "unknown grader 'nonsense'" in grader.stderr and "local" in grader.stderr
    )


@pytest.mark.parametrize("command", [["report"], ["run", "--rubric", "missing"]])
def test_user_errors_have_clear_messages(tmp_path: Path, command: list[str]):
    result = judge(tmp_path, *command)
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr
