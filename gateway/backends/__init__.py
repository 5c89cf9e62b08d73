"""Backend dialects: how an OpenAI request is said to each kind of multi-LoRA server."""

from gateway.backends.dialect import DIALECTS, Dialect
from gateway.backends.responses import ChunkRewriter, Usage
from gateway.backends.tgi import TGIDialect
from gateway.backends.vllm import VLLMDialect

__all__ = ["DIALECTS", "ChunkRewriter", "Dialect", "TGIDialect", "Usage", "VLLMDialect"]
