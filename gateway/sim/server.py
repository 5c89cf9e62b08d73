"""A TGI simulator: TGI v3.3's HTTP routes and wire format, field for field, quirks kept.

What it copies from TGI (docs/reference/tgi-protocol.md): ``data:`` framing without a space;
chat ``id`` always ``""``; no role-only chunk; the ``choices: []`` usage chunk; raw
``stop_sequence``; stream errors as HTTP 200 events followed by ``data:[DONE]`` (chat,
completions) or by nothing (``/generate_stream``); 429 "Model is overloaded" past
``max_concurrent_requests``; 422 validation errors; Gemma's refusal of ``system``; and the
silent fallback: an unknown adapter id is answered by the base model with HTTP 200.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from gateway.sim import protocol
from gateway.sim.generation import TemplateError, apply_gemma_template
from gateway.sim.job import Job
from gateway.sim.state import SimConfig, SimState

VERSION = "3.3.6-dev0"
FINGERPRINT = f"{VERSION}-native"


class Simulator(SimState):
    """The simulated replica: an aiohttp app plus what it saw, for tests to inspect."""

    def __init__(self, config: SimConfig | None = None) -> None:
        super().__init__(config or SimConfig())
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application with TGI's routes."""
        app = web.Application(client_max_size=2_000_000)  # TGI's --payload-limit default
        routes = [
            web.post("/v1/chat/completions", self._chat),
            web.post("/v1/completions", self._completions),
            web.post("/generate", self._generate),
            web.post("/generate_stream", self._generate_stream),
            web.get("/info", self._info),
            web.get("/health", self._health),
            web.get("/metrics", self._metrics),
            web.get("/v1/models", self._models),
        ]
        app.add_routes(routes)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port) in the running loop; returns the URL."""
        # handler_cancellation: a client that goes away cancels its handler, as TGI drops it.
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = self._runner.addresses
        self.url = f"http://{host}:{sockets[0][1]}"
        return self.url

    async def stop(self) -> None:
        """Stop serving (in-flight requests finish first, as on a graceful shutdown)."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def kill(self) -> None:
        """Die like a crashed replica: no new connection, every open one reset at once.
        The sites stop first: a connection accepted after the resets would otherwise be
        waited for by the shutdown (up to its 60 s)."""
        if self._runner is None:
            return
        for site in list(self._runner.sites):
            await site.stop()
        server = self._runner.server
        for handler in list(server.connections) if server is not None else []:
            if handler.transport is not None:
                handler.transport.abort()
        self._runner._shutdown_timeout = 0  # a crash waits for nothing (aiohttp's own knob)
        await self._runner.cleanup()

    # -- routes ------------------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, error = await protocol.read_json(request)
        if error is not None:
            return error
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return protocol.deserialize_error("missing field `messages`")
        if not protocol.tgi_response_format_ok(body.get("response_format")):
            return protocol.deserialize_error("response_format: unknown variant or missing `value`")
        try:
            prompt = apply_gemma_template(messages)
        except TemplateError as exc:
            return protocol.json_error(422, str(exc), "template_error")
        requested = body.get("model")
        parameters = {
            "max_new_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
            "top_p": body.get("top_p"),
            # chat maps temperature 0 to greedy decoding instead of rejecting it
            "temperature": body.get("temperature") or None,
            "frequency_penalty": body.get("frequency_penalty"),
            "repetition_penalty": (
                body["presence_penalty"] + 2.0 if body.get("presence_penalty") is not None else None
            ),
            "stop": body.get("stop") or [],
        }
        vllm = self.config.flavor == "vllm"
        if vllm and requested not in (self.config.model_id, *self.adapters):
            return protocol.vllm_not_found(str(requested))  # vLLM never falls back
        base = (None, "tgi", self.config.model_id) if vllm else (None, "tgi")
        adapter = None if requested in base else requested
        job = Job(self, request, body, prompt, adapter, parameters)
        model = requested if adapter is not None else self.config.model_id
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = protocol.ChatStream(model, FINGERPRINT, include_usage, vllm)
            return await job.stream(chunks)
        return await job.respond(lambda g: protocol.chat_completion(model, FINGERPRINT, g, vllm))

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, error = await protocol.read_json(request)
        if error is not None:
            return error
        if body.get("suffix") is not None:
            return protocol.json_error(
                422,
                "Suffix is not supported and can be achieved by preprocessing the prompt.",
                "suffix not supported",
            )
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            return protocol.deserialize_error("prompt: invalid type")
        if len(prompts) > 4:
            return protocol.json_error(
                422, "Number of prompts exceeds the maximum batch size", "batch size exceeded"
            )
        requested = body.get("model")
        adapter = None if requested in (None, "tgi") else requested
        parameters = {
            "max_new_tokens": body.get("max_tokens"),
            "top_p": body.get("top_p"),
            "temperature": body.get("temperature") or None,
            "stop": body.get("stop") or [],
        }
        text = f"<start_of_turn>user\n{prompts[0]}<end_of_turn>"
        job = Job(self, request, body, text, adapter, parameters)
        model = self.config.model_id  # /v1/completions always answers with the base model id
        if body.get("stream"):
            return await job.stream(protocol.CompletionStream(model, FINGERPRINT))
        return await job.respond(lambda g: protocol.completion(model, FINGERPRINT, g))

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._generate_route(request, stream=False)

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._generate_route(request, stream=True)

    async def _generate_route(self, request: web.Request, stream: bool) -> web.StreamResponse:
        body, error = await protocol.read_json(request)
        if error is not None:
            return error
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            return protocol.deserialize_error("missing field `inputs`")
        params = body.get("parameters") or {}
        details = bool(params.get("details"))
        job = Job(
            self, request, body, f"<start_of_turn>user\n{inputs}", params.get("adapter_id"), params
        )
        if stream:
            return await job.stream(protocol.GenerateStream(details))
        return await job.respond(lambda g: protocol.generate_response(g, details))

    async def _info(self, request: web.Request) -> web.Response:
        c = self.config
        return web.json_response(
            {
                "model_id": c.model_id,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": c.max_concurrent_requests,
                "max_best_of": 2,
                "max_stop_sequences": c.max_stop_sequences,
                "max_input_tokens": c.max_input_tokens,
                "max_total_tokens": c.max_total_tokens,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": VERSION,
                "sha": None,
                "docker_label": None,
            }
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        model = self.config.model_id
        data = [{"id": model, "object": "model", "created": 0, "owned_by": model}]
        if self.config.flavor == "vllm":  # vLLM lists its LoRA modules too (TGI does not)
            data += [
                {"id": a, "object": "model", "created": 0, "owned_by": "vllm", "parent": model}
                for a in sorted(self.adapters)
            ]
        return web.json_response({"object": "list", "data": data})

    async def _metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# TYPE tgi_queue_size gauge",
            "tgi_queue_size 0",
            "# TYPE tgi_batch_current_size gauge",
            f"tgi_batch_current_size {self.inflight}",
            "# TYPE tgi_request_count counter",
            f"tgi_request_count {self._counters.get('count', 0)}",
            "# TYPE tgi_request_success counter",
            f"tgi_request_success {self._counters.get('success', 0)}",
            "# TYPE tgi_request_failure counter",
            *(
                f'tgi_request_failure{{err="{err}"}} {self._counters.get(err, 0)}'
                for err in ("validation", "overloaded", "generation", "dropped", "template")
            ),
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def serve_forever(config: SimConfig, host: str, port: int) -> None:
    """Run a simulator until interrupted (the ``lora-gateway sim`` command)."""

    async def main() -> None:
        sim = Simulator(config)
        url = await sim.start(host, port)
        print(
            json.dumps(
                {"simulator": url, "model_id": config.model_id, "adapters": sorted(sim.adapters)}
            ),
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    asyncio.run(main())
