"""A stand-in LLM provider for benchmarks: an OpenAI-compatible chat-completions server on loopback.

    python bench/standin.py [--port 0] [--latency 1.0 | uniform:0.5:1.5 | lognormal:1.0:0.3 | exp:1.0]
                            [--max-concurrency 32] [--busy-retry-after 0.5]
                            [--rate-429 0.2 --retry-after 1] [--rate-500 0] [--rate-timeout 0 --hang 600]
                            [--rate-invalid-json 0] [--rate-bad-schema 0] [--rate-poison 0]
                            [--seed 7] [--log requests.jsonl]

Real providers take about a second per call, cap the calls in flight and answer 429; this server does
the same, reproducibly, so the runner can be measured against a provider whose limit is known:
- a request beyond ``--max-concurrency`` in flight is answered 429 at once (``Retry-After`` set);
- otherwise, with the given probabilities (drawn with ``--seed``): 429 with ``Retry-After`` at once;
  500 after the latency; no answer for ``--hang`` seconds (the client's timeout fires); after the latency
  a reply whose tool arguments are not JSON, or are JSON that breaks the schema; else a valid reply,
  unless the batch holds one of the ``--rate-poison`` conversations, which is always answered invalid;
- a valid reply to a tool-calling or JSON-schema request fills the schema with labels chosen at random
  (seeded): one result per conversation id of the batch, evidence inside each conversation;
- usage counts tokens with tiktoken (cl100k): the messages, plus the tools or schema sent with them;
- every request is logged as one JSON line: arrival, status, fault, prompt and completion tokens, the
  conversation ids it carried, whether it was a re-ask, and the calls in flight.

It listens on 127.0.0.1 only and prints ``listening on http://127.0.0.1:PORT`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

CONVERSATION = re.compile(r'<conversation id="([^"]+)"')
MESSAGE = re.compile(r"^\[(\d+)\] ", re.MULTILINE)
LOOPBACK = "127.0.0.1"


def _configure_tiktoken() -> None:
    """Use the encodings shipped inside litellm's wheel: nothing is downloaded (see DESIGN.md)."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(folder))


def latency_sampler(spec: str, rng: random.Random) -> Callable[[], float]:
    """``1.0`` (fixed), ``uniform:LOW:HIGH``, ``lognormal:MEDIAN:SIGMA`` or ``exp:MEAN`` seconds."""
    kind, _, rest = spec.partition(":")
    if not rest:
        fixed = float(kind)
        return lambda: fixed
    values = [float(v) for v in rest.split(":")]
    if kind == "uniform":
        low, high = values
        return lambda: rng.uniform(low, high)
    if kind == "lognormal":
        median, sigma = values
        import math

        mu = math.log(median)
        return lambda: rng.lognormvariate(mu, sigma)
    if kind == "exp":
        (mean,) = values
        return lambda: rng.expovariate(1 / mean) if mean > 0 else 0.0
    raise SystemExit(
        f"--latency {spec!r}: expected SECONDS, uniform:LOW:HIGH, lognormal:MEDIAN:SIGMA or exp:MEAN"
    )


class Tokens:
    """tiktoken counts; the tool schema of a batch repeats across calls, so its count is memoised."""

    def __init__(self) -> None:
        _configure_tiktoken()
        import tiktoken

        self.encoding = tiktoken.get_encoding("cl100k_base")
        self._memo: dict[str, int] = {}

    def count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def memo(self, text: str) -> int:
        found = self._memo.get(text)
        if found is None:
            if len(self._memo) > 10_000:
                self._memo.clear()
            found = self._memo[text] = self.count(text)
        return found


