"""How the service reports failures: exceptions -> gRPC status with google.rpc details.

The server's own exceptions (all internal to the server, never seen by a client)::

    ServiceError                  base: carries the status code it maps to
    ├── OverloadedError           no free solver slot -> RESOURCE_EXHAUSTED + RetryInfo
    ├── ScenarioSetNotFoundError  unknown scenario set id/version -> NOT_FOUND + ResourceInfo
    ├── RegistrationLimitExceededError  a client's registered sets at their limit ->
    │                             RESOURCE_EXHAUSTED + QuotaFailure (no RetryInfo)
    ├── DeadlineError             the deadline leaves no time to solve -> DEADLINE_EXCEEDED
    ├── RunConflictError          the run key is stored with another request -> ALREADY_EXISTS
    ├── AuditError                the audit store could not record an answer -> UNAVAILABLE
    ├── EngineError               the batch engine failed (lost scheduler, ...) -> UNAVAILABLE
    └── UnauthenticatedError      missing or wrong bearer token -> UNAUTHENTICATED

and from elsewhere: :class:`~xmargin.server.convert.RequestError` and the library's
``CaseValidationError`` -> INVALID_ARGUMENT + BadRequest (field paths of the request);
request bytes that do not parse as the method's request message -> INVALID_ARGUMENT
(:class:`RequestBytesInterceptor`; grpc's own answer would be INTERNAL);
``InfeasibleError`` -> FAILED_PRECONDITION + ErrorInfo(reason INFEASIBLE); ``SolverError`` ->
FAILED_PRECONDITION + ErrorInfo(reason SOLVER_FAILED); anything else -> INTERNAL.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from xmargin.optimiser import CaseValidationError, InfeasibleError, SolverError
from xmargin.schema import clip

from .convert import RequestError

__all__ = [
    "DOMAIN",
    "AuditError",
    "DeadlineError",
    "EngineError",
    "ErrorReport",
    "HandlerInterceptor",
    "OverloadedError",
    "RegistrationLimitExceededError",
    "RequestBytesInterceptor",
    "RunConflictError",
    "ScenarioSetNotFoundError",
    "ServiceError",
    "UnauthenticatedError",
    "abort",
    "report",
]

DOMAIN = "xmargin.v1"


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL


class OverloadedError(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ScenarioSetNotFoundError(ServiceError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, set_id: str, version: int) -> None:
        self.set_id, self.version = set_id, version
        super().__init__(
            f"scenario set {set_id!r} version {version} is not registered on this server"
        )


class RegistrationLimitExceededError(ServiceError):
    """A RegisterScenarioSet that would take its client past ``--max-client-sets`` or
    ``--max-client-store-mb``: nothing was stored. Retrying does not help; ``why`` is the
    store's account of the limit and usage."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, why: str, limit: str, client: str) -> None:
        self.limit, self.client = limit, client
        flag = "--max-client-sets" if limit == "sets" else "--max-client-store-mb"
        super().__init__(
            f"scenario set not registered: {why} ({flag}). Refer to the sets this client "
            "already registered (the same content under the same id returns its version), or "
            f"ask the server's operator to raise {flag}"
        )


class DeadlineError(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class RunConflictError(ServiceError):
    """The audit store holds an answer for this (business date, cycle, run number, account)
    computed from a different request: a new computation needs a new run number."""

    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, key: dict[str, str], recorded_at: str) -> None:
        self.key, self.recorded_at = key, recorded_at
        super().__init__(
            f"run {key['run_number']} of {key['business_date']} {key['cycle']} is already "
            f"recorded for account {key['account']!r} (at {recorded_at}) with a different "
            "request; send the same request to get the stored answer, or use a new run number"
        )


class AuditError(ServiceError):
    """The audit store failed: the answer is not given out unrecorded (retry)."""

    code = grpc.StatusCode.UNAVAILABLE


class EngineError(ServiceError):
    """The batch engine itself failed (not one account): the batch stops; retry it."""

    code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


@dataclass(slots=True)
class ErrorReport:
    """A failure as the client sees it: code, message, google.rpc detail messages."""

    code: grpc.StatusCode
    message: str
    details: list[Message] = field(default_factory=list)
    violations: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""

    def status(self) -> grpc.Status:
        proto = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in self.details:
            proto.details.add().Pack(detail)
        return rpc_status.to_status(proto)


DETAILS_BYTES = 4096
"""The most a BadRequest detail carries, encoded. It travels base64-encoded in the
``grpc-status-details-bin`` trailer, and gRPC clients refuse trailers above their metadata limit
(8 KiB soft, 16 KiB hard in grpc-core's defaults): a request with thousands of violations then
reached its caller as RESOURCE_EXHAUSTED, not as its INVALID_ARGUMENT. Past the cap, one last
violation at ``<request>`` says how many more there are."""


