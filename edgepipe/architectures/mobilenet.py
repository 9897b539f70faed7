"""MobileNet V1 and V2 from Keras Applications."""

from __future__ import annotations

from edgepipe.architectures.base import (
    KERAS_APPLICATIONS_TABLE,
    TF_MINUS1_1,
    Architecture,
    Reference,
    register_architecture,
)


def _mobilenet_v1(input_shape, alpha, weights):
    import keras

    return keras.applications.MobileNet(
        input_shape=input_shape, alpha=alpha, include_top=False, weights=weights, pooling=None
    )


def _mobilenet_v2(input_shape, alpha, weights):
    import keras

    return keras.applications.MobileNetV2(
        input_shape=input_shape, alpha=alpha, include_top=False, weights=weights, pooling=None
    )


register_architecture(
    Architecture(
        name="mobilenet_v1",
        keras_name="MobileNet",
        family="MobileNet",
        paper="Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications, 2017",
        backbone=_mobilenet_v1,
        preprocessing=TF_MINUS1_1,
        default_input_size=224,
        min_input_size=32,
        alphas=(0.25, 0.5, 0.75, 1.0),
        default_alpha=1.0,
        imagenet_alphas=(0.25, 0.5, 0.75, 1.0),
        imagenet_sizes=(128, 160, 192, 224),
        reference=Reference(top1=70.4, top5=89.5, size_mb=16, params=4_300_000, depth=55, source=KERAS_APPLICATIONS_TABLE),
    ),
    aliases=("mobilenet",),
)

register_architecture(
    Architecture(
        name="mobilenet_v2",
        keras_name="MobileNetV2",
        family="MobileNet",
        paper="Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018",
        backbone=_mobilenet_v2,
        preprocessing=TF_MINUS1_1,
        default_input_size=224,
        min_input_size=32,
        alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        default_alpha=1.0,
        imagenet_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        imagenet_sizes=(96, 128, 160, 192, 224),
        reference=Reference(top1=71.3, top5=90.1, size_mb=14, params=3_500_000, depth=105, source=KERAS_APPLICATIONS_TABLE),
    ),
)
