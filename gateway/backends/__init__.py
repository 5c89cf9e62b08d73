"""Backend dialects: how an OpenAI request is said to each kind of multi-LoRA server."""

from gateway.backends.responses import ChunkRewriter, Usage
from gateway.backends.tgi import TGIDialect

__all__ = ["ChunkRewriter", "TGIDialect", "Usage"]
