"""Progress: a ticker on a terminal, plain lines in logs."""

import io
import time

from edgepipe.progress import step


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_sees_the_seconds_tick_and_the_line_cleared():
    stream, lines = Terminal(), []
    with step(lines.append, "  onnx-int8: exporting", stream=stream, interval_s=0.02):
        time.sleep(0.15)
    text = stream.getvalue()
    assert text.count("\r  onnx-int8: exporting ... ") >= 2 and text.endswith("\r")
    assert lines == []  # nothing left in the log of a terminal session


def test_a_log_gets_one_plain_line_per_step():
    stream, lines = io.StringIO(), []
    with step(lines.append, "  tflite-int8: exporting", stream=stream):
        pass
    assert lines == ["  tflite-int8: exporting ..."] and stream.getvalue() == ""
