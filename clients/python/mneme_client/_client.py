"""The synchronous client."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, TypeVar

import grpc

from . import _channel
from . import _convert as cv
from ._calls import AgentCalls, Call, backoff, retryable
from ._generated import mneme_pb2_grpc as rpc
from .errors import from_rpc_error
from .types import Context, Memory, MemoryInput, MemoryType, Recalled, Remembered, Stats

T = TypeVar("T")

Source = str | os.PathLike[str] | IO[bytes] | bytes
Sink = str | os.PathLike[str] | IO[bytes]


class Mneme:
    """A connection to a Mneme server.

    >>> with Mneme("127.0.0.1:50051") as client:          # doctest: +SKIP
    ...     bot = client.agent("support-bot")
    ...     bot.remember("User prefers formal tone")
    ...     hits = bot.recall("how should I write my responses?")

    `timeout` is each call's deadline in seconds; idempotent calls that fail with
    UNAVAILABLE or DEADLINE_EXCEEDED are retried up to `retries` times with backoff.
    `tls` is ``True`` (system roots), a CA bundle path or PEM bytes, or ``None``.
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
        self._channel = _channel.sync_channel(address, tls)
        self._stubs: dict[str, Any] = {
            "memory": rpc.MemoryServiceStub(self._channel),
            "admin": rpc.AdminServiceStub(self._channel),
        }

    def agent(self, agent_id: str) -> Agent:
        """The memory of one agent."""
        return Agent(self, agent_id)

    def compact(self) -> dict[str, int]:
        """Sweeps expired memories and lets deleted bytes leave the disk (admin keys)."""
        from ._generated import mneme_pb2 as pb

        call = Call(
            "admin",
            "Compact",
            pb.CompactRequest(),
            lambda r: {
                "bytes_before": r.bytes_before,
                "bytes_after": r.bytes_after,
                "expired_removed": r.expired_removed,
            },
            idempotent=True,
        )
        return self._run(call)

    def close(self) -> None:
        """Closes the connection."""
        self._channel.close()

    def __enter__(self) -> Mneme:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self, call: Call[T]) -> T:
        method = getattr(self._stubs[call.service], call.method)
        attempt = 0
        while True:
            try:
                response = method(call.request, timeout=self.timeout, metadata=self._metadata)
                return call.convert(response)
            except grpc.RpcError as err:
                attempt += 1
                if call.idempotent and retryable(err) and attempt <= self.retries:
                    time.sleep(backoff(attempt))
                    continue
                raise from_rpc_error(err) from None


class Agent:
    """One agent's memory on a :class:`Mneme` server. Every method is one call (``list``
    one per page, lazily)."""

    def __init__(self, client: Mneme, agent_id: str) -> None:
        self.client = client
        self.agent_id = agent_id
        self._calls = AgentCalls(agent_id)

    def remember(
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
        return self.client._run(
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

    def remember_many(self, items: Iterable[MemoryInput | Mapping[str, Any]]) -> list[Remembered]:
        """Stores many memories with one durable commit (up to 1,000)."""
        return self.client._run(self._calls.remember_many(items))

    def recall(
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
        return self.client._run(self._calls.recall(fields))

    def inject_context(
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
        """A ready-to-paste context block for a prompt, within `max_tokens`."""
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
        return self.client._run(self._calls.inject_context(fields, max_tokens))

    def get(self, memory_id: str, *, include_vector: bool = False) -> Memory:
        """One memory by id; raises :class:`~mneme_client.errors.NotFound` otherwise."""
        return self.client._run(self._calls.get(memory_id, include_vector))

    def list(
        self,
        *,
        page_size: int = 50,
        session_id: str = "",
        session_only: bool = False,
        memory_types: Iterable[MemoryType | str] | None = None,
        metadata: Mapping[str, str] | None = None,
        include_vectors: bool = False,
    ) -> Iterator[Memory]:
        """Every visible memory in creation order, fetched a page at a time."""
        types = list(memory_types or ())
        token = ""
        while True:
            page, token = self.client._run(
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
            yield from page
            if not token:
                return

    def update(
        self,
        memory_id: str,
        *,
        content: str | None = None,
        metadata: Mapping[str, str] | None = None,
        ttl_seconds: int | None = None,
        pinned: bool | None = None,
        importance: float | None = None,
    ) -> Memory:
        """Changes a memory (content is re-embedded); ``None`` keeps a field."""
        return self.client._run(
            self._calls.update(memory_id, content, metadata, ttl_seconds, pinned, importance)
        )

    def forget(self, ids: str | Iterable[str]) -> int:
        """Deletes memories by id; returns how many existed."""
        return self.client._run(self._calls.forget(ids))

    def mark_used(self, ids: str | Iterable[str]) -> int:
        """Tells the server these memories were used (the feedback that reinforces them;
        recall alone does not). Returns how many exist."""
        return self.client._run(self._calls.mark_used(ids))

    def forget_session(self, session_id: str) -> int:
        """Deletes every memory of one session."""
        return self.client._run(self._calls.forget_session(session_id))

    def clear_all(self) -> int:
        """Deletes every memory of the agent."""
        return self.client._run(self._calls.clear_all())

    def stats(self) -> Stats:
        """Counts by type and session, dimensions, sizes."""
        return self.client._run(self._calls.stats())

    def export(self, dest: Sink) -> int:
        """Writes the agent's memories as JSON Lines to a path or binary file; returns how
        many memories were written."""
        stream = self.client._stubs["admin"].Export(
            self._calls.export_request(), metadata=self.client._metadata
        )
        lines = 0
        own = isinstance(dest, (str, os.PathLike))
        out: IO[bytes] = open(dest, "wb") if isinstance(dest, (str, os.PathLike)) else dest
        try:
            for chunk in stream:
                out.write(chunk.data)
                lines += chunk.data.count(b"\n")
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            if own:
                out.close()
        return max(lines - 1, 0)

    def import_(self, source: Source) -> int:
        """Reads an export (a path, a binary file or bytes) into this agent; returns how many
        memories were imported. Not retried (partially imported batches stay)."""
        own: IO[bytes] | None = None
        if isinstance(source, bytes):
            chunks: Iterable[bytes] = [source]
        elif isinstance(source, (str, os.PathLike)):
            own = open(source, "rb")
            handle = own
            chunks = iter(lambda: handle.read(65536), b"")
        else:
            reader = source
            chunks = iter(lambda: reader.read(65536), b"")
        try:
            response = self.client._stubs["admin"].Import(
                self._calls.import_chunks(chunks), metadata=self.client._metadata
            )
            return int(response.imported)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            if own is not None:
                own.close()
