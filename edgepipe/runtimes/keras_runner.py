"""TensorFlow/Keras runner for ``.keras`` files (the FP32 reference)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from edgepipe.runtimes.base import InputSpec, Runner, register_runtime


def _available() -> Optional[str]:
    try:
        import keras  # noqa: F401
    except ImportError:
        return "package 'tensorflow' is not installed (pip install edgepipe)"
    return None


@register_runtime("tensorflow", suffixes=(".keras",), available=_available)
class KerasRunner(Runner):
    """The Keras model through a traced tf.function, placed on the CPU or (device cuda) the first GPU."""

    devices = ("cpu", "cuda")

    def _activate(self) -> None:
        import tensorflow as tf

        if self.device == "cuda" and not tf.config.list_physical_devices("GPU"):
            from edgepipe.errors import MissingDependencyError

            raise MissingDependencyError("TensorFlow sees no GPU here", "Use a CUDA build of TensorFlow on a GPU machine.")
        self._tf_device = "/GPU:0" if self.device == "cuda" else "/CPU:0"

        from edgepipe.threads import configure_tensorflow_threads

        configure_tensorflow_threads(self.threads)
        import keras

        with tf.device(self._tf_device):
            self.model = keras.models.load_model(self.path, compile=False)

        def call(x):
            with tf.device(self._tf_device):
                return self.model(x, training=False)

        self._tf_fn = tf.function(call, reduce_retracing=True)

    def _deactivate(self) -> None:
        del self.model, self._tf_fn

    def input_spec(self) -> InputSpec:
        shape = tuple(self.model.inputs[0].shape)
        return InputSpec(self.model.inputs[0].name, shape, "float32")

    def versions(self) -> dict[str, str]:
        import keras
        import tensorflow as tf

        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._tf_fn(batch), dtype=np.float32)

    def invoke_only(self):
        import tensorflow as tf

        staged = tf.constant(self._staged)
        return lambda: self._tf_fn(staged).numpy()

    def prepare(self, batch_size: int) -> None:
        shape = tuple(d or batch_size for d in self.input_spec().shape)
        self._staged = np.zeros((batch_size, *shape[1:]), np.float32)
