"""`mneme mcp` end to end with the official Python MCP client: initialize, list the tools
and their schemas, call each tool, bad arguments — over stdio (embedded engine) and over
streamable HTTP (backed by a real `mneme serve`)."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from mneme_client import Mneme
from mneme_client.testing import MnemeServer, find_binary

TOOLS = {"remember", "recall", "get_context", "forget", "list_memories", "mark_used"}


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def exercise(session: ClientSession) -> None:
    """Every tool, with good and bad arguments, on an initialized session."""
    tools = (await session.list_tools()).tools
    assert {t.name for t in tools} == TOOLS
    for t in tools:
        assert t.description and len(t.description) > 20, t.name
        assert t.input_schema.get("type") == "object", t.name
    schema = next(t for t in tools if t.name == "remember").input_schema
    assert "content" in schema["properties"] and "content" in schema.get("required", [])
    assert "agent" not in schema["properties"] and "agent_id" not in schema["properties"]

    r = await session.call_tool("remember", {"content": "User prefers formal tone"})
    assert not r.is_error and "Remembered" in text(r), text(r)
    r = await session.call_tool(
        "remember",
        {"content": "Last deployment was on March 10", "memory_type": "episodic", "importance": 0.3},
    )
    assert not r.is_error, text(r)
    again = await session.call_tool("remember", {"content": "user prefers FORMAL tone"})
    assert "reinforced" in text(again), text(again)

    r = await session.call_tool("recall", {"query": "formal tone", "top_k": 2})
    assert not r.is_error and "User prefers formal tone" in text(r), text(r)
    ids = re.findall(r"id ([0-9A-Z]{26})", text(r))
    assert ids

    r = await session.call_tool("get_context", {"query": "how should I write?", "max_tokens": 200})
    assert not r.is_error and "Relevant memories" in text(r), text(r)

    r = await session.call_tool("list_memories", {"page_size": 1})
    assert not r.is_error and "next_page_token" in text(r), text(r)
    token = text(r).split("next_page_token: ")[1].strip()
    r = await session.call_tool("list_memories", {"page_size": 1, "page_token": token})
    assert not r.is_error and "next_page_token" not in text(r), text(r)

    r = await session.call_tool("mark_used", {"ids": [ids[0]]})
    assert not r.is_error and "Marked 1" in text(r), text(r)

    r = await session.call_tool("forget", {"ids": [ids[0]]})
    assert not r.is_error and "Forgot 1" in text(r), text(r)

    # Bad arguments: a clear error, never a crash; the server keeps answering.
    for name, args, says in [
        ("remember", {"content": "   "}, "content"),
        ("remember", {"content": "x", "importance": 7}, "importance"),
        ("recall", {"query": "q", "top_k": 100000}, "top_k"),
        ("forget", {"ids": ["not-an-id"]}, "id"),
        ("forget", {"ids": []}, "ids"),
        ("mark_used", {"ids": []}, "ids"),
        ("mark_used", {"ids": ["not-an-id"]}, "id"),
    ]:
        bad = await session.call_tool(name, args)
        assert bad.is_error and says in text(bad), (name, args, text(bad))
    try:
        missing = await session.call_tool("remember", {})
        assert missing.is_error, text(missing)
    except Exception as err:  # a JSON-RPC invalid-params error is also a clear refusal
        assert "content" in str(err) or "param" in str(err).lower(), err
    try:
        unknown = await session.call_tool("remember", {"content": "x", "agent_id": "other"})
        assert unknown.is_error, text(unknown)
    except Exception as err:
        assert "agent_id" in str(err) or "unknown" in str(err).lower(), err
    r = await session.call_tool("recall", {"query": "deployment"})
    assert not r.is_error and "March 10" in text(r), text(r)


def test_stdio_with_an_embedded_engine(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=find_binary(),
        args=["mcp", "--agent", "desk-bot", "--data-dir", str(tmp_path / "data"), "--embedder", "hash"],
        env={**os.environ, "RUST_LOG": "warn"},
    )

    async def run() -> None:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                info = await session.initialize()
                assert info.instructions and "memory" in info.instructions.lower()
                await exercise(session)

    anyio.run(run)
    # The memory is on disk, in the agent the operator chose.
    with MnemeServer(data_dir=tmp_path / "data", args=["--embedder", "hash"]) as server:
        with Mneme(server.address) as client:
            contents = {m.content for m in client.agent("desk-bot").list()}
            assert "Last deployment was on March 10" in contents


@asynccontextmanager
async def mcp_http(args: list[str]) -> AsyncIterator[str]:
    proc = subprocess.Popen(
        [find_binary(), "mcp", "--transport", "http", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    url: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("mneme mcp listening on "):
                url.append(line.split(" on ", 1)[1].strip())
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(30) and url, "mneme mcp --transport http did not start"
        yield url[0]
    finally:
        proc.terminate()
        proc.wait(30)


def test_streamable_http_backed_by_a_remote_server() -> None:
    with MnemeServer() as server:

        async def run() -> None:
            args = ["--agent", "remote-bot", "--server", f"http://{server.address}"]
            async with mcp_http(args) as url:
                async with streamable_http_client(url) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        await exercise(session)

        anyio.run(run)
        with Mneme(server.address) as client:
            contents = {m.content for m in client.agent("remote-bot").list()}
            assert "Last deployment was on March 10" in contents


def test_http_tokens_are_enforced() -> None:
    with MnemeServer() as server:

        async def run() -> None:
            args = ["--agent", "bot", "--server", f"http://{server.address}", "--http-token", "s3cret"]
            async with mcp_http(args) as url:
                async with httpx2.AsyncClient() as http:
                    refused = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
                    assert refused.status_code == 401
                headers = {"Authorization": "Bearer s3cret"}
                async with httpx2.AsyncClient(headers=headers) as http:
                    async with streamable_http_client(url, http_client=http) as (read, write):
                        async with ClientSession(read, write) as session:
                            await session.initialize()
                            r = await session.call_tool("remember", {"content": "token works"})
                            assert not r.is_error

        anyio.run(run)


def test_off_loopback_without_a_token_is_refused() -> None:
    out = subprocess.run(
        [find_binary(), "mcp", "--transport", "http", "--listen", "0.0.0.0:0",
         "--agent", "bot", "--server", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0 and "token" in out.stderr, out.stderr
