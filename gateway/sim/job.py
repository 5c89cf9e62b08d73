"""One simulated generation request, from admission to its last byte (faults included)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.sim import protocol
from gateway.sim.faults import Fault, fault_for
from gateway.sim.generation import Generation, generate
from gateway.sim.state import SeenRequest, SimState


class Job:
    """One generation request, from admission to the last byte."""

    def __init__(
        self,
        sim: SimState,
        request: web.Request,
        body: Any,
        prompt: str,
        adapter: str | None,
        parameters: dict[str, Any],
    ) -> None:
        self.sim = sim
        self.request = request
        self.prompt = prompt
        self.parameters = parameters
        # TGI never validates adapter ids: unknown ones silently get the base model (#2505).
        known = adapter is not None and adapter in sim.adapters
        self.served_by = adapter if known and adapter else sim.config.model_id
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen = SeenRequest(
            request.path, body, dict(request.headers), self.served_by, connection=str(peer)
        )
        sim.record(self.seen)
        sim.count("count")
        self.fault = fault_for(
            request.headers.get("x-sim-fault"), prompt, sim.config.faults.get(self.served_by)
        )

    def _generation(self) -> Generation | str:
        """The answer, or TGI's validation message for parameters it refuses."""
        p = self.parameters
        problem = protocol.validate(p, self.sim.config)
        if problem:
            return problem
        max_new = p.get("max_new_tokens")
        stop = p.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        limit = max_new if max_new is not None else 1024
        return generate(self.served_by, self.prompt, limit, stop)

    def _admit(self) -> bool:
        cfg = self.sim.config
        if self.fault is Fault.OVERLOAD or self.sim.inflight >= cfg.max_concurrent_requests:
            self.sim.count("overloaded")
            return False
        self.sim.inflight += 1
        self.sim.peak_inflight = max(self.sim.peak_inflight, self.sim.inflight)
        return True

    async def respond(self, render: Callable[[Generation], dict[str, Any]]) -> web.StreamResponse:
        """A non-streamed answer."""
        generation = self._generation()
        if isinstance(generation, str):
            self.sim.count("validation")
            self.sim.record(self.seen, "error")
            return protocol.json_error(422, generation, "validation")
        if not self._admit():
            self.sim.record(self.seen, "error")
            return protocol.json_error(429, "Model is overloaded", "overloaded")
        try:
            return await self._respond_admitted(generation, render)
        except asyncio.CancelledError:
            self.sim.count("dropped")
            self.sim.record(self.seen, "disconnected")
            raise
        finally:
            self.sim.inflight -= 1

    async def _respond_admitted(
        self, generation: Generation, render: Callable[[Generation], dict[str, Any]]
    ) -> web.StreamResponse:
        cfg = self.sim.config
        started = time.monotonic()
        if self.fault is Fault.RESET:
            self._reset()
            return web.Response(status=500)  # never sent: the connection is gone
        if self.fault in (Fault.ERROR_BEFORE_CONTENT, Fault.ERROR_MID_STREAM):
            self.sim.count("generation")
            self.sim.record(self.seen, "error")
            return protocol.json_error(424, protocol.GENERATION_ERROR, "generation")
        delay = cfg.ttft + cfg.itl * max(0, len(generation.tokens) - 1)
        if self.fault is Fault.STALL:
            delay = cfg.stall_seconds
        if delay:
            await asyncio.sleep(delay)
        self.sim.count("success")
        self.sim.record(self.seen, "ok")
        headers = protocol.timing_headers(self.prompt, generation, time.monotonic() - started)
        return web.json_response(render(generation), headers=headers, dumps=protocol.dumps)

    async def stream(self, framing: protocol.Framing) -> web.StreamResponse:
        """A streamed answer: the status is committed first, so every error is an event."""
        response = web.StreamResponse(headers=protocol.stream_headers(self.prompt))
        response.content_type = "text/event-stream"
        await response.prepare(self.request)
        generation = self._generation()
        if isinstance(generation, str):
            self.sim.count("validation")
            self.sim.record(self.seen, "error")
            await framing.error(response, generation, "validation")
            return response
        if not self._admit():
            self.sim.record(self.seen, "error")
            await framing.error(response, "Model is overloaded", "overloaded")
            return response
        try:
            await self._stream_admitted(response, framing, generation)
        except (asyncio.CancelledError, ConnectionResetError):
            if self.seen.outcome == "open":
                self.sim.count("dropped")
                self.sim.record(self.seen, "disconnected")
            raise
        finally:
            self.sim.inflight -= 1
        return response

    async def _stream_admitted(
        self, response: web.StreamResponse, framing: protocol.Framing, generation: Generation
    ) -> None:
        cfg = self.sim.config
        if self.fault is Fault.ERROR_BEFORE_CONTENT:
            self.sim.count("generation")
            self.sim.record(self.seen, "error")
            await framing.error(response, protocol.GENERATION_ERROR, "generation")
            return
        if cfg.ttft:
            await asyncio.sleep(cfg.ttft)
        for index in range(len(generation.tokens)):
            if index == 2 and self.fault is Fault.ERROR_MID_STREAM:
                self.sim.count("generation")
                self.sim.record(self.seen, "error")
                await framing.error(response, protocol.GENERATION_ERROR, "generation")
                return
            if index == 2 and self.fault is Fault.RESET:
                self._reset()
                return
            if index and cfg.itl:
                await asyncio.sleep(cfg.itl)
            await framing.token(response, generation, index)
            if index == 0 and self.fault is Fault.STALL:
                await asyncio.sleep(cfg.stall_seconds)
            if index == 0 and self.fault is Fault.KEEPALIVE:
                for _ in range(int(cfg.stall_seconds * 10)):
                    await response.write(b":\n\n")  # TGI's KeepAlive comment
                    await asyncio.sleep(0.1)
        await framing.finish(response, generation)
        if self.fault is Fault.LATE_END:
            await asyncio.sleep(0.1)
        self.sim.count("success")
        self.sim.record(self.seen, "ok")

    def _reset(self) -> None:
        self.sim.record(self.seen, "reset")
        transport = self.request.transport
        if transport is not None:
            transport.abort()  # an RST, as a crashed replica or a killed pod gives
