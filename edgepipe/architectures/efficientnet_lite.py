"""EfficientNet-Lite0..4: EfficientNet made for integer quantization (TensorFlow TPU models, 2020).

Differences from EfficientNet-B0..B4: ReLU6 instead of swish, no squeeze-and-excitation,
and a fixed stem (32 filters) and head (1280 filters) that are not width-scaled; the
first and last block groups are not depth-scaled either.
"""

from __future__ import annotations

import math

from edgepipe.architectures.base import LITE_127_128, Architecture, Reference, register_architecture
from edgepipe.architectures.paper_common import load_weights_file

LITE_SOURCE = (
    "Liu (Google), Higher accuracy on vision models with EfficientNet-Lite, TensorFlow blog 2020; "
    "tensorflow/tpu models/official/efficientnet/lite"
)

# EfficientNet-B0 blocks: kernel, repeats, filters in, filters out, expansion, stride
BLOCKS = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
# name: width, depth, resolution, dropout; reference: top-1 float, params (1000 classes)
VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2, 75.1, 4_700_000),
    "lite1": (1.0, 1.1, 240, 0.2, 76.7, 5_400_000),
    "lite2": (1.1, 1.2, 260, 0.3, 77.6, 6_100_000),
    "lite3": (1.2, 1.4, 280, 0.3, 79.8, 8_200_000),
    "lite4": (1.4, 1.8, 300, 0.3, 81.5, 13_000_000),
}
DROP_CONNECT_RATE = 0.2


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * filters:
        rounded += divisor
    return int(rounded)


def mbconv(x, filters_in, filters_out, kernel, stride, expansion, drop_rate, name):
    """Inverted residual: 1x1 expand (ReLU6), depthwise kxk (ReLU6), 1x1 project (linear); residual when shapes match."""
    from keras import layers

    y = x
    if expansion != 1:
        y = layers.Conv2D(filters_in * expansion, 1, use_bias=False, name=f"{name}_expand")(y)
        y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
        y = layers.ReLU(6.0, name=f"{name}_expand_relu6")(y)
    y = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = layers.Conv2D(filters_out, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:  # stochastic depth, training only
            y = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(y)
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def lite_builder(variant: str):
    width, depth, _, dropout, _, _ = VARIANTS[variant]

    def build(input_shape, alpha, weights, include_top: bool, classes: int):
        import keras
        from keras import layers

        inputs = keras.Input(input_shape)
        x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
        x = layers.BatchNormalization(name="stem_bn")(x)
        x = layers.ReLU(6.0, name="stem_relu6")(x)
        repeats = [r if i in (0, len(BLOCKS) - 1) else int(math.ceil(depth * r)) for i, (_, r, *_) in enumerate(BLOCKS)]
        total, index = sum(repeats), 0
        for g, ((kernel, _, f_in, f_out, expansion, stride), count) in enumerate(zip(BLOCKS, repeats), start=1):
            f_in, f_out = round_filters(f_in, width), round_filters(f_out, width)
            if g == 1:
                f_in = 32  # the fixed stem feeds the first block
            for i in range(count):
                x = mbconv(
                    x,
                    f_in if i == 0 else f_out,
                    f_out,
                    kernel,
                    stride if i == 0 else 1,
                    expansion,
                    DROP_CONNECT_RATE * index / total,
                    f"block{g}{chr(ord('a') + i)}",
                )
                index += 1
        x = layers.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
        x = layers.BatchNormalization(name="head_bn")(x)
        x = layers.ReLU(6.0, name="head_relu6")(x)
        if include_top:
            x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
            x = layers.Dropout(dropout, name="top_dropout")(x)
            x = layers.Dense(classes, activation="softmax", name="predictions")(x)
        return load_weights_file(keras.Model(inputs, x, name=f"efficientnet_{variant}"), weights)

    return build


for _variant, (_w, _d, _size, _drop, _top1, _params) in VARIANTS.items():
    register_architecture(
        Architecture(
            name=f"efficientnet_{_variant}",
            keras_name=f"EfficientNet{_variant.capitalize()}",
            family="EfficientNet-Lite",
            paper=LITE_SOURCE,
            build=lite_builder(_variant),
            preprocessing=LITE_127_128,
            default_input_size=_size,
            min_input_size=32,
            reference=Reference(
                top1=_top1,
                params=_params,
                params_precision=100_000,
                params_counted="trainable",
                source="tensorflow/tpu EfficientNet-Lite README (float top-1, parameters rounded to 0.1M)",
            ),
        ),
    )
