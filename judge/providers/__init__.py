"""Graders behind one protocol and a registry by name; importing this package registers the built-ins."""

from judge.providers.base import GraderSpec, JudgeReply, JudgeRequest, Provider, Usage, create, registered

__all__ = ["GraderSpec", "JudgeReply", "JudgeRequest", "Provider", "Usage", "create", "registered"]
