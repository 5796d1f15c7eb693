"""One fuzz target per parser: bytes in, and the only exception allowed out is InputError (a message for the user).

Anything else -- a crash, a MemoryError, a hang caught by libFuzzer's -timeout -- is a finding. The targets write the
bytes to a file in a private temporary folder because every parser here reads a user's file, not a buffer.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.errors import InputError  # noqa: E402

_DIR = Path(tempfile.mkdtemp(prefix="lipsync-fuzz-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)  # each fuzzing process left its folder behind


def _file(name: str, data: bytes) -> Path:
    path = _DIR / name
    path.write_bytes(data)
    return path


def session(data: bytes) -> None:
    from pipeline.session import load_session, session_from_dict

    path = _file("session.toml", data)
    try:
        load_session(path, check_files=False)
    except InputError:
        pass
    # The validator alone, on whatever TOML the bytes hold (reached more often than through load_session's checks).
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    try:
        session_from_dict(parsed, base_dir=_DIR, check_files=True)
    except InputError:
        pass


def lms(data: bytes) -> None:
    from pipeline.avatar import read_lms
    from pipeline.crop import crop_box_from_landmarks

    try:
        crop_box_from_landmarks(read_lms(_file("0.lms", data)))
    except InputError:
        pass


def rects(data: bytes) -> None:
    from pipeline.avatar import _boxes_from_rectangles

    count = 1 + (data[0] % 4 if data else 0)
    try:
        _boxes_from_rectangles(_file("crop_rectangles.json", data[1:]), count)
    except InputError:
        pass


_SUFFIXES = (".npy", ".npz", ".bin")


def dumps(data: bytes) -> None:
    from pipeline.dumps import FeatureDump, OutputDump, open_mel_dump

    if not data:
        return
    suffix = _SUFFIXES[data[0] % 3]
    path = _file("dump" + suffix, data[1:])
    for load in (lambda: FeatureDump(path), lambda: FeatureDump(path, num_windows=data[0] % 7),
                 lambda: open_mel_dump(path), lambda: OutputDump(path)):
        try:
            load()
        except InputError:
            pass


def frames(data: bytes) -> None:
    from pipeline.lane import parse_frame_range

    text = data[1:].decode("utf-8", "replace")
    total = data[0] if data else 0
    try:
        parse_frame_range(text, total)
    except InputError:
        pass


def audio(data: bytes) -> None:
    from pipeline.audio import load_audio

    try:
        load_audio(_file("audio.wav", data))
    except InputError:
        pass


def image_header(data: bytes) -> None:
    from pipeline.avatar import image_size

    image_size(_file("0.png", data))


def onnx_model(data: bytes) -> None:
    from backends.onnx_backend import OnnxEncoder

    try:
        OnnxEncoder(_file("enc.onnx", data))
    except InputError:
        pass


def pth(data: bytes) -> None:
    from backends.torch_backend import TorchEncoder

    try:
        TorchEncoder(_file("enc.pth", data))
    except InputError:
        pass


TARGETS = {"session": session, "lms": lms, "rects": rects, "dumps": dumps, "frames": frames, "audio": audio,
           "image_header": image_header, "onnx": onnx_model, "pth": pth}


def seeds() -> dict[str, list[bytes]]:
    """Small valid inputs per target, so the fuzzer starts from files that parse and mutates from there."""
    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    def npz(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, features=array)
        return buffer.getvalue()

    def wav(samples: int, rate: int) -> bytes:
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, np.zeros(samples, np.float32), rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue()

    def onnx_bytes() -> bytes:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Flatten", ["mel"], ["flat"]),
             helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["emb"])],
            "tiny", [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["B", 1, 80, 16])],
            [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["B", 512])],
            [helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
             helper.make_tensor("ends", TensorProto.INT64, [1], [512]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        return model.SerializeToString()

    def pth_bytes() -> bytes:
        import torch

        buffer = io.BytesIO()
        torch.save({"0.conv_block.0.weight": torch.zeros(2, 1, 3, 3)}, buffer)
        return buffer.getvalue()

    lms_text = "".join(f"{100 + i} {200 + i}\n" for i in range(110)).encode()
    return {
        "session": [b'audio = "a.wav"\n[[lanes]]\nname = "x"\nencoder = "e.onnx"\ngenerator = "g.pth"\nscale = 2.0\n'
                    b'[lanes.options]\nthreads = 2\n'],
        "lms": [lms_text, lms_text.replace(b" ", b"\t")],
        "rects": [b'\x01{"0": {"rect": [1, 2, 30, 40]}, "1": {"rect": [0, 0, 10, 10]}}'],
        "dumps": [b"\x00" + npy(np.zeros((5, 512), np.float32)), b"\x00" + npy(np.zeros((20, 80), np.float16)),
                  b"\x01" + npz(np.zeros((3, 512), np.float32)), b"\x02" + bytes(512 * 4 * 2),
                  b"\x00" + npy(np.zeros((2, 3, 8, 8), np.float32)), b"\x00" + npy(np.zeros((2, 4, 4, 3), np.uint8))],
        "frames": [b"\x10" + b"0:5", b"\xff" + b"-5:", b"\x03" + b":"],
        "audio": [wav(4000, 16000), wav(1000, 8000)],
        "onnx": [onnx_bytes()],
        "pth": [pth_bytes()],
        "image_header": [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00" + bytes(16),
                         b"\xff\xd8\xff\xc0\x00\x11\x08\x01\x00\x01\x00" + bytes(16)],
    }


if __name__ == "__main__":  # write the seed corpora: python tools/fuzz/targets.py CORPUS_ROOT
    root = Path(sys.argv[1])
    for name, items in seeds().items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index, item in enumerate(items):
            (root / name / f"seed{index}").write_bytes(item)
    os.sys.exit(0)
