"""Every example team reaches its own adapter, streamed and not, and nothing else."""

from __future__ import annotations

import openai
import pytest

from tests.integration.conftest import client_for
from tests.integration.harness import Stack

SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"
CODE = "google-cloud-partnership/gemma-2-2b-it-lora-magicoder"
JA = "google-cloud-partnership/gemma-2-2b-it-lora-jap-en"
BASE = "google/gemma-2-2b-it"

ROUTES = [
    ("analytics", "sql", SQL),
    ("devtools", "code", CODE),
    ("localization", "translate-ja", JA),
    ("analytics", "chat", BASE),
    ("devtools", "chat", BASE),
    ("localization", "chat", BASE),
]


@pytest.mark.parametrize(("team", "task", "adapter"), ROUTES)
def test_each_team_reaches_its_adapter(stack: Stack, team: str, task: str, adapter: str) -> None:
    with client_for(stack, team) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=task, messages=[{"role": "user", "content": "hello"}]
        )
    completion = raw.parse()
    assert completion.choices[0].message.content == f"[{adapter}] hello"
    assert completion.model == task
    assert raw.headers["x-lgw-adapter"] == adapter
    assert raw.headers["x-lgw-pool"] == "gemma-2-2b-it"
    assert raw.headers["x-request-id"]
    sent = stack.sim.seen[-1].body["model"]
    assert sent == (adapter if adapter != BASE else "tgi")


@pytest.mark.parametrize(("team", "task", "adapter"), ROUTES)
def test_each_team_reaches_its_adapter_streamed(
    stack: Stack, team: str, task: str, adapter: str
) -> None:
    with client_for(stack, team) as client:
        chunks = list(
            client.chat.completions.create(
                model=task, messages=[{"role": "user", "content": "hello"}], stream=True
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"[{adapter}] hello"
    assert {c.model for c in chunks} == {task}


def test_completions_route_to_the_adapter(stack: Stack) -> None:
    with client_for(stack, "devtools") as client:
        completion = client.completions.create(model="code", prompt="def add", max_tokens=10)
    assert completion.choices[0].text == f"[{CODE}] def add"
    assert stack.sim.seen[-1].body["model"] == CODE


@pytest.mark.parametrize(
    ("team", "foreign_task"),
    [
        ("analytics", "code"),
        ("devtools", "sql"),
        ("localization", "sql"),
        ("analytics", SQL),
        ("analytics", "SQL"),
        ("analytics", "tgi"),
    ],
)
def test_another_teams_task_or_a_raw_adapter_id_is_model_not_found(
    stack: Stack, team: str, foreign_task: str
) -> None:
    seen_before = len(stack.sim.seen)
    with client_for(stack, team) as client, pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model=foreign_task, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body == {
        "message": caught.value.body["message"],  # type: ignore[index]
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert len(stack.sim.seen) == seen_before  # nothing reached the backend


def test_models_lists_only_the_callers_tasks(stack: Stack) -> None:
    listed = {}
    for team in ("analytics", "devtools", "localization"):
        with client_for(stack, team) as client:
            listed[team] = sorted(m.id for m in client.models.list())
    assert listed == {
        "analytics": ["chat", "sql"],
        "devtools": ["chat", "code"],
        "localization": ["chat", "translate-ja"],
    }
