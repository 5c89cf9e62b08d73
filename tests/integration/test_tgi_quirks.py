"""One test per TGI quirk the gateway absorbs (docs/reference/tgi-protocol.md): the app sees
clean OpenAI, and the simulator shows what TGI was really sent."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.harness import Stack
from tests.integration.sse import chunks, post_stream

SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "list all the tables"}]


def _complete(client: openai.OpenAI, stream: bool, **request: Any) -> object:
    """A whole answer, streamed or not (a stream's errors surface while it is read)."""
    if stream:
        return list(client.chat.completions.create(stream=True, **request))
    return client.chat.completions.create(**request)


def _sent(stack: Stack) -> dict[str, object]:
    body = stack.sim.seen[-1].body
    assert isinstance(body, dict)
    return body


def test_empty_chat_id_is_filled(stack: Stack, analytics: openai.OpenAI) -> None:
    completion = analytics.chat.completions.create(model="sql", messages=USER)
    assert completion.id.startswith("chatcmpl-") and len(completion.id) > 12
    streamed = list(analytics.chat.completions.create(model="sql", messages=USER, stream=True))
    ids = {c.id for c in streamed}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")


def test_data_framing_without_space_is_reframed_for_openai(stack: Stack) -> None:
    _, payloads = post_stream(
        stack.url, stack.keys["analytics"], {"model": "sql", "messages": USER, "stream": True}
    )
    assert payloads[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks(payloads))


def test_no_role_only_chunk_still_starts_with_the_assistant_role(analytics: openai.OpenAI) -> None:
    first = next(iter(analytics.chat.completions.create(model="sql", messages=USER, stream=True)))
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == f"[{SQL}]"


def test_include_usage_is_always_asked_upstream_but_returned_only_when_asked(
    stack: Stack, analytics: openai.OpenAI
) -> None:
    without = list(analytics.chat.completions.create(model="sql", messages=USER, stream=True))
    assert _sent(stack)["stream_options"] == {"include_usage": True}
    assert all(c.usage is None and c.choices for c in without)
    with_usage = list(
        analytics.chat.completions.create(
            model="sql", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    last = with_usage[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 6  # "[adapter]", 4 words, end of turn
    assert [c.usage for c in with_usage[:-1]] == [None] * (len(with_usage) - 1)


def test_stop_sequence_finish_reason_becomes_stop(stack: Stack, analytics: openai.OpenAI) -> None:
    completion = analytics.chat.completions.create(model="sql", messages=USER, stop=["tables"])
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == f"[{SQL}] list all the "
    streamed = list(
        analytics.chat.completions.create(model="sql", messages=USER, stop="the", stream=True)
    )
    assert streamed[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == f"[{SQL}] list all "


def test_length_finish_reason_passes_through(analytics: openai.OpenAI) -> None:
    completion = analytics.chat.completions.create(model="sql", messages=USER, max_tokens=2)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 2


def test_max_tokens_is_always_sent_explicitly(stack: Stack, analytics: openai.OpenAI) -> None:
    analytics.chat.completions.create(model="sql", messages=USER)
    assert _sent(stack)["max_tokens"] == 1024
    analytics.chat.completions.create(model="sql", messages=USER, max_completion_tokens=7)
    assert _sent(stack)["max_tokens"] == 7


def test_top_p_one_is_dropped(stack: Stack, analytics: openai.OpenAI) -> None:
    completion = analytics.chat.completions.create(model="sql", messages=USER, top_p=1.0)
    assert completion.choices[0].message.content
    assert "top_p" not in _sent(stack)


def test_top_p_zero_becomes_greedy(stack: Stack, analytics: openai.OpenAI) -> None:
    analytics.chat.completions.create(model="sql", messages=USER, top_p=0)
    assert "top_p" not in _sent(stack)
    assert _sent(stack)["temperature"] == 0


def test_top_p_inside_the_open_interval_passes(stack: Stack, analytics: openai.OpenAI) -> None:
    analytics.chat.completions.create(model="sql", messages=USER, top_p=0.9)
    assert _sent(stack)["top_p"] == 0.9


def test_presence_penalty_is_not_sent_as_repetition_penalty(
    stack: Stack, analytics: openai.OpenAI
) -> None:
    analytics.chat.completions.create(model="sql", messages=USER, presence_penalty=-2.0)
    assert "presence_penalty" not in _sent(stack)


def test_openai_json_schema_response_format_is_translated(
    stack: Stack, analytics: openai.OpenAI
) -> None:
    schema: dict[str, object] = {"type": "object", "properties": {"sql": {"type": "string"}}}
    analytics.chat.completions.create(
        model="sql",
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "query", "schema": schema}},
    )
    assert _sent(stack)["response_format"] == {
        "type": "json_schema",
        "value": {"name": "query", "schema": schema},
    }


def test_text_response_format_is_dropped(stack: Stack, analytics: openai.OpenAI) -> None:
    analytics.chat.completions.create(model="sql", messages=USER, response_format={"type": "text"})
    assert "response_format" not in _sent(stack)


def test_json_object_without_schema_is_a_clear_400(stack: Stack, analytics: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        analytics.chat.completions.create(
            model="sql", messages=USER, response_format={"type": "json_object"}
        )
    assert caught.value.param == "response_format"
    assert stack.sim.seen == []


def test_system_message_is_folded_for_gemma(stack: Stack, analytics: openai.OpenAI) -> None:
    completion = analytics.chat.completions.create(
        model="sql",
        messages=[
            {"role": "system", "content": "answer in SQL"},
            {"role": "user", "content": "count"},
        ],
    )
    assert completion.choices[0].message.content == f"[{SQL}] answer in SQL count"
    assert _sent(stack)["messages"] == [{"role": "user", "content": "answer in SQL\n\ncount"}]


def test_developer_message_is_folded_like_system(stack: Stack, analytics: openai.OpenAI) -> None:
    analytics.chat.completions.create(
        model="sql",
        messages=[{"role": "developer", "content": "be terse"}, {"role": "user", "content": "hi"}],
    )
    assert _sent(stack)["messages"] == [{"role": "user", "content": "be terse\n\nhi"}]


def test_unknown_adapter_fallback_is_never_reached(stack: Stack) -> None:
    """TGI answers unknown ids with the base model; the gateway only sends loaded ids."""
    for team, task in [
        ("analytics", "sql"),
        ("devtools", "code"),
        ("localization", "translate-ja"),
    ]:
        with openai.OpenAI(
            base_url=stack.base_url, api_key=stack.keys[team], max_retries=0
        ) as client:
            client.chat.completions.create(model=task, messages=USER)
    assert [seen.served_by for seen in stack.sim.seen] == [
        seen.body["model"] for seen in stack.sim.seen
    ]


def test_stream_error_before_content_becomes_an_http_status(analytics: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        list(
            analytics.chat.completions.create(
                model="sql",
                stream=True,
                messages=[{"role": "user", "content": "sim-fault=error-before-content"}],
            )
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"


def test_stream_validation_error_event_becomes_400(analytics: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        list(
            analytics.chat.completions.create(
                model="sql", messages=USER, stream=True, stop=["a", "b", "c", "d", "e"]
            )
        )
    assert "stop" in caught.value.message


def test_stream_error_after_content_is_one_error_event_then_done(stack: Stack) -> None:
    response, payloads = post_stream(
        stack.url,
        stack.keys["analytics"],
        {
            "model": "sql",
            "stream": True,
            "messages": [{"role": "user", "content": "sim-fault=error-mid-stream and more"}],
        },
    )
    assert response.status_code == 200
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert error["code"] == "upstream_error" and error["type"] == "api_error"
    assert len(chunks(payloads[:-2])) == 2  # the two tokens sent before the failure


def test_stream_error_after_content_raises_in_the_openai_client(analytics: openai.OpenAI) -> None:
    received: list[object] = []
    stream = analytics.chat.completions.create(
        model="sql",
        stream=True,
        messages=[{"role": "user", "content": "sim-fault=error-mid-stream"}],
    )
    with pytest.raises(openai.APIError):
        received.extend(stream)  # keeps what arrived before the error
    assert len(received) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_overload_becomes_503_with_retry_after(analytics: openai.OpenAI, stream: bool) -> None:
    overloaded = [{"role": "user", "content": "sim-fault=overload"}]
    with pytest.raises(openai.InternalServerError) as caught:
        _complete(analytics, stream, model="sql", messages=overloaded)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "upstream_overloaded"


def test_generation_error_424_becomes_502(analytics: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        analytics.chat.completions.create(
            model="sql", messages=[{"role": "user", "content": "sim-fault=error-before-content"}]
        )
    assert caught.value.status_code == 502
    assert "CUDA" not in caught.value.message  # upstream internals stay upstream


def test_validation_422_becomes_400(analytics: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        analytics.chat.completions.create(
            model="sql", messages=USER, stop=["a", "b", "c", "d", "e"]
        )
    assert "stop" in caught.value.message


def test_template_422_for_broken_alternation_becomes_400(analytics: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        analytics.chat.completions.create(
            model="sql",
            messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        )
    assert "alternate" in caught.value.message


def test_completions_stream_eos_text_and_empty_finish_reason_are_cleaned(stack: Stack) -> None:
    with openai.OpenAI(
        base_url=stack.base_url, api_key=stack.keys["analytics"], max_retries=0
    ) as client:
        streamed = list(client.completions.create(model="sql", prompt="two words", stream=True))
    assert [c.choices[0].finish_reason for c in streamed] == [None, None, None, "stop"]
    assert "".join(c.choices[0].text for c in streamed) == f"[{SQL}] two words"
    assert "<end_of_turn>" not in streamed[-1].choices[0].text


def test_only_allowlisted_headers_reach_the_backend(stack: Stack, analytics: openai.OpenAI) -> None:
    analytics.chat.completions.create(
        model="sql", messages=USER, extra_headers={"X-Team-Secret": "s3cret"}
    )
    sent = {k.lower() for k in stack.sim.seen[-1].headers}
    assert "authorization" not in sent and "x-team-secret" not in sent
    assert sent <= {
        "host",
        "content-type",
        "accept",
        "content-length",
        "accept-encoding",
        "connection",
        "user-agent",
        "x-lgw-hop",  # so that a pool pointed back at a gateway cannot loop
    }
    assert stack.sim.seen[-1].headers["User-Agent"].startswith("lora-gateway/")
