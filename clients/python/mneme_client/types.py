"""What calls return: plain, typed, documented dataclasses (no protobuf objects leak)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class MemoryType(str, enum.Enum):
    """The kind of a memory; a plain string (``"episodic"``…) works wherever one is taken."""

    EPISODIC = "episodic"
    """What happened; decays over days to weeks."""
    SEMANTIC = "semantic"
    """What is true; barely decays (the default)."""
    PROCEDURAL = "procedural"
    """How to do things; decays slowly."""


@dataclass(frozen=True)
class Memory:
    """One stored memory."""

    id: str
    agent_id: str
    session_id: str
    """Empty for agent-wide memories."""
    memory_type: MemoryType
    content: str
    metadata: dict[str, str]
    pinned: bool
    importance: float
    access_count: int
    created_at: datetime
    updated_at: datetime
    last_accessed_at: datetime | None
    expires_at: datetime | None
    vector: list[float] | None = None
    """Only when asked for (``include_vectors=True``)."""


@dataclass(frozen=True)
class ScoreBreakdown:
    """Why a memory got its confidence: each component in [0, 1]."""

    similarity: float
    """Calibrated similarity of the memory to the query."""
    recency: float
    frequency: float
    importance: float
    type_weight: float
    lexical: float = 0.0
    """How much of the query's wording the memory shares (normalised BM25)."""


@dataclass(frozen=True)
class Recalled:
    """A recall result."""

    memory: Memory
    similarity: float
    """Raw cosine similarity to the query."""
    confidence: float
    """Calibrated confidence in [0, 1]; results are ranked by it."""
    scores: ScoreBreakdown


@dataclass(frozen=True)
class Remembered:
    """What remembering did."""

    memory: Memory
    deduplicated: bool
    """True when a near-identical memory existed and was reinforced instead."""


@dataclass(frozen=True)
class Context:
    """A ready-to-paste context block."""

    text: str
    memories: list[Recalled]
    truncated: bool
    """True when memories were left out to stay within the token budget."""


@dataclass(frozen=True)
class Stats:
    """Counts and sizes of one agent."""

    agent_id: str
    total_memories: int
    by_type: dict[str, int]
    by_session: dict[str, int]
    """Agent-wide memories are under ``""``."""
    dimensions: int
    embedder: str
    bytes_on_disk: int
    agent_bytes: int
    index_lag: int


@dataclass
class MemoryInput:
    """One memory for :meth:`Agent.remember_many` (a ``dict`` with these keys works too)."""

    content: str
    memory_type: MemoryType | str = MemoryType.SEMANTIC
    session_id: str = ""
    ttl_seconds: int = 0
    vector: list[float] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    pinned: bool = False
    importance: float | None = None
