"""The case format's one schema (xmargin.schema), tested from the schema itself: every key
misspelt once is refused naming it, every number just outside its range is refused; strict
dates, the closed FICC account vocabulary, every violation reported at once; the shipped JSON
Schema is the model's."""

from __future__ import annotations

import copy
import json
import math
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel

from tests.conftest import CASES_DIR
from xmargin.optimiser import CaseValidationError, parse_case
from xmargin.optimiser.cli import EXIT_BAD_INPUT, main
from xmargin.schema import BOUNDS, CaseV1, json_schema, schema_path
from xmargin.schema.case_v1 import schema_text


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CASES_DIR / f"{name}.json").read_text())
    return data


@pytest.fixture(scope="module")
def full_case() -> dict[str, Any]:
    """Case 07 (stress, add-ons, an option's pnl) with every optional key of the format
    present somewhere: a repo of case 08, every option, a lookback, the expected block."""
    case = _load("07-cme-stress-addons")
    repo = next(
        i for i in _load("08-repo-and-short-maturities")["instruments"] if i["kind"] == "REPO"
    )
    case["instruments"].append(repo)
    case["options"] = {
        "integral": False,
        "transfer_cost": 0.0,
        "max_transfers": 10,
        "mode": "JOINT",
        "time_limit": 60.0,
        "backend": "highs",
    }
    case["models"]["CME"]["lookback"] = 700
    case["models"]["FICC"]["stress_ids"] = case["models"]["CME"]["stress_ids"][:1]
    case["models"]["FICC"]["stress_weight"] = 0.1
    return case


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, __import__("types").UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation


def _schema_fields(
    model: type[BaseModel], prefix: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, field info) of the schema; ``*`` stands for any list index."""
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        yield path, info
        inner = _unwrap(info.annotation)
        while typing.get_origin(inner) is list:
            path = (*path, "*")
            inner = _unwrap(typing.get_args(inner)[0])
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from _schema_fields(inner, path)


def _locate(data: Any, path: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A concrete path (``*`` -> the first index holding the rest of the path) in ``data``."""
    if not path:
        return ()
    head, rest = path[0], path[1:]
    if head == "*":
        if not isinstance(data, list):
            return None
        for index, item in enumerate(data):
            found = _locate(item, rest)
            if found is not None:
                return (index, *found)
        return None
    if not isinstance(data, dict) or head not in data:
        return None
    found = _locate(data[head], rest)
    return None if found is None else (head, *found)


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


KEY_PATHS = [path for path, _ in _schema_fields(CaseV1) if path[-1] != "*"]


def _misspelt(key: str) -> str:
    """The key with two letters swapped (or one dropped when that changes nothing)."""
    if len(key) >= 4 and key[1] != key[2]:
        return key[0] + key[2] + key[1] + key[3:]
    return key[:-1] if len(key) > 1 else key + key


def test_every_key_of_the_schema_is_in_the_full_case(full_case: dict[str, Any]) -> None:
    missing = [_dotted(p) for p in KEY_PATHS if _locate(full_case, p) is None]
    assert not missing, f"add these keys to full_case: {missing}"


@pytest.mark.parametrize("path", KEY_PATHS, ids=[".".join(map(str, p)) for p in KEY_PATHS])
def test_every_key_misspelt_once_is_refused_naming_it(
    full_case: dict[str, Any], path: tuple[Any, ...]
) -> None:
    data = copy.deepcopy(full_case)
    where = _locate(data, path)
    assert where is not None
    parent = _parent(data, where)
    wrong = _misspelt(str(where[-1]))
    parent[wrong] = parent.pop(where[-1])
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    named = _dotted((*where[:-1], wrong))
    messages = {v.path: v.message for v in raised.value.violations}
    assert named in messages, raised.value
    assert messages[named].startswith("unknown key")
    if named in ("options.intergral",):  # the issue's example, word for word
        assert messages[named] == "unknown key; did you mean options.integral?"


def _bounds(info: Any) -> Iterator[tuple[str, float]]:
    """(kind, bound) of every numeric constraint on a field or on its list items."""
    stack = [info.annotation, *info.metadata]
    while stack:
        item = stack.pop()
        for kind in (Ge, Gt, Le, Lt):
            if isinstance(item, kind):
                name = kind.__name__.lower()
                yield name, float(getattr(item, name))
        origin = typing.get_origin(item)
        if origin is typing.Annotated:
            stack += list(typing.get_args(item))
        elif origin is not None:
            stack += list(typing.get_args(item))
        metadata = getattr(item, "metadata", None)
        if isinstance(metadata, list):
            stack += metadata


NUMBER_FIELDS = [(p, sorted(set(_bounds(info)))) for p, info in _schema_fields(CaseV1)]
NUMBER_FIELDS = [(p, b) for p, b in NUMBER_FIELDS if b]


def _outside(kind: str, bound: float) -> float:
    """The nearest double beyond ``bound`` on the refused side."""
    if kind in ("ge", "gt"):
        return bound if kind == "gt" else math.nextafter(bound, -math.inf)
    return bound if kind == "lt" else math.nextafter(bound, math.inf)


