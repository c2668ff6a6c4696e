"""The asyncio client (grpc.aio): the same operations as :mod:`mneme_client._client`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar

import grpc

from . import _channel
from . import _convert as cv
from ._calls import AgentCalls, Call, backoff, retryable
from ._generated import mneme_pb2_grpc as rpc
from .errors import from_rpc_error
from .types import Context, Memory, MemoryInput, MemoryType, Recalled, Remembered, Stats

T = TypeVar("T")


class AsyncMneme:
    """An asyncio connection to a Mneme server; see :class:`mneme_client.Mneme`.

    >>> async with AsyncMneme("127.0.0.1:50051") as client:   # doctest: +SKIP
    ...     hits = await client.agent("bot").recall("formal tone?")
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        api_key: str | None = None,
        tls: _channel.TlsSetting = None,
        timeout: float = 30.0,
        retries: int = 4,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self._metadata = _channel.metadata(api_key)
        self._channel = _channel.aio_channel(address, tls)
        self._stubs: dict[str, Any] = {
            "memory": rpc.MemoryServiceStub(self._channel),
            "admin": rpc.AdminServiceStub(self._channel),
        }

    def agent(self, agent_id: str) -> AsyncAgent:
        """The memory of one agent."""
        return AsyncAgent(self, agent_id)

    async def close(self) -> None:
        """Closes the connection."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncMneme:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _run(self, call: Call[T]) -> T:
        method = getattr(self._stubs[call.service], call.method)
        attempt = 0
        while True:
            try:
                response = await method(
                    call.request, timeout=self.timeout, metadata=self._metadata
                )
                return call.convert(response)
            except grpc.RpcError as err:
                attempt += 1
                if call.idempotent and retryable(err) and attempt <= self.retries:
                    await asyncio.sleep(backoff(attempt))
                    continue
                raise from_rpc_error(err) from None


class AsyncAgent:
    """One agent's memory; the same methods as :class:`mneme_client.Agent`, awaitable."""

    def __init__(self, client: AsyncMneme, agent_id: str) -> None:
        self.client = client
        self.agent_id = agent_id
        self._calls = AgentCalls(agent_id)

    async def remember(
        self,
        content: str,
        *,
        memory_type: MemoryType | str = MemoryType.SEMANTIC,
        session_id: str = "",
        ttl_seconds: int = 0,
        vector: Iterable[float] | None = None,
        metadata: Mapping[str, str] | None = None,
        pinned: bool = False,
        importance: float | None = None,
    ) -> Remembered:
        """Stores a memory durably (or reinforces a near-identical one)."""
        return await self.client._run(
            self._calls.remember(
                content,
                memory_type,
                session_id,
                ttl_seconds,
                vector,
                metadata,
                pinned,
                importance,
            )
        )

    async def remember_many(
        self, items: Iterable[MemoryInput | Mapping[str, Any]]
    ) -> list[Remembered]:
        """Stores many memories with one durable commit."""
        return await self.client._run(self._calls.remember_many(items))

    async def recall(
        self,
        query: str | None = None,
        *,
        vector: Iterable[float] | None = None,
        top_k: int = 5,
        session_id: str = "",
        session_only: bool = False,
        memory_types: Iterable[MemoryType | str] | None = None,
        min_confidence: float = 0.0,
        metadata: Mapping[str, str] | None = None,
        include_vectors: bool = False,
    ) -> list[Recalled]:
        """The most relevant memories, ranked by confidence."""
        fields = cv.recall_fields(
            query,
            vector,
            top_k,
            session_id,
            session_only,
            memory_types,
            min_confidence,
            metadata,
            include_vectors,
        )
        return await self.client._run(self._calls.recall(fields))

    async def inject_context(
        self,
        query: str | None = None,
        *,
        max_tokens: int = 1024,
        vector: Iterable[float] | None = None,
        top_k: int = 5,
        session_id: str = "",
        session_only: bool = False,
        memory_types: Iterable[MemoryType | str] | None = None,
        min_confidence: float = 0.0,
        metadata: Mapping[str, str] | None = None,
    ) -> Context:
        """A ready-to-paste context block for a prompt."""
        fields = cv.recall_fields(
            query,
            vector,
            top_k,
            session_id,
            session_only,
            memory_types,
            min_confidence,
            metadata,
            False,
        )
        return await self.client._run(self._calls.inject_context(fields, max_tokens))

    async def get(self, memory_id: str, *, include_vector: bool = False) -> Memory:
        """One memory by id; raises NotFound otherwise."""
        return await self.client._run(self._calls.get(memory_id, include_vector))

    async def list(
        self,
        *,
        page_size: int = 50,
        session_id: str = "",
        session_only: bool = False,
        memory_types: Iterable[MemoryType | str] | None = None,
        metadata: Mapping[str, str] | None = None,
        include_vectors: bool = False,
    ) -> AsyncIterator[Memory]:
        """Every visible memory in creation order, fetched a page at a time."""
        types = list(memory_types or ())
        token = ""
        while True:
            page, token = await self.client._run(
                self._calls.list_page(
                    page_size,
                    token,
                    session_id,
                    session_only,
                    types,
                    metadata,
                    include_vectors,
                )
            )
            for m in page:
                yield m
            if not token:
                return

    async def update(
        self,
        memory_id: str,
        *,
        content: str | None = None,
        metadata: Mapping[str, str] | None = None,
        ttl_seconds: int | None = None,
        pinned: bool | None = None,
        importance: float | None = None,
    ) -> Memory:
        """Changes a memory; ``None`` keeps a field."""
        return await self.client._run(
            self._calls.update(memory_id, content, metadata, ttl_seconds, pinned, importance)
        )

    async def forget(self, ids: str | Iterable[str]) -> int:
        """Deletes memories by id; returns how many existed."""
        return await self.client._run(self._calls.forget(ids))

    async def mark_used(self, ids: str | Iterable[str]) -> int:
        """Tells the server these memories were used (the feedback that reinforces them;
        recall alone does not). Returns how many exist."""
        return await self.client._run(self._calls.mark_used(ids))

    async def forget_session(self, session_id: str) -> int:
        """Deletes every memory of one session."""
        return await self.client._run(self._calls.forget_session(session_id))

    async def clear_all(self) -> int:
        """Deletes every memory of the agent."""
        return await self.client._run(self._calls.clear_all())

    async def stats(self) -> Stats:
        """Counts by type and session, dimensions, sizes."""
        return await self.client._run(self._calls.stats())

    async def export_bytes(self) -> bytes:
        """The agent's export (JSON Lines) as bytes."""
        stream = self.client._stubs["admin"].Export(
            self._calls.export_request(), metadata=self.client._metadata
        )
        parts = []
        try:
            async for chunk in stream:
                parts.append(chunk.data)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return b"".join(parts)

    async def import_bytes(self, data: bytes) -> int:
        """Imports an export given as bytes; returns how many memories were imported."""
        try:
            response = await self.client._stubs["admin"].Import(
                iter(list(self._calls.import_chunks([data]))), metadata=self.client._metadata
            )
            return int(response.imported)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
