"""The command line as a new user meets it: help, flags in either place, refusals that say why."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CASE_FILES
from xmargin.optimiser import cli
from xmargin.optimiser.batch import DaskEngine
from xmargin.optimiser.extras import MissingExtraError

CASE_01 = next(path for path in CASE_FILES if path.name.startswith("01-"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found |= {f"{name} {k}": v for k, v in _subparsers(sub).items()}
    return found


def test_quiet_goes_before_or_after_the_subcommand() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["-q", "margin", "c.json"]).quiet is True
    assert parser.parse_args(["margin", "c.json", "-q"]).quiet is True
    assert parser.parse_args(["margin", "-q", "c.json"]).quiet is True
    assert parser.parse_args(["margin", "c.json"]).quiet is False
    assert parser.parse_args(["audit", "list", "--business-date", "2026-11-24", "--cycle",
                              "EOD", "--run-number", "1", "--quiet"]).quiet is True  # fmt: skip


def test_every_command_describes_itself_and_its_defaults_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = _subparsers(cli.build_parser())
    assert {"optimise", "what-if", "batch", "audit show", "audit list"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, f"{name} has no description"
    code, out, _ = run(capsys, "--help")
    assert code == 0 and " 5 " in out and "130" in out
    code, out, _ = run(capsys, "sample", "--help")
    assert code == 0 and "(default: 40)" in out and "(default: 1260)" in out
    code, out, _ = run(capsys, "batch", "--help")
    assert "(default: 1)" in out and "130" in out


def test_what_if_exclude_does_not_swallow_the_case(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "what-if", "--exclude", "TYZ6", str(CASE_01))
    assert code == cli.EXIT_OK, err
    assert json.loads(out)["excluded"] == ["TYZ6"]
    parser = cli.build_parser()
    args = parser.parse_args(["what-if", "--exclude", "A,B", "--exclude", "C", "case.json"])
    assert args.exclude == ["A", "B", "C"] and args.case == "case.json"


@pytest.mark.parametrize(
    ("given", "why"),
    [
        (" TYZ6,", "begin or end with a blank"),
        ("TYZ6 ", "begin or end with a blank"),
        ("TYZ6, FVZ6", "begin or end with a blank"),
        (" ", "begin or end with a blank"),
        ("TYZ6,", "an empty id"),
        (",TYZ6", "an empty id"),
        ("TYZ6,,FVZ6", "an empty id"),
        ("", "an empty id"),
    ],
)
def test_what_if_exclude_refuses_blank_and_empty_ids(
    capsys: pytest.CaptureFixture[str], given: str, why: str
) -> None:
    """Refused naming the flag, not trimmed: an id is matched exactly (the lead's decision)."""
    with pytest.raises(SystemExit) as stopped:
        cli.build_parser().parse_args(["what-if", str(CASE_01), "--exclude", given])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "argument --exclude" in err and why in err, err


def test_audit_readers_refuse_a_missing_store_and_create_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XMARGIN_AUDIT", raising=False)
    key = ["--business-date", "2026-11-24", "--cycle", "EOD", "--run-number", "1"]
    code, out, err = run(capsys, "audit", "list", *key)
    assert code == cli.EXIT_BAD_INPUT and "no audit store" in err and out == ""
    code, _, err = run(capsys, "audit", "show", *key, "--account", "X", "--audit", "sqlite:///a.db")
    assert code == cli.EXIT_BAD_INPUT and "no audit store" in err
    assert list(tmp_path.iterdir()) == []


def _case_with_customer(path: Path, customer: str) -> dict[str, Any]:
    data = json.loads(path.read_text())
    data["customer"]["id"] = customer
    return data


def test_an_unreadable_file_fails_alone_and_audit_show_has_a_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "cases"
    folder.mkdir()
    for number in (1, 2):
        case = _case_with_customer(CASE_01, f"CUST-{number}")
        (folder / f"case-{number}.json").write_text(json.dumps(case))
    (folder / "broken.json").write_text("{not json")
    (folder / "list.json").write_text("[]")
    store = f"sqlite:///{tmp_path / 'audit.db'}"
    code, out, err = run(capsys, "batch", str(folder), "--engine", "inline", "--audit", store)
    assert code == cli.EXIT_INCOMPLETE, err
    summary = json.loads(out)
    assert (summary["accounts"], summary["computed"], summary["failed"]) == (4, 2, 2)
    assert {Path(f["source"]).name for f in summary["failures"]} == {"broken.json", "list.json"}

    case = json.loads(CASE_01.read_text())
    key = ["--business-date", case["business_date"], "--cycle", case["cycle"]]
    key += ["--run-number", "1", "--account", "CUST-2", "--audit", store]
    code, out, err = run(capsys, "audit", "show", *key, "--table")
    assert code == cli.EXIT_OK, err
    assert "CUST-2" in out and "optimised" in out and "total margin" in out.lower()


def test_demo_header_names_the_book_not_a_package_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "-q", "demo")
    assert code == cli.EXIT_OK, err
    header = out.splitlines()[0]
    assert header.startswith("The bundled sample book") and "xmargin.optimiser/" not in header


def test_a_missing_extra_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(MissingExtraError, match=r"xmargin\[batch\]"):
        DaskEngine()


def _with_duplicate_key(text: str) -> str:
    """The case text with its first position's quantity given twice (1, then the real one):
    plain ``json.loads`` would read the second without a word."""
    at = text.index('"quantity":')
    return text[:at] + '"quantity": 1, ' + text[at:]


