"""Stage 5, forward: the one way requests reach a backend (``Upstream.forward``)."""

from gateway.upstream.forward import Answer, Ending, Exchange, Listener, Upstream

__all__ = ["Answer", "Ending", "Exchange", "Listener", "Upstream"]
