"""Print the demo bundle's measured figures (issue 3) and write them as JSON.

    python tools/measure_demo.py [--stride N] [--json resources/demo/measurements.json]

Figures: mouth-opening correlation with the phoneme target per lane (r >= 0.7 expected with the correct encoder,
near 0 with the untrained one), the scale-error encoder at x200 against the reference, ONNX vs PyTorch and Core ML
(emulated) vs PyTorch on the demo clip, and the bundle's size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.demo.export import bundle_size_mb  # noqa: E402
from tools.demo.measurements import BUNDLE, measure_bundle, onnx_vs_torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--stride", type=int, default=1, help="measure every n-th output frame")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    lanes = measure_bundle(args.bundle, args.stride)
    agreement = onnx_vs_torch(args.bundle, args.stride)
    figures = {"bundle_mb": round(bundle_size_mb(args.bundle), 2), "lanes": lanes, "agreement": agreement}
    print(f"bundle: {figures['bundle_mb']} MB; frames measured: {lanes['frames_measured']}")
    print(f"{'lane':58s} {'mouth r':>8s} {'feat max':>9s} {'max|d| vs ref':>14s} {'fit scale':>10s} {'r2':>6s}")
    for name, entry in lanes["lanes"].items():
        print(f"{name:58s} {entry.get('mouth_r', float('nan')):8.3f} {entry['features_max']:9.4f} "
              f"{entry['max_abs_vs_reference']:14.3g} {entry['fitted_scale_vs_reference']:10.4g} "
              f"{entry['r2_of_scale_fit']:6.3f}")
    for key, value in agreement.items():
        print(f"{key}: {value:.3g}")
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
