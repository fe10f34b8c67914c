"""Reports: the CSV and FIXML transfers book exactly the move from current to optimised, and the
HTML savings report renders in a headless browser."""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CASE_FILES
from xmargin.optimiser import SolveOptions, load_case, optimise, parse_case
from xmargin.optimiser.reports import (
    FIXML_NAMESPACE,
    STATE_COLOURS,
    _chart,
    savings_report_html,
    transfers_csv,
    transfers_fixml,
    write_reports,
)
from xmargin.optimiser.results import Account, OptimisationResult
from xmargin.optimiser.sample import generate_book

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def results() -> list[OptimisationResult]:
    """Optimised worked cases that move something, and a generated book with shorts and longs,
    in whole lots (the transfer files refuse a continuous answer's fractional lots)."""
    whole_lots = SolveOptions(integral=True)
    cases = [optimise(load_case(path), options=whole_lots) for path in CASE_FILES]
    sample = optimise(generate_book(30, 400, 17), options=whole_lots)
    return [r for r in cases if r.transfers] + [sample]


def _signed_xm_changes_from_csv(text: str) -> dict[str, float]:
    """Apply the CSV's XM rows: a buy adds the quantity to XM's holding, a sell takes it off."""
    changes: dict[str, float] = defaultdict(float)
    for row in csv.DictReader(io.StringIO(text)):
        if row["account"] == Account.XM.value:
            quantity = float(row["quantity"])
            changes[row["instrument"]] += quantity if row["side"] == "BUY" else -quantity
    return changes


def test_csv_has_two_opposite_sides_per_transfer(results: list[OptimisationResult]) -> None:
    for result in results:
        rows = list(csv.DictReader(io.StringIO(transfers_csv(result))))
        assert len(rows) == 2 * len(result.transfers)
        by_transfer: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in rows:
            by_transfer[row["transfer_id"]].append(row)
        assert len(by_transfer) == len(result.transfers)
        sign = dict(zip(result.problem.position_ids, np.sign(result.problem.quantity), strict=True))
        for leaving, receiving in by_transfer.values():
            assert leaving["account"] == leaving["from_account"]
            assert receiving["account"] == receiving["to_account"]
            assert {leaving["side"], receiving["side"]} == {"BUY", "SELL"}
            assert leaving["quantity"] == receiving["quantity"]
            is_long = sign[leaving["instrument"]] > 0
            # a long position: the leaving account sells; a short one: it buys back
            assert leaving["side"] == ("SELL" if is_long else "BUY")
            assert leaving["position"] == ("LONG" if is_long else "SHORT")


def test_csv_books_the_move_from_current_to_optimised(results: list[OptimisationResult]) -> None:
    for result in results:
        changes = _signed_xm_changes_from_csv(transfers_csv(result))
        problem = result.problem
        for i, position_id in enumerate(problem.position_ids):
            expected = result.allocation[i] - problem.current_xm[i]
            assert changes.get(position_id, 0.0) == pytest.approx(expected, abs=1e-6), position_id


