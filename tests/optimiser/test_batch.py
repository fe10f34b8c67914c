"""Batch runs: the batch file format, the engines (a local process pool and a real Dask
LocalCluster of worker processes) giving identical answers, failures per account, a worker
killed midway, and the ``xmargin batch`` process killed with SIGKILL and rerun."""

from __future__ import annotations

import json
import operator
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import CASE_FILES, CASES_DIR
from tests.optimiser.batches import (
    assert_same_whole_lot_answers,
    batch_file_data,
    batch_group,
    books,
    by_account,
    group,
    whole_lot_answers,
)
from xmargin.optimiser import (
    CaseValidationError,
    book_to_dict,
    case_format,
    cli,
    load_case,
    optimise,
)
from xmargin.optimiser.audit import AuditStore, open_store
from xmargin.optimiser.batch import (
    AccountOutcome,
    BatchAccount,
    DaskEngine,
    Engine,
    InlineEngine,
    LocalPoolEngine,
    SharedInputs,
    batch_from_books,
    jsonable,
    load_batch,
    merge_case,
    parse_batch,
    run_batch,
    solve_account,
    split_case,
    strip_volatile,
)
from xmargin.optimiser.batch import engines as batch_engines
from xmargin.optimiser.batch import run as batch_run

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dask_engine() -> Iterator[DaskEngine]:
    """A real Dask LocalCluster: a scheduler and 2 worker processes (one thread each)."""
    pytest.importorskip("distributed")
    engine = DaskEngine(workers=2)
    try:
        yield engine
    finally:
        engine.close()


def _outcomes(engine: Engine, count: int, **kwargs: Any) -> list[Any]:
    selected = batch_group(count, **kwargs)
    return list(engine.run(selected.accounts, selected.shared))


# --- the format -----------------------------------------------------------------------------


def test_merged_account_is_the_book_it_came_from() -> None:
    book = books(3)[1]
    selected = batch_group(3)
    case = merge_case(selected.shared.data, selected.accounts[1].data)
    expected = jsonable(book_to_dict(book))
    assert {k: v for k, v in case.items() if k != "format"} == {
        k: v for k, v in expected.items() if k != "format"
    }
    shared, account = split_case(case)
    assert merge_case(shared, account) == case


def test_accounts_from_books_carry_float64_arrays_and_answer_as_their_json_form() -> None:
    """``batch_from_books`` keeps each instrument's vector as a float64 array; the case merged
    from it parses to the same book as its JSON form (the batch file) and solves the same."""
    from_books, from_file = group(3), batch_group(3)
    for account in from_books.accounts:
        vectors = [i.get("sensitivities", i.get("pnl")) for i in account.data["instruments"]]
        assert vectors and all(isinstance(v, np.ndarray) for v in vectors)
    for array_form, list_form, book in zip(
        from_books.accounts, from_file.accounts, books(3), strict=True
    ):
        assert jsonable(array_form.data) == list_form.data
        parsed = case_format.parse_case(merge_case(from_books.shared.data, array_form.data))
        assert book_to_dict(parsed) == book_to_dict(book)
    answers = by_account(InlineEngine().run(from_books.accounts, from_books.shared))
    assert answers == by_account(InlineEngine().run(from_file.accounts, from_file.shared))


def _same_data(left: Any, right: Any) -> bool:
    """Equal JSON-ready data, arrays by type, dtype and values, dicts in the same key order."""
    if isinstance(left, np.ndarray):
        return (
            type(right) is np.ndarray
            and right.dtype == left.dtype
            and np.array_equal(left, right, equal_nan=left.dtype.kind == "f")
        )
    if isinstance(left, dict):
        return (
            type(right) is dict
            and list(left) == list(right)
            and all(_same_data(left[k], right[k]) for k in left)
        )
    if isinstance(left, list):
        return (
            type(right) is list
            and len(left) == len(right)
            and all(_same_data(a, b) for a, b in zip(left, right, strict=True))
        )
    return type(left) is type(right) and left == right


