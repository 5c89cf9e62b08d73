"""Reading the gateway's SSE responses raw, as bytes on the wire."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx


def post_stream(url: str, key: str, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    """POST a streamed request; the response and its ``data`` payloads in order."""
    with (
        httpx.Client(timeout=20) as client,
        client.stream(
            "POST",
            url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        raw = response.read().decode()
    assert raw.endswith("\n\n")
    events = [event for event in raw.split("\n\n") if event]
    assert all(e.startswith("data: ") for e in events), events  # OpenAI framing, with the space
    return response, [e.removeprefix("data: ") for e in events]


def chunks(payloads: list[str]) -> list[dict[str, Any]]:
    """The JSON payloads (everything but ``[DONE]``)."""
    return [json.loads(p) for p in payloads if p != "[DONE]"]


def open_raw_request(url: str, key: str, body: dict[str, Any]) -> socket.socket:
    """Send a chat request on a bare socket and return it unread (to hang up on it)."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock
