"""Fixtures: one background loop per session, a fresh simulator + gateway per test."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.integration.harness import LoopThread, Stack, running_stack


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def stack(loop: LoopThread) -> Iterator[Stack]:
    with running_stack(loop) as running:
        yield running


def client_for(stack: Stack, team: str) -> openai.OpenAI:
    """The official client as the team's app would build it (no retries: tests see all)."""
    return openai.OpenAI(
        base_url=stack.base_url, api_key=stack.keys[team], max_retries=0, timeout=20
    )


@pytest.fixture
def analytics(stack: Stack) -> Iterator[openai.OpenAI]:
    with client_for(stack, "analytics") as client:
        yield client
