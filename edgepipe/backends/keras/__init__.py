"""Keras backend: the trained ``.keras`` model itself, the FP32 reference every artifact is compared with,
run through a traced ``tf.function`` on the CPU or (device cuda) the first GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends.base import Backend
from edgepipe.backends.runner import InputSpec, Runner
from edgepipe.errors import MissingDependencyError

KERAS = Backend("keras", packages=("tensorflow", "keras"), description="TensorFlow/Keras (the FP32 reference)")
KERAS.device("cpu", "the host CPU")
KERAS.device("cuda", "an NVIDIA GPU through CUDA")


def _available() -> str | None:
    try:
        import keras  # noqa: F401
    except ImportError:
        return "package 'tensorflow' is not installed (pip install edgepipe)"
    return None


def _read_info(path: Path) -> dict[str, Any]:
    # a .keras file is the float model itself; its labels live in the run's labels.txt
    return {"format": "keras-fp32", "precision": "fp32"}


KERAS.container(
    "keras", suffixes=(".keras",), default_engine="tensorflow", read_info=_read_info, description="Keras 3 model file"
)


@KERAS.format(
    "keras-fp32",
    container="keras",
    precision="fp32",
    reference=True,
    keras_only="the source is not a Keras model",
    description="the Keras model (the FP32 reference)",
)
def export_keras(ctx, path: Path) -> dict[str, Any]:
    from edgepipe.fileio import atomic_path

    with atomic_path(path, suffix=".keras") as tmp:
        ctx.model.save(tmp)
    return {}


@KERAS.engine(
    "tensorflow",
    reads=("keras",),
    devices=("cpu", "cuda"),
    available=_available,
    description="TensorFlow/Keras, traced tf.function",
    tunable_threads=False,
)
class KerasRunner(Runner):
    """The Keras model through a traced tf.function, placed on the CPU or (device cuda) the first GPU."""

    def _activate(self) -> None:
        import tensorflow as tf

        if self.device == "cuda" and not tf.config.list_physical_devices("GPU"):
            raise MissingDependencyError(
                "TensorFlow sees no GPU here", "Use a CUDA build of TensorFlow on a GPU machine."
            )
        self._tf_device = "/GPU:0" if self.device == "cuda" else "/CPU:0"

        from edgepipe.threads import configure_tensorflow_threads

        self.threads_in_force = configure_tensorflow_threads(self.threads)
        import keras

        from edgepipe.architectures.loading import register_custom_layers

        register_custom_layers()
        with tf.device(self._tf_device):
            self.model = keras.models.load_model(self.path, compile=False)

        def call(x):
            with tf.device(self._tf_device):
                return self.model(x, training=False)

        self._tf_fn = tf.function(call, reduce_retracing=True)

    def _deactivate(self) -> None:
        del self.model, self._tf_fn

    def settings_record(self) -> dict[str, Any]:
        # TensorFlow fixes its thread pools once per process: record what is really in force
        return {"threads": getattr(self, "threads_in_force", self.threads), "inter_op_threads": 1}

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
