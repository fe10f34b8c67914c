"""``XmarginClient.optimise_stream``: a batch larger than the message limit, from a generator,
answered in full; duplicate ids refused; a registered scenario set by handle."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.harness import start
from xmargin.clients import XmarginClient, convert
from xmargin.clients.errors import XmarginClientError
from xmargin.server import RunningServer

ACCOUNTS = 300


@pytest.fixture(scope="module")
def one_mib_server() -> Iterator[RunningServer]:
    """Two solver threads and a 1 MiB message limit (``--max-message-mb 1``)."""
    running = start(workers=2, max_queue=4, max_message_mb=1)
    yield running
    running.stop(0)


def _accounts(case: dict[str, Any], count: int, produced: list[int]) -> Iterator[dict[str, Any]]:
    """``count`` copies of ``case`` under distinct customers, made only when asked for."""
    for k in range(count):
        account = dict(case, name=f"account-{k:04d}")  # shares the case's other parts
        account["customer"] = dict(case["customer"], id=f"CUST-{k:04d}")
        produced.append(k)
        yield account


def _padded(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Case 01 (a basis trade: a quick solve) carrying, unheld, case 03's instrument with a
    full P&L vector: ~8.7 KB as an AccountBook, against ~0.4 KB without it."""
    case = dict(cases["01-basis-trade-10y"])
    vector = next(i for i in cases["03-mixed-ineligible-hedges"]["instruments"] if "pnl" in i)
    case["instruments"] = [*case["instruments"], dict(vector, id="UNHELD-PNL-VECTOR")]
    return case


def test_a_batch_of_twice_the_message_limit_is_answered_in_full(
    one_mib_server: RunningServer, cases: dict[str, dict[str, Any]]
) -> None:
    """The message-size point made cheaply: the server's limit is lowered to 1 MiB and 300
    small accounts (quick solves, each carrying an unheld instrument with a 1,000-scenario
    P&L vector: ~2.6 MB together, over twice the limit) go up from a generator. OptimiseBatch
    cannot carry them in one message; optimise_stream answers every one. (The same at the
    default 64 MiB limit: the test below.)"""
    case = _padded(cases)
    size = convert.account_book(case).ByteSize()
    assert ACCOUNTS * size > 2 * 1024 * 1024
    with XmarginClient(f"127.0.0.1:{one_mib_server.port}", timeout=300) as client:
        with pytest.raises(XmarginClientError) as too_big:
            list(client.optimise_batch(list(_accounts(case, ACCOUNTS, []))))
        assert too_big.value.code.name == "RESOURCE_EXHAUSTED"

        produced: list[int] = []
        seen: list[int] = []
        items = []
        for item in client.optimise_stream(_accounts(case, ACCOUNTS, produced)):
            seen.append(len(produced))
            items.append(item)
    assert sorted(item.index for item in items) == list(range(ACCOUNTS))
    assert all(item.ok for item in items), [i.failure for i in items if not i.ok][:3]
    assert {item.name for item in items} == {f"account-{k:04d}" for k in range(ACCOUNTS)}
    assert [item.completed for item in items] == list(range(1, ACCOUNTS + 1))
    assert items[-1].total == ACCOUNTS
    totals = {round(item.answer.optimised.total, 6) for item in items if item.answer}
    assert len(totals) == 1  # the same book under 300 names: one answer
    assert seen[0] < ACCOUNTS  # the first answer came before the generator was drained


def test_the_stream_matches_single_calls_and_refuses_duplicates(
    one_mib_server: RunningServer, cases: dict[str, dict[str, Any]]
) -> None:
    names = sorted(cases)
    with XmarginClient(f"127.0.0.1:{one_mib_server.port}", timeout=120) as client:
        handle = client.register_scenario_set("client-stream", cases[names[0]])
        items = {i.index: i for i in client.optimise_stream(cases[n] for n in names)}
        by_handle = {
            i.index: i
            for i in client.optimise_stream(
                [cases[n] for n in names], shared=cases[names[0]], scenario_set=handle
            )
        }
        single = client.optimise(cases[names[1]])
        twice = list(client.optimise_stream([cases[names[1]], cases[names[1]]]))
        assert list(client.optimise_stream([])) == []
    assert sorted(items) == list(range(len(names)))
    assert items[1].answer is not None
    assert items[1].answer.optimised.total == pytest.approx(single.optimised.total, rel=1e-9)
    for index, item in items.items():
        assert item.ok == by_handle[index].ok
        if item.answer is not None and by_handle[index].answer is not None:
            assert by_handle[index].answer.optimised.total == pytest.approx(
                item.answer.optimised.total, rel=1e-9
            )
    refused = [i for i in twice if not i.ok]
    assert [i.index for i in refused] == [1]
    assert refused[0].failure is not None and refused[0].failure.code == "INVALID_ARGUMENT"


def _reference_size(cases: dict[str, dict[str, Any]], target: int) -> dict[str, Any]:
    """Case 01 (a quick solve) carrying, unheld, copies of case 03's P&L-vector instrument
    (1,000 scenarios: ~8 KB each) until its AccountBook is at least ``target`` bytes."""
    case = dict(cases["01-basis-trade-10y"])
    vector = next(i for i in cases["03-mixed-ineligible-hedges"]["instruments"] if "pnl" in i)
    padding: list[dict[str, Any]] = []
    while convert.account_book(dict(case, instruments=case["instruments"] + padding)).ByteSize() < (
        target
    ):
        padding.append(dict(vector, id=f"UNHELD-PNL-{len(padding):03d}"))
    return dict(case, instruments=[*case["instruments"], *padding])


def test_three_hundred_reference_size_accounts_over_the_default_limit(
    cases: dict[str, dict[str, Any]],
) -> None:
    """The message limit at its default, 64 MiB: 300 accounts of the reference account's size
    on the wire (0.45 MB each, as a 300-position x 2,520-scenario book: 134 MB together, over
    twice the limit) go up through optimise_stream from a generator, and every one is answered.
    What makes them that size is ~55 unheld P&L-vector instruments each, so that they solve
    in milliseconds: this shows the bytes of a reference-size batch stream through the default
    limit and the server's read, validate, solve and answer loop, not how long 300 reference
    books take to solve (that is the benchmark's; ~224 s on a loaded 2-core machine)."""
    reference_bytes = 450_000
    case = _reference_size(cases, reference_bytes)
    size = convert.account_book(case).ByteSize()
    assert ACCOUNTS * size > 2 * 64 * 1024 * 1024
    running = start(workers=2, max_queue=4)
    try:
        with XmarginClient(f"127.0.0.1:{running.port}", timeout=600) as client:
            items = list(client.optimise_stream(_accounts(case, ACCOUNTS, [])))
    finally:
        running.stop(0)
    assert sorted(item.index for item in items) == list(range(ACCOUNTS))
    assert all(item.ok for item in items), [i.failure for i in items if not i.ok][:3]
    totals = {round(item.answer.optimised.total, 6) for item in items if item.answer}
    assert len(totals) == 1  # the same book under 300 names: one answer
