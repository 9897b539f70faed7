"""TensorRT runner for ``.engine`` files: pinned host buffers, one CUDA stream, CUDA-event timing."""

from __future__ import annotations

import numpy as np

from edgepipe.backends.runner import InputSpec, Runner
from edgepipe.backends.tensorrt.backend import TENSORRT, read_sidecar, tensorrt_unavailable
from edgepipe.backends.tensorrt.engine_info import check_engine_compatible, engine_facts
from edgepipe.gpu import check, cudart

TENSORRT.device("cuda", "an NVIDIA GPU through CUDA")


@TENSORRT.engine(
    "tensorrt",
    reads=("tensorrt",),
    devices=("cuda",),
    available=tensorrt_unavailable,
    description="TensorRT runtime: pinned buffers, one CUDA stream, CUDA-event timing",
)
class TensorRTRunner(Runner):
    """Refuses engines built for another GPU or TensorRT version (from the sidecar JSON)."""

    def _activate(self) -> None:
        import tensorrt as trt

        check_engine_compatible(read_sidecar(self.path), engine_facts())
        self.rt = cudart()
        self.trt_engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(self.path.read_bytes())
        self.context = self.trt_engine.create_execution_context()
        self.stream = check(self.rt.cudaStreamCreate())
        names = [self.trt_engine.get_tensor_name(i) for i in range(self.trt_engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.trt_engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.trt_engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._buffers: dict = {}
        self._batch = 0
        self.last_copy_ms = self.last_compute_ms = None
        self._events = [check(self.rt.cudaEventCreate()) for _ in range(4)]

    def _deactivate(self) -> None:
        self._free()
        for event in self._events:
            self.rt.cudaEventDestroy(event)
        self.rt.cudaStreamDestroy(self.stream)
        del self.context, self.trt_engine

    def _free(self) -> None:
        for host, device, _ in self._buffers.values():
            self.rt.cudaFreeHost(host)
            self.rt.cudaFree(device)
        self._buffers = {}

    def prepare(self, batch_size: int) -> None:
        """Pinned host and device buffers for ``batch_size`` images (reallocated only when it changes)."""
        if batch_size == self._batch:
            return
        self._free()
        shape = (batch_size, *tuple(self.trt_engine.get_tensor_shape(self.input_name))[1:])
        self.context.set_input_shape(self.input_name, shape)
        for name in (self.input_name, self.output_name):
            dims = tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(dims)) * 4
            host = check(self.rt.cudaMallocHost(nbytes))
            device = check(self.rt.cudaMalloc(nbytes))
            array = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_float * int(np.prod(dims))).from_address(int(host)))
            self._buffers[name] = (host, device, array.reshape(dims))
            self.context.set_tensor_address(name, int(device))
        self._batch = batch_size

    def input_spec(self) -> InputSpec:
        shape = tuple(int(d) for d in self.trt_engine.get_tensor_shape(self.input_name))
        return InputSpec(self.input_name, tuple(None if d < 0 else d for d in shape), "float32")

    def versions(self) -> dict[str, str]:
        import tensorrt as trt

        return {"tensorrt": trt.__version__}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        rt = self.rt
        self.prepare(len(batch))
        h_in, d_in, a_in = self._buffers[self.input_name]
        h_out, d_out, a_out = self._buffers[self.output_name]
        a_in[...] = batch
        start, copied_in, computed, done = self._events
        check(rt.cudaEventRecord(start, self.stream))
        check(rt.cudaMemcpyAsync(d_in, h_in, a_in.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        check(rt.cudaEventRecord(copied_in, self.stream))
        self.context.execute_async_v3(int(self.stream))
        check(rt.cudaEventRecord(computed, self.stream))
        check(rt.cudaMemcpyAsync(h_out, d_out, a_out.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        check(rt.cudaEventRecord(done, self.stream))
        check(rt.cudaStreamSynchronize(self.stream))
        copy_in = check(rt.cudaEventElapsedTime(start, copied_in))
        self.last_compute_ms = check(rt.cudaEventElapsedTime(copied_in, computed))
        self.last_copy_ms = copy_in + check(rt.cudaEventElapsedTime(computed, done))
        return a_out.copy()

    def profile(self, batch: np.ndarray, calls: int):
        """TensorRT's IProfiler on a second execution context (the timed one has none)."""
        from edgepipe.backends.tensorrt.profile import profile_context

        return profile_context(self, np.ascontiguousarray(batch, dtype=np.float32), calls)

    def invoke_only(self):
        return lambda: (self.context.execute_async_v3(int(self.stream)), self.rt.cudaStreamSynchronize(self.stream))
