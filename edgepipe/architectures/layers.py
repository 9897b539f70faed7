"""Layers the paper-built networks need that Keras does not ship, registered for safe loading."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="edgepipe")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels (Krizhevsky et al. 2012, section 3.3).

    ``b = a / (k + alpha * sum(a^2 over n neighbouring channels)) ** beta`` with the
    paper's k=2, n=5, alpha=1e-4, beta=0.75. Note TensorFlow's ``alpha`` is per
    element, so the paper's alpha is divided by n.
    """

    def __init__(self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, inputs):
        import tensorflow as tf

        size = 2 * self.depth_radius + 1
        return tf.nn.local_response_normalization(
            inputs, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha / size, beta=self.beta
        )

    def get_config(self):
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


@keras.saving.register_keras_serializable(package="edgepipe")
class ChannelAffine(keras.layers.Layer):
    """``x[..., ::-1] * scale + offset`` (channel order reversed first when asked): RGB raw pixels to BGR-mean-free input."""

    def __init__(self, scale, offset, reverse_channels: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset, self.reverse_channels = list(scale), list(offset), bool(reverse_channels)

    def call(self, inputs):
        x = ops.flip(inputs, axis=-1) if self.reverse_channels else inputs
        return x * ops.convert_to_tensor(self.scale, dtype=x.dtype) + ops.convert_to_tensor(self.offset, dtype=x.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "offset": self.offset,
            "reverse_channels": self.reverse_channels,
        }


@keras.saving.register_keras_serializable(package="edgepipe")
class ChannelSplit(keras.layers.Layer):
    """Split the channel axis into ``groups`` equal parts (a list of tensors).

    Used to build grouped convolutions from ordinary ones (split, one Conv2D per
    group, concatenate), which every converter and runtime understands.
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, inputs):
        return ops.split(inputs, self.groups, axis=-1)

    def compute_output_shape(self, input_shape):
        part = None if input_shape[-1] is None else input_shape[-1] // self.groups
        return [(*input_shape[:-1], part)] * self.groups

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


def grouped_conv2d(x, filters: int, kernel, groups: int, name: str, **conv_kwargs):
    """A grouped convolution as split -> one Conv2D per group -> concatenate (same parameters as ``groups=``)."""
    if groups == 1:
        return keras.layers.Conv2D(filters, kernel, name=name, **conv_kwargs)(x)
    parts = ChannelSplit(groups, name=f"{name}_split")(x)
    outs = [
        keras.layers.Conv2D(filters // groups, kernel, name=f"{name}_g{i + 1}", **conv_kwargs)(part)
        for i, part in enumerate(parts)
    ]
    return keras.layers.Concatenate(name=name)(outs)
