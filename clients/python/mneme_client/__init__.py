"""Python client for Mneme, the vector-memory database engine for AI agents.

>>> from mneme_client import Mneme                           # doctest: +SKIP
>>> with Mneme("127.0.0.1:50051") as client:                  # doctest: +SKIP
...     bot = client.agent("support-bot")
...     bot.remember("User prefers formal tone")
...     print(bot.inject_context("how should I write my responses?").text)

:class:`Mneme` is synchronous, :class:`AsyncMneme` uses asyncio; both give per-agent
handles with ``remember``, ``remember_many``, ``recall``, ``inject_context``, ``get``,
``list``, ``update``, ``forget``, ``forget_session``, ``clear_all``, ``stats`` and
export/import. Errors are :mod:`mneme_client.errors`; results are the dataclasses of
:mod:`mneme_client.types`. :mod:`mneme_client.testing` starts a real server for tests.
"""

from ._aio import AsyncAgent, AsyncMneme
from ._client import Agent, Mneme
from .errors import (
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    MnemeError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
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

__all__ = [
    "Agent",
    "AsyncAgent",
    "AsyncMneme",
    "Context",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "Memory",
    "MemoryInput",
    "MemoryType",
    "Mneme",
    "MnemeError",
    "NotFound",
    "PermissionDenied",
    "Recalled",
    "Remembered",
    "ResourceExhausted",
    "ScoreBreakdown",
    "Stats",
    "Unauthenticated",
    "Unavailable",
]
