"""`report --html`: one self-contained page, opened in headless Chromium (Debian's `chromium`, in the dev set-up).

The browser is the independent reader: its DOM must name every lane, show the verdicts and hold the pictures as
embedded PNGs, its screenshot must show the plots drawn, and the file must reference nothing outside itself.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli.main import run as cli_run
from core.errors import InputError
from pipeline.html_report import build_html, key_frames, nice_ticks, write_html_report
from pipeline.lane import FailedLane
from pipeline.session import LaneSpec

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"
DEMO_LANES = ("ONNX Runtime (reference)", "Core ML encoder, converted untrained")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get "
                                    "install chromium; tools/setup.sh dev installs it)")


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile, no network services, no sandbox (tests may run as root)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


class _Page(HTMLParser):
    """The tags, attributes and visible text of a DOM, as the browser serialised it."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def parse(markup: str) -> _Page:
    page = _Page()
    page.feed(markup)
    return page


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo's report as a page and, from the same run, as JSON: what the page must show."""
    folder = tmp_path_factory.mktemp("html")
    out, data = folder / "report.html", folder / "report.json"
    code = cli_run(["report", str(DEMO / "demo.toml"), "--html", str(out), "--json", str(data)])
    assert code == 3  # the demo's untrained lane does not match: the page is written all the same
    return out, json.loads(data.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_page(demo_run: tuple[Path, dict]) -> Path:
    return demo_run[0]


@needs_chromium
def test_browser_shows_lane_names_verdicts_and_embedded_pictures(demo_run: tuple[Path, dict], tmp_path: Path) -> None:
    demo_page, data = demo_run
    result = chromium(["--dump-dom", demo_page.as_uri()], tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    page = parse(result.stdout)
    text = " ".join(" ".join(page.text).split())
    for name in DEMO_LANES:
        assert name in text
    assert data["diagnosis"]
    for verdict in data["diagnosis"]:  # every verdict, in the report's own words, with its kind and stage
        assert " ".join(verdict["explanation"].split()) in text
        assert f"DIFFERS · {verdict['kind']}" in text
        assert f"first divergent stage: {verdict['first_divergent_stage']}" in text
    assert "Mouth opening over time" in text and "Mouths at key frames" in text
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    embedded = [a["src"] for a in images if a.get("src", "").startswith("data:image/png;base64,")]
    assert len(embedded) == len(images)
    # A feature plot per lane, the mouth-opening and loudness plots, and every lane's mouth at each key frame.
    assert len(embedded) >= len(DEMO_LANES) * (1 + 3) + 2
    alts = [a.get("alt", "") for a in images]
    for name in DEMO_LANES:
        assert f"feature range over time: {name}" in alts
        assert sum(alt.startswith(f"{name}, frame ") for alt in alts) >= 3
    for uri in embedded:  # each one is a real picture, not an empty placeholder
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[0] >= 100 and picture.std() > 5


@needs_chromium
def test_browser_draws_the_plots(demo_page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    result = chromium([f"--screenshot={shot}", "--window-size=1280,2600", demo_page.as_uri()], tmp_path / "profile")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    picture = cv2.imread(str(shot))
    # The reference lane's mean line (#1a73e8) and the second lane's (#d93025), as drawn in the embedded plots.
    for rgb in ((0x1A, 0x73, 0xE8), (0xD9, 0x30, 0x25)):
        bgr = np.array(rgb[::-1], np.int16)
        close = (np.abs(picture.astype(np.int16) - bgr).max(axis=2) <= 12).sum()
        assert close > 200, f"colour {rgb} barely on screen ({close} px)"


def test_page_references_nothing_outside_itself(demo_page: Path) -> None:
    markup = demo_page.read_text(encoding="utf-8")
    page = parse(markup)
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe", "object", "embed")]
    for tag, attrs in page.tags:
        for key in ("src", "href", "srcset", "poster", "data"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), (tag, key, attrs[key][:80])
    assert not re.search(r"url\(|@import|https?://", markup, re.IGNORECASE)


def test_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    out = tmp_path / "exists.html"
    out.write_text("keep")
    assert cli_run(["report", str(DEMO / "demo.toml"), "--html", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "keep"


def test_lane_names_are_escaped_and_failed_lanes_are_shown() -> None:
    lanes = [FailedLane(LaneSpec("<script>alert(1)</script>", None), "model.onnx: not an ONNX file")]
    report = {"reference": lanes[0].name, "lanes": [{"name": lanes[0].name, "error": lanes[0].message}],
              "comparisons": [], "diagnosis": [], "errors": [f"lane {lanes[0].name!r}: {lanes[0].message}"]}
    markup = build_html(report, lanes)
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert "cannot run: model.onnx: not an ONNX file" in markup


def test_html_name_is_checked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="ending in .html"):
        write_html_report(tmp_path / "x.txt", {"lanes": []}, [], None, False)
    assert list(tmp_path.iterdir()) == []


def test_key_frames_are_the_loud_moments_and_one_quiet_one() -> None:
    per = 16000 // 25
    samples = np.zeros(100 * per, np.float32)
    for frame, level in ((20, 0.9), (21, 0.8), (60, 0.5), (85, 0.3)):
        samples[frame * per:(frame + 1) * per] = level
    # The three loudest moments at least 12 frames apart (21 is louder than 60 but next to 20), then the quietest.
    assert key_frames(samples, 100, count=4) == [0, 20, 60, 85]


def test_ticks_are_round_numbers_covering_the_range() -> None:
    assert nice_ticks(0.0, 4.76) == [0.0, 2.0, 4.0]  # steps of 1, 2 or 5 x 10^k, at most about 5 ticks
    assert nice_ticks(-0.013, 0.18, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15])


class _FeaturesOnlyLane:
    """A lane that has features but cannot draw (no avatar): the page plots it and says why it has no mouths."""

    name = "features only"
    num_frames = 30

    class audio:  # noqa: N801 - stands in for pipeline.audio.Audio
        samples = np.sin(np.linspace(0, 300, 30 * 640)).astype(np.float32)

    def features(self) -> np.ndarray:
        return np.linspace(0, 1, 30 * 512, dtype=np.float32).reshape(30, 512)

    def frame(self, i: int):
        raise InputError("lane 'features only': frames need an avatar folder, but the session names none")


def test_a_session_without_frames_still_gets_its_feature_plot_and_the_reason_for_no_mouths() -> None:
    lane = _FeaturesOnlyLane()
    markup = build_html({"reference": lane.name, "lanes": [{"name": lane.name}], "comparisons": [],
                         "diagnosis": []}, [lane])
    page = parse(markup)
    images = [a for tag, a in page.tags if tag == "img"]
    assert [a["alt"] for a in images] == ["feature range over time: features only"]
    assert "No lane can draw frames" in markup and "frames need an avatar folder" in markup
