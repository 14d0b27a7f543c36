"""Request and response bodies. Requests are strict (unknown fields are a 422, not silently dropped);
numeric ranges that depend on the server's configured :class:`~.settings.Limits` are checked in
:func:`check_generate` / :func:`check_train` so the message can name the limit."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from .settings import Limits

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
GEN_ID = re.compile(r"^[0-9a-f]{16}$")  # generation and job ids (database.new_id)
MAX_LOGPROBS = 5  # OpenAI's own cap on top_logprobs for completions
OVERRIDE = re.compile(r"^(model|data|train)\.[A-Za-z0-9_.]+=[^\n]{0,200}$")
# Every integer the API takes is bounded in the schema, so an out-of-range number is a 422 and never reaches
# the database (SQLite integers are 64-bit; 2**63 was an OverflowError and a 500).
INT_MAX = 2**31 - 1
JobKind = Literal["train", "generate", "evaluate", "edit"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidationIssue(BaseModel):
    """One problem FastAPI found in a request (where, what, which rule)."""

    model_config = ConfigDict(extra="allow")  # FastAPI adds input, ctx, url
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """Every GenLoop error body: one sentence, or (a request that failed its schema) the list of issues."""

    detail: str | list[ValidationIssue]


_WHY = {
    400: "the body is not valid JSON",
    401: "an API token is required",
    403: "the API token is not valid",
    404: "no such job, generation, run or upload",
    409: "the request conflicts with the current state",
    413: "the request body is over the size cap",
    422: "the request breaks the schema or a limit",
    429: "the job queue is full (see Retry-After)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route or router: each error status it can answer, with the :class:`Problem` body."""
    return {code: {"model": Problem, "description": _WHY[code]} for code in codes}


AUTHED = errors(401, 403, 404, 422)  # every token-checked GenLoop route
WITH_BODY = errors(400, 413)  # routes that read a body


# --- the OpenAI-compatible routes: OpenAI's bodies, errors included ----------------------------------
class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error or server_error")
    param: str | None = Field(description="the request parameter at fault, if one is")
    code: str | None = Field(description="e.g. invalid_api_key, model_not_found, rate_limit_exceeded, job_failed")


class OpenAIErrorBody(BaseModel):
    """Every error of ``/v1/models`` and ``/v1/completions``: OpenAI's envelope, which OpenAI clients read."""

    error: OpenAIErrorDetail


_OPENAI_WHY = {
    400: "invalid parameters (OpenAI's status for them), or a completion job that failed by the request's fault",
    401: "no API token, or a wrong one",
    404: "no such model (code model_not_found)",
    409: "the completion's job was cancelled (x-should-retry: false)",
    413: "the request body is over the size cap",
    429: "the job queue is full (see Retry-After)",
    500: "a server fault; a failed completion job says x-should-retry: false",
    504: "the completion did not finish within the server's completion_timeout (x-should-retry: false)",
}


def openai_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of an OpenAI-compatible route: each error status with :class:`OpenAIErrorBody`."""
    return {code: {"model": OpenAIErrorBody, "description": _OPENAI_WHY[code]} for code in codes}


class ModelEntry(BaseModel):
    """One run in OpenAI's model list, with GenLoop's descriptor of it (``run_id``, ``model``, ``modality``...)."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]
    families: list[str] = Field(description="the model families a training job may name")
    datasets: list[str] = Field(description="the built-in data sets a training job may name")


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: dict[str, Any] | None = Field(description="OpenAI's legacy logprobs object, when asked")
    finish_reason: str | None = Field(description="stop or length; null in a stream's chunks before the last")


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionExtras(BaseModel):
    seed: int = Field(description="the seed sample i used seed + i of (drawn when the request had none)")
    job_ids: list[str]
    generation_ids: list[str]


