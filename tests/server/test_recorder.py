"""The server's audit trail below the RPCs: two servers racing on one key, the two ways of
looking a run up, and a store that fails."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from xmargin.clients.v1 import result_pb2, service_pb2
from xmargin.optimiser.audit import open_store
from xmargin.optimiser.batch import BatchAccount, SharedInputs, split_case
from xmargin.server import recorder as recorder_module
from xmargin.server.batching import ProtoSolve
from xmargin.server.errors import AuditError, RunConflictError
from xmargin.server.recorder import Recorder


def parts(case: dict[str, Any]) -> tuple[SharedInputs, BatchAccount]:
    shared, own = split_case(case)
    return SharedInputs.of(shared), BatchAccount(case["customer"]["id"], own, "account")


def test_the_first_of_two_servers_wins_and_the_other_returns_its_answer(
    tmp_path: Path, cases: dict[str, dict[str, Any]]
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with open_store(url) as one, open_store(url) as other:
        first, second = Recorder(one), Recorder(other)
        shared, account = parts(cases["01-basis-trade-10y"])
        # Both solved the same request; the first to write wins.
        mine = ProtoSolve()(0, account, shared.data)
        theirs = ProtoSolve()(0, account, shared.data)
        assert mine.payload is not None and theirs.payload is not None
        assert first.record(shared, account, mine, 1) == (mine, None)
        answer, error = second.record(shared, account, theirs, 1)
        assert error is None and answer.payload is not None
        stored = result_pb2.OptimiseResult.FromString(answer.payload)
        assert stored == result_pb2.OptimiseResult.FromString(mine.payload)  # timings too
        assert answer.result == mine.result and one.count() == 1

        changed = copy.deepcopy(cases["01-basis-trade-10y"])
        changed["positions"][0]["quantity"] *= 2
        shared2, account2 = parts(changed)
        late = ProtoSolve()(0, account2, shared2.data)
        refused, conflict = second.record(shared2, account2, late, 1)
        assert isinstance(conflict, RunConflictError) and refused.payload is not None
        assert service_pb2.AccountError.FromString(refused.payload).code == "ALREADY_EXISTS"
        assert one.count() == 1


def test_a_run_listed_at_once_and_account_by_account_agree(
    tmp_path: Path, cases: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(tmp_path / "audit.db") as store:
        recorder = Recorder(store)
        names = sorted(cases)[:3]
        both = [parts(cases[name]) for name in names]
        shared = both[0][0]
        accounts = [account for _, account in both]
        recorder.record(shared, accounts[1], ProtoSolve()(1, accounts[1], shared.data), 2)
        one_by_one = recorder.prior(shared, accounts, 2)
        monkeypatch.setattr(recorder_module, "LIST_BEYOND", 0)
        listed = recorder.prior(shared, accounts, 2)
        assert list(one_by_one) == list(listed) == [1]
        assert one_by_one[1][0].payload == listed[1][0].payload
        assert recorder.prior(shared, accounts, 3) == {}


def test_a_store_that_cannot_write_fails_the_account_with_unavailable(
    tmp_path: Path, cases: dict[str, dict[str, Any]]
) -> None:
    store = open_store(tmp_path / "audit.db")
    recorder = Recorder(store)
    shared, account = parts(cases["04-firm-not-eligible"])
    outcome = ProtoSolve()(0, account, shared.data)
    store.close()
    failed, error = recorder.record(shared, account, outcome, 1)
    assert isinstance(error, AuditError) and failed.result is None
    assert failed.payload is not None
    assert service_pb2.AccountError.FromString(failed.payload).code == "UNAVAILABLE"
    with pytest.raises(AuditError):
        recorder.prior(shared, [account], 1)


@pytest.mark.parametrize("listed", [False, True], ids=["one by one", "listed"])
@pytest.mark.parametrize(
    "break_key",
    [
        lambda case: case["customer"].__setitem__("id", "CUST\x00X"),
        lambda case: case["customer"].__setitem__("id", "C" * 65),
        lambda case: case.__setitem__("business_date", "2026-11-24\x00"),
    ],
    ids=["NUL in the customer id", "65-character customer id", "NUL in the business date"],
)
def test_the_store_is_never_asked_about_a_key_it_cannot_hold(
    tmp_path: Path,
    cases: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    break_key: Any,
    listed: bool,
) -> None:
    """Looking up a key with a NUL failed on PostgreSQL (DataError: UNAVAILABLE for a request
    that parsing refuses, INVALID_ARGUMENT, on SQLite): such a key has no prior answer, and
    the store is not asked."""
    case = copy.deepcopy(cases["01-basis-trade-10y"])
    break_key(case)
    shared, account = parts(case)
    with open_store(tmp_path / "audit.db") as store:

        def refuse(*args: Any) -> Any:
            raise AssertionError(f"the store was asked about {args!r}")

        monkeypatch.setattr(store, "get", refuse)
        monkeypatch.setattr(store, "accounts", refuse)
        if listed:
            monkeypatch.setattr(recorder_module, "LIST_BEYOND", 0)
        assert Recorder(store).prior(shared, [account], 1) == {}
