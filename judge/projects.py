"""Projects and their API keys. A key is shown once at creation; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlmodel import Session, select

from judge.errors import AuthenticationError, ConflictError
from judge.store.tables import Project

KEY_PREFIX = "jk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_project(session: Session, name: str) -> tuple[Project, str]:
    """Create ``name`` with a new key and return both; the key cannot be recovered later."""
    if session.exec(select(Project).where(Project.name == name)).first() is not None:
        raise ConflictError(f"project {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    project = Project(name=name, key_hash=hash_key(key))
    session.add(project)
    session.commit()
    return project, key


def rotate_key(session: Session, project: Project) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    project.key_hash = hash_key(key)
    session.add(project)
    session.commit()
    return key


def authenticate(session: Session, key: str) -> Project:
    project = session.exec(select(Project).where(Project.key_hash == hash_key(key))).first()
    if project is None:
        raise AuthenticationError("invalid API key")
    return project
