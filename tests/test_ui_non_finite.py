"""The window shows NaN/Inf: a red count in the lane and red marks on the timeline at the frames they reach.

Widgets on their own (pytest-qt, offscreen); which frames a bad feature reaches is checked against the audio tensors
built by pipeline.features (PIPELINE.md stage 4), not against the helper the widgets use.
"""

from __future__ import annotations

import numpy as np

from pipeline.features import audio_tensors
from ui.lane_view import LaneView
from ui.timeline import NON_FINITE_COLOUR, Timeline


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
