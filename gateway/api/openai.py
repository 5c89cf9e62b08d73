"""The OpenAI-compatible data plane: each handler reads as the stages of DESIGN.md."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from litestar import Request, Response, get, post
from litestar.response import Stream

from gateway.accounting import Accounting, outcome_of
from gateway.auth import Principal, authenticate
from gateway.backends import Usage
from gateway.backends.responses import text_of
from gateway.backends.vllm import DIALECTS
from gateway.balancer import Replica
from gateway.errors import (
    ClientDisconnected,
    InvalidRequest,
    UpstreamOverloaded,
    UpstreamUnavailable,
)
from gateway.forward import Outbound, exchange, open_stream, relay
from gateway.plane import DataPlane
from gateway.policy import Ask, Decision, check_access, max_tokens_for, refusal
from gateway.ratelimit import Grant
from gateway.registry import Snapshot
from gateway.retries import with_retries
from gateway.routing import Candidate, candidate, choose, resolve
from gateway.schemas import ChatRequest, CompletionRequest, parse

T = TypeVar("T")
Asked = ChatRequest | CompletionRequest
AnyRequest = Request[Any, Any, Any]
_JSON = "application/json"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Failures that happen before the backend generated anything: nothing to pay for.
_NOTHING_GENERATED = (InvalidRequest, UpstreamUnavailable, UpstreamOverloaded)


@dataclass(frozen=True, slots=True)
class Call:
    """One translated request: where it goes, what is sent, and what the client asked."""

    out: Outbound
    response_id: str
    asked: Asked
    grant: Grant
    account: Accounting


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: AnyRequest) -> Response[bytes] | Stream:
    """OpenAI chat completions, streamed or not."""
    return await _complete(request, ChatRequest)


@post("/v1/completions", status_code=200)
async def completions(request: AnyRequest) -> Response[bytes] | Stream:
    """OpenAI legacy completions, streamed or not."""
    return await _complete(request, CompletionRequest)


async def _complete(request: AnyRequest, schema: type[Asked]) -> Response[bytes] | Stream:
    """The request path of DESIGN.md, one stage per line; every ending is accounted."""
    plane, snapshot, request_id = _begin(request)
    trace = plane.telemetry.start(schema.operation, request.headers)
    account = Accounting(plane.metrics, plane.usage, trace, request_id)
    try:
        with account.stage("authenticate"):
            principal = _authenticate(request, plane, snapshot)
        account.authenticated(principal.team.name, principal.key_id, principal.team.policy.logging)
        asked = parse(schema, await request.body())
        account.stream = asked.stream
        if account.completion is not None:  # the team's logs keep content
            account.prompt = asked.prompt_text
        with account.stage("resolve"):
            found = resolve(principal, asked.model, snapshot, plane.rng)
        with account.stage("authorize"):
            decision = _authorize(plane, principal, found, asked)
        route = choose(found, decision.pools, plane.rng)
        account.routed(route, snapshot.price(route.adapter, route.pool))
        caps = principal.team.policy.caps
        max_tokens = max_tokens_for(asked.requested_max_tokens, plane.settings, caps)
        path, body = DIALECTS[route.pool.dialect].translate(asked, route, max_tokens)
        with account.stage("admit"):
            grant = await plane.limiter.admit(principal, asked.prompt_tokens_estimate + max_tokens)
        out = Outbound(route, path, body, account.upstream_headers(path))
        call = Call(out, f"{asked.id_prefix}-{request_id}", asked, grant, account)
        return await _forward(request, plane, call)
    except BaseException as exc:
        account.finish(outcome_of(exc))
        raise


def _authorize(plane: DataPlane, principal: Principal, found: Candidate, asked: Asked) -> Decision:
    """The policy decision, enforced (403) unless the team's policy is in shadow mode."""
    decision = check_access(principal.team, found, Ask.of(asked))
    if decision.reason != "ok":
        counter = (
            plane.metrics.policy_would_deny if decision.shadowed else plane.metrics.policy_denials
        )
        counter.labels(principal.team.name, decision.reason).inc()
    if not decision.allowed:
        raise refusal(decision)
    return decision


@get("/v1/models")
async def list_models(request: AnyRequest) -> Response[dict[str, Any]]:
    """The tasks the caller's team can name in ``model`` (nothing about other teams)."""
    plane, snapshot, _ = _begin(request)
    principal = _authenticate(request, plane, snapshot)
    data = [
        {"id": task, "object": "model", "created": 0, "owned_by": "lora-gateway"}
        for task in snapshot.tasks(principal.team.name)
        if _servable(principal, snapshot, task)
    ]
    return Response({"object": "list", "data": data}, headers=_id_header(request))


def _servable(principal: Principal, snapshot: Snapshot, task: str) -> bool:
    """Whether the data plane would serve ``task`` to the team (every mapped adapter)."""
    mapping = snapshot.mapping(principal.team.name, task)
    return mapping is not None and all(
        check_access(principal.team, candidate(snapshot, task, t.adapter), None).allowed
        for t in mapping.choices
    )


