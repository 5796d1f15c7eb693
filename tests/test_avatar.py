"""Stages 5-6 pinned against PIPELINE.md: crop box, border clipping, mask extents, interpolation, truncation, order.

References are independent of pipeline/avatar.py and pipeline/crop.py: hand-written numbers, numpy slicing itself, and above all the
reference's own calls (tests/reference_calls.py): its .lms parse, its cv2.resize calls with their argument form
(bicubic by keyword for 320; the 160 model's flag passed positionally into `dst`, hence bilinear), its rect-form
cv2.rectangle, its float32 / 255.0, its uint8 cast and its step loop. A separable numpy resampler written here
checks, independently of cv2, which kernel each resize is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.avatar import Avatar, read_lms
from pipeline.crop import (
    CropBox,
    crop_box_from_landmarks,
    mask_crop,
    output_to_uint8,
    paste_back,
    ping_pong_index,
    ping_pong_indices,
    prepare_input,
)
from core.errors import InputError
from tests import reference_calls as reference
from tests.builders.avatar import crop_rectangle, landmarks_for, make_dataset, write_lms


# ---------------------------------------------------------------------------------------------------------------
# Independent references


def numpy_resize(image: np.ndarray, width: int, height: int, kind: str) -> np.ndarray:
    """Separable resampling with half-pixel centres and replicated borders, as cv2 documents for LINEAR and CUBIC.

    Written from the textbook formulas (bilinear: tent kernel; bicubic: Keys kernel with a = -0.75), in float64,
    rounded once at the end; cv2 works in fixed point, so agreement within 1 grey level is what to expect.
    """

    def weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        scale = n_in / n_out
        centre = (np.arange(n_out) + 0.5) * scale - 0.5
        if kind == "linear":
            centre = np.maximum(centre, 0.0)
            base = np.floor(centre).astype(int)
            frac = centre - base
            taps = np.stack([base, base + 1], axis=1)
            w = np.stack([1 - frac, frac], axis=1)
        else:
            base = np.floor(centre).astype(int)
            frac = centre - base
            taps = np.stack([base - 1, base, base + 1, base + 2], axis=1)
            a = -0.75
            d = np.abs(taps - centre[:, None])
            w = np.where(
                d <= 1,
                (a + 2) * d**3 - (a + 3) * d**2 + 1,
                np.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, 0.0),
            )
        return np.clip(taps, 0, n_in - 1), w

    src = image.astype(np.float64)
    rows, row_w = weights(height, src.shape[0])
    cols, col_w = weights(width, src.shape[1])
    vertical = np.einsum("ok,okwc->owc", row_w, src[rows])
    both = np.einsum("pk,opkc->opc", col_w, vertical[:, cols])
    return np.clip(np.floor(both + 0.5), 0, 255).astype(np.uint8)


def reference_template_order(frames: int, num_templates: int) -> list[int]:
    """The SyncTalk_2D inference loop: a stride that flips at the ends, starting from index 0."""
    return reference.template_order(frames, num_templates)


def lms_for_box(xmin: int, ymin: int, xmax: int) -> np.ndarray:
    """int32 landmarks [110, 2] whose points 1, 31 and 52 give this crop box (the rest do not matter to the crop)."""
    lms = np.zeros((110, 2), dtype=np.int32)
    lms[1, 0], lms[31, 0], lms[52, 1] = xmin, xmax, ymin
    return lms


REFERENCE_INPUT = {320: reference.generator_input_328, 160: reference.generator_input_160}
REFERENCE_PASTE = {320: reference.paste_back_328, 160: reference.paste_back_160}
# Crop boxes (xmin, ymin, xmax) on a 240x320 frame: inside, an odd width, past the right and bottom edges.
REFERENCE_BOXES = [(40, 30, 173), (100, 20, 251), (250, 150, 400), (5, 0, 320)]


def textured_frame(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """High-frequency content, so bicubic and bilinear resampling give visibly different pixels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def index_image(height: int, width: int) -> np.ndarray:
    """Each pixel encodes its own position, so a crop tells exactly which rows and columns it took."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([yy % 256, xx % 256, (yy // 256) * 16 + xx // 256], axis=2).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Landmarks and crop box


def test_crop_box_from_hand_made_landmarks() -> None:
    lms = np.zeros((110, 2), dtype=int)
    lms[1] = (37, 90)
    lms[31] = (171, 95)
    lms[52] = (100, 64)
    # xmin = 37, xmax = 171, ymin = 64, ymax = 64 + 134 = 198
    assert crop_box_from_landmarks(lms) == CropBox(37, 64, 171, 198)


def test_crop_box_rejects_wrong_landmark_count() -> None:
    with pytest.raises(InputError, match=r"expected an array of shape \[110, 2\], found \[68, 2\]"):
        crop_box_from_landmarks(np.zeros((68, 2)))


def test_read_lms_accepts_integer_and_float_text_and_trailing_blank_lines(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(-20, 700, size=(110, 2)).round(1)
    values[0] = (123.0, 45.0)
    values[1] = (-3.7, 12.9)
    lines = [f"{x} {y}" for x, y in values]
    lines[2] = "  17\t 18  "  # tabs and padding seen in hand-edited files
    values[2] = (17, 18)
    path = tmp_path / "0.lms"
    path.write_text("\n".join(lines) + "\n\n  \n", encoding="utf-8")
    got = read_lms(path)
    # The reference parses as float32 then casts to int32: truncation toward zero.
    expected = values.astype(np.float32).astype(np.int32)
    assert got.shape == (110, 2)
    np.testing.assert_array_equal(got, expected)
    assert tuple(got[0]) == (123, 45) and tuple(got[1]) == (-3, 12)


@pytest.mark.parametrize("count", [109, 111, 0])
def test_read_lms_is_strict_about_the_number_of_points(tmp_path: Path, count: int) -> None:
    path = tmp_path / "7.lms"
    path.write_text("".join(f"{i} {i}\n" for i in range(count)), encoding="utf-8")
    with pytest.raises(InputError, match=rf"7\.lms: expected 110 lines 'x y', found {count}"):
        read_lms(path)


@pytest.mark.parametrize("bad", ["12 abc", "12", "1 2 3", "nan 4", "5 inf", ""])
def test_read_lms_names_a_bad_line(tmp_path: Path, bad: str) -> None:
    lines = [f"{i} {i}" for i in range(110)]
    lines[41] = bad
    path = tmp_path / "3.lms"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(InputError, match=rf"line 42 to hold two numbers 'x y', found '{bad}'"):
        read_lms(path)


def test_read_lms_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="found no file"):
        read_lms(tmp_path / "nope.lms")


def write_reference_form_lms(path: Path, lines: list[str]) -> None:
    """Lines joined with single spaces and newlines: the form the reference's line.split(" ") can parse."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    "text,expected",
    [
        # float32 rounds these to the next integer before the int32 cast; a float64 parse truncates them instead.
        ("99.99999999", 100),
        ("-99.99999999", -100),
        ("255.99999999", 256),
        # Already exact in float32, or rounding down: plain truncation toward zero.
        ("99.9999", 99),
        ("-3.7", -3),
        ("16777217", 16777216),  # above 2**24 float32 has no odd integers: the reference loses the 1
    ],
)
def test_read_lms_takes_the_references_float32_path(tmp_path: Path, text: str, expected: int) -> None:
    lines = [f"{i} {i + 1}" for i in range(110)]
    lines[1] = f"{text} 7"
    lines[52] = f"8 {text}"
    path = tmp_path / "0.lms"
    write_reference_form_lms(path, lines)
    by_reference = reference.read_lms(str(path))
    got = read_lms(path)
    np.testing.assert_array_equal(got, by_reference)
    assert got[1, 0] == by_reference[1][0] == expected and got[52, 1] == expected


