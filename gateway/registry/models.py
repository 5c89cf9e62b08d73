"""Registry records as frozen pydantic models; a misspelled or unknown field is an error.

The same models back the policy YAML files and every store, so a record means the same
thing wherever it comes from.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
"""Team, task and pool names: lower-case, safe as metric labels and Redis key parts."""

# TGI's own rule for one LORA_ADAPTERS entry (server/.../utils/adapter.py):
# `id`, `id@revision`, `name=/local/path`, `name=/local/path@revision`.
_LORA_ENTRY = re.compile(r"^([^=@]+)(?:=([^=@]+))?(?:@([^=@]+))?$")
_ADAPTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def lora_adapter_id(entry: str) -> str:
    """The adapter id TGI serves for one ``LORA_ADAPTERS`` entry (revision and path dropped)."""
    match = _LORA_ENTRY.match(entry.strip())
    if match is None:
        raise ValueError(f"invalid LORA_ADAPTERS entry {entry!r}: expected id, id@rev or name=path")
    adapter_id = match.group(1).strip()
    if not _ADAPTER_ID.match(adapter_id):
        raise ValueError(f"invalid adapter id {adapter_id!r}")
    return adapter_id


def parse_lora_adapters(value: str) -> tuple[str, ...]:
    """The adapter ids of a whole comma-separated ``LORA_ADAPTERS`` value, in order."""
    return tuple(lora_adapter_id(entry) for entry in value.split(",") if entry.strip())


def _check_lora_entry(entry: str) -> str:
    lora_adapter_id(entry)
    return entry.strip()


def _check_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an endpoint is an http(s) base URL such as http://tgi:8080")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("an endpoint carries no credentials, query or fragment")
    if parts.path not in ("", "/"):
        raise ValueError("an endpoint is a base URL; the gateway appends /v1/chat/completions")
    return url.rstrip("/")


LoraEntry = Annotated[str, AfterValidator(_check_lora_entry)]
Endpoint = Annotated[str, AfterValidator(_check_endpoint)]
AdapterId = Annotated[str, Field(pattern=_ADAPTER_ID.pattern)]


class Record(BaseModel):
    """Base of every registry record: immutable, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(Record):
    """Per-team limits; ``None`` means unlimited (said explicitly, never by a zero)."""

    rpm: int | None = Field(None, gt=0)
    """Requests per minute."""
    tpm: int | None = Field(None, gt=0)
    """Tokens (prompt + completion) per minute."""
    concurrency: int | None = Field(None, gt=0)
    """Requests in flight at once."""


class ApiKey(Record):
    """An API key of a team, stored only as a keyed hash of its secret."""

    id: str = Field(pattern=r"^[a-z2-7]{12}$")
    """The public part of the key (``lgw-<id>-<secret>``), safe to show and log."""
    name: str = Field(min_length=1, max_length=100)
    """What the key is for, chosen by its creator."""
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    """HMAC-SHA256 of the secret under ``LGW_KEY_PEPPER``, hex."""
    expires_at: AwareDatetime | None = None
    """After this instant the key is refused."""
    limits: Limits = Limits()
    """Limits of this key alone, on top of its team's."""
    role: Literal["member", "admin"] = "member"
    """``admin``: may also manage its own team's keys and mappings on the admin plane."""


DataClass = Literal["public", "internal", "confidential", "restricted"]
DATA_CLASSES: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
"""From least to most sensitive; a pool cleared for a class may receive every lower one."""


class Caps(Record):
    """What one request of the team may ask; ``None`` means no cap beyond the gateway's."""

    max_tokens: int | None = Field(None, gt=0)
    max_prompt_chars: int | None = Field(None, gt=0)
    max_messages: int | None = Field(None, gt=0)
    allow_tools: bool = True
    allow_response_format: bool = True
    allow_logprobs: bool = True


