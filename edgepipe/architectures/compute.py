"""Multiply-accumulate (MAC) and parameter counts per layer, for any Keras model.

MACs are counted for the layers that dominate inference cost: convolutions
(standard, grouped, depthwise, separable, transposed) and dense layers; one
MAC is one multiplication plus one addition. Batch normalization, activations,
pooling and element-wise additions are counted as zero MACs (they are usually
fused or memory-bound). Shapes are taken from the built graph, so the counts
are for the model's input size, per image (batch 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LayerCompute:
    name: str
    kind: str
    params: int
    macs: int
    output_shape: tuple


@dataclass
class ComputeReport:
    layers: list[LayerCompute]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def as_dict(self) -> dict[str, Any]:
        return {"macs": self.macs, "params": self.params, "layers": [asdict(layer) for layer in self.layers]}


def _spatial(shape) -> int:
    return int(np.prod([d for d in shape[1:-1]])) if len(shape) > 2 else 1


def layer_macs(layer, input_shape, output_shape) -> int:
    """MACs of one call of ``layer`` on one image (0 for layers without multiply-accumulates)."""
    import keras

    L = keras.layers
    if isinstance(layer, L.SeparableConv2D):
        k = int(np.prod(layer.kernel_size))
        c_in = input_shape[-1]
        positions = _spatial(output_shape)
        return (
            positions * c_in * layer.depth_multiplier * k + positions * c_in * layer.depth_multiplier * output_shape[-1]
        )
    if isinstance(layer, L.DepthwiseConv2D):
        k = int(np.prod(layer.kernel_size))
        return _spatial(output_shape) * input_shape[-1] * layer.depth_multiplier * k
    if isinstance(layer, L.Conv2DTranspose):
        k = int(np.prod(layer.kernel_size))
        return _spatial(input_shape) * input_shape[-1] * k * output_shape[-1]
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        k = int(np.prod(layer.kernel_size))
        groups = getattr(layer, "groups", 1) or 1
        return _spatial(output_shape) * output_shape[-1] * k * (input_shape[-1] // groups)
    if isinstance(layer, L.Dense):
        return _spatial(output_shape) * input_shape[-1] * output_shape[-1]
    return 0


def _calls(layer) -> Iterator[tuple[tuple, tuple]]:
    """(input shape, output shape) of every call of ``layer`` in its model's graph."""
    for node in getattr(layer, "_inbound_nodes", []):
        inputs, outputs = node.input_tensors, node.output_tensors
        if inputs and outputs:
            yield tuple(inputs[0].shape), tuple(outputs[0].shape)


def count(model, prefix: str = "") -> ComputeReport:
    """Per-layer MACs and parameters of ``model``, descending into nested models."""
    import keras

    rows: list[LayerCompute] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) or (hasattr(layer, "layers") and isinstance(layer, keras.Sequential)):
            rows.extend(count(layer, prefix + layer.name + "/").layers)
            continue
        macs = sum(layer_macs(layer, i, o) for i, o in _calls(layer))
        shapes = [o for _, o in _calls(layer)]
        rows.append(
            LayerCompute(
                prefix + layer.name,
                type(layer).__name__,
                int(layer.count_params()),
                int(macs),
                shapes[0] if shapes else (),
            )
        )
    return ComputeReport(rows)
