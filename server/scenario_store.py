"""Registered scenario sets: kept in the server's store, served from a cache bounded in bytes.

A set lives in the store (:class:`~xmargin.optimiser.audit.AuditStore`; the one ``--store``
or ``--audit`` names, an embedded SQLite file by default): content once per fingerprint
(SHA-256 of factors, ids and float64 shocks), each ``(id, version)`` a row that is never
deleted. Every server on the same store therefore sees every set, and a restart loses none.
A set is validated once, when registered; reading it back only decodes the stored arrays.

Memory: the sets in use are kept in an LRU cache bounded by their in-memory size (``--
scenario-cache-mb``); eviction drops a set from the cache only (the next use reads it from the
store again), so no client's registrations can make another client's sets unusable.

Limits: what one client may hold in the store (:class:`RegistrationLimits`: ``(id, version)``
rows and bytes of content; ``--max-client-sets``, ``--max-client-store-mb``). A registration
past one is refused with RESOURCE_EXHAUSTED and stores nothing; the usage is counted from the
store's rows, so it survives restarts and holds across every server on the store.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from xmargin.clients.v1 import book_pb2, service_pb2
from xmargin.optimiser.audit import (
    AuditStore,
    RegistrationLimitError,
    RegistrationLimits,
    StoredScenarioSet,
    open_store,
    scenario_fingerprint,
)
from xmargin.schema.case_v1 import ID_PATTERN, ID_RULE

from . import admission
from .convert import RequestError, ResolvedScenarios, validated_scenarios
from .errors import AuditError, RegistrationLimitExceededError, ScenarioSetNotFoundError

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_REGISTRATION_LIMITS",
    "REFERENCE_SET_BYTES",
    "RegisteredSet",
    "RegistrationLimits",
    "ScenarioRegistry",
    "client_identity",
    "default_store_url",
    "get_scenario_set",
    "list_scenario_sets",
    "python_bytes",
]

log = logging.getLogger("xmargin.server")
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
REFERENCE_SET_BYTES = 2520 * 20 * 8
"""Shocks bytes of a reference set (2,520 scenarios x 20 factors as float64: 403,200 bytes;
~0.44 MB on disk with its ids)."""
DEFAULT_REGISTRATION_LIMITS = RegistrationLimits(max_sets=10_000, max_bytes=8 * 1024**3)
"""Per client: 10,000 ``(id, version)`` rows (four new sets every business day for ten years)
and 8 GiB of shocks (~21,000 reference sets, so for reference-size sets the row limit binds
first; ~2,000 sets of 5,000 scenarios x 100 factors). Normal use never reaches them; a client
registering random sets in a loop stops there instead of filling the disk."""
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_REFS = 100_000
MAX_SET_ID = 64
"""(id, version) -> metadata entries kept in memory (a few hundred bytes each)."""
REF_PATH = "scenario_set_ref"

_FLOAT_BYTES = sys.getsizeof(1.0) + 8  # a float object and its list slot
_LIST_BYTES = sys.getsizeof([])


def default_store_url() -> str:
    """``xmargin serve``'s store when neither ``--store`` nor ``--audit`` names one: the SQLite
    file ``$XDG_DATA_HOME/xmargin/store.db`` (``~/.local/share/xmargin/store.db``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(base) / 'xmargin' / 'store.db'}"


@dataclass(frozen=True, slots=True)
class RegisteredSet:
    """A set ready to use: its metadata and its scenarios in case-format form."""

    set_id: str
    version: int
    fingerprint: str
    scenarios: ResolvedScenarios
    info: StoredScenarioSet | None = None


def python_bytes(scenarios: ResolvedScenarios) -> int:
    """Approximate memory of a set held as Python lists (what the request pipeline uses):
    S x K floats at 32 bytes (object and slot), S row lists, the id and factor strings."""
    rows = len(scenarios.shocks)
    width = len(scenarios.factors)
    strings = sum(sys.getsizeof(s) + 8 for s in scenarios.ids) + sum(
        sys.getsizeof(f) + 8 for f in scenarios.factors
    )
    return rows * width * _FLOAT_BYTES + (rows + 3) * _LIST_BYTES + strings


def client_identity(context: grpc.ServicerContext | None) -> str:
    """Who registered a set, for the record: the caller as admission names it (certificate,
    token fingerprint or address; :func:`.admission.client_identity`), "server" for a set the
    server preloads."""
    return "server" if context is None else admission.client_identity(context)


def _shock_matrix(scenarios: ResolvedScenarios) -> np.ndarray:
    """The set's S x K shocks as float64: the validated array when the set has one, else its
    rows reshaped."""
    if scenarios.validated is not None:
        return scenarios.validated.scenarios.shocks
    return np.asarray(scenarios.shocks, dtype=float).reshape(
        len(scenarios.ids), len(scenarios.factors)
    )


