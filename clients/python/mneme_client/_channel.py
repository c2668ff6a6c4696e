"""Channel set-up shared by both clients: address, TLS, API key, message sizes."""

from __future__ import annotations

import os
from typing import Any

import grpc

#: Largest message sent or received (the server accepts 16 MiB; answers can be larger).
MESSAGE_BYTES_MAX = 64 * 1024 * 1024

OPTIONS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
]

TlsSetting = bool | str | bytes | os.PathLike[str] | None


def credentials(tls: TlsSetting) -> grpc.ChannelCredentials | None:
    """None for plaintext; the system roots for ``True``; a CA bundle for a path or PEM bytes."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, bytes):
        return grpc.ssl_channel_credentials(root_certificates=tls)
    with open(tls, "rb") as f:
        return grpc.ssl_channel_credentials(root_certificates=f.read())


def metadata(api_key: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {api_key}")] if api_key else []


def target(address: str) -> str:
    """``host:port``; a URL's scheme is dropped."""
    for prefix in ("http://", "https://", "grpc://"):
        if address.startswith(prefix):
            return address[len(prefix) :]
    return address


def sync_channel(address: str, tls: TlsSetting) -> grpc.Channel:
    creds = credentials(tls)
    if creds is None:
        return grpc.insecure_channel(target(address), options=OPTIONS)
    return grpc.secure_channel(target(address), creds, options=OPTIONS)


def aio_channel(address: str, tls: TlsSetting) -> Any:
    creds = credentials(tls)
    if creds is None:
        return grpc.aio.insecure_channel(target(address), options=OPTIONS)
    return grpc.aio.secure_channel(target(address), creds, options=OPTIONS)