def test_a_pickled_account_reads_back_the_same_and_leaves_the_original_alone() -> None:
    """A worker's copy of an account (its vectors packed into one array for the trip) holds the
    same data: the float64 vectors as arrays of the same values, anything else as it was."""
    account = group(2).accounts[1]
    data = dict(account.data)
    data["instruments"] = [dict(i) for i in data["instruments"]]
    data["instruments"][0]["pnl"] = np.array([1.5, np.nan])  # both vectors: still both back
    data["instruments"][1]["sensitivities"] = np.arange(10)  # integers: pickled as they are
    data["instruments"][2]["sensitivities"] = list(data["instruments"][2]["sensitivities"])
    data["instruments"].append("not an instrument")
    odd = BatchAccount(account.account, data, account.label)
    for original in (account, odd, BatchAccount("C", {"positions": []}, "x")):
        before = {
            id(i): dict(i) for i in original.data.get("instruments", []) if isinstance(i, dict)
        }
        copy = pickle.loads(pickle.dumps(original, protocol=4))
        assert (copy.account, copy.label) == (original.account, original.label)
        assert _same_data(original.data, copy.data)
        for item in original.data.get("instruments", []):  # the original is not changed
            if isinstance(item, dict):
                assert all(item[k] is v for k, v in before[id(item)].items())
    int_vector = pickle.loads(pickle.dumps(odd)).data["instruments"][1]["sensitivities"]
    assert int_vector.dtype == np.arange(10).dtype


def test_an_array_vector_of_another_type_is_judged_by_the_schema() -> None:
    selected = group(1)
    data = dict(selected.accounts[0].data)
    data["instruments"] = [dict(i) for i in data["instruments"]]
    data["instruments"][2]["sensitivities"] = np.array(["1.0"] * 10)  # strings, not numbers
    with pytest.raises(CaseValidationError) as caught:
        case_format.parse_case(merge_case(selected.shared.data, data))
    assert caught.value.field == "instruments[2].sensitivities[0]"
    assert caught.value.violations[0].message == "must be a number"


def _account_with_vector(vector: Any) -> dict[str, Any]:
    """The first account of a generated batch, its instrument 2's sensitivities ``vector``."""
    selected = group(1)
    data = dict(selected.accounts[0].data)
    data["instruments"] = [dict(i) for i in data["instruments"]]
    data["instruments"][2]["sensitivities"] = vector
    return merge_case(selected.shared.data, data)


def test_array_vectors_are_checked_copied_and_reported_with_every_other_violation() -> None:
    good = np.asarray(group(1).accounts[0].data["instruments"][2]["sensitivities"], dtype=float)
    # a masked array (an ndarray subclass) goes to the schema as a list: masked is None
    masked = np.ma.array(np.r_[good[:1], 1e300, good[2:]], mask=[False, True, *[False] * 8])
    with pytest.raises(CaseValidationError) as caught:
        case_format.parse_case(_account_with_vector(masked))
    assert caught.value.field == "instruments[2].sensitivities[1]"
    # the book keeps a copy of what was checked, not the caller's array
    given = good.copy()
    book = case_format.parse_case(_account_with_vector(given))
    given[1] = np.nan
    kept = book.instruments[list(book.instruments)[2]].sensitivities
    assert kept is not None and np.all(np.isfinite(kept))
    # an array's violation is named beside the schema's, in a case with its own scenarios
    spoilt = _account_with_vector(np.r_[good[:1], np.nan, good[2:]])
    spoilt["positions"] = [dict(p) for p in spoilt["positions"]]
    spoilt["positions"][0]["lot"] = -1
    with pytest.raises(CaseValidationError) as caught:
        case_format.parse_case(spoilt)
    fields = {violation.path for violation in caught.value.violations}
    assert {"positions[0].lot", "instruments[2].sensitivities[1]"} <= fields


def test_inline_outcome_is_the_library_answer() -> None:
    [first, *_] = _outcomes(InlineEngine(), 2)
    assert first.ok and first.account == "CUST-0" and first.index == 0
    assert strip_volatile(first.result) == strip_volatile(jsonable(optimise(books(2)[0]).to_dict()))


