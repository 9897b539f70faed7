"""An image classifier brought as an ONNX file, made to take raw NHWC pixels like edgepipe's own artifacts.

:func:`read_onnx_source` checks the file (ONNX, one float image input of rank 4, a square spatial size, one
(N, classes) output) and folds the declared preprocessing into a wrapper graph around the user's graph:

    image (N, H, W, C raw pixels 0..255) -> [RGB to BGR] -> x * (1 / (scale * std)) - mean / std
        -> [NHWC to NCHW] -> the user's graph -> [Softmax, when its output is not made by one]

Every ONNX path (onnx-fp32/int8, OpenVINO, TensorRT) then starts from that graph. What every artifact is
judged against is the user's own file run by ONNX Runtime on the same raw pixels preprocessed in numpy
(:meth:`OnnxSource.reference`), so the wrapper is checked too. A file edgepipe wrote takes raw pixels
already (its metadata says so): nothing is folded into it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends.onnxruntime.backend import LABELS_KEY, RAW_INPUT
from edgepipe.errors import EdgepipeError, first_line
from edgepipe.fileio import write_bytes
from edgepipe.pixels import IDENTITY, KEYS, PixelTransform

#: the wrapper's input: edgepipe's ONNX files all take raw pixels under this name
INPUT_NAME = "image"
PREFIX = "edgepipe_preprocess/"


@dataclass
class OnnxSource:
    """A checked ONNX classifier and the raw-pixel graph made around it."""

    path: Path
    model: Any  # the user's onnx.ModelProto, unchanged
    wrapped: Any  # the raw-pixel graph
    transform: PixelTransform
    size: int
    channels: int
    outputs: int
    labels: list[str] | None
    softmax_added: bool
    written_by_edgepipe: bool

    @property
    def name(self) -> str:
        return self.path.stem

    def write(self, path: Path) -> Path:
        """The raw-pixel graph, written at ``path``."""
        write_bytes(path, self.wrapped.SerializeToString())
        return path

    def preprocessing(self) -> dict[str, Any]:
        """What the artifacts record as their preprocessing (folded into them: they take raw pixels)."""
        if self.written_by_edgepipe:
            return {"description": "as in the source ONNX file, which edgepipe wrote (raw pixels in)"}
        return {
            "description": f"folded from the source ONNX's declared preprocessing: {self.transform.describe()}",
            **self.transform.as_dict(),
            "softmax_added": self.softmax_added,
        }

    def reference(self, images: np.ndarray, threads: int = 1) -> np.ndarray:
        """Probabilities of the user's own file, run by ONNX Runtime on ``images`` (raw NHWC pixels) preprocessed
        in numpy (a Softmax applied in numpy when the wrapper adds one)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(self.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        fixed_batch = isinstance(session.get_inputs()[0].shape[0], int)
        step = session.get_inputs()[0].shape[0] if fixed_batch else 32
        outputs = [
            session.run(None, {name: self.transform.apply(images[i : i + step])})[0]
            for i in range(0, len(images), step)
        ]
        return self.probabilities(outputs)

    def probabilities(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The network's outputs (batches of (N, classes)) joined as float32 probabilities: a Softmax applied in
        numpy when the wrapper adds one (its output is logits)."""
        out = np.concatenate(outputs).astype(np.float64) if outputs else np.zeros((0, self.outputs))
        if self.softmax_added:
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        return out.astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "onnx",
            "input_size": self.size,
            "channels": self.channels,
            "classes": self.outputs,
            "layout": self.transform.layout,
            "softmax_added": self.softmax_added,
            "reference": "the source ONNX file, run by ONNX Runtime on the same raw pixels preprocessed in numpy",
        }


def _load(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise EdgepipeError(f"model file '{path}' does not exist", "Pass an ONNX file (.onnx).")
    try:
        model = onnx.load(str(path))
    except Exception:  # protobuf raises several types for bytes that are not a ModelProto
        model = None
    if model is None or not model.graph.node or not model.opset_import:
        raise EdgepipeError(
            f"'{path}' is not an ONNX model", "Pass a model saved as ONNX (e.g. torch.onnx.export, tf2onnx)."
        )
    return model


def _dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _image_input(model: Any, path: Path) -> Any:
    """The one graph input that is not an initializer; one-line errors for several, a non-float or a non-image."""
    import onnx

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise EdgepipeError(
            f"'{path.name}' has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); edgepipe takes "
            "an image classifier with one image input",
            "Export the network with a single image input.",
        )
    value = inputs[0]
    tensor = value.type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else "not a tensor"
        raise EdgepipeError(
            f"input '{value.name}' of '{path.name}' is {kind}; edgepipe takes a float32 image input",
            "Export the network with a float32 input.",
        )
    if len(tensor.shape.dim) != 4:
        raise EdgepipeError(
            f"input '{value.name}' of '{path.name}' has {len(tensor.shape.dim)} dimensions "
            f"({_shape_text(value)}); an image input has 4 (N, C, H, W or N, H, W, C)",
            "Pass an image classifier.",
        )
    return value


def _shape_text(value: Any) -> str:
    return (
        "["
        + ", ".join(
            d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?")
            for d in value.type.tensor_type.shape.dim
        )
        + "]"
    )


def _layout(dims: list[int | None], given: str | None, path: Path, value: Any) -> str:
    """The declared layout, else the one the shape allows alone (channels 1 or 3 on one side only)."""
    if given:
        return given
    first, last = dims[1] in (1, 3), dims[3] in (1, 3)
    if first != last:
        return "nchw" if first else "nhwc"
    raise EdgepipeError(
        f"the layout of input '{value.name}' {_shape_text(value)} of '{path.name}' cannot be told from its shape",
        "Set --layout nchw or nhwc (model.preprocessing.layout).",
    )


def _square_size(dims: list[int | None], layout: str, input_size: int | None, path: Path, value: Any) -> int:
    height, width = (dims[2], dims[3]) if layout == "nchw" else (dims[1], dims[2])
    if height is None or width is None:
        if input_size is None:
            raise EdgepipeError(
                f"input '{value.name}' of '{path.name}' has a dynamic spatial size {_shape_text(value)}",
                "Pass --input-size N (the square size the network was trained at).",
            )
        return int(input_size)
    if height != width:
        raise EdgepipeError(
            f"input '{value.name}' of '{path.name}' is {height}x{width}; edgepipe takes square inputs",
            "Export the network at a square input size.",
        )
    if input_size is not None and input_size != height:
        raise EdgepipeError(
            f"--input-size {input_size} differs from the {height}x{width} input of '{path.name}'",
            f"Pass --input-size {height} (model.input_size), or leave it out of edgepipe export.",
        )
    return int(height)


def _transform(given: PixelTransform, layout: str, channels: int, path: Path, edgepipe_wrote: bool) -> PixelTransform:
    """The full transform: IDENTITY for a file edgepipe wrote (nothing may be declared then), else the declared
    keys with the layout read from the shape; EdgepipeError naming every key still unknown."""
    declared = [k for k in KEYS if getattr(given, k) is not None]
    if edgepipe_wrote:
        if declared:
            raise EdgepipeError(
                f"'{path.name}' was written by edgepipe and takes raw pixels: its preprocessing is inside it already",
                "Drop " + ", ".join(KEYS[k] for k in declared) + ".",
            )
        return IDENTITY
    full = given.with_defaults(layout=layout, channels="rgb" if channels == 1 else None)
    missing = full.missing()
    if missing:
        flags = " ".join(f"{KEYS[k]} {_EXAMPLES[k]}" for k in missing)
        raise EdgepipeError(
            f"the preprocessing of '{path.name}' is not known: set {', '.join(missing)}",
            f"Pass {flags} (or model.preprocessing.{missing[0]}... in a config), as the network was "
            "trained; --preprocessing torch, tf, caffe, lite or unit names a common one.",
        )
    return full


_EXAMPLES = {
    "layout": "nchw",
    "channels": "rgb",
    "scale": "255",
    "mean": "0.485,0.456,0.406",
    "std": "0.229,0.224,0.225",
}


def _output(model: Any, path: Path) -> tuple[Any, int]:
    """(the graph's output, its class count); EdgepipeError unless there is one output shaped (N, classes)."""
    import onnx

    graph = model.graph
    if len(graph.output) != 1:
        raise EdgepipeError(
            f"'{path.name}' has {len(graph.output)} outputs; edgepipe takes a classifier with one output (N, classes)",
            "Export the network with its class scores as the only output.",
        )
    inferred = onnx.shape_inference.infer_shapes(model)
    dims = _dims(inferred.graph.output[0])
    if len(dims) != 2 or not dims[1]:
        raise EdgepipeError(
            f"output '{graph.output[0].name}' of '{path.name}' has shape {_shape_text(inferred.graph.output[0])}; "
            "edgepipe takes a classifier whose output is (N, classes)",
            "Export the network with its class scores (N, classes) as output.",
        )
    return graph.output[0], int(dims[1])


def _pre_nodes(transform: PixelTransform, channels: int, target: str) -> tuple[list, list]:
    """(nodes, initializers) from ``image`` to ``target``: the channel reorder, multiply, add, transpose."""
    from onnx import helper, numpy_helper

    multiplier, offset = transform.per_channel(channels)
    nodes, inits, x = (
        [],
        [
            numpy_helper.from_array(multiplier, PREFIX + "multiplier"),
            numpy_helper.from_array(offset, PREFIX + "offset"),
        ],
        INPUT_NAME,
    )
    if transform.channels == "bgr" and channels == 3:
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), PREFIX + "bgr_order"))
        nodes.append(
            helper.make_node("Gather", [x, PREFIX + "bgr_order"], [PREFIX + "bgr"], name=PREFIX + "to_bgr", axis=3)
        )
        x = PREFIX + "bgr"
    nchw = transform.layout == "nchw"
    nodes.append(helper.make_node("Mul", [x, PREFIX + "multiplier"], [PREFIX + "scaled"], name=PREFIX + "scale"))
    nodes.append(
        helper.make_node(
            "Add",
            [PREFIX + "scaled", PREFIX + "offset"],
            [PREFIX + "normalized" if nchw else target],
            name=PREFIX + "normalize",
        )
    )
    if nchw:
        nodes.append(
            helper.make_node("Transpose", [PREFIX + "normalized"], [target], name=PREFIX + "to_nchw", perm=[0, 3, 1, 2])
        )
    return nodes, inits


