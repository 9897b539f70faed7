"""Silence engine chatter printed by native code (converters, delegates) unless --debug is on."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_output_suppressed() -> Iterator[None]:
    """Redirect the process's stdout/stderr file descriptors to a temporary file.

    TensorFlow's converters and LiteRT's delegates print from C++, which Python's
    ``sys.stdout`` cannot catch. On an exception the captured text is attached
    to it as a note, so nothing needed for diagnosis is lost.
    """
    if os.environ.get("EDGEPIPE_DEBUG"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException as exc:
            _restore(saved)
            sink.seek(0)
            tail = sink.read().decode(errors="replace").strip().splitlines()[-15:]
            if tail and hasattr(exc, "add_note"):
                exc.add_note("engine output:\n" + "\n".join(tail))
            raise
        finally:
            _restore(saved)


def _restore(saved: list[int]) -> None:
    if saved[0] < 0:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])
    saved[0] = saved[1] = -1


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with start-up chatter silenced (once per process).

    TensorFlow prints oneDNN, CUDA-stub and device-probe lines from C++ at import
    and first use; they say nothing about the run. ``--debug`` shows them.
    """
    if "tensorflow" in sys.modules and getattr(import_tensorflow_quietly, "done", False):
        return
    with native_output_suppressed():
        import tensorflow as tf

        tf.config.list_physical_devices()
    if not os.environ.get("EDGEPIPE_DEBUG"):
        tf.get_logger().setLevel("ERROR")
    import_tensorflow_quietly.done = True  # type: ignore[attr-defined]
