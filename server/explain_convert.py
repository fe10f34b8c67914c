"""The library's :class:`~xmargin.optimiser.explain.Explanation` as ``xmargin.v1.Explanation``
(explain.proto); the ``Explain`` RPC's conversion. Money in USD, losses 1-day."""

from __future__ import annotations

import dataclasses

from xmargin.clients.v1 import book_pb2, common_pb2, explain_pb2, result_pb2
from xmargin.optimiser import Book, build_problem, optimise
from xmargin.optimiser.explain import (
    ChangeExplanation,
    Explanation,
    FigureExplanation,
    ScenarioWeight,
    StateExplanation,
    XmExplanation,
    explain,
    explain_result,
)
from xmargin.optimiser.results import Account

from .convert import result_to_proto

__all__ = ["explain_response", "explanation_to_proto"]

_CCP = {"FICC": common_pb2.CCP_FICC, "CME": common_pb2.CCP_CME}
_ACCOUNT = {
    Account.FICC_STANDALONE: common_pb2.MARGIN_ACCOUNT_FICC_STANDALONE,
    Account.CME_STANDALONE: common_pb2.MARGIN_ACCOUNT_CME_STANDALONE,
    Account.XM: common_pb2.MARGIN_ACCOUNT_XM,
}


def _measure(name: str) -> book_pb2.Measure.ValueType:
    """A model's measure (``Measure`` values "ES", "VaR") as its proto enum (MEASURE_VAR)."""
    return book_pb2.Measure.Value(f"MEASURE_{name.upper()}")


def _scenario(weight: ScenarioWeight) -> explain_pb2.ScenarioWeight:
    return explain_pb2.ScenarioWeight(
        id=weight.id,
        row=weight.row,
        loss=weight.loss,
        weight=weight.weight,
        contribution=weight.contribution,
    )


def _figure(figure: FigureExplanation) -> explain_pb2.FigureExplanation:
    message = explain_pb2.FigureExplanation(
        name=figure.name,
        account=figure.account,
        ccp=_CCP[figure.ccp],
        measure=_measure(figure.measure),
        margin=figure.margin,
        horizon_scale=figure.scale,
        stress_weight=figure.stress_weight,
        n_tail=figure.n_tail,
        risk=figure.risk,
        stress=figure.stress,
        addons=figure.addons,
        risk_part=figure.risk_part,
        stress_part=figure.stress_part,
        floor=figure.floor,
        tail=[_scenario(s) for s in figure.tail],
        by_factor=figure.by_factor.tolist(),
        addons_by_factor=figure.addons_by_factor.tolist(),
        unexplained_by_factors=figure.unexplained_by_factors,
        by_position=figure.by_position.tolist(),
    )
    if figure.stress_scenario is not None:
        message.stress_scenario.CopyFrom(_scenario(figure.stress_scenario))
    return message


def _xm(xm: XmExplanation) -> explain_pb2.XmExplanation:
    return explain_pb2.XmExplanation(
        margin=xm.margin,
        r=xm.r,
        binding=xm.binding,
        terms=xm.terms,
        s_f=_figure(xm.figures["S_F"]),
        s_c=_figure(xm.figures["S_C"]),
        c_f=_figure(xm.figures["C_F"]),
        c_c=_figure(xm.figures["C_C"]),
        by_factor=xm.by_factor.tolist(),
        unexplained_by_factors=xm.unexplained_by_factors,
        floor=xm.floor,
        by_position=xm.by_position.tolist(),
    )


def _state(state: StateExplanation) -> explain_pb2.StateExplanation:
    return explain_pb2.StateExplanation(
        total=state.total,
        ficc_standalone=_figure(state.ficc_standalone),
        cme_standalone=_figure(state.cme_standalone),
        xm=_xm(state.xm),
        by_factor=state.by_factor.tolist(),
        unexplained_by_factors=state.unexplained_by_factors,
        floor=state.floor,
        by_position=state.by_position.tolist(),
    )


def _change(change: ChangeExplanation) -> explain_pb2.ChangeExplanation:
    return explain_pb2.ChangeExplanation(
        before_total=change.before_total,
        after_total=change.after_total,
        savings=change.savings,
        transfers=[
            explain_pb2.TransferSaving(
                transfer=result_pb2.Transfer(
                    instrument=t.transfer.instrument,
                    from_account=_ACCOUNT[t.transfer.from_account],
                    to_account=_ACCOUNT[t.transfer.to_account],
                    quantity=t.transfer.quantity,
                    lots=t.transfer.lots,
                ),
                order=t.order,
                saving=t.saving,
                alone=t.alone,
                last=t.last,
            )
            for t in change.transfers
        ],
        unassigned=change.unassigned,
        method=change.method,
        tail_changes={
            name: explain_pb2.TailChange(entered=c.entered, left=c.left, kept=c.kept)
            for name, c in change.tail_changes.items()
        },
    )


def explanation_to_proto(explanation: Explanation) -> explain_pb2.Explanation:
    """Every figure of ``explanation`` (lists in the order of ``factors`` and ``positions``)."""
    problem = explanation.problem
    message = explain_pb2.Explanation(factors=problem.book.factors, positions=problem.position_ids)
    if "current" in explanation.states:
        message.current.CopyFrom(_state(explanation.states["current"]))
    if "optimised" in explanation.states:
        message.optimised.CopyFrom(_state(explanation.states["optimised"]))
    if explanation.change is not None:
        message.change.CopyFrom(_change(explanation.change))
    return message


def explain_response(
    request: explain_pb2.ExplainRequest, book: Book, time_limit: float | None
) -> explain_pb2.ExplainResponse:
    """The ``Explain`` RPC's answer for a validated ``book``: the current allocation only
    (``current_only``: no solve), or optimised within ``time_limit`` seconds and explained,
    the optimisation result alongside."""
    if request.current_only:
        explanation = explain(build_problem(book), states=("current",))
        return explain_pb2.ExplainResponse(
            run=request.run, explanation=explanation_to_proto(explanation)
        )
    options = dataclasses.replace(book.options, time_limit=time_limit)
    result = optimise(book, options=options)
    return explain_pb2.ExplainResponse(
        run=request.run,
        explanation=explanation_to_proto(explain_result(result)),
        result=result_to_proto(result),
    )