def _renamed_input(model: Any, old: str, new: str) -> None:
    """Rename the tensor ``old`` to ``new`` wherever a node reads it (so ``image`` is free for the wrapper)."""
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def wrap(model: Any, transform: PixelTransform, size: int, channels: int, softmax: bool) -> Any:
    """A copy of ``model`` taking raw NHWC pixels (batch dynamic, ``size`` square): the transform before its
    graph, a Softmax after it when ``softmax``. EdgepipeError when the result is not a valid ONNX model."""
    import onnx
    from onnx import helper

    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    inits = {i.name for i in graph.initializer}
    original = next(i for i in graph.input if i.name not in inits)
    target = original.name
    if target == INPUT_NAME:
        target = PREFIX + "network_input"
        _renamed_input(wrapped, INPUT_NAME, target)
    nodes, pre_inits = _pre_nodes(transform, channels, target)
    kept_inputs = [i for i in graph.input if i.name in inits]
    del graph.input[:]
    graph.input.extend(
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["N", size, size, channels]), *kept_inputs]
    )
    user_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + user_nodes)
    graph.initializer.extend(pre_inits)
    if softmax:
        output = graph.output[0]
        logits = PREFIX + "logits"
        for node in graph.node:
            node.output[:] = [logits if name == output.name else name for name in node.output]
            node.input[:] = [logits if name == output.name else name for name in node.input]
        graph.node.append(helper.make_node("Softmax", [logits], [output.name], name=PREFIX + "softmax", axis=-1))
    for dim in graph.output[0].type.tensor_type.shape.dim[:1]:
        dim.Clear()
        dim.dim_param = "N"
    try:
        onnx.checker.check_model(wrapped, full_check=True)
    except Exception as exc:  # the checker raises its own error types and shape-inference errors
        first = first_line(exc)
        raise EdgepipeError(
            f"the network with its preprocessing folded in is not a valid ONNX model: {first}"
        ) from None
    return wrapped


