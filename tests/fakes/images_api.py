"""A fake OpenAI Images API: a real aiohttp server on 127.0.0.1, strict like the real one.

It refuses what the real API refuses (wrong key, unknown model, a size or quality the model does
not take, ``response_format`` on GPT image models, ``null`` values, unknown fields) with the real
error shapes, and answers like the real one otherwise: with ``"stream": true``, Server-Sent
Events (``partial_images`` partial images, then one completed event per image), paced over its
``latency``. Tests script faults with :meth:`push` (see :func:`stream` for streamed ones).
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from jsonschema import Draft202012Validator
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from PIL import Image, UnidentifiedImageError
from pydantic import TypeAdapter, ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The `usage` an answer reports, from the request's body, the images it covers and the previews
# streamed for each: a test makes it honest (the real tokenizer's count) or broken (nothing).
UsageReport = Callable[[dict[str, Any], int, int], dict[str, Any]]

# The models of the `openai` SDK 3.54.0 (November 2026).
FREE_SIZE_MODELS = {
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
}
XHIGH_MODELS = FREE_SIZE_MODELS - {"gpt-image-2", "gpt-image-2-2026-04-21"}
GPT_IMAGE = FREE_SIZE_MODELS | {
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
    "chatgpt-image-latest",
    "gpt-image-1.5",
    "gpt-image-1",
    "gpt-image-1-mini",
}
# Shut down on OpenAI: a fake made with `retired=OPENAI_RETIRED` answers as OpenAI does today.
OPENAI_RETIRED = frozenset({"gpt-image-1", "dall-e-2", "dall-e-3"})
STANDARD_GPT_SIZES = {"auto", "1024x1024", "1536x1024", "1024x1536"}
SIZES = {
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
}
QUALITIES = {
    "dall-e-2": {"standard", "auto"},
    "dall-e-3": {"standard", "hd", "auto"},
}
GPT_QUALITIES = {"low", "medium", "high", "auto"}
KNOWN_FIELDS = {
    "prompt", "model", "n", "quality", "response_format", "output_format", "output_compression",
    "stream", "partial_images", "size", "moderation", "background", "style", "user",
    "complexity", "frame_count", "frame_duration_ms", "svg", "safety_identifier",
}  # fmt: skip
GPT_ONLY_FIELDS = (
    "output_format", "output_compression", "background", "moderation", "stream", "complexity",
    "frame_count", "frame_duration_ms", "svg",
)  # fmt: skip
PROMPT_LIMIT = {"dall-e-2": 1000, "dall-e-3": 4000}
EVENT_STREAM = "text/event-stream"
NO_BUFFERING = {"Cache-Control": "no-cache"}

# -- chat completions (describe, enhance): bodies checked against the SDK's own request type ------

CHAT_REQUEST = TypeAdapter(CompletionCreateParamsNonStreaming)
CHAT_FIELDS = (
    CompletionCreateParamsNonStreaming.__required_keys__
    | CompletionCreateParamsNonStreaming.__optional_keys__
)
# The text models the fake serves when a test gives it some (`text_models`): the bot's default.
TEXT_MODELS = frozenset({"gpt-5.4-mini", "gpt-4.1-mini"})
IMAGE_TOKENS_LOW = 85  # what a `detail: low` image costs on the tile-counted models


def chat_problem(body: Any) -> str | None:
    """Why the real chat completions endpoint would refuse ``body``, or None."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    unknown = set(body) - CHAT_FIELDS
    if unknown:
        return f"Unrecognized request argument supplied: {', '.join(sorted(unknown))}"
    if any(value is None for value in body.values()):
        return "null is not allowed"
    try:
        CHAT_REQUEST.validate_python(body, strict=True)
    except ValidationError as exc:
        return f"invalid body: {exc.errors()[0]['msg']}"
    for message in body["messages"]:
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            if part.get("type") != "image_url":
                continue
            url = part["image_url"]["url"]
            head, _, data = url.partition(";base64,")
            if not head.startswith("data:image/"):
                return "image_url is not a data URL"
            try:
                Image.open(io.BytesIO(base64.b64decode(data, validate=True))).verify()
            except (ValueError, UnidentifiedImageError):
                return "image_url holds no image"
    return None


def chat_completion(body: dict[str, Any], text: str, usage: dict[str, Any] | None) -> bytes:
    document: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
            }
        ],
    }
    if usage is not None:
        document["usage"] = usage
    return json.dumps(document).encode()


