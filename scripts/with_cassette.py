"""Run a command with its HTTP replayed from a vcrpy cassette; and the cassette set-up shared by the
recorder (``scripts/record_cassettes.py``) and the tests (``tests/test_recorded.py``).

    python scripts/with_cassette.py cassettes/litellm_batch_of_3.yaml --all-played -- \\
        judge run --grader litellm:openai/smollm2-135m-instruct --api-base http://127.0.0.1:8765/v1 ...

The command runs inside this process, so vcrpy's patches apply to it: a console script (``judge``) is
resolved through its entry point, ``-m MODULE`` runs a module, anything else is run as a Python file.
Replay is the default (``--record-mode none``): a request that is not in the cassette fails, and, as in
the test suite, connecting to any non-loopback address is refused. ``--all-played`` exits with code 3
when the command did not replay every recorded interaction (it sent fewer or different requests).
Otherwise the command's own exit code is returned.

How requests match: method, path and the JSON body (what the grader sends: model, parameters, messages,
tool schema). Scheme, host and port are not compared, and the recorder rewrites them to
``CANONICAL_BASE``, so the port the model server happened to use never leaks into replay. Credentials
and environment-specific headers are not written to cassettes.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import runpy
import socket
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit, urlunsplit

CANONICAL_HOST = "127.0.0.1:8765"
CANONICAL_BASE = f"http://{CANONICAL_HOST}/v1"
API_KEY_PLACEHOLDER = "sk-local-placeholder"
FILTER_HEADERS = ["authorization", "x-api-key", "api-key", "openai-organization", "cookie", "set-cookie"]
NOISY_HEADER_PREFIXES = ("x-stainless-", "user-agent")
"""Request headers that describe the recording machine (OS, Python, SDK versions), not the request."""
MATCH_ON = ["method", "path", "judge_body"]


def _version_free(text: str) -> str:
    """Drop pydantic's 'For further information visit https://errors.pydantic.dev/<version>/...' lines:
    they are the only part of an instructor re-ask that changes with a library's version."""
    return "\n".join(line for line in text.splitlines() if "errors.pydantic.dev" not in line)


def normalised_body(body: Any) -> Any:
    """The request body as data, for comparison: JSON parsed, re-ask messages made version-free."""
    if body is None:
        return None
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    try:
        data = json.loads(text)
    except ValueError:
        return text
    for message in data.get("messages", []) if isinstance(data, dict) else []:
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"] = _version_free(message["content"])
    return data


def judge_body(r1: Any, r2: Any) -> None:
    """vcrpy matcher: the two requests carry the same JSON body (key order and whitespace aside)."""
    left, right = normalised_body(r1.body), normalised_body(r2.body)
    if left == right:
        return
    if isinstance(left, dict) and isinstance(right, dict):
        keys = sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))
        raise AssertionError(f"request bodies differ in: {', '.join(keys)}")
    raise AssertionError("request bodies differ")


def canonical_request(request: Any) -> Any:
    """``before_record_request``: point the request at ``CANONICAL_BASE`` and drop noisy headers."""
    request = copy.deepcopy(request)
    parts = urlsplit(request.uri)
    if parts.hostname and _is_loopback(parts.hostname):
        request.uri = urlunsplit((parts.scheme, CANONICAL_HOST, parts.path, parts.query, parts.fragment))
    for name in list(request.headers):
        if name.lower().startswith(NOISY_HEADER_PREFIXES):
            del request.headers[name]
    return request


def make_vcr(record_mode: str = "none", cassette_dir: str | None = None) -> Any:
    """The one VCR configuration used to record and to replay."""
    import vcr

    configured = vcr.VCR(
        record_mode=record_mode,
        match_on=MATCH_ON,
        filter_headers=FILTER_HEADERS,
        before_record_request=canonical_request,
        decode_compressed_response=True,
        cassette_library_dir=cassette_dir,
    )
    configured.register_matcher("judge_body", judge_body)
    return configured


def _is_loopback(host: Any) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return str(host).endswith(".localhost")


def guard_network() -> None:
    """Refuse connections and name look-ups outside this machine for the rest of the process."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise ConnectionRefusedError(f"with_cassette: refusing to reach {address[0]}")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and not _is_loopback(host):
            raise socket.gaierror(f"with_cassette: refusing to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo


def _command(argv: Sequence[str]) -> Callable[[], Any]:
    """A callable that runs ``argv`` in this process with ``sys.argv`` set as it expects."""
    name, rest = argv[0], list(argv[1:])
    if name == "-m":
        if not rest:
            raise SystemExit("with_cassette: -m needs a module name")
        module, args = rest[0], rest[1:]
        sys.argv = [module, *args]
        return lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)
    found = [ep for ep in entry_points(group="console_scripts") if ep.name == name]
    sys.argv = [name, *rest]
    if found:
        return found[0].load()
    return lambda: runpy.run_path(name, run_name="__main__")


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        raise SystemExit(
            "usage: with_cassette.py CASSETTE [--record-mode MODE] [--all-played] -- COMMAND ..."
        )
    split = args.index("--")
    parser = argparse.ArgumentParser(prog="with_cassette.py")
    parser.add_argument("cassette")
    parser.add_argument("--record-mode", default="none", choices=["none", "once", "new_episodes", "all"])
    parser.add_argument("--all-played", action="store_true", help="Fail unless every interaction replayed.")
    options = parser.parse_args(args[:split])
    command = args[split + 1 :]
    if not command:
        raise SystemExit("with_cassette: no command after --")
    guard_network()
    run = _command(command)
    with make_vcr(options.record_mode).use_cassette(options.cassette) as cassette:
        try:
            code = _exit_code(run())
        except SystemExit as stop:
            code = _exit_code(stop.code)
        played, total = cassette.play_count, len(cassette.data)
    print(f"with_cassette: {played} of {total} recorded interactions replayed", file=sys.stderr)
    if options.all_played and options.record_mode == "none" and played != total:
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
