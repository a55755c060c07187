"""``ceap journey PROGRAM --plot --format png|svg --output FILE``: the journey drawn by
ceap itself (an SVG layout, PNG through vl-convert), and the formats' errors."""

from __future__ import annotations

import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ceap.cli import app
from ceap.journeys import picture
from ceap.spec import load_program

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_NS = "{http://www.w3.org/2000/svg}"
TRIAL = {"name": "trial_nudge", "source": {"type": "events", "on": ["trial_started"]},
         "action": {"type": "inform", "channels": ["email"], "template": "trial_nudge"},
         "journey": {"exit_on": ["clicked"], "steps": [
             {"id": "email", "send": {"channels": ["email"]}},
             {"id": "wait_open",
              "wait_for": {"events": {"opened": "end"}, "within": "24h", "timeout": "sms"}},
             {"id": "sms", "send": {"channels": ["sms"], "template": "trial_nudge_sms"}}]}}
CART = {"name": "cart", "source": {"type": "events", "on": ["cart_updated"]},
        "action": {"type": "inform", "channels": ["email"], "template": "cart"},
        "journey": {"exit_on": ["purchase"], "reentry": "7d", "steps": [
            {"id": "big",
             "branch": {"if": "cart_value >= 100 AND note <> '<&>'", "then": "free", "else": "plain"}},
            {"id": "free", "send": {"template": "cart_free_shipping"}, "next": "pause"},
            {"id": "plain", "send": {"template": "cart_reminder"}},
            {"id": "pause", "wait_for": {"events": {"clicked": "end", "opened": None}, "within": "1d"}},
            {"id": "sms", "send": {"channels": ["sms"]}},
            {"id": "again", "wait_for": {"within": "2d", "timeout": "plain", "events": {"replied": "stop"}}},
            {"id": "stop", "exit": "replied"}]}}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "programs").mkdir()
    for spec in (TRIAL, CART):
        (tmp_path / "programs" / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path


def plot(project: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--project", str(project), "journey", *args])


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_png_is_written_and_is_a_real_drawing(project: Path) -> None:
    out = project / "out" / "journey.png"
    done = plot(project, "trial_nudge", "--plot", "--format", "png", "--output", str(out))
    assert done.exit_code == 0, done.output
    assert f"journey graph written to {out}" in done.stderr and done.stdout == ""
    data = out.read_bytes()
    width, height = png_size(data)
    assert width > 300 and height > 600  # four rows of steps, twice the SVG's size
    # not a blank canvas: far more bytes than a white image of the same size
    import vl_convert

    blank = vl_convert.svg_to_png(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width // 2}" '
                                  f'height="{height // 2}"><rect width="100%" height="100%" fill="white"/>'
                                  "</svg>", scale=2)
    assert png_size(blank) == (width, height)
    assert len(data) > 5 * len(blank) and len(data) > 20_000


def test_the_suffix_gives_the_format(project: Path) -> None:
    for name, start in (("g.png", PNG_MAGIC), ("g.svg", b"<svg "), ("g.dot", b"digraph journey {"),
                        ("g.mmd", b"flowchart TD"), ("g.txt", b"enter -> email")):
        done = plot(project, "trial_nudge", "--plot", "-o", str(project / name))
        assert done.exit_code == 0, done.output
        assert (project / name).read_bytes().startswith(start), name
    printed = plot(project, "trial_nudge", "--plot", "--format", "svg")
    assert printed.exit_code == 0 and printed.stdout.startswith("<svg ")


def test_png_needs_a_file_and_other_formats_are_refused(project: Path) -> None:
    no_file = plot(project, "trial_nudge", "--plot", "--format", "png")
    assert no_file.exit_code == 2 and "--format png writes an image: give --output FILE" in no_file.stderr
    assert no_file.stdout == ""  # no image bytes on the terminal
    other = plot(project, "trial_nudge", "--plot", "--format", "gif")
    assert other.exit_code == 2
    assert "--format: expected one of mermaid, dot, text, svg, png, got 'gif'" in other.stderr


def test_a_missing_renderer_fails_with_one_line_saying_what_to_install(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vl_convert", None)  # import vl_convert raises ImportError
    out = project / "j.png"
    done = plot(project, "trial_nudge", "--plot", "--format", "png", "--output", str(out))
    assert done.exit_code == 1 and not out.exists()
    assert done.stderr.strip().splitlines() == [
        "error: --format png needs the vl-convert-python package (a dependency of ceap, missing here): "
        "pip install 'vl-convert-python>=1.6,<2'"]


def boxes(svg: str) -> dict[str, tuple[float, float, float, float]]:
    """Each step's box (x0, y0, x1, y1) in the SVG, found by its bold id."""
    root = ET.fromstring(svg)
    found: dict[str, tuple[float, float, float, float]] = {}
    items = list(root)
    for i, item in enumerate(items):
        if item.tag == f"{SVG_NS}text" and item.get("font-weight") == "bold" and not item.get("font-size"):
            shape = items[i - 1]
            if shape.tag == f"{SVG_NS}rect":
                x, y = float(shape.get("x", 0)), float(shape.get("y", 0))
                w, h = float(shape.get("width", 0)), float(shape.get("height", 0))
                found[item.text or ""] = (x, y, x + w, y + h)
            elif shape.tag == f"{SVG_NS}polygon":
                pts = [tuple(map(float, p.split(","))) for p in (shape.get("points") or "").split()]
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                found[item.text or ""] = (min(xs), min(ys), max(xs), max(ys))
    return found


def test_the_svg_shows_every_step_and_move_without_overlaps(tmp_path: Path) -> None:
    path = tmp_path / "cart.yaml"
    path.write_text(yaml.safe_dump(CART))
    spec = load_program(path)
    svg = picture.svg(spec.journey, spec.action, spec.name)
    root = ET.fromstring(svg)  # well-formed: the branch's '<&>' is escaped
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert "if cart_value >= 100 AND note <> '<&>'" in texts
    assert {"then", "else", "clicked", "opened, timeout", "replied", "timeout"} <= set(texts)
    assert "any step: exit on purchase" in texts and "re-entry: after 1w" in texts
    found = boxes(svg)
    assert set(found) == {s["id"] for s in CART["journey"]["steps"]}  # type: ignore[index]
    rects = list(found.values())
    for i, a in enumerate(rects):  # no two steps drawn over each other
        for b in rects[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    # forward moves go down; the move back up (again -> plain) is drawn dashed round the side
    assert found["big"][3] < found["free"][1] < found["pause"][1] < found["sms"][1] < found["again"][1]
    dashed = [p for p in root.iter(f"{SVG_NS}polyline") if p.get("stroke-dasharray")]
    assert len(dashed) == 1