def _chat_images(body: dict[str, Any]) -> int:
    return sum(
        1
        for message in body["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    )


def chat_answer(body: dict[str, Any]) -> str:
    """Four numbered prompts for a description (the bot takes the numbering off), else the
    prompt enhanced."""
    instructions = body["messages"][0]["content"]
    if "four" in instructions:
        return "\n".join(
            f"{n}. A small red square on a white field, flat colour, study {n}" for n in range(1, 5)
        )
    prompt = body["messages"][-1]["content"]
    return f"{prompt}, richly detailed, golden hour light, 35mm film photograph"


def chat_usage(body: dict[str, Any], text: str) -> dict[str, Any]:
    images = _chat_images(body)
    prompt = len(json.dumps(body["messages"])) // 4 - images * 40 + IMAGE_TOKENS_LOW * images
    completion = max(len(text) // 4, 1)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"image_tokens": IMAGE_TOKENS_LOW * images, "cached_tokens": 0},
    }


# -- edits: the multipart form, checked against the OpenAPI spec's CreateImageEditRequest -------

SPEC_PATH = Path(__file__).parent.parent / "data" / "openai-images.openapi.json"
# The SDK (3.54) added these after the spec: checked by the fake's own rules, not the schema.
EDIT_FIELDS_NEWER_THAN_SPEC = {
    "complexity", "frame_count", "frame_duration_ms", "safety_identifier", "markup", "svg",
}  # fmt: skip
EDIT_VALUES_NEWER_THAN_SPEC = {
    ("quality", "xhigh"), ("quality", "max"), ("output_format", "gif"), ("output_format", "svg"),
}  # fmt: skip
EDIT_INTEGERS = {"n", "output_compression", "partial_images", "frame_count", "frame_duration_ms"}
EDIT_FILES = ("image", "image[]", "mask", "markup")
# Which models take which `input_fidelity` (the SDK: high and low on gpt-image-1.5,
# only low on gpt-image-1-mini, omitted for gpt-image-2 and later).
INPUT_FIDELITIES = {"gpt-image-1.5": {"high", "low"}, "gpt-image-1": {"high", "low"}}
INPUT_FIDELITIES["gpt-image-1-mini"] = {"low"}
MAX_INPUT_BYTES = {"dall-e-2": 4 * 1024 * 1024}
GPT_INPUT_BYTES = 50 * 1024 * 1024
MAX_MASK_BYTES = 4 * 1024 * 1024


def _edit_validator() -> Draft202012Validator:
    spec = json.loads(SPEC_PATH.read_text())
    registry = Registry().with_resource("spec", DRAFT202012.create_resource(spec))
    return Draft202012Validator(
        {"$ref": "spec#/components/schemas/CreateImageEditRequest"}, registry=registry
    )


EDIT_SCHEMA = json.loads(SPEC_PATH.read_text())["components"]["schemas"]["CreateImageEditRequest"]
EDIT_VALIDATOR = _edit_validator()


@dataclass(frozen=True)
class FormFile:
    """A file part of a multipart form, as received."""

    field: str
    filename: str
    content_type: str
    data: bytes


def edit_form_problem(fields: dict[str, Any]) -> tuple[str, str | None] | None:
    """Why a received edit form breaks the contract (message, param), or None. ``fields`` has
    text fields as strings and files as lists of :class:`FormFile`."""
    known = set(EDIT_SCHEMA["properties"]) | EDIT_FIELDS_NEWER_THAN_SPEC | {"image[]"}
    for key in fields:
        if key not in known:
            return f"Unknown parameter: '{key}'.", key
    typed: dict[str, Any] = {}
    for key, value in fields.items():
        if key in EDIT_FILES:
            typed[key] = "<binary>" if key != "image[]" else ["<binary>"] * len(value)
        elif isinstance(value, list):
            return f"Duplicate parameter: '{key}'.", key
        elif key in EDIT_INTEGERS:
            try:
                typed[key] = int(value)
            except ValueError:
                return f"Invalid type for '{key}': expected an integer.", key
        elif key == "stream":
            if value not in ("true", "false"):
                return "Invalid type for 'stream': expected a boolean.", key
            typed[key] = value == "true"
        else:
            typed[key] = value
    if "image[]" in typed:
        if "image" in typed:
            return "Give either 'image' or 'image[]', not both.", "image"
        typed["image"] = typed.pop("image[]")
    # The schema knows the August spec; the SDK's newer fields and values are checked elsewhere.
    checked = {
        key: value
        for key, value in typed.items()
        if key not in EDIT_FIELDS_NEWER_THAN_SPEC
        and not (isinstance(value, str) and (key, value) in EDIT_VALUES_NEWER_THAN_SPEC)
    }
    error = next(iter(EDIT_VALIDATOR.iter_errors(checked)), None)
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or None
        return f"Invalid request: {error.message}", where
    return None


def _read_input(data: bytes) -> tuple[str, int, int, bool] | None:
    """Format, width, height and whether it has alpha, or None if it is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            return (image.format or "").lower(), image.width, image.height, alpha
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=body, content_type="application/json", headers=headers or {}
    )


def make_image(width: int, height: int, fmt: str = "png", shade: int = 0) -> bytes:
    """A solid-colour image of the given size; ``shade`` makes images of one batch differ."""
    colour = ((40 + 70 * shade) % 256, (90 + 30 * shade) % 256, 160)
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt.upper())
    return buffer.getvalue()


def incompressible_png(width: int, height: int) -> bytes:
    """Random pixels: a PNG as large as a detailed rendering's, which re-encoding hardly shrinks."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def make_gif(width: int, height: int, frames: int, duration: int = 200) -> bytes:
    """An animated GIF: ``frames`` solid frames of changing colour."""
    images = [
        Image.new("RGB", (width, height), ((30 * i) % 256, 120, 200)).convert("P")
        for i in range(frames)
    ]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
    )
    return buffer.getvalue()


def make_svg(width: int, height: int) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<rect width="{width}" height="{height}" fill="#3a7"/>'
        f'<circle cx="{width // 2}" cy="{height // 2}" r="{min(width, height) // 3}" '
        f'fill="#fc3"/></svg>'
    ).encode()


