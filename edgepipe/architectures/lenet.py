"""LeNet-5 (LeCun et al., Gradient-Based Learning Applied to Document Recognition, Proc. IEEE 1998)."""

from __future__ import annotations

from edgepipe.architectures.base import UNIT_RANGE, Architecture, Reference, register_architecture
from edgepipe.architectures.paper_common import load_weights_file

LENET_PAPER = "LeCun et al., Gradient-Based Learning Applied to Document Recognition, Proc. IEEE 1998"


def build_lenet5(input_shape, alpha, weights, include_top: bool, classes: int):
    """C1 6@5x5 ('same' on 28x28), S2 avg-pool, C3 16@5x5, S4 avg-pool, C5 120@5x5, F6 84, softmax; tanh throughout.

    C3 is fully connected to S2's maps (the paper's sparse connection table is
    a hardware-era economy); S2/S4 are plain average pooling. With 10 classes
    on 28x28x1 that is 61,706 parameters.
    """
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(6, 5, padding="same", activation="tanh", name="c1")(inputs)
    x = layers.AveragePooling2D(2, name="s2")(x)
    x = layers.Conv2D(16, 5, activation="tanh", name="c3")(x)
    x = layers.AveragePooling2D(2, name="s4")(x)
    x = layers.Conv2D(120, 5, activation="tanh", name="c5")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(84, activation="tanh", name="f6")(x)
        x = layers.Dense(classes, activation="softmax", name="output")(x)
    return load_weights_file(keras.Model(inputs, x, name="lenet5"), weights)


register_architecture(
    Architecture(
        name="lenet5",
        keras_name="LeNet5",
        family="LeNet",
        paper=LENET_PAPER,
        build=build_lenet5,
        preprocessing=UNIT_RANGE,
        default_input_size=28,
        min_input_size=28,
        default_channels=1,
        flatten_top=True,
        reference=Reference(params=61_706, depth=5, source="LeCun et al. 1998 (layer sizes); 10 classes, 28x28x1"),
    ),
    aliases=("lenet", "lenet-5"),
)