def test_read_lms_equals_the_references_parse_on_float_landmark_files(tmp_path: Path) -> None:
    # Detector output written with many decimals, as PFLD landmark files often are, including near-integers.
    rng = np.random.default_rng(21)
    values = rng.uniform(-30, 1300, size=(110, 2))
    values[::7] = np.round(values[::7]) - 1e-8
    path = tmp_path / "5.lms"
    write_reference_form_lms(path, [f"{float(x)!r} {float(y)!r}" for x, y in values])
    by_reference = reference.read_lms(str(path))
    np.testing.assert_array_equal(read_lms(path), by_reference)
    assert crop_box_from_landmarks(read_lms(path)).as_list() == list(reference.crop_box(by_reference))


@pytest.mark.parametrize("bad", ["3e9 4", "5 -2147483648.0", "1e39 0"])
def test_read_lms_rejects_coordinates_the_int32_cast_cannot_hold(tmp_path: Path, bad: str) -> None:
    lines = [f"{i} {i}" for i in range(110)]
    lines[9] = bad
    path = tmp_path / "2.lms"
    write_reference_form_lms(path, lines)
    with pytest.raises(InputError, match=rf"line 10 to hold two numbers 'x y', found '{bad}' \(finite pixel"):
        read_lms(path)


# ---------------------------------------------------------------------------------------------------------------
# Border clipping: reproduce numpy's slice exactly


