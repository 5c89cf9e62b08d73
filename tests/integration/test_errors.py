"""Bad input gets OpenAI's error shape with the right status: never a 500 or a traceback."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import Stack


def _post(
    stack: Stack,
    body: bytes | str,
    key: str | None,
    path: str = "/v1/chat/completions",
    **headers: str,
) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    headers.setdefault("Content-Type", "application/json")
    return httpx.post(stack.url + path, content=body, headers=headers, timeout=10)


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'{"model": "sql"}', "messages"),
        (b'{"model": "sql", "messages": []}', "messages"),
        (b'{"model": "sql", "messages": "hello"}', "messages"),
        (b'{"model": "sql", "messages": [{"role": "wizard", "content": "x"}]}', "messages.0.role"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (
            b'{"model": "sql", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}',
            "max_tokens",
        ),
        (
            b'{"model": "sql", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
            "max_tokens",
        ),
        (
            b'{"model": "sql", "messages": [{"role": "user", "content": "x"}], "temperature": 3}',
            "temperature",
        ),
        (
            b'{"model": "sql", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "stream",
        ),
        (b'{"model": "sql", "messages": [{"role": "user", "content": "x"}], "n": 2}', "n"),
    ],
)
def test_malformed_requests_are_400(stack: Stack, body: bytes, param: str | None) -> None:
    response = _post(stack, body, stack.keys["analytics"])
    assert response.status_code == 400
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert response.headers["x-request-id"]


def test_max_tokens_above_the_cap_is_400_and_never_sent(stack: Stack) -> None:
    body = b'{"model": "sql", "messages": [{"role": "user", "content": "x"}], "max_tokens": 99999}'
    response = _post(stack, body, stack.keys["analytics"])
    assert response.status_code == 400
    assert _error(response)["param"] == "max_tokens"
    assert stack.sim.seen == []


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "bearer  x",
        "Basic abc",
        "Bearer lgw-",
        "Bearer lgw-aaaaaaaaaaaa-short",
        "Bearer lgw-aaaaaaaaaaaa-" + "x" * 43,
        "Bearer sk-proj-123",
        "Bearer " + "lgw-" * 1000,
    ],
)
def test_missing_or_bad_keys_are_401(stack: Stack, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = _post(stack, b'{"model": "sql", "messages": []}', None, **headers)
    assert response.status_code == 401
    assert _error(response)["code"] == "invalid_api_key"


def test_a_valid_key_with_a_wrong_secret_is_401(stack: Stack) -> None:
    key_id = stack.keys["analytics"].split("-")[1]
    forged = f"lgw-{key_id}-{'A' * 43}"
    assert _post(stack, b"{}", forged).status_code == 401


def test_the_stored_hash_used_as_a_key_is_401(stack: Stack) -> None:
    team = stack.registry.teams[0]
    stored = team.keys[0]
    response = _post(stack, b"{}", f"lgw-{stored.id}-{stored.hash}")
    assert response.status_code == 401
    assert stored.hash not in response.text


def test_401_comes_before_body_validation(stack: Stack) -> None:
    assert _post(stack, b"{not json", "nope").status_code == 401


def test_a_body_over_the_limit_is_413(loop: object) -> None:
    from tests.integration.harness import LoopThread, running_stack

    assert isinstance(loop, LoopThread)
    with running_stack(loop, max_body_bytes=1000) as small:
        big = b'{"model": "sql", "messages": [{"role": "user", "content": "' + b"x" * 2000 + b'"}]}'
        response = _post(small, big, small.keys["analytics"])
    assert response.status_code == 413
    assert _error(response)["code"] == "request_too_large"


def test_unknown_paths_and_methods_answer_in_openai_shape(stack: Stack) -> None:
    response = httpx.get(stack.url + "/v1/nothing-here", timeout=10)
    assert response.status_code == 404
    assert _error(response)["code"] == "unknown_url"
    response = httpx.get(stack.url + "/v1/chat/completions", timeout=10)
    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"


def test_metrics_are_not_on_the_public_port(stack: Stack) -> None:
    assert httpx.get(stack.url + "/metrics", timeout=10).status_code == 404


def test_the_openai_client_raises_typed_errors(analytics: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        analytics.chat.completions.create(model="sql", messages=[])
    with pytest.raises(openai.NotFoundError):
        analytics.chat.completions.create(model="code", messages=[{"role": "user", "content": "x"}])


def test_a_content_part_the_backend_cannot_read_is_400_naming_it(stack: Stack) -> None:
    parts = [{"type": "text", "text": "hi"}, {"type": "x-binary", "data": "AAAA"}]
    body = {"model": "sql", "messages": [{"role": "user", "content": parts}]}
    response = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
        timeout=20,
    )
    assert response.status_code == 400
    error = _error(response)
    assert (error["type"], error["param"]) == ("invalid_request_error", "messages.0.content.1.type")
    assert stack.sim.seen == []