def test_fixml_is_valid_and_books_the_same_move(results: list[OptimisationResult]) -> None:
    ns = {"f": FIXML_NAMESPACE}
    for result in results:
        root = ET.fromstring(transfers_fixml(result))
        assert root.tag == f"{{{FIXML_NAMESPACE}}}FIXML"
        instructions = root.findall("f:Batch/f:PosXferInstr", ns)
        assert len(instructions) == len(result.transfers)
        problem = result.problem
        for instruction, transfer in zip(instructions, result.transfers, strict=True):
            customer = problem.book.customer.id
            parties = [p.get("ID") for p in instruction.findall("f:Pty", ns)]
            targets = [p.get("ID") for p in instruction.findall("f:TrgtPty", ns)]
            assert f"{customer}-{transfer.from_account.value}" in parties
            assert f"{customer}-{transfer.to_account.value}" in targets
            instrument = instruction.find("f:Instrmt", ns)
            assert instrument is not None and instrument.get("ID") == transfer.instrument
            quantity = instruction.find("f:Qty", ns)
            assert quantity is not None
            long, short = float(quantity.get("Long", "nan")), float(quantity.get("Short", "nan"))
            i = problem.position_ids.index(transfer.instrument)
            held_long = problem.quantity[i] > 0
            assert (long, short) == (
                (transfer.quantity, 0.0) if held_long else (0.0, transfer.quantity)
            )
            assert instruction.get("BizDt") == problem.book.business_date.isoformat()
        ids = [i.get("XferInstrID") for i in instructions]
        assert len(set(ids)) == len(ids)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_is_self_contained_and_complete(results: list[OptimisationResult]) -> None:
    result = results[-1]
    page = savings_report_html(result)
    collector = _Collector()
    collector.feed(page)
    assert collector.external == [] and "script" not in collector.tags
    # The margin chart; the explanation's charts follow (tests/optimiser/test_explain_html.py).
    assert page.split('<section id="explain">')[0].count("<svg") == 1
    text = " ".join(collector.text)
    for position_id in result.problem.position_ids:
        assert position_id in text
    for state in (result.baseline, result.current, result.optimised):
        assert f"{round(state.total):,d}" in text
    # one stacked bar segment per non-zero account in each of the three states
    segments = sum(
        1
        for state in (result.baseline, result.current, result.optimised)
        for value in (state.ficc_standalone, state.cme_standalone, state.xm.margin)
        if value > 0
    )
    assert page.count("<rect") - len(STATE_COLOURS) == segments  # minus the legend swatches


