"""The figures issue 3 asks for, measured on the shipped bundle through the app's own lanes (pipeline.lane).

Each lane of variants.toml is run as the window runs it; the generated 160 px mouth is measured with
tools.demo.measure.mouth_opening and correlated with the phoneme-derived target of the demo clip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from backends.registry import MODELS
from pipeline.lane import Lane, open_lanes
from pipeline.metrics import compare
from pipeline.session import load_session
from tools.demo.measure import mouth_opening, pearson

BUNDLE = Path(__file__).resolve().parents[2] / "resources" / "demo"


def lane_outputs(lane: Lane, frames: range) -> np.ndarray:
    """[F, 3, S, S] generator outputs of a lane at its own scale."""
    return np.stack([lane.raw_output(i) for i in frames])


def measure_bundle(bundle: Path = BUNDLE, frame_stride: int = 1, lanes: list[str] | None = None) -> dict:
    """Per lane: feature statistics against the reference lane, and the mouth-opening correlation with the target.

    frame_stride > 1 measures every n-th output frame (tests use it to stay fast); lanes limits which lanes run.
    """
    manifest = json.loads((bundle / "manifest.json").read_text())
    target = np.load(bundle / "demo_mouth_target.npy")
    session = load_session(bundle / "variants.toml")
    reference_name = session.lanes[session.reference_index].name
    if lanes is not None:  # open only what is asked for: opening a Core ML lane translates the whole model
        session.lanes = [s for s in session.lanes if s.name in lanes or s.name == reference_name]
    opened = [lane for lane in open_lanes(session, models=MODELS) if isinstance(lane, Lane)]
    by_name = {lane.name: lane for lane in opened}
    reference = by_name[reference_name]
    reference_features = reference.features()
    frames = range(0, reference.num_frames, frame_stride)
    rows = tuple(manifest["mouth_rows"])
    result: dict = {"frames_measured": len(frames), "frame_stride": frame_stride, "lanes": {}}
    outputs: dict[str, np.ndarray] = {}
    for name, lane in by_name.items():
        features = lane.features()
        comparison = compare(features, reference_features)
        entry = {
            "scale": lane.spec.scale,
            "encoder": lane.encoder_provenance.summary(),
            "features_min": float(features.min()),
            "features_max": float(features.max()),
            "max_abs_vs_reference": float(comparison.max_abs),
            "fitted_scale_vs_reference": float(comparison.scale),
            "r2_of_scale_fit": float(comparison.r2),
        }
        if lane.generator is not None:
            out = lane_outputs(lane, frames)
            outputs[name] = out
            opening = mouth_opening(out, manifest["mouth_centre_x"], rows)
            entry["mouth_r"] = pearson(opening, target[list(frames), 0])
            entry["mouth_opening_range_px"] = [float(opening.min()), float(opening.max())]
        result["lanes"][name] = entry
    if reference.name in outputs:
        for name, out in outputs.items():
            result["lanes"][name]["output_max_abs_vs_reference"] = float(np.abs(out - outputs[reference.name]).max())
    result["reference"] = reference.name
    return result


def onnx_vs_torch(bundle: Path = BUNDLE, frame_stride: int = 1) -> dict:
    """ONNX Runtime against PyTorch (and Core ML emulated against PyTorch) on the demo clip's features and frames."""
    session = load_session(bundle / "variants.toml")
    lanes = {lane.name: lane for lane in open_lanes(session, models=MODELS) if isinstance(lane, Lane)}
    onnx, torch_lane = lanes["ONNX Runtime (reference)"], lanes["PyTorch (.pth)"]
    coreml = lanes["Core ML correct encoder + fp16 generator"]
    frames = range(0, onnx.num_frames, frame_stride)
    onnx_out, torch_out = lane_outputs(onnx, frames), lane_outputs(torch_lane, frames)
    # The fp16 generator is compared on the same (torch) features, so only its own precision shows.
    coreml_out = np.stack([
        coreml.generator.generate(coreml.generator_input(i).tensor[None], torch_lane.audio_tensors(range(i, i + 1)))[0]
        for i in frames
    ])
    return {
        "frames_measured": len(frames),
        "encoder_onnx_vs_torch_max_abs": float(np.abs(onnx.features() - torch_lane.features()).max()),
        "generator_onnx_vs_torch_max_abs": float(np.abs(onnx_out - torch_out).max()),
        "encoder_coreml_vs_torch_max_abs": float(np.abs(coreml.features() - torch_lane.features()).max()),
        "generator_coreml_fp16_vs_torch_max_abs": float(np.abs(coreml_out - torch_out).max()),
        "features_dump_vs_torch_max_abs": float(np.abs(np.load(bundle / "aud_ave.npy") - torch_lane.features()).max()),
    }
