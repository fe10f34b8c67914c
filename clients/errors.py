"""Exceptions of the xmargin client, one per kind of gRPC failure.

::

    XmarginClientError               base; .code (grpc.StatusCode), .message, .request_id
    ├── InvalidRequestError          INVALID_ARGUMENT; .violations: which field was bad and why
    ├── NotFoundError                NOT_FOUND (unknown scenario set); .resource
    ├── PreconditionError            FAILED_PRECONDITION; .reason, .advice
    │   └── InfeasibleError          reason INFEASIBLE: the constraints admit no allocation
    ├── OverloadedError              RESOURCE_EXHAUSTED (retried); .retry_delay from the server
    ├── UnavailableError             UNAVAILABLE (retried)
    ├── DeadlineExceededError        DEADLINE_EXCEEDED
    ├── AuthenticationError          UNAUTHENTICATED or PERMISSION_DENIED
    └── ServerError                  INTERNAL, UNKNOWN and anything else

The google.rpc details the server attaches (BadRequest, ErrorInfo, RetryInfo, ResourceInfo)
are unpacked into these attributes by :func:`from_rpc_error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "AuthenticationError",
    "DeadlineExceededError",
    "FieldViolation",
    "InfeasibleError",
    "InvalidRequestError",
    "NotFoundError",
    "OverloadedError",
    "PreconditionError",
    "ServerError",
    "UnavailableError",
    "XmarginClientError",
    "from_rpc_error",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """A bad request field: its proto path (``account.positions[2].lot``) and why."""

    field: str
    description: str


class XmarginClientError(Exception):
    """Base of every error the client raises for a failed call."""

    def __init__(
        self, code: grpc.StatusCode, message: str, request_id: str = "", **details: object
    ) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        self.violations: list[FieldViolation] = list(details.get("violations", []))  # type: ignore[call-overload]
        self.reason = str(details.get("reason", ""))
        self.advice = str(details.get("advice", ""))
        self.resource = str(details.get("resource", ""))
        delay = details.get("retry_delay")
        self.retry_delay: float | None = float(delay) if isinstance(delay, int | float) else None
        super().__init__(f"{code.name}: {message}")


class InvalidRequestError(XmarginClientError):
    """The server rejected the request; ``violations`` name each bad field."""


class NotFoundError(XmarginClientError):
    """A referenced resource (scenario set id@version) is unknown to the server."""


class PreconditionError(XmarginClientError):
    """The request is valid but cannot be answered as posed (``reason``, ``advice``)."""


class InfeasibleError(PreconditionError):
    """The allocation constraints (pins, max_transfers, integrality) admit no allocation."""


class OverloadedError(XmarginClientError):
    """The server is at capacity; retried with backoff before it is raised."""


class UnavailableError(XmarginClientError):
    """The server could not be reached; retried with backoff before it is raised."""


class DeadlineExceededError(XmarginClientError):
    """The call's deadline passed."""


class AuthenticationError(XmarginClientError):
    """Missing or wrong credentials (bearer token, client certificate)."""


class ServerError(XmarginClientError):
    """The server failed (INTERNAL, UNKNOWN or an unexpected status)."""


_BY_CODE: dict[grpc.StatusCode, type[XmarginClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
}


def from_rpc_error(error: grpc.RpcError, request_id: str = "") -> XmarginClientError:
    """The typed exception for a failed call, with its google.rpc details unpacked."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(error)
    details: dict[str, object] = {}
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))  # a failed call is both
    except ValueError:
        status = None
    for any_detail in status.details if status is not None else ():
        if any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_detail.Unpack(bad)
            details["violations"] = [
                FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
        elif any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            details["reason"] = info.reason
            details["advice"] = info.metadata.get("advice", "")
        elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_detail.Unpack(retry)
            details["retry_delay"] = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        elif any_detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            any_detail.Unpack(resource)
            details["resource"] = resource.resource_name
    kind = _BY_CODE.get(code, ServerError)
    if kind is PreconditionError and details.get("reason") == "INFEASIBLE":
        kind = InfeasibleError
    return kind(code, message, request_id, **details)
