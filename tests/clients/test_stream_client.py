"""``XmarginClient.optimise_stream``: a batch larger than the message limit, from a generator,
answered in full; duplicate ids refused; a registered scenario set by handle."""

from __future__ import annotations

import os
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
    cannot carry them in one message; optimise_stream answers every one. (The same with 300
    reference-size accounts against the default 64 MiB limit, 134 MB together, is run with
    ``XMARGIN_TEST_REFERENCE_STREAM=1``.)"""
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


@pytest.mark.skipif(
    not os.environ.get("XMARGIN_TEST_REFERENCE_STREAM"),
    reason="300 reference-size solves (224 s on a loaded 2-core machine): set "
    "XMARGIN_TEST_REFERENCE_STREAM=1",
)
def test_three_hundred_reference_accounts_over_the_default_limit() -> None:
    """300 reference-size accounts (300 positions x 2,520 scenarios, 0.45 MB each, 134 MB
    together: twice the default 64 MiB limit) through optimise_stream, all answered."""
    from bench.books import REFERENCE_SEED, make_book
    from xmargin.optimiser.case_format import book_to_dict
    from xmargin.optimiser.sample import generate_scenarios

    book = make_book(300, 2520, REFERENCE_SEED, scenario_set=generate_scenarios(2520, 1))
    case = book_to_dict(book)
    assert ACCOUNTS * convert.account_book(case).ByteSize() > 2 * 64 * 1024 * 1024
    running = start(workers=2, max_queue=4)
    try:
        with XmarginClient(f"127.0.0.1:{running.port}", timeout=900) as client:
            items = list(client.optimise_stream(_accounts(case, ACCOUNTS, [])))
    finally:
        running.stop(0)
    assert sorted(item.index for item in items) == list(range(ACCOUNTS))
    assert all(item.ok for item in items)