@pytest.mark.parametrize(
    "box",
    [
        CropBox(20, 30, 120, 130),  # inside
        CropBox(250, 200, 400, 350),  # past the right and bottom edges: clipped
        CropBox(-50, 10, -10, 50),  # both x bounds negative: a strip counted from the right edge
        CropBox(10, -40, 60, -5),  # both y bounds negative: a strip counted from the bottom
        CropBox(-5, 10, 100, 115),  # negative start, positive stop: empty selection in numpy
        CropBox(300, 10, 100, 115),  # reversed: empty
    ],
)
def test_region_selects_exactly_what_the_numpy_slice_selects(box: CropBox) -> None:
    frame = index_image(240, 320)
    top, bottom, left, right = box.region(240, 320)
    np.testing.assert_array_equal(frame[top:bottom, left:right], frame[box.y1 : box.y2, box.x1 : box.x2])


def test_negative_bounds_count_from_the_far_edge_like_numpy() -> None:
    # Hand-computed: on a 320-wide frame, x1=-50, x2=-10 is columns 270..309.
    assert CropBox(-50, 10, -10, 50).region(240, 320) == (10, 50, 270, 310)
    # x1=-5 means column 315, and 315:100 is empty; so is the reference's crop, which then crashes in cv2.resize.
    top, bottom, left, right = CropBox(-5, 10, 100, 115).region(240, 320)
    assert right - left == 0


def test_box_past_the_border_gives_a_smaller_crop_and_pastes_only_there() -> None:
    frame = textured_frame()
    box = CropBox(250, 150, 400, 300)  # 150x150 requested, 70 wide x 90 high inside the 320x240 frame
    assert box.region(240, 320) == (150, 240, 250, 320)
    prepared = prepare_input(frame, box, 160)
    expected = numpy_resize(frame[150:240, 250:320], 168, 168, "linear")
    assert np.abs(prepared.resized_crop.astype(int) - expected).max() <= 1
    out = paste_back(frame, box, prepared.resized_crop, np.full((3, 160, 160), 0.5, np.float32))
    np.testing.assert_array_equal(out[:150], frame[:150])
    np.testing.assert_array_equal(out[:, :250], frame[:, :250])
    assert not np.array_equal(out[150:, 250:], frame[150:, 250:])


def test_empty_crop_is_an_input_error_not_a_cv2_crash() -> None:
    frame = textured_frame()
    with pytest.raises(InputError, match=r"expected a non-empty region of the 320x240 frame"):
        prepare_input(frame, CropBox(-5, 10, 100, 115), 320)


# ---------------------------------------------------------------------------------------------------------------
# Mask


