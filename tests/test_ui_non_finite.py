"""The window shows NaN/Inf: a red count in the lane and red marks on the timeline at the frames they reach.

Widgets on their own (pytest-qt, offscreen); which frames a bad feature reaches is checked against the audio tensors
built by pipeline.features (PIPELINE.md stage 4), not against the helper the widgets use.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.features import audio_tensors
from ui.lane_view import LaneView
from ui.timeline import NON_FINITE_COLOUR, Timeline

FLOAT32_MAX_BY_HAND = (2 - 2**-23) * 2.0**127  # IEEE 754 binary32's largest finite value


def _features_with(bad: dict[tuple[int, int], float], rows: int = 40) -> np.ndarray:
    features = np.full((rows, 512), 0.5, np.float32)
    for (row, column), value in bad.items():
        features[row, column] = value
    return features


def _frames_fed_bad_values(features: np.ndarray) -> np.ndarray:
    tensors = audio_tensors(features)
    return ~np.isfinite(tensors.reshape(len(tensors), -1)).all(axis=1)


def test_lane_view_counts_non_finite_features_and_the_frames_they_reach(qtbot) -> None:
    view = LaneView("port")
    qtbot.addWidget(view)
    features = _features_with({(7, 100): np.nan, (11, 3): np.inf, (11, 4): -np.inf})
    view.set_features(features)
    assert view.non_finite_features == 3
    assert not view.non_finite_marker.isHidden()
    assert "3 NaN/Inf features" in view.non_finite_marker.text()
    np.testing.assert_array_equal(view.non_finite_frames(40), _frames_fed_bad_values(features))
    # The largest finite |feature| goes to the scale check.
    assert view.feature_peak == 0.5


def test_lane_view_counts_non_finite_pixels_per_frame_until_the_scale_changes(qtbot) -> None:
    view = LaneView("port")
    qtbot.addWidget(view)
    view.set_features(_features_with({}))
    assert view.non_finite_marker.isHidden() and not view.non_finite_frames(40).any()
    view.note_frame(12, 100)
    view.note_frame(3, 100)
    view.note_frame(5, 0)
    assert view.non_finite_pixels == 200
    assert "200 NaN/Inf pixels in 2 frames (first 3)" in view.non_finite_marker.text()
    assert np.flatnonzero(view.non_finite_frames(40)).tolist() == [3, 12]
    view.note_frame(12, 0)  # re-rendered clean
    assert view.non_finite_pixels == 100
    view.clear_frames()
    assert view.non_finite_pixels == 0 and view.non_finite_marker.isHidden()


def test_timeline_marks_non_finite_frames_in_red_on_the_lanes_row(qtbot) -> None:
    timeline = Timeline()
    qtbot.addWidget(timeline)
    timeline.set_audio(np.zeros(16000, np.float32), 30)
    rendered = [np.ones(30, bool), np.zeros(30, bool)]
    bad = [np.zeros(30, bool), np.zeros(30, bool)]
    bad[1][[4, 5, 20]] = True
    timeline.set_rendered(rendered)
    timeline.set_non_finite(bad)
    picture = timeline._non_finite.image  # rows flipped: the last image row is the first lane's top half
    assert picture.shape == (4, 30, 4)
    red = np.all(picture == NON_FINITE_COLOUR, axis=-1)
    second_lane_top = red[1]
    assert np.flatnonzero(second_lane_top).tolist() == [4, 5, 20]
    assert not red[[0, 2, 3]].any()
    timeline.set_non_finite([np.zeros(30, bool), np.zeros(30, bool)])
    assert timeline._non_finite.image is None


# ---------------------------------------------------------------------------------------------------------------
# the real window, on a session whose port lane dumps a NaN feature and whose other lane's features are enormous

WAIT_MS = 60_000  # generous: two shared cores


@pytest.fixture
def non_finite_window(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from backends.registry import MODELS
    from pipeline.audio import load_audio
    from pipeline.lane import Lane
    from pipeline.session import LaneSpec
    from tests.builders.speech import espeak_available
    from tests.builders.ui_session import make_ui_session
    from ui.main_window import MainWindow

    if not espeak_available():
        pytest.skip("espeak-ng is needed to speak the test clip")
    made = make_ui_session(tmp_path / "session")
    features = Lane(LaneSpec("ref", made.encoder), load_audio(made.folder / "speech.wav"), models=MODELS).features()
    bad = np.array(features, copy=True)
    bad[2, 5] = np.nan  # row 2: inside the audio tensor of frames 0..10
    np.save(made.folder / "bad.npy", bad)
    np.save(made.folder / "huge.npy", np.asarray(features, np.float32) * np.float32(1e36))
    path = made.folder / "nan.toml"
    path.write_text(
        'audio = "speech.wav"\navatar = "avatar"\n'
        '[[lanes]]\nname = "reference"\nencoder = "encoder.onnx"\ngenerator = "generator.onnx"\n'
        '[[lanes]]\nname = "port"\nencoder = "bad.npy"\ngenerator = "generator.onnx"\n'
        '[[lanes]]\nname = "huge"\nencoder = "huge.npy"\ngenerator = "generator.onnx"\n', encoding="utf-8")
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), prefer_audio=False)
    qtbot.addWidget(window)
    window.show()
    assert window.open_session(path)
    yield window, bad, float(np.abs(features).max()) * 1e36
    window.close()


def _slot(window, name: str):
    return next(s for s in window.slots if s.spec.name == name)


def test_the_window_counts_and_marks_a_lanes_nan(qtbot, non_finite_window) -> None:
    window, bad, _ = non_finite_window
    port = _slot(window, "port")
    qtbot.waitUntil(lambda: port.view.non_finite_features == 1, timeout=WAIT_MS)
    assert "1 NaN/Inf features" in port.view.non_finite_marker.text()
    expected = _frames_fed_bad_values(bad)
    window._refresh_timeline()
    rows = window.timeline.non_finite_rows
    assert len(rows) == 3 and not rows[0].any()
    np.testing.assert_array_equal(rows[1][: len(expected)], expected)
    # Frame 0 is generated from a NaN feature: its output pixels are NaN, and the lane counts them.
    qtbot.waitUntil(lambda: port.view.non_finite_pixels > 0, timeout=WAIT_MS)
    assert "NaN/Inf pixels" in port.view.non_finite_marker.text()
    assert _slot(window, "reference").view.non_finite_marker.isHidden()


def test_the_window_refuses_a_scale_that_overflows_the_lanes_features(qtbot, non_finite_window) -> None:
    window, _, peak = non_finite_window
    huge = _slot(window, "huge")
    qtbot.waitUntil(lambda: huge.view.feature_peak is not None, timeout=WAIT_MS)
    assert huge.view.feature_peak == pytest.approx(peak, rel=1e-6)
    scale = 100.0  # on the slider's scale, but 100 x peak is beyond float32's largest
    assert peak * scale > FLOAT32_MAX_BY_HAND
    window.set_lane_scale(huge.lane_id, scale)
    assert huge.scale == 1.0
    message = window.statusBar().currentMessage()
    assert "scale refused" in message and "above float32's largest" in message
    window.set_lane_scale(huge.lane_id, 0.5)  # a scale float32 carries is applied as usual
    assert huge.scale == 0.5
