"""The pictures in a request, whichever way they came: multipart ``file`` fields, the raw body,
or JSON ``{"images": [base64 or data URL, ...]}``. Returns bytes; decoding is imaging's job.

The body-size limit has already been applied while it streamed in (service/edge.py).
"""

from __future__ import annotations

import base64
import binascii
import json

from pydantic import ValidationError
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .errors import BadRequest, InvalidParameter, PayloadTooLarge, UndecodableImage
from .schemas import ClassifyJSON

FIELD = "file"
HOW = (
    "send the picture as multipart field 'file', as the raw request body, "
    'or as JSON {"images": ["<base64>"]}'
)

# OpenAPI description of the three accepted bodies (the route reads the request itself).
REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    FIELD: {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One or more pictures (repeat the field).",
                    }
                },
                "required": [FIELD],
            }
        },
        "application/json": {"schema": ClassifyJSON.model_json_schema()},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _too_many(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"too many pictures: at most {limit} per request")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_pictures(request: Request, max_images: int) -> list[bytes]:
    media = _media_type(request)
    if media == "multipart/form-data":
        pictures = await _from_multipart(request, max_images)
    elif media == "application/json" or media.endswith("+json"):
        pictures = _from_json(await request.body(), max_images)
    else:
        # Raw body. The content type is not trusted either way: imaging sniffs the bytes.
        body = await request.body()
        pictures = [body] if body else []
    if not pictures:
        raise InvalidParameter(f"the request has no picture: {HOW}")
    return pictures


async def _from_multipart(request: Request, max_images: int) -> list[bytes]:
    # Starlette's parser takes a body cut short for one without the last part, and leaks that
    # part's temporary file: say what is wrong instead, before parsing (the body is in memory
    # anyway, at most max_upload_bytes; the parser then reads it from there).
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    body = await request.body()
    if boundary and body and b"--" + boundary + b"--" not in body:
        raise BadRequest("the multipart body is incomplete: its closing boundary is missing")
    try:
        form = await request.form(max_files=max_images, max_fields=max_images + 16)
    except HTTPException as exc:  # Starlette's parser reports limits and syntax this way
        if "Too many files" in str(exc.detail):
            raise _too_many(max_images) from None
        raise BadRequest(f"the multipart body could not be parsed ({exc.detail})") from None
    try:
        parts = form.getlist(FIELD)
        if any(not isinstance(p, UploadFile) for p in parts):
            raise InvalidParameter(f"multipart field '{FIELD}' must be a file, not text")
        return [await p.read() for p in parts if isinstance(p, UploadFile)]
    finally:
        await form.close()


def _from_json(body: bytes, max_images: int) -> list[bytes]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # also bad UTF-8, 4300+ digit integers, deep nesting
        raise InvalidParameter("the JSON body is not valid JSON") from None
    try:
        payload = ClassifyJSON.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise InvalidParameter(f"JSON field {where}: {err['msg']}") from None
    if len(payload.images) > max_images:
        raise _too_many(max_images)
    return [_decode_base64(text, i, len(payload.images)) for i, text in enumerate(payload.images)]


def _decode_base64(text: str, index: int, count: int) -> bytes:
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise UndecodableImage(f"picture {index + 1} of {count} is not a base64 data URL")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise UndecodableImage(f"picture {index + 1} of {count} is not valid base64") from None
