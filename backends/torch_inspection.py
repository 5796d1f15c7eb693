"""Reading a PyTorch state dict (.pth/.pt) for `inspect` and `diff-weights`: layers in the order a forward pass
runs them, batch norms kept beside their convolutions, and the shapes the checkpoint implies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from core.errors import InputError

from .shapes import TensorInfo
from .weights import BatchNorm, ModelDescription, WeightLayer, precision_of

def describe_torch(path: Path) -> ModelDescription:
    from .torch_backend import is_encoder_state, load_state_dict

    state = {k: v.detach().cpu().numpy() for k, v in load_state_dict(path).items() if hasattr(v, "detach")}
    layers_by_prefix: dict[str, WeightLayer] = {}
    order: list[str] = []
    previous: WeightLayer | None = None
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf == "weight" and value.ndim in (2, 4):
            bias = state.get(f"{prefix}.bias")
            previous = WeightLayer(prefix, "conv" if value.ndim == 4 else "linear", value.astype(np.float32),
                                   None if bias is None else bias.astype(np.float32), str(value.dtype))
            layers_by_prefix[prefix] = previous
            order.append(prefix)
        elif leaf == "running_mean" and previous is not None and previous.bn is None:
            # In these networks a batch norm is registered right after the conv it normalises.
            previous.bn = BatchNorm(state[f"{prefix}.weight"], state[f"{prefix}.bias"], value, state[f"{prefix}.running_var"])
    notes = []
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    if is_encoder_state(state):
        inputs, outputs = [TensorInfo("mel", (None, 1, 80, 16))], [TensorInfo("features", (None, 512))]
        notes.append("AVE audio encoder (layers in execution order = state-dict order)")
    elif "inc.inconv.0.conv.6.weight" in state:
        execution = _generator_execution_order(path)
        if execution:
            order = [p for p in execution if p in layers_by_prefix] + [p for p in order if p not in execution]
        from .torch_backend import infer_generator_layout

        size, width = infer_generator_layout(state)
        inputs = [TensorInfo("image", (None, 6, size, size)), TensorInfo("audio", (None, 32, 16, 16))]
        outputs = [TensorInfo("output", (None, 3, size, size))]
        notes.append(f"U-Net generator size {size} width {width:g} (layers in execution order)")
    else:
        notes.append("unknown architecture: layers in state-dict order")
    kinds = Counter(key.rpartition(".")[2] for key in state)
    counts = {"conv": sum(1 for l in layers_by_prefix.values() if l.kind == "conv"),
              "linear": sum(1 for l in layers_by_prefix.values() if l.kind == "linear"),
              "batch_norm": kinds.get("running_mean", 0)}
    params = int(sum(v.size for k, v in state.items() if v.dtype.kind == "f" and not k.endswith(("running_mean", "running_var"))))
    precision = precision_of(Counter(str(v.dtype) for v in state.values() if v.dtype.kind == "f"))
    return ModelDescription(path, "pytorch", inputs, outputs, precision, counts, params,
                            [layers_by_prefix[p] for p in order], notes)


def _generator_execution_order(path: Path) -> list[str]:
    """Module names of the generator's convs in the order a forward pass calls them (state-dict order differs:
    the audio branch is registered first but runs after the image encoder)."""
    try:
        import torch

        from .torch_backend import build_generator, load_state_dict

        model = build_generator(load_state_dict(path))
    except (ImportError, InputError):
        return []
    called: list[str] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: called.append(name))
             for name, module in model.named_modules() if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.inference_mode():
        model(torch.zeros(1, 6, model.size, model.size), torch.zeros(1, 32, 16, 16))
    for hook in hooks:
        hook.remove()
    return called