def _edgepipe_wrote(model: Any) -> bool:
    return {p.key: p.value for p in model.metadata_props}.get("input") == RAW_INPUT


def _labels(model: Any, classes: int) -> list[str] | None:
    """The class names the file records (edgepipe's 'labels' metadata), when they match its output."""
    raw = {p.key: p.value for p in model.metadata_props}.get(LABELS_KEY)
    try:
        labels = json.loads(raw) if raw else None
    except ValueError:
        return None
    return [str(v) for v in labels] if isinstance(labels, list) and len(labels) == classes else None


def read_onnx_source(
    path: str | Path, given: PixelTransform, input_size: int | None = None, unsafe: bool = False
) -> OnnxSource:
    """Check an ONNX classifier and make its raw-pixel graph (nothing is written). ``given`` is the declared
    preprocessing (unknown keys None); ``input_size`` the square size for a dynamic spatial input; ``unsafe`` is
    not needed (loading an ONNX file runs no code).

    One-line EdgepipeErrors: not an ONNX file, and those of :func:`read_onnx_model`.
    """
    path = Path(path)
    return read_onnx_model(_load(path), path, given, input_size)


def read_onnx_model(model: Any, path: Path, given: PixelTransform, input_size: int | None = None) -> OnnxSource:
    """Check a loaded ONNX classifier (``path`` names it in errors and gives its name) and make its raw-pixel graph.

    One-line EdgepipeErrors: those of :func:`checked_input`; not one (N, classes) output; a graph that runs only
    at its fixed batch of 1 (see :func:`probe`).
    """
    pixels = checked_input(model, path, given, input_size)
    output, classes = _output(model, path)
    producer = next((n for n in model.graph.node if output.name in n.output), None)
    softmax = producer is None or producer.op_type != "Softmax"
    written = pixels.written
    wrapped = model if written else wrap(model, pixels.transform, pixels.size, pixels.channels, softmax)
    if pixels.fixed_batch:
        probe(wrapped, pixels, path)
    return OnnxSource(
        path,
        model,
        wrapped,
        pixels.transform,
        pixels.size,
        pixels.channels,
        classes,
        _labels(model, classes),
        softmax and not written,
        written,
    )


