"""TFLite from a network that is not a Keras model: its raw-pixel ONNX graph (an ONNX or PyTorch source with its
preprocessing folded in) converted by onnx2tf to a TensorFlow SavedModel, from which every TFLite format is
converted as from a Keras model's SavedModel (the same converter settings and INT8 recipes).

onnx2tf rewrites the graph NHWC-native: it carries each tensor in NHWC from the input on and turns every NCHW
operation into its NHWC kernel, so no transpose is left around the convolutions (a converter that keeps the
graph's NCHW layout puts one before and after each). The SavedModel takes the raw-pixel graph's input as it is
(raw NHWC pixels, dynamic batch), like a Keras-born file.

onnx2tf sets process-wide environment variables when imported (``TF_USE_LEGACY_KERAS``, which switches
``tf.keras`` to Keras 2): it runs in a child process, never in edgepipe's.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

from edgepipe.backends.context import ExportContext
from edgepipe.errors import EdgepipeError

#: the packages onnx2tf imports that it does not declare (its releases that run on edgepipe's TensorFlow declare
#: none): converter first, as the reason names them in this order
CONVERTER_MODULES = ("onnx2tf", "tf_keras", "onnx_graphsurgeon", "sng4onnx")
INSTALL = "pip install 'edgepipe[tflite]'"
#: the ONNX input onnx2tf must keep as it is (the raw-pixel graph's input is NHWC already)
INPUT_NAME = "image"

#: by SavedModel path, what each conversion did (or why it failed): every TFLite format of one export shares one
_DONE: dict[str, dict[str, Any]] = {}
_FAILED: dict[str, str] = {}


def unavailable() -> str | None:
    """Why a foreign network's TFLite formats cannot be built here (the converter's modules missing), else None.
    Looks the modules up without importing them (importing onnx2tf changes the process's environment)."""
    missing = [m for m in CONVERTER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return f"TFLite from ONNX needs onnx2tf; not installed: {', '.join(missing)} ({INSTALL})"
    return None


def saved_model(ctx: ExportContext) -> Path:
    """The SavedModel of ``ctx.source_onnx`` (raw NHWC pixels in), converted by onnx2tf in a child process once
    per export job and kept beside the work folder. EdgepipeError with onnx2tf's reason when it cannot convert
    the graph (the reason is remembered: the job's other TFLite formats fail with it without converting again)."""
    if ctx.source_onnx is None:
        raise EdgepipeError("no ONNX graph to convert to TFLite")
    path = _saved_model_path(ctx)
    if str(path) in _FAILED:
        raise EdgepipeError(_FAILED[str(path)])
    if not (path / "saved_model.pb").exists():
        reason = unavailable()
        if reason:
            raise EdgepipeError(reason)
        _convert(ctx, Path(ctx.source_onnx), path)
    return path


def _convert(ctx: ExportContext, onnx_path: Path, path: Path) -> None:
    from edgepipe import child
    from edgepipe.fileio import atomic_path

    try:
        with atomic_path(path) as tmp:
            done = child.run(
                "edgepipe.backends.litert.from_onnx:convert_in_child",
                {"onnx": str(onnx_path), "output": str(tmp), "work": str(ctx.workdir / "onnx2tf")},
                folder=ctx.workdir,
            )
    except child.ChildFailed as exc:
        _FAILED[str(path)] = f"onnx2tf could not convert the ONNX graph: {exc.line}"
        raise EdgepipeError(_FAILED[str(path)]) from None
    _DONE[str(path)] = {
        "converter": f"onnx2tf {done['version']}",
        "from": "the source's ONNX graph with its preprocessing folded in, to a TensorFlow SavedModel",
        "seconds": done["seconds"],
    }
    ctx.echo(f"    converted to a TensorFlow SavedModel by onnx2tf {done['version']} ({done['seconds']:.1f} s)")


def conversion(ctx: ExportContext) -> dict[str, Any] | None:
    """What made the SavedModel of this export's foreign source (onnx2tf's version, seconds), once it is made."""
    return _DONE.get(str(_saved_model_path(ctx)))


def _saved_model_path(ctx: ExportContext) -> Path:
    """Beside the work folder, so every format of one export job finds it."""
    return (ctx.workdir_parent or ctx.workdir) / "saved_model-onnx2tf"


def convert_in_child(argument: dict[str, str]) -> dict[str, Any]:
    """In a child process: onnx2tf's NHWC-native Keras model of the ONNX file ``argument['onnx']``, saved as a
    SavedModel at ``argument['output']`` (``argument['work']``: the folder onnx2tf makes for its own files); its
    version and the seconds it took. onnxsim is not run (a separate
    tool onnx2tf starts as a process); its constant folding is done by the converter after it."""
    from importlib.metadata import version

    from edgepipe.quiet import native_output_suppressed

    start = time.perf_counter()
    with native_output_suppressed():
        import onnx2tf
        import tensorflow as tf

        model = onnx2tf.convert(
            input_onnx_file_path=argument["onnx"],
            output_folder_path=argument["work"],
            keep_nwc_or_nhwc_or_ndhwc_input_names=[INPUT_NAME],
            not_use_onnxsim=True,
            disable_model_save=True,
            non_verbose=True,
        )
        tf.saved_model.save(model, argument["output"])
    if not (Path(argument["output"]) / "saved_model.pb").exists():
        raise RuntimeError("onnx2tf wrote no SavedModel")
    return {"version": version("onnx2tf"), "seconds": round(time.perf_counter() - start, 2)}
