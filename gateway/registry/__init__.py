"""The registry: teams, keys, adapters, pools and mappings (records and the indexed
snapshot requests read); where it is kept is ``gateway/store/``."""

from gateway.registry.models import (
    Adapter,
    ApiKey,
    Limits,
    Mapping,
    Pool,
    Price,
    Registry,
    Target,
    Team,
    parse_lora_adapters,
)
from gateway.registry.snapshot import Snapshot

__all__ = [
    "Adapter",
    "ApiKey",
    "Limits",
    "Mapping",
    "Pool",
    "Price",
    "Registry",
    "Snapshot",
    "Target",
    "Team",
    "parse_lora_adapters",
]
