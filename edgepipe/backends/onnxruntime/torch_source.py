"""An image classifier brought from PyTorch: an ``nn.Module`` given to ``edgepipe.export`` (with its input shape),
or a ``torch.export`` program saved as ``.pt2``. PyTorch's own exporter turns it into ONNX, which is then read
the ONNX way (:func:`read_onnx_model`: its preprocessing folded into a raw-pixel graph); what every artifact is
judged against is the PyTorch module itself, run by torch on the same raw pixels preprocessed in numpy
(:meth:`TorchSource.reference`), so the exporter's ONNX is checked too.

The exporter is ``torch.onnx.export(..., dynamo=True)``, the torch.export-based one: a ``.pt2`` file is an
ExportedProgram, which only it takes, and the TorchScript-based exporter is deprecated (torch 2.15 warns that it
will be removed). It needs onnxscript, which the ``edgepipe[torch]`` extra installs.

torch is imported only here, inside functions: edgepipe runs without it, and a ``.pt2`` file without it is a
one-line error naming the extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends.onnxruntime.backend import ONNX
from edgepipe.backends.onnxruntime.source import OnnxSource, read_onnx_model
from edgepipe.errors import EdgepipeError
from edgepipe.pixels import PixelTransform

EXTRA = "pip install 'edgepipe[torch]'"
BATCH_HINT = "Its forward() must take any batch size (x.flatten(1), not x.view(1, -1))."
#: the batch of the example input a module is exported with (1 would fix the batch: torch.export specializes it)
EXAMPLE_BATCH = 2
STEP = 32


@dataclass
class TorchSource:
    """A PyTorch classifier, its ONNX export read as an :class:`OnnxSource`, and the module that judges it."""

    onnx: OnnxSource
    module: Callable[[Any], Any]  # the nn.Module, or the program's module
    kind: str  # "PyTorch module" or "torch.export program"
    name: str
    exporter: str
    #: whether to run ``module`` in eval mode (a program's module is fixed in the mode it was exported in)
    switch_to_eval: bool = True

    @property
    def size(self) -> int:
        return self.onnx.size

    @property
    def channels(self) -> int:
        return self.onnx.channels

    @property
    def outputs(self) -> int:
        return self.onnx.outputs

    @property
    def labels(self) -> list[str] | None:
        return self.onnx.labels

    def write(self, path: Path) -> Path:
        """The raw-pixel graph (PyTorch's ONNX with the preprocessing folded in), written at ``path``."""
        return self.onnx.write(path)

    def preprocessing(self) -> dict[str, Any]:
        transform = self.onnx.transform
        return {
            "description": f"folded from the {self.kind}'s declared preprocessing: {transform.describe()}",
            **transform.as_dict(),
            "softmax_added": self.onnx.softmax_added,
        }

    def reference(self, images: np.ndarray, threads: int = 1) -> np.ndarray:
        """Probabilities of the PyTorch module itself (eval mode, no gradients, ``threads`` intra-op threads) on
        ``images`` (raw NHWC pixels) preprocessed in numpy; a Softmax applied in numpy when the graph adds one."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(max(1, threads))
        try:
            with torch.no_grad(), _evaluating(self.module if self.switch_to_eval else None):
                outputs = [
                    _first(self.module(torch.from_numpy(self.onnx.transform.apply(images[i : i + STEP]))))
                    .detach()
                    .float()
                    .numpy()
                    for i in range(0, len(images), STEP)
                ]
        finally:
            torch.set_num_threads(before)
        return self.onnx.probabilities(outputs)

    def describe(self) -> dict[str, Any]:
        return {
            **self.onnx.describe(),
            "kind": "pytorch",
            "given_as": self.kind,
            "exporter": self.exporter,
            "reference": f"the {self.kind}, run by torch on the same raw pixels preprocessed in numpy",
        }


def _first(output: Any) -> Any:
    """The tensor a classifier returns (alone, or as the only item of a tuple or list)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def _evaluating(module: Any) -> Iterator[None]:
    """``module`` in eval mode (dropout off, batch norm's running statistics), its own mode restored after."""
    training = None if module is None else getattr(module, "training", None)
    if training is None:
        yield
        return
    module.eval()
    try:
        yield
    finally:
        module.train(training)


def _torch() -> Any:
    """torch, once its ONNX exporter's needs are known to be installed; EdgepipeError naming the extra otherwise."""
    _export_machinery_without_triton()
    try:
        import onnxscript  # noqa: F401  (torch.onnx.export's torch.export-based exporter needs it)
        import torch
    except ImportError as exc:
        raise EdgepipeError(
            f"a PyTorch model needs PyTorch and onnxscript ({exc.name or 'torch'} is not installed)",
            f"Install them with: {EXTRA}",
        ) from None
    return torch


def _export_machinery_without_triton() -> None:
    """Hide Triton from torch in this process. Triton, the GPU kernel compiler, is never used by an export on
    the CPU, but torch.export and its serializer import it whenever it is installed (CUDA builds of torch ship
    it), and loading its LLVM into a process that holds TensorFlow's aborts the process (seen with torch 2.15
    and TensorFlow 2.21; edgepipe's exporters load TensorFlow). With 'import triton' failing, torch treats it as
    absent. A process that has already loaded Triton keeps it."""
    sys.modules.setdefault("triton", None)  # type: ignore[arg-type]  # None: 'import triton' raises ImportError


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """PyTorch's exporter logs each step and warns of optional packages (torchvision) it does not find: none of
    it says anything about the export. ``--debug`` shows it."""
    if os.environ.get("EDGEPIPE_DEBUG"):
        yield
        return
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _image_shape(shape: Any, what: str) -> tuple:
    """``shape`` when it is an image batch (rank 4); EdgepipeError otherwise."""
    shape = tuple(shape)
    if len(shape) != 4:
        raise EdgepipeError(
            f"{what} is {list(shape)}: not an image batch (N, C, H, W or N, H, W, C)",
            "edgepipe takes an image classifier with one image input.",
        )
    return shape


def _to_onnx(torch: Any, program: Any, name: str) -> Any:
    """PyTorch's ONNX export of a torch.export program (an onnx.ModelProto); EdgepipeError when it fails."""
    with _exporter_quiet():
        try:
            return torch.onnx.export(program, dynamo=True, verbose=False).model_proto
        except Exception as exc:  # the exporter raises many types (unsupported ops, decomposition errors)
            raise EdgepipeError(
                f"PyTorch's ONNX exporter could not export {name}: {_first_line(exc)}",
                "Export the network with torch.onnx.export yourself and pass the .onnx file, or "
                "replace the operation it names.",
            ) from None


def _exporter_name(torch: Any, model: Any) -> str:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return f"torch.onnx.export (dynamo, torch {torch.__version__}, opset {opset})"


def read_torch_module(
    module: Any, given: PixelTransform, input_size: int | None = None, input_shape: Any | None = None
) -> TorchSource:
    """Export an ``nn.Module`` (in eval mode, its mode restored after) at ``input_shape`` (N, C, H, W or N, H, W,
    C; the batch is made dynamic) to ONNX and read that as an ONNX classifier with the ``given`` preprocessing.

    One-line EdgepipeErrors: torch or onnxscript missing; no ``input_shape``, or one that is not an image batch;
    a forward() that fixes the batch size; an export PyTorch cannot do; those of :func:`read_onnx_model`.
    """
    torch = _torch()
    name = type(module).__name__
    if input_shape is None:
        raise EdgepipeError(
            f"exporting the PyTorch module {name} needs its input shape",
            "Pass input_shape=(1, 3, H, W) (or (1, H, W, 3) for an NHWC network).",
        )
    shape = _image_shape(input_shape, f"input_shape of {name}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise EdgepipeError(
            f"input_shape of {name} is {list(shape)}: each dimension must be a positive integer",
            "e.g. input_shape=(1, 3, 224, 224)",
        )
    example = torch.zeros((EXAMPLE_BATCH, *shape[1:]), dtype=torch.float32)
    with _exporter_quiet(), _evaluating(module):
        try:
            program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        except Exception as exc:  # torch.export raises its own error types (constraint violations, unsupported code)
            raise EdgepipeError(
                _export_failure(name, exc, shape), BATCH_HINT + " It must trace with torch.export.export."
            ) from None
    model = _to_onnx(torch, program, name)
    _check_output_batch(model, f"the PyTorch module {name}")
    source = read_onnx_model(model, Path(name), given, input_size)
    return TorchSource(source, module, "PyTorch module", name, _exporter_name(torch, model))


def _check_output_batch(model: Any, what: str) -> None:
    """EdgepipeError when the exported graph's output has a fixed batch size although its input's is dynamic (a
    forward() that reshapes to one image: its artifacts would fail on any other batch)."""
    dims = model.graph.output[0].type.tensor_type.shape.dim if len(model.graph.output) == 1 else []
    if dims and dims[0].HasField("dim_value"):
        raise EdgepipeError(
            f"the output of {what} has a fixed batch size of {dims[0].dim_value}; edgepipe's artifacts take any batch",
            BATCH_HINT,
        )


def _export_failure(name: str, exc: BaseException, shape: tuple) -> str:
    text = _first_line(exc)
    if "Constraints violated (batch)" in str(exc):
        return f"the PyTorch module {name} fixes its batch size; edgepipe's artifacts take any batch"
    return f"torch.export could not export the PyTorch module {name} at input shape {list(shape)}: {text}"


def read_torch_program(
    path: str | Path, given: PixelTransform, input_size: int | None = None, unsafe: bool = False
) -> TorchSource:
    """Load a ``torch.export.save`` file (its weights as tensors only, unless ``unsafe``: torch falls back to
    pickle, which runs code, for other objects), export it to ONNX and read that as an ONNX classifier.

    One-line EdgepipeErrors: torch or onnxscript missing; no file; not an ExportedProgram; a program holding
    objects only pickle loads (without ``unsafe``); not one image input; a fixed batch size; an export PyTorch
    cannot do; those of :func:`read_onnx_model`.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgepipeError(f"model file '{path}' does not exist", "Pass a program saved by torch.export.save (.pt2).")
    torch = _torch()
    program = _load_program(torch, path, unsafe)
    _check_program_input(program, path)
    model = _to_onnx(torch, program, f"'{path.name}'")
    _check_output_batch(model, f"'{path.name}'")
    source = read_onnx_model(model, path, given, input_size)
    return TorchSource(
        source, program.module(), "torch.export program", path.stem, _exporter_name(torch, model), switch_to_eval=False
    )


SAVE_HINT = (
    "Save one with torch.export.save(torch.export.export(model.eval(), (torch.zeros(2, 3, H, W),), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), 'model.pt2')."
)


def _load_program(torch: Any, path: Path, unsafe: bool) -> Any:
    """The ExportedProgram in ``path``; tensors only unless ``unsafe`` (TORCH_FORCE_WEIGHTS_ONLY_LOAD keeps
    torch.export.load from falling back to pickle)."""
    saved = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    if not unsafe:
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with _exporter_quiet():
            program = torch.export.load(str(path))
    except Exception as exc:  # a zip that is not a program, pickled objects refused, a version mismatch...
        if not unsafe and _mentions(exc, "weights only load failed"):
            raise EdgepipeError(
                f"'{path.name}' holds objects only pickle can load, and loading them runs code",
                "Pass --unsafe-load (unsafe_load=True) if you trust the file.",
            ) from None
        raise EdgepipeError(
            f"'{path.name}' is not a torch.export program that torch {torch.__version__} can load", SAVE_HINT
        ) from None
    finally:
        if saved is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = saved
    if not isinstance(program, torch.export.ExportedProgram):
        raise EdgepipeError(f"'{path.name}' is not a torch.export program", SAVE_HINT)
    return program


def _mentions(exc: BaseException, text: str) -> bool:
    """Whether ``exc`` or an exception it was raised from says ``text`` (any case)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if text in str(exc).lower():
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _check_program_input(program: Any, path: Path) -> None:
    """One image input (rank 4) whose batch size is not fixed; EdgepipeError otherwise."""
    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        raise EdgepipeError(
            f"'{path.name}' has {len(names)} inputs ({', '.join(map(str, names))}); edgepipe takes an "
            "image classifier with one image input",
            "Export the network with a single image input.",
        )
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0])
    shape = _image_shape(node.meta["val"].shape, f"input '{names[0]}' of '{path.name}'")
    if isinstance(shape[0], int):
        raise EdgepipeError(
            f"'{path.name}' was exported with a fixed batch size of {shape[0]}; edgepipe's artifacts take any batch",
            "Export it with a dynamic batch: " + SAVE_HINT,
        )


def _is_torch_module(obj: Any) -> bool:
    """Whether ``obj`` is a torch.nn.Module (torch is imported already when it is: nothing is imported here)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


ONNX.model_source(
    suffixes=(".pt2",),
    read=read_torch_program,
    description="a torch.export program (.pt2), exported to ONNX by PyTorch",
)
ONNX.object_source(
    accepts=_is_torch_module, read=read_torch_module, description="a PyTorch module, exported to ONNX by PyTorch"
)
