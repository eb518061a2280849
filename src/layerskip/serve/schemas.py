"""Request and response bodies of the OpenAI API subset we serve (they also make the OpenAPI spec).

Requests are strict about malformed input: wrong types and unknown fields are 400s, not silently
coerced or ignored. Standard fields we do not implement are accepted at their default value
only (`_only_default`), so SDKs that send every field with its default work, and a value that
would mean something we cannot do is a 400 naming the field. `top_k`, `strategy`, `exit_layer`
and `num_speculations` are our extensions (the `extra_body` of the openai client, as with vLLM).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from layerskip.generation.config import STRATEGIES

MAX_STOP_STRINGS = 4  # as OpenAI
MAX_SPECULATIONS = 64  # the exit-query cache holds k + 1 states per request
MAX_CHOICES = 16  # prompts x n in one request; they run one after another
MAX_LOGPROBS = 20  # top alternatives per token (OpenAI: 5 for completions, 20 for chat)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _whole(value: object) -> object:
    """JSON Schema counts 3.0 as an integer, so we do; "3" and 3.5 stay errors."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _only_default(*defaults: object) -> Any:
    """A standard field we accept only at its default value(s), e.g. `tools: []`."""

    def check(value: object) -> object:
        if not any(type(value) is type(d) and value == d for d in defaults):  # 0 is not False
            shown = ", ".join("null" if d is None else repr(d) for d in defaults)
            raise ValueError(f"not supported by this server; only its default ({shown}) is accepted")
        return value

    # The spec says exactly this, so clients and fuzzers see the accepted values.
    return Annotated[Any, AfterValidator(check), WithJsonSchema({"enum": list(defaults)}), Field(None)]


Int = Annotated[int, BeforeValidator(_whole)]
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_whole)]  # bounds inside: they reach the spec
TokenId = Annotated[int, Field(ge=0), BeforeValidator(_whole)]
Penalty = Annotated[float, Field(ge=-2, le=2)]


def _token_id_keys(bias: dict[str, float]) -> dict[str, float]:
    if not all(key.isascii() and key.isdigit() for key in bias):  # "²".isdigit(), but int("²") fails
        raise ValueError("keys must be token ids (non-negative integers as strings)")
    return bias


LogitBias = Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]], AfterValidator(_token_id_keys)]


class StreamOptions(_Strict):
    include_usage: bool = False


NonEmpty = Annotated[str, Field(min_length=1)]


class GenerationRequest(_Strict):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str
    max_tokens: PositiveInt | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy; unset: the server's default")
    top_p: float | None = Field(None, gt=0, le=1)
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES), BeforeValidator(_whole)] = Field(
        1, description="choices per prompt, generated one after another (greedy: identical)"
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOP_STRINGS)] | None = None
    seed: Int | None = Field(None, description="any integer (taken modulo 2**64); choice i uses seed + i")
    frequency_penalty: Penalty | None = Field(None, description="minus this times a token's count so far")
    presence_penalty: Penalty | None = Field(None, description="minus this for a token already generated")
    logit_bias: LogitBias | None = Field(None, description="token id -> bias added to its logit")
    user: str | None = Field(None, description="accepted, not stored")
    safety_identifier: str | None = Field(None, description="accepted, not stored")
    prompt_cache_key: str | None = Field(None, description="accepted, ignored (no prompt cache across requests)")
    service_tier: _only_default("auto", "default")
    top_k: PositiveInt | None = None
    strategy: Literal[STRATEGIES] | None = None
    exit_layer: PositiveInt | None = Field(None, description="E: layers 0..E-1 draft (or exit)")
    num_speculations: Annotated[int, Field(ge=1, le=MAX_SPECULATIONS), BeforeValidator(_whole)] | None = Field(
        None, description="k: drafts per verification"
    )

    @property
    def stop_strings(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def top_logprobs_n(self) -> int | None:
        """Alternatives per token when logprobs are asked for, else None."""
        return None


TokenIds = Annotated[list[TokenId], Field(min_length=1)]
Prompts = (
    NonEmpty
    | Annotated[list[NonEmpty], Field(min_length=1, max_length=MAX_CHOICES)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_CHOICES)]
)


