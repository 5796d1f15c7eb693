"""The reference pipeline's own calls, written here in the reference's own form, as test references.

The reference is SyncTalk_2D (its inference_328.py and the Wav2Lip-derived mel code in its utils.py) and, for the
160 model, its ancestor Ultralight-Digital-Human. A test that re-derives a stage (a "cleaner" expression, a
float64 filter bank, `80 * i / 25` instead of `80. * (i / float(25))`, the two-point cv2.rectangle) can agree with
our code and still disagree with the reference: that is how the mask bug got through. So every function below
makes the call the reference makes: the same function, the same argument form (positional where the reference
is positional), the same default dtypes (librosa's float32 filter bank, scipy's float64 lfilter output), and the
same literal expressions in the same evaluation order. Nothing here is shared with pipeline/: a test compares
our implementation against these.

Where a call depends on the installed library's defaults (librosa.stft's pad mode is "constant" from 0.10 on,
"reflect" before 0.9), the tests pass the mode they mean explicitly; the reference call itself passes none.
"""

from __future__ import annotations

import cv2
import librosa
import librosa.filters
import numpy as np
from scipy import signal

# --- stage 1: utils.py (Wav2Lip's audio.py with the hparams written in) --------------------------------------------


def load_wav(path: str, sr: int = 16000) -> np.ndarray:
    """The reference's load: librosa.core.load(path, sr=sr)[0] (float32 mono, soxr_hq resampling)."""
    return librosa.core.load(path, sr=sr)[0]


def preemphasis(wav: np.ndarray, k: float = 0.97) -> np.ndarray:
    """signal.lfilter([1, -k], [1], wav): float64 output for float32 input, because the taps are Python floats."""
    return signal.lfilter([1, -k], [1], wav)


def _stft(y: np.ndarray, pad_mode: str | None = None) -> np.ndarray:
    """librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800): default hann window, center=True.

    pad_mode None is the reference's call exactly (the installed librosa's default); a mode pins one era.
    """
    if pad_mode is None:
        return librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800)
    return librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode=pad_mode)


def _build_mel_basis() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600): float32, librosa's default dtype."""
    return librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)


def _linear_to_mel(spectogram: np.ndarray) -> np.ndarray:
    """np.dot(float32 basis, float64 magnitudes): numpy promotes the basis, so the sum runs in float64."""
    return np.dot(_build_mel_basis(), spectogram)


def _amp_to_db(x: np.ndarray) -> np.ndarray:
    """20 * np.log10(np.maximum(min_level, x)) with min_level = np.exp(-5 * np.log(10)) (9.99999999999998e-06)."""
    min_level = np.exp(-5 * np.log(10))
    return 20 * np.log10(np.maximum(min_level, x))


def _normalize(S: np.ndarray) -> np.ndarray:
    """np.clip((2 * 4.) * ((S - -100) / (--100)) - 4., -4., 4.): Wav2Lip's symmetric, clipped normalisation."""
    return np.clip((2 * 4.0) * ((S - -100) / (--100)) - 4.0, -4.0, 4.0)


def melspectrogram(wav: np.ndarray, pad_mode: str | None = None) -> np.ndarray:
    """The reference's mel [80, T] (float64): _normalize(_amp_to_db(_linear_to_mel(|_stft(preemphasis(wav))|)) - 20)."""
    D = _stft(preemphasis(wav, 0.97), pad_mode)
    S = _amp_to_db(_linear_to_mel(np.abs(D))) - 20
    return _normalize(S)


def orig_mel(wav: np.ndarray, pad_mode: str | None = None) -> np.ndarray:
    """AudDataset.orig_mel: melspectrogram(wav).T, [T, 80] float64 (the float32 cast happens per window)."""
    return melspectrogram(wav, pad_mode).T


# --- stage 2: AudDataset ------------------------------------------------------------------------------------------


def data_len(num_mel_frames: int) -> int:
    """AudDataset.data_len: int((self.orig_mel.shape[0] - 16) / 80. * float(25)) + 2."""
    return int((num_mel_frames - 16) / 80.0 * float(25)) + 2


