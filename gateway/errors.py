"""The gateway's error tree; each class is one HTTP status and one OpenAI ``type``/``code``.

    GatewayError                       500 api_error / internal_error
    ├── InvalidRequest                 400 invalid_request_error / invalid_request
    │   ├── RequestTooLarge            413 invalid_request_error / request_too_large
    │   ├── UnknownURL                 404 invalid_request_error / unknown_url
    │   ├── MethodNotAllowed           405 invalid_request_error / method_not_allowed
    │   └── RequestTimeout             408 invalid_request_error / request_timeout
    ├── AuthenticationFailed           401 invalid_request_error / invalid_api_key
    ├── PermissionDenied               403 permission_denied / permission_denied
    ├── ModelNotFound                  404 invalid_request_error / model_not_found
    ├── NotFound                       404 invalid_request_error / not_found
    ├── Conflict                       409 invalid_request_error / conflict
    ├── Unprocessable                  422 invalid_request_error / validation_error
    ├── RateLimited                    429 rate_limit_exceeded / rate_limit_exceeded
    ├── LimiterUnavailable             503 api_error / limiter_unavailable
    ├── ServerBusy                     503 api_error / server_busy
    ├── LoopDetected                   508 api_error / loop_detected
    ├── UpstreamError                  502 api_error / upstream_error
    │   ├── UpstreamUnavailable        503 api_error / upstream_unavailable
    │   │   ├── UpstreamRefused        503 api_error / upstream_unavailable
    │   │   └── UpstreamOverloaded     503 api_error / upstream_overloaded
    │   └── UpstreamTimeout            504 api_error / upstream_timeout
    └── ClientDisconnected             499 (never sent: the client is gone)

One renderer (``to_body``) turns any of them into OpenAI's
``{"error": {"message", "type", "param", "code"}}``; inside a stream the same body is
one ``data:`` event followed by ``data: [DONE]``. Messages are written for the caller:
never a traceback, an upstream URL, a key or another team's name.
"""

from __future__ import annotations

from typing import ClassVar

from gateway.jsonio import dumps


class StartRefused(Exception):
    """The service must not start as configured; the message says why and what to set.
    Not an HTTP error: the command prints it and exits with status 2."""


class GatewayError(Exception):
    """Base of every error the gateway answers with."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str = "The gateway failed to handle the request.",
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def to_body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error envelope."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        """The envelope as compact JSON bytes."""
        return dumps(self.to_body())


class InvalidRequest(GatewayError):
    """The request is malformed or asks for something the gateway refuses."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class RequestTooLarge(InvalidRequest):
    """The body is larger than ``LGW_MAX_BODY_BYTES``."""

    status = 413
    code = "request_too_large"


class UnknownURL(InvalidRequest):
    """No route has this path."""

    status = 404
    code = "unknown_url"


class MethodNotAllowed(InvalidRequest):
    """The path exists, the method does not."""

    status = 405
    code = "method_not_allowed"


class AuthenticationFailed(GatewayError):
    """No key, a malformed key, or a key that is unknown or revoked."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    """The caller's team may not do this."""

    status = 403
    type = "permission_denied"
    code = "permission_denied"


class ModelNotFound(GatewayError):
    """``model`` names no task that the caller's team can use."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    """An admin object that does not exist, or that the caller may not see."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(GatewayError):
    """The object exists already, or the registry changed under the caller."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class Unprocessable(GatewayError):
    """A well-formed admin request whose content is refused (unknown field, bad reference)."""

    status = 422
    type = "invalid_request_error"
    code = "validation_error"


class RateLimited(GatewayError):
    """A limit of the caller's team or key is exhausted."""

    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """The backend answered with an error or with something that is not its protocol."""

    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """No replica of the pool could be reached."""

    status = 503
    code = "upstream_unavailable"


class UpstreamRefused(UpstreamUnavailable):
    """Nothing listens at the replica's address (connection refused): it is down."""


class UpstreamOverloaded(UpstreamUnavailable):
    """Every replica tried refused the request for load (TGI "Model is overloaded")."""

    code = "upstream_overloaded"


class UpstreamTimeout(UpstreamError):
    """The backend did not answer in time."""

    status = 504
    code = "upstream_timeout"


class ClientDisconnected(GatewayError):
    """The client hung up before the answer; the work was cancelled and nobody reads this."""

    status = 499
    code = "client_closed_request"


class RequestTimeout(InvalidRequest):
    """The request's headers did not arrive within ``LGW_HEADER_TIMEOUT_SECONDS``."""

    status = 408
    code = "request_timeout"


class ServerBusy(GatewayError):
    """The plane holds ``LGW_MAX_CONNECTIONS`` connections, none of them idle."""

    status = 503
    code = "server_busy"


class LoopDetected(GatewayError):
    """The request was sent by a lora-gateway: a pool points back at a gateway."""

    status = 508
    code = "loop_detected"


class LimiterUnavailable(GatewayError):
    """Rate limiting cannot be checked and the team's policy is to fail closed."""

    status = 503
    code = "limiter_unavailable"