def test_write_reports_writes_each_requested_file(
    results: list[OptimisationResult], tmp_path: Path
) -> None:
    written = write_reports(results[0], csv_path=tmp_path / "t.csv", html_path=tmp_path / "r.html")
    assert sorted(p.name for p in written) == ["r.html", "t.csv"]
    assert not (tmp_path / "t.xml").exists()
    assert (tmp_path / "t.csv").read_text().startswith("transfer_id,")


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with ``args`` (a screenshot or a DOM dump of a page), its profile in
    ``profile``, no GPU, sync or background networking."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _png_pixels(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) to (h, w, 3)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, header = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    image = np.zeros((height, stride), dtype=np.int64)
    previous = np.zeros(stride, dtype=np.int64)
    for row in range(height):
        start = row * (stride + 1)
        kind = raw[start]
        line = np.frombuffer(raw[start + 1 : start + 1 + stride], dtype=np.uint8).astype(np.int64)
        out = np.zeros(stride, dtype=np.int64)
        if kind in (0, 2):
            out = (line + (previous if kind == 2 else 0)) % 256
        else:
            for x in range(stride):
                left = out[x - channels] if x >= channels else 0
                up = previous[x]
                up_left = previous[x - channels] if x >= channels else 0
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + up) // 2
                else:  # Paeth
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                out[x] = (line[x] + predictor) % 256
        image[row] = out
        previous = out
    return image.reshape(height, width, channels)[:, :, :3]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(
    results: list[OptimisationResult], tmp_path: Path
) -> None:
    report = tmp_path / "report.html"
    report.write_text(savings_report_html(results[-1]), encoding="utf-8")
    screenshot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    completed = _chromium(
        profile, "--window-size=1200,900", f"--screenshot={screenshot}", report.as_uri()
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    pixels = _png_pixels(screenshot)
    assert pixels.shape[:2] == (900, 1200)
    # The chart's bars are drawn: pixels of each account's colour are on the screen.
    for colour in STATE_COLOURS.values():
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        matching = np.all(np.abs(pixels - rgb) <= 3, axis=2).sum()
        assert matching > 200, f"no {colour} bar in the screenshot"
    dom = _chromium(profile, "--dump-dom", report.as_uri())
    assert (
        dom.returncode == 0 and "<svg" in dom.stdout and "Where the margin comes from" in dom.stdout
    )


HOSTILE = '<img src=x onerror="alert(1)">'


def test_html_report_escapes_whatever_the_case_says() -> None:
    """Ids, names and contracts come from the case: they reach the page as text, never markup."""
    data = json.loads(next(p for p in CASE_FILES if p.name.startswith("01-")).read_text())
    data.pop("expected", None)
    note, future = data["instruments"]
    renamed = {note["id"]: f"N{HOSTILE}", future["id"]: f"F{HOSTILE}"}
    for instrument in data["instruments"]:
        instrument["id"] = renamed[instrument["id"]]
    for position in data["positions"]:
        position["instrument"] = renamed[position["instrument"]]
    future["contract"] = HOSTILE
    data["name"] = f"book {HOSTILE}"
    data["customer"]["id"] = f"C{HOSTILE}"
    data["clearing_member"]["id"] = f"M{HOSTILE}"
    page = savings_report_html(optimise(parse_case(data)))

    collector = _Collector()
    collector.feed(page)
    assert "img" not in collector.tags and "script" not in collector.tags
    assert "<img" not in page and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    text = "".join(collector.text)
    for value in (*renamed.values(), data["name"], data["customer"]["id"], HOSTILE):
        assert value in text  # shown, as text


@pytest.mark.parametrize("scale", [0.0, 3e-8, 1e-7, 3e-7])
def test_html_report_of_a_book_margining_next_to_nothing(scale: float) -> None:
    """A book that margins a few USD or nothing at all (no positions) still gets its report,
    its chart's ticks distinct readable numbers and each bar's total its own figure (the ticks
    once ran out of decimals below 2.5 USD and the page was never written)."""
    data = json.loads(next(p for p in CASE_FILES if p.name.startswith("01-")).read_text())
    data.pop("expected", None)
    ficc = {i["id"] for i in data["instruments"] if i["ccp"] == "FICC"}
    data["positions"] = [  # the bonds scaled down (futures are whole contracts: left out)
        {**position, "quantity": position["quantity"] * scale, "xm_quantity": 0.0, "lot": 1.0}
        for position in data["positions"]
        if scale > 0 and position["instrument"] in ficc
    ]
    result = optimise(parse_case(data), options=SolveOptions(integral=False))
    assert result.current.total < 10.0
    page = savings_report_html(result)
    assert "<svg" in page
    chart = _chart([("current", result.current), ("optimised", result.optimised)])
    ticks = [float(tick["label"].replace(",", "")) for tick in chart["ticks"]]
    assert len(ticks) >= 2 and all(b > a for a, b in itertools.pairwise(ticks))
    unit = {"USD": 1.0, "USD k": 1e3, "USD mm": 1e6}[chart["unit_label"]]
    for bar, state in zip(chart["bars"], (result.current, result.optimised), strict=True):
        assert float(bar["total"].replace(",", "")) * unit == pytest.approx(state.total, rel=0.1)


def test_html_report_of_a_continuous_answer_says_so_and_shows_its_fractions() -> None:
    """The savings report of the continuous relaxation says it is one (a lower bound, not
    bookable) and shows each transfer's quantity as exactly as its lots (case 07 moved 549.374
    contracts, shown as '549' beside '549.374' lots, with nothing saying why)."""
    case = next(p for p in CASE_FILES if p.name.startswith("07-"))
    result = optimise(load_case(case), options=SolveOptions(integral=False))
    fractional = [t for t in result.transfers if abs(t.lots - round(t.lots)) > 1e-6]
    assert fractional, "case 07's relaxation moves a fractional number of lots"
    collector = _Collector()
    collector.feed(savings_report_html(result))
    text = " ".join(" ".join(collector.text).split())
    assert "continuous relaxation" in text.lower() and "lower bound" in text.lower()
    for transfer in fractional:
        shown = f"{transfer.quantity:,.6f}".rstrip("0")
        assert shown in text, (shown, text[:2000])


def test_html_report_of_a_whole_lot_answer_has_no_relaxation_note(
    results: list[OptimisationResult],
) -> None:
    collector = _Collector()
    collector.feed(savings_report_html(results[0]))
    assert "relaxation" not in " ".join(collector.text).lower()