def test_the_shared_scenario_set_is_validated_once_per_batch_and_answers_do_not_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each account's case is validated with the scenario set validated once (trusted by
    identity of the shared lists): one scenario validation for the batch, not one per account,
    and the same answers as the library on the same books."""
    calls: list[int] = []
    real = case_format.parse_scenarios

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(case_format, "parse_scenarios", counted)
    selected = batch_group(4)
    calls.clear()  # parse_batch validated the shared part once, for its own check
    outcomes = list(InlineEngine().run(selected.accounts, selected.shared))
    assert len(calls) == 1
    for outcome, book in zip(outcomes, books(4), strict=True):
        assert outcome.result is not None and outcome.result_json is not None
        assert strip_volatile(outcome.result) == strip_volatile(jsonable(optimise(book).to_dict()))
        assert json.loads(outcome.result_json) == outcome.result  # the text the store writes


def test_a_bad_shared_scenario_set_is_not_trusted_and_every_account_names_the_field() -> None:
    selected = group(2)
    shared = dict(selected.shared.data)
    scenarios = dict(shared["scenarios"])
    scenarios["shocks"] = [list(row) for row in scenarios["shocks"]]
    scenarios["shocks"][3][0] = "x"
    shared["scenarios"] = scenarios
    outcomes = [solve_account(i, a, shared) for i, a in enumerate(selected.accounts)]
    for outcome in outcomes:
        assert outcome.error is not None and outcome.error.type == "CaseValidationError"
        assert outcome.error.field is not None
        assert outcome.error.field.startswith("scenarios.shocks[3]")


def test_audit_commits_come_in_chunks_and_store_every_account_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks: list[int] = []
    record_many = AuditStore.record_many

    def counted(self: AuditStore, shared: Any, items: Any, run_number: int) -> int:
        chunks.append(len(items))
        return record_many(self, shared, items, run_number)

    monkeypatch.setattr(AuditStore, "record_many", counted)
    monkeypatch.setattr(batch_run, "COMMIT_ROWS", 3)
    monkeypatch.setattr(batch_run, "COMMIT_SECONDS", 3600.0)
    with open_store(tmp_path / "audit.db") as store:
        summary = run_batch(list(books(7)), engine="inline", audit=store, keep_outcomes=True)
        assert chunks == [3, 3, 1]  # full chunks, then the rest when the run ends
        assert store.count() == 7
        for outcome in summary.outcomes:
            record = store.get("2026-11-24", "EOD", 1, outcome.account)
            assert record is not None and record.result == outcome.result


def test_audit_commits_leave_the_run_free_while_a_chunk_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread commits; the run's thread only hands chunks over (up to
    CHUNKS_AHEAD waiting), and close() returns once every chunk is stored."""
    release = threading.Event()
    record_many = AuditStore.record_many

    def held(self: AuditStore, shared: Any, items: Any, run_number: int) -> int:
        assert release.wait(30)
        return record_many(self, shared, items, run_number)

    monkeypatch.setattr(AuditStore, "record_many", held)
    monkeypatch.setattr(batch_run, "COMMIT_ROWS", 1)
    [selected] = batch_from_books(list(books(batch_run.CHUNKS_AHEAD)))
    outcomes = list(InlineEngine().run(selected.accounts, selected.shared))
    with open_store(tmp_path / "audit.db") as store:
        commits = batch_run.AuditCommits(store, 1)
        for outcome in outcomes:  # the first chunk is held in the writer: nothing blocks
            commits.add(selected.shared, selected.accounts[outcome.index], outcome)
        assert store.count() == 0
        release.set()
        commits.close()
        assert store.count() == len(outcomes)
        assert not commits._writer.is_alive()


def test_batch_file_errors_name_the_field() -> None:
    data = batch_file_data(2)
    with pytest.raises(CaseValidationError, match="format"):
        parse_batch({**data, "format": "xmargin-case/1"})
    duplicate = {**data, "accounts": [data["accounts"][0], data["accounts"][0]]}
    with pytest.raises(CaseValidationError) as error:
        parse_batch(duplicate)
    assert error.value.field == "accounts[1].customer.id"
    unknown = {**data, "accounts": [{**data["accounts"][0], "colour": "red"}]}
    with pytest.raises(CaseValidationError) as error:
        parse_batch(unknown)
    assert error.value.field == "accounts[0].colour"
    # a bad shared model refuses the whole batch before any account runs
    bad_models = {**data, "models": {**data["models"], "CME": {"confidence": 1.5}}}
    with pytest.raises(CaseValidationError) as error:
        parse_batch(bad_models)
    assert error.value.field.startswith("models.CME")


@pytest.mark.parametrize("key", ["acounts", "option", "scenario", "expected", "name"])
def test_a_batch_files_misspelt_or_unknown_key_is_refused(key: str) -> None:
    """A key of the batch file that is neither shared nor ``format``/``accounts`` refuses the
    batch naming it (a misspelt shared part was dropped and every account ran without it)."""
    data = {**batch_file_data(2), key: {"integral": False}}
    with pytest.raises(CaseValidationError) as error:
        parse_batch(data)
    assert error.value.field == key


@pytest.mark.parametrize("written", ["xmargin-batch/2", "xmargin-batch", None])
def test_a_batch_file_of_another_format_says_so(tmp_path: Path, written: str | None) -> None:
    """A file with accounts but another (or no) format is refused at ``format``, not read as a
    case whose customer id is missing."""
    data = batch_file_data(2)
    if written is None:
        data.pop("format")
    else:
        data["format"] = written
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CaseValidationError) as error:
        load_batch(path)
    assert error.value.field == "format", error.value


