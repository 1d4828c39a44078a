"""One error base class (HTTP status + machine-readable code) and the one JSON error shape.

Every 4xx/5xx the service returns is ``{"error": {"code": ..., "message": ...}}``. Messages name
the problem but never echo the upload, a file path or a traceback.
"""

from __future__ import annotations


class ServiceError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def payload(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class UndecodableImage(ServiceError):
    status, code = 400, "undecodable_image"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class RequestTimeout(ServiceError):
    status, code = 408, "request_timeout"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class TooManyPixels(ServiceError):
    status, code = 413, "too_many_pixels"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidParameter(ServiceError):
    status, code = 422, "invalid_parameter"


class NotReady(ServiceError):
    status, code = 503, "not_ready"


class ModelError(Exception):
    """A model file that is missing, unreadable or breaks the contract (stops the start)."""

    def __init__(self, path: object, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem
