"""`diff-weights A B [--json OUT]`: are these two files (any formats) the same trained network?

Layers are paired by order and shape, batch norm is folded where one file folded it, and each pair gets a cosine,
a scale ratio and a max difference (``pipeline.metrics.compare``); layers that still hold PyTorch's default
initialisation are flagged by name. This is the check that would have caught the Core ML encoder that kept its
random weights. The files are read by ``backends.inspection.describe``; the comparison lives in
workspace/weight_diff.py (it needs both the backends' readers and the pipeline's metrics, which never import each
other, and the window shows it too).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import add_json_output, check_outputs, write_json
from cli.inspect import fit_name
# The comparison itself is workspace/weight_diff.py (the window's Diagnostics dock shows it too); its names are
# re-exported here for callers and tests of the command.
from workspace.weight_diff import (SAME_COSINE, SAME_SCALE, LayerComparison, WeightDiff,  # noqa: F401
                                   diff_weights, pair_layers)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "diff-weights",
        help="compare the weights of two files of one network (.onnx, .mlpackage, .mlmodel, .pth)",
        description="Pair the layers of A and B by order and shape, report cosine, scale and max difference per "
        "layer, flag layers that look untrained, and give a verdict.",
    )
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    add_json_output(p, "comparison")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs((args.json, args.force, "--json"))  # before reading the models, not after
    result = diff_weights(args.a, args.b)
    print(format_diff(result))
    if args.json:
        write_json(args.json, result.to_json(), args.force)
    return 0


def format_diff(result: WeightDiff) -> str:
    lines = [f"A: {result.a.path.name} ({result.a.format}, {result.a.precision})",
             f"B: {result.b.path.name} ({result.b.format}, {result.b.precision})",
             f"  {'#':>3} {'layer in A':28} {'layer in B':28} {'shape':16} {'cosine':>8} {'scale':>8} {'max abs':>9}  flags"]
    for index, c in enumerate(result.layers):
        number = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        lines.append(f"  {index:>3} {fit_name(c.a or '-', 28):28} {fit_name(c.b or '-', 28):28} {'x'.join(map(str, c.shape)):16} "
                     f"{number(c.cosine, '8.4f'):>8} {number(c.scale, '8.4f'):>8} {number(c.max_abs, '9.2e'):>9}  "
                     f"{'; '.join(c.flags)}")
    lines.append(f"verdict: {result.verdict}")
    return "\n".join(lines)
