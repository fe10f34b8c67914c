"""Per-client limits on registered scenario sets: a client past ``--max-client-sets`` or
``--max-client-store-mb`` gets RESOURCE_EXHAUSTED and stores nothing, its content already
registered is still answered, other clients go on, and the count comes from the store (across
restarts, and exact under registrations racing at the limit)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.server.harness import optimise_request, start
from xmargin.clients.v1 import book_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.optimiser.audit import RegistrationLimits, open_store
from xmargin.server import ServerConfig, cli
from xmargin.server.admission import MB
from xmargin.server.convert import ResolvedScenarios, validated_scenarios
from xmargin.server.errors import RegistrationLimitExceededError
from xmargin.server.scenario_store import DEFAULT_REGISTRATION_LIMITS, ScenarioRegistry

ALICE, BOB = "alice-token-not-a-secret", "bob-token-not-a-secret"


def _as(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _scenarios(seed: int, rows: int = 30, width: int = 3) -> ResolvedScenarios:
    """A valid set (date ids, oldest first), as registration would have validated it."""
    shocks = np.random.default_rng(seed).normal(size=(rows, width))
    first = dt.date(2020, 1, 1)
    ids = [(first + dt.timedelta(days=i)).isoformat() for i in range(rows)]
    return validated_scenarios([f"F{k}" for k in range(width)], ids, shocks, "x")


def _request(
    case: dict[str, Any], set_id: str, scale: float = 1.0
) -> service_pb2.RegisterScenarioSetRequest:
    """RegisterScenarioSet of ``case``'s scenarios under ``set_id``, shocks times ``scale``
    (another scale: other content)."""
    inline = optimise_request(case)
    scenario_set = book_pb2.ScenarioSet()
    scenario_set.CopyFrom(inline.scenario_set)
    scenario_set.ClearField("shocks")
    scenario_set.shocks.extend(v * scale for v in inline.scenario_set.shocks)
    return service_pb2.RegisterScenarioSetRequest(
        run=inline.run, id=set_id, scenario_set=scenario_set
    )


@contextmanager
def _limited(limits: RegistrationLimits) -> Iterator[XmarginServiceStub]:
    """A stub of a server taking two bearer tokens (two clients), with ``limits``."""
    running = start(workers=1, max_queue=2, token=ALICE, tokens=(BOB,), registration=limits)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield XmarginServiceStub(channel)
    finally:
        running.stop(0)


def _refusal(stub: XmarginServiceStub, request: Any, token: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        stub.RegisterScenarioSet(request, timeout=10, metadata=_as(token))
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    return refused.value


def _quota_failure(error: grpc.RpcError) -> error_details_pb2.QuotaFailure:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = [d for d in status.details if d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR)]
    assert len(found) == 1
    quota = error_details_pb2.QuotaFailure()
    found[0].Unpack(quota)
    return quota


def test_a_client_at_its_set_limit_is_refused_and_its_registered_sets_still_answer(
    cases: dict[str, dict[str, Any]],
) -> None:
    with _limited(RegistrationLimits(max_sets=2)) as stub:
        _at_the_set_limit(stub, cases["02-butterfly-2s5s10s"])


def _at_the_set_limit(limited_stub: XmarginServiceStub, case: dict[str, Any]) -> None:
    first = limited_stub.RegisterScenarioSet(_request(case, "a"), timeout=10, metadata=_as(ALICE))
    limited_stub.RegisterScenarioSet(_request(case, "a", 1.5), timeout=10, metadata=_as(ALICE))

    refused = _refusal(limited_stub, _request(case, "b", 2.0), ALICE)
    message = refused.details() or ""
    assert "has registered 2 scenario set versions" in message, message
    assert "one more would pass the limit of 2" in message, message
    assert "--max-client-sets" in message, message
    assert "ask the server's operator" in message, message
    (violation,) = _quota_failure(refused).violations
    assert violation.subject.startswith("client:token:")
    # nothing stored: neither a version of "b" nor its content under "a"
    listed = limited_stub.ListScenarioSets(
        service_pb2.ListScenarioSetsRequest(), timeout=10, metadata=_as(ALICE)
    )
    assert [(s.ref.id, s.ref.version) for s in listed.scenario_sets] == [("a", 1), ("a", 2)]
    _refusal(limited_stub, _request(case, "a", 2.0), ALICE)  # new content under an old id

    again = limited_stub.RegisterScenarioSet(_request(case, "a"), timeout=10, metadata=_as(ALICE))
    assert (again.ref.version, again.fingerprint) == (first.ref.version, first.fingerprint)

    other = limited_stub.RegisterScenarioSet(
        _request(case, "b", 2.0), timeout=10, metadata=_as(BOB)
    )
    assert (other.ref.id, other.ref.version) == ("b", 1)


def test_a_client_at_its_byte_limit_is_refused_and_counts_its_content_once(
    cases: dict[str, dict[str, Any]],
) -> None:
    case = cases["02-butterfly-2s5s10s"]
    size = len(_request(case, "a").scenario_set.shocks) * 8
    limits = RegistrationLimits(max_bytes=size + size // 2)  # one content, not two
    with _limited(limits) as stub:
        _at_the_byte_limit(stub, case, size, limits)


def _at_the_byte_limit(
    limited_stub: XmarginServiceStub, case: dict[str, Any], size: int, limits: RegistrationLimits
) -> None:
    request = _request(case, "a")
    limited_stub.RegisterScenarioSet(request, timeout=10, metadata=_as(ALICE))
    same_content = _request(case, "copy")  # a new row, no new content
    assert (
        limited_stub.RegisterScenarioSet(same_content, timeout=10, metadata=_as(ALICE)).ref.version
        == 1
    )

    refused = _refusal(limited_stub, _request(case, "b", 2.0), ALICE)
    message = refused.details() or ""
    assert f"has registered {size} bytes of scenario shocks (in 2 versions)" in message, message
    assert f"{size} more would pass the limit of {limits.max_bytes} bytes" in message, message
    assert "--max-client-store-mb" in message, message
    assert limited_stub.RegisterScenarioSet(
        _request(case, "b", 2.0), timeout=10, metadata=_as(BOB)
    ).ref == book_pb2.ScenarioSetRef(id="b", version=1)


def test_the_limit_holds_in_a_registry_reopened_on_the_same_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    limits = RegistrationLimits(max_sets=3)
    first = ScenarioRegistry(open_store(url), owns_store=True, limits=limits)
    kept = [first.register(f"set-{k}", _scenarios(k), "alice") for k in range(3)]
    first.close()

    reopened = ScenarioRegistry(open_store(url), owns_store=True, limits=limits)  # "restarted"
    with pytest.raises(RegistrationLimitExceededError) as refused:
        reopened.register("set-3", _scenarios(3), "alice")
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "has registered 3 scenario set versions" in str(refused.value)
    assert reopened.store.scenario_usage("alice").sets == 3  # nothing stored
    assert reopened.register("set-1", _scenarios(1), "alice").version == kept[1].version
    assert reopened.register("set-3", _scenarios(3), "bob").version == 1
    preload = reopened.register("set-4", _scenarios(4), "alice", limited=False)
    assert preload.version == 1  # the server's own preloads are not limited
    reopened.close()


def test_usage_counts_rows_and_each_distinct_content_once() -> None:
    registry = ScenarioRegistry(limits=RegistrationLimits())
    one = len(_scenarios(1).ids) * 3 * 8
    registry.register("a", _scenarios(1), "alice")
    registry.register("b", _scenarios(1), "alice")  # the same content under another id
    registry.register("a", _scenarios(2), "alice")
    registry.register("c", _scenarios(1), "bob")  # counted against bob as well
    usage = registry.store.scenario_usage("alice")
    assert (usage.sets, usage.bytes) == (3, 2 * one)
    assert registry.store.scenario_usage("bob").bytes == one
    assert registry.store.scenario_usage("carol").sets == 0
    registry.close()


def test_the_usage_query_reads_the_clients_index_only() -> None:
    store = open_store(":memory:")
    with store._transaction() as cursor:
        cursor.execute(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM xm_scenario_sets WHERE registered_by = ?",
            ("alice",),
        )
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "COVERING INDEX xm_scenario_sets_by_client" in plan, plan
    store.close()


def test_registrations_racing_at_the_limit_do_not_all_pass(store_url: str) -> None:
    """Eight registrations of one client, each through its own connection (as eight servers
    on one store), three allowed: exactly three pass."""
    limits = RegistrationLimits(max_sets=3)
    registries = [
        ScenarioRegistry(open_store(store_url), owns_store=True, limits=limits) for _ in range(8)
    ]
    outcomes: list[str] = []
    lock = threading.Lock()
    start_line = threading.Barrier(len(registries))

    def register(k: int) -> None:
        start_line.wait()
        try:
            registries[k].register(f"race-{k}", _scenarios(100 + k), "alice")
            outcome = "stored"
        except RegistrationLimitExceededError:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=register, args=(k,)) for k in range(len(registries))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["stored"] * 3
    assert registries[0].store.scenario_usage("alice").sets == 3
    for registry in registries:
        registry.close()


def test_the_limits_are_options_of_xmargin_serve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli.build_parser()
    defaults = parser.parse_args([])
    assert defaults.max_client_sets == DEFAULT_REGISTRATION_LIMITS.max_sets
    assert defaults.max_client_store_mb * MB == DEFAULT_REGISTRATION_LIMITS.max_bytes
    help_text = parser.format_help()
    assert "--max-client-sets" in help_text and "--max-client-store-mb" in help_text

    given: list[ServerConfig] = []
    monkeypatch.setattr(cli, "serve", lambda config: given.append(config) or 0)
    assert cli.main(["--max-client-sets", "0", "--max-client-store-mb", "5"]) == 0
    assert given[0].registration == RegistrationLimits(max_sets=0, max_bytes=5 * MB)

    for flag, value, why in [
        ("--max-client-sets", "-1", "is negative"),
        ("--max-client-store-mb", "many", "is not an integer"),
    ]:
        with pytest.raises(SystemExit) as refused:
            parser.parse_args([flag, value])
        assert refused.value.code == 2
        error = capsys.readouterr().err
        assert flag in error and why in error, error


@pytest.mark.parametrize("field", ["max_sets", "max_bytes"])
@pytest.mark.parametrize("value", [-1, 1.5])
def test_limits_are_whole_numbers_of_at_least_zero(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        RegistrationLimits(**{field: value})