def crop_audio_window(spec: np.ndarray, start_frame_num: int) -> np.ndarray:
    """AudDataset.crop_audio_window: start int(80. * (i / float(25))), slid back to end at T where it runs past."""
    start_idx = int(80.0 * (start_frame_num / float(25)))
    end_idx = start_idx + 16
    if end_idx > spec.shape[0]:
        end_idx = spec.shape[0]
        start_idx = end_idx - 16
    return spec[start_idx:end_idx, :]


def encoder_input(orig: np.ndarray, idx: int) -> np.ndarray:
    """AudDataset.__getitem__: torch.FloatTensor(mel.T).unsqueeze(0), here as numpy: [1, 80, 16] float32."""
    mel = crop_audio_window(orig.copy(), idx)
    if mel.shape[0] != 16:
        raise ValueError("mel.shape[0] != 16")
    return np.asarray(mel.T, dtype=np.float32)[None]


# --- stage 4: get_audio_features (SyncTalk_2D, "ave": +-8 rows, zeros outside) ------------------------------------


def get_audio_features(features: np.ndarray, index: int) -> np.ndarray:
    """SyncTalk_2D's get_audio_features, with numpy in place of torch.from_numpy / torch.cat / torch.zeros_like.

    Note the reference's quirk, kept: the zero block is zeros_like(auds[:pad]), so it can hold fewer than `pad`
    rows when the array itself is shorter than the padding (a clip of under about 0.3 s); the reshape to
    [32, 16, 16] then fails in the reference.
    """
    left = index - 8
    right = index + 8
    pad_left = 0
    pad_right = 0
    if left < 0:
        pad_left = -left
        left = 0
    if right > features.shape[0]:
        pad_right = right - features.shape[0]
        right = features.shape[0]
    auds = features[left:right]
    if pad_left > 0:
        auds = np.concatenate([np.zeros_like(auds[:pad_left]), auds], axis=0)
    if pad_right > 0:
        auds = np.concatenate([auds, np.zeros_like(auds[:pad_right])], axis=0)
    return auds


def audio_feats(outputs: np.ndarray) -> np.ndarray:
    """inference_328.py: torch.cat([first_frame.repeat(1, 1), outputs, last_frame.repeat(1, 1)], dim=0)."""
    first_frame, last_frame = outputs[:1], outputs[-1:]
    return np.concatenate([np.tile(first_frame, (1, 1)), outputs, np.tile(last_frame, (1, 1))], axis=0)


# --- stage 5: landmarks, crop, resize, mask, tensor (inference_328.py; the 160 model's inference.py) ---------------


def read_lms(lms_path: str) -> np.ndarray:
    """The reference's parse: per line np.array(line.split(" "), dtype=np.float32), then np.array(..., np.int32)."""
    lms_list = []
    with open(lms_path, "r") as f:
        lines = f.read().splitlines()
        for line in lines:
            arr = line.split(" ")
            arr = np.array(arr, dtype=np.float32)
            lms_list.append(arr)
    lms = np.array(lms_list, dtype=np.int32)
    return lms


def crop_box(lms: np.ndarray) -> tuple[int, int, int, int]:
    """(xmin, ymin, xmax, ymax): xmin = lms[1][0], ymin = lms[52][1], xmax = lms[31][0], ymax = ymin + width."""
    xmin = lms[1][0]
    ymin = lms[52][1]
    xmax = lms[31][0]
    width = xmax - xmin
    ymax = ymin + width
    return int(xmin), int(ymin), int(xmax), int(ymax)


