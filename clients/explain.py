"""The ``Explain`` RPC for the typed client: request from a case, answer as plain data.

The explanation arrives as a JSON-like dict with the proto's field names (explain.proto:
money in USD, scenario losses 1-day, every ``by_factor`` list in ``factors`` order and every
``by_position`` list in ``positions`` order)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from google.protobuf import json_format

from .convert import OptimiseAnswer, optimise_answer, optimise_request
from .messages import copy_shared_fields
from .v1 import common_pb2, explain_pb2

__all__ = ["ExplainAnswer", "explain_answer", "explain_request"]


def explain_request(
    case: Mapping[str, Any],
    run: common_pb2.RunContext,
    current_only: bool = False,
    *,
    scenarios: bool = True,
    **option_overrides: Any,
) -> explain_pb2.ExplainRequest:
    """The fields of an ``OptimiseRequest`` for ``case`` (those ``ExplainRequest`` shares),
    and ``current_only``; ``scenarios``: whether it carries the case's scenario set (False:
    the caller refers to a registered set)."""
    optimise = optimise_request(case, run, scenarios=scenarios, **option_overrides)
    return copy_shared_fields(optimise, explain_pb2.ExplainRequest(current_only=current_only))


@dataclass(frozen=True, slots=True)
class ExplainAnswer:
    """``explanation``: current, optimised (when solved) and change, as dicts with the
    proto's field names; ``result``: the optimisation explained (None when current only)."""

    explanation: dict[str, Any]
    result: OptimiseAnswer | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain_answer(message: explain_pb2.ExplainResponse) -> ExplainAnswer:
    explanation = json_format.MessageToDict(
        message.explanation,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    result = optimise_answer(message.result) if message.HasField("result") else None
    return ExplainAnswer(explanation=explanation, result=result)