def _gpt_size_problem(model: str, size: str) -> bool:
    if size in STANDARD_GPT_SIZES:
        return False
    if model not in FREE_SIZE_MODELS:
        return True
    try:
        width, height = (int(part) for part in size.split("x"))
    except ValueError:
        return True
    return bool(
        width % 16
        or height % 16
        or max(width, height) > 3840
        or width * height > 3840 * 2160
        or max(width, height) / min(width, height) > 3
    )


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeImagesAPI:
    api_key: str = "test-key"
    latency: float = 0.0  # seconds before every generation answer
    image_bytes: bytes | None = None  # serve these bytes for every image instead of drawing one
    models_route: bool = True  # some gateways have no GET /models
    retired: frozenset[str] = frozenset()  # models answered as not found (OPENAI_RETIRED)
    gif_access: bool = True  # does the key have the GIF preview?
    svg_access: bool = True
    requests: list[RecordedRequest] = field(default_factory=list)
    served: list[bytes] = field(default_factory=list)  # every image served, in order
    served_partials: list[bytes] = field(default_factory=list)  # every partial image streamed
    partial_bytes: bytes | None = None  # serve these bytes for every partial image
    script: deque[Handler] = field(default_factory=deque)
    base_url: str = ""
    stream_pause: float = 0.0  # seconds between streamed events (when latency is 0)
    in_flight: int = 0  # generation requests being answered right now
    usage_report: UsageReport | None = None  # None: the fixed counts of fixed_usage
    peak_in_flight: int = 0
    moderations_route: bool = True  # some gateways have no POST /moderations
    # Words whose presence in a moderated text scores these categories (as OpenAI would).
    moderation_words: dict[str, dict[str, float]] = field(
        default_factory=lambda: dict(MODERATION_WORDS)
    )
    # An image (its bytes) that scores these categories when it is moderated.
    moderation_images: dict[bytes, dict[str, float]] = field(default_factory=dict)
    moderation_script: deque[Handler] = field(default_factory=deque)  # faults of /moderations
    text_models: frozenset[str] = frozenset()  # listed and served by chat/completions
    chat_script: deque[Handler] = field(default_factory=deque)  # faults for chat/completions
    _runner: web.AppRunner | None = None
    _files: dict[str, bytes] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _image_cache: dict[tuple[int, int, str, int], bytes] = field(default_factory=dict)

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Listen on ``host`` (loopback unless a bot in a container must reach it)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/images/generations", self._generations)
        app.router.add_post("/v1/images/edits", self._edits)
        app.router.add_post("/v1/chat/completions", self._chat)
        if self.models_route:
            app.router.add_get("/v1/models", self._models)
        if self.moderations_route:
            app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{host}:{port}/v1"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def push(self, *handlers: Handler) -> None:
        """Answer the next generation requests with these handlers, in order."""
        self.script.extend(handlers)

    @property
    def generation_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/images/generations")]

    @property
    def moderation_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/moderations")]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def edit_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/images/edits")]

    def file_url(self, data: bytes) -> str:
        name = f"img-{next(self._ids)}"
        self._files[name] = data
        return self.base_url.removesuffix("/v1") + f"/files/{name}"

    # -- handlers ------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return json_response(
                401,
                error_body(
                    "Incorrect API key provided: sk-abc***xyz. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
            )
        return None

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(RecordedRequest("GET", request.path, dict(request.headers), None))
        refused = self._authorised(request)
        if refused is not None:
            return refused
        names = sorted((GPT_IMAGE | set(SIZES) | self.text_models) - self.retired)
        data = [{"id": name, "object": "model", "owned_by": "openai"} for name in names]
        return json_response(200, json.dumps({"object": "list", "data": data}).encode())

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's POST /moderations: ``input`` a string, strings, or text and image_url
        parts (images as data URLs); one result per input string, or one for a list of parts."""
        body, refused = await self._received(request)
        if refused is not None:
            return refused
        if self.moderation_script:
            return await self.moderation_script.popleft()(request)
        problem = _moderation_problem(body)
        if problem is not None:
            return self._invalid(problem, "input", "invalid_value")
        inputs = body["input"]
        groups = [[inputs]] if isinstance(inputs, str) else [[text] for text in inputs]
        if inputs and not isinstance(inputs, str) and isinstance(inputs[0], dict):
            groups = [inputs]
        results = [self._moderate(group) for group in groups]
        answer: dict[str, Any] = {"id": f"modr-{next(self._ids)}"}
        answer["model"] = body.get("model", MODERATION_MODEL)
        answer["results"] = results
        return json_response(200, json.dumps(answer).encode())

    def _moderate(self, parts: list[Any]) -> dict[str, Any]:
        scores = dict.fromkeys(MODERATION_CATEGORIES, 0.0001)
        applied: dict[str, list[str]] = {c: ["text"] for c in MODERATION_CATEGORIES}
        for part in parts:
            if isinstance(part, str) or part["type"] == "text":
                text = (part if isinstance(part, str) else part["text"]).lower()
                found = [v for w, v in self.moderation_words.items() if w in text.split()]
            else:
                data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                found = [self.moderation_images.get(data, {})]
                for category in MODERATION_IMAGE_CATEGORIES:
                    applied[category] = ["text", "image"]
            for scored in found:
                for category, score in scored.items():
                    scores[category] = max(scores[category], score)
        categories = {c: score >= MODERATION_FLAG for c, score in scores.items()}
        return {
            "flagged": any(categories.values()),
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": applied,
        }

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._received(request)
        if refused is not None:
            return refused
        problem = chat_problem(body)
        if problem is not None:
            return self._invalid(problem, None, "invalid_request_error")
        if body["model"] not in self.text_models:
            return json_response(
                404,
                error_body(
                    f"The model `{body['model']}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                ),
            )
        if self.chat_script:
            return await self.chat_script.popleft()(request)
        text = chat_answer(body)
        answer = chat_completion(body, text, chat_usage(body, text))
        return json_response(200, answer, {"x-request-id": f"req_chat_{next(self._ids)}"})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        data = self._files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/png")

    async def _received(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """A JSON request's body (its bytes where it is not JSON), recorded; and the refusal of
        a wrong key, if any."""
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        self.requests.append(RecordedRequest("POST", request.path, dict(request.headers), body))
        return body, self._authorised(request)

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._received(request)
        if refused is not None:
            return refused
        streamed = isinstance(body, dict) and body.get("stream") is True
        return await self._answer(request, lambda: self._generate(body), streamed=streamed)

    async def _answer(
        self, request: web.Request, answer: Callable[[], web.Response], *, streamed: bool
    ) -> web.StreamResponse:
        """A scripted fault if one is queued, else ``answer()`` after the latency (a stream's
        events spread over it)."""
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.script:
                return await self.script.popleft()(request)
            if self.latency and not streamed:
                await asyncio.sleep(self.latency)
            response = answer()
            if response.content_type != EVENT_STREAM:
                if self.latency and streamed:
                    await asyncio.sleep(self.latency)
                return response
            return await self._paced(request, response)
        finally:
            self.in_flight -= 1

    async def _paced(self, request: web.Request, answer: web.Response) -> web.StreamResponse:
        """Send a stream's events one by one, spread over the latency: the headers at once,
        the last image at the end, as the real service streams."""
        assert isinstance(answer.body, bytes)
        events = [event + b"\n\n" for event in answer.body.split(b"\n\n") if event]
        pause = self.latency / len(events) if self.latency else self.stream_pause
        request_id = answer.headers.get("x-request-id", f"req_{next(self._ids)}")
        return await stream(*events, pause=pause, headers={"x-request-id": request_id})(request)

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        """``POST /images/edits``: a multipart form, checked against the spec, then answered
        like a generation (scripted faults included)."""
        fields: dict[str, Any] = {}
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.filename is not None:
                    received = FormFile(
                        part.name,
                        part.filename,
                        part.headers.get("Content-Type", ""),
                        bytes(await part.read()),
                    )
                    fields.setdefault(part.name, []).append(received)
                elif part.name in fields:
                    fields[part.name] = [fields[part.name], await part.text()]
                else:
                    fields[part.name] = await part.text()
        self.requests.append(RecordedRequest("POST", request.path, dict(request.headers), fields))
        refused = self._authorised(request)
        if refused is not None:
            return refused
        if request.content_type != "multipart/form-data":
            return self._invalid("The edits endpoint takes a multipart form.", None, "")
        streamed = fields.get("stream") == "true"
        return await self._answer(request, lambda: self._edit(fields), streamed=streamed)

    def _edit(self, fields: dict[str, Any]) -> web.Response:
        problem = edit_form_problem(fields)
        if problem is not None:
            return self._invalid(problem[0], problem[1], "invalid_value")
        model = fields.get("model", "gpt-image-1.5")
        if model == "dall-e-3":
            return self._invalid("dall-e-3 does not support image edits.", "model", "invalid_value")
        images: list[FormFile] = fields.get("image", []) + fields.get("image[]", [])
        refused = self._inputs_problem(model, images, fields.get("mask"))
        if refused is not None:
            return refused
        fidelity = fields.get("input_fidelity")
        if fidelity is not None and fidelity not in INPUT_FIDELITIES.get(model, set()):
            return self._invalid(
                f"input_fidelity is not supported for {model}.", "input_fidelity", "invalid_value"
            )
        body: dict[str, Any] = {
            key: value
            for key, value in fields.items()
            if key not in (*EDIT_FILES, "image[]", "input_fidelity")
        }
        for key in EDIT_INTEGERS & body.keys():
            body[key] = int(body[key])
        if "stream" in body:
            body["stream"] = body["stream"] == "true"
        body.setdefault("model", "gpt-image-1.5")
        answer = self._generate(body)
        if answer.content_type == EVENT_STREAM and isinstance(answer.body, bytes):
            # An edit's stream names its events image_edit.*, as the SDK's ImageEditStreamEvent.
            for event in (b"partial_image", b"completed"):
                answer.body = answer.body.replace(
                    b'"image_generation.' + event + b'"', b'"image_edit.' + event + b'"'
                )
        return answer

    def _inputs_problem(
        self, model: str, images: list[FormFile], masks: list[FormFile] | None
    ) -> web.Response | None:
        if not images:
            return self._invalid(
                "Missing required parameter: 'image'.", "image", "missing_required_parameter"
            )
        gpt = model in GPT_IMAGE
        if len(images) > (16 if gpt else 1):
            return self._invalid("Too many images.", "image", "invalid_value")
        first: tuple[str, int, int, bool] | None = None
        for upload in images:
            read = _read_input(upload.data)
            formats = ("png", "jpeg", "webp") if gpt else ("png",)
            if read is None or read[0] not in formats:
                return self._invalid(
                    f"Invalid input image: format must be in {formats}.", "image", "invalid_value"
                )
            if len(upload.data) > MAX_INPUT_BYTES.get(model, GPT_INPUT_BYTES):
                return self._invalid("The input image is too large.", "image", "invalid_value")
            if not gpt and read[1] != read[2]:
                return self._invalid("The image must be square.", "image", "invalid_value")
            first = first or read
        if masks:
            (mask,) = masks
            read = _read_input(mask.data)
            if read is None or read[0] != "png" or not read[3]:
                return self._invalid(
                    "The mask must be a PNG with an alpha channel.", "mask", "invalid_value"
                )
            if first is None or read[1:3] != first[1:3] or len(mask.data) > MAX_MASK_BYTES:
                return self._invalid(
                    "The mask must have the same dimensions as the image.", "mask", "invalid_value"
                )
        return None

    def _invalid(self, message: str, param: str | None, code: str) -> web.Response:
        return json_response(400, error_body(message, "invalid_request_error", code, param))

    def _generate(self, body: Any) -> web.Response:
        if not isinstance(body, dict):
            return self._invalid("We could not parse the JSON body of your request.", None, "")
        for key, value in body.items():
            if key not in KNOWN_FIELDS:
                return self._invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
            if value is None:
                return self._invalid(
                    f"Invalid type for '{key}': expected a value, but got null instead.",
                    key,
                    "invalid_type",
                )
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return self._invalid(
                "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
            )
        model = body.get("model", "dall-e-2")
        gpt = model in GPT_IMAGE
        if model in self.retired:
            return json_response(
                404,
                error_body(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                ),
            )
        if not gpt and model not in SIZES:
            return self._invalid(f"Invalid value: '{model}'.", "model", "invalid_value")
        if len(prompt) > PROMPT_LIMIT.get(model, 32000):
            return self._invalid(
                "Invalid 'prompt': string too long.", "prompt", "string_above_max_length"
            )
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= (1 if model == "dall-e-3" else 10):
            return self._invalid(f"Invalid 'n': {n}.", "n", "invalid_value")
        size = body.get("size", "auto" if gpt else "1024x1024")
        if (gpt and _gpt_size_problem(model, size)) or (not gpt and size not in SIZES[model]):
            return self._invalid(f"Invalid size '{size}' for {model}.", "size", "invalid_size")
        quality = body.get("quality", "auto")
        qualities = QUALITIES.get(model, GPT_QUALITIES)
        if model in XHIGH_MODELS:
            qualities = GPT_QUALITIES | {"xhigh", "max"}
        if quality not in qualities:
            return self._invalid(f"Invalid value: '{quality}'.", "quality", "invalid_value")
        gpt_only = GPT_ONLY_FIELDS
        if gpt and "response_format" in body:
            return self._invalid(
                "Unknown parameter: 'response_format'.", "response_format", "unknown_parameter"
            )
        if not gpt and any(key in body for key in gpt_only):
            key = next(key for key in gpt_only if key in body)
            return self._invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
        if "style" in body and model != "dall-e-3":
            return self._invalid("Unknown parameter: 'style'.", "style", "unknown_parameter")
        if "moderation_blocked" in prompt:  # a test's way to trip the safety system
            return json_response(
                400,
                error_body(
                    "Your request was rejected by the safety system.",
                    "image_generation_user_error",
                    "moderation_blocked",
                ),
            )
        fmt = body.get("output_format", "png") if gpt else "png"
        refused = self._format_problem(body, fmt, n)
        if refused is not None:
            return refused
        width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        items: list[dict[str, Any]] = []
        for index in range(n):
            if fmt == "gif":
                data = self.image_bytes or make_gif(
                    width // 8, height // 8, body.get("frame_count", 9)
                )
            elif fmt == "svg":
                data = self.image_bytes or make_svg(width, height)
            else:
                data = self.image_bytes or self._image(width, height, fmt, index)
            self.served.append(data)
            if not gpt and body.get("response_format", "url") == "url":
                item: dict[str, Any] = {"url": self.file_url(data)}
            else:
                item = {"b64_json": base64.b64encode(data).decode()}
            if model == "dall-e-3":
                item["revised_prompt"] = f"A detailed rendering of {prompt[:100]}"
            items.append(item)
        answer: dict[str, Any] = {"created": int(time.time()), "data": items}
        if gpt:
            answer |= {
                "background": "transparent"
                if body.get("background") == "transparent"
                else "opaque",
                "output_format": fmt,
                "quality": "medium" if quality == "auto" else quality,
                "usage": (self.usage_report or fixed_usage)(body, n, 0),
            }
            if size in STANDARD_GPT_SIZES - {"auto"}:  # the spec's enum knows only these
                answer["size"] = size
        headers = {"x-request-id": f"req_{next(self._ids)}"}
        if body.get("stream") is True:
            return self._event_stream(body, answer, width, height, fmt, headers)
        return json_response(200, json.dumps(answer).encode(), headers)

    def _event_stream(
        self,
        body: dict[str, Any],
        answer: dict[str, Any],
        width: int,
        height: int,
        fmt: str,
        headers: dict[str, str],
    ) -> web.Response:
        """The answer as the stream the real service sends: for each image, its partial images
        (rough renderings of it), then its completed event with that image's usage."""
        partials = body.get("partial_images", 0)
        common = {
            "background": answer["background"],
            "output_format": fmt,
            "quality": answer["quality"],
            "size": body.get("size", "auto"),
        }
        usage = (self.usage_report or fixed_usage)(body, 1, partials)
        events: list[bytes] = []
        for item in answer["data"]:
            for index in range(partials):
                rough = self.partial_bytes or self._image(width, height, fmt, 20 + index)
                self.served_partials.append(rough)
                events.append(partial_event(rough, index, **common))
            events.append(completed_event(item["b64_json"], usage=usage, **common))
        return web.Response(
            body=b"".join(events), content_type=EVENT_STREAM, headers=headers | NO_BUFFERING
        )

    def _format_problem(self, body: dict[str, Any], fmt: str, n: int) -> web.Response | None:
        """The API's rules for GIF and SVG output, and the access they need."""
        if fmt not in ("png", "jpeg", "webp", "gif", "svg"):
            return self._invalid(f"Invalid value: '{fmt}'.", "output_format", "invalid_value")
        for key in ("frame_count", "frame_duration_ms"):
            if key in body and fmt != "gif":
                return self._invalid(f"'{key}' requires output_format=gif.", key, "invalid_value")
        if "svg" in body and fmt != "svg":
            return self._invalid("'svg' requires output_format=svg.", "svg", "invalid_value")
        if fmt not in ("gif", "svg"):
            return None
        if not (self.gif_access if fmt == "gif" else self.svg_access):
            return json_response(
                403,
                error_body(
                    f"Your organization does not have access to {fmt} output for this model.",
                    "invalid_request_error",
                    "feature_access_required",
                    "output_format",
                ),
            )
        if "output_compression" in body or body.get("stream") or body.get("partial_images"):
            return self._invalid(
                f"{fmt} output does not support compression or streaming.",
                "output_format",
                "invalid_value",
            )
        frames = body.get("frame_count", 9)
        if fmt == "gif" and not (isinstance(frames, int) and 2 <= frames <= 16):
            return self._invalid(
                f"Invalid 'frame_count': {frames}.", "frame_count", "invalid_value"
            )
        if fmt == "svg" and n != 1:
            return self._invalid("SVG output requires n=1.", "n", "invalid_value")
        return None

    def _image(self, width: int, height: int, fmt: str, shade: int) -> bytes:
        key = (width, height, fmt, shade)
        if key not in self._image_cache:
            self._image_cache[key] = make_image(width, height, fmt, shade)
        return self._image_cache[key]


