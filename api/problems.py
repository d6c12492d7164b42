"""Every error as RFC 9457 problem details (``application/problem+json``), never a bare 500.

The core's error hierarchy carries its own status (``InputError.status_code``); request validation
errors name each field at fault; malformed JSON is a 400.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from judge.errors import JudgeError, ProviderError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"


def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def _judge_error(_request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, ProviderError):
        return problem(502, str(error))
    status = int(getattr(error, "status_code", 422))
    return problem(status, str(error))


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    items = list(error.errors())
    if any(item.get("type") == "json_invalid" for item in items):
        return problem(400, "request body is not valid JSON")
    errors = [{"field": _field(tuple(item["loc"])), "message": item["msg"]} for item in items]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
    return problem(422, detail, errors=errors)


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return problem(error.status_code, str(error.detail))


async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=error)
    return problem(500, "internal error; the server log has the details")


def install(app: FastAPI) -> None:
    app.add_exception_handler(JudgeError, _judge_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
