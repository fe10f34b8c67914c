"""The explanation's HTML section (optimiser/explain_html.py): complete, self-contained,
escaped, and drawn by a real browser."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CASE_FILES
from tests.optimiser.books import random_book
from tests.optimiser.test_reports import CHROMIUM, _chromium, _Collector, _png_pixels
from xmargin.optimiser import Book, OptimisationResult, load_case, optimise
from xmargin.optimiser.explain import explain_result
from xmargin.optimiser.explain_html import TAIL_COLOUR, explanation_html
from xmargin.optimiser.reports import savings_report_html


@pytest.fixture(scope="module")
def result() -> OptimisationResult:
    (path,) = (p for p in CASE_FILES if p.stem.startswith("03"))
    return optimise(load_case(path))


def test_section_has_a_chart_per_account_with_its_tail(result: OptimisationResult) -> None:
    explanation = explain_result(result)
    fragment = explanation_html(explanation)
    collector = _Collector()
    collector.feed(fragment)
    assert collector.external == [] and "script" not in collector.tags
    held = [
        figure
        for state in explanation.states.values()
        for figure in state.figures.values()
        if figure.held
    ]
    assert collector.tags.count("svg") == len(held)
    # Each chart's tail path has one bar per tail scenario, in the figure's order of charts.
    tails = re.findall(r'<path d="([^"]*)" class="tail"', fragment)
    assert [t.count("M") for t in tails] == [len(figure.tail) for figure in held]
    bodies = re.findall(r'<path d="([^"]*)" class="body"', fragment)
    assert [b.count("M") for b in bodies] == [
        figure.window_losses.size - len(figure.tail) for figure in held
    ]
    text = " ".join(collector.text)
    for figure in held:
        for scenario in figure.tail[:12]:
            assert scenario.id in text
    change = explanation.change
    assert change is not None
    for transfer in change.transfers:
        assert transfer.transfer.instrument in text
        assert f"{round(transfer.saving):,d}" in text


def test_savings_report_carries_the_section(result: OptimisationResult) -> None:
    page = savings_report_html(result)
    assert page.count('<section id="explain">') == 1
    assert page.index("Where the margin comes from") < page.index("Why each account margins")


def _renamed(book: Book, old: str, new: str) -> Book:
    instruments = {
        (new if key == old else key): (dataclasses.replace(value, id=new) if key == old else value)
        for key, value in book.instruments.items()
    }
    positions = tuple(
        dataclasses.replace(p, instrument=new) if p.instrument == old else p for p in book.positions
    )
    return dataclasses.replace(book, instruments=instruments, positions=positions)


def test_text_is_escaped() -> None:
    book = random_book(3)
    hostile = '<img src="http://example.com/x.png">'
    book = _renamed(book, book.positions[0].instrument, hostile)
    fragment = explanation_html(explain_result(optimise(book)))
    assert hostile not in fragment
    assert "&lt;img src=&#34;http://example.com/x.png&#34;&gt;" in fragment


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_section_renders_in_headless_chromium(result: OptimisationResult, tmp_path: Path) -> None:
    """The section on its own page (so its first charts are on the first screen): the tail
    bars are drawn in their colour; the full report's DOM carries the section."""
    report = savings_report_html(result)
    style = report[report.index("<style>") + len("<style>") : report.index("</style>")]
    page = tmp_path / "explain.html"
    page.write_text(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><style>{style}</style>'
        f"</head><body>{explanation_html(explain_result(result))}</body></html>",
        encoding="utf-8",
    )
    screenshot = tmp_path / "explain.png"
    profile = tmp_path / "profile"
    completed = _chromium(
        profile, "--window-size=1000,700", f"--screenshot={screenshot}", page.as_uri()
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    pixels = _png_pixels(screenshot)
    rgb = np.array([int(TAIL_COLOUR[i : i + 2], 16) for i in (1, 3, 5)])
    assert np.all(np.abs(pixels - rgb) <= 3, axis=2).sum() > 100, "no tail bars on the screen"
    report = tmp_path / "report.html"
    report.write_text(savings_report_html(result), encoding="utf-8")
    dom = _chromium(profile, "--dump-dom", report.as_uri())
    assert dom.returncode == 0
    assert (
        dom.stdout.count('class="tail"') >= 2
        and "What the optimised allocation changed" in dom.stdout
    )
