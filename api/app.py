"""The FastAPI application factory: settings, error handling, body limit, routers, background runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import judge
from api import problems
from api.limits import BodySizeLimit
from api.routers import analytics, catalog, conversations, gold, runs
from api.settings import Settings
from judge.background import RunManager
from judge.store.db import engine


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine(settings.database_url)  # connect and migrate now: a bad database stops start-up, not a request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runs.mark_interrupted()
        yield
        app.state.runs.shutdown()

    app = FastAPI(
        title="judge",
        version=judge.__version__,
        summary="User analytics for conversational AI, built on LLM-as-judge.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runs = RunManager(settings.database_url, settings.cache_dir)
    problems.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    for module in (conversations, runs, analytics, catalog, gold):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"], summary="Liveness: the server is up and its database answers")
    def healthz() -> dict[str, str]:
        with engine(settings.database_url).connect():
            return {"status": "ok"}

    return app
