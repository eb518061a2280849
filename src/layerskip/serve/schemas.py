"""Request and response bodies of the OpenAI API subset we serve (they also make the OpenAPI spec).

Requests are strict: wrong types and unknown fields are 400s, not silently coerced or ignored.
`top_k`, `strategy`, `exit_layer` and `num_speculations` are our extensions (the `extra_body`
of the openai client, as with vLLM).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from layerskip.generation.config import STRATEGIES

MAX_STOP_STRINGS = 4  # as OpenAI
MAX_SPECULATIONS = 64  # the exit-query cache holds k + 1 states per request


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _whole(value: object) -> object:
    """JSON Schema counts 3.0 as an integer, so we do; "3" and 3.5 stay errors."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_whole)]
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_whole)]  # bounds inside: they reach the spec


class StreamOptions(_Strict):
    include_usage: bool = False


NonEmpty = Annotated[str, Field(min_length=1)]


class GenerationRequest(_Strict):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str
    max_tokens: PositiveInt | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy; unset: the server's default")
    top_p: float | None = Field(None, gt=0, le=1)
    n: Annotated[int, Field(ge=1, le=1), BeforeValidator(_whole)] = Field(1, description="only 1")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOP_STRINGS)] | None = None
    seed: Int | None = Field(None, description="any integer (taken modulo 2**64)")
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


class CompletionRequest(GenerationRequest):
    prompt: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=1)] = Field(
        description="a string, or a list of exactly one string"
    )

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_template_input(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: PositiveInt | None = Field(None, description="the newer name of max_tokens")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# Responses

FinishReason = Literal["stop", "length"]


class SpeculationUsage(BaseModel):
    """This request's draft/verify figures; zeros unless the strategy is self_speculative."""

    strategy: str
    exit_layer: int | None
    num_speculations: int | None
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


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    """Also each chunk of a stream (then `usage` is only on the last one, with include_usage)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


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
