"""xmargin.clients: the typed Python client and the generated stubs (``xmargin.clients.v1``).

Needs only grpcio, grpcio-status and protobuf (the base install)::

    from xmargin.clients import XmarginClient
    with XmarginClient("localhost:50051") as client:
        print(client.optimise("case.json").optimised.total)
"""

from .client import RetryPolicy, ScenarioSetHandle, XmarginClient
from .convert import (
    AccountFailure,
    BatchItem,
    EligibilityAnswer,
    MarginAnswer,
    MarginFigures,
    OptimiseAnswer,
    TradeImpact,
    TransferLine,
    WhatIfAnswer,
)
from .errors import (
    AuthenticationError,
    DeadlineExceededError,
    FieldViolation,
    InfeasibleError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    PreconditionError,
    ServerError,
    UnavailableError,
    XmarginClientError,
)
from .explain import ExplainAnswer

__all__ = [
    "AccountFailure",
    "AuthenticationError",
    "BatchItem",
    "DeadlineExceededError",
    "EligibilityAnswer",
    "ExplainAnswer",
    "FieldViolation",
    "InfeasibleError",
    "InvalidRequestError",
    "MarginAnswer",
    "MarginFigures",
    "NotFoundError",
    "OptimiseAnswer",
    "OverloadedError",
    "PreconditionError",
    "RetryPolicy",
    "ScenarioSetHandle",
    "ServerError",
    "TradeImpact",
    "TransferLine",
    "UnavailableError",
    "WhatIfAnswer",
    "XmarginClient",
    "XmarginClientError",
]
