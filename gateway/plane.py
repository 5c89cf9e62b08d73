"""What the data plane's handlers share: built once by ``create_app``, kept on ``app.state``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from gateway.backends import TGIDialect
from gateway.registry.cache import RegistryCache
from gateway.settings import Settings
from gateway.upstream import Upstream


@dataclass
class DataPlane:
    """Settings, the registry cache, the upstream client and the backend dialect."""

    settings: Settings
    registry: RegistryCache
    upstream: Upstream
    dialect: TGIDialect = field(default_factory=TGIDialect)
    rng: random.Random = field(default_factory=random.Random)
    ready: bool = False
    """True once the registry is loaded and the upstream pool is open."""
    pepper: bytes = field(init=False, repr=False)
    """The key-hash pepper (empty when no key exists, so nothing can match)."""

    def __post_init__(self) -> None:
        secret = self.settings.key_pepper
        self.pepper = secret.get_secret_value().encode() if secret else b""