MODERATION_MODEL = "omni-moderation-latest"
MODERATION_MODELS = {MODERATION_MODEL, "omni-moderation-2024-09-26", "text-moderation-latest"}
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)  # fmt: skip
# The categories omni-moderation scores from images as well as text (OpenAI's guide).
MODERATION_IMAGE_CATEGORIES = (
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence",
    "violence/graphic",
)  # fmt: skip
MODERATION_FLAG = 0.5  # the score from which the fake flags a category
MODERATION_WORDS: dict[str, dict[str, float]] = {
    "gore": {"violence/graphic": 0.92, "violence": 0.81},
    "kill": {"violence": 0.74},
    "fistfight": {"violence": 0.45},  # scored, not flagged: only a strict policy refuses it
}


def _moderation_problem(body: Any) -> str | None:
    """What OpenAI refuses in a moderation request, as its message (None: it is valid)."""
    if not isinstance(body, dict) or "input" not in body:
        return "Missing required parameter: 'input'."
    unknown = set(body) - {"input", "model"}
    if unknown:
        return f"Unrecognized request argument supplied: {sorted(unknown)[0]}"
    if body.get("model", MODERATION_MODEL) not in MODERATION_MODELS:
        return f"The model `{body.get('model')}` does not exist."
    inputs = body["input"]
    if isinstance(inputs, str):
        return None
    if not isinstance(inputs, list) or not inputs:
        return "Invalid value for 'input'."
    if all(isinstance(text, str) for text in inputs):
        return None
    for part in inputs:
        if not isinstance(part, dict):
            return "Invalid value for 'input'."
        if part.get("type") == "text" and isinstance(part.get("text"), str) and len(part) == 2:
            continue
        url = (
            part.get("image_url", {}).get("url")
            if isinstance(part.get("image_url"), dict)
            else None
        )
        if (
            part.get("type") == "image_url"
            and isinstance(url, str)
            and url.startswith("data:image/")
        ):
            if body.get("model", MODERATION_MODEL) == "text-moderation-latest":
                return "This model does not take images."
            continue
        return "Invalid value for 'input'."
    return None


