"""OpenAI-style error envelopes and the exceptions that become them."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the download child imports HubError and must start fast: no aiohttp
    from aiohttp import web

# The id of the request being served (set by access_log's middleware): every
# envelope the hub makes names it, so a user can quote it and find the log line.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mlx_hub_request_id", default=None
)

# HTTP status → OpenAI error `type`, for statuses we raise ourselves.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    """The OpenAI error type the hub uses for an HTTP status."""
    if status in _TYPES:
        return _TYPES[status]
    return "service_unavailable" if status >= 500 else "invalid_request_error"


def error_body(message: str, status: int, error_type: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` as the reference sends it.

    Inside a request, `request_id` is added too.
    """
    error: dict[str, Any] = {
        "message": message,
        "type": error_type or error_type_for(status),
        "param": None,
        "code": str(status),
    }
    request_id = current_request_id.get()
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def error_response(
    message: str,
    status: int,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An aiohttp JSON response carrying the OpenAI error envelope (and e.g. `Retry-After`)."""
    from aiohttp import web  # loaded already wherever a response is made

    body = error_body(message, status, error_type)
    return web.json_response(body, status=status, headers=headers)


class HubError(Exception):
    """An error a user can hit, carrying the HTTP status it maps to."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type or error_type_for(status)
        # Response headers the error needs, e.g. `Retry-After` on a 429.
        self.headers: dict[str, str] = dict(headers or {})

    def response(self) -> web.Response:
        """This error as an OpenAI envelope response."""
        return error_response(self.message, self.status, self.error_type, self.headers)
