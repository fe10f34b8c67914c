"""xmargin.optimiser: the core library (no gRPC).

It writes files only where a caller asks it to: the reports (``reports.write_reports``), the
audit store (``audit``), batch runs and the command line's outputs. Importing it changes
nothing in the host process.

Load a case, build the numeric problem, evaluate or optimise it::

    from xmargin.optimiser import load_case, build_problem, evaluate, optimise
    problem = build_problem(load_case("case.json"))
    result = optimise(problem)
    print(result.optimised.total)
"""

from .case_format import CASE_FORMAT, book_to_dict, load_case, parse_case
from .eligibility import (
    Eligibility,
    Reason,
    Rulebook,
    default_rulebook,
    evaluate_eligibility,
    load_rulebook,
)
from .errors import CaseValidationError, InfeasibleError, SolverError, XmarginError
from .margin import Attribution, State, attribute, evaluate
from .model import (
    Book,
    Ccp,
    ClearingMember,
    Customer,
    Cycle,
    Instrument,
    InstrumentKind,
    MarginModel,
    Measure,
    Mode,
    Position,
    ProgramRules,
    ScenarioSet,
    SolveOptions,
)
from .optimise import optimise
from .problem import Problem, build_problem
from .results import AnswerSource, OptimisationResult, Status, Transfer
from .warm_start import WarmStart

__all__ = [
    "CASE_FORMAT",
    "AnswerSource",
    "Attribution",
    "Book",
    "CaseValidationError",
    "Ccp",
    "ClearingMember",
    "Customer",
    "Cycle",
    "Eligibility",
    "InfeasibleError",
    "Instrument",
    "InstrumentKind",
    "MarginModel",
    "Measure",
    "Mode",
    "OptimisationResult",
    "Position",
    "Problem",
    "ProgramRules",
    "Reason",
    "Rulebook",
    "ScenarioSet",
    "SolveOptions",
    "SolverError",
    "State",
    "Status",
    "Transfer",
    "WarmStart",
    "XmarginError",
    "attribute",
    "book_to_dict",
    "build_problem",
    "default_rulebook",
    "evaluate",
    "evaluate_eligibility",
    "load_case",
    "load_rulebook",
    "optimise",
    "parse_case",
]