class CompletionResponse(BaseModel):
    """OpenAI's ``text_completion`` object, plus GenLoop's ``genloop`` key."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage
    genloop: CompletionExtras


COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": CompletionResponse,
        "description": "the completions; with stream=true, server-sent events: text_completion chunks, "
        "then data: [DONE] (an error after the 200 comes as an OpenAIErrorBody event)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **openai_errors(400, 401, 404, 409, 413, 429, 500, 504),
}


MAX_NPROC = 64  # processes one training job may ask a worker for (one per GPU, or CPU processes)


class ChatTurn(Strict):
    """One turn of the conversation a chat reply answers (what its recipe keeps)."""

    role: Literal["system", "user", "assistant"]
    content: str


class GenerateParams(Strict):
    run_id: str = Field(description="the run to sample from (GET /v1/models)", pattern=RUN_ID.pattern)
    checkpoint: Literal["last", "best"] = "last"
    n: int = Field(1, ge=1, le=INT_MAX)
    seed: int = Field(0, ge=0, le=INT_MAX)
    # images
    class_label: int | None = Field(None, ge=0, le=INT_MAX)
    sampler: Literal["ddpm", "ddim", "dpmpp-2m"] | None = None
    steps: int | None = Field(None, ge=1, le=INT_MAX)
    guidance: float | None = Field(None, ge=0, le=50)
    eta: float | None = Field(None, ge=0, le=1)
    # music (temperature and top_p below too)
    bars: int | None = Field(None, ge=1, le=64, description="music: bars per piece")
    key: str | None = Field(None, max_length=16, description="music: e.g. 'F major' (unset: the model draws one)")
    time_signature: str | None = Field(None, max_length=8, pattern=r"^\d{1,2}/\d{1,2}$", description="music: e.g. 3/4")
    style: str | None = Field(None, max_length=32, description="music: a style the model was trained on")
    prompt_midi: str | None = Field(
        None,
        pattern=r"^upload:[0-9a-f]{16}$",
        description="music: an uploaded MIDI file (POST /v1/uploads) whose first prompt_bars bars each piece continues",
    )
    prompt_bars: int | None = Field(None, ge=1, le=63, description="music: bars of prompt_midi to continue")
    # text
    prompt: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=INT_MAX)
    temperature: float | None = Field(None, ge=0, le=10)
    top_k: int | None = Field(None, ge=0, le=INT_MAX)
    top_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, max_length=300, description="token id -> bias in [-100, 100]")
    stop: list[str] | None = Field(None, max_length=8)
    watermark: bool | None = Field(None, description="text: mark with the run store's green-list watermark")
    messages: list[ChatTurn] | None = Field(
        None, max_length=1000, description="chat: the conversation the prompt renders, kept in each reply's recipe"
    )
    # text, what the worker reports besides the texts (OpenAI's completions options)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="score each token; report the top k")
    echo: bool | None = Field(None, description="with logprobs: score the prompt's tokens too")


class TrainParams(Strict):
    model: str = Field(description="a registered family: dcgan, wgan-gp, cgan, vae, beta-vae, cvae, ddpm, gpt")
    data: str | None = Field(None, description="a built-in data set name or upload:<id>")
    steps: int | None = Field(None, ge=1, le=INT_MAX)
    time_budget: float | None = Field(None, gt=0)
    seed: int | None = Field(None, ge=0, le=INT_MAX)
    overrides: list[str] = Field(default_factory=list, max_length=64)
    nproc: int | None = Field(
        None,
        ge=1,
        le=MAX_NPROC,
        description="train data-parallel on this many processes of the worker's machine, under torchrun (default "
        "1: in the worker's own process); train.batch_size stays the global batch and must split evenly",
    )


class EvaluateParams(Strict):
    run_id: str = Field(pattern=RUN_ID.pattern)
    n: int = Field(500, ge=10, le=INT_MAX)
    seed: int = Field(0, ge=0, le=INT_MAX)


UPLOAD = r"^upload:[0-9a-f]{16}$"


class EditParams(Strict):
    """An edit of one uploaded image with a diffusion run (``DiffusionPipeline.edit``)."""

    run_id: str = Field(description="a diffusion run (GET /v1/models)", pattern=RUN_ID.pattern)
    checkpoint: Literal["last", "best"] = "last"
    task: str = Field("inpaint", max_length=32, description="inpaint, inpaint-fast, img2img, ... (a registered task)")
    input: str = Field(pattern=UPLOAD, description="the image to edit: an uploaded image (POST /v1/uploads)")
    mask: str | None = Field(None, pattern=UPLOAD, description="masked tasks: an uploaded mask, white = fill")
    seed: int = Field(0, ge=0, le=INT_MAX)
    steps: int | None = Field(None, ge=1, le=10_000)
    sampler: Literal["ddpm", "ddim", "dpmpp-2m"] | None = None
    class_label: int | None = Field(None, ge=0, le=INT_MAX)
    guidance: float | None = Field(None, ge=0, le=50)
    options: dict[str, int | float | bool | str] = Field(
        default_factory=dict, max_length=16, description='the task\'s own options, e.g. {"strength": 0.6}'
    )


class TrainJob(Strict):
    kind: Literal["train"]
    params: TrainParams
    user: str | None = Field(None, max_length=64)


class GenerateJob(Strict):
    kind: Literal["generate"]
    params: GenerateParams
    user: str | None = Field(None, max_length=64)


class EvaluateJob(Strict):
    kind: Literal["evaluate"]
    params: EvaluateParams
    user: str | None = Field(None, max_length=64)


class EditJob(Strict):
    kind: Literal["edit"]
    params: EditParams
    user: str | None = Field(None, max_length=64)


# The body of POST /v1/jobs: ``kind`` says which params apply, so the OpenAPI document can state them.
JobRequest = Annotated[TrainJob | GenerateJob | EvaluateJob | EditJob, Field(discriminator="kind")]


class RatingRequest(Strict):
    thumbs: Literal[1, -1] | None = None
    stars: int | None = Field(None, ge=1, le=5)
    user: str | None = Field(None, max_length=64)


class PreferenceRequest(Strict):
    chosen_id: str = Field(pattern=GEN_ID.pattern)
    rejected_id: str = Field(pattern=GEN_ID.pattern)
    user: str | None = Field(None, max_length=64)


class StreamOptions(Strict):
    include_usage: bool = False


class CompletionRequest(Strict):
    """OpenAI's ``/v1/completions`` body. Every field OpenAI defines is accepted and honoured, except ``suffix``
    (refused with a 400 when set) and ``user`` (recorded as the job's user); unknown fields are refused."""

    model: str
    prompt: str | list[str] = ""
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=1, le=INT_MAX)
    temperature: float | None = Field(1.0, ge=0, le=10)
    top_p: float | None = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=INT_MAX)  # an extension that text-generation-webui and vLLM accept too
    n: int | None = Field(1, ge=1, le=INT_MAX)
    best_of: int | None = Field(None, ge=1, le=INT_MAX)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool | None = False
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(0.0, ge=-2, le=2)
    frequency_penalty: float | None = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, max_length=300)
    seed: int | None = Field(None, ge=0, le=INT_MAX)
    repetition_penalty: float = Field(1.0, gt=0, le=10)  # an extension, as top_k
    watermark: bool | None = False  # an extension: the run store's green-list text watermark (issue 15)
    user: str | None = Field(None, max_length=64)