class Policy(Record):
    """A team's access and data-segregation rules."""

    data_class: DataClass = "internal"
    """The most sensitive data the team sends; only pools cleared for it may receive it."""
    pool_labels: dict[str, str] = Field(default_factory=dict)
    """Labels a pool must carry to receive the team's requests (e.g. ``region: eu``)."""
    logging: Literal["none", "metadata", "redacted", "full"] = "metadata"
    """What request logs may hold: nothing, metadata, content with secrets and PII
    masked, or full content."""
    caps: Caps = Caps()
    shadow: bool = False
    """Evaluate and count would-deny decisions without enforcing them (to roll out)."""


class Team(Record):
    """A tenant: keys, limits and policies."""

    name: Name
    limits: Limits = Limits()
    on_limiter_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    """When Redis cannot be reached: admit through the replica's own limiter (``fail_open``,
    so each replica may admit up to the full limits) or refuse with 503 (``fail_closed``)."""
    keys: tuple[ApiKey, ...] = ()
    policy: Policy = Policy()


class Price(Record):
    """What tokens cost, in the organization's currency per million tokens."""

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The price of one request's tokens."""
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1_000_000


class Adapter(Record):
    """What the registry knows about an adapter beyond the pools that load it."""

    id: AdapterId
    owner: Name | None = None
    """The team that owns it; ``None`` means shared with every team."""
    grants: tuple[Name, ...] = ()
    """Other teams allowed to use a privately owned adapter."""
    description: str = ""
    price: Price | None = None
    """Token prices of this adapter; ``None``: the serving pool's ``price``."""


class Pool(Record):
    """One multi-LoRA deployment (a TGI Deployment): base model, adapters, replicas."""

    name: Name
    dialect: Literal["tgi", "vllm"] = "tgi"
    """The server the pool runs: Hugging Face TGI, or vLLM's OpenAI server with LoRA."""
    base_model: AdapterId
    """The model id TGI was started with (``MODEL_ID``)."""
    adapters: tuple[LoraEntry, ...] = ()
    """The entries of the pool's ``LORA_ADAPTERS``, in TGI's syntax."""
    endpoints: tuple[Endpoint, ...] = Field(min_length=1)
    """Base URLs of the replicas."""
    discovery: Literal["static", "dns"] = "static"
    """``dns``: each endpoint's host name (e.g. a Kubernetes headless Service) is resolved
    again and again, and every address it returns is a replica."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form labels (region, tenancy) that team policies may require."""
    clearance: DataClass = "internal"
    """The most sensitive data class this pool may receive."""
    price: Price = Price()
    """Default token prices of the adapters this pool serves (and of its base model)."""
    gpu_hour_price: float | None = Field(None, ge=0)
    """What one replica-hour of this pool costs; apportioned to teams by token share in
    dashboards (``lgw_pool_gpu_hour_price``)."""
    system_role: Literal["native", "fold"] = "native"
    """``fold``: the chat template refuses ``system`` messages (Gemma 2), so the gateway
    folds them into the first user turn."""

    @property
    def adapter_ids(self) -> frozenset[str]:
        """Ids the pool serves as adapters (what TGI accepts in ``model``)."""
        return frozenset(lora_adapter_id(entry) for entry in self.adapters)

    def serves(self, adapter: str) -> bool:
        """Whether a request for ``adapter`` (an adapter id or the base model) fits here."""
        return adapter == self.base_model or adapter in self.adapter_ids


class Target(Record):
    """One adapter a mapping sends traffic to, with its share."""

    adapter: AdapterId
    weight: float = Field(1.0, gt=0)


