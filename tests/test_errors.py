"""The one-line reason edgepipe records or shows for an exception."""

import keras
import pytest

from edgepipe.errors import EdgepipeError, error_line, first_line
from edgepipe.quantization import qat


@pytest.mark.parametrize("message", ["", "   ", "\n\n", " \n\t\n "])
def test_an_empty_or_blank_message_gives_the_type_name(message):
    assert first_line(ValueError(message)) == "ValueError"
    assert error_line(ValueError(message)) == "ValueError"


def test_the_first_non_empty_line_is_kept_and_cut():
    exc = RuntimeError("\n  \n  first thing\nsecond thing")
    assert first_line(exc) == "first thing"
    assert error_line(exc) == "RuntimeError: first thing"
    assert first_line(RuntimeError("x" * 500), 10) == "x" * 10


def test_a_keras_failure_with_an_empty_message_is_reported_not_an_index_error():
    """A clone that Keras refuses without saying why still gives a one-line error with a reason."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))

    def refuse(layer):
        raise ValueError("")

    with pytest.raises(EdgepipeError, match="cannot copy: ValueError$"):
        qat._clone(model, refuse, None, "cannot copy")
