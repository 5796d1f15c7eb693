"""tools/soak.py --quick: a minute of looped playback over a minute-long clip with four lanes of the demo's models,
through the Qt-free workspace, in a child process (its memory figures are the child's own). The full run (an hour)
is reported in docs/RELIABILITY.md; here the script must work, report its figures, and not grow without bound."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"start_rss_mb", "peak_rss_mb", "end_rss_mb", "slope_mb_per_hour", "second_half_slope_mb_per_hour",
        "setup_rss_mb", "growth_mb", "samples", "lanes", "played_s", "frames_rendered", "failures",
        "threads_after_shutdown"}


@pytest.mark.skipif(not (ROOT / "resources" / "demo" / "variants.toml").exists(), reason="the demo is not built")
def test_quick_soak_plays_a_minute_on_four_demo_lanes_and_reports_its_memory(tmp_path) -> None:
    out = tmp_path / "soak.json"
    child = subprocess.run([sys.executable, "tools/soak.py", "--quick", "--cache-mb", "64", "--json", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=1200)
    assert child.returncode == 0, f"{child.stdout[-3000:]}\n{child.stderr[-3000:]}"
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert KEYS <= set(figures)
    assert figures["mode"] == "quick" and len(figures["lanes"]) == 4 and figures["failures"] == []
    assert figures["played_s"] == pytest.approx(60.0, abs=0.1)  # a minute of simulated playback, however slow
    assert figures["frames_rendered"] > 0
    assert figures["threads_after_shutdown"] == []  # the render worker is gone after Transport.shutdown()
    rss = [mb for _, mb in figures["samples"]]
    assert len(rss) >= 3 and figures["peak_rss_mb"] == max(rss)
    assert figures["start_rss_mb"] == rss[0] and figures["end_rss_mb"] == rss[-1]
    # Generous and independent of speed: everything that grows with frames rendered is capped. The frame cache at
    # 64 MiB here; each lane's prepared generator inputs, one per template frame (the demo's 100 templates x 4 lanes
    # x 0.7 MB = 276 MB once a fast machine has visited them all); the avatar's frame LRU; the runtimes' arenas.
    assert figures["end_rss_mb"] - figures["start_rss_mb"] < 600
    # The human-readable figures and the one-line JSON are on stdout too.
    assert "RSS MB: setup" in child.stdout and "slope MB/hour" in child.stdout
    assert json.loads(child.stdout.strip().splitlines()[-1])["peak_rss_mb"] == figures["peak_rss_mb"]
