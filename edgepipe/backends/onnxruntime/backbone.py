"""A backbone brought as an ONNX file: features for a new head, and the head joined to it into one classifier.

:func:`read_onnx_backbone` checks the file (one float image input, as for an ONNX classifier; one output of
pooled features (N, C) or feature maps (N, C, H, W) or (N, H, W, C)) and makes its *feature graph*, the same
raw-pixel wrapper an ONNX classifier gets (:func:`edgepipe.backends.onnxruntime.source.wrap`), with global average
pooling after it when the output is a map:

    image (N, H, W, C raw pixels 0..255) -> [the declared preprocessing] -> the user's graph
        -> [GlobalAveragePool, when it gives maps] -> features (N, C)

ONNX Runtime computes the features a head is trained on from that graph, and :func:`join` appends the trained
head (a dense layer and a Softmax: the Keras head's weights as ONNX nodes) to the same graph, so the classifier
runs exactly the graph the features came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends.onnxruntime.backend import LABELS_KEY, ONNX, RAW_INPUT
from edgepipe.backends.onnxruntime.source import (
    INPUT_NAME,
    PREFIX,
    PixelInput,
    _load,
    _shape_text,
    checked_input,
    probe,
    read_onnx_source,
    wrap,
)
from edgepipe.errors import EdgepipeError, first_line
from edgepipe.fileio import sha256_file, write_bytes
from edgepipe.pixels import PixelTransform
from edgepipe.versions import __version__

#: the feature graph's output and the classifier's: named apart from anything a user's graph may hold
FEATURES = "edgepipe_head/features"
PROBABILITIES = "edgepipe_head/probabilities"
#: images per ONNX Runtime call when features are computed
FEATURE_BATCH = 64


@dataclass
class OnnxBackbone:
    """A checked ONNX backbone and its feature graph (raw NHWC pixels in, (N, width) features out)."""

    path: Path
    sha256: str
    graph: Any  # the feature graph, an onnx.ModelProto
    pixels: PixelInput
    width: int
    #: what the file gives: "pooled" (N, C), "maps nchw" (N, C, H, W) or "maps nhwc" (N, H, W, C)
    output: str
    params: int

    @property
    def size(self) -> int:
        return self.pixels.size

    @property
    def channels(self) -> int:
        return self.pixels.channels

    @property
    def transform(self) -> PixelTransform:
        return self.pixels.transform

    def preprocessing(self) -> dict[str, Any]:
        """What the run and its artifacts record as the preprocessing (folded in: they take raw pixels)."""
        if self.pixels.written:
            return {"description": "as in the backbone ONNX file, which edgepipe wrote (raw pixels in)"}
        return {
            "description": f"folded from the backbone ONNX's declared preprocessing: {self.transform.describe()}",
            **self.transform.as_dict(),
        }

    def describe(self) -> dict[str, Any]:
        """The facts a run records of its backbone (build.json)."""
        return {
            "kind": "onnx backbone",
            "file": str(self.path),
            "sha256": self.sha256,
            "output": self.output,
            "features": self.width,
            "input_size": self.size,
            "channels": self.channels,
            "layout": self.pixels.layout,
            "batch_made_dynamic": self.pixels.fixed_batch,
        }

    def write(self, path: Path) -> Path:
        """The feature graph, written at ``path``."""
        write_bytes(path, self.graph.SerializeToString())
        return path


def read_onnx_backbone(path: str | Path, given: PixelTransform, input_size: int | None = None) -> OnnxBackbone:
    """Check an ONNX backbone and make its feature graph (nothing is written). ``given`` is the declared
    preprocessing (unknown keys None); ``input_size`` the square size for a dynamic spatial input.

    One-line EdgepipeErrors: not an ONNX file; those of :func:`~edgepipe.backends.onnxruntime.source.checked_input`;
    not one output; an output that is neither (N, C) nor a map whose channel axis its shape tells; a graph that
    runs only at its fixed batch of 1.
    """
    path = Path(path)
    model = _load(path)
    pixels = checked_input(model, path, given, input_size)
    if len(model.graph.output) != 1:
        raise EdgepipeError(
            f"'{path.name}' has {len(model.graph.output)} outputs; a backbone has one (its features)",
            "Export the backbone with its features (N, C) or feature maps as the only output.",
        )
    wrapped = wrap(model, pixels.transform, pixels.size, pixels.channels, softmax=False)
    shape = probe(wrapped, pixels, path)  # also proves a batch other than the one the file may fix
    output, width = _output_kind(shape, path, model.graph.output[0])
    graph = _feature_graph(wrapped, output, width)
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    return OnnxBackbone(path, sha256_file(path), graph, pixels, width, output, params)


def _output_kind(shape: tuple[int, ...], path: Path, value: Any) -> tuple[str, int]:
    """("pooled" | "maps nchw" | "maps nhwc", feature width) from the output's shape at run time; EdgepipeError
    for any other rank, or a map whose channel axis cannot be told (all three sizes equal)."""
    if len(shape) == 2:
        return "pooled", int(shape[1])
    if len(shape) == 4:
        _, a, b, c = shape
        if b == c and a != b:
            return "maps nchw", int(a)
        if a == b and b != c:
            return "maps nhwc", int(c)
        if a == b == c:
            raise EdgepipeError(
                f"the channel axis of output '{value.name}' of '{path.name}' (shape {list(shape)}) cannot be told: "
                "its three sizes are equal",
                "Export the backbone with pooled features (N, C), e.g. with global average pooling at its end.",
            )
    raise EdgepipeError(
        f"output '{value.name}' of '{path.name}' is shaped {list(shape)} ({_shape_text(value)} in the file); a "
        "backbone gives pooled features (N, C) or feature maps (N, C, H, W or N, H, W, C)",
        "Export the network up to its features (before its classifier).",
    )


def _feature_graph(wrapped: Any, output: str, width: int) -> Any:
    """``wrapped`` with its output pooled (a map: global average pooling, after a transpose for NHWC) and
    flattened, as FEATURES (N, width)."""
    import onnx
    from onnx import helper

    graph = wrapped.graph
    last = graph.output[0].name
    nodes = []
    if output.startswith("maps"):
        if output == "maps nhwc":
            nodes.append(helper.make_node("Transpose", [last], [PREFIX + "maps_nchw"], perm=[0, 3, 1, 2]))
            last = PREFIX + "maps_nchw"
        nodes.append(helper.make_node("GlobalAveragePool", [last], [PREFIX + "pooled"], name=PREFIX + "pool"))
        last = PREFIX + "pooled"
    nodes.append(helper.make_node("Flatten", [last], [FEATURES], name=PREFIX + "flatten", axis=1))
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, ["N", width])])
    _checked(wrapped, "the backbone with its preprocessing and pooling")
    return wrapped


def _checked(model: Any, what: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # the checker raises its own error types and shape-inference errors
        raise EdgepipeError(f"{what} is not a valid ONNX model: {first_line(exc)}") from None


def run_graph(path: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """The one output, as float32, of the raw-pixel graph at ``path`` (the feature graph: features (N, width);
    the joined classifier: probabilities) for raw NHWC ``images``, run by ONNX Runtime on the CPU in batches of
    FEATURE_BATCH."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = [
        session.run(None, {INPUT_NAME: np.asarray(images[i : i + FEATURE_BATCH], np.float32)})[0]
        for i in range(0, len(images), FEATURE_BATCH)
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def join(graph_path: Path, kernel: np.ndarray, bias: np.ndarray, labels: list[str], preprocessing: dict) -> Any:
    """One classifier: the feature graph at ``graph_path``, then ``features @ kernel + bias`` (a Gemm) and a
    Softmax, output PROBABILITIES (N, classes); labels, preprocessing and the raw-pixel input recorded in its
    metadata (as in every ONNX file edgepipe writes). EdgepipeError when the result is not a valid ONNX model."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(graph_path))
    graph = model.graph
    kernel, bias = np.asarray(kernel, np.float32), np.asarray(bias, np.float32)
    graph.initializer.extend(
        [numpy_helper.from_array(kernel, PREFIX + "head_kernel"), numpy_helper.from_array(bias, PREFIX + "head_bias")]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Gemm", [FEATURES, PREFIX + "head_kernel", PREFIX + "head_bias"], [PREFIX + "logits"], name="head"
            ),
            helper.make_node("Softmax", [PREFIX + "logits"], [PROBABILITIES], name="head_softmax", axis=-1),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [helper.make_tensor_value_info(PROBABILITIES, onnx.TensorProto.FLOAT, ["N", int(kernel.shape[1])])]
    )
    for key, value in {
        LABELS_KEY: json.dumps(list(labels)),
        "preprocessing": json.dumps(preprocessing),
        "input": RAW_INPUT,
        "producer": f"edgepipe {__version__}",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    _checked(model, "the backbone joined with its head")
    return model


# registered here, beside the backbone reader it names (the classifier reader lives in source.py)
ONNX.model_source(
    suffixes=(".onnx",),
    read=read_onnx_source,
    read_backbone=read_onnx_backbone,
    reference="onnx-fp32",
    description="an image classifier or backbone in ONNX (NCHW or NHWC, float)",
)
