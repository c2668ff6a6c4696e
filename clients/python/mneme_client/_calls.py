"""Every operation as data: which RPC, which request, how to read the answer, and whether
retrying it is safe. The sync and async clients only differ in how they run these."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from . import _convert as cv
from ._generated import mneme_pb2 as pb
from .errors import RETRYABLE
from .types import (
    Context,
    Memory,
    MemoryInput,
    MemoryType,
    Recalled,
    Remembered,
    Stats,
)

T = TypeVar("T")

#: Bytes per Import chunk.
IMPORT_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Call(Generic[T]):
    """One unary call."""

    service: str  # "memory" or "admin"
    method: str  # the stub's attribute, e.g. "Remember"
    request: Any
    convert: Callable[[Any], T]
    idempotent: bool


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1-based): exponential with jitter, ≤ 2 s."""
    base: float = min(2.0, 0.05 * (2**attempt))
    return base * (0.5 + random.random() / 2)


def retryable(err: grpc.RpcError) -> bool:
    return hasattr(err, "code") and err.code() in RETRYABLE


class AgentCalls:
    """Builds the calls of one agent; the clients' Agent classes run them."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id

    def remember(
        self,
        content: str,
        memory_type: MemoryType | str,
        session_id: str,
        ttl_seconds: int,
        vector: Iterable[float] | None,
        metadata: Mapping[str, str] | None,
        pinned: bool,
        importance: float | None,
    ) -> Call[Remembered]:
        request = cv.remember_request(
            self.agent_id,
            content,
            memory_type,
            session_id,
            ttl_seconds,
            vector,
            metadata,
            pinned,
            importance,
        )
        return Call("memory", "Remember", request, cv.remembered, idempotent=False)

    def remember_many(
        self, items: Iterable[MemoryInput | Mapping[str, Any]]
    ) -> Call[list[Remembered]]:
        requests = []
        for raw in items:
            i = cv.memory_input(raw)
            requests.append(
                cv.remember_request(
                    "",
                    i.content,
                    i.memory_type,
                    i.session_id,
                    i.ttl_seconds,
                    i.vector,
                    i.metadata,
                    i.pinned,
                    i.importance,
                )
            )
        request = pb.RememberBatchRequest(agent_id=self.agent_id, items=requests)
        return Call(
            "memory",
            "RememberBatch",
            request,
            lambda r: [cv.remembered(x) for x in r.results],
            idempotent=False,
        )

    def recall(self, fields: dict[str, Any]) -> Call[list[Recalled]]:
        request = pb.RecallRequest(agent_id=self.agent_id, **fields)
        return Call(
            "memory",
            "Recall",
            request,
            lambda r: [cv.recalled(m) for m in r.memories],
            idempotent=True,
        )

    def inject_context(self, fields: dict[str, Any], max_tokens: int) -> Call[Context]:
        request = pb.InjectContextRequest(
            agent_id=self.agent_id, max_tokens=max_tokens, **fields
        )
        return Call("memory", "InjectContext", request, cv.context, idempotent=True)

    def get(self, memory_id: str, include_vector: bool) -> Call[Memory]:
        request = pb.GetRequest(
            agent_id=self.agent_id, id=memory_id, include_vector=include_vector
        )
        return Call("memory", "Get", request, cv.memory, idempotent=True)

    def list_page(
        self,
        page_size: int,
        page_token: str,
        session_id: str,
        session_only: bool,
        memory_types: Iterable[MemoryType | str] | None,
        metadata: Mapping[str, str] | None,
        include_vectors: bool,
    ) -> Call[tuple[list[Memory], str]]:
        request = pb.ListRequest(
            agent_id=self.agent_id,
            page_size=page_size,
            page_token=page_token,
            session_id=session_id,
            session_only=session_only,
            memory_types=cv.memory_types(memory_types),
            metadata=dict(metadata or {}),
            include_vectors=include_vectors,
        )
        return Call(
            "memory",
            "List",
            request,
            lambda r: ([cv.memory(m) for m in r.memories], r.next_page_token),
            idempotent=True,
        )

    def update(
        self,
        memory_id: str,
        content: str | None,
        metadata: Mapping[str, str] | None,
        ttl_seconds: int | None,
        pinned: bool | None,
        importance: float | None,
    ) -> Call[Memory]:
        request = pb.UpdateRequest(agent_id=self.agent_id, id=memory_id)
        if content is not None:
            request.content = content
        if metadata is not None:
            request.metadata.update(metadata)
            request.clear_metadata = not metadata
        if ttl_seconds is not None:
            request.ttl_seconds = ttl_seconds
        if pinned is not None:
            request.pinned = pinned
        if importance is not None:
            request.importance = importance
        return Call("memory", "Update", request, cv.memory, idempotent=True)

    def forget(self, ids: str | Iterable[str]) -> Call[int]:
        ids_list = [ids] if isinstance(ids, str) else list(ids)
        request = pb.ForgetRequest(agent_id=self.agent_id, ids=ids_list)
        return Call("memory", "Forget", request, lambda r: int(r.forgotten), idempotent=True)

    def mark_used(self, ids: str | Iterable[str]) -> Call[int]:
        ids_list = [ids] if isinstance(ids, str) else list(ids)
        request = pb.MarkUsedRequest(agent_id=self.agent_id, ids=ids_list)
        return Call("memory", "MarkUsed", request, lambda r: int(r.marked), idempotent=False)

    def forget_session(self, session_id: str) -> Call[int]:
        request = pb.ForgetSessionRequest(agent_id=self.agent_id, session_id=session_id)
        return Call(
            "memory", "ForgetSession", request, lambda r: int(r.forgotten), idempotent=True
        )

    def clear_all(self) -> Call[int]:
        request = pb.ClearAllRequest(agent_id=self.agent_id)
        return Call("memory", "ClearAll", request, lambda r: int(r.forgotten), idempotent=True)

    def stats(self) -> Call[Stats]:
        request = pb.StatsRequest(agent_id=self.agent_id)
        return Call("memory", "Stats", request, cv.stats, idempotent=True)

    def export_request(self) -> Any:
        return pb.ExportRequest(agent_id=self.agent_id)

    def import_chunks(self, data: Iterable[bytes]) -> Iterable[Any]:
        first = True
        for chunk in data:
            for at in range(0, max(len(chunk), 1), IMPORT_CHUNK_BYTES):
                piece = chunk[at : at + IMPORT_CHUNK_BYTES]
                if first:
                    yield pb.ImportChunk(agent_id=self.agent_id, data=piece)
                    first = False
                elif piece:
                    yield pb.ImportChunk(data=piece)
        if first:
            yield pb.ImportChunk(agent_id=self.agent_id, data=b"")
