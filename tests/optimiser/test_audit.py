"""The audit store on SQLite and on a real PostgreSQL ($XMARGIN_TEST_PG_DSN, which .ci/run
sets after starting one): the key, the versions, exactly-once writes, resume, reproduction."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import assert_tree_close
from tests.optimiser.batches import batch_file_data, batch_group, books, by_account
from xmargin.optimiser import cli, default_rulebook, optimise
from xmargin.optimiser.audit import (
    SQLITE_PAGE_SIZE,
    AuditStore,
    compare_results,
    open_store,
    reproduce,
)
from xmargin.optimiser.batch import (
    AccountError,
    AccountOutcome,
    BatchAccount,
    InlineEngine,
    SharedInputs,
    merge_case,
    parse_batch,
    run_batch,
    strip_volatile,
)
from xmargin.optimiser.batch.accounts import account_book
from xmargin.optimiser.jsonvalues import json_and_text

PG_DSN = os.environ.get("XMARGIN_TEST_PG_DSN")
DATE, CYCLE = "2026-11-24", "EOD"


@contextmanager
def _postgres_url() -> Iterator[str]:
    """The DSN of a fresh PostgreSQL schema (its search path), dropped afterwards."""
    if not PG_DSN:
        pytest.skip("XMARGIN_TEST_PG_DSN is not set: no PostgreSQL server to test against")
    psycopg = pytest.importorskip("psycopg")
    schema = f"xm_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for a fresh, empty store of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        with _postgres_url() as url:
            yield url


@pytest.fixture
def store(store_url: str) -> Iterator[AuditStore]:
    with open_store(store_url) as opened:
        yield opened


def test_a_stored_account_keeps_its_request_result_and_versions(store: AuditStore) -> None:
    selected = batch_group(3)
    summary = run_batch(
        selected.accounts, selected.shared, InlineEngine(), audit=store, keep_outcomes=True
    )
    assert summary.computed == 3 and store.count() == 3
    record = store.get(DATE, CYCLE, 1, "CUST-1")
    assert record is not None and record.status == "OK" and record.error is None
    outcome = next(o for o in summary.outcomes if o.account == "CUST-1")
    assert record.result == outcome.result  # JSON round trip is exact
    assert store.request(record) == merge_case(selected.shared.data, selected.accounts[1].data)
    rulebook = default_rulebook(books(3)[1].business_date)
    assert record.versions.xmargin == metadata.version("xmargin")
    assert record.versions.rulebook_name == rulebook.name
    assert record.versions.rulebook_effective_date == rulebook.effective_date.isoformat()
    assert outcome.code_version == record.versions.xmargin
    assert store.get(DATE, CYCLE, 2, "CUST-1") is None  # another run number is another key
    assert store.get(DATE, "ITD", 1, "CUST-1") is None


def test_a_record_knows_its_key_and_its_request(store: AuditStore) -> None:
    selected = batch_group(2)
    run_batch(selected.accounts, selected.shared, InlineEngine(), audit=store)
    record = store.get(DATE, CYCLE, 1, "CUST-1")
    assert record is not None
    assert record.key == {
        "business_date": DATE,
        "cycle": CYCLE,
        "run_number": 1,
        "account": "CUST-1",
    }
    assert record.to_dict()["key"] == record.key
    account = selected.accounts[1]
    assert account.account == "CUST-1"
    assert record.same_request(selected.shared, account)
    reread = BatchAccount(account.account, json.loads(json.dumps(account.data)), "elsewhere")
    assert record.same_request(selected.shared, reread)  # equal data; the label is no part
    assert not record.same_request(selected.shared, selected.accounts[0])
    other = SharedInputs.of({**selected.shared.data, "cycle": "ITD"})
    assert not record.same_request(other, account)


def test_the_models_hash_follows_the_model_parameters(store: AuditStore) -> None:
    shared = batch_group(1).shared
    models = json.loads(json.dumps(shared.data["models"]))
    models["CME"]["confidence"] = 0.995
    changed = SharedInputs.of({**shared.data, "models": models})
    same = SharedInputs.of(json.loads(json.dumps(shared.data)))
    assert store.prepare(same).models_sha256 == store.prepare(shared).models_sha256
    assert store.prepare(changed).models_sha256 != store.prepare(shared).models_sha256
    assert store.prepare(changed).scenarios_sha256 == store.prepare(shared).scenarios_sha256


def test_each_account_is_stored_exactly_once(store: AuditStore) -> None:
    selected = batch_group(2)
    account = selected.accounts[0]
    ok = next(iter(InlineEngine().run([account], selected.shared)))
    failed = AccountOutcome(0, account.account, account.label, error=AccountError("X", "boom"))
    assert store.record(selected.shared, account, failed, 1)
    assert store.get(DATE, CYCLE, 1, account.account).status == "FAILED"  # type: ignore[union-attr]
    assert store.record(selected.shared, account, ok, 1)  # a retry replaces a failure
    assert not store.record(selected.shared, account, failed, 1)  # never an OK answer
    assert not store.record(selected.shared, account, ok, 1)
    record = store.get(DATE, CYCLE, 1, account.account)
    assert record is not None and record.status == "OK" and record.result == ok.result
    assert store.count() == 1
    assert store.accounts(DATE, CYCLE, 1) == [
        (account.account, "OK", ok.result["current"]["total"], ok.result["optimised"]["total"])
    ]


def test_the_shared_inputs_are_stored_once_per_content(store: AuditStore) -> None:
    selected = batch_group(4)
    run_batch(selected.accounts, selected.shared, InlineEngine(), audit=store)
    run_batch(selected.accounts, selected.shared, InlineEngine(), audit=store, run_number=2)
    with store._transaction() as cursor:
        cursor.execute("SELECT COUNT(*) FROM xm_payloads")
        assert cursor.fetchone()[0] == 1
    assert store.count() == 8


def test_a_rerun_skips_what_is_stored_and_totals_the_whole_run(store: AuditStore) -> None:
    selected = batch_group(6)
    clean = run_batch(selected.accounts, selected.shared, InlineEngine(), keep_outcomes=True)
    # a "crash" after three accounts: only they reached the store
    first = run_batch(selected.accounts[:3], selected.shared, InlineEngine(), audit=store)
    assert first.computed == 3
    rerun = run_batch(
        selected.accounts, selected.shared, InlineEngine(), audit=store, keep_outcomes=True
    )
    assert (rerun.skipped, rerun.computed, rerun.accounts) == (3, 3, 6)
    assert {o.account for o in rerun.outcomes} == {f"CUST-{i}" for i in range(3, 6)}
    assert rerun.after_total == pytest.approx(clean.after_total, rel=1e-12)
    assert rerun.before_total == pytest.approx(clean.before_total, rel=1e-12)
    stored = {}
    for account in selected.accounts:
        record = store.get(DATE, CYCLE, 1, account.account)
        assert record is not None and record.result is not None
        stored[account.account] = strip_volatile(record.result)
    assert_tree_close(stored, by_account(clean.outcomes))


def test_reproduce_matches_and_catches_a_tampered_answer(store: AuditStore) -> None:
    selected = batch_group(2, bad_lot_at=1)
    run_batch(selected.accounts, selected.shared, InlineEngine(), audit=store)
    good = store.get(DATE, CYCLE, 1, "CUST-0")
    bad = store.get(DATE, CYCLE, 1, "CUST-1")
    assert good is not None and bad is not None and bad.status == "FAILED"
    assert reproduce(store, good)["matches"] is True
    assert reproduce(store, bad)["matches"] is True  # the same failure again
    tampered = json.loads(json.dumps(good.result))
    tampered["optimised"]["total"] *= 1.001
    changed = dataclasses.replace(good, result=tampered)
    check = reproduce(store, changed)
    assert check["matches"] is False
    assert any(d.startswith("result.optimised.total") for d in check["differences"])


def test_an_unproven_answer_reproduces_by_its_own_figures(store: AuditStore) -> None:
    """A stored answer that stopped at its time budget (here the limit came before any answer:
    the current allocation kept, TIME_LIMIT) is not what a new solve finds, yet it holds: its
    allocation evaluated again gives its figures, so it matches and the new solve's differences
    are listed beside; the same answer with one figure changed does not match."""
    selected = batch_group(1)
    run_batch(selected.accounts, selected.shared, InlineEngine(), audit=store)
    proven = store.get(DATE, CYCLE, 1, "CUST-0")
    assert proven is not None and proven.result is not None
    assert proven.result["solver"]["source"] == "OPTIMUM"
    shared = SharedInputs.of(store.shared(proven.request_shared))
    book = account_book(
        BatchAccount(proven.account, proven.request_account, proven.label), shared.data
    )
    stopped = optimise(
        dataclasses.replace(book, options=dataclasses.replace(book.options, time_limit=1e-9))
    )
    assert stopped.stats.source.value == "CURRENT"
    assert stopped.optimised.total > proven.result["optimised"]["total"] * 1.01
    unproven = json.loads(json_and_text(stopped.to_dict())[1])

    check = reproduce(store, dataclasses.replace(proven, result=unproven))
    assert check["matches"] is True and check["differences"] == []
    assert check["stored_answer_proven"] is False
    assert any(d.startswith("result.optimised.total") for d in check["solve_differences"])

    unproven["optimised"]["S_F"] *= 1.001
    check = reproduce(store, dataclasses.replace(proven, result=unproven))
    assert check["matches"] is False
    assert [d.split(":")[0] for d in check["differences"]] == ["result.optimised.S_F"]

    proven_check = reproduce(store, proven)
    assert proven_check["stored_answer_proven"] is True
    assert proven_check["solve_differences"] == []


def test_compare_results_ignores_timings_only() -> None:
    stored = {"solver": {"solve_seconds": 1.0, "iterations": 3}, "total": 100.0}
    assert (
        compare_results(stored, {"solver": {"solve_seconds": 9.0, "iterations": 3}, "total": 100.0})
        == []
    )
    assert compare_results(
        stored, {"solver": {"solve_seconds": 1.0, "iterations": 4}, "total": 100.0}
    )


def test_concurrent_writers_store_each_account_once(store_url: str) -> None:
    """Two servers (two connections, two threads) finishing the same accounts."""
    selected = batch_group(4)
    outcomes = list(InlineEngine().run(selected.accounts, selected.shared))
    stores = [open_store(store_url) for _ in range(2)]
    written: list[bool] = []
    lock = threading.Lock()

    def write(target: AuditStore) -> None:
        for outcome in outcomes:
            stored = target.record(selected.shared, selected.accounts[outcome.index], outcome, 1)
            with lock:
                written.append(stored)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert stores[0].count() == 4
        assert written.count(True) == 4 and written.count(False) == 4
    finally:
        for opened in stores:
            opened.close()


def test_sqlite_store_is_a_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "audit.db"
    with open_store(f"sqlite:///{path}") as store:
        with store._transaction() as cursor:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0] == "wal"
            cursor.execute("PRAGMA page_size")
            assert cursor.fetchone()[0] == SQLITE_PAGE_SIZE
    assert path.is_file()
    with pytest.raises(ValueError, match="unknown audit store"):
        open_store("mysql://somewhere/db")


def test_sqlite_store_made_before_keeps_its_page_size(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA page_size=4096")
        connection.execute("CREATE TABLE other (x INTEGER)")
        connection.commit()
    with open_store(path) as store:
        store.prepare(SharedInputs.of({"business_date": "2026-11-24"}))
        with store._transaction() as cursor:
            cursor.execute("PRAGMA page_size")
            assert cursor.fetchone()[0] == 4096


def test_cli_batch_into_the_store_and_audit_show(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "batch.json"
    source.write_text(json.dumps(batch_file_data(3)))
    argv = ["batch", str(source), "--audit", store_url, "--engine", "inline", "--run-number", "7"]
    assert cli.main(argv) == cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["computed"] == 3 and summary["run_number"] == 7
    assert "***" in summary["audit"] or summary["audit"].endswith("audit.db")  # no password
    assert cli.main(argv) == cli.EXIT_OK  # the rerun finds everything stored
    assert json.loads(capsys.readouterr().out)["skipped_already_stored"] == 3
    key = ["--business-date", DATE, "--cycle", CYCLE, "--run-number", "7", "--account", "CUST-2"]
    assert cli.main(["audit", "show", *key, "--audit", store_url, "--reproduce"]) == cli.EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["reproduce"]["matches"] is True and shown["status"] == "OK"
    with open_store(store_url) as store:
        record = store.get(DATE, CYCLE, 7, "CUST-2")
        assert record is not None and shown["result"] == record.result


def _opened_together(url: str, count: int = 4) -> tuple[list[AuditStore], list[BaseException]]:
    """``count`` stores of ``url`` opened at once (one thread each), and the errors raised."""
    opened: list[AuditStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(open_store(url))
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return opened, errors


def test_sqlite_stores_opened_together_on_a_new_file_all_open(tmp_path: Path) -> None:
    """Four stores opened at once on a new SQLite file, 80 times: switching the file to WAL
    answered "database is locked" at once (no busy wait) in 17 of 300 such tries."""
    for attempt in range(80):
        opened, errors = _opened_together(f"sqlite:///{tmp_path / f'audit-{attempt}.db'}")
        for store in opened:
            store.close()
        assert errors == [] and len(opened) == 4, (attempt, errors)


def test_stores_opened_together_create_the_schema_once(store_url: str) -> None:
    """Several servers starting at once against one empty database."""
    opened, errors = _opened_together(store_url)
    try:
        assert errors == [] and len(opened) == 4
        with opened[0]._transaction() as cursor:
            cursor.execute("SELECT COUNT(*), MAX(version) FROM xm_schema")
            assert tuple(cursor.fetchone()) == (1, 1)
    finally:
        for store in opened:
            store.close()


def test_the_version_stored_is_the_solving_processs(store: AuditStore) -> None:
    """A Dask worker on other code than the client's: its version is what the row says."""
    selected = batch_group(1)
    [outcome] = InlineEngine().run(selected.accounts, selected.shared)
    elsewhere = dataclasses.replace(outcome, code_version="9.9.9")
    assert store.record(selected.shared, selected.accounts[0], elsewhere, 1)
    record = store.get(DATE, CYCLE, 1, selected.accounts[0].account)
    assert record is not None and record.versions.xmargin == "9.9.9"


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda account: account.__setitem__("name", "\ud800"), id="lone-surrogate"),
        pytest.param(
            lambda account: account["customer"].__setitem__(
                "notes", json.loads("[" * 300 + "]" * 300)
            ),
            id="deep-nesting",
        ),
    ],
)
def test_an_account_that_pydantic_core_cannot_encode_fails_alone_and_is_stored(
    tmp_path: Path, spoil: Any
) -> None:
    """Data that pydantic-core's encoder refuses (stored compact JSON) but json.dumps writes:
    the account fails validation, and both it and the good one are stored."""
    data = batch_file_data(2)
    spoil(data["accounts"][0])
    group = parse_batch(data)
    store = open_store(tmp_path / "audit.db")
    summary = run_batch(group.accounts, group.shared, "inline", audit=store)
    assert summary.failed == 1 and summary.computed == 2
    assert store.count() == 2
