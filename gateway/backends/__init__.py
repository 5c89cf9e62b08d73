"""Backend dialects: how an OpenAI request is said to each kind of multi-LoRA server."""

from gateway.backends.tgi import ChunkRewriter, TGIDialect, Usage

__all__ = ["ChunkRewriter", "TGIDialect", "Usage"]