def fixed_usage(body: dict[str, Any], images: int, partials: int) -> dict[str, Any]:
    """What the fake reports unless told otherwise: 50 text tokens, and 272 output tokens an
    image (gpt-image-1's low 1024x1024) with 100 more a preview."""
    output = (272 + 100 * partials) * images
    return {
        "input_tokens": 50,
        "output_tokens": output,
        "total_tokens": 50 + output,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
    }


# -- scripted faults ---------------------------------------------------------------------------


def respond(
    status: int,
    body: bytes | str,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        data = body.encode() if isinstance(body, str) else body
        return web.Response(status=status, body=data, content_type=content_type, headers=headers)

    return handler


def api_error(
    status: int,
    type_: str,
    code: str | None,
    message: str = "error",
    headers: dict[str, str] | None = None,
) -> Handler:
    return respond(status, error_body(message, type_, code), headers=headers)


def hang(seconds: float = 3600) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(status=500)

    return handler


def cut_off(
    declared: int = 100_000, sent: bytes = b'{"created": 1, "data": [{"b64_json": "iVBO'
) -> Handler:
    """Declare a body of ``declared`` bytes, send ``sent``, then drop the connection."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Content-Length": str(declared)},
        )
        await response.prepare(request)
        await response.write(sent)
        transport = request.transport
        if transport is not None:
            transport.abort()
        return response

    return handler


def reset_before_answer() -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        await asyncio.sleep(0.05)
        return web.Response(status=500)

    return handler


def images_body(*images: bytes, **extra: Any) -> bytes:
    data = [{"b64_json": base64.b64encode(image).decode()} for image in images]
    return json.dumps({"created": int(time.time()), "data": data, **extra}).encode()


# -- streams ------------------------------------------------------------------------------------


def sse(document: dict[str, Any] | bytes, event: str | None = None) -> bytes:
    """One Server-Sent Event: ``event:`` (the document's type unless given) and one data line."""
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    name = event or (document.get("type") if isinstance(document, dict) else None)
    return (f"event: {name}\n".encode() if name else b"") + b"data: " + data + b"\n\n"


def _event_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "background": "opaque",
        "output_format": "png",
        "quality": "medium",
        "size": "1024x1024",
        "created_at": int(time.time()),
    } | fields


def partial_event(image: bytes, index: int, **fields: Any) -> bytes:
    """An ``image_generation.partial_image`` event, as the SDK's ImageGenPartialImageEvent."""
    document = {
        "type": "image_generation.partial_image",
        "b64_json": base64.b64encode(image).decode(),
        "partial_image_index": index,
    }
    return sse(document | _event_fields(fields))


def completed_event(image: bytes | str, **fields: Any) -> bytes:
    """An ``image_generation.completed`` event, as the SDK's ImageGenCompletedEvent."""
    encoded = image if isinstance(image, str) else base64.b64encode(image).decode()
    usage = {
        "input_tokens": 50,
        "output_tokens": 272,
        "total_tokens": 322,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
    }
    document = {"type": "image_generation.completed", "b64_json": encoded, "usage": usage}
    return sse(document | _event_fields(fields))


def error_event(message: str, type_: str, code: str | None) -> bytes:
    """An ``error`` event, with the body of an error answer (what the SDK raises on)."""
    return sse(json.loads(error_body(message, type_, code)), event="error")


def stream(
    *chunks: bytes,
    pause: float = 0.0,
    content_type: str = EVENT_STREAM,
    headers: dict[str, str] | None = None,
    cut: bool = False,
) -> Handler:
    """Answer 200 with these bytes, chunk by chunk (``pause`` seconds apart), chunked; with
    ``cut``, drop the connection after the last instead of ending the stream."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": content_type} | NO_BUFFERING | (headers or {})
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        for index, chunk in enumerate(chunks):
            if index and pause:
                await asyncio.sleep(pause)
            await response.write(chunk)
        if cut:
            await asyncio.sleep(0.05)  # let the last chunk leave before the connection drops
            transport = request.transport
            if transport is not None:
                transport.abort()
            return response
        await response.write_eof()
        return response

    return handler


def flood(
    head: bytes,
    size: int,
    *,
    content_type: str = EVENT_STREAM,
    piece: int = 64 * 1024,
) -> Handler:
    """A hostile answer: 200, ``head``, then ``size`` bytes of base64 letters that never end
    what ``head`` began (one endless event line, or one endless JSON string), then nothing more,
    the connection held open. Each piece is written once the connection has taken the one
    before, so the fake itself holds little: what is in memory is what the client read."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": content_type} | NO_BUFFERING
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(head)
        filler = b"A" * piece
        for _ in range(size // piece):
            await response.write(filler)
        await asyncio.sleep(3600)
        return response

    return handler


async def _serve(port: int, api_key: str) -> None:
    fake = FakeImagesAPI(api_key=api_key)
    await fake.start(port)
    print(f"fake Images API on {fake.base_url} (key: {api_key}); Ctrl-C stops it", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.close()


def main() -> None:
    """``python -m tests.fakes.images_api --port 8080``: try the bot without an OpenAI key."""
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(description="A fake OpenAI Images API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--key", default="fake-key", help="the API key it accepts")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.key))


if __name__ == "__main__":
    main()