class CompletionRequest(GenerationRequest):
    prompt: Prompts = Field(description="a string, a list of strings, token ids, or a list of token-id lists")
    max_tokens: Annotated[int, Field(ge=0), BeforeValidator(_whole)] | None = Field(
        None, description="0 (with echo) only scores the prompt"
    )
    echo: bool = Field(False, description="return the prompt before the completion (with logprobs: its scores)")
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), BeforeValidator(_whole)] | None = Field(
        None, description="log-probabilities of each token and of this many alternatives"
    )
    best_of: Annotated[int, Field(ge=1, le=MAX_CHOICES), BeforeValidator(_whole)] | None = Field(
        None, description="only equal to n"
    )
    suffix: _only_default(None, "")

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, best_of: int | None, info: ValidationInfo) -> int | None:
        if best_of is not None and best_of != info.data.get("n", 1):
            raise ValueError("only best_of equal to n is supported (we do not rank candidates)")
        return best_of

    @property
    def prompts(self) -> list[str] | list[list[int]]:
        """Every prompt of the request: strings, or token-id lists."""
        p = self.prompt
        if isinstance(p, str) or isinstance(p[0], int):
            return [p]  # type: ignore[list-item]
        return p  # type: ignore[return-value]

    @property
    def top_logprobs_n(self) -> int | None:
        return self.logprobs


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    """A message; an assistant reply sent back as history (the SDK's `message.model_dump()`)
    carries its empty tool and audio fields, accepted at those values."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None
    refusal: _only_default(None)
    tool_calls: _only_default(None, [])
    function_call: _only_default(None)
    audio: _only_default(None)
    annotations: _only_default(None, [])

    def as_template_input(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: PositiveInt | None = Field(None, description="the newer name of max_tokens")
    logprobs: bool | None = Field(None, description="log-probabilities of the generated tokens")
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), BeforeValidator(_whole)] | None = Field(
        None, description="alternatives per token (needs logprobs: true)"
    )
    tools: _only_default(None, [])
    tool_choice: _only_default(None, "none")
    parallel_tool_calls: _only_default(None, True, False)  # no effect without tools
    functions: _only_default(None, [])
    function_call: _only_default(None, "none")
    response_format: _only_default(None, {"type": "text"})
    modalities: _only_default(None, ["text"])
    store: _only_default(None, False)
    metadata: _only_default(None, {})

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, top: int | None, info: ValidationInfo) -> int | None:
        if top and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return top

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def top_logprobs_n(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class TokenizeRequest(_Strict):
    """As vLLM's /tokenize: a prompt, or chat messages rendered by the chat template."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(_Strict):
    model: str | None = None
    tokens: list[TokenId]


# Responses

FinishReason = Literal["stop", "length"]


class ScheduleStretch(BaseModel):
    """Consecutive tokens decoded with one setting; exit_layer None: autoregressive."""

    exit_layer: int | None
    num_speculations: int | None
    draft_vocab_size: int | None
    tokens: int


class SpeculationUsage(BaseModel):
    """This request's draft/verify figures; zeros unless the strategy is self_speculative.
    `exit_layer` is the one that produced most tokens (chosen online unless the request fixed it);
    `exit_layer_schedule` lists the settings the first choice ran, in order."""

    strategy: str
    exit_layer: int | None
    num_speculations: int | None
    exit_layer_schedule: list[ScheduleStretch] = []
    drafted_tokens: int
    accepted_tokens: int
    verifications: int
    acceptance_rate: float
    mean_accepted_length: float


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    speculation: SpeculationUsage


class CompletionLogprobs(BaseModel):
    """The legacy completions shape; with echo the prompt's first token has no logprob (null)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]
    refusal: None = None


class _Envelope(BaseModel):
    """What every response and stream chunk of a generation carries."""

    id: str
    created: int
    model: str
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(_Envelope):
    """Also each chunk of a stream (then `usage` is only on the last one, with include_usage)."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(_Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(_Envelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfo(BaseModel):
    """What clients that tokenize on their own need (lm-eval's remote tokenizer reads it)."""

    model_config = ConfigDict(extra="allow")

    eos_token: str | None
    bos_token: str | None
    pad_token: str | None
    chat_template: str | None
    model_max_length: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "layerskip"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading", "failed"]
    detail: str | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
