"""Wire messages <-> the dataclasses of :mod:`mneme_client.types`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from ._generated import mneme_pb2 as pb
from .types import (
    Context,
    Memory,
    MemoryInput,
    MemoryType,
    Recalled,
    Remembered,
    ScoreBreakdown,
    Stats,
)

_TYPE_TO_WIRE = {
    MemoryType.EPISODIC: pb.MEMORY_TYPE_EPISODIC,
    MemoryType.SEMANTIC: pb.MEMORY_TYPE_SEMANTIC,
    MemoryType.PROCEDURAL: pb.MEMORY_TYPE_PROCEDURAL,
}
_WIRE_TO_TYPE = {v: k for k, v in _TYPE_TO_WIRE.items()}


def memory_type(value: MemoryType | str) -> int:
    """The wire number of a memory type given as the enum or its name."""
    try:
        return int(_TYPE_TO_WIRE[MemoryType(value)])
    except ValueError:
        names = ", ".join(t.value for t in MemoryType)
        raise ValueError(f"memory_type {value!r} is not one of {names}") from None


def memory_types(values: Iterable[MemoryType | str] | None) -> list[int]:
    return [memory_type(v) for v in values or ()]


def _time(ts: Any, present: bool) -> datetime | None:
    if not present:
        return None
    seconds = ts.seconds + ts.nanos / 1e9
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def memory(m: Any) -> Memory:
    created = _time(m.created_at, m.HasField("created_at"))
    updated = _time(m.updated_at, m.HasField("updated_at"))
    epoch = datetime.fromtimestamp(0, tz=timezone.utc)
    return Memory(
        id=m.id,
        agent_id=m.agent_id,
        session_id=m.session_id,
        memory_type=_WIRE_TO_TYPE.get(m.memory_type, MemoryType.SEMANTIC),
        content=m.content,
        metadata=dict(m.metadata),
        pinned=m.pinned,
        importance=m.importance,
        access_count=m.access_count,
        created_at=created or epoch,
        updated_at=updated or epoch,
        last_accessed_at=_time(m.last_accessed_at, m.HasField("last_accessed_at")),
        expires_at=_time(m.expires_at, m.HasField("expires_at")),
        vector=list(m.vector) if len(m.vector) else None,
    )


def recalled(r: Any) -> Recalled:
    s = r.scores
    return Recalled(
        memory=memory(r.memory),
        similarity=r.similarity,
        confidence=r.confidence,
        scores=ScoreBreakdown(
            similarity=s.similarity,
            recency=s.recency,
            frequency=s.frequency,
            importance=s.importance,
            type_weight=s.type_weight,
            lexical=s.lexical,
        ),
    )


def remembered(r: Any) -> Remembered:
    return Remembered(memory=memory(r.memory), deduplicated=r.deduplicated)


def context(r: Any) -> Context:
    return Context(
        text=r.context,
        memories=[recalled(m) for m in r.memories],
        truncated=r.truncated,
    )


def stats(r: Any) -> Stats:
    return Stats(
        agent_id=r.agent_id,
        total_memories=r.total_memories,
        by_type=dict(r.by_type),
        by_session=dict(r.by_session),
        dimensions=r.dimensions,
        embedder=r.embedder,
        bytes_on_disk=r.bytes_on_disk,
        agent_bytes=r.agent_bytes,
        index_lag=r.index_lag,
    )


def remember_request(
    agent_id: str,
    content: str,
    memory_type_: MemoryType | str,
    session_id: str,
    ttl_seconds: int,
    vector: Iterable[float] | None,
    metadata: Mapping[str, str] | None,
    pinned: bool,
    importance: float | None,
) -> Any:
    return pb.RememberRequest(
        agent_id=agent_id,
        content=content,
        memory_type=memory_type(memory_type_),
        session_id=session_id,
        ttl_seconds=ttl_seconds,
        vector=list(vector) if vector is not None else [],
        metadata=dict(metadata or {}),
        pinned=pinned,
        importance=0.0 if importance is None else importance,
    )


def memory_input(item: MemoryInput | Mapping[str, Any]) -> MemoryInput:
    if isinstance(item, MemoryInput):
        return item
    return MemoryInput(**dict(item))


def recall_fields(
    query: str | None,
    vector: Iterable[float] | None,
    top_k: int,
    session_id: str,
    session_only: bool,
    memory_types_: Iterable[MemoryType | str] | None,
    min_confidence: float,
    metadata: Mapping[str, str] | None,
    include_vectors: bool,
) -> dict[str, Any]:
    return dict(
        query=query or "",
        vector=list(vector) if vector is not None else [],
        top_k=top_k,
        session_id=session_id,
        session_only=session_only,
        memory_types=memory_types(memory_types_),
        min_confidence=min_confidence,
        metadata=dict(metadata or {}),
        include_vectors=include_vectors,
    )