def unprocessable(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id or ""):
        raise unprocessable(f"'{run_id}' is not a run id")
    return run_id


def check_generate(p: GenerateParams, limits: Limits) -> None:
    check_run_id(p.run_id)
    if p.n > limits.max_images:
        raise unprocessable(f"n must be at most {limits.max_images} per request, got {p.n}")
    if p.steps is not None and p.steps > limits.max_sampling_steps:
        raise unprocessable(f"steps must be at most {limits.max_sampling_steps}, got {p.steps}")
    if p.max_tokens is not None and p.max_tokens > limits.max_tokens:
        raise unprocessable(f"max_tokens must be at most {limits.max_tokens}, got {p.max_tokens}")
    if p.prompt is not None and len(p.prompt) > limits.max_prompt_chars:
        raise unprocessable(f"the prompt must be at most {limits.max_prompt_chars} characters")


def check_train(p: TrainParams, limits: Limits, datasets: list[str]) -> None:
    if p.steps is None and p.time_budget is None:
        raise unprocessable("a training job needs steps or time_budget")
    if p.steps is not None and p.steps > limits.max_train_steps:
        raise unprocessable(f"steps must be at most {limits.max_train_steps}, got {p.steps}")
    if p.time_budget is not None and p.time_budget > limits.max_train_seconds:
        raise unprocessable(f"time_budget must be at most {limits.max_train_seconds:g} s")
    if p.data is not None and p.data not in datasets and not re.match(r"^upload:[0-9a-f]{16}$", p.data):
        raise unprocessable(
            f"data must be a built-in data set ({', '.join(datasets)}) or upload:<id> from POST /v1/uploads; "
            "paths on the server are not accepted"
        )
    for o in p.overrides:
        key, _, value = o.partition("=")
        path_like = any(c in value for c in "/\\~") or ".." in value
        if (
            not OVERRIDE.match(o)
            or key in ("data.name", "model.init")
            or path_like
            or (key == "data.tokenizer" and value not in ("char", "bpe"))
        ):
            raise unprocessable(f"override '{o}' is not allowed here (section.key=value; no paths, no data.name)")


# --- the gallery: archives of generations, and named presets of generate settings --------------------------


class ArchiveRequest(Strict):
    """The generations to put in one zip (the route checks the count against ``Limits.max_archive``)."""

    ids: list[str] = Field(max_length=10_000, description="generation ids (16 hex digits), each once")


class PresetRequest(Strict):
    """A named preset of generate settings for one model (run)."""

    run_id: str = Field(pattern=RUN_ID.pattern, description="the model (run) the preset belongs to")
    name: str = Field(max_length=256, description="unique per model; 1-64 characters, no control characters")
    params: dict[str, Any] = Field(
        max_length=64,
        description="generate-job params (checkpoint, n, seed and the model's own keys: sampler, steps, guidance, "
        "class_label, prompt, max_tokens, temperature, ...), checked as a generate job's are",
    )
    user: str | None = Field(None, max_length=64)