class Mapping(Record):
    """(team, task) -> one adapter, or weighted adapters for a canary."""

    team: Name | None = None
    """``None``: the org default, for every team without its own mapping of the task."""
    task: Name
    adapter: AdapterId | None = None
    targets: tuple[Target, ...] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_target_form(self) -> Mapping:
        if (self.adapter is None) == (self.targets is None):
            raise ValueError("give exactly one of 'adapter' or 'targets'")
        return self

    @property
    def choices(self) -> tuple[Target, ...]:
        """The targets, with a single ``adapter`` as one target of weight 1."""
        if self.targets is not None:
            return self.targets
        assert self.adapter is not None
        return (Target(adapter=self.adapter),)


class Registry(Record):
    """The whole configuration the data plane routes by, versioned as one unit."""

    version: int = 0
    pepper_fingerprint: str | None = Field(None, pattern=r"^[0-9a-f]{16}$")
    """Which ``LGW_KEY_PEPPER`` hashed the keys (``keys.fingerprint``): a replica started
    with another refuses to start rather than refuse every key."""
    teams: tuple[Team, ...] = ()
    adapters: tuple[Adapter, ...] = ()
    pools: tuple[Pool, ...] = ()
    mappings: tuple[Mapping, ...] = ()

    @property
    def has_keys(self) -> bool:
        """Whether any team holds an API key."""
        return any(team.keys for team in self.teams)

    @model_validator(mode="after")
    def _references_hold(self) -> Registry:
        problems = reference_problems(self)
        if problems:
            raise ValueError(
                "; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems)
            )
        return self


Problem = tuple[tuple[str | int, ...], str]


def reference_problems(registry: Registry) -> list[Problem]:
    """Cross-record errors (duplicates, dangling names, adapters no pool serves), each
    with its location. Whether a team may use what its mappings name is the policy's
    question (``gateway.policy.mapping_problems``)."""
    problems: list[Problem] = []
    problems += _duplicates("teams", [t.name for t in registry.teams], "name")
    problems += _duplicates("pools", [p.name for p in registry.pools], "name")
    problems += _duplicates("adapters", [a.id for a in registry.adapters], "id")
    key_ids = [(i, j, k.id) for i, t in enumerate(registry.teams) for j, k in enumerate(t.keys)]
    seen: set[str] = set()
    for i, j, key_id in key_ids:
        if key_id in seen:
            problems.append((("teams", i, "keys", j, "id"), f"duplicate key id {key_id!r}"))
        seen.add(key_id)
    teams = {t.name for t in registry.teams}
    for i, adapter in enumerate(registry.adapters):
        if adapter.owner is not None and adapter.owner not in teams:
            problems.append((("adapters", i, "owner"), f"unknown team {adapter.owner!r}"))
        for name in adapter.grants:
            if name not in teams:
                problems.append((("adapters", i, "grants"), f"unknown team {name!r}"))
    served = {a for p in registry.pools for a in (p.base_model, *p.adapter_ids)}
    pairs: set[tuple[str | None, str]] = set()
    for i, mapping in enumerate(registry.mappings):
        if (mapping.team, mapping.task) in pairs:
            problems.append(
                (("mappings", i, "task"), f"duplicate mapping of task {mapping.task!r}")
            )
        pairs.add((mapping.team, mapping.task))
        if mapping.team is not None and mapping.team not in teams:
            problems.append((("mappings", i, "team"), f"unknown team {mapping.team!r}"))
        field = "adapter" if mapping.adapter is not None else "targets"
        for target in mapping.choices:
            if target.adapter not in served:
                problems.append((("mappings", i, field), f"no pool serves {target.adapter!r}"))
    return problems


def price_of(adapter: Adapter | None, pool: Pool) -> Price:
    """What a request to ``adapter`` on ``pool`` costs: the adapter's own prices, else
    the pool's."""
    return adapter.price if adapter is not None and adapter.price is not None else pool.price


def _duplicates(section: str, names: list[str], field: str) -> list[Problem]:
    seen: set[str] = set()
    problems: list[Problem] = []
    for i, name in enumerate(names):
        if name in seen:
            problems.append(((section, i, field), f"duplicate {field} {name!r}"))
        seen.add(name)
    return problems