@pytest.mark.parametrize("size,w,h", [(320, 310, 305), (160, 150, 145)])
def test_mask_matches_the_references_rect_form_call_and_hand_extents(size: int, w: int, h: int) -> None:
    crop = np.full((size, size, 3), 200, np.uint8)
    by_reference = crop.copy()
    # The reference's own call: the (x, y, width, height) form, not two corner points.
    cv2.rectangle(by_reference, (5, 5, w, h), (0, 0, 0), -1)
    masked = mask_crop(crop, size)
    np.testing.assert_array_equal(masked, by_reference)
    black = np.all(masked == 0, axis=2)
    ys, xs = np.nonzero(black)
    # Pinned by hand (PIPELINE.md stage 5): x 5..4+w and y 5..4+h inclusive, exactly w x h pixels.
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 4 + w, 5, 4 + h)
    assert black.sum() == w * h
    # The row and column just outside the rectangle keep the image (the two-point form would blacken them).
    assert np.all(masked[5 + h, 5 : 5 + w] == 200) and np.all(masked[5 : 5 + h, 5 + w] == 200)
    assert np.all(crop == 200), "mask_crop must not touch its input"


def test_mask_differs_from_the_two_point_form_by_one_row_and_column() -> None:
    crop = np.full((320, 320, 3), 200, np.uint8)
    two_point = crop.copy()
    cv2.rectangle(two_point, (5, 5), (315, 310), (0, 0, 0), -1)
    differs = np.any(mask_crop(crop, 320) != two_point, axis=2)
    assert differs.sum() == 311 + 306 - 1


# ---------------------------------------------------------------------------------------------------------------
# Generator input


@pytest.mark.parametrize("size", [320, 160])
@pytest.mark.parametrize("box", REFERENCE_BOXES)
def test_generator_input_is_the_references_own_calls_bit_for_bit(size: int, box: tuple[int, int, int]) -> None:
    frame = textured_frame(seed=11)
    lms = lms_for_box(*box)
    expected_tensor, expected_crop, _ = REFERENCE_INPUT[size](frame, lms)
    prepared = prepare_input(frame, crop_box_from_landmarks(lms), size)
    np.testing.assert_array_equal(prepared.resized_crop, expected_crop)
    assert prepared.tensor.dtype == expected_tensor.dtype == np.float32
    np.testing.assert_array_equal(prepared.tensor[None], expected_tensor)


@pytest.mark.parametrize("size", [320, 160])
@pytest.mark.parametrize("box", REFERENCE_BOXES)
def test_paste_back_is_the_references_own_calls_bit_for_bit(size: int, box: tuple[int, int, int]) -> None:
    frame = textured_frame(seed=12)
    lms = lms_for_box(*box)
    rng = np.random.default_rng(13)
    pred = rng.random((3, size, size), dtype=np.float32)
    pred[0, :4, :4] = [[0.999, 1.0, 0.0, 0.5], [0.0039, 0.004, 0.9999999, 1e-8]] * 2  # cast edge cases
    _, expected_crop, _ = REFERENCE_INPUT[size](frame, lms)
    expected = REFERENCE_PASTE[size](frame, lms, expected_crop, pred)
    prepared = prepare_input(frame, crop_box_from_landmarks(lms), size)
    np.testing.assert_array_equal(paste_back(frame, crop_box_from_landmarks(lms), prepared.resized_crop, pred), expected)


