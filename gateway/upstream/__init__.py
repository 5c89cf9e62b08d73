"""Stage 5, forward: the one way requests reach a backend (``Upstream.forward``)."""

from gateway.upstream.forward import Answer, Ending, Exchange, Upstream, Watcher

__all__ = ["Answer", "Ending", "Exchange", "Upstream", "Watcher"]
