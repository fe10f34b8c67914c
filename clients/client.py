"""``XmarginClient``: a typed client for the xmargin.v1 service.

From a case file to an answer::

    from xmargin.clients import XmarginClient
    with XmarginClient("localhost:50051") as client:
        print(client.optimise("case.json").optimised.total)

Plain, TLS (``root_certificates``), mutual TLS (plus ``client_certificate``/``client_key``)
and a bearer ``token``; a per-call ``timeout`` (the deadline covers every retry); retries with
exponential backoff and full jitter on UNAVAILABLE and RESOURCE_EXHAUSTED only; failures raise
the typed exceptions of :mod:`xmargin.clients.errors`. Needs grpcio and protobuf only.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from . import convert
from .convert import (
    BatchItem,
    CaseLike,
    EligibilityAnswer,
    MarginAnswer,
    OptimiseAnswer,
    WhatIfAnswer,
)
from .errors import XmarginClientError, from_rpc_error
from .explain import ExplainAnswer, explain_answer, explain_request
from .v1 import book_pb2, common_pb2, service_pb2, service_pb2_grpc

__all__ = ["RetryPolicy", "ScenarioSetHandle", "XmarginClient"]

T = TypeVar("T")
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to ``max_attempts`` tries; before try n+1 sleep a uniform random time in
    [0, min(max_backoff, initial_backoff * multiplier**n)] ("full jitter"), at least the
    server's RetryInfo delay, never past the call's deadline."""

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        return rng.uniform(0.0, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class ScenarioSetHandle:
    """A scenario set registered on the server: pass it as ``scenario_set`` to later calls."""

    id: str
    version: int
    fingerprint: str
    scenario_count: int
    factor_count: int

    def message(self) -> book_pb2.ScenarioSetRef:
        return book_pb2.ScenarioSetRef(id=self.id, version=self.version)


def _read(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class XmarginClient:
    """A connection to an xmargin server (see the module docstring).

    Parameters
    ----------
    target
        ``host:port``.
    root_certificates
        PEM (bytes or a path) of the CA that signed the server's certificate: turns on TLS.
    client_certificate, client_key
        PEM of this client's certificate and key, for servers that require mutual TLS.
    token
        Bearer token sent as ``authorization: Bearer TOKEN`` on every call.
    timeout
        Default per-call deadline in seconds (None: no deadline).
    retry
        The retry policy; ``RetryPolicy(max_attempts=1)`` turns retries off.
    channel
        An existing channel to use instead (a test double, or custom options).
    columnar_requests
        ``optimise`` sends the account's instruments and positions as columns
        (``OptimiseRequest.account_columns``): cheaper to build and to read for a large book,
        the same answer. Off by default: a server older than that field would read an empty
        book.
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        root_certificates: bytes | str | Path | None = None,
        client_certificate: bytes | str | Path | None = None,
        client_key: bytes | str | Path | None = None,
        token: str | None = None,
        timeout: float | None = 60.0,
        retry: RetryPolicy | None = None,
        max_message_mb: int = 64,
        channel: grpc.Channel | None = None,
        seed: int | None = None,
        columnar_requests: bool = False,
    ) -> None:
        self.timeout = timeout
        self.columnar_requests = columnar_requests
        self.retry = retry or RetryPolicy()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._rng = random.Random(seed)
        self.attempts = 0  # calls made on the wire, retries included
        if channel is None:
            size = max_message_mb * 1024 * 1024
            options = [
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
            ]
            if root_certificates is not None or client_certificate is not None:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read(root_certificates),
                    private_key=_read(client_key),
                    certificate_chain=_read(client_certificate),
                )
                channel = grpc.secure_channel(target, credentials, options=options)
            else:
                channel = grpc.insecure_channel(target, options=options)
        self._channel = channel
        self._stub = service_pb2_grpc.XmarginServiceStub(channel)

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> XmarginClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        """Call with retries on UNAVAILABLE/RESOURCE_EXHAUSTED inside one overall deadline."""
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        request_id = request.run.request_id
        for attempt in range(self.retry.max_attempts):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.attempts += 1
            try:
                return method(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error, request_id)
                if not self._should_retry(error, attempt, deadline):
                    raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _should_retry(
        self, error: XmarginClientError, attempt: int, deadline: float | None
    ) -> bool:
        if error.code not in RETRYABLE or attempt + 1 >= self.retry.max_attempts:
            return False
        pause = max(self.retry.backoff(attempt, self._rng), error.retry_delay or 0.0)
        if deadline is not None and time.monotonic() + pause >= deadline:
            return False
        time.sleep(pause)
        return True

    @staticmethod
    def _run(
        case: Mapping[str, Any], run_number: int, request_id: str | None
    ) -> common_pb2.RunContext:
        return convert.run_context(case, run_number=run_number, request_id=request_id)

    @staticmethod
    def _scenarios(
        request: Any, case: Mapping[str, Any], scenario_set: ScenarioSetHandle | None
    ) -> None:
        if scenario_set is not None:
            request.scenario_set_ref.CopyFrom(scenario_set.message())
        else:
            request.scenario_set.CopyFrom(convert.case_scenario_set(case))

    def _batch_header(
        self,
        base: Mapping[str, Any],
        scenario_set: ScenarioSetHandle | None,
        run_number: int,
        request_id: str | None,
        options: Mapping[str, Any],
    ) -> service_pb2.OptimiseBatchRequest:
        """A batch request with no accounts: the run, scenario set, models, program and
        options (``base``'s, overridden by ``options``) that every account shares."""
        header = service_pb2.OptimiseBatchRequest(
            run=self._run(base, run_number, request_id),
            models=convert.models_message(base),
            program=convert.program_message(base),
            options=convert.options_message({**base.get("options", {}), **options}),
        )
        self._scenarios(header, base, scenario_set)
        return header

    @staticmethod
    def _batch_items(
        messages: Iterable[Any],
        stream: Any,
        progress: Callable[[BatchItem], None] | None,
        request_id: str,
    ) -> Iterator[BatchItem]:
        """Each response of a batch ``stream`` (``messages``: its responses, read already or
        not) as a :class:`BatchItem`, given to ``progress`` too; the stream is cancelled
        when the caller stops reading."""
        try:
            for message in messages:
                item = convert.batch_item(message)
                if progress is not None:
                    progress(item)
                yield item
        except grpc.RpcError as rpc_error:
            raise from_rpc_error(rpc_error, request_id) from None
        finally:
            stream.cancel()

    # --- RPCs -----------------------------------------------------------------------------

    def optimise(
        self,
        case: CaseLike,
        *,
        scenario_set: ScenarioSetHandle | None = None,
        run_number: int = 1,
        request_id: str | None = None,
        timeout: float | None = None,
        warm_start: OptimiseAnswer | Mapping[str, float] | None = None,
        **options: Any,
    ) -> OptimiseAnswer:
        """Optimise one account; ``options`` override the case's (``integral=True``, ...).

        ``warm_start``: the previous cycle's answer for the same customer (or its allocation,
        XM quantity by instrument id) to start from; the answer is the same, only sooner."""
        data = convert.load_case_dict(case)
        merged = {**data, "options": {**data.get("options", {}), **options}} if options else data
        convert.check_case(merged, scenarios=scenario_set is None)
        request = convert.optimise_request(
            data,
            self._run(data, run_number, request_id),
            scenarios=scenario_set is None,
            columns=self.columnar_requests,
            **options,
        )
        request.columnar_result = True  # cheaper both ends; optimise_answer reads either
        if scenario_set is not None:
            request.scenario_set_ref.CopyFrom(scenario_set.message())
        if warm_start is not None:
            previous = (
                warm_start.allocation if isinstance(warm_start, OptimiseAnswer) else warm_start
            )
            request.warm_start.xm_quantity.update({k: float(v) for k, v in previous.items()})
        response = self._call(self._stub.Optimise, request, timeout)
        return convert.optimise_answer(response.result)

    def optimise_batch(
        self,
        cases: Sequence[CaseLike],
        *,
        shared: CaseLike | None = None,
        scenario_set: ScenarioSetHandle | None = None,
        progress: Callable[[BatchItem], None] | None = None,
        run_number: int = 1,
        request_id: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Iterator[BatchItem]:
        """Optimise many accounts under the scenario set, models, rules and options of
        ``shared`` (default: the first case); yields each account as it finishes.

        A failed account arrives as an item with ``failure`` set. The call is retried only if
        it fails before the first item arrives."""
        books = [convert.load_case_dict(c) for c in cases]
        base = convert.load_case_dict(shared) if shared is not None else (books[0] if books else {})
        merged = {**base, "options": {**base.get("options", {}), **options}} if options else base
        convert.check_case(merged, scenarios=scenario_set is None)
        shared_parts = {k: v for k, v in merged.items() if k not in ("factors", "scenarios")}
        for index, book in enumerate(books):
            own = ("name", "customer", "clearing_member", "instruments", "positions")
            account = {**shared_parts, **{k: book[k] for k in own if k in book}}
            convert.check_case(account, scenarios=False, where=f"cases[{index}].")
        request = self._batch_header(base, scenario_set, run_number, request_id, options)
        for book in books:
            convert.account_book(book, request.accounts.add())  # built in place: no copy
        timeout = self.timeout if timeout is None else timeout

        def first_item(request: Any, timeout: float | None, metadata: Any) -> Any:
            stream = self._stub.OptimiseBatch(request, timeout=timeout, metadata=metadata)
            try:
                head = next(stream)
            except StopIteration:
                return stream, None
            return stream, head

        stream, head = self._call(first_item, request, timeout)
        messages = _chain([head] if head is not None else [], stream)
        yield from self._batch_items(messages, stream, progress, request.run.request_id)

    def explain(
        self,
        case: CaseLike,
        *,
        current_only: bool = False,
        scenario_set: ScenarioSetHandle | None = None,
        run_number: int = 1,
        request_id: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> ExplainAnswer:
        """Why each account margins what it does, at the current allocation and (unless
        ``current_only``) the optimised one, and what each transfer saves (explain.proto)."""
        data = convert.load_case_dict(case)
        run = self._run(data, run_number, request_id)
        request = explain_request(
            data, run, current_only, scenarios=scenario_set is None, **options
        )
        if scenario_set is not None:
            request.scenario_set_ref.CopyFrom(scenario_set.message())
        return explain_answer(self._call(self._stub.Explain, request, timeout))

    def optimise_stream(
        self,
        cases: Iterable[CaseLike],
        *,
        shared: CaseLike | None = None,
        scenario_set: ScenarioSetHandle | None = None,
        progress: Callable[[BatchItem], None] | None = None,
        run_number: int = 1,
        request_id: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Iterator[BatchItem]:
        """Optimise a batch of any size through OptimiseStream: the accounts of ``cases`` (a
        list, or a generator read lazily as the server asks for more) go up one message
        each, and each answer is yielded as it finishes (``item.index`` is the account's place
        in ``cases``). Scenario set, models, rules and options come from ``shared`` (default:
        the first case), or ``scenario_set`` (a registered set; then no case's scenarios go
        up). Not retried: RESOURCE_EXHAUSTED before the first answer means nothing was solved.
        """
        accounts = iter(cases)
        if shared is not None:
            base = convert.load_case_dict(shared)
        else:
            first = next(accounts, None)
            if first is None:
                return
            base = convert.load_case_dict(first)
            accounts = itertools.chain([base], accounts)
        header = self._batch_header(base, scenario_set, run_number, request_id, options)
        timeout = self.timeout if timeout is None else timeout

        def messages() -> Iterator[service_pb2.OptimiseStreamRequest]:
            yield service_pb2.OptimiseStreamRequest(batch=header)
            for case in accounts:
                account = convert.account_book(convert.load_case_dict(case))
                yield service_pb2.OptimiseStreamRequest(account=account)

        self.attempts += 1
        stream = self._stub.OptimiseStream(messages(), timeout=timeout, metadata=self._metadata)
        yield from self._batch_items(stream, stream, progress, header.run.request_id)

    def compute_margin(
        self,
        case: CaseLike,
        *,
        allocation: Mapping[str, float] | None = None,
        scenario_set: ScenarioSetHandle | None = None,
        run_number: int = 1,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> MarginAnswer:
        """Exact margin of ``allocation`` (instrument -> XM quantity; default: the case's
        current ``xm_quantity``), no solve."""
        data = convert.load_case_dict(case)
        convert.check_case(data, scenarios=scenario_set is None)
        if allocation is not None:
            convert.check_allocation(allocation)
        request = service_pb2.ComputeMarginRequest(
            run=self._run(data, run_number, request_id),
            models=convert.models_message(data),
            program=convert.program_message(data),
        )
        convert.account_book(data, request.account)  # built in place: no copy
        if allocation is not None:
            for position in request.account.positions:
                position.xm_quantity = float(allocation.get(position.instrument, 0.0))
        self._scenarios(request, data, scenario_set)
        return convert.margin_answer(self._call(self._stub.ComputeMargin, request, timeout))

    def what_if(
        self,
        case: CaseLike,
        *,
        add_trades: Sequence[Mapping[str, Any]] = (),
        add_instruments: Sequence[Mapping[str, Any]] = (),
        exclude: Sequence[str] = (),
        scenario_set: ScenarioSetHandle | None = None,
        run_number: int = 1,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> WhatIfAnswer:
        """Margin change of adding ``add_trades`` ({"instrument", "quantity"}; instruments not
        in the case go in ``add_instruments``, case-format dicts) and leaving out the positions
        in ``exclude``, and each trade's best placement."""
        data = convert.load_case_dict(case)
        convert.check_case(data, scenarios=scenario_set is None)
        convert.check_trades(add_trades, add_instruments)
        request = service_pb2.WhatIfRequest(
            run=self._run(data, run_number, request_id),
            models=convert.models_message(data),
            program=convert.program_message(data),
            add_instruments=[convert.instrument_message(i) for i in add_instruments],
            add_trades=[convert.position_message(t) for t in add_trades],
            exclude_positions=list(exclude),
        )
        convert.account_book(data, request.account)  # built in place: no copy
        self._scenarios(request, data, scenario_set)
        return convert.what_if_answer(self._call(self._stub.WhatIf, request, timeout))

    def check_eligibility(
        self,
        case: CaseLike,
        *,
        run_number: int = 1,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> EligibilityAnswer:
        """Eligibility of the case's instruments for its clearing member and customer."""
        data = convert.load_case_dict(case)
        convert.check_case(data)
        account = convert.account_book(data)
        request = service_pb2.CheckEligibilityRequest(
            run=self._run(data, run_number, request_id),
            clearing_member=account.clearing_member,
            customer=account.customer,
            instruments=account.instruments,
        )
        return convert.eligibility_answer(self._call(self._stub.CheckEligibility, request, timeout))

    def register_scenario_set(
        self,
        set_id: str,
        case: CaseLike,
        *,
        run_number: int = 1,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> ScenarioSetHandle:
        """Register the case's factors and scenarios (a case dict or file, or a dict with
        ``factors`` and ``scenarios``) under ``set_id``; later calls refer to the handle."""
        data = convert.load_case_dict(case)
        convert.check_scenario_set(data)
        request = service_pb2.RegisterScenarioSetRequest(
            run=self._run(data, run_number, request_id),
            id=set_id,
            scenario_set=convert.case_scenario_set(data),
        )
        response = self._call(self._stub.RegisterScenarioSet, request, timeout)
        return ScenarioSetHandle(
            id=response.ref.id,
            version=response.ref.version,
            fingerprint=response.fingerprint,
            scenario_count=response.scenario_count,
            factor_count=response.factor_count,
        )


def _chain(head: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from head
    yield from rest
