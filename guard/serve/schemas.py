"""Request and response bodies (pydantic): they validate input and make the OpenAPI spec.

Unknown fields are refused (400), except the OpenAI chat parameters a guard ignores (temperature, top_p ...),
which are accepted so that stock clients (OpenAI SDK, LangChain, LiteLLM) work unchanged."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- content parts -------------------------------------------------------------------------------------------
class ImageURL(Strict):
    url: StrictStr
    detail: Optional[StrictStr] = None


class TextPart(Strict):
    type: Literal["text"]
    text: StrictStr


class ImageURLPart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[Union[TextPart, ImageURLPart], Field(discriminator="type")]


# --- /v1/moderations -----------------------------------------------------------------------------------------
class ModerationRequest(Strict):
    input: Union[StrictStr, list[StrictStr], list[ContentPart]] = Field(
        description="a string, a list of strings (one result each) or a list of content parts (one result)")
    model: Optional[StrictStr] = Field(None, description="accepted and ignored: the server's model answers")


class LlamaGuardCategory(BaseModel):
    code: str
    name: str


class LlamaGuardBlock(BaseModel):
    decision: Literal["safe", "unsafe", "indeterminate"]
    categories: list[LlamaGuardCategory]
    p_unsafe: float = Field(description="calibrated probability of 'unsafe' (the model's own softmax without a calibration)")
    blocked: bool
    role: str
    reason: str
    truncation: dict[str, Any] = {}  # guard.runtime.long's record ({}: the whole input fit)
    segments: dict[str, Any] = {}  # guard.runtime.segments' record ({}: no cut of the prompt was judged)


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    llama_guard: LlamaGuardBlock


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


# --- chat ----------------------------------------------------------------------------------------------------
class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[StrictStr, list[ContentPart]]
    name: Optional[StrictStr] = None


class StreamOptions(Strict):
    include_usage: Optional[StrictBool] = None


class ChatRequest(Strict):
    model: StrictStr = Field(description="accepted and ignored: the server's model answers")
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: Optional[StrictBool] = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    stream: Optional[StrictBool] = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = Field(1, ge=1, le=1, description="only 1")
    # accepted and ignored: the guard decodes greedily and stops at its end of turn
    temperature: Optional[Union[StrictFloat, StrictInt]] = None
    top_p: Optional[Union[StrictFloat, StrictInt]] = None
    max_tokens: Optional[StrictInt] = None
    max_completion_tokens: Optional[StrictInt] = None
    stop: Optional[Union[StrictStr, list[StrictStr]]] = None
    seed: Optional[StrictInt] = None
    user: Optional[StrictStr] = None
    frequency_penalty: Optional[Union[StrictFloat, StrictInt]] = None
    presence_penalty: Optional[Union[StrictFloat, StrictInt]] = None
    logit_bias: Optional[dict[str, Union[StrictFloat, StrictInt]]] = None
    metadata: Optional[dict[str, StrictStr]] = None
    store: Optional[StrictBool] = None


class TopLogprob(BaseModel):
    token: str
    bytes: list[int]
    logprob: float


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop"]
    logprobs: Optional[ChoiceLogprobs] = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    llama_guard: LlamaGuardBlock


# --- llama-stack run-shield ----------------------------------------------------------------------------------
class ShieldMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # llama-stack messages carry optional extras (stop_reason, call_id ...)
    role: Literal["system", "user", "assistant", "tool"]
    content: Union[StrictStr, list[dict[str, Any]]]


class RunShieldRequest(Strict):
    shield_id: StrictStr
    messages: list[ShieldMessage] = Field(min_length=1)
    params: Optional[dict[str, Any]] = None


class SafetyViolation(BaseModel):
    violation_level: Literal["info", "warn", "error"]
    user_message: Optional[str] = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RunShieldResponse(BaseModel):
    violation: Optional[SafetyViolation] = None


# --- streaming moderation sessions ---------------------------------------------------------------------------
class StreamCreate(Strict):
    messages: list[ChatMessage] = Field(min_length=1, description="the conversation the streamed response answers (ends with a user turn)")
    check_every: StrictInt = Field(16, ge=1, le=4096, description="check every N response tokens")


class StreamChunk(Strict):
    text: StrictStr


class StreamStats(BaseModel):
    checks: int
    prefilled_tokens: int
    reused_tokens: int


class StreamState(BaseModel):
    id: str
    object: Literal["moderation.stream"] = "moderation.stream"
    final: bool = False
    verdict: Optional[LlamaGuardBlock] = None
    stats: Optional[StreamStats] = None


# --- misc ----------------------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorBody
