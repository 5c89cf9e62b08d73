"""Stage 3, authorize: what a team may ask of a route (pure; no I/O)."""

from __future__ import annotations

from gateway.errors import InvalidRequest
from gateway.settings import Settings


def max_tokens_for(requested: int | None, settings: Settings) -> int:
    """The ``max_tokens`` to send upstream: always explicit, never above the cap.

    Without it TGI generates up to the whole context window (reference §7).
    """
    if requested is None:
        return min(settings.default_max_tokens, settings.max_tokens_cap)
    if requested > settings.max_tokens_cap:
        raise InvalidRequest(
            f"max_tokens is too large: {requested}. This model supports at most "
            f"{settings.max_tokens_cap} completion tokens.",
            param="max_tokens",
        )
    return requested
