"""Helpers shared by the networks built here from their papers."""

from __future__ import annotations


def load_weights_file(model, weights: str | None):
    """Load a weights file (``.weights.h5`` or Keras 2 ``.h5``) into a paper-built model; ``None`` keeps random weights."""
    if weights is None:
        return model
    if weights == "imagenet":
        raise ValueError(f"{model.name} has no ImageNet weights")  # refused earlier by check_weights_request
    model.load_weights(weights)
    return model


def imagenet_stem(inputs, filters: int):
    """The 7x7/2 convolution, batch norm, ReLU and 3x3/2 max-pool stem that ResNet and DenseNet share."""
    from keras import layers

    x = layers.Conv2D(filters, 7, strides=2, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    return layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