class ScenarioRegistry:
    """Scenario sets by id and version, in ``store`` (default: an in-memory SQLite store,
    for tests and embedding), cached up to ``cache_bytes`` of memory (LRU); each client may
    hold up to ``limits`` in the store (:data:`DEFAULT_REGISTRATION_LIMITS`;
    ``RegistrationLimits()``: none)."""

    def __init__(
        self,
        store: AuditStore | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        owns_store: bool | None = None,
        limits: RegistrationLimits = DEFAULT_REGISTRATION_LIMITS,
    ) -> None:
        self.store = store if store is not None else open_store(":memory:")
        self.owns_store = store is None if owns_store is None else owns_store
        self.cache_bytes = int(cache_bytes)
        self.limits = limits
        self._cache: OrderedDict[str, tuple[ResolvedScenarios, int]] = OrderedDict()
        self._refs: OrderedDict[tuple[str, int], StoredScenarioSet] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    # --- cache ----------------------------------------------------------------------------

    @property
    def cached_bytes(self) -> int:
        """Memory held by the cached sets (as :func:`python_bytes` counts it)."""
        with self._lock:
            return self._cached

    def cached(self) -> list[str]:
        """Fingerprints in the cache, least recently used first."""
        with self._lock:
            return list(self._cache)

    def _remember(self, fingerprint: str, scenarios: ResolvedScenarios) -> None:
        size = python_bytes(scenarios)
        with self._lock:
            if fingerprint in self._cache:
                self._cache.move_to_end(fingerprint)
                return
            if size > self.cache_bytes:  # larger than the whole cache: used, not kept
                return
            self._cache[fingerprint] = (scenarios, size)
            self._cached += size
            while self._cached > self.cache_bytes:
                _, (_, dropped) = self._cache.popitem(last=False)
                self._cached -= dropped

    def _from_cache(self, fingerprint: str) -> ResolvedScenarios | None:
        with self._lock:
            hit = self._cache.get(fingerprint)
            if hit is None:
                return None
            self._cache.move_to_end(fingerprint)
            return hit[0]

    def _ref(self, info: StoredScenarioSet) -> None:
        with self._lock:
            self._refs[(info.set_id, info.version)] = info
            self._refs.move_to_end((info.set_id, info.version))
            while len(self._refs) > MAX_REFS:
                self._refs.popitem(last=False)

    # --- store ----------------------------------------------------------------------------

    def _stored(self, what: str, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except RegistrationLimitError as error:
            raise RegistrationLimitExceededError(str(error), error.limit, error.client) from error
        except Exception as error:
            log.exception("scenario store failed (%s)", what)
            raise AuditError(f"the scenario store failed: {type(error).__name__}; retry") from error

    @staticmethod
    def fingerprint(scenarios: ResolvedScenarios) -> str:
        """SHA-256 of the set's canonical encoding (see ``scenario_fingerprint``)."""
        return scenario_fingerprint(scenarios.factors, scenarios.ids, _shock_matrix(scenarios))

    def register(
        self,
        set_id: str,
        scenarios: ResolvedScenarios,
        registered_by: str = "",
        limited: bool = True,
    ) -> RegisteredSet:
        """Store a validated set under ``set_id`` (:func:`check_set_id`): the version already
        holding this content, else the next one. The set is cached as given (no second
        validation). A new version past ``registered_by``'s limits (unless ``limited`` is
        False: the server's own preloads) raises RESOURCE_EXHAUSTED, nothing stored."""
        check_set_id(set_id)
        shocks = _shock_matrix(scenarios)
        fingerprint = scenario_fingerprint(scenarios.factors, scenarios.ids, shocks)
        info: StoredScenarioSet = self._stored(
            "register",
            self.store.register_scenario_set,
            set_id,
            scenarios.factors,
            scenarios.ids,
            shocks,
            registered_by,
            fingerprint,
            self.limits if limited else None,
        )
        resolved = replace(scenarios, path=REF_PATH)
        self._ref(info)
        self._remember(fingerprint, resolved)
        return RegisteredSet(info.set_id, info.version, fingerprint, resolved, info)

    def info(self, set_id: str, version: int = 0) -> StoredScenarioSet:
        """A set's metadata (``version`` 0: the latest); NOT_FOUND when unknown."""
        if version:
            with self._lock:
                known = self._refs.get((set_id, version))
            if known is not None:
                return known
        found: StoredScenarioSet | None = self._stored(
            "metadata", self.store.scenario_set, set_id, version
        )
        if found is None:
            raise ScenarioSetNotFoundError(set_id, version)
        self._ref(found)
        return found

    def get(self, set_id: str, version: int) -> RegisteredSet:
        """The set ``(set_id, version)``, from the cache or else the store; NOT_FOUND when no
        server registered it (a computation names its version: 0 is not found)."""
        if version < 1:
            raise ScenarioSetNotFoundError(set_id, version)
        info = self.info(set_id, version)
        scenarios = self._from_cache(info.fingerprint)
        if scenarios is None:
            scenarios = self._load(info.fingerprint)
        return RegisteredSet(info.set_id, info.version, info.fingerprint, scenarios, info)

    def _load(self, fingerprint: str) -> ResolvedScenarios:
        """Read a set from the store once, however many calls miss it at the same time."""
        with self._lock:
            gate = self._loading.setdefault(fingerprint, threading.Lock())
        with gate:
            scenarios = self._from_cache(fingerprint)
            if scenarios is not None:
                return scenarios
            try:
                data = self._stored("read", self.store.scenario_data, fingerprint)
                if data is None:  # metadata without content: the store was tampered with
                    raise AuditError(f"scenario set content {fingerprint[:12]} is missing")
                factors, ids, shocks = data
                # Validated again once per load (not per call): parse_case then trusts it.
                scenarios = validated_scenarios(list(factors), list(ids), shocks, REF_PATH)
                self._remember(fingerprint, scenarios)
                return scenarios
            finally:
                with self._lock:
                    self._loading.pop(fingerprint, None)

    def list(
        self, set_id: str = "", after: tuple[str, int] | None = None, limit: int = 100
    ) -> list[StoredScenarioSet]:
        """Registered sets' metadata by (id, version), after ``after``, at most ``limit``."""
        found: list[StoredScenarioSet] = self._stored(
            "list", self.store.scenario_sets, set_id, after, limit
        )
        return found

    def close(self) -> None:
        """Close the store if this registry opened it."""
        if self.owns_store:
            self.store.close()


# --- the metadata RPCs ----------------------------------------------------------------------


def info_to_proto(info: StoredScenarioSet) -> service_pb2.ScenarioSetInfo:
    message = service_pb2.ScenarioSetInfo(
        ref=book_pb2.ScenarioSetRef(id=info.set_id, version=info.version),
        factor_count=info.factor_count,
        scenario_count=info.scenario_count,
        bytes=info.byte_count,
        fingerprint=info.fingerprint,
        registered_by=info.registered_by,
    )
    message.registered_at.FromDatetime(dt.datetime.fromisoformat(info.registered_at))
    return message


def check_set_id(set_id: str, path: str = "id") -> None:
    """A scenario set's id is 1-64 characters, none a control character and no blank at either
    end, as every id of a case (:data:`ID_PATTERN`): it is stored, and echoed in every page of
    ListScenarioSets (three ids of 25 MiB each made every later page exceed the message limit,
    for every client, across restarts)."""
    if not set_id:
        raise RequestError([(path, "is required")])
    if len(set_id) > MAX_SET_ID:
        raise RequestError([(path, f"must hold at most {MAX_SET_ID} characters")])
    if re.fullmatch(ID_PATTERN, set_id) is None:
        raise RequestError([(path, ID_RULE)])


def get_scenario_set(
    registry: ScenarioRegistry, request: service_pb2.GetScenarioSetRequest
) -> service_pb2.GetScenarioSetResponse:
    """GetScenarioSet: one set's metadata (version 0: its latest)."""
    if not request.ref.id:
        raise RequestError([("ref.id", "is required")])
    info = registry.info(request.ref.id, request.ref.version)
    return service_pb2.GetScenarioSetResponse(scenario_set=info_to_proto(info))


def _page_token(info: StoredScenarioSet) -> str:
    return base64.urlsafe_b64encode(json.dumps([info.set_id, info.version]).encode()).decode()


def _after(token: str) -> tuple[str, int] | None:
    if not token:
        return None
    try:
        set_id, version = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as error:
        raise RequestError([("page_token", "is not a token this server gave")]) from error
    if not isinstance(set_id, str) or type(version) is not int:
        raise RequestError([("page_token", "is not a token this server gave")])
    return set_id, version


def list_scenario_sets(
    registry: ScenarioRegistry, request: service_pb2.ListScenarioSetsRequest
) -> service_pb2.ListScenarioSetsResponse:
    """ListScenarioSets: a page of metadata by (id, version)."""
    if request.page_size > MAX_PAGE:
        raise RequestError([("page_size", f"at most {MAX_PAGE}")])
    size = request.page_size or DEFAULT_PAGE
    found = registry.list(request.id, _after(request.page_token), size + 1)
    page = found[:size]
    response = service_pb2.ListScenarioSetsResponse(scenario_sets=[info_to_proto(i) for i in page])
    if len(found) > size:
        response.next_page_token = _page_token(page[-1])
    return response