def test_the_160_models_positional_flag_is_bilinear_not_area() -> None:
    # The reference's call cv2.resize(crop, (168, 168), cv2.INTER_AREA) puts the flag into `dst`; made here as is,
    # it must equal a bilinear resize and differ from the area resize the author meant.
    crop = textured_frame(seed=14)[30:163, 40:173]
    as_called = cv2.resize(crop, (168, 168), cv2.INTER_AREA)
    np.testing.assert_array_equal(as_called, cv2.resize(crop, (168, 168), interpolation=cv2.INTER_LINEAR))
    assert not np.array_equal(as_called, cv2.resize(crop, (168, 168), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("size,kind,other", [(320, "cubic", "linear"), (160, "linear", "cubic")])
def test_prepare_input_resizes_with_the_reference_interpolation(size: int, kind: str, other: str) -> None:
    frame = textured_frame()
    box = CropBox(40, 30, 173, 163)  # 133x133: not a ratio any resize special-cases
    crop = frame[30:163, 40:173]
    prepared = prepare_input(frame, box, size)
    outer = size + 8
    assert prepared.resized_crop.shape == (outer, outer, 3) and prepared.resized_crop.dtype == np.uint8
    expected = numpy_resize(crop, outer, outer, kind)
    wrong = numpy_resize(crop, outer, outer, other)
    assert np.abs(prepared.resized_crop.astype(int) - expected).max() <= 1
    assert np.abs(prepared.resized_crop.astype(int) - wrong).max() > 10, "test image must tell the two kernels apart"


@pytest.mark.parametrize("size", [320, 160])
def test_prepare_input_tensor_layout(size: int) -> None:
    frame = textured_frame(seed=3)
    box = CropBox(100, 50, 230, 180)
    prepared = prepare_input(frame, box, size)
    tensor = prepared.tensor
    assert tensor.shape == (6, size, size) and tensor.dtype == np.float32
    inner = prepared.resized_crop[4 : 4 + size, 4 : 4 + size]
    # Channels 0-2: the unmasked crop, BGR order kept, divided by 255.
    for c in range(3):
        np.testing.assert_array_equal(tensor[c], inner[:, :, c].astype(np.float32) / np.float32(255))
    # Channels 3-5: the same crop with the black rectangle, drawn here with cv2 itself.
    w, h = (310, 305) if size == 320 else (150, 145)
    masked = np.ascontiguousarray(inner).copy()
    cv2.rectangle(masked, (5, 5, w, h), (0, 0, 0), -1)  # the reference's own (x, y, w, h) call
    for c in range(3):
        np.testing.assert_array_equal(tensor[3 + c], masked[:, :, c].astype(np.float32) / np.float32(255))
    assert tensor.min() >= 0 and tensor.max() <= 1


def test_prepare_input_rejects_unknown_size_and_bad_frames() -> None:
    frame = textured_frame()
    with pytest.raises(InputError, match=r"expected one of \[160, 320\], found 256"):
        prepare_input(frame, CropBox(0, 0, 100, 100), 256)
    with pytest.raises(InputError, match=r"expected a BGR uint8 image \[H, W, 3\], found float32 \[240, 320, 3\]"):
        prepare_input(frame.astype(np.float32), CropBox(0, 0, 100, 100), 320)


# ---------------------------------------------------------------------------------------------------------------
# Paste-back


def test_output_truncates_like_the_reference_cast() -> None:
    values = np.array([0.999, 1.0, 0.5, 0.0, 0.0039, 0.004, 127.9 / 255], np.float32)
    # Hand-computed: 254.745 -> 254, 255 -> 255, 127.5 -> 127, 0 -> 0, 0.99 -> 0, 1.02 -> 1, 127.9 -> 127
    got = output_to_uint8(values.reshape(1, 1, -1).repeat(3, axis=0))
    assert got.shape == (1, values.size, 3)
    assert got[0, :, 0].tolist() == [254, 255, 127, 0, 0, 1, 127]


def test_output_clips_garbage_instead_of_wrapping_or_crashing() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 1.5, -0.2, 300.0, -1e30], np.float32)
    got = output_to_uint8(np.tile(values, (3, 1, 1)))
    assert got[0, :, 1].tolist() == [0, 255, 0, 255, 0, 255, 0]


@pytest.mark.parametrize("size", [320, 160])
def test_paste_back_by_hand_when_the_crop_is_already_the_resized_size(size: int) -> None:
    # A crop of exactly size+8 pixels resizes onto itself, so every pasted pixel is predictable by hand.
    frame = textured_frame(400, 500, seed=5)
    outer = size + 8
    box = CropBox(60, 40, 60 + outer, 40 + outer)
    before = frame.copy()
    prepared = prepare_input(frame, box, size)
    np.testing.assert_array_equal(prepared.resized_crop, frame[40 : 40 + outer, 60 : 60 + outer])
    out = paste_back(frame, box, prepared.resized_crop, np.full((3, size, size), 0.999, np.float32))
    np.testing.assert_array_equal(frame, before)
    region = out[40 : 40 + outer, 60 : 60 + outer]
    assert np.all(region[4 : 4 + size, 4 : 4 + size] == 254)
    # The 4-pixel margin keeps the template's own pixels, and nothing outside the box changes.
    ring = np.ones((outer, outer), bool)
    ring[4 : 4 + size, 4 : 4 + size] = False
    np.testing.assert_array_equal(region[ring], frame[40 : 40 + outer, 60 : 60 + outer][ring])
    outside = np.ones(frame.shape[:2], bool)
    outside[40 : 40 + outer, 60 : 60 + outer] = False
    np.testing.assert_array_equal(out[outside], frame[outside])


