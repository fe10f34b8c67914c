"""Scenario sets in the server's store: content-addressed, shared by every server on the same
store (SQLite file or PostgreSQL), kept across restarts, cached within a byte budget, and
described (never returned) by GetScenarioSet / ListScenarioSets."""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.optimiser.test_audit import _postgres_url
from tests.server.harness import optimise_request, start
from xmargin.clients.v1 import book_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.optimiser.audit import open_store
from xmargin.server.convert import ResolvedScenarios, validated_scenarios
from xmargin.server.errors import ScenarioSetNotFoundError
from xmargin.server.scenario_store import ScenarioRegistry, python_bytes


def _scenarios(seed: int, rows: int = 40, width: int = 3) -> ResolvedScenarios:
    """A valid set (date ids, oldest first), as registration would have validated it."""
    shocks = np.random.default_rng(seed).normal(size=(rows, width))
    first = dt.date(2020, 1, 1)
    ids = [(first + dt.timedelta(days=i)).isoformat() for i in range(rows)]
    return validated_scenarios([f"F{k}" for k in range(width)], ids, shocks, "x")


def test_a_set_registered_in_one_registry_is_read_back_by_another_on_the_same_file(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first = ScenarioRegistry(open_store(url), owns_store=True)
    given = _scenarios(1)
    entry = first.register("hist", given, "alice")
    assert (entry.set_id, entry.version) == ("hist", 1)
    assert first.register("hist", given, "bob").version == 1  # same content, same version
    assert first.register("hist", _scenarios(2), "bob").version == 2
    first.close()

    second = ScenarioRegistry(open_store(url), owns_store=True)  # "another server", "restarted"
    read = second.get("hist", 1)
    assert read.fingerprint == entry.fingerprint == ScenarioRegistry.fingerprint(given)
    assert read.scenarios.factors == given.factors and read.scenarios.ids == given.ids
    assert np.array_equal(np.array(read.scenarios.shocks), np.array(given.shocks))
    assert read.scenarios.path == "scenario_set_ref"
    info = second.info("hist", 1)
    assert (info.factor_count, info.scenario_count, info.byte_count) == (3, 40, 40 * 3 * 8)
    assert info.registered_by == "alice"
    assert second.info("hist", 0).version == 2  # 0: the latest
    with pytest.raises(ScenarioSetNotFoundError):
        second.get("hist", 3)
    with pytest.raises(ScenarioSetNotFoundError):
        second.get("hist", 0)  # a computation names its version
    second.close()


def test_the_cache_stays_within_its_bytes_and_evicted_sets_come_back_from_the_store() -> None:
    one = python_bytes(_scenarios(0))
    registry = ScenarioRegistry(cache_bytes=int(2.5 * one))
    entries = [registry.register(f"set-{k}", _scenarios(k), "x") for k in range(5)]
    assert registry.cached_bytes <= registry.cache_bytes
    assert len(registry.cached()) == 2
    assert entries[0].fingerprint not in registry.cached()  # least recently used went first
    again = registry.get("set-0", 1)  # evicted from the cache, never from the store
    assert np.array_equal(np.array(again.scenarios.shocks), np.array(_scenarios(0).shocks))
    assert registry.cached()[-1] == entries[0].fingerprint
    assert registry.cached_bytes <= registry.cache_bytes
    assert [i.set_id for i in registry.list()] == [f"set-{k}" for k in range(5)]


def test_a_set_larger_than_the_cache_is_still_served() -> None:
    registry = ScenarioRegistry(cache_bytes=1024)
    registry.register("big", _scenarios(3), "x")
    assert registry.cached() == []
    assert len(registry.get("big", 1).scenarios.ids) == 40


def test_registrations_racing_on_one_id_get_distinct_versions(store_url: str) -> None:
    url = store_url
    registries = [ScenarioRegistry(open_store(url), owns_store=True) for _ in range(4)]
    versions: list[int] = []
    lock = threading.Lock()

    def register(k: int) -> None:
        entry = registries[k].register("race", _scenarios(10 + k), f"client-{k}")
        with lock:
            versions.append(entry.version)

    threads = [threading.Thread(target=register, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == [1, 2, 3, 4]
    for registry in registries:
        registry.close()


def test_get_and_list_describe_registered_sets(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    inline = optimise_request(cases["02-butterfly-2s5s10s"])
    ids = ["meta-a", "meta-b", "meta-c"]
    for set_id in ids:
        stub.RegisterScenarioSet(
            service_pb2.RegisterScenarioSetRequest(
                run=inline.run, id=set_id, scenario_set=inline.scenario_set
            ),
            timeout=10,
        )
    got = stub.GetScenarioSet(
        service_pb2.GetScenarioSetRequest(ref=book_pb2.ScenarioSetRef(id="meta-b")), timeout=10
    ).scenario_set
    factors, scenarios = len(inline.scenario_set.factors), len(inline.scenario_set.ids)
    assert (got.ref.id, got.ref.version) == ("meta-b", 1)
    assert (got.factor_count, got.scenario_count) == (factors, scenarios)
    assert got.bytes == factors * scenarios * 8
    assert got.registered_at.seconds > 0
    assert got.registered_by.startswith("peer:")  # no token, no certificate: the address

    listed: list[str] = []
    token = ""
    while True:
        page = stub.ListScenarioSets(
            service_pb2.ListScenarioSetsRequest(page_size=1, page_token=token), timeout=10
        )
        assert len(page.scenario_sets) <= 1
        listed += [s.ref.id for s in page.scenario_sets]
        token = page.next_page_token
        if not token:
            break
    assert [i for i in listed if i in ids] == ids
    only = stub.ListScenarioSets(service_pb2.ListScenarioSetsRequest(id="meta-c"), timeout=10)
    assert [s.ref.id for s in only.scenario_sets] == ["meta-c"]
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetScenarioSet(
            service_pb2.GetScenarioSetRequest(ref=book_pb2.ScenarioSetRef(id="nope", version=1)),
            timeout=10,
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as bad:
        stub.ListScenarioSets(service_pb2.ListScenarioSetsRequest(page_token="%%"), timeout=10)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@contextmanager
def _two_servers(store: str) -> Iterator[tuple[XmarginServiceStub, XmarginServiceStub]]:
    servers = [start(workers=1, max_queue=2, store=store) for _ in range(2)]
    channels = [grpc.insecure_channel(f"127.0.0.1:{s.port}") for s in servers]
    try:
        yield XmarginServiceStub(channels[0]), XmarginServiceStub(channels[1])
    finally:
        for channel in channels:
            channel.close()
        for running in servers:
            running.stop(0)


def _shared_through(
    first: XmarginServiceStub, second: XmarginServiceStub, case: dict[str, Any]
) -> None:
    """Register through ``first``, use by reference through ``second``: the same answer as
    the scenarios inline."""
    inline = optimise_request(case)
    ref = first.RegisterScenarioSet(
        service_pb2.RegisterScenarioSetRequest(
            run=inline.run, id="shared-store", scenario_set=inline.scenario_set
        ),
        timeout=10,
    ).ref
    by_ref = service_pb2.OptimiseRequest()
    by_ref.CopyFrom(inline)
    by_ref.scenario_set_ref.CopyFrom(ref)
    referenced = second.Optimise(by_ref, timeout=60).result
    direct = first.Optimise(inline, timeout=60).result
    assert referenced.optimised.total == pytest.approx(direct.optimised.total, rel=1e-9)
    info = second.GetScenarioSet(service_pb2.GetScenarioSetRequest(ref=ref), timeout=10)
    assert info.scenario_set.scenario_count == len(inline.scenario_set.ids)


def test_two_servers_share_sets_through_postgresql(cases: dict[str, dict[str, Any]]) -> None:
    with _postgres_url() as url:
        with _two_servers(url) as (first, second):
            _shared_through(first, second, cases["01-basis-trade-10y"])


def test_two_servers_share_sets_through_one_sqlite_file(
    tmp_path: Path, cases: dict[str, dict[str, Any]]
) -> None:
    with _two_servers(f"sqlite:///{tmp_path / 'store.db'}") as (first, second):
        _shared_through(first, second, cases["01-basis-trade-10y"])


@pytest.mark.parametrize(
    "set_id, why",
    [
        ("", "is required"),
        ("x" * 65, "at most 64 characters"),
        ("set\x00a", "control characters"),
        ("set\nb", "control characters"),
        (" set", "begin or end with a blank"),
        ("set\u3000", "begin or end with a blank"),
        (" ", "begin or end with a blank"),
    ],
    ids=["empty", "65 characters", "NUL", "newline", "leading blank", "trailing blank", "blank"],
)
def test_a_set_id_is_an_id_of_1_to_64_characters(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]], set_id: str, why: str
) -> None:
    """An id without bound was stored and echoed in every ListScenarioSets page: three of
    25 MiB made every later page exceed the message limit (RESOURCE_EXHAUSTED for everyone,
    across restarts); a NUL cannot be stored in PostgreSQL at all."""
    inline = optimise_request(cases["02-butterfly-2s5s10s"])
    request = service_pb2.RegisterScenarioSetRequest(
        run=inline.run, id=set_id, scenario_set=inline.scenario_set
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.RegisterScenarioSet(request, timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert details.startswith("invalid request: id: ") and why in details, details
    request.id = "x" * 64
    assert stub.RegisterScenarioSet(request, timeout=10).ref.id == "x" * 64


@pytest.mark.parametrize("decoded", ["[[], 1]", '["a", 1.5]', '["a", true]', '["a", "1"]'])
def test_a_page_token_of_the_wrong_types_is_refused(stub: XmarginServiceStub, decoded: str) -> None:
    token = base64.urlsafe_b64encode(decoded.encode()).decode()
    with pytest.raises(grpc.RpcError) as bad:
        stub.ListScenarioSets(service_pb2.ListScenarioSetsRequest(page_token=token), timeout=10)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
