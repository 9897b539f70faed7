"""Thread settings for TensorFlow, which can be set only before its first op runs."""

from __future__ import annotations

_configured: int | None = None


def configure_tensorflow_threads(threads: int) -> int:
    """Set TensorFlow's intra-op threads (once per process); returns the value in force.

    TensorFlow fixes its thread pools at the first operation. A later request
    for a different count cannot be honoured, so the value actually in force is
    returned and recorded with results instead of the one asked for.
    """
    global _configured
    import tensorflow as tf

    if _configured is None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            _configured = threads
        except RuntimeError:  # already initialised by earlier TF work in this process
            _configured = tf.config.threading.get_intra_op_parallelism_threads() or 0
    return _configured