@pytest.mark.parametrize("size,kind", [(320, "cubic"), (160, "linear")])
def test_paste_back_resizes_back_with_the_reference_interpolation(size: int, kind: str) -> None:
    frame = textured_frame(seed=7)
    box = CropBox(90, 60, 221, 191)  # 131x131
    prepared = prepare_input(frame, box, size)
    output = np.random.default_rng(8).random((3, size, size), dtype=np.float32)
    out = paste_back(frame, box, prepared.resized_crop, output)
    patch = prepared.resized_crop.copy()
    patch[4 : 4 + size, 4 : 4 + size] = (output.transpose(1, 2, 0) * np.float32(255)).astype(np.uint8)
    expected = numpy_resize(patch, 131, 131, kind)
    assert np.abs(out[60:191, 90:221].astype(int) - expected).max() <= 1


@pytest.mark.parametrize("size", [320, 160])
def test_round_trip_keeps_the_frame_outside_the_box_and_the_template_untouched(size: int) -> None:
    frame = textured_frame(seed=9)
    frame.setflags(write=False)  # what Avatar.frame hands out
    box = CropBox(70, 50, 210, 190)
    prepared = prepare_input(frame, box, size)
    resized_before = prepared.resized_crop.copy()
    out = paste_back(frame, box, prepared.resized_crop, prepared.tensor[:3])
    assert out.flags.writeable and out is not frame
    outside = np.ones(frame.shape[:2], bool)
    outside[50:190, 70:210] = False
    np.testing.assert_array_equal(out[outside], frame[outside])
    np.testing.assert_array_equal(prepared.resized_crop, resized_before)
    # Inside, the crop's own pixels went up and back down through the resampler: close, not equal.
    assert np.abs(out[50:190, 70:210].astype(int) - frame[50:190, 70:210]).mean() < 40


