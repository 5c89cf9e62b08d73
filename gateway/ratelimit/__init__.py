"""Stage 4, admit: every limit of a request checked and debited at once, settled at its end."""

from gateway.ratelimit.limits import Grant, Limiter, limiter_key
from gateway.ratelimit.memory import MemoryLimiter

__all__ = ["Grant", "Limiter", "MemoryLimiter", "limiter_key"]