def generator_input_328(img: np.ndarray, lms: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """inference_328.py, crop to tensor: (img_concat [1, 6, 320, 320] float32, crop_img_ori [328, 328, 3], (h, w)).

    Bicubic passed by keyword, the [4:324] inner square, the rect-form mask, and numpy's float32 / 255.0 (done
    before torch.from_numpy in the reference, so it is numpy's arithmetic).
    """
    xmin, ymin, xmax, ymax = crop_box(lms)
    crop_img = img[ymin:ymax, xmin:xmax]
    h, w = crop_img.shape[:2]
    crop_img = cv2.resize(crop_img, (328, 328), interpolation=cv2.INTER_CUBIC)
    crop_img_ori = crop_img.copy()
    img_real_ex = crop_img[4:324, 4:324].copy()
    img_real_ex_ori = img_real_ex.copy()
    img_masked = cv2.rectangle(img_real_ex_ori, (5, 5, 310, 305), (0, 0, 0), -1)
    img_masked = img_masked.transpose(2, 0, 1).astype(np.float32)
    img_real_ex = img_real_ex.transpose(2, 0, 1).astype(np.float32)
    img_real_ex_T = img_real_ex / 255.0
    img_masked_T = img_masked / 255.0
    img_concat_T = np.concatenate([img_real_ex_T, img_masked_T], axis=0)[None]
    return img_concat_T, crop_img_ori, (h, w)


def generator_input_160(img: np.ndarray, lms: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The 160 model's inference.py: the same, but cv2.resize(crop_img, (168, 168), cv2.INTER_AREA).

    The flag is the third *positional* argument, which is cv2.resize's `dst`, not `interpolation`: the resize
    runs with its default, bilinear. The call is made here exactly as written, so the test pins whatever this cv2
    does with it rather than our reading of it.
    """
    xmin, ymin, xmax, ymax = crop_box(lms)
    crop_img = img[ymin:ymax, xmin:xmax]
    h, w = crop_img.shape[:2]
    crop_img = cv2.resize(crop_img, (168, 168), cv2.INTER_AREA)
    crop_img_ori = crop_img.copy()
    img_real_ex = crop_img[4:164, 4:164].copy()
    img_real_ex_ori = img_real_ex.copy()
    img_masked = cv2.rectangle(img_real_ex_ori, (5, 5, 150, 145), (0, 0, 0), -1)
    img_masked = img_masked.transpose(2, 0, 1).astype(np.float32)
    img_real_ex = img_real_ex.transpose(2, 0, 1).astype(np.float32)
    img_real_ex_T = img_real_ex / 255.0
    img_masked_T = img_masked / 255.0
    img_concat_T = np.concatenate([img_real_ex_T, img_masked_T], axis=0)[None]
    return img_concat_T, crop_img_ori, (h, w)


# --- stage 6: paste back ------------------------------------------------------------------------------------------


def paste_back_328(img: np.ndarray, lms: np.ndarray, crop_img_ori: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """inference_328.py: pred*255 -> np.array(uint8) (truncation), into [4:324], bicubic back to (w, h), pasted.

    pred is the network output [3, 320, 320] float32 (net(...)[0] as numpy). Works on copies; returns the frame.
    """
    img = img.copy()
    crop_img_ori = crop_img_ori.copy()
    xmin, ymin, xmax, ymax = crop_box(lms)
    h, w = img[ymin:ymax, xmin:xmax].shape[:2]
    pred = pred.transpose(1, 2, 0) * 255
    pred = np.array(pred, dtype=np.uint8)
    crop_img_ori[4:324, 4:324] = pred
    crop_img_ori = cv2.resize(crop_img_ori, (w, h), interpolation=cv2.INTER_CUBIC)
    img[ymin:ymax, xmin:xmax] = crop_img_ori
    return img


def paste_back_160(img: np.ndarray, lms: np.ndarray, crop_img_ori: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The 160 model's inference.py: the same into [4:164], then cv2.resize(crop_img_ori, (w, h)) (bilinear)."""
    img = img.copy()
    crop_img_ori = crop_img_ori.copy()
    xmin, ymin, xmax, ymax = crop_box(lms)
    h, w = img[ymin:ymax, xmin:xmax].shape[:2]
    pred = pred.transpose(1, 2, 0) * 255
    pred = np.array(pred, dtype=np.uint8)
    crop_img_ori[4:164, 4:164] = pred
    crop_img_ori = cv2.resize(crop_img_ori, (w, h))
    img[ymin:ymax, xmin:xmax] = crop_img_ori
    return img


def template_order(frames: int, num_templates: int) -> list[int]:
    """The inference loop's template index for each output frame (len_img = number of images - 1)."""
    len_img = num_templates - 1
    img_idx, step_stride, order = 0, 0, []
    for _ in range(frames):
        if img_idx > len_img - 1:
            step_stride = -1
        if img_idx < 1:
            step_stride = 1
        img_idx += step_stride
        order.append(img_idx)
    return order