def test_paste_back_accepts_a_batch_of_one_and_rejects_wrong_shapes() -> None:
    frame = textured_frame()
    box = CropBox(70, 50, 210, 190)
    prepared = prepare_input(frame, box, 160)
    batched = paste_back(frame, box, prepared.resized_crop, prepared.tensor[None, :3])
    np.testing.assert_array_equal(batched, paste_back(frame, box, prepared.resized_crop, prepared.tensor[:3]))
    with pytest.raises(InputError, match=r"expected shape \[3, S, S\], found \[4, 160, 160\]"):
        paste_back(frame, box, prepared.resized_crop, np.zeros((4, 160, 160), np.float32))
    with pytest.raises(InputError, match=r"expected uint8 \[328, 328, 3\] for a 320 generator, found uint8 \[168, 168, 3\]"):
        paste_back(frame, box, prepared.resized_crop, np.zeros((3, 320, 320), np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Template order


@pytest.mark.parametrize(
    "num_templates,expected",
    [
        (1, [0, 0, 0, 0, 0]),
        (2, [1, 0, 1, 0, 1, 0]),
        (3, [1, 2, 1, 0, 1, 2, 1, 0, 1]),
        (5, [1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3]),
    ],
)
def test_ping_pong_order_by_hand(num_templates: int, expected: list[int]) -> None:
    assert [ping_pong_index(i, num_templates) for i in range(len(expected))] == expected
    assert ping_pong_indices(len(expected), num_templates).tolist() == expected


@pytest.mark.parametrize("num_templates", [2, 3, 4, 7, 30])
def test_ping_pong_matches_the_reference_step_loop(num_templates: int) -> None:
    expected = reference_template_order(200, num_templates)
    assert [ping_pong_index(i, num_templates) for i in range(200)] == expected
    assert ping_pong_indices(np.arange(200), num_templates).tolist() == expected


def test_ping_pong_rejects_an_empty_template() -> None:
    with pytest.raises(InputError):
        ping_pong_index(0, 0)
    with pytest.raises(InputError):
        ping_pong_indices(3, 0)


# ---------------------------------------------------------------------------------------------------------------
# Avatar: layouts, laziness, read-only frames


def boxes_from_lms_files(folder: Path, count: int) -> list[CropBox]:
    """Read the .lms files with the reference's own parse and crop-box expressions (np.loadtxt's float64 is not it)."""
    boxes = []
    for i in range(count):
        xmin, ymin, xmax, ymax = reference.crop_box(reference.read_lms(str(folder / "landmarks" / f"{i}.lms")))
        boxes.append(CropBox(xmin, ymin, xmax, ymax))
    return boxes


def test_open_landmarks_layout(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=6, size=(320, 240))
    avatar = Avatar.open(tmp_path)
    assert avatar.num_templates == 6 and avatar.frame_size == (320, 240) and avatar.layout == "landmarks"
    assert [avatar.crop_box(k) for k in range(6)] == boxes_from_lms_files(tmp_path, 6)
    for k in (0, 5):
        frame = avatar.frame(k)
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
        np.testing.assert_array_equal(frame, cv2.imread(str(tmp_path / "full_body_img" / f"{k}.jpg")))


def test_open_rects_layout_and_png_frames(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=4, size=(200, 160), layout="rects", image_format="png")
    avatar = Avatar.open(tmp_path)
    assert avatar.layout == "rects" and avatar.num_templates == 4 and avatar.frame_size == (200, 160)
    rects = json.loads((tmp_path / "cache" / "crop_rectangles.json").read_text())
    assert [avatar.crop_box(k).as_list() for k in range(4)] == [rects[str(k)]["rect"] for k in range(4)]
    np.testing.assert_array_equal(avatar.frame(2), cv2.imread(str(tmp_path / "full_body_img" / "2.png")))


def test_open_accepts_the_parent_of_dataset_name(tmp_path: Path) -> None:
    make_dataset(tmp_path / "dataset" / "may", frames=3)
    assert Avatar.open(tmp_path).folder == tmp_path / "dataset" / "may"
    assert Avatar.open(tmp_path / "dataset").folder == tmp_path / "dataset" / "may"


def test_open_refuses_to_guess_between_two_datasets(tmp_path: Path) -> None:
    make_dataset(tmp_path / "dataset" / "a", frames=2)
    make_dataset(tmp_path / "dataset" / "b", frames=2)
    with pytest.raises(InputError, match=r"expected one dataset below it, found 2: dataset/a, dataset/b"):
        Avatar.open(tmp_path)


def test_builder_crop_boxes_lie_inside_the_frame() -> None:
    for size in [(320, 240), (1280, 720), (96, 96)]:
        for frame in range(6):
            x1, y1, x2, y2 = crop_rectangle(landmarks_for(size, frame))
            assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1] and x2 - x1 == y2 - y1


def test_frames_are_read_only_and_cached_with_a_bound(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=6)
    avatar = Avatar.open(tmp_path, cache_frames=2)
    frame = avatar.frame(1)
    with pytest.raises(ValueError):
        frame[0, 0] = 0
    with pytest.raises(ValueError):
        frame.flags.writeable = True
    copy = frame.copy()
    copy[:] = 0  # copies are the caller's to draw on
    assert avatar.frame(1).max() > 0
    for k in range(6):
        avatar.frame(k)
    assert len(avatar._cache) == 2
    with pytest.raises(IndexError):
        avatar.frame(6)


def test_images_are_decoded_lazily(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=4)
    avatar = Avatar.open(tmp_path)
    assert len(avatar._cache) == 0
    # A frame whose body is damaged after its header is only reported when it is needed, with its file name.
    path = tmp_path / "full_body_img" / "3.jpg"
    data = path.read_bytes()
    path.write_bytes(data[:200])
    avatar.frame(0)
    with pytest.raises(InputError, match=r"3\.jpg"):
        avatar.frame(3)


# ---------------------------------------------------------------------------------------------------------------
# Avatar: every error names what was expected and what was found


def test_error_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="found no such folder"):
        Avatar.open(tmp_path / "missing")


def test_error_folder_without_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"expected full_body_img/ in it or in dataset/<name>/ below it"):
        Avatar.open(tmp_path)


