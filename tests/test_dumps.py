"""Feature and mel dumps: every accepted layout reads back to the array that was written, every other one is refused.

References are the arrays the tests write themselves (and, for padding, a hand-built [N+2,512] array), so a reading
mistake in backends/dumps.py cannot hide behind its own output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.dumps import FeatureDump, load_feature_dump, load_mel_dump, open_mel_dump
from core.errors import InputError


def features_like(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 10.0, size=(rows, 512)).astype(np.float32)


def hand_padded(features: np.ndarray) -> np.ndarray:
    """Padding written out row by row, independently of the module's concatenate."""
    rows = [features[0]] + [features[i] for i in range(len(features))] + [features[-1]]
    return np.stack(rows)


# ---------------------------------------------------------------------------------------------- feature dumps


def test_npy_with_n_plus_2_rows_is_used_as_is(tmp_path: Path) -> None:
    padded = features_like(24)
    np.save(tmp_path / "aud_ave.npy", padded)
    dump = FeatureDump(tmp_path / "aud_ave.npy", num_windows=22)
    np.testing.assert_array_equal(dump.features, padded)
    assert dump.features.dtype == np.float32
    assert dump.provenance.runtime == "dump" and dump.provenance.precision == "fp32"
    assert "used as is" in dump.provenance.details["padding"]


def test_npy_with_n_rows_is_padded_by_repeating_first_and_last(tmp_path: Path) -> None:
    raw = features_like(22)
    np.save(tmp_path / "f.npy", raw)
    dump = FeatureDump(tmp_path / "f.npy", num_windows=22)
    assert dump.features.shape == (24, 512)
    np.testing.assert_array_equal(dump.features, hand_padded(raw))
    assert "padded" in dump.provenance.details["padding"]


def test_other_row_counts_name_both_expected_counts(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", features_like(30))
    with pytest.raises(InputError, match=r"expected 22 rows \(N, one per window\) or 24 rows \(N\+2, padded\).*"
                                         r"found 30 rows"):
        FeatureDump(tmp_path / "f.npy", num_windows=22)


def test_without_num_windows_rows_are_kept_and_the_assumption_recorded(tmp_path: Path) -> None:
    raw = features_like(10)
    np.save(tmp_path / "f.npy", raw)
    dump = FeatureDump(tmp_path / "f.npy")
    np.testing.assert_array_equal(dump.features, raw)
    assert dump.provenance.details["padding"] == "assumed already padded: 10 rows used as N+2 (N = 8)"
    np.testing.assert_array_equal(load_feature_dump(tmp_path / "f.npy"), raw)


def test_wrong_width_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.zeros((24, 256), np.float32))
    with pytest.raises(InputError, match=r"expected features \[N,512\] or \[N\+2,512\], found \[24, 256\]"):
        FeatureDump(tmp_path / "f.npy")


def test_leading_batch_of_one_is_dropped(tmp_path: Path) -> None:
    raw = features_like(5)
    np.save(tmp_path / "f.npy", raw[None])
    np.testing.assert_array_equal(FeatureDump(tmp_path / "f.npy").features, raw)


def test_float64_is_converted_with_a_note(tmp_path: Path) -> None:
    raw = features_like(4).astype(np.float64) + 1e-9
    np.save(tmp_path / "f.npy", raw)
    dump = FeatureDump(tmp_path / "f.npy")
    assert dump.features.dtype == np.float32
    np.testing.assert_array_equal(dump.features, raw.astype(np.float32))
    assert dump.provenance.details["converted"] == "float64 -> float32"
    assert dump.provenance.precision == "fp64"


def test_strings_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.array([["a"] * 512]))
    with pytest.raises(InputError, match="expected float32 numbers, found dtype <U1"):
        FeatureDump(tmp_path / "f.npy")


def test_nan_and_inf_are_kept_and_counted(tmp_path: Path) -> None:
    raw = features_like(4)
    raw[0, 0] = np.nan
    raw[1, 1:3] = np.nan
    raw[2, 5] = np.inf
    raw[3, 7] = -np.inf
    np.save(tmp_path / "f.npy", raw)
    dump = FeatureDump(tmp_path / "f.npy")
    assert dump.provenance.details["nan"] == "3" and dump.provenance.details["inf"] == "2"
    np.testing.assert_array_equal(dump.features, raw)  # NaN compares equal in assert_array_equal


def test_bin_is_raw_little_endian_float32_512_per_row(tmp_path: Path) -> None:
    raw = features_like(7)
    # written through Python's struct-free path: explicit little-endian bytes, no header
    (tmp_path / "aud_ave.bin").write_bytes(raw.astype("<f4").tobytes())
    dump = FeatureDump(tmp_path / "aud_ave.bin", num_windows=5)
    np.testing.assert_array_equal(dump.features, raw)
    assert "no header" in dump.provenance.details["format"]


def test_bin_of_n_rows_is_padded(tmp_path: Path) -> None:
    raw = features_like(3)
    (tmp_path / "f.bin").write_bytes(raw.astype("<f4").tobytes())
    np.testing.assert_array_equal(FeatureDump(tmp_path / "f.bin", num_windows=3).features, hand_padded(raw))