def _begin(request: AnyRequest) -> tuple[DataPlane, Snapshot, str]:
    """The shared plane, the registry snapshot this whole request uses, and its id."""
    request_id = os.urandom(12).hex()
    request.state.request_id = request_id
    plane: DataPlane = request.app.state.plane
    return plane, plane.registry.current(), request_id


def _authenticate(request: AnyRequest, plane: DataPlane, snapshot: Snapshot) -> Principal:
    return authenticate(request.headers.get("authorization"), snapshot, plane.pepper)


async def _forward(request: AnyRequest, plane: DataPlane, call: Call) -> Response[bytes] | Stream:
    """Forward, then settle the grant and account for the request, exactly once each."""
    route, asked = call.out.route, call.asked
    headers = {
        **_id_header(request),
        **call.grant.headers,
        "x-lgw-adapter": route.adapter,
        "x-lgw-pool": route.pool.name,
    }
    upstream, dialect, pool = plane.upstream, DIALECTS[route.pool.dialect], route.pool
    try:
        if not asked.stream:
            (content, usage), replica = await _unless_disconnected(
                request,
                _tries(
                    plane,
                    call,
                    lambda out: exchange(upstream, dialect, out, call.response_id, asked.stop_list),
                ),
            )
            plane.balancer.finished(pool, replica, True)
            if call.account.completion is not None:  # the team's logs keep content
                call.account.completion.append(text_of(content))
            _end(plane, call, "ok", _used(usage, asked, 0))
            return Response(content, media_type=_JSON, headers=headers)
        (events, first), replica = await _unless_disconnected(
            request, _tries(plane, call, lambda out: open_stream(upstream, dialect, out))
        )
    except BaseException as exc:
        generated = not isinstance(exc, _NOTHING_GENERATED)
        _end(plane, call, outcome_of(exc), (asked.prompt_tokens_estimate if generated else 0, 0))
        raise
    rewriter = dialect.rewriter(
        call.response_id, route.task, asked.wants_usage, asked.stop_list, call.account.completion
    )

    def ended(relayed: int, outcome: str) -> None:
        healthy = True if outcome == "ok" else None if outcome == "client_disconnect" else False
        plane.balancer.finished(pool, replica, healthy)
        _end(plane, call, outcome, _used(rewriter.usage, asked, relayed))

    frames = relay(events, first, rewriter, dialect, call.account.first_token, ended)
    # Started here, so its cleanup (settle, account, close upstream) is armed even if the
    # client leaves before the response task takes the first chunk.
    head = await anext(frames)
    return Stream(
        _after(head, frames), media_type="text/event-stream", headers={**headers, **_SSE_HEADERS}
    )


def _tries(
    plane: DataPlane, call: Call, attempt: Callable[[Outbound], Awaitable[T]]
) -> Awaitable[tuple[T, Replica]]:
    """``attempt`` on the pool's replicas, retried while nothing reached the client."""
    return with_retries(
        plane.balancer,
        plane.retry_budget,
        call.out,
        call.asked.stream,
        plane.settings.upstream_deadline,
        attempt,
    )


async def _after(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk


def _end(plane: DataPlane, call: Call, outcome: str, tokens: tuple[int, int]) -> None:
    """Settle the rate limits with the tokens used and record the request."""
    plane.limiter.settle_soon(call.grant, sum(tokens))
    call.account.finish(outcome, *tokens)


def _used(usage: Usage | None, asked: Asked, relayed: int) -> tuple[int, int]:
    """(input, output) tokens: the backend's count, else the prompt estimate and one
    token per chunk relayed (TGI streams one token per chunk)."""
    if usage is not None:
        return usage.prompt_tokens, usage.completion_tokens
    return asked.prompt_tokens_estimate, relayed


async def _unless_disconnected(request: AnyRequest, work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientDisconnected`` (and ``work`` cancelled) if the client
    hangs up first: an abandoned request must not keep a GPU busy.

    ``work`` runs in this task (a task of its own would cost every request); a watcher
    task cancels this one when the client leaves.
    """
    current = asyncio.current_task()
    assert current is not None
    watching, hung_up = True, False

    def hang_up(watcher: asyncio.Task[None]) -> None:
        nonlocal hung_up
        # The callback may run after ``work`` is over: then it must not cancel anything.
        if watching and not watcher.cancelled() and watcher.exception() is None:
            hung_up = True
            current.cancel()

    watcher = asyncio.ensure_future(_disconnect(request))
    watcher.add_done_callback(hang_up)
    try:
        return await work
    except asyncio.CancelledError:
        if hung_up and current.uncancel() == 0:  # our cancellation, not the server's
            raise ClientDisconnected("The client closed the connection.") from None
        raise
    finally:
        watching = False
        watcher.cancel()


async def _disconnect(request: AnyRequest) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _id_header(request: AnyRequest) -> dict[str, str]:
    return {"x-request-id": request.state.request_id}