def test_the_numeric_bounds_cover_the_fields_the_issue_names() -> None:
    names = {_dotted(p).replace(".*", "") for p, _ in NUMBER_FIELDS}
    for name in (
        "positions.quantity",
        "positions.lot",
        "instruments.sensitivities",
        "instruments.pnl",
        "scenarios.shocks",
        "models.FICC.confidence",
        "models.FICC.horizon_days",
        "models.FICC.addon_rate",
        "options.transfer_cost",
        "options.time_limit",
        "program.savings_cap",
    ):
        assert name in names, name


CASES_OUTSIDE = [(path, kind, bound) for path, bounds in NUMBER_FIELDS for kind, bound in bounds]


@pytest.mark.parametrize(
    ("path", "kind", "bound"),
    CASES_OUTSIDE,
    ids=[f"{_dotted(p)}-{k}" for p, k, _ in CASES_OUTSIDE],
)
def test_every_number_just_outside_its_range_is_refused(
    full_case: dict[str, Any], path: tuple[Any, ...], kind: str, bound: float
) -> None:
    data = copy.deepcopy(full_case)
    where = _locate(data, path)
    assert where is not None, _dotted(path)
    while isinstance(_get(data, where), list):  # a vector: its first element
        where = (*where, 0)
    value: float = _outside(kind, bound)
    if isinstance(_get(data, where), int) and not isinstance(_get(data, where), bool):
        value = int(bound) + (1 if kind in ("le", "lt") else -1)  # whole-number fields
    _set(data, where, value)
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    assert _dotted(where) in {v.path for v in raised.value.violations}, raised.value


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


# --- the issue's examples -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("positions", 0, "quantity"), 1e300),
        (("positions", 0, "lot"), 1e20),
        (("models", "FICC", "addon_rate", 0), 1e15),
        (("scenarios", "shocks", 5, 2), 1e308),
        (("business_date",), "20261124"),
        (("business_date",), "9999-12-31"),
        (("business_date",), "2026-02-30"),
        (("instruments", 0, "maturity"), "2034/05/15"),
        (("scenarios", "ids", 3), "20230130"),
        (("models", "CME", "stress_ids", 0), "2023-3-10"),
        (("customer", "ficc_account_type"), "sponsored"),
        (("customer", "ficc_account_type"), "FOO"),
        (("customer", "ficc_account_type"), ""),
        (("positions", 1, "pinned"), "false"),
        (("models", "CME", "measure"), "CVaR"),
        (("options", "integral"), 1),
    ],
)
def test_the_issues_inputs_are_refused_naming_the_field(
    full_case: dict[str, Any], path: tuple[Any, ...], value: Any
) -> None:
    data = copy.deepcopy(full_case)
    _set(data, path, value)
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    assert _dotted(path) in {v.path for v in raised.value.violations}, raised.value


def test_a_missing_ficc_account_type_is_refused(full_case: dict[str, Any]) -> None:
    data = copy.deepcopy(full_case)
    del data["customer"]["ficc_account_type"]
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    assert raised.value.field == "customer.ficc_account_type"
    assert raised.value.reason == "is required"


def test_cme_quantities_have_their_own_bound(full_case: dict[str, Any]) -> None:
    data = copy.deepcopy(full_case)
    cme = {i["id"] for i in data["instruments"] if i["ccp"] == "CME"}
    index = next(k for k, p in enumerate(data["positions"]) if p["instrument"] in cme)
    data["positions"][index]["quantity"] = BOUNDS["cme_quantity"] * 2
    data["positions"][index]["xm_quantity"] = 0.0
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    assert f"positions[{index}].quantity" in {v.path for v in raised.value.violations}


def test_every_violation_is_reported_at_once(full_case: dict[str, Any]) -> None:
    data = copy.deepcopy(full_case)
    data["options"]["intergral"] = data["options"].pop("integral")
    data["program"]["savings_cpa"] = 0.5
    data["positions"][0]["pined"] = True
    data["positions"][2]["quantity"] = 1e300
    data["business_date"] = "20261124"
    data["customer"]["xm_enroled"] = data["customer"].pop("xm_enrolled")
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    paths = {v.path for v in raised.value.violations}
    assert {
        "options.intergral",
        "program.savings_cpa",
        "positions[0].pined",
        "positions[2].quantity",
        "business_date",
        "customer.xm_enroled",
    } <= paths
    # the single-violation attributes stay the first one's
    first = raised.value.violations[0]
    assert (raised.value.field, raised.value.reason) == (first.path, first.message)


def test_long_strings_are_cut_in_messages(full_case: dict[str, Any]) -> None:
    data = copy.deepcopy(full_case)
    data["customer"]["ficc_account_type"] = "X" * 5000
    data["positions"][0]["p" * 5000] = 1
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    assert len(str(raised.value)) < 1000
    assert all(len(v.path) < 200 for v in raised.value.violations)


