"""Errors a client can see, and the one place they become OpenAI's error JSON.

Every failure that reaches a client is an :class:`APIError` (or is turned into one by
:func:`error_response`). Its shape is OpenAI's::

    {"error": {"message": str, "type": str, "param": str | None, "code": str | None}}

Hierarchy::

    APIError                      status, type, code, param
    ├── InvalidRequest            400 invalid_request_error   (bad JSON, wrong types, bad values)
    │   └── ContextLengthExceeded 400 code=context_length_exceeded
    ├── AuthenticationFailed      401 authentication_error
    ├── PermissionDenied          403 permission_error
    ├── NotFound                  404 invalid_request_error   (model_not_found, ...)
    ├── Conflict                  409 invalid_request_error   (the target cannot do that now)
    ├── PayloadTooLarge           413 invalid_request_error
    ├── RateLimited               429 rate_limit_error         (+ Retry-After)
    ├── UpstreamError             502 upstream_error           (connect failure, broken stream)
    ├── ServiceUnavailable        503 service_unavailable      (+ Retry-After; cold pool, queue full)
    └── UpstreamTimeout           504 timeout_error
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class APIError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(APIError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(APIError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(APIError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(APIError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(APIError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class ServiceUnavailable(APIError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class UpstreamTimeout(APIError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


def error_response(exc: BaseException, request_id: str | None = None) -> Response:
    """Turn any exception into an OpenAI-shaped response; unknown ones become a bare 500 message."""
    if not isinstance(exc, APIError):
        exc = APIError("internal error" + (f" (request {request_id})" if request_id else ""))
    headers = dict(exc.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return Response(exc.to_bytes(), status_code=exc.status, headers=headers, media_type="application/json")