@pytest.mark.parametrize(("key", "value"), [("id", 5), ("id", "a\nb"), ("name", ["x"])])
def test_an_accounts_label_that_is_not_text_is_named_where_written(key: str, value: Any) -> None:
    """An account whose ``id`` or ``name`` cannot be a case name fails alone, at the key the
    file writes (an ``id`` of 5 was reported at ``accounts[i].name``, a key the file lacked)."""
    data = batch_file_data(2)
    unnamed = {k: v for k, v in data["accounts"][1].items() if k != "name"}
    data["accounts"][1] = {**unnamed, key: value}
    group = parse_batch(data)
    outcomes = sorted(InlineEngine().run(group.accounts, group.shared), key=lambda o: o.index)
    assert [o.ok for o in outcomes] == [True, False]
    failure = outcomes[1].error
    assert failure is not None and failure.field == f"accounts[1].{key}", failure


def test_a_failing_account_fails_alone_and_names_its_field() -> None:
    outcomes = _outcomes(InlineEngine(), 4, bad_lot_at=2)
    assert [o.ok for o in sorted(outcomes, key=lambda o: o.index)] == [True, True, False, True]
    failure = next(o for o in outcomes if not o.ok)
    assert failure.error is not None and failure.result is None
    assert failure.error.type == "CaseValidationError"
    assert failure.error.field == "accounts[2].positions[0].lot"


def test_folder_of_cases_groups_by_shared_inputs_and_matches_the_library() -> None:
    groups = load_batch(CASES_DIR)
    assert sum(len(g.accounts) for g in groups) == len(CASE_FILES)
    outcomes = {o.label: o for g in groups for o in InlineEngine().run(g.accounts, g.shared)}
    for path in CASE_FILES:
        outcome = outcomes[str(path)]
        assert outcome.ok, outcome.error
        expected = jsonable(optimise(load_case(path)).to_dict())
        assert strip_volatile(outcome.result) == strip_volatile(expected)


# --- engines --------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_pool_and_dask_cluster_give_identical_results(dask_engine: DaskEngine) -> None:
    reference = by_account(_outcomes(InlineEngine(), 8, bad_lot_at=5))
    local = _outcomes(LocalPoolEngine(workers=2), 8, bad_lot_at=5)
    on_dask = _outcomes(dask_engine, 8, bad_lot_at=5)
    info = dask_engine.client.scheduler_info()
    worker_pids = set(dask_engine.client.run(os.getpid).values())
    assert len(info["workers"]) == 2 and len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert sorted(o.index for o in local) == sorted(o.index for o in on_dask) == list(range(8))
    assert by_account(local) == reference
    assert by_account(on_dask) == reference
    assert reference["CUST-5"].field == "accounts[5].positions[0].lot"


@pytest.mark.slow
def test_dask_keeps_at_most_max_in_flight_accounts_submitted(
    dask_engine: DaskEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = dask_engine.client
    submitted: list[str] = []
    submit = client.submit

    def counted(*args: Any, **kwargs: Any) -> Any:
        submitted.append(kwargs["key"])
        return submit(*args, **kwargs)

    monkeypatch.setattr(client, "submit", counted)
    engine = DaskEngine(client=client, max_in_flight=2)
    selected = batch_group(8, bad_lot_at=5)
    outcomes: list[AccountOutcome] = []
    for outcome in engine.run(selected.accounts, selected.shared):
        assert len(submitted) - len(outcomes) <= 2  # finished ones are replaced one by one
        outcomes.append(outcome)
    assert len(submitted) == len(set(submitted)) == 8
    assert by_account(outcomes) == by_account(_outcomes(InlineEngine(), 8, bad_lot_at=5))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("per_task", "expected"),
    [
        (3, [[0, 1, 2], [3, 4, 5], [6, 7]]),  # an explicit size, kept
        (0, [[0, 1], [2, 3], [4], [5], [6], [7]]),  # the default, shrinking (2 worker threads)
    ],
)
def test_dask_tasks_of_several_accounts_bring_every_account_back_once(
    dask_engine: DaskEngine,
    monkeypatch: pytest.MonkeyPatch,
    per_task: int,
    expected: list[list[int]],
) -> None:
    client = dask_engine.client
    tasks: list[list[int]] = []
    submit = client.submit

    def counted(*args: Any, **kwargs: Any) -> Any:
        tasks.append(list(args[1]))
        return submit(*args, **kwargs)

    monkeypatch.setattr(client, "submit", counted)
    engine = DaskEngine(client=client, accounts_per_task=per_task)
    outcomes = _outcomes(engine, 8, bad_lot_at=5)
    assert tasks == expected
    assert sorted(o.index for o in outcomes) == list(range(8))
    assert by_account(outcomes) == by_account(_outcomes(InlineEngine(), 8, bad_lot_at=5))


