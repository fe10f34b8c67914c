"""The XmarginService implementation: thin adapters over the optimiser library.

Each compute RPC (Optimise, OptimiseBatch, ComputeMargin, WhatIf) runs in the bounded, fair
:class:`~.solver_pool.SolverPool` of solver threads, as its client's work. A call that finds
every slot taken gets RESOURCE_EXHAUSTED at once. The call's deadline bounds the solver's time
limit.

OptimiseBatch runs through a batch engine (:mod:`.batching`): the solver threads by default, or
a process pool or Dask (``--batch-engine``), which then hold one slot for the whole batch. With
an audit store (``--audit``) Optimise and each batch account are recorded (:mod:`.recorder`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import numpy as np

from xmargin.clients.v1 import (
    book_pb2,
    common_pb2,
    explain_pb2,
    result_pb2,
    service_pb2,
    service_pb2_grpc,
)
from xmargin.optimiser import (
    Book,
    CaseValidationError,
    Position,
    WarmStart,
    attribute,
    build_problem,
    default_rulebook,
    evaluate,
    evaluate_eligibility,
    optimise,
    parse_case,
)
from xmargin.optimiser.batch import (
    AccountError,
    AccountOutcome,
    BatchAccount,
    SharedInputs,
    split_case,
)
from xmargin.optimiser.case_format import vectors_in_bounds
from xmargin.optimiser.results import OptimisationResult
from xmargin.optimiser.what_if import Placement, WhatIfResult, what_if
from xmargin.schema import clip

from .batch_stream import StreamRun, duplicate_ids
from .batching import (
    DEADLINE_RESERVE,
    MIN_SOLVE_SECONDS,
    AnswerTally,
    BatchEngines,
    ProtoSolve,
    SolverPoolEngine,
    error_proto,
    solve_budget,
)
from .cancellation import current_call, run_in_pool
from .cancellation import remaining as _remaining
from .convert import (
    CaseDict,
    FieldPaths,
    Limits,
    RequestError,
    ResolvedScenarios,
    add_eligibility,
    attribution_to_proto,
    book_case,
    check_backend,
    check_run,
    customer_case,
    cycle_name,
    describe_violation,
    eligibility_reasons,
    instrument_case,
    member_case,
    parse,
    position_case,
    result_to_proto,
    rows_to_columns,
    scenario_set_case,
    state_to_proto,
)
from .errors import (
    EngineError,
    ServiceError,
    abort,
    report,
)
from .explain_convert import explain_response
from .recorder import Recorder
from .scenario_store import (
    RegisteredSet,
    ScenarioRegistry,
    check_set_id,
    client_identity,
    get_scenario_set,
    list_scenario_sets,
)
from .solver_pool import SolverPool

__all__ = [
    "DEADLINE_RESERVE",
    "MIN_SOLVE_SECONDS",
    "ScenarioRegistry",
    "XmarginServicer",
]

log = logging.getLogger("xmargin.server")
T = TypeVar("T")


def _minimal_case(run: common_pb2.RunContext, scenarios: ResolvedScenarios) -> dict[str, Any]:
    """A case with no positions: parse_case then validates only the shared parts."""
    model = {"confidence": 0.99, "horizon_days": 1.0}
    return {
        "business_date": run.business_date,
        "cycle": "EOD",
        "clearing_member": {"id": "-"},
        "customer": {"id": "-", "ficc_account_type": "NONE"},
        "factors": scenarios.factors,
        "scenarios": {"ids": scenarios.ids, "shocks": scenarios.shocks},
        "instruments": [],
        "positions": [],
        "models": {"FICC": model, "CME": model},
    }


class XmarginServicer(service_pb2_grpc.XmarginServiceServicer):
    """The service. Unary handlers go through :meth:`_unary` (errors -> status, log line); the
    compute RPCs do all their work, conversion and validation included, in the solver pool, so
    a full server refuses a call before spending anything on it."""

    def __init__(
        self,
        pool: SolverPool,
        registry: ScenarioRegistry | None = None,
        limits: Limits | None = None,
        engines: BatchEngines | None = None,
        recorder: Recorder | None = None,
        stream_window: int = 0,
        default_deadline: float | None = None,
    ) -> None:
        self.pool = pool
        self.stream_window = stream_window or 2 * pool.workers
        """OptimiseStream: accounts of one call read but not yet answered, at most."""
        self.default_deadline = default_deadline
        """Seconds a unary call without a deadline may run (None: unbounded)."""
        self.registry = registry or ScenarioRegistry()
        self.limits = limits or Limits()
        self.engines = engines or BatchEngines("threads")
        self.recorder = recorder

    # --- plumbing -------------------------------------------------------------------------

    def _log(self, method: str, request: Any, code: grpc.StatusCode, started: float) -> None:
        run = getattr(request, "run", None)
        log.info(
            json.dumps(
                {
                    "method": method,
                    "request_id": clip(run.request_id) if run is not None else "",
                    "business_date": clip(run.business_date) if run is not None else "",
                    "status": code.name,
                    "duration_ms": round((time.perf_counter() - started) * 1e3, 3),
                }
            )
        )

    @contextmanager
    def _served(
        self, method: str, request: Any, context: grpc.ServicerContext, lost: grpc.StatusCode
    ) -> Iterator[float]:
        """Serve one call (yields its start time): a failure ends it with the status
        :func:`.errors.report` maps it to (INTERNAL logged with its traceback), and one log line
        is written at its end, whose status is ``lost`` when the call ended without error but
        no longer active (the client gone or its deadline passed)."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield started
        except Exception as error:
            error_report = report(error)
            code = error_report.code
            if code is grpc.StatusCode.INTERNAL:
                log.exception("unexpected error in %s", method)
            abort(context, error_report)
            raise AssertionError("unreachable") from error  # abort raises
        finally:
            if code is grpc.StatusCode.OK and not context.is_active():
                code = lost
            self._log(method, request, code, started)

    def _unary(
        self,
        method: str,
        request: Any,
        context: grpc.ServicerContext,
        handler: Callable[[], T],
    ) -> T:
        # a unary call no longer active when it ends: its deadline passed or it was cancelled,
        # and its reply is lost
        with self._served(method, request, context, grpc.StatusCode.DEADLINE_EXCEEDED):
            return handler()

    @staticmethod
    def _deadline(context: grpc.ServicerContext) -> float | None:
        """The call's deadline on the wall clock (``time.time()``); None when it has none. In
        the solver pool, the call's as :func:`.cancellation.run_in_pool` sees it (with the
        server's default deadline for a call that came without one)."""
        call = current_call.get()
        if call is not None:
            return call.wall_deadline()
        remaining = _remaining(context)
        return None if remaining is None else time.time() + remaining

    def _left(self, context: grpc.ServicerContext) -> float | None:
        """Seconds left before :meth:`_deadline`; None when there is none."""
        deadline = self._deadline(context)
        return None if deadline is None else max(0.0, deadline - time.time())

    def _in_pool(self, context: grpc.ServicerContext, work: Callable[[], T]) -> T:
        """Run ``work`` in the solver pool (RESOURCE_EXHAUSTED if full) until it finishes, the
        call ends or its deadline (or the server's default one) passes: then it stops."""
        return run_in_pool(self.pool, context, work, self.default_deadline)

    def _scenarios(self, request: Any) -> ResolvedScenarios:
        which = request.WhichOneof("scenarios")
        if which == "scenario_set":
            return scenario_set_case(request.scenario_set, "scenario_set", self.limits)
        if which == "scenario_set_ref":
            ref = request.scenario_set_ref
            return self.registry.get(ref.id, ref.version).scenarios
        raise RequestError([("scenario_set", "give scenario_set or scenario_set_ref")])

    @staticmethod
    def _field(request: Any, name: str) -> Any:
        return getattr(request, name) if request.HasField(name) else None

    def _case(
        self,
        request: Any,
        account: book_pb2.AccountBook,
        paths: FieldPaths,
        scenarios: ResolvedScenarios,
        with_options: bool = True,
        numpy_vectors: bool = False,
        columns: book_pb2.AccountColumns | None = None,
        rows_on_demand: bool = False,
    ) -> CaseDict:
        """The case-format dict of ``account`` (or of its ``columns``) under the request's
        run, models, program and (``with_options``) options; :func:`~.convert.book_case` says
        the rest."""
        return book_case(
            request.run,
            account,
            scenarios,
            self._field(request, "models"),
            self._field(request, "program"),
            self._field(request, "options") if with_options else None,
            paths,
            self.limits,
            numpy_vectors=numpy_vectors,
            columns=columns,
            rows_on_demand=rows_on_demand,
        )

    @staticmethod
    def _columns(request: Any) -> book_pb2.AccountColumns | None:
        """``request.account_columns`` when given: the columns of ``request.account`` (only an
        OptimiseRequest has the field, and ``account`` is its only account)."""
        if isinstance(request, service_pb2.OptimiseRequest) and request.HasField("account_columns"):
            return request.account_columns
        return None

    def _book(
        self,
        request: Any,
        account: book_pb2.AccountBook,
        paths: FieldPaths,
        scenarios: ResolvedScenarios,
        with_options: bool = True,
        schema_wording: bool = False,
    ) -> Book:
        """The request's validated book, its risk vectors read straight into numpy.
        ``schema_wording``: a request with a vector out of range or not finite is read again
        as lists, so that it is refused as the batch path refuses it: the schema's violations
        in document order, every bad value named (the bulk check names 20 per vector and
        puts the vectors' violations after the others)."""
        columns = self._columns(request)  # an OptimiseRequest's account is its only one
        read = self._case(
            request,
            account,
            paths,
            scenarios,
            with_options,
            numpy_vectors=True,
            columns=columns,
            rows_on_demand=True,
        )
        if schema_wording and read.vectors:
            if vectors_in_bounds(read.vectors):
                read.vectors_checked = True  # parse_case need not check them again
            else:
                read = self._case(request, account, paths, scenarios, with_options, columns=columns)
        book: Book = parse(read, paths, parse_case)
        check_backend(book.options.backend, paths)
        return book

    def _shared_case(self, request: Any, scenarios: ResolvedScenarios) -> dict[str, Any]:
        """The case of ``request`` with a blank account: its shared parts (date, cycle,
        factors, scenarios, models, program, options) as every account sees them."""
        blank = book_pb2.AccountBook(
            customer=book_pb2.Customer(id="-", ficc_account_type="NONE"),
            clearing_member=book_pb2.ClearingMember(id="-"),
        )
        return self._case(request, blank, FieldPaths(), scenarios)

    def _shared_data(self, request: Any, scenarios: ResolvedScenarios) -> dict[str, Any]:
        """The case parts every account of ``request`` shares: the shared inputs of the batch
        engines and the audit."""
        shared, _ = split_case(self._shared_case(request, scenarios))
        return dict(shared)

    def _account(
        self, request: Any, account: book_pb2.AccountBook, label: str, scenarios: ResolvedScenarios
    ) -> BatchAccount:
        """One account's own case parts; ``label`` is its proto path (``accounts[3]``)."""
        columns = self._columns(request)  # an OptimiseRequest's account is its only one
        case = book_case(
            request.run,
            account,
            scenarios,
            None,
            None,
            None,
            FieldPaths(label),
            self.limits,
            columns=columns,
        )
        _, own = split_case(case)
        return BatchAccount(account.customer.id, own, label)

    def _solver(
        self, context: grpc.ServicerContext, request: service_pb2.OptimiseRequest | None = None
    ) -> ProtoSolve:
        """The account solver of a call: its deadline; the result's JSON only for the audit;
        the request's warm start (a unary Optimise's previous allocation), if any."""
        warm_start = None
        if request is not None and request.HasField("warm_start"):
            warm_start = WarmStart(dict(request.warm_start.xm_quantity))
        return ProtoSolve(
            self._deadline(context),
            _optimise,
            answer_json=self.recorder is not None,
            warm_start=warm_start,
        )

    # --- RPCs -----------------------------------------------------------------------------

    def Optimise(  # noqa: N802 (gRPC method names)
        self, request: service_pb2.OptimiseRequest, context: grpc.ServicerContext
    ) -> service_pb2.OptimiseResponse:
        def work() -> service_pb2.OptimiseResponse:
            scenarios = self._scenarios(request)
            solve = self._solver(context, request)
            if self.recorder is None:  # straight to the book: no case parts, no bytes
                paths = FieldPaths()
                book = self._book(request, request.account, paths, scenarios, schema_wording=True)
                response = service_pb2.OptimiseResponse(run=request.run)
                result_to_proto(  # built in place
                    solve.solve_book(book), response.result, columnar=request.columnar_result
                )
                return response
            shared_data = self._shared_data(request, scenarios)
            account = self._account(request, request.account, "account", scenarios)
            run_number = self.recorder.run_number(request.run.run_number)
            shared = SharedInputs.of(shared_data, from_json=True)
            prior = self.recorder.prior(shared, [account], run_number)
            if 0 in prior:
                outcome, error = prior[0]
            else:
                outcome, error = solve.attempt(0, account, shared.data)
                if _recordable(outcome):
                    outcome, error = self.recorder.record(
                        shared, account, outcome, run_number, error
                    )
            if error is not None:
                raise error
            assert outcome.payload is not None
            result = result_pb2.OptimiseResult.FromString(outcome.payload)
            if request.columnar_result:
                rows_to_columns(result)
            return service_pb2.OptimiseResponse(run=request.run, result=result)

        return self._unary("Optimise", request, context, lambda: self._in_pool(context, work))

    def Explain(  # noqa: N802
        self, request: explain_pb2.ExplainRequest, context: grpc.ServicerContext
    ) -> explain_pb2.ExplainResponse:
        def work() -> explain_pb2.ExplainResponse:
            book = self._book(request, request.account, FieldPaths(), self._scenarios(request))
            limit = None
            if not request.current_only:
                limit = solve_budget(self._left(context), book.options.time_limit)
            # runs under the call's stop hook (run_in_pool): its solve stops with the call
            return explain_response(request, book, limit)

        return self._unary("Explain", request, context, lambda: self._in_pool(context, work))

    def ComputeMargin(  # noqa: N802
        self, request: service_pb2.ComputeMarginRequest, context: grpc.ServicerContext
    ) -> service_pb2.ComputeMarginResponse:
        def work() -> service_pb2.ComputeMarginResponse:
            book = self._book(
                request, request.account, FieldPaths(), self._scenarios(request), False
            )
            problem = build_problem(book)
            response = service_pb2.ComputeMarginResponse(
                run=request.run,
                state=state_to_proto(evaluate(problem, problem.current_xm)),
                baseline=state_to_proto(evaluate(problem, np.zeros(problem.n_positions))),
                attribution=attribution_to_proto(attribute(problem, problem.current_xm)),
            )
            add_eligibility(response.eligibility, problem.position_ids, problem.eligibility)
            return response

        return self._unary("ComputeMargin", request, context, lambda: self._in_pool(context, work))

    def WhatIf(  # noqa: N802
        self, request: service_pb2.WhatIfRequest, context: grpc.ServicerContext
    ) -> service_pb2.WhatIfResponse:
        def work() -> service_pb2.WhatIfResponse:
            book, trades = self._what_if_book(request, self._scenarios(request))
            try:
                result = what_if(book, trades, list(request.exclude_positions))
            except CaseValidationError as error:  # the library's names -> the request's fields
                raise RequestError(
                    [
                        (
                            v.path.replace("trades[", "add_trades[", 1).replace(
                                "exclude[", "exclude_positions[", 1
                            ),
                            describe_violation(v.value, v.message),
                        )
                        for v in error.violations
                    ]
                ) from error
            return _what_if(request.run, result)

        return self._unary("WhatIf", request, context, lambda: self._in_pool(context, work))

    def _what_if_book(
        self, request: service_pb2.WhatIfRequest, scenarios: ResolvedScenarios
    ) -> tuple[Book, list[Position]]:
        """The account's book with the added instruments, and the added trades as positions
        (checked as the positions of a book that holds nothing else)."""
        account = request.account
        paths = FieldPaths()
        case = book_case(
            request.run,
            account,
            scenarios,
            self._field(request, "models"),
            self._field(request, "program"),
            None,
            paths,
            self.limits,
            numpy_vectors=True,
        )
        paths.instruments = [f"account.instruments[{k}]" for k in range(len(account.instruments))]
        paths.instruments += [f"add_instruments[{k}]" for k in range(len(request.add_instruments))]
        case["instruments"] += [instrument_case(i) for i in request.add_instruments]
        book: Book = parse(case, paths, parse_case)
        if not request.add_trades:
            return book, []
        case["positions"] = [position_case(trade) for trade in request.add_trades]
        paths.positions = [f"add_trades[{m}]" for m in range(len(request.add_trades))]
        return book, list(parse(case, paths, parse_case).positions)

    def CheckEligibility(  # noqa: N802
        self, request: service_pb2.CheckEligibilityRequest, context: grpc.ServicerContext
    ) -> service_pb2.CheckEligibilityResponse:
        def handle() -> service_pb2.CheckEligibilityResponse:
            check_run(request.run)
            if len(request.instruments) > self.limits.max_positions:
                raise RequestError(
                    [("instruments", f"at most {self.limits.max_positions} instruments")]
                )
            # Eligibility needs no risk: a one-factor dummy scenario set stands in for it.
            case = _minimal_case(
                request.run, ResolvedScenarios(["-"], ["2000-01-03"], [[0.0]], "-")
            )
            case["cycle"] = cycle_name(request.run.cycle)
            case["clearing_member"] = member_case(request.clearing_member)
            case["customer"] = customer_case(request.customer)
            case["instruments"] = [
                instrument_case(i, risk=False) | {"sensitivities": [0.0]}
                for i in request.instruments
            ]
            case["positions"] = [{"instrument": i.id, "quantity": 1.0} for i in request.instruments]
            count = len(request.instruments)
            paths = FieldPaths(account="", echoed_positions=True)
            paths.instruments = [f"instruments[{k}]" for k in range(count)]
            book = parse(case, paths, parse_case)
            rulebook = default_rulebook(book.business_date)
            ids = [p.instrument for p in book.positions]
            response = service_pb2.CheckEligibilityResponse(
                run=request.run,
                rulebook=f"{rulebook.name} (effective {rulebook.effective_date.isoformat()})",
            )
            add_eligibility(response.results, ids, evaluate_eligibility(book, rulebook))
            return response

        return self._unary("CheckEligibility", request, context, handle)

    def RegisterScenarioSet(  # noqa: N802
        self, request: service_pb2.RegisterScenarioSetRequest, context: grpc.ServicerContext
    ) -> service_pb2.RegisterScenarioSetResponse:
        def handle() -> service_pb2.RegisterScenarioSetResponse:
            check_run(request.run)
            check_set_id(request.id)
            if not request.HasField("scenario_set"):
                raise RequestError([("scenario_set", "is required")])
            scenarios = scenario_set_case(request.scenario_set, "scenario_set", self.limits)
            paths = FieldPaths(scenarios="scenario_set", factor_count=len(scenarios.factors))
            parse(_minimal_case(request.run, scenarios), paths, parse_case)
            entry = self.registry.register(request.id, scenarios, client_identity(context))
            return service_pb2.RegisterScenarioSetResponse(
                run=request.run,
                ref=book_pb2.ScenarioSetRef(id=entry.set_id, version=entry.version),
                scenario_count=len(scenarios.ids),
                factor_count=len(scenarios.factors),
                fingerprint=entry.fingerprint,
            )

        return self._unary("RegisterScenarioSet", request, context, handle)

    def GetScenarioSet(  # noqa: N802
        self, request: service_pb2.GetScenarioSetRequest, context: grpc.ServicerContext
    ) -> service_pb2.GetScenarioSetResponse:
        return self._unary(
            "GetScenarioSet", request, context, lambda: get_scenario_set(self.registry, request)
        )

    def ListScenarioSets(  # noqa: N802
        self, request: service_pb2.ListScenarioSetsRequest, context: grpc.ServicerContext
    ) -> service_pb2.ListScenarioSetsResponse:
        return self._unary(
            "ListScenarioSets", request, context, lambda: list_scenario_sets(self.registry, request)
        )

    def preload(self, set_id: str, scenarios: ResolvedScenarios) -> RegisteredSet:
        """Register a scenario set at start-up (``--scenario-set``)."""
        return self.registry.register(set_id, scenarios, "server --scenario-set", limited=False)

    def OptimiseBatch(  # noqa: N802
        self, request: service_pb2.OptimiseBatchRequest, context: grpc.ServicerContext
    ) -> Iterator[service_pb2.OptimiseBatchResponse]:
        with self._served("OptimiseBatch", request, context, grpc.StatusCode.CANCELLED) as started:
            yield from self._batch(request, context, started)

    def OptimiseStream(  # noqa: N802
        self,
        request_iterator: Iterator[service_pb2.OptimiseStreamRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[service_pb2.OptimiseStreamResponse]:
        header = service_pb2.OptimiseBatchRequest()  # filled from the first message, for the log
        with self._served("OptimiseStream", header, context, grpc.StatusCode.CANCELLED) as started:
            yield from self._optimise_stream(request_iterator, context, header, started)

    def _optimise_stream(
        self,
        requests: Iterator[service_pb2.OptimiseStreamRequest],
        context: grpc.ServicerContext,
        header: service_pb2.OptimiseBatchRequest,
        started: float,
    ) -> Iterator[service_pb2.OptimiseStreamResponse]:
        """Check the header (the first message), then stream the accounts (:mod:`.batch_stream`)."""
        first = next(requests, None)
        if first is None:  # a stream of no message is no batch (as OptimiseBatch of no account)
            raise RequestError(
                [("batch", "is required: the first message carries the batch; none was sent")]
            )
        if first.WhichOneof("item") != "batch":
            raise RequestError(
                [("batch", "the first message carries the batch: run, scenarios, models, ...")]
            )
        header.CopyFrom(first.batch)
        if header.accounts:
            raise RequestError([("batch.accounts", "must be empty: one account per message")])
        scenarios, inputs = self._batch_inputs(header)
        recorder = self.recorder
        run_number = 0 if recorder is None else recorder.run_number(header.run.run_number)

        def make_account(book: book_pb2.AccountBook, label: str) -> BatchAccount:
            return self._account(header, book, label, scenarios)

        def prior(account: BatchAccount) -> AccountOutcome | None:
            if recorder is None:
                return None
            found = recorder.prior(inputs, [account], run_number)
            return found[0][0] if found else None

        def finish(account: BatchAccount, outcome: AccountOutcome) -> AccountOutcome:
            if recorder is None or not _recordable(outcome):
                return outcome
            return recorder.record(inputs, account, outcome, run_number)[0]

        run = StreamRun(
            pool=self.pool,
            engines=self.engines,
            solve=self._solver(context),
            inputs=inputs,
            window=self.stream_window,
            run=header.run,
            context=context,
            client=client_identity(context),
            make_account=make_account,
            prior=prior,
            finish=finish,
        )
        yield from run.answers(requests, started)

    def _batch_inputs(
        self, request: service_pb2.OptimiseBatchRequest
    ) -> tuple[ResolvedScenarios, SharedInputs]:
        """A batch's scenario set and shared inputs, built once; the shared parts (models,
        program, options) checked once so that a bad one refuses the whole batch instead of
        failing every account alike."""
        scenarios = self._scenarios(request)
        shared = self._shared_case(request, scenarios)
        paths = FieldPaths(scenarios=scenarios.path, factor_count=len(scenarios.factors))
        shared_book = parse(shared, paths, parse_case)
        check_backend(shared_book.options.backend, paths)
        return scenarios, SharedInputs.of(split_case(shared)[0], from_json=True)

    def _batch(
        self,
        request: service_pb2.OptimiseBatchRequest,
        context: grpc.ServicerContext,
        started: float,
    ) -> Iterator[service_pb2.OptimiseBatchResponse]:
        total = len(request.accounts)
        if not 1 <= total <= self.limits.max_accounts:
            raise RequestError(
                [("accounts", f"must hold 1 to {self.limits.max_accounts} accounts, got {total}")]
            )
        duplicates = duplicate_ids(a.customer.id for a in request.accounts)
        if duplicates:
            raise RequestError(duplicates)
        scenarios, inputs = self._batch_inputs(request)
        run_number = 0
        if self.recorder is not None:
            run_number = self.recorder.run_number(request.run.run_number)
        ready: list[tuple[int, AccountOutcome]] = []  # refused before the engine, or stored
        todo: list[BatchAccount] = []
        where: list[int] = []  # todo position -> index in the request
        for index, account_book in enumerate(request.accounts):
            label = f"accounts[{index}]"
            try:
                todo.append(self._account(request, account_book, label, scenarios))
                where.append(index)
            except RequestError as error:
                failure = AccountError(type(error).__name__, str(error))
                payload = error_proto(error).SerializeToString()
                outcome = AccountOutcome(index, account_book.customer.id, label, None, failure)
                ready.append((index, dataclasses.replace(outcome, payload=payload)))
        if self.recorder is not None:
            prior = self.recorder.prior(inputs, todo, run_number)
            ready += [(where[k], answer) for k, (answer, _) in sorted(prior.items())]
            keep = [k for k in range(len(todo)) if k not in prior]
            todo, where = [todo[k] for k in keep], [where[k] for k in keep]
        yield from self._stream(request, context, started, inputs, todo, where, ready, run_number)

    def _stream(
        self,
        request: service_pb2.OptimiseBatchRequest,
        context: grpc.ServicerContext,
        started: float,
        inputs: SharedInputs,
        todo: list[BatchAccount],
        where: list[int],
        ready: list[tuple[int, AccountOutcome]],
        run_number: int,
    ) -> Iterator[service_pb2.OptimiseBatchResponse]:
        """Admit the batch, run ``todo`` on the engine in a feeder thread (which records each
        outcome), and stream every outcome, ``ready`` first, as it arrives."""
        solve = self._solver(context)
        stop = threading.Event()
        iterator: Iterator[AccountOutcome] = iter(())
        held = False
        if todo and self.engines.threaded:
            engine = SolverPoolEngine(self.pool, solve, stop, client_identity(context))
            iterator = engine.run(todo, inputs)
        elif todo:
            self.pool.hold()  # RESOURCE_EXHAUSTED when the server is full
            held = True
            try:
                iterator = self.engines.make(solve, stop.is_set).run(todo, inputs)
            except BaseException:
                self.pool.release()
                raise
        outcomes: queue.Queue[tuple[int, AccountOutcome] | BaseException | None] = queue.Queue()
        recorder = self.recorder

        def feed() -> None:
            try:
                for item in ready:
                    outcomes.put(item)
                for outcome in iterator:
                    account = todo[outcome.index]
                    if recorder is not None and _recordable(outcome):
                        outcome, _ = recorder.record(inputs, account, outcome, run_number)
                    outcomes.put((where[outcome.index], outcome))
                    if stop.is_set():
                        break
            except BaseException as error:  # the engine itself failed (lost scheduler, ...)
                outcomes.put(error)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
                if held:
                    self.pool.release()
                outcomes.put(None)

        threading.Thread(target=feed, name="xmargin-batch-feed", daemon=True).start()
        context.add_callback(stop.set)  # the call ended (cancelled, deadline): stop the engine
        total = len(request.accounts)
        tally = AnswerTally(started)
        try:
            while True:
                if not context.is_active():
                    return
                try:
                    item = outcomes.get(timeout=0.25)
                except queue.Empty:
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, ServiceError):
                        raise item
                    log.error("batch engine failed", exc_info=item)
                    why = f"{type(item).__name__}: {item}"
                    raise EngineError(f"the batch engine failed ({why}); retry") from item
                index, outcome = item
                message = service_pb2.OptimiseBatchResponse(
                    run=request.run,
                    account_index=index,
                    account_name=request.accounts[index].name
                    or request.accounts[index].customer.id,
                )
                tally.fill(message, outcome, total)
                yield message
        finally:
            stop.set()


def _optimise(
    book: Book,
    options: Any = None,
    backend: str | None = None,
    warm_start: WarmStart | None = None,
) -> OptimisationResult:
    """``optimise``, looked up when called (so tests can watch it); by reference in pickles."""
    if warm_start is None:
        return optimise(book, options=options, backend=backend)
    return optimise(book, options=options, backend=backend, warm_start=warm_start)


def _recordable(outcome: AccountOutcome) -> bool:
    """An answer, or a failure of the computation itself (infeasible, solver failure): invalid
    input and deadlines too short to start are refusals, not runs, and are not recorded."""
    if outcome.ok:
        return True
    if outcome.payload is None:
        return False
    code: str = service_pb2.AccountError.FromString(outcome.payload).code
    return code == "FAILED_PRECONDITION"


def _what_if(run: common_pb2.RunContext, result: WhatIfResult) -> service_pb2.WhatIfResponse:
    """The proto rendering of a :func:`~xmargin.optimiser.what_if.what_if` result."""
    impacts = []
    for trade in result.trades:
        impact = service_pb2.TradeImpact(
            instrument=trade.instrument,
            quantity=trade.quantity,
            eligible=trade.eligible,
            margin_change_standalone=trade.change_standalone,
            best_placement=(
                service_pb2.PLACEMENT_XM
                if trade.best is Placement.XM
                else service_pb2.PLACEMENT_STANDALONE
            ),
            best_margin_change=trade.best_change,
        )
        if trade.change_xm is not None:
            impact.margin_change_xm = trade.change_xm
        impact.reasons.extend(eligibility_reasons(trade.reasons))
        impacts.append(impact)
    return service_pb2.WhatIfResponse(
        run=run,
        before=state_to_proto(result.before),
        after_standalone=state_to_proto(result.after_standalone),
        after_best=state_to_proto(result.after_best),
        margin_change=result.margin_change,
        trades=impacts,
    )