class Filler:
    """Random values for a JSON Schema (the subset pydantic emits), with evidence inside each conversation."""

    def __init__(self, rng: random.Random, sizes: dict[str, int]) -> None:
        self.rng = rng
        self.sizes = sizes
        self.defs: dict[str, Any] = {}

    def fill(self, schema: dict[str, Any]) -> Any:
        self.defs = schema.get("$defs", {})
        return self.value(schema, None)

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.defs[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def value(self, schema: dict[str, Any], conversation: str | None) -> Any:
        schema = self.resolve(schema)
        rng = self.rng
        if "enum" in schema:
            return rng.choice(schema["enum"])
        if "const" in schema:
            return schema["const"]
        if "anyOf" in schema:
            options = [self.resolve(s) for s in schema["anyOf"]]
            not_null = [s for s in options if s.get("type") != "null"]
            if not not_null or rng.random() < 0.5:
                return None if len(not_null) < len(options) else self.value(not_null[0], conversation)
            return self.value(rng.choice(not_null), conversation)
        kind = schema.get("type")
        if kind == "object":
            return self.obj(schema, conversation)
        if kind == "array":
            return self.array(schema, conversation)
        if kind == "string":
            limit = int(schema.get("maxLength", 60))
            return "stand-in reason"[:limit]
        if kind == "integer":
            return 0
        if kind == "number":
            return 0.0
        if kind == "boolean":
            return rng.random() < 0.5
        return None

    def obj(self, schema: dict[str, Any], conversation: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        required = set(schema.get("required", []))
        for name, sub in schema.get("properties", {}).items():
            if name not in required and self.rng.random() < 0.5:
                continue
            if name == "conversation_id" and conversation is not None:
                out[name] = conversation
            elif name == "evidence":
                size = self.sizes.get(conversation or "", 1)
                out[name] = sorted(self.rng.sample(range(size), k=min(size, self.rng.randint(1, 2))))
            else:
                out[name] = self.value(sub, conversation)
        return out

    def array(self, schema: dict[str, Any], conversation: str | None) -> list[Any]:
        items = self.resolve(schema.get("items", {}))
        id_schema = self.resolve(items.get("properties", {}).get("conversation_id", {}))
        ids = id_schema.get("enum") or ([id_schema["const"]] if "const" in id_schema else None)
        if ids:  # a batch reply: one result per conversation id, each once
            return [self.obj(items, cid) for cid in ids]
        unique = "enum" in self.resolve(items.get("properties", {}).get("label", {}))
        chosen = [self.value(items, conversation) for _ in range(self.rng.randint(0, 2))]
        if unique:
            chosen = list({c["label"]: c for c in chosen}.values())
        return chosen


def sizes_from_prompt(messages: list[dict[str, Any]]) -> dict[str, int]:
    """Conversation id -> number of messages, read from the ``<conversation id=...>`` blocks."""
    text = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
    found: dict[str, int] = {}
    parts = CONVERSATION.split(text)
    for cid, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.split("</conversation>", 1)[0]
        indices = [int(i) for i in MESSAGE.findall(body)]
        found[cid] = max(indices, default=0) + 1
    return found


def break_schema(arguments: dict[str, Any]) -> dict[str, Any]:
    """Valid JSON the schema rejects: drop a conversation, or give a label the rubric does not have."""
    results = arguments.get("results")
    if isinstance(results, list) and len(results) > 1:
        return {"results": results[1:]}
    if isinstance(results, list) and results:
        first = dict(results[0])
        for key, value in first.items():
            if isinstance(value, dict) and "label" in value:
                first[key] = {**value, "label": "not_a_label"}
                break
        return {"results": [first]}
    return {"unexpected": True}


class Standin:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.fault_rng = random.Random(args.seed)
        self.label_rng = random.Random(args.seed + 1)
        self.latency = latency_sampler(args.latency, random.Random(args.seed + 2))
        self.tokens = Tokens()
        self.in_flight = 0
        self.requests = 0
        self.log = Path(args.log).open("a", encoding="utf-8") if args.log else None  # noqa: SIM115

    def poisoned(self, conversation_id: str) -> bool:
        """Whether every reply to a batch holding this conversation breaks the schema (``--rate-poison``
        of the ids, chosen by hashing them with the seed): the conversations a grader can never judge."""
        if not self.args.rate_poison:
            return False
        digest = hashlib.sha256(f"{self.args.seed}|{conversation_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.args.rate_poison

    def draw_fault(self) -> str | None:
        a = self.args
        roll = self.fault_rng.random()
        for name, rate in (
            ("429", a.rate_429),
            ("500", a.rate_500),
            ("timeout", a.rate_timeout),
            ("invalid_json", a.rate_invalid_json),
            ("bad_schema", a.rate_bad_schema),
        ):
            if roll < rate:
                return name
            roll -= rate
        return None

    def record(self, **fields: Any) -> None:
        if self.log is not None:
            self.log.write(json.dumps(fields, separators=(",", ":")) + "\n")
            self.log.flush()

    async def completions(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        self.requests += 1
        body = await request.json()
        messages = body.get("messages", [])
        sizes = sizes_from_prompt(messages)
        reask = any(m.get("role") in ("tool", "assistant") for m in messages)
        base = {"t": round(arrived, 4), "ids": list(sizes), "conversations": len(sizes), "reask": reask}
        if self.in_flight >= self.args.max_concurrency:
            self.record(**base, status=429, fault="busy", in_flight=self.in_flight)
            return self.error(429, "too many requests in flight", self.args.busy_retry_after)
        fault = self.draw_fault()
        if fault is None and any(self.poisoned(cid) for cid in sizes):
            fault = "bad_schema"
        if fault == "429":
            self.record(**base, status=429, fault=fault, in_flight=self.in_flight)
            return self.error(429, "rate limited", self.args.retry_after)
        self.in_flight += 1
        try:
            if fault == "timeout":
                self.record(**base, status=0, fault=fault, in_flight=self.in_flight)
                await asyncio.sleep(self.args.hang)
                return self.error(504, "hung")
            # The reply is worked out first and sent when the latency has passed since arrival: its
            # CPU time (token counts, the log) must not add to the latency a client sees.
            reply_at = arrived + self.latency()
            if fault == "500":
                await asyncio.sleep(max(0.0, reply_at - time.time()))
                self.record(**base, status=500, fault=fault, in_flight=self.in_flight)
                return self.error(500, "internal error")
            reply, prompt_tokens, completion_tokens = self.answer(body, sizes, fault)
            await asyncio.sleep(max(0.0, reply_at - time.time()))
            self.record(
                **base,
                status=200,
                fault=fault,
                in_flight=self.in_flight,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
            return web.json_response(reply)
        finally:
            self.in_flight -= 1

    def error(self, status: int, message: str, retry_after: float | None = None) -> web.Response:
        headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
        payload = {"error": {"message": message, "type": "standin_error", "code": status}}
        return web.json_response(payload, status=status, headers=headers)

    def answer(self, body: dict[str, Any], sizes: dict[str, int], fault: str | None) -> tuple[Any, int, int]:
        messages = body.get("messages", [])
        prompt_tokens = sum(self.tokens.count(str(m.get("content") or "")) + 4 for m in messages)
        tools = body.get("tools") or []
        fmt = body.get("response_format") or {}
        schema: dict[str, Any] | None = None
        name = "reply"
        if tools:
            function = tools[0]["function"]
            schema, name = function.get("parameters", {}), function["name"]
            prompt_tokens += self.tokens.memo(json.dumps(tools, sort_keys=True))
        elif fmt.get("type") == "json_schema":
            schema = fmt["json_schema"].get("schema", {})
            prompt_tokens += self.tokens.memo(json.dumps(fmt, sort_keys=True))
        if schema is None:
            text = "This stand-in answers structured requests only."
        else:
            filled = Filler(self.label_rng, sizes).fill(schema)
            if fault == "bad_schema":
                filled = break_schema(filled)
            text = json.dumps(filled)
            if fault == "invalid_json":
                text = text[: max(1, len(text) // 2)] + "}} not json"
        completion_tokens = self.tokens.count(text)
        call_id = uuid.uuid4().hex[:24]
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        if tools:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{call_id}",
                        "type": "function",
                        "function": {"name": name, "arguments": text},
                    }
                ],
            }
            finish = "tool_calls"
        reply = {
            "id": f"chatcmpl-{call_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "standin"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return reply, prompt_tokens, completion_tokens

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "standin", "object": "model"}]})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default=LOOPBACK, help="a loopback address (the only kind accepted)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--latency", default="1.0", help="seconds: 1.0, uniform:LOW:HIGH, lognormal:MEDIAN:SIGMA, exp:MEAN"
    )
    parser.add_argument("--max-concurrency", type=int, default=32, help="calls in flight beyond this get 429")
    parser.add_argument(
        "--busy-retry-after", type=float, default=0.5, help="Retry-After of a 429 for concurrency"
    )
    parser.add_argument("--rate-429", type=float, default=0.0, help="share of calls answered 429")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of those 429s, seconds")
    parser.add_argument("--rate-500", type=float, default=0.0)
    parser.add_argument("--rate-timeout", type=float, default=0.0, help="share of calls never answered")
    parser.add_argument("--hang", type=float, default=600.0, help="how long an unanswered call hangs")
    parser.add_argument("--rate-invalid-json", type=float, default=0.0, help="replies that are not JSON")
    parser.add_argument("--rate-bad-schema", type=float, default=0.0, help="replies that break the schema")
    parser.add_argument(
        "--rate-poison", type=float, default=0.0, help="share of conversation ids always answered invalid"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--log", default=None, help="JSON-lines file of every request")
    args = parser.parse_args(argv)
    import ipaddress

    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("--host must be a loopback address")
    return args


async def serve(args: argparse.Namespace) -> None:
    standin = Standin(args)
    app = web.Application(client_max_size=64 * 1024**2)
    for prefix in ("", "/v1"):
        app.router.add_post(f"{prefix}/chat/completions", standin.completions)
        app.router.add_get(f"{prefix}/models", standin.models)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening on http://{args.host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        if standin.log is not None:
            standin.log.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