def _bad_request(violations: list[tuple[str, str]]) -> ErrorReport:
    """INVALID_ARGUMENT with the violations in a BadRequest detail (as many as fit in
    :data:`DETAILS_BYTES`) and the first five in the message."""
    detail = error_details_pb2.BadRequest()
    size = 0
    for listed, (path, why) in enumerate(violations):
        violation = error_details_pb2.BadRequest.FieldViolation(field=path, description=why)
        size += violation.ByteSize() + 3  # the field's tag and length
        if size > DETAILS_BYTES:
            rest = len(violations) - listed
            detail.field_violations.add(
                field="<request>",
                description=f"and {rest} more violations, not listed: the error details are "
                f"capped at {DETAILS_BYTES} bytes so that every gRPC client can read them",
            )
            break
        detail.field_violations.append(violation)
    summary = "; ".join(f"{path}: {why}" for path, why in violations[:5])
    if len(violations) > 5:
        summary += f"; and {len(violations) - 5} more (see the BadRequest details)"
    return ErrorReport(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid request: {summary}",
        [detail],
        violations=violations,
        reason="INVALID_ARGUMENT",
    )


def report(error: BaseException, retry_after: float = 0.2) -> ErrorReport:
    """The status a failure maps to (see the module docstring)."""
    if isinstance(error, RequestError):
        return _bad_request(error.violations)
    if isinstance(error, CaseValidationError):  # a path the converter did not translate
        return _bad_request([(clip(v.path), v.message) for v in error.violations])
    if isinstance(error, InfeasibleError | SolverError):
        reason = "INFEASIBLE" if isinstance(error, InfeasibleError) else "SOLVER_FAILED"
        info = error_details_pb2.ErrorInfo(
            reason=reason, domain=DOMAIN, metadata={"advice": error.advice}
        )
        return ErrorReport(grpc.StatusCode.FAILED_PRECONDITION, str(error), [info], reason=reason)
    if isinstance(error, OverloadedError):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        return ErrorReport(
            error.code,
            str(error) or "server at capacity; retry with backoff",
            [error_details_pb2.RetryInfo(retry_delay=delay)],
            reason="OVERLOADED",
        )
    if isinstance(error, ScenarioSetNotFoundError):
        info = error_details_pb2.ResourceInfo(
            resource_type=f"type.googleapis.com/{DOMAIN}.ScenarioSet",
            resource_name=f"{error.set_id}@{error.version}",
            description="register it with RegisterScenarioSet first",
        )
        return ErrorReport(error.code, str(error), [info], reason="SCENARIO_SET_NOT_FOUND")
    if isinstance(error, RegistrationLimitExceededError):
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=f"client:{error.client}", description=str(error)
                )
            ]
        )
        return ErrorReport(error.code, str(error), [quota], reason="SCENARIO_SET_LIMIT")
    if isinstance(error, RunConflictError):
        info = error_details_pb2.ErrorInfo(
            reason="RUN_ALREADY_RECORDED",
            domain=DOMAIN,
            metadata=error.key | {"recorded_at": error.recorded_at},
        )
        return ErrorReport(error.code, str(error), [info], reason="RUN_ALREADY_RECORDED")
    if isinstance(error, ServiceError):
        return ErrorReport(error.code, str(error), reason=error.code.name)
    return ErrorReport(
        grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__})", reason="INTERNAL"
    )


def abort(context: grpc.ServicerContext, error_report: ErrorReport) -> None:
    """End the call with ``error_report`` (raises, as grpc's abort does)."""
    context.abort_with_status(error_report.status())


@dataclass(frozen=True, slots=True)
class _Unparsable:
    """What the wrapped deserializer hands on when the request bytes do not parse."""

    size: int
    why: str


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception as error:  # DecodeError, RecursionError, ...
            return _Unparsable(len(raw), clip(f"{type(error).__name__}: {error}"))

    return parse


def _refuse(context: grpc.ServicerContext, bad: _Unparsable) -> None:
    why = f"the request is not a valid protobuf message of this method ({bad.why})"
    violation = error_details_pb2.BadRequest.FieldViolation(field="<request>", description=why)
    detail = error_details_pb2.BadRequest(field_violations=[violation])
    abort(
        context,
        ErrorReport(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"invalid request: {bad.size} bytes that do not parse",
            [detail],
            reason="INVALID_ARGUMENT",
        ),
    )


class HandlerInterceptor(grpc.ServerInterceptor):
    """An interceptor that serves each method through :meth:`wrap` (the server's interceptors
    differ only in how they wrap a method's handler)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self.wrap(handler, handler_call_details)

    @abc.abstractmethod
    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        """``handler`` as this interceptor serves the call ``details`` names (``handler``
        itself where the interceptor does not apply)."""


class RequestBytesInterceptor(HandlerInterceptor):
    """Unary-request methods answer INVALID_ARGUMENT (with a BadRequest) to bytes that do not
    parse, instead of grpc's INTERNAL: the deserializer is wrapped so a parse failure reaches
    the handler as a marker, which refuses it."""

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        if handler.request_streaming:
            return handler
        behaviour = handler.unary_stream or handler.unary_unary
        assert behaviour is not None

        def parsed(request: Any, context: grpc.ServicerContext) -> Any:
            """The method's answer (a response, or a response iterator), or INVALID_ARGUMENT
            to bytes that did not parse."""
            if isinstance(request, _Unparsable):
                _refuse(context, request)
            return behaviour(request, context)

        serve = (
            grpc.unary_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return serve(parsed, _lenient(handler.request_deserializer), handler.response_serializer)
