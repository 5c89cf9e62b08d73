"""The OpenAI-compatible data plane: each handler reads as the stages of docs/design.md."""

from __future__ import annotations

import os
from typing import Any

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.response import Stream

from gateway.api.disconnect import unless_disconnected
from gateway.auth import Principal, authenticate
from gateway.errors import LoopDetected, RequestTooLarge
from gateway.policy import Ask, check_access, enforce, max_tokens_for
from gateway.ratelimit import Grant
from gateway.registry import Snapshot
from gateway.routing import Route, candidate, choose, resolve
from gateway.schemas import ChatRequest, CompletionRequest, OpenAIRequest, parse
from gateway.services import Services
from gateway.upstream import Answer, Exchange
from gateway.upstream.client import HOP_HEADER

AnyRequest = Request[Any, Any, Any]
_JSON = "application/json"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: AnyRequest) -> Response[bytes] | Stream:
    """OpenAI chat completions, streamed or not."""
    return await _complete(request, ChatRequest)


@post("/v1/completions", status_code=200)
async def completions(request: AnyRequest) -> Response[bytes] | Stream:
    """OpenAI legacy completions, streamed or not."""
    return await _complete(request, CompletionRequest)


async def _complete(request: AnyRequest, schema: type[OpenAIRequest]) -> Response[bytes] | Stream:
    """The request path, one stage per line; the record (stage 6) sees every ending."""
    services, snapshot, request_id = _begin(request)
    record = services.accounting.open(schema.operation, request.headers, request_id)
    try:
        with record.stage("authenticate"):
            principal = record.authenticated(_authenticate(request, services, snapshot))
        asked = record.parsed(parse(schema, await _body(request)))
        with record.stage("resolve"):
            found = resolve(principal, asked.model, snapshot, services.rng)
        with record.stage("authorize"):
            ask = Ask.of(asked)
            pools = enforce(record.decided(check_access(principal.team, found, ask)))
        route = record.routed(choose(found, pools, services.rng))
        max_tokens = max_tokens_for(ask.max_tokens, services.settings, principal.team.policy.caps)
        with record.stage("admit"):
            reserve = asked.prompt_tokens_estimate + max_tokens
            grant = record.admitted(await services.limiter.admit(principal, reserve))
        exchange = Exchange(route, asked, max_tokens, request_id, record.keeps_content)
        answer = await unless_disconnected(request, services.upstream.forward(exchange, record))
        return _respond(answer, request_id, route, grant)
    except BaseException as exc:
        record.failed(exc)
        raise


def _respond(
    answer: Answer, request_id: str, route: Route, grant: Grant
) -> Response[bytes] | Stream:
    """The HTTP response: the answer with the request's id, route and rate-limit headers."""
    headers = {
        "x-request-id": request_id,
        **grant.headers,
        "x-lgw-adapter": route.adapter,
        "x-lgw-pool": route.pool.name,
    }
    if isinstance(answer, bytes):
        return Response(answer, media_type=_JSON, headers=headers)
    return Stream(answer, media_type="text/event-stream", headers={**headers, **_SSE_HEADERS})


@get("/v1/models")
async def list_models(request: AnyRequest) -> Response[dict[str, Any]]:
    """The tasks the caller's team can name in ``model`` (nothing about other teams)."""
    services, snapshot, request_id = _begin(request)
    principal = _authenticate(request, services, snapshot)
    data = [
        {"id": task, "object": "model", "created": 0, "owned_by": "lora-gateway"}
        for task in snapshot.tasks(principal.team.name)
        if _servable(principal, snapshot, task)
    ]
    return Response({"object": "list", "data": data}, headers={"x-request-id": request_id})


def _servable(principal: Principal, snapshot: Snapshot, task: str) -> bool:
    """Whether the data plane would serve ``task`` to the team (every mapped adapter)."""
    mapping = snapshot.mapping(principal.team.name, task)
    return mapping is not None and all(
        check_access(principal.team, candidate(snapshot, task, t.adapter), None).allowed
        for t in mapping.choices
    )


async def _body(request: AnyRequest) -> bytes:
    """The request body; one over ``LGW_MAX_BODY_BYTES`` is our own 413 (so it is counted
    and logged as ``request_too_large``, not as an internal error)."""
    try:
        return await request.body()
    except HTTPException as exc:
        if exc.status_code == 413:
            raise RequestTooLarge("The request body is too large.") from None
        raise


def _begin(request: AnyRequest) -> tuple[Services, Snapshot, str]:
    """The services, the registry snapshot this whole request uses, and its id."""
    request_id = os.urandom(12).hex()
    request.state.request_id = request_id
    if HOP_HEADER in request.headers:
        raise LoopDetected("The request came from a lora-gateway: a pool points back at one.")
    services: Services = request.app.state.services
    return services, services.registry.current(), request_id


def _authenticate(request: AnyRequest, services: Services, snapshot: Snapshot) -> Principal:
    return authenticate(request.headers.get("authorization"), snapshot, services.pepper)