@dataclass(frozen=True)
class PixelInput:
    """What a checked image input takes: its layout, channels, square size and the full transform from raw
    pixels; ``written``: edgepipe wrote the file (it takes raw pixels); ``fixed_batch``: its batch is a number."""

    name: str
    layout: str
    channels: int
    size: int
    transform: PixelTransform
    written: bool
    fixed_batch: bool


def checked_input(model: Any, path: Path, given: PixelTransform, input_size: int | None = None) -> PixelInput:
    """The checked image input of a loaded ONNX network (a classifier or a backbone) and its full transform.

    One-line EdgepipeErrors: not one float image input of rank 4; a layout the shape does not tell and none
    declared; not 1 or 3 channels; a dynamic spatial size without ``input_size``; a non-square input;
    preprocessing keys still unknown (each named).
    """
    value = _image_input(model, path)
    dims = _dims(value)
    layout = _layout(dims, given.layout, path, value)
    channels = dims[1] if layout == "nchw" else dims[3]
    if channels not in (1, 3):
        raise EdgepipeError(
            f"input '{value.name}' of '{path.name}' {_shape_text(value)} has {channels or 'a dynamic number of'} "
            f"channels in {layout.upper()}; edgepipe takes 3 (colour) or 1 (grey)",
            "Check --layout (nchw: N, C, H, W; nhwc: N, H, W, C).",
        )
    size = _square_size(dims, layout, input_size, path, value)
    written = _edgepipe_wrote(model)
    transform = _transform(given, layout, channels, path, written)
    return PixelInput(value.name, layout, channels, size, transform, written, dims[0] is not None)


#: the batch a graph is tried at when its input fixes another one: any number but 1 shows a batch fixed inside
PROBE_BATCH = 2


def probe(wrapped: Any, pixels: PixelInput, path: Path) -> tuple[int, ...]:
    """The output shape of the raw-pixel graph ``wrapped`` at a batch of PROBE_BATCH blank images, run by ONNX
    Runtime. A network exported with a fixed batch is given a dynamic one by the wrapper; this proves its graph
    takes it. EdgepipeError (one line) when it cannot run that batch or answers another one (a Reshape to
    [1, -1] inside, say)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # its own failure is reported below, in one line
    blank = np.zeros((PROBE_BATCH, pixels.size, pixels.size, pixels.channels), np.float32)
    try:
        session = ort.InferenceSession(wrapped.SerializeToString(), options, providers=["CPUExecutionProvider"])
        shape = tuple(session.run(None, {INPUT_NAME: blank})[0].shape)
    except Exception:  # ONNX Runtime raises its own error types, with pages of detail
        shape = None
    if shape is None or not shape or shape[0] != PROBE_BATCH:
        raise EdgepipeError(
            f"'{path.name}' fixes its batch inside the graph (its input '{pixels.name}' takes a batch of one and "
            f"the graph does not run {PROBE_BATCH} images at once); edgepipe's artifacts take any batch",
            "Export it with a dynamic batch dimension (torch.onnx.export dynamic_axes or dynamo=True with "
            "dynamic_shapes; tf2onnx input_signature with None as the batch).",
        )
    return shape