@pytest.mark.parametrize("size", [0, 2047, 2049, 4100])
def test_bin_size_not_a_multiple_of_a_row_names_the_byte_count(tmp_path: Path, size: int) -> None:
    (tmp_path / "f.bin").write_bytes(b"\x00" * size)
    with pytest.raises(InputError, match=f"multiple of 2048 bytes; found {size} bytes"):
        FeatureDump(tmp_path / "f.bin")


def test_npz_with_one_array_of_any_name(tmp_path: Path) -> None:
    raw = features_like(6)
    np.savez(tmp_path / "f.npz", whatever=raw)
    dump = FeatureDump(tmp_path / "f.npz")
    np.testing.assert_array_equal(dump.features, raw)
    assert dump.provenance.details["npz key"] == "whatever"


@pytest.mark.parametrize("key", ["features", "aud", "aud_ave", "arr_0"])
def test_npz_with_a_known_key_among_others(tmp_path: Path, key: str) -> None:
    raw = features_like(6)
    np.savez(tmp_path / "f.npz", **{key: raw, "frame_ids": np.arange(6)})
    np.testing.assert_array_equal(FeatureDump(tmp_path / "f.npz").features, raw)


def test_npz_ambiguous_keys_are_listed(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", first=features_like(4), second=features_like(4))
    with pytest.raises(InputError, match="expected one array or one of the keys features, aud, aud_ave, arr_0, "
                                         "found keys first, second"):
        FeatureDump(tmp_path / "f.npz")
    np.savez(tmp_path / "g.npz", features=features_like(4), aud=features_like(4))
    with pytest.raises(InputError, match="found keys features, aud"):
        FeatureDump(tmp_path / "g.npz")


def test_corrupt_missing_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "f.npy").write_bytes(b"not numpy at all")
    with pytest.raises(InputError, match="not a NumPy .npy file"):
        FeatureDump(tmp_path / "f.npy")
    (tmp_path / "f.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a NumPy .npz archive"):
        FeatureDump(tmp_path / "f.npz")
    with pytest.raises(InputError, match="feature dump not found"):
        FeatureDump(tmp_path / "nothing.npy")
    (tmp_path / "f.txt").write_text("1 2 3")
    with pytest.raises(InputError, match=r"expected a .npy, .npz or .bin file, found .txt"):
        FeatureDump(tmp_path / "f.txt")


# ---------------------------------------------------------------------------------------------- mel dumps


def mel_like(frames: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-4.0, 4.0, size=(frames, 80)).astype(np.float32)


def test_mel_time_major_is_read_as_is(tmp_path: Path) -> None:
    mel = mel_like(81)
    np.save(tmp_path / "mel.npy", mel)
    np.testing.assert_array_equal(load_mel_dump(tmp_path / "mel.npy"), mel)


def test_mel_band_major_is_transposed(tmp_path: Path) -> None:
    mel = mel_like(81)
    np.save(tmp_path / "mel.npy", np.ascontiguousarray(mel.T))
    dump = open_mel_dump(tmp_path / "mel.npy")
    np.testing.assert_array_equal(dump.mel, mel)
    assert dump.provenance.details["orientation"] == "[80, 81] read as [80,T] and transposed"


def test_mel_with_a_leading_batch_is_accepted(tmp_path: Path) -> None:
    mel = mel_like(40)
    np.save(tmp_path / "mel.npy", mel.T[None])
    loaded = load_mel_dump(tmp_path / "mel.npy")
    assert loaded.shape == (40, 80)
    np.testing.assert_array_equal(loaded, mel)


def test_mel_of_80_frames_is_ambiguous(tmp_path: Path) -> None:
    np.save(tmp_path / "mel.npy", mel_like(80))
    with pytest.raises(InputError, match=r"found \[80, 80\], which could be \[T,80\] or \[80,T\]"):
        load_mel_dump(tmp_path / "mel.npy")


def test_mel_of_wrong_width_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "mel.npy", np.zeros((100, 64), np.float32))
    with pytest.raises(InputError, match=r"expected a mel \[T,80\] or \[80,T\], found \[100, 64\]"):
        load_mel_dump(tmp_path / "mel.npy")


def test_mel_bin_and_npz_and_dtype_conversion(tmp_path: Path) -> None:
    mel = mel_like(33)
    (tmp_path / "mel.bin").write_bytes(mel.astype("<f4").tobytes())
    np.testing.assert_array_equal(load_mel_dump(tmp_path / "mel.bin"), mel)
    np.savez(tmp_path / "mel.npz", mel=mel.astype(np.float64), other=np.zeros(3))
    dump = open_mel_dump(tmp_path / "mel.npz")
    assert dump.mel.dtype == np.float32 and dump.provenance.details["converted"] == "float64 -> float32"
    np.testing.assert_array_equal(dump.mel, mel)
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="multiple of 320 bytes; found 100 bytes"):
        load_mel_dump(tmp_path / "bad.bin")


def test_mel_nan_is_counted(tmp_path: Path) -> None:
    mel = mel_like(20)
    mel[3, 4] = np.nan
    np.save(tmp_path / "mel.npy", mel)
    assert open_mel_dump(tmp_path / "mel.npy").provenance.details["nan"] == "1"
