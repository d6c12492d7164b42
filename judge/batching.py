"""Token counting and packing conversations into provider calls.

Each call carries K conversations and every dimension still to judge for them, so the instructions are
sent once per call instead of once per conversation and dimension. Conversations longer than the
per-conversation budget are shortened by one stated policy: keep the first and the last messages, drop
the middle, and record how many were dropped (the judgement stores that it was truncated).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache

import tiktoken

from judge.conversation import Conversation

ENCODING = "cl100k_base"
MESSAGE_OVERHEAD = 6  # the "[i] role: " prefix and line breaks around each message
CONVERSATION_OVERHEAD = 20  # the <conversation id=...> tags
MAX_MESSAGE_TOKENS = 1_000  # a single message longer than this keeps its head and tail


@cache
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(encoding().encode_ordinary(text))


@dataclass(frozen=True)
class PromptMessage:
    """A message as the grader sees it; ``omitted`` > 0 marks a gap left by truncation."""

    index: int
    role: str
    content: str
    omitted: int = 0


@dataclass(frozen=True)
class PreparedConversation:
    """A conversation ready to be sent: possibly shortened, with its token count."""

    conversation: Conversation
    messages: list[PromptMessage]
    tokens: int
    truncated: bool

    @property
    def id(self) -> str:
        return self.conversation.id

    @property
    def language(self) -> str | None:
        return self.conversation.language


def _clip(text: str, limit: int) -> tuple[str, int]:
    """``encode_ordinary`` is ``encode(disallowed_special=())`` (special tokens read as plain text)
    without the scan for special tokens."""
    tokens = encoding().encode_ordinary(text)
    if len(tokens) <= limit:
        return text, len(tokens)
    half = limit // 2
    clipped = encoding().decode(tokens[:half]) + " [...] " + encoding().decode(tokens[-half:])
    return clipped, limit + 3


def prepare(conversation: Conversation, max_tokens: int) -> PreparedConversation:
    """Shorten ``conversation`` to ``max_tokens`` by keeping its start and end (the truncation policy)."""
    messages: list[PromptMessage] = []
    sizes: list[int] = []
    clipped_any = False
    for index, message in enumerate(conversation.messages):
        content, size = _clip(message.content, MAX_MESSAGE_TOKENS)
        clipped_any |= content != message.content
        messages.append(PromptMessage(index, message.role.value, content))
        sizes.append(size + MESSAGE_OVERHEAD)
    total = sum(sizes) + CONVERSATION_OVERHEAD
    if total <= max_tokens:
        return PreparedConversation(conversation, messages, total, clipped_any)
    head, tail, used = 0, len(messages), CONVERSATION_OVERHEAD + MESSAGE_OVERHEAD
    take_head = True
    while head < tail:
        size = sizes[head] if take_head else sizes[tail - 1]
        if used + size > max_tokens:
            break
        used += size
        if take_head:
            head += 1
        else:
            tail -= 1
        take_head = not take_head
    kept = [*messages[:head], PromptMessage(head, "", "", omitted=tail - head), *messages[tail:]]
    return PreparedConversation(conversation, kept, used, True)


def whole(conversation: Conversation) -> PreparedConversation:
    """``conversation`` as it is, for a grader with no context window (``local``): nothing to count,
    nothing to cut."""
    messages = [PromptMessage(i, m.role.value, m.content) for i, m in enumerate(conversation.messages)]
    return PreparedConversation(conversation, messages, 0, False)


@dataclass
class Batch:
    """Conversations judged together in one call, all on the same dimensions."""

    dimensions: tuple[str, ...]
    conversations: list[PreparedConversation] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.conversations)

    def split(self) -> tuple[Batch, Batch]:
        middle = len(self.conversations) // 2
        return (
            Batch(self.dimensions, self.conversations[:middle]),
            Batch(self.dimensions, self.conversations[middle:]),
        )


class Packer:
    """Greedily packs conversations that need the same dimensions into batches of at most ``batch_size``
    conversations and ``token_budget`` conversation tokens (no token limit when it is None)."""

    def __init__(self, batch_size: int, token_budget: int | None) -> None:
        self.batch_size = batch_size
        self.token_budget = token_budget
        self._open: dict[tuple[str, ...], tuple[Batch, list[int]]] = {}

    def add(self, prepared: PreparedConversation, dimensions: tuple[str, ...]) -> Iterator[Batch]:
        """Add a conversation; yields the batches this fills (at most two)."""
        entry = self._open.get(dimensions)
        budget = self.token_budget
        if entry is not None and budget is not None and entry[1][0] + prepared.tokens > budget:
            yield self._open.pop(dimensions)[0]
            entry = None
        if entry is None:
            entry = self._open[dimensions] = (Batch(dimensions), [0])
        batch, tokens = entry
        batch.conversations.append(prepared)
        tokens[0] += prepared.tokens
        if len(batch.conversations) >= self.batch_size:
            yield self._open.pop(dimensions)[0]

    def flush(self) -> Iterator[Batch]:
        """The batches still open, each with fewer conversations than a full one."""
        while self._open:
            yield self._open.pop(next(iter(self._open)))[0]


def pack(
    items: Iterable[tuple[PreparedConversation, tuple[str, ...]]], batch_size: int, token_budget: int | None
) -> Iterator[Batch]:
    """Pack ``items`` (see ``Packer``); a batch is yielded as soon as it is full."""
    packer = Packer(batch_size, token_budget)
    for prepared, dimensions in items:
        yield from packer.add(prepared, dimensions)
    yield from packer.flush()