def test_dask_tasks_shrink_towards_the_end_of_a_batch() -> None:
    """By default a task holds up to DASK_ACCOUNTS_PER_TASK accounts, at most a quarter (two
    worker threads) of those not yet given out: every account once, in order, the tasks never
    growing, the last ones of one account; an explicit size is kept as it is."""
    per_task = batch_engines.DASK_ACCOUNTS_PER_TASK
    chunks = batch_engines._task_chunks(1000, per_task, 2, taper=True)
    assert [i for chunk in chunks for i in chunk] == list(range(1000))
    sizes = [len(chunk) for chunk in chunks]
    assert sizes[0] == per_task and sizes == sorted(sizes, reverse=True)
    assert sizes[-4:] == [1, 1, 1, 1]
    given = 0
    for size in sizes:
        assert size == max(1, min(per_task, -(-(1000 - given) // 4)))
        given += size
    assert batch_engines._task_chunks(8, 3, 2, taper=False) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert batch_engines._task_chunks(0, 16, 2, taper=True) == []


def test_dask_tasks_carry_their_accounts_as_one_byte_array() -> None:
    """The client packs a task's accounts as a uint8 array (Dask sends it as a frame of its
    own, not copied into its pickles); the worker reads back the same accounts."""
    selected = group(2)
    packed = batch_engines._packed(selected.accounts)
    assert isinstance(packed, np.ndarray) and packed.dtype == np.uint8 and packed.ndim == 1
    shared = (selected.shared.data, None)
    outcomes = batch_engines._dask_solve([0, 1], packed, shared, None)
    assert by_account(outcomes) == by_account(
        InlineEngine().run(selected.accounts, selected.shared)
    )


@pytest.mark.slow
def test_a_failed_dask_task_of_several_accounts_fails_only_the_account_that_fails(
    dask_engine: DaskEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that fails as a whole (a worker killed again and again, a lost scheduler) is run
    again one account per task: only the account whose own task still fails is failed."""
    client = dask_engine.client
    tasks: list[list[int]] = []
    submit = client.submit

    def poisoned(*args: Any, **kwargs: Any) -> Any:
        tasks.append(list(args[1]))
        if 5 in args[1]:  # the task holding account 5 fails in the worker
            return submit(operator.truediv, 1, 0, key=kwargs["key"], pure=False)
        return submit(*args, **kwargs)

    monkeypatch.setattr(client, "submit", poisoned)
    engine = DaskEngine(client=client, accounts_per_task=3)
    outcomes = _outcomes(engine, 8)
    assert tasks == [[0, 1, 2], [3, 4, 5], [6, 7], [3], [4], [5]]
    assert sorted(o.index for o in outcomes) == list(range(8))
    failed = [o for o in outcomes if not o.ok]
    assert [o.index for o in failed] == [5] and failed[0].error is not None
    assert failed[0].error.type == "ZeroDivisionError"
    reference = by_account(_outcomes(InlineEngine(), 8))
    answers = by_account(outcomes)
    assert {k: v for k, v in answers.items() if k != "CUST-5"} == {
        k: v for k, v in reference.items() if k != "CUST-5"
    }


@pytest.mark.slow
def test_dask_ships_the_scenario_set_once_not_with_every_task(dask_engine: DaskEngine) -> None:
    selected = group(4)
    client = dask_engine.client
    outcomes: list[AccountOutcome] = []
    for outcome in dask_engine.run(selected.accounts, selected.shared):
        if not outcomes:  # mid-run: the shared inputs sit on every worker, under one key,
            # and stay there past the active memory manager's 2 s round (which, on, drops
            # replicas beyond the tasks waiting on them)
            time.sleep(2.5)
            assert dask_engine.shared_key is not None
            held = client.has_what()
            assert len(held) == 2
            assert all(dask_engine.shared_key in keys for keys in held.values())
        outcomes.append(outcome)
    assert len(outcomes) == 4 and all(o.ok for o in outcomes)
    # a task carries one account, a small fraction of the shared scenario set
    account_size = len(json.dumps(jsonable(selected.accounts[0].data)))
    assert account_size * 5 < len(json.dumps(selected.shared.data["scenarios"]))


def test_a_killed_pool_worker_is_replaced_and_every_account_comes_back_once() -> None:
    reference = whole_lot_answers(_outcomes(InlineEngine(), 8, positions=12, integral=True))
    engine = LocalPoolEngine(workers=2)
    selected = batch_group(8, positions=12, integral=True)
    outcomes = []
    killed = None
    for outcome in engine.run(selected.accounts, selected.shared):
        outcomes.append(outcome)
        if killed is None:
            killed = engine.worker_pids()[0]
            os.kill(killed, signal.SIGKILL)
    assert killed is not None and engine.restarts == 1
    assert sorted(o.index for o in outcomes) == list(range(8))
    assert_same_whole_lot_answers(whole_lot_answers(outcomes), reference)


def test_a_pool_account_that_cannot_be_pickled_fails_alone() -> None:
    selected = batch_group(3, positions=12)
    broken = selected.accounts[1]
    accounts = list(selected.accounts)
    accounts[1] = BatchAccount(broken.account, {**broken.data, "name": threading.Lock()}, "x")
    outcomes = sorted(
        LocalPoolEngine(workers=1).run(accounts, selected.shared), key=lambda o: o.index
    )
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].error is not None and "pickle" in outcomes[1].error.message


@pytest.mark.slow
def test_a_killed_dask_worker_has_its_accounts_rerun(dask_engine: DaskEngine) -> None:
    reference = whole_lot_answers(_outcomes(InlineEngine(), 8, positions=12, integral=True))
    selected = batch_group(8, positions=12, integral=True)
    outcomes: list[AccountOutcome] = []
    killed = 0
    for outcome in dask_engine.run(selected.accounts, selected.shared):
        if not outcomes:  # a worker with a task still running (any, if none is)
            busy = [w for w, keys in dask_engine.client.processing().items() if keys]
            pids = dask_engine.client.run(os.getpid, workers=busy[:1] or None)
            killed = next(iter(pids.values()))
            os.kill(killed, signal.SIGKILL)
        outcomes.append(outcome)
    assert killed and killed not in dask_engine.client.run(os.getpid).values()
    assert sorted(o.index for o in outcomes) == list(range(8))
    assert_same_whole_lot_answers(whole_lot_answers(outcomes), reference)


# --- run_batch and the command line ---------------------------------------------------------


def test_run_batch_takes_books_and_totals_them(tmp_path: Path) -> None:
    selected = books(4)
    summary = run_batch(selected, engine="inline", keep_outcomes=True)
    results = [optimise(book) for book in selected]
    assert summary.accounts == summary.computed == 4 and summary.failed == 0
    assert summary.after_total == pytest.approx(sum(r.optimised.total for r in results), 1e-9)
    assert summary.before_total == pytest.approx(sum(r.current.total for r in results), 1e-9)
    assert summary.savings == pytest.approx(summary.before_total - summary.after_total)


def test_cli_batch_summary_and_audit_show(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "batch.json"
    source.write_text(json.dumps(batch_file_data(4, bad_lot_at=1)))
    audit = f"sqlite:///{tmp_path / 'audit.db'}"
    code = cli.main(["batch", str(source), "--audit", audit, "--engine", "inline"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_INCOMPLETE  # one account failed
    summary = json.loads(captured.out)
    assert summary["accounts"] == 4 and summary["failed"] == 1
    assert summary["failures"][0]["field"] == "accounts[1].positions[0].lot"
    assert "4/4 accounts, 1 failed" in captured.err  # the progress bar
    reference = [optimise(b) for i, b in enumerate(books(4)) if i != 1]
    assert summary["total_margin_after"] == pytest.approx(
        sum(r.optimised.total for r in reference), 1e-9
    )
    key = ["--business-date", "2026-11-24", "--cycle", "EOD", "--run-number", "1"]
    code = cli.main(["audit", "show", *key, "--account", "CUST-2", "--audit", audit, "--reproduce"])
    shown = json.loads(capsys.readouterr().out)
    assert code == cli.EXIT_OK and shown["reproduce"]["matches"] is True
    assert strip_volatile(shown["result"]) == strip_volatile(jsonable(reference[1].to_dict()))
    code = cli.main(["audit", "list", *key, "--audit", audit])
    listed = json.loads(capsys.readouterr().out)
    assert code == cli.EXIT_OK
    assert [(a["account"], a["status"]) for a in listed["accounts"]] == [
        ("CUST-0", "OK"),
        ("CUST-1", "FAILED"),
        ("CUST-2", "OK"),
        ("CUST-3", "OK"),
    ]
    code = cli.main(["audit", "show", *key, "--account", "NOBODY", "--audit", audit])
    assert code == cli.EXIT_BAD_INPUT and "no stored answer" in capsys.readouterr().err


def test_cli_batch_rejects_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["batch", str(tmp_path / "missing.json"), "--no-audit"]) == cli.EXIT_BAD_INPUT
    source = tmp_path / "batch.json"
    source.write_text(json.dumps({**batch_file_data(2), "accounts": []}))
    assert cli.main(["batch", str(source), "--no-audit"]) == cli.EXIT_BAD_INPUT
    assert "accounts" in capsys.readouterr().err
    source.write_text(json.dumps(batch_file_data(2)))
    argv = ["batch", str(source), "--no-audit", "--engine", "local", "--scheduler", "tcp://x:1"]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    assert "--scheduler needs --engine dask" in capsys.readouterr().err
    data = batch_file_data(2)
    data["scenarios"]["shocks"][3][2] = float("nan")  # json writes NaN; the batch refuses it
    source.write_text(json.dumps(data))
    assert cli.main(["batch", str(source), "--no-audit"]) == cli.EXIT_BAD_INPUT
    assert "scenarios.shocks[3][2]: must be finite" in capsys.readouterr().err


def _stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM xm_runs").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_batch_killed_midway_resumes_with_every_account_stored_once(tmp_path: Path) -> None:
    count = 12
    source = tmp_path / "batch.json"
    source.write_text(json.dumps(batch_file_data(count, positions=12, integral=True)))
    db = tmp_path / "audit.db"
    argv = [sys.executable, "-m", "xmargin.optimiser.cli", "-q", "batch", str(source)]
    argv += ["--audit", f"sqlite:///{db}", "--workers", "1"]
    process = subprocess.Popen(
        argv, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while _stored(db) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the batch, its pool and its workers
    process.wait(timeout=10)
    process.stdout.close()  # type: ignore[union-attr]
    at_kill = _stored(db)
    assert process.returncode == -signal.SIGKILL
    assert 3 <= at_kill < count, "the kill must land midway"

    rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped_already_stored"] == at_kill
    assert summary["computed"] == count - at_kill and summary["failed"] == 0

    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT account, COUNT(*) FROM xm_runs GROUP BY account ORDER BY account"
        ).fetchall()
    assert sorted(rows) == sorted((f"CUST-{i}", 1) for i in range(count))

    clean = run_batch(
        list(books(count, 12, True)), engine="inline", keep_outcomes=True
    )  # a clean run, in process
    with open_store(db) as store:
        for account, expected in by_account(clean.outcomes).items():
            record = store.get("2026-11-24", "EOD", 1, account)
            assert record is not None and record.status == "OK"
            assert strip_volatile(record.result or {}) == expected
    assert summary["total_margin_after"] == pytest.approx(clean.after_total, rel=1e-12)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_cli_batch_on_a_separate_dask_scheduler_and_workers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--scheduler tcp://...``: a scheduler and a worker started as their own processes."""
    distributed = pytest.importorskip("distributed")
    port = str(_free_port())
    address = f"tcp://127.0.0.1:{port}"
    python = [sys.executable, "-m"]
    scheduler = subprocess.Popen(
        [*python, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [*python, "distributed.cli.dask_worker", address, "--nworkers", "2", "--nthreads", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        source = tmp_path / "batch.json"
        source.write_text(json.dumps(batch_file_data(6)))
        code = cli.main(["-q", "batch", str(source), "--scheduler", address, "--no-audit"])
        summary = json.loads(capsys.readouterr().out)
        assert code == cli.EXIT_OK and summary["engine"] == "dask" and summary["computed"] == 6
        reference = [optimise(book) for book in books(6)]
        assert summary["total_margin_after"] == pytest.approx(
            sum(r.optimised.total for r in reference), rel=1e-12
        )
    finally:
        for process in (worker, scheduler):
            process.terminate()
        for process in (worker, scheduler):
            process.wait(timeout=30)


def test_cli_batch_reports_an_audit_store_failure_and_keeps_what_was_committed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "batch.json"
    source.write_text(json.dumps(batch_file_data(4)))
    audit = f"sqlite:///{tmp_path / 'audit.db'}"
    record_many = AuditStore.record_many
    calls = []

    def failing_record_many(self: AuditStore, *args: Any) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise sqlite3.OperationalError("disk I/O error")
        return record_many(self, *args)

    monkeypatch.setattr(batch_run, "COMMIT_ROWS", 1)  # one commit per account
    monkeypatch.setattr(AuditStore, "record_many", failing_record_many)
    code = cli.main(["-q", "batch", str(source), "--audit", audit, "--engine", "inline"])
    assert code == cli.EXIT_INCOMPLETE
    assert "the audit store failed: OperationalError: disk I/O error" in capsys.readouterr().err
    monkeypatch.setattr(AuditStore, "record_many", record_many)
    with open_store(audit) as store:
        assert store.count() == 2
    assert cli.main(["-q", "batch", str(source), "--audit", audit, "--engine", "inline"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_already_stored"] == 2


# --- stopping a run -------------------------------------------------------------------------


def _hard_accounts(count: int) -> tuple[list[BatchAccount], SharedInputs]:
    """``count`` accounts whose solves run for minutes (whole-lot P&L-vector books: the
    load harness's hard case, small enough to read quickly)."""
    from xmargin.bench.load import hard_case

    shared, own = split_case(hard_case(2))
    accounts = [BatchAccount(f"C{k}", own, f"accounts[{k}]") for k in range(count)]
    return accounts, SharedInputs.of(shared)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop_while_solving(
    run: Iterator[AccountOutcome], pids: Any, stop: threading.Event
) -> tuple[list[AccountOutcome], float, list[int]]:
    """Consume ``run`` in a thread; once its workers (``pids()``) have solved for a CPU
    second, set ``stop``: the outcomes, the seconds the run took to end, the workers."""
    outcomes: list[AccountOutcome] = []
    consumer = threading.Thread(target=lambda: outcomes.extend(run), daemon=True)
    consumer.start()
    deadline = time.monotonic() + 60
    first_seen: dict[int, float] = {}
    while not first_seen or sum(_cpu_seconds(p) - c for p, c in first_seen.items()) < 1.0:
        assert time.monotonic() < deadline, "the accounts never started"
        for pid in pids():
            first_seen.setdefault(pid, _cpu_seconds(pid))
        time.sleep(0.05)
    workers = list(first_seen)
    stop.set()
    stopped = time.monotonic()
    consumer.join(10)
    assert not consumer.is_alive(), "the run did not end when stopped"
    return outcomes, time.monotonic() - stopped, workers


def test_a_stopped_process_pool_run_kills_the_accounts_it_was_solving() -> None:
    accounts, shared = _hard_accounts(4)
    stop = threading.Event()
    engine = LocalPoolEngine(workers=2, stop=stop.is_set)
    outcomes, took, workers = _stop_while_solving(
        engine.run(accounts, shared), engine.worker_pids, stop
    )
    assert outcomes == []  # none finished, none started after the stop
    assert took < 2.0
    assert len(workers) == 2
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # killed and reaped


@pytest.mark.slow
def test_a_stopped_dask_run_interrupts_the_solve_on_its_worker(dask_engine: DaskEngine) -> None:
    """The task's solve reads the run's Dask Event: once stopped, its worker thread is free
    again within a second or two (a cancelled Dask task that kept running would hold it for
    minutes: each worker has one thread, so the probe below would wait for it)."""
    accounts, shared = _hard_accounts(2)
    stop = threading.Event()
    engine = DaskEngine(client=dask_engine.client, stop=stop.is_set)
    workers = dask_engine.client.run(os.getpid)
    outcomes, took, _ = _stop_while_solving(
        engine.run(accounts, shared), lambda: list(workers.values()), stop
    )
    assert outcomes == []
    assert took < 2.0
    started = time.monotonic()
    probes = [
        dask_engine.client.submit(time.monotonic, workers=[address], pure=False)
        for address in workers
    ]
    for probe in probes:
        probe.result(timeout=10)
    assert time.monotonic() - started < 3.0  # both worker threads free: the solves stopped


@pytest.mark.parametrize("bad", [1e300, -1e300, float("nan")])
def test_an_array_vector_is_refused_in_the_schemas_words(bad: float) -> None:
    """An out-of-range or non-finite element of an array vector (checked in bulk) is refused
    with the path and message the schema gives the same vector as a list."""
    good = np.asarray(group(1).accounts[0].data["instruments"][2]["sensitivities"], dtype=float)
    spoilt = np.r_[good[:1], bad, good[2:]]
    refusals = []
    for vector in (spoilt, spoilt.tolist()):
        with pytest.raises(CaseValidationError) as caught:
            case_format.parse_case(_account_with_vector(vector))
        refusals.append([(v.path, v.message) for v in caught.value.violations])
    assert refusals[0] == refusals[1]
