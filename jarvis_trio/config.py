"""Settings, read from ``JARVIS_*`` environment variables (and CLI flags on top).

This class is the single source of truth for configuration: the docs'
configuration reference is generated from its fields (``make config-docs``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BackendName = Literal["auto", "sim", "ollama", "openai"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JARVIS_", frozen=True, extra="ignore", populate_by_name=True
    )

    def __init__(self, **values: Any) -> None:
        # A keyword argument by an old name still counts (the new name wins).
        if "prev_stream_timeout" in values:
            values.setdefault("join_budget", values.pop("prev_stream_timeout"))
        super().__init__(**values)

    host: str = Field("127.0.0.1", description="Address `jarvis-trio serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `jarvis-trio serve` listens on.")
    backend: BackendName = Field(
        "auto",
        description="Model backend: `sim` (embedded model), `ollama`, `openai` (any "
        "OpenAI-compatible server) or `auto` (Ollama if it answers at start, else `sim`).",
    )
    ollama_url: str = Field(
        "http://127.0.0.1:11434",
        validation_alias=AliasChoices("JARVIS_OLLAMA_URL", "OLLAMA_HOST"),
        description="Ollama's address (`JARVIS_OLLAMA_URL`, else `OLLAMA_HOST`).",
    )
    upstream_url: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server for `--backend openai`, "
        "including `/v1` (e.g. `http://127.0.0.1:8080/v1`).",
    )
    upstream_api_key: str | None = Field(
        None, description="Bearer key sent to the OpenAI-compatible upstream, if it needs one."
    )
    default_model: str | None = Field(
        None,
        description="Model used when a request names none (default: the upstream's first).",
    )
    extended_finish_reasons: bool = Field(
        False,
        description="A stream cut short ends with `finish_reason` naming why (`superseded`, "
        "`stopped`...) instead of OpenAI's `stop`. Off by default: clients with a strict "
        "enum of finish reasons cannot parse other values; the reason is always in "
        "`jarvis.outcome`.",
    )
    coalesce_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Write coalescing for streaming answers: after the first, each write "
        "also carries what the model sends within this many milliseconds (fewer, larger "
        "writes, each token up to this much later; the CPU it saves was within the "
        "noise on a 2-core machine). 0: write what is there at once. docs/benchmarks.md "
        "measures the trade.",
    )
    upstream_connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for a connection to the upstream."
    )
    upstream_keepalive: int = Field(
        16,
        ge=0,
        le=1024,
        description="Idle upstream connections kept alive for reuse (each for at most 2 s); "
        "0: a new upstream connection per request. A cancelled request's "
        "connection is shut down and never reused, and no request is ever resent on a "
        "kept-alive connection the upstream closed: that request fails. An idle connection "
        "is closed 2.25-3.25 s after its last request, used or not; a request handed one in that "
        "moment sends nothing on it and goes out once, on another (docs/howto/tuning.md).",
    )
    join_budget: float = Field(
        2.0,
        ge=0,
        le=60,
        validation_alias=AliasChoices("JARVIS_JOIN_BUDGET", "JARVIS_PREV_STREAM_TIMEOUT"),
        description="How long a new request (or Stop) waits for the cancelled stream of its "
        "session to finish, in seconds (`JARVIS_JOIN_BUDGET`, else its old name "
        "`JARVIS_PREV_STREAM_TIMEOUT`).",
    )
    stream_inactivity_seconds: float = Field(
        120.0,
        gt=0,
        description="After its first token, a stream that produces no output for this long "
        "ends with an error event (`inactivity_timeout`).",
    )
    first_token_timeout: float = Field(
        300.0,
        gt=0,
        description="How long a stream may wait for its first token (a model loading, a long "
        "prompt) before it ends with an error (`first_token_timeout`).",
    )
    shutdown_timeout: float = Field(
        5.0,
        gt=0,
        le=600,
        description="On SIGTERM/SIGINT, `jarvis-trio serve` ends every stream and exits "
        "within this many seconds, even while upstreams are silent.",
    )
    sim_tokens_per_second: float = Field(
        20.0, gt=0, le=100_000, description="Pace of the embedded model, per stream."
    )
    sim_mark_tokens: bool = Field(
        False,
        description="Tag every word of the embedded model with its answer's mark "
        "(`word~3fa0`), so no two answers share a token (for UI tests and demos).",
    )
    replay_buffer_chars: int = Field(
        65536,
        ge=1,
        description="Characters of each stream's output kept for viewers (a refreshed page "
        "re-attaching); past that the oldest pieces are dropped.",
    )
    replay_retention_seconds: float = Field(
        300.0,
        ge=0,
        description="How long the output of a session's last finished stream stays "
        "available to viewers.",
    )
    replay_retained_streams: int = Field(
        256,
        ge=0,
        description="At most this many finished streams' output is kept for viewers "
        "(the oldest goes first).",
    )
    max_resume_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="Largest `X-Jarvis-Resume-Seconds` a client may ask for: how long a "
        "stream whose client left may wait for a viewer before it is cancelled.",
    )
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated API keys. Empty: auth is off, allowed on loopback only.",
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated origins (`https://app.example.com`, `*` for any) whose "
        "browser pages may call the API (CORS). Empty: no CORS headers, so only the chat "
        "page served here can read answers in a browser.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve without API keys on a non-loopback address (not recommended).",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest accepted request body, in bytes."
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Seconds a client may take to send its request body (slowloris guard); "
        "then 408.",
    )
    max_streams: int = Field(
        256,
        ge=1,
        description="Streams that may run at once (live, being cancelled, or past their "
        "join). Past it a new request gets 429 `gateway_full` with `Retry-After` at once; "
        "a new prompt of a session that runs a stream is still admitted (it replaces it). "
        "Sizing: docs/howto/tuning.md.",
    )
    thread_limit: int | None = Field(
        None,
        ge=1,
        description="Worker threads that may read upstreams at once. Empty: "
        "`JARVIS_MAX_STREAMS` + 16 (room for streams past their join). At least "
        "`JARVIS_MAX_STREAMS`, so an admitted stream never waits for a thread.",
    )
    thread_stack_kib: int | None = Field(
        None,
        ge=64,
        le=65536,
        description="Stack size of the worker threads, in KiB, set by `jarvis-trio serve` "
        "before any thread starts. Empty: the system's (8 MiB here). It bounds address "
        "space, not RSS: a thread's RSS is the stack it touches.",
    )
    retry_after_seconds: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="`Retry-After` of a 429 `gateway_full` (and a 503 `shutting_down`).",
    )
    models_ttl_seconds: float = Field(
        60.0,
        gt=0,
        description="How long the upstream's model list (the default model of a request "
        "that names none) is used before it is refreshed, in the background.",
    )
    registry_url: str | None = Field(
        None,
        description="Redis URL (`redis://host:6379/0`) of the session registry shared by "
        "several processes or hosts (see docs/deployment.md). Empty: sessions are held in "
        "memory, per process.",
    )
    registry_lease_seconds: float = Field(
        5.0,
        ge=0.3,
        le=300,
        description="With a registry: a live stream's lease on its session, renewed every "
        "third of it; a crashed worker's session is free again after at most this long.",
    )
    registry_secret: str | None = Field(
        None,
        min_length=16,
        description="With a registry: the secret every gateway derives session digests and "
        "upstream labels from (the same on all, 16+ characters). Empty: a random one kept in "
        "Redis, re-seeded after Redis loses its data.",
    )
    registry_timeout: float = Field(
        0.5,
        gt=0,
        le=10,
        description="With a registry: seconds one Redis call may take to connect or answer; "
        "past it the request fails with 503 `registry_unavailable`.",
    )
    mcp_config: str | None = Field(
        None,
        description="JSON file naming the MCP servers whose tools the agent may use, in the "
        'shape other MCP clients use (`{"mcpServers": {"NAME": {"command": …, "args": […], '
        '"env": {…}}}}`, or `{"url": …}` for streamable HTTP). Empty: no tools. The servers '
        "run with the gateway's privileges.",
    )
    demo_tools: bool = Field(
        False,
        description="Also run the demo MCP server shipped in the package (`python -m "
        "jarvis_trio.demo_tools`: `now`, `add`, `multiply`, `sleep`) as server `demo`, to try "
        "agent mode with nothing else installed. `make run` turns it on.",
    )
    tool_timeout: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds one MCP tool call may take; then it is cancelled at the server "
        "and the model reads a timeout error.",
    )
    agent_cancel_timeout: float = Field(
        0.5,
        gt=0,
        le=10,
        description="Cancel budget of a tool call: a cancelled caller is released within it; "
        "a call whose cancel cannot be delivered by then is abandoned (`agent_tool_abandoned`).",
    )
    tool_result_max_chars: int = Field(
        16_000,
        ge=100,
        description="Characters of a tool's result the model reads; the rest is cut, with a "
        "note saying how much.",
    )
    agent_max_steps: int = Field(
        8,
        ge=1,
        le=100,
        description="Agent mode: at most this many rounds of model call and tool calls per "
        "answer; the last round offers the model no server tools, so it answers in text.",
    )
    agent_default: bool = Field(
        False,
        description="Agent mode for every chat request that does not say "
        '`"jarvis": {"agent": false}` (needs `JARVIS_MCP_CONFIG`).',
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    log_format: Literal["logfmt", "json"] = Field("logfmt", description="Log line format.")

    @property
    def reader_threads(self) -> int:
        """The thread limiter's size: ``thread_limit``, else ``max_streams`` + 16."""
        return self.thread_limit if self.thread_limit is not None else self.max_streams + 16

    @model_validator(mode="after")
    def _threads_cover_streams(self) -> Settings:
        if self.thread_limit is not None and self.thread_limit < self.max_streams:
            raise ValueError(
                f"JARVIS_THREAD_LIMIT ({self.thread_limit}) is below JARVIS_MAX_STREAMS "
                f"({self.max_streams}): admitted streams would wait for a thread without a "
                "word. Raise the thread limit or lower the stream limit."
            )
        return self

    @model_validator(mode="after")
    def _agent_default_needs_tools(self) -> Settings:
        if self.agent_default and self.mcp_config is None and not self.demo_tools:
            raise ValueError(
                "JARVIS_AGENT_DEFAULT=true needs tools (JARVIS_MCP_CONFIG or "
                "JARVIS_DEMO_TOOLS): every chat request would be refused."
            )
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
        return value

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin (`scheme://host[:port]` or `*`)")
        return value

    @field_validator("ollama_url", mode="after")
    @classmethod
    def _normalize_ollama_url(cls, value: str) -> str:
        return normalize_ollama_url(value)

    @field_validator(
        "registry_url",
        "registry_secret",
        "mcp_config",
        "upstream_url",
        "upstream_api_key",
        "default_model",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # JARVIS_REGISTRY_URL= (as `${REDIS_URL:-}` gives) means "not set", not "".
        return value or None

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


@functools.lru_cache(maxsize=1024)  # asked of every request's two addresses
def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def settings_table() -> str:
    """The configuration reference as a markdown table, generated from :class:`Settings`."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.default
        if default is None or default == ():
            shown = "(empty)"
        else:
            text = ",".join(default) if isinstance(default, tuple) else str(default)
            shown = f"`{text.lower() if isinstance(default, bool) else text}`"
        rows.append(f"| `JARVIS_{name.upper()}` | {shown} | {info.description} |")
    return "\n".join(rows)


def normalize_ollama_url(value: str) -> str:
    """``OLLAMA_HOST`` may be ``host``, ``host:port`` or a URL; ``0.0.0.0`` means here.

    The default port follows Ollama's own parsing: 11434 without a scheme,
    else the scheme's (80 for http, 443 for https).
    """
    url = value.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest, default_port = "http", url, "11434"
    else:
        default_port = "443" if scheme == "https" else "80"
    host, _, tail = rest.partition("/")
    if host.startswith("0.0.0.0"):
        host = "127.0.0.1" + host.removeprefix("0.0.0.0")
    if ":" not in host.rsplit("]", 1)[-1]:
        host += ":" + default_port
    return f"{scheme}://{host}" + (f"/{tail}" if tail else "")
