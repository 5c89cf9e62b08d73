"""Request lines leave through a thread of their own: a stdout nobody reads costs the
event loop nothing (lines are dropped and counted), and what is read is one JSON object
per line."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import threading
from collections.abc import Iterator

import pytest

from gateway.accounting import requestlog


@pytest.fixture
def restore_logger() -> Iterator[None]:
    handlers, level, propagate = requestlog.log.handlers[:], requestlog.log.level, True
    yield
    requestlog.log.handlers[:] = handlers
    requestlog.log.setLevel(level)
    requestlog.log.propagate = propagate


def test_a_stalled_stdout_drops_lines_instead_of_blocking(restore_logger: None) -> None:
    read_end, write_end = os.pipe()
    stalled = os.fdopen(write_end, "w")
    stop = requestlog.to_stdout(stalled, capacity=100)
    record = {"request_id": "r", "team": "analytics", "outcome": "ok"}
    sent = 20_000  # ~1 MB: far more than the pipe and the queue hold; nobody reads yet
    for _ in range(sent):
        requestlog.emit("metadata", record, None, None)
    dropped = getattr(requestlog.log.handlers[0], "dropped", 0)
    assert dropped > 0

    def finish() -> None:
        stop()  # writes what is queued (as the reader below drains the pipe)
        stalled.close()

    closer = threading.Thread(target=finish)
    closer.start()
    with os.fdopen(read_end, "rb") as reader:
        lines = reader.read().splitlines()
    closer.join()
    assert all(json.loads(line) == record for line in lines)  # whole lines only
    assert len(lines) + dropped == sent  # every line written or counted as dropped


def test_lines_are_compact_json_with_content_only_where_allowed(
    restore_logger: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.requests")
    requestlog.emit("metadata", {"team": "é"}, "my prompt", "answer")
    requestlog.emit("redacted", {"team": "a"}, "mail me: a@b.io", "ok")
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.requests"]
    assert lines[0] == '{"team":"é"}'
    assert json.loads(lines[1])["prompt"] == "mail me: [REDACTED:email]"


def test_a_server_reconfiguring_logging_does_not_silence_the_request_log(
    restore_logger: None,
) -> None:
    out = io.StringIO()
    stop = requestlog.to_stdout(out)
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})  # as servers do
    requestlog.emit("metadata", {"request_id": "after"}, None, None)
    stop()
    assert json.loads(out.getvalue()) == {"request_id": "after"}


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("write to john . doe @ example . com today", "write to [REDACTED:email] today"),
        ("jane(at)corp(dot)eu", "[REDACTED:email]"),
        ("x.y+z@mail.example.co.uk!", "[REDACTED:email]!"),
        ("full\uff20width\uff0eexample\uff0ecom", "[REDACTED:email]"),
        ("a" * 100 + "@long.example.com", "[REDACTED:email]"),
        ("your key: lgw - abcdefghijkm - " + "A" * 30, "your key: [REDACTED:key]"),
        ("sk- proj1234567890abcdefgh", "[REDACTED:key]"),
        ("look at the dog. Then eat at 5.", "look at the dog. Then eat at 5."),
        ("version 1.2.3, a @ b", "version 1.2.3, a @ b"),
    ],
)
def test_redacted_logging_catches_spaced_out_emails_and_keys(text: str, kept: str) -> None:
    assert requestlog.redact(text) == kept


def test_a_completion_is_redacted_like_a_prompt(
    restore_logger: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.requests")
    secret = "lgw-abcdefghijkm-" + "B" * 30
    requestlog.emit("redacted", {}, "hi", f"sure: {secret} and ops @ corp . io")
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.requests"]
    completion = json.loads(line)["completion"]
    assert completion == "sure: [REDACTED:key] and [REDACTED:email]"
