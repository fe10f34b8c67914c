"""Hypothesis mutations of the public cases (keys, types, values, dates), shared by the CLI and
client property tests: each mutation says which path it touched, so a refusal can be checked
to name it."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from hypothesis import strategies as st

from tests.conftest import CASE_FILES


@cache
def public_case(index: int) -> str:
    """A worked case's JSON text (cached; parsed afresh for every mutation)."""
    return CASE_FILES[index].read_text()


Path = tuple[str | int, ...]


def _paths(data: Any, prefix: Path = ()) -> list[Path]:
    """Paths worth mutating: every key of every object, the first elements of lists (long
    vectors contribute three), not the ``expected`` block."""
    out: list[Path] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "expected":
                continue
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data[:3]):
            out.append((*prefix, index))
            out += _paths(value, (*prefix, index))
    return out


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


@dataclass(frozen=True)
class Mutation:
    case: dict[str, Any]
    kind: str
    path: Path
    """The path touched (for a renamed key: the new, misspelt one)."""

    @property
    def named(self) -> str:
        return dotted(self.path)

    @property
    def parent(self) -> str:
        return dotted(self.path[:-1])


ODD_VALUES = st.sampled_from(
    [
        "x",
        "",
        "false",
        "1.5",
        "20261124",
        "9999-12-31",
        "2026-02-30",
        True,
        None,
        [],
        {},
        0,
        -1,
        1e300,
        -1e300,
        1e20,
        float("nan"),
        float("inf"),
    ]
)


@st.composite
def mutated_cases(draw: st.DrawFn) -> Mutation:
    """A public case with one key renamed or deleted, or one value replaced."""
    case = json.loads(public_case(draw(st.integers(0, len(CASE_FILES) - 1), label="case")))
    path = draw(st.sampled_from(_paths(case)), label="path")
    parent: Any = case
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    kinds = ["value", "delete", "rename"] if isinstance(last, str) else ["value"]
    kind = draw(st.sampled_from(kinds), label="kind")
    if kind == "rename":
        assert isinstance(last, str)
        swapped = last[0] + last[2] + last[1] + last[3:] if len(last) > 3 else last + "x"
        wrong = swapped if swapped != last else last + "x"
        parent[wrong] = parent.pop(last)
        return Mutation(case, kind, (*path[:-1], wrong))
    if kind == "delete":
        del parent[last]
        return Mutation(case, kind, path)
    old = parent[last]
    if isinstance(old, str) and len(old) == 10 and old[4] == "-":
        new = draw(st.sampled_from([old.replace("-", ""), "9999-12-31", old[:8] + "32"]))
    else:
        new = draw(ODD_VALUES, label="value")
    parent[last] = copy.deepcopy(new)
    return Mutation(case, kind, path)


RELATED = ("business_date", "customer", "clearing_member", "instruments", "factors", "models")


def names_the_field(mutation: Mutation, paths: set[str]) -> bool:
    """Whether a refusal's ``paths`` name the mutated field (a renamed key exactly; otherwise
    the field or its object; a change that makes positions ineligible or unknown may be named
    at the positions that use it)."""
    if mutation.kind == "rename":
        return mutation.named in paths
    prefix = mutation.parent or mutation.named
    if any(p == mutation.named or p.startswith(prefix) for p in paths):
        return True
    head = str(mutation.path[0])
    return head in RELATED and any(
        p.startswith(("positions[", "models.", "scenarios")) for p in paths
    )
