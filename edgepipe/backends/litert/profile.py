"""LiteRT's op-level profiler, through the LiteRT C API that ai-edge-litert 2.x ships (libLiteRt.so).

Why this way: the package's Python ``Interpreter`` exposes no profiler, its Python ``CompiledModel``
takes no runtime options, and it ships no ``benchmark_model`` binary. Its ``libLiteRt.so`` does export
the C API's profiler (``LiteRtCompiledModelGetProfiler``, ``LiteRtGetProfilerEvents``), switched on by the
runtime option ``enable_profiling``. So the profile is taken on a LiteRT CompiledModel on the CPU
accelerator, XNNPACK with the runner's thread count: the same XNNPACK kernels the timed interpreter's
default delegate runs, through LiteRT's newer API. XNNPACK reports each of its operators (with the
kernel, e.g. ``Convolution (NHWC, QC8) IGEMM``); ops XNNPACK did not take run as LiteRT's built-in
kernels and are reported by their TFLite op name with their node index: those are the ops outside
XNNPACK. XNNPACK's operators are matched to the file's ops in order, by kind, where they agree.
Event times are whole microseconds.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import MissingDependencyError
from edgepipe.profiles import COMPUTE, DATA, DEQUANTIZE, QUANTIZE, EngineProfile, OpTime, ProfilingUnavailable

PROFILER = "LiteRT C API profiler (CompiledModel, runtime option enable_profiling; XNNPACK per-operator events)"
WARMUP_CALLS = 3
#: profiler event types (tflite::Profiler::EventType)
OPERATOR_INVOKE, DELEGATE_PROFILED_OPERATOR_INVOKE = 2, 8
_CPU_ACCELERATOR = 1
_MAX_RANK = 8
DATA_OPS = frozenset(
    {
        "RESHAPE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "TRANSPOSE",
        "CONCATENATION",
        "PAD",
        "PADV2",
        "GATHER",
        "SLICE",
        "STRIDED_SLICE",
        "SPLIT",
        "PACK",
        "UNPACK",
        "SHAPE",
    }
)
#: XNNPACK operator names (their first word, lower case) -> TFLite ops they can stand for
XNNPACK_KINDS = {
    "convolution": ("CONV_2D", "DEPTHWISE_CONV_2D"),
    "deconvolution": ("TRANSPOSE_CONV",),
    "fully": ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D"),  # XNNPACK runs a 1x1 convolution as a GEMM
    "batch": ("BATCH_MATMUL",),
    "mean": ("MEAN",),
    "sum": ("SUM",),
    "add": ("ADD",),
    "multiply": ("MUL",),
    "subtract": ("SUB",),
    "divide": ("DIV",),
    "average": ("AVERAGE_POOL_2D", "MEAN"),
    "max": ("MAX_POOL_2D", "MAXIMUM"),
    "softmax": ("SOFTMAX",),
    "hardswish": ("HARD_SWISH",),
    "sigmoid": ("LOGISTIC",),
    "clamp": ("RELU", "RELU6", "RELU_N1_TO_1"),
    "convert": ("QUANTIZE", "DEQUANTIZE"),
    "copy": ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"),
    "static": ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "PAD", "SLICE"),
    "constant": ("PAD",),
    "transpose": ("TRANSPOSE",),
    "concatenate": ("CONCATENATION",),
    "tanh": ("TANH",),
    "leaky": ("LEAKY_RELU",),
    "elu": ("ELU",),
}


class _Memory(ctypes.Structure):  # tflite::profiling::memory::MemoryUsage
    _fields_ = [("footprint_kb", ctypes.c_int64), ("total_allocated", ctypes.c_size_t), ("in_use", ctypes.c_size_t)]


class _Event(ctypes.Structure):  # ProfiledEventData
    _fields_ = [
        ("tag", ctypes.c_char_p),
        ("event_type", ctypes.c_int),
        ("start_us", ctypes.c_uint64),
        ("elapsed_us", ctypes.c_uint64),
        ("begin", _Memory),
        ("end", _Memory),
        ("metadata1", ctypes.c_uint64),
        ("metadata2", ctypes.c_uint64),
        ("source", ctypes.c_int),
    ]


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda payload: None)  # the payloads are owned by Python


def _library() -> ctypes.CDLL:
    try:
        import ai_edge_litert
    except ImportError:
        raise MissingDependencyError(
            "profiling a .tflite file needs ai-edge-litert", "pip install ai-edge-litert"
        ) from None
    path = Path(ai_edge_litert.__file__).parent / "libLiteRt.so"
    if not path.exists():
        raise ProfilingUnavailable(f"this ai-edge-litert has no {path.name} (its C API holds LiteRT's profiler)")
    library = ctypes.CDLL(str(path))
    if not hasattr(library, "LiteRtCompiledModelGetProfiler"):
        raise ProfilingUnavailable(f"{path.name} of this ai-edge-litert has no profiler API")
    library.LiteRtGetProfilerEvents.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Event)]
    return library


class _Session:
    """A LiteRT CompiledModel with profiling on, its input and output buffers, and what to free."""

    def __init__(self, path: Path, threads: int):
        self.lib = _library()
        self._keep: list = []
        self.env, self.model, self.options, self.compiled = (ctypes.c_void_p() for _ in range(4))
        self._ok(self.lib.LiteRtCreateEnvironment(0, None, ctypes.byref(self.env)), "create the environment")
        self._ok(
            self.lib.LiteRtCreateModelFromFile(self.env, str(path).encode(), ctypes.byref(self.model)),
            f"load {path.name}",
        )
        self._ok(self.lib.LiteRtCreateOptions(ctypes.byref(self.options)), "create options")
        self._ok(self.lib.LiteRtSetOptionsHardwareAccelerators(self.options, _CPU_ACCELERATOR), "choose the CPU")
        # runtime and XNNPACK options are TOML text under their identifiers (litert/runtime/*_options.cc)
        self._option("runtime_options_string", "enable_profiling = true\n")
        self._option("xnnpack", f"num_threads = {int(threads)}\n")
        self._ok(
            self.lib.LiteRtCreateCompiledModel(self.env, self.model, self.options, ctypes.byref(self.compiled)),
            "compile the model",
        )
        self.signature = ctypes.c_void_p()
        self._ok(
            self.lib.LiteRtGetModelSignature(self.model, ctypes.c_size_t(0), ctypes.byref(self.signature)),
            "read its signature",
        )

    def _ok(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"LiteRT could not {what} (status {status})")

    def _option(self, identifier: str, text: str) -> None:
        payload = ctypes.create_string_buffer(text.encode())
        opaque = ctypes.c_void_p()
        self._keep.append(payload)
        self._ok(
            self.lib.LiteRtCreateOpaqueOptions(
                identifier.encode(), ctypes.cast(payload, ctypes.c_void_p), _DELETER, ctypes.byref(opaque)
            ),
            f"create {identifier} options",
        )
        self._ok(self.lib.LiteRtAddOpaqueOptions(self.options, opaque), f"add {identifier} options")

    def buffers(self, kind: str, batch: int) -> tuple[Any, int]:
        """Managed buffers for every input or output ('Input', 'Output'), a dynamic batch set to ``batch``."""
        count = ctypes.c_size_t()
        self._ok(
            getattr(self.lib, f"LiteRtGetNumSignature{kind}s")(self.signature, ctypes.byref(count)), "count tensors"
        )
        made = []
        for i in range(count.value):
            tensor, requirements, buffer = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
            self._ok(
                getattr(self.lib, f"LiteRtGetSignature{kind}TensorByIndex")(
                    self.signature, ctypes.c_size_t(i), ctypes.byref(tensor)
                ),
                "find a tensor",
            )
            # LiteRtRankedTensorType: element type (int32), then the layout: rank (7 bits) and dimensions (int32 x 8)
            tensor_type = ctypes.create_string_buffer(512)
            self._ok(self.lib.LiteRtGetRankedTensorType(tensor, tensor_type), "read a tensor type")
            words = np.frombuffer(tensor_type, np.int32, count=2 + _MAX_RANK).copy()
            rank = int(words[1]) & 0x7F
            dims = [int(d) if d > 0 else batch for d in words[2 : 2 + rank]]
            if kind == "Input" and any(d <= 0 for d in words[2 : 2 + rank]):
                self._ok(
                    self.lib.LiteRtCompiledModelResizeInputTensor(
                        self.compiled,
                        ctypes.c_size_t(0),
                        ctypes.c_size_t(i),
                        (ctypes.c_int * rank)(*dims),
                        ctypes.c_size_t(rank),
                    ),
                    "resize the input",
                )
            ctypes.memmove(ctypes.addressof(tensor_type) + 8, (ctypes.c_int32 * rank)(*dims), 4 * rank)
            self._ok(
                getattr(self.lib, f"LiteRtGetCompiledModel{kind}BufferRequirements")(
                    self.compiled, ctypes.c_size_t(0), ctypes.c_size_t(i), ctypes.byref(requirements)
                ),
                "read requirements",
            )
            self._ok(
                self.lib.LiteRtCreateManagedTensorBufferFromRequirements(
                    self.env, tensor_type, requirements, ctypes.byref(buffer)
                ),
                "make a buffer",
            )
            made.append(buffer)
        return (ctypes.c_void_p * len(made))(*made), len(made)

    def write(self, buffer: int, data: np.ndarray) -> None:
        buffer = ctypes.c_void_p(buffer)  # a bare int would be passed as a 32-bit C int
        address = ctypes.c_void_p()
        self._ok(self.lib.LiteRtLockTensorBuffer(buffer, ctypes.byref(address), 1), "lock the input")  # 1: write
        size = ctypes.c_size_t()
        self.lib.LiteRtGetTensorBufferPackedSize(buffer, ctypes.byref(size))
        ctypes.memmove(address, data.ctypes.data, min(size.value, data.nbytes))
        self.lib.LiteRtUnlockTensorBuffer(buffer)

    def close(self, *buffers: Any) -> None:
        for group in buffers:
            for buffer in group:
                self.lib.LiteRtDestroyTensorBuffer(ctypes.c_void_p(buffer))
        self.lib.LiteRtDestroyCompiledModel(self.compiled)
        self.lib.LiteRtDestroyOptions(self.options)
        self.lib.LiteRtDestroyModel(self.model)
        self.lib.LiteRtDestroyEnvironment(self.env)


def profile_compiled_model(
    path: Path, threads: int, staged: np.ndarray, graph: list[dict], calls: int
) -> EngineProfile:
    """Per-op median times of ``calls`` runs of ``staged`` (the model's own input, already quantized) on a LiteRT
    CompiledModel with profiling on; ``graph`` is the file's ops (interpreter op details, no delegate)."""
    from edgepipe.quiet import native_output_suppressed

    with native_output_suppressed():
        session = _Session(path, threads)
        inputs, n_in = session.buffers("Input", len(staged))
        outputs, n_out = session.buffers("Output", len(staged))
    try:
        session.write(inputs[0], np.ascontiguousarray(staged))
        run = session.lib.LiteRtRunCompiledModel
        args = (session.compiled, ctypes.c_size_t(0), ctypes.c_size_t(n_in), inputs, ctypes.c_size_t(n_out), outputs)
        for _ in range(WARMUP_CALLS):
            session._ok(run(*args), "run the model")
        profiler = ctypes.c_void_p()
        session._ok(
            session.lib.LiteRtCompiledModelGetProfiler(session.compiled, ctypes.byref(profiler)), "get the profiler"
        )
        if not profiler:
            raise ProfilingUnavailable("this LiteRT did not make a profiler for the model (runtime option not taken)")
        session._ok(session.lib.LiteRtStartProfiler(profiler), "start the profiler")
        walls = []
        for _ in range(calls):
            start = time.perf_counter()
            session._ok(run(*args), "run the model")
            walls.append((time.perf_counter() - start) * 1e3)
        session._ok(session.lib.LiteRtStopProfiler(profiler), "stop the profiler")
        count = ctypes.c_int()
        session._ok(session.lib.LiteRtGetNumProfilerEvents(profiler, ctypes.byref(count)), "count events")
        events = (_Event * count.value)()
        session._ok(session.lib.LiteRtGetProfilerEvents(profiler, count, events), "read events")
        found = [
            (e.tag.decode(errors="replace") if e.tag else "?", e.event_type, e.elapsed_us, e.metadata1)
            for e in events
            if e.event_type in (OPERATOR_INVOKE, DELEGATE_PROFILED_OPERATOR_INVOKE)
        ]
    finally:
        session.close(inputs, outputs)
    return EngineProfile(
        PROFILER,
        calls,
        float(np.min(walls)),
        ops_from_events(found, graph, calls),
        notes=["LiteRT's per-op times are whole microseconds"],
    )


def ops_from_events(events: list[tuple[str, int, int, int]], graph: list[dict], calls: int) -> list[OpTime]:
    """OpTime per op (median over its calls) from (tag, event type, elapsed us, metadata) events: LiteRT built-in ops by their node
    index, XNNPACK operators matched in order to the delegated nodes of the same kind."""
    by_index = {op["index"]: op for op in graph}
    totals: dict[tuple[int, int], list] = {}
    for tag, kind, elapsed, meta in events:  # in call order: the n-th event of an op is its n-th call
        totals.setdefault((kind, int(meta)), [tag, []])[1].append(elapsed)
    builtin = {meta for kind, meta in totals if kind == OPERATOR_INVOKE}
    delegated = [op for op in graph if op["index"] not in builtin]
    matched = _match(
        sorted((meta, tag) for (kind, meta), (tag, _) in totals.items() if kind != OPERATOR_INVOKE), delegated
    )
    ops = []
    for (kind, meta), (tag, per_call_us) in sorted(totals.items(), key=lambda kv: kv[0][1]):
        ms = float(np.median(per_call_us)) / 1e3
        if kind == OPERATOR_INVOKE:
            ops.append(_op(by_index.get(meta), tag, ms, kernel="LiteRT built-in kernel", delegated=False))
        else:
            ops.append(_op(matched.get(meta), tag, ms, kernel=tag, delegated=True))
    return ops


def _match(xnnpack: list[tuple[int, str]], delegated: list[dict]) -> dict[int, dict]:
    """{XNNPACK operator index: graph op}: each operator takes the next delegated op its kind can stand for;
    an operator XNNPACK added itself (a reshape it inserted) matches nothing."""
    matched, position = {}, 0
    for meta, tag in xnnpack:
        kinds = XNNPACK_KINDS.get(tag.split(" ")[0].lower(), ())
        for j in range(position, min(position + 3, len(delegated))):  # look a little ahead: ops XNNPACK fused
            if delegated[j]["op_name"] in kinds:
                matched[meta], position = delegated[j], j + 1
                break
    return matched


def _precision(tag: str, op: dict | None) -> str | None:
    if op is not None and op.get("dtype"):
        return op["dtype"]
    inside = tag[tag.find("(") + 1 : tag.find(")")] if "(" in tag else ""
    return (
        "fp32"
        if "F32" in inside
        else (
            "fp16" if "F16" in inside else ("int8" if "QS8" in inside or "QU8" in inside or "QC8" in inside else None)
        )
    )


#: XNNPACK operators that only move data (first word of their name, lower case), when they match no op of the file
DATA_OPERATORS = ("static", "copy", "transpose", "constant", "concatenate", "slice")


def _op(op: dict | None, tag: str, ms: float, kernel: str, delegated: bool) -> OpTime:
    op_type = op["op_name"] if op else tag
    data = op_type in DATA_OPS or (op is None and tag.split(" ")[0].lower() in DATA_OPERATORS)
    role = {"QUANTIZE": QUANTIZE, "DEQUANTIZE": DEQUANTIZE}.get(op_type) or (DATA if data else COMPUTE)
    return OpTime(
        name=op["name"] if op else tag,
        op_type=op_type,
        time_ms=ms,
        kernel=kernel,
        precision=_precision(tag, op),
        placement="XNNPACK" if delegated else "LiteRT built-in kernels",
        delegated=delegated,
        role=role,
        inputs=op["inputs"] if op else (),
        outputs=op["outputs"] if op else (),
    )


_DTYPES = {"float32": "fp32", "float16": "fp16", "int8": "int8", "uint8": "int8", "int16": "int16", "int32": "int32"}


def graph_ops(interpreter: Any) -> list[dict]:
    """The file's ops in execution order, read from an interpreter with no delegate: index, TFLite op name, its
    tensors, the dtype of its first input and a name (its output tensors' names joined by ';', which name the
    source layers)."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = []
    for op in interpreter._get_ops_details():
        inputs = tuple(str(i) for i in op["inputs"] if i >= 0)
        outputs = tuple(str(i) for i in op["outputs"] if i >= 0)
        first = tensors.get(int(inputs[0])) if inputs else None
        dtype = np.dtype(first["dtype"]).name if first is not None else None
        ops.append(
            {
                "index": op["index"],
                "op_name": op["op_name"],
                "inputs": inputs,
                "outputs": outputs,
                "dtype": _DTYPES.get(dtype, dtype),
                "name": ";".join(tensors[int(o)]["name"] for o in outputs if int(o) in tensors) or op["op_name"],
            }
        )
    return ops