# --- the command line ---------------------------------------------------------------------------


def test_cli_lists_every_violation_and_exits_2(
    full_case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy.deepcopy(full_case)
    data["options"]["time_limt"] = 5
    data["business_date"] = "9999-12-31"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert main(["eligibility", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "options.time_limt: unknown key; did you mean options.time_limit?" in err
    assert "business_date: must be a date" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "text", ["[" * 100_000, '{"business_date": ' + "9" * 5000 + "}", "\xff\xfe"]
)
def test_cli_unreadable_json_is_bad_input(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="latin-1")
    assert main(["eligibility", str(path)]) == EXIT_BAD_INPUT
    assert "Traceback" not in capsys.readouterr().err


# --- the published JSON Schema ------------------------------------------------------------------


def test_the_shipped_json_schema_is_the_models_export() -> None:
    """Regenerate with ``python -m xmargin.schema`` when the model changes."""
    assert schema_path().read_text() == schema_text()
    shipped = json.loads(schema_path().read_text())
    assert shipped == json.loads(json.dumps(json_schema()))
    assert shipped["additionalProperties"] is False


def test_the_json_schema_documents_every_bound() -> None:
    text = schema_path().read_text()
    for bound in ("100000000000.0", "10000.0", "1000000.0", "86400.0"):
        assert bound in text


def test_calendar_dates_are_exactly_the_dates_python_reads() -> None:
    """Every string of the date pattern (years 1900-2199, months 01-12, days 01-31): the
    schema takes it iff ``datetime.date.fromisoformat`` does (no 31 April, 29 February in
    leap years only), and refuses the others as not calendar dates, naming each one."""
    import datetime as dt

    from pydantic import TypeAdapter, ValidationError

    from xmargin.schema.case_v1 import IsoDate, violations_of

    days = [
        f"{year}-{month:02d}-{day:02d}"
        for year in range(1900, 2200)
        for month in range(1, 13)
        for day in range(1, 32)
    ]

    def is_date(text: str) -> bool:
        try:
            dt.date.fromisoformat(text)
        except ValueError:
            return False
        return True

    expected = [(f"[{i}]", text) for i, text in enumerate(days) if not is_date(text)]
    # per year four 31sts of 30-day months and 30/31 February; 29 February in 227 years
    assert len(expected) == 300 * 6 + (300 - 73)
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(list[IsoDate]).validate_python(days, strict=True)
    found = violations_of(CaseV1, caught.value)
    assert [(v.path, v.value) for v in found] == expected
    rule = "a date YYYY-MM-DD between 1900-01-01 and 2199-12-31"
    assert {v.message for v in found} == {f"is not a calendar date (must be {rule})"}


@pytest.mark.parametrize("character", ["\x00", "\n", "\x1b", "\x7f"], ids=repr)
@pytest.mark.parametrize(
    "path",
    [
        ("name",),
        ("customer", "id"),
        ("clearing_member", "id"),
        ("instruments", 0, "id"),
        ("positions", 0, "instrument"),
        ("factors", 0),
    ],
    ids=_dotted,
)
def test_ids_and_names_holding_a_control_character_are_refused(
    full_case: dict[str, Any], path: tuple[Any, ...], character: str
) -> None:
    """A NUL in a customer id ran on a SQLite audit store and failed on a PostgreSQL one
    (UNAVAILABLE: text cannot hold NUL); a newline forges lines in logs and tables."""
    data = copy.deepcopy(full_case)
    _set(data, path, f"A{character}B")
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    reasons = {v.path: v.message for v in raised.value.violations}
    assert "control characters" in reasons.get(_dotted(path), ""), raised.value


@pytest.mark.parametrize("text", [" ", "  ", " A", "A ", "\u3000A", "A\u00a0"], ids=repr)
@pytest.mark.parametrize(
    "path",
    [
        ("customer", "id"),
        ("clearing_member", "id"),
        ("instruments", 0, "id"),
        ("factors", 0),
    ],
    ids=_dotted,
)
def test_an_id_blank_or_with_a_blank_end_is_refused(
    full_case: dict[str, Any], path: tuple[Any, ...], text: str
) -> None:
    """Ids match exactly: a customer id of two blanks was taken as an id, and " TYZ6" is
    another instrument than "TYZ6" (the position naming it too was accepted)."""
    data = copy.deepcopy(full_case)
    _set(data, path, text)
    if path[0] == "instruments":
        data["positions"][0]["instrument"] = text
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    reasons = {v.path: v.message for v in raised.value.violations}
    assert "begin or end with a blank" in reasons.get(_dotted(path), ""), raised.value


@pytest.mark.parametrize("text", ["A", "CUST 1", "A-B_C.D/E"], ids=repr)
def test_an_id_with_blanks_inside_is_taken(full_case: dict[str, Any], text: str) -> None:
    data = copy.deepcopy(full_case)
    data["customer"]["id"] = text
    assert parse_case(data).customer.id == text
