"""The OpenAI chat request body, validated strictly, and its mapping to a GenerationRequest."""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from jarvis_trio.errors import InvalidRequest
from jarvis_trio.generation import ChatTurn, GenerationRequest
from jarvis_trio.schemas.fields import (
    OPEN,
    STRICT,
    FieldError,
    Penalty,
    Probability,
    TokenCount,
    ToolName,
    invalid_request,
    parse_json_object,
)
from jarvis_trio.schemas.messages import (
    AssistantMessage,
    Message,
    to_turn,
)

# The fields the gateway owns: every other field of the body is the backend's to map.
GATEWAY_FIELDS = frozenset({"model", "stream", "stream_options", "messages", "prompt", "jarvis"})


class FunctionDef(BaseModel):
    model_config = OPEN
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = OPEN
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = STRICT
    name: ToolName


class NamedToolChoice(BaseModel):
    model_config = STRICT
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = OPEN
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = STRICT
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = STRICT
    type: Literal["json_object"]


class JsonSchemaResponseFormat(BaseModel):
    model_config = STRICT
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class JarvisOptions(BaseModel):
    """The gateway's own request extension, ``"jarvis": {...}`` (never sent upstream)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    agent: bool | None = None


class StreamOptions(BaseModel):
    model_config = OPEN
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request, validated strictly; fields it does not name are kept."""

    model_config = OPEN

    # "" means the default model, as omitting it does.
    model: Annotated[str, Field(max_length=256)] | None = None
    messages: Annotated[list[Message], Field(min_length=1, max_length=10_000)] | None = None
    prompt: str | None = None
    stream: bool | None = False  # null: as absent
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] | None = None
    top_p: Probability | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] | None = 1
    tools: Annotated[list[ToolDef], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    user: Annotated[str, Field(max_length=512)] | None = None
    metadata: Annotated[dict[str, str], Field(max_length=16)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False)]] | None = (
        None
    )
    jarvis: JarvisOptions | None = None

    # The body as the client sent it (set by :func:`parse_chat_request`).
    _body: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_sequences(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ValueError("stop must be a string or a list of strings")
        if len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and not all(key.isdigit() for key in value):
            raise ValueError("logit_bias keys must be token ids (strings of digits)")
        return value

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or the shorthand 'prompt'")
        if self.stream_options is not None and not self.stream:
            raise FieldError(
                "stream_options", "it is only allowed when 'stream' is true", code="value_error"
            )
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldError("top_logprobs", "'top_logprobs' needs 'logprobs': true")
        if isinstance(self.tool_choice, NamedToolChoice):
            offered = {t.function.name for t in self.tools or ()}
            if self.tool_choice.function.name not in offered:
                raise FieldError(
                    "tool_choice",
                    f"it names {self.tool_choice.function.name!r}, which is not in 'tools'",
                )
        elif self.tool_choice == "required" and not self.tools:
            raise FieldError("tool_choice", "'required' needs 'tools'")
        for i, message in enumerate(self.messages or ()):
            if isinstance(message, AssistantMessage) and not (
                message.content is not None or message.tool_calls or message.refusal
            ):
                raise FieldError(
                    f"messages.{i}",
                    "an assistant message needs 'content', 'tool_calls' or 'refusal'",
                )
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def body(self) -> dict[str, Any]:
        return self._body

    def wants_agent(self, default: bool) -> bool:
        """Agent mode: ``jarvis.agent`` if the client said, else the server's default."""
        said = self.jarvis.agent if self.jarvis is not None else None
        return default if said is None else said

    def to_generation(
        self, model: str, *, trace_session: str | None = None, agent: bool = False
    ) -> GenerationRequest:
        if self.messages is not None:
            turns = tuple(to_turn(m) for m in self.messages)
            raw = tuple(
                m for m in self._body.get("messages") or () if isinstance(m, dict)
            ) or tuple(m.model_dump(mode="json", by_alias=True) for m in self.messages)
        else:
            turns = (ChatTurn("user", self.prompt or ""),)
            raw = ({"role": "user", "content": self.prompt or ""},)
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        options = {k: v for k, v in self._body.items() if k not in GATEWAY_FIELDS}
        return GenerationRequest(
            model=model,
            messages=turns,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(s for s in stop if s),
            trace_session=trace_session,
            options=MappingProxyType(options),
            raw_messages=raw,
            agent=agent,
        )


def parse_chat_request(raw: bytes) -> ChatCompletionRequest:
    body = parse_json_object(raw)
    if body.get("n", 1) != 1 and isinstance(body.get("n"), int):
        raise InvalidRequest(
            "Only n=1 is supported: a stream here carries one answer.",
            param="n",
            code="unsupported_value",
        )
    try:
        chat = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None
    chat._body = body
    return chat