@pytest.mark.parametrize("command", ["optimise", "margin", "eligibility"])
def test_a_case_file_naming_a_key_twice_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    path = tmp_path / "twice.json"
    path.write_text(_with_duplicate_key(CASE_01.read_text()))
    code, out, err = run(capsys, command, str(path))
    assert code == cli.EXIT_BAD_INPUT, (code, out, err)
    assert "duplicate key 'quantity'" in err, err


def test_a_batch_case_naming_a_key_twice_fails_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "good.json").write_text(json.dumps(_case_with_customer(CASE_01, "CUST-1")))
    twice = json.dumps(_case_with_customer(CASE_01, "CUST-2"))
    (folder / "twice.json").write_text(_with_duplicate_key(twice))
    store = f"sqlite:///{tmp_path / 'audit.db'}"
    code, out, err = run(capsys, "batch", str(folder), "--engine", "inline", "--audit", store)
    assert code == cli.EXIT_INCOMPLETE, err
    summary = json.loads(out)
    assert (summary["computed"], summary["failed"]) == (1, 1), summary
    (failure,) = summary["failures"]
    assert Path(failure["source"]).name == "twice.json"
    assert "duplicate key 'quantity'" in json.dumps(failure)


@pytest.mark.parametrize("command", ["optimise", "explain"])
@pytest.mark.parametrize("seconds", ["nan", "inf", "1e400", "86401", "0", "-1"])
def test_time_limit_flag_outside_a_case_files_range_is_refused(
    capsys: pytest.CaptureFixture[str], command: str, seconds: str
) -> None:
    """--time-limit takes what a case file's options.time_limit takes, (0, 86400] seconds
    (nan, inf and 1e9 ran: nan and inf as no limit at all)."""
    code, out, err = run(capsys, command, str(CASE_01), "--time-limit", seconds)
    assert code == cli.EXIT_BAD_INPUT, (code, out, err)
    assert "--time-limit" in err and "86400" in err, err
    assert out == ""


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--state", "current", "--backend", "cvxpy:NOPE"], "--backend"),
        (["--state", "current", "--time-limit", "nan"], "--time-limit"),
        (["--state", "current", "--mode", "FICC_FIXED"], "--mode"),
        (["--state", "current", "--continuous"], "--continuous"),
        (["--state", "current", "--transfers", "sequential"], "--transfers"),
        (["--losses"], "--losses"),  # a table
        (["--json", "--account", "xm"], "--account"),
    ],
)
def test_explain_refuses_a_flag_that_would_change_nothing(
    capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    """Each was ignored (exit 0), a bad backend name and a NaN time limit unchecked."""
    code, out, err = run(capsys, "explain", str(CASE_01), *flags)
    assert code == cli.EXIT_BAD_INPUT, (code, out, err)
    assert named in err and out == "", err


AUDIT_KEY = ["--business-date", "2026-11-24", "--cycle", "EOD", "--run-number", "1"]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--run-number", "0"),
        ("--run-number", "-1"),
        ("--run-number", "4294967296"),
        ("--run-number", "99999999999999999999"),
        ("--business-date", "2026-02-30"),
        ("--business-date", "x"),
        ("--business-date", "2026-11-24T00:00"),
    ],
)
@pytest.mark.parametrize("command", ["audit show", "audit list", "batch"])
def test_run_keys_outside_their_range_are_refused_naming_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, flag: str, value: str
) -> None:
    """A run number is 1 to 2^32 - 1 (the gRPC contract's uint32) and a business date a real
    YYYY-MM-DD: 1e20 died with SQLite's OverflowError (exit 1, a traceback), a date 'x' or
    2026-02-30 was looked up and found nothing, run 0 or -1 likewise."""
    if command == "batch" and flag == "--business-date":
        pytest.skip("a batch's dates come from its cases")
    store = f"sqlite:///{tmp_path / 'audit.db'}"
    if command == "batch":
        argv = ["batch", str(CASE_01), "--engine", "inline", "--audit", store, flag, value]
    else:
        argv = [*command.split(), "--audit", store, *_with(AUDIT_KEY, flag, value)]
        if command == "audit show":
            argv += ["--account", "CUST-1"]
        run(capsys, "batch", str(CASE_01), "--engine", "inline", "--audit", store)
    code, out, err = run(capsys, *argv)
    assert code == cli.EXIT_BAD_INPUT, (code, out, err)
    assert flag in err and "Traceback" not in err, err


def _with(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced by ``value``."""
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--scenarios", "20001"),
        ("--scenarios", "1000000000"),
        ("--positions", "20001"),
        ("--positions", "100000000"),
        ("--seed", "-1"),
    ],
)
def test_sample_refuses_a_book_no_case_file_may_hold(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, value: str
) -> None:
    """sample writes only cases xmargin reads: beyond the case format's 20,000 scenarios or
    positions it is refused naming the flag (20,001 scenarios wrote a file every command
    refused, 1e9 died with OverflowError, 1e8 positions ran without end); a negative seed
    names its flag."""
    output = tmp_path / "case.json"
    code, out, err = run(capsys, "sample", flag, value, "-o", str(output))
    assert code == cli.EXIT_BAD_INPUT, (code, out, err)
    assert flag in err and "Traceback" not in err, err
    assert not output.exists()
