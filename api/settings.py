"""Server settings, read from the environment once at start-up; a bad value stops the server at once."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from judge.settings import cache_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JUDGE_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///judge.db", validation_alias=AliasChoices("DATABASE_URL", "JUDGE_DATABASE_URL")
    )
    cache_dir: Path = Field(default_factory=cache_dir)
    max_conversations_per_request: int = Field(default=1_000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=25 * 2**20, ge=1_024)
    max_sync_conversations: int = Field(default=20, ge=1, le=200)
    page_size_limit: int = Field(default=500, ge=1)

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("DATABASE_URL must start with sqlite:, postgresql: or postgresql+psycopg:")
        return url
