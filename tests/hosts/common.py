"""What every test host shares: the agent started with the test's keys, and an echo server."""

from __future__ import annotations

import asyncio
from typing import Any

import agent


def read_tokens(keys: str) -> dict[str, str]:
    """The viewer and operator tokens the test generated in ``keys``."""
    return {role: open(f"{keys}/{role}.token").read().strip() for role in ("viewer", "operator")}


def start_agent(keys: str, name: str, address: str = "127.0.0.1:0", **options: Any) -> Any:
    """Start the agent with TLS and the test's tokens; returns the running server."""
    return agent.start(
        address,
        tls_cert=f"{keys}/agent.crt",
        tls_key=f"{keys}/agent.key",
        tokens=read_tokens(keys),
        name=name,
        **options,
    )


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer 'pong' to every line: proves the host keeps serving."""
    try:
        while line := await reader.readline():
            writer.write(b"pong " + line)
            await writer.drain()
    finally:
        writer.close()
