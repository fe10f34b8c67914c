"""Output files: paths checked before the work, each file written whole or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import CASE_FILES
from xmargin.optimiser import SolveOptions, cli, load_case, optimise
from xmargin.optimiser.outputs import OutputPathError, check_output_paths, write_files
from xmargin.optimiser.reports import write_reports
from xmargin.optimiser.results import OptimisationResult

CASE_01 = next(path for path in CASE_FILES if path.name.startswith("01-"))


@pytest.fixture(scope="module")
def result() -> OptimisationResult:
    return optimise(load_case(CASE_01), options=SolveOptions(integral=True))


def test_one_path_for_two_outputs_is_refused_naming_the_second(tmp_path: Path) -> None:
    """--csv out.csv --fixml ./out.csv wrote the FIXML over the CSV without a word."""
    same = {"--csv": tmp_path / "out.csv", "--fixml": f"{tmp_path}/./out.csv"}
    with pytest.raises(OutputPathError, match="is --csv's file too") as refused:
        check_output_paths(same)
    assert refused.value.field == "--fixml"


def test_an_output_over_the_input_is_refused(tmp_path: Path) -> None:
    case = tmp_path / "case.json"
    case.write_text("{}")
    with pytest.raises(OutputPathError, match=r"is the input CASE\.json") as refused:
        check_output_paths({"--html": case}, {"CASE.json": str(case)})
    assert refused.value.field == "--html"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("missing/out.csv", "does not exist"),
        (".", "is a folder"),
        ("", "is empty"),
        ("-", "is not stdout"),  # wrote a file named "-"
    ],
)
def test_an_output_in_no_folder_or_a_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, why: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputPathError, match=why):
        check_output_paths({"--csv": name})


def test_a_failed_write_changes_no_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second file's write fails (a full disk): the first file keeps its old text."""
    first, second = tmp_path / "a.csv", tmp_path / "b.xml"
    first.write_text("old")
    real_fsync = os.fsync
    calls = []

    def failing_fsync(descriptor: int) -> None:
        calls.append(descriptor)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_files({first: "new", second: "new"})
    assert len(calls) == 2
    assert first.read_text() == "old" and not second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_a_file_written_over_keeps_its_mode_and_a_device_stays_a_device(tmp_path: Path) -> None:
    target = tmp_path / "t.csv"
    target.write_text("old")
    target.chmod(0o640)
    write_files({target: "new", os.devnull: "discarded"})
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_write_reports_refuses_one_path_twice_before_writing(
    result: OptimisationResult, tmp_path: Path
) -> None:
    target = tmp_path / "t.csv"
    with pytest.raises(OutputPathError):
        write_reports(result, csv_path=target, fixml_path=target)
    assert not target.exists()


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (
            ["--csv", "{d}/t.csv", "--fixml", "{d}/t.csv"],
            "--fixml '{d}/t.csv': is --csv's file",
        ),
        (["--csv", "{d}/t.csv", "--html", "{d}/no/r.html"], "--html '{d}/no/r.html': its folder"),
        (["--fixml", "{case}"], "is the input CASE.json"),
    ],
    ids=["twice", "missing folder", "the case"],
)
def test_optimise_refuses_bad_report_paths_before_solving(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    why: str,
) -> None:
    """Found after the solve before (minutes on a large book), and the CSV was then written
    although the command failed."""
    case = tmp_path / "case.json"
    case.write_text(CASE_01.read_text())
    original = case.read_text()

    def no_solve(*args: object, **kwargs: object) -> None:
        raise AssertionError("solved before the paths were checked")

    monkeypatch.setattr("xmargin.optimiser.cli.solve.optimise", no_solve)
    fill = {"d": str(tmp_path), "case": str(case)}
    code = cli.main(["-q", "optimise", str(case), *(f.format(**fill) for f in flags)])
    err = capsys.readouterr().err
    assert code == 2 and why.format(**fill) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.json"]
    assert case.read_text() == original
