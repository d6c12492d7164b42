"""End to end: the real server as a subprocess on a free loopback port, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from judge.resources import SAMPLE_CONVERSATIONS

SAMPLE = [json.loads(line) for line in SAMPLE_CONVERSATIONS.open()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _judge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "judge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a freshly started ``judge serve``."""
    env = {**os.environ, "DATABASE_URL": database_url, "JUDGE_CACHE_DIR": str(tmp_path / "cache")}
    key = _judge(env, "project", "create", "e2e").stdout.strip()
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "judge", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
            assert process.poll() is None, (tmp_path / "server.log").read_text()
        else:
            raise AssertionError("server did not start: " + (tmp_path / "server.log").read_text())
        yield base, key
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_submit_run_poll_and_read_analytics(server: tuple[str, str]):
    base, key = server
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        submitted = client.post("/v1/conversations", json={"conversations": SAMPLE})
        assert submitted.status_code == 200 and submitted.json()["counts"]["created"] == len(SAMPLE)
        again = client.post("/v1/conversations", json={"conversations": SAMPLE}).json()
        assert again["counts"]["unchanged"] == len(SAMPLE)
        started = client.post("/v1/runs", json={"rubric": "default", "grader": "local"})
        assert started.status_code == 202
        run_id = started.json()["id"]
        deadline = time.monotonic() + 120
        while (run := client.get(f"/v1/runs/{run_id}").json())["status"] == "running":
            assert time.monotonic() < deadline, run
            time.sleep(0.2)
        assert run["status"] == "completed" and run["conversations"] == len(SAMPLE) and run["unscored"] == 0
        assert run["judged"] == len(SAMPLE) * 7
        for name in ("topics", "sentiment", "risks", "implicit-feedback", "failures"):
            response = client.get(f"/v1/analytics/{name}", params={"bucket": "month"})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["scope"]["runs"] == [run_id]
            assert all(d["scored"] == len(SAMPLE) for d in body["dimensions"])
            months = {point["key"] for point in body["series"]}
            assert months <= {"2026-11-01"} and (months or name == "risks")
        failures = client.get("/v1/analytics/failures").json()
        assert sum(t["conversations"] for t in failures["topics"]) == len(SAMPLE)
        assert client.get("/docs").status_code == 200