def test_error_missing_lms_for_an_image(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=6)
    (tmp_path / "landmarks" / "2.lms").unlink()
    (tmp_path / "landmarks" / "4.lms").unlink()
    with pytest.raises(InputError, match=r"expected 2\.lms for image 2 \(6 images\), found no such file"):
        Avatar.open(tmp_path)


def test_error_lms_without_an_image(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=4)
    shutil.copy(tmp_path / "landmarks" / "0.lms", tmp_path / "landmarks" / "4.lms")
    with pytest.raises(InputError, match=r"expected as many landmark files as images \(4\), found 5.*4\.lms"):
        Avatar.open(tmp_path)


def test_error_gap_in_images(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=5)
    (tmp_path / "full_body_img" / "1.jpg").unlink()
    with pytest.raises(InputError, match=r"expected images 0\.\.3 without gaps, found no image 1"):
        Avatar.open(tmp_path)


def test_error_wrong_number_of_lines(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=3)
    write_lms(tmp_path / "landmarks" / "1.lms", landmarks_for((320, 240))[:98])
    with pytest.raises(InputError, match=r"1\.lms: expected 110 lines 'x y', found 98"):
        Avatar.open(tmp_path)


def test_error_corrupt_jpg(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=3)
    (tmp_path / "full_body_img" / "2.jpg").write_bytes(b"<html>404 not found</html>")
    with pytest.raises(InputError, match=r"2\.jpg: expected a readable JPEG or PNG, found a damaged or unknown file"):
        Avatar.open(tmp_path)


def test_error_mixed_frame_sizes(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=3)
    cv2.imwrite(str(tmp_path / "full_body_img" / "1.jpg"), np.zeros((100, 120, 3), np.uint8))
    with pytest.raises(InputError, match=r"1\.jpg: expected 320x240 like 0\.jpg, found 120x100"):
        Avatar.open(tmp_path)


def test_error_json_missing_a_key(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=5, layout="rects")
    path = tmp_path / "cache" / "crop_rectangles.json"
    rects = json.loads(path.read_text())
    del rects["3"]
    path.write_text(json.dumps(rects))
    with pytest.raises(InputError, match=r'expected key "3" for image 3 \(5 images\), found none'):
        Avatar.open(tmp_path)


def test_error_json_entry_without_rect(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=3, layout="rects")
    path = tmp_path / "cache" / "crop_rectangles.json"
    rects = json.loads(path.read_text())
    rects["1"] = {"box": [1, 2, 3, 4]}
    path.write_text(json.dumps(rects))
    with pytest.raises(InputError, match=r'expected "1" to hold a "rect" key'):
        Avatar.open(tmp_path)


def test_error_json_rect_of_the_wrong_length(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=3, layout="rects")
    path = tmp_path / "cache" / "crop_rectangles.json"
    rects = json.loads(path.read_text())
    rects["0"]["rect"] = [1, 2, 3]
    path.write_text(json.dumps(rects))
    with pytest.raises(InputError, match=r'expected "0"\.rect = \[x1, y1, x2, y2\] numbers, found \[1, 2, 3\]'):
        Avatar.open(tmp_path)


def test_error_unparsable_json(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=2, layout="rects")
    (tmp_path / "cache" / "crop_rectangles.json").write_text("{not json")
    with pytest.raises(InputError, match="expected JSON"):
        Avatar.open(tmp_path)


def test_error_neither_landmarks_nor_rectangles(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=2)
    shutil.rmtree(tmp_path / "landmarks")
    with pytest.raises(InputError, match=r"expected landmarks/<i>\.lms or cache/crop_rectangles\.json"):
        Avatar.open(tmp_path)


def test_error_crop_box_outside_the_frame(tmp_path: Path) -> None:
    make_dataset(tmp_path, frames=2, layout="rects")
    path = tmp_path / "cache" / "crop_rectangles.json"
    rects = json.loads(path.read_text())
    rects["1"]["rect"] = [-10, 20, 80, 110]
    path.write_text(json.dumps(rects))
    with pytest.raises(InputError, match=r"crop box 1 \[-10, 20, 80, 110\] to select pixels of the 320x240 frame"):
        Avatar.open(tmp_path)
