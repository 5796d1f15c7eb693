"""`inspect MODEL [--json OUT]`: what a model file holds, in any format the app reads.

Format, inputs, outputs, precision, operation counts, parameter count and per-layer weight statistics: enough to
see at a glance that a Core ML file is fp16, that an encoder has the wrong output shape, or that its weights are
still PyTorch's random initialisation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backends.inspection import ModelDescription, describe
from backends.shapes import format_dim
from cli.common import add_json_output, check_outputs, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="describe a model file (.onnx, .mlpackage, .mlmodel, .pth)",
        description="Print a model's format, inputs, outputs, precision, operation counts, parameter count and "
        "weight statistics per layer; --json writes the same as JSON.",
    )
    p.add_argument("model", type=Path, metavar="MODEL")
    add_json_output(p, "description")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs((args.json, args.force, "--json"))  # before reading the models, not after
    description = describe(args.model)
    print(format_description(description))
    if args.json:
        write_json(args.json, description.to_json(), args.force)
    return 0


def fit_name(name: str, width: int) -> str:
    """A layer name cut to `width` characters in the middle: exporters' names share long prefixes
    ("/down1/maxpool_conv/...") and differ at the end, so both ends must stay readable."""
    if len(name) <= width:
        return name
    tail = (width - 1) * 2 // 3
    return name[: width - 1 - tail] + "…" + name[-tail:]


def format_description(d: ModelDescription) -> str:
    """Plain text for a terminal: a header, then one line per layer."""
    def tensor(t) -> str:  # noqa: ANN001
        dims = "?" if t.shape is None else "[" + ",".join(format_dim(x) for x in t.shape) + "]"
        return f"{t.name}:{dims} {t.dtype}"

    lines = [
        f"{d.path.name}",
        f"  format      {d.format}",
        f"  inputs      {', '.join(tensor(t) for t in d.inputs) or '?'}",
        f"  outputs     {', '.join(tensor(t) for t in d.outputs) or '?'}",
        f"  precision   {d.precision}",
        f"  parameters  {d.parameter_count:,}",
        f"  operations  {', '.join(f'{k} x{v}' for k, v in sorted(d.op_counts.items()))}",
    ]
    lines += [f"  note        {n}" for n in d.notes]
    lines.append(f"  layers ({len(d.layers)}):")
    lines.append(f"    {'#':>3} {'name':40} {'kind':6} {'shape':18} {'dtype':8} {'min':>9} {'max':>9} {'std':>9}  flags")
    for index, layer in enumerate(d.layers):
        s = layer.stats()
        shape = "x".join(str(x) for x in s["shape"]) + (" +bn" if s["batch_norm"] else "")
        lines.append(f"    {index:>3} {fit_name(s['name'], 40):40} {s['kind']:6} {shape:18} {s['dtype']:8} "
                     f"{s['min']:9.4f} {s['max']:9.4f} {s['std']:9.4f}  {'; '.join(s['flags'])}")
    return "\n".join(lines)
