"""Families shipped by Keras Applications, loaded through ``keras.applications``.

Reference figures are the ImageNet validation results published in the Keras
Applications table (https://keras.io/api/applications/); parameter counts are
Keras' exact counts with the 1000-class top. MobileNetV3 figures come from the
Keras MobileNetV3 documentation (alpha 1.0, 224x224).
"""

from __future__ import annotations

from typing import Any

from edgepipe.architectures.base import (
    CAFFE_BGR,
    KERAS_APPLICATIONS_TABLE,
    RAW,
    TF_MINUS1_1,
    TORCH_IMAGENET,
    Architecture,
    Preprocessing,
    Reference,
    register_architecture,
)

KERAS_MOBILENETV3_DOCS = "Keras MobileNetV3 documentation, https://keras.io/api/applications/mobilenet/"


def keras_builder(function_name: str, has_alpha: bool = False, **fixed: Any):
    """A build function calling ``keras.applications.<function_name>``."""

    def build(input_shape, alpha: float | None, weights, include_top: bool, classes: int):
        import keras

        kwargs = dict(input_shape=input_shape, weights=weights, include_top=include_top, classes=classes, **fixed)
        if has_alpha and alpha is not None:
            kwargs["alpha"] = alpha
        return getattr(keras.applications, function_name)(**kwargs)

    build.__name__ = f"keras_{function_name}"
    return build


def _register(
    name: str,
    keras_name: str,
    family: str,
    paper: str,
    preprocessing: Preprocessing,
    size: int,
    min_size: int,
    ref: tuple,
    alphas: tuple = (),
    default_alpha: float | None = None,
    imagenet_sizes: tuple | None = None,
    strict: bool = False,
    source: str = KERAS_APPLICATIONS_TABLE,
    aliases: tuple = (),
    flatten_top: bool = False,
    **fixed: Any,
) -> None:
    size_mb, top1, top5, params, depth = ref
    register_architecture(
        Architecture(
            name=name,
            keras_name=keras_name,
            family=family,
            paper=paper,
            build=keras_builder(keras_name, has_alpha=bool(alphas), **fixed),
            preprocessing=preprocessing,
            default_input_size=size,
            min_input_size=min_size,
            alphas=alphas,
            default_alpha=default_alpha,
            imagenet_alphas=alphas,
            imagenet_sizes=imagenet_sizes or (size,),
            imagenet_size_strict=strict,
            flatten_top=flatten_top,
            reference=Reference(top1=top1, top5=top5, size_mb=size_mb, params=params, depth=depth, source=source),
        ),
        aliases=aliases,
    )


XCEPTION = "Chollet, Xception: Deep Learning with Depthwise Separable Convolutions, CVPR 2017"
VGG = "Simonyan and Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, ICLR 2015"
RESNET = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
RESNET_V2 = "He et al., Identity Mappings in Deep Residual Networks, ECCV 2016"
INCEPTION_V3 = "Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016"
INCEPTION_RESNET = "Szegedy et al., Inception-v4, Inception-ResNet and the Impact of Residual Connections, AAAI 2017"
MOBILENET_V1 = "Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications, 2017"
MOBILENET_V2 = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018"
MOBILENET_V3 = "Howard et al., Searching for MobileNetV3, ICCV 2019"
DENSENET = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017"
NASNET = "Zoph et al., Learning Transferable Architectures for Scalable Image Recognition, CVPR 2018"
EFFICIENTNET = "Tan and Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, ICML 2019"
EFFICIENTNET_V2 = "Tan and Le, EfficientNetV2: Smaller Models and Faster Training, ICML 2021"

_register("xception", "Xception", "Xception", XCEPTION, TF_MINUS1_1, 299, 71, (88, 79.0, 94.5, 22_910_480, 81))
_register("vgg16", "VGG16", "VGG", VGG, CAFFE_BGR, 224, 32, (528, 71.3, 90.1, 138_357_544, 16), flatten_top=True)
_register("vgg19", "VGG19", "VGG", VGG, CAFFE_BGR, 224, 32, (549, 71.3, 90.0, 143_667_240, 19), flatten_top=True)
_register("resnet50", "ResNet50", "ResNet", RESNET, CAFFE_BGR, 224, 32, (98, 74.9, 92.1, 25_636_712, 107))
_register("resnet101", "ResNet101", "ResNet", RESNET, CAFFE_BGR, 224, 32, (171, 76.4, 92.8, 44_707_176, 209))
_register("resnet152", "ResNet152", "ResNet", RESNET, CAFFE_BGR, 224, 32, (232, 76.6, 93.1, 60_419_944, 311))
_register("resnet50_v2", "ResNet50V2", "ResNet", RESNET_V2, TF_MINUS1_1, 224, 32, (98, 76.0, 93.0, 25_613_800, 103))
_register("resnet101_v2", "ResNet101V2", "ResNet", RESNET_V2, TF_MINUS1_1, 224, 32, (171, 77.2, 93.8, 44_675_560, 205))
_register("resnet152_v2", "ResNet152V2", "ResNet", RESNET_V2, TF_MINUS1_1, 224, 32, (232, 78.0, 94.2, 60_380_648, 307))
_register(
    "inception_v3", "InceptionV3", "Inception", INCEPTION_V3, TF_MINUS1_1, 299, 75, (92, 77.9, 93.7, 23_851_784, 189)
)
_register(
    "inception_resnet_v2",
    "InceptionResNetV2",
    "Inception",
    INCEPTION_RESNET,
    TF_MINUS1_1,
    299,
    75,
    (215, 80.3, 95.3, 55_873_736, 449),
)
_register(
    "mobilenet_v1",
    "MobileNet",
    "MobileNet",
    MOBILENET_V1,
    TF_MINUS1_1,
    224,
    32,
    (16, 70.4, 89.5, 4_253_864, 55),
    alphas=(0.25, 0.5, 0.75, 1.0),
    default_alpha=1.0,
    imagenet_sizes=(128, 160, 192, 224),
    aliases=("mobilenet",),
)
_register(
    "mobilenet_v2",
    "MobileNetV2",
    "MobileNet",
    MOBILENET_V2,
    TF_MINUS1_1,
    224,
    32,
    (14, 71.3, 90.1, 3_538_984, 105),
    alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    default_alpha=1.0,
    imagenet_sizes=(96, 128, 160, 192, 224),
)
_register(
    "mobilenet_v3_small",
    "MobileNetV3Small",
    "MobileNet",
    MOBILENET_V3,
    RAW,
    224,
    32,
    (None, 68.1, None, 2_554_968, None),
    alphas=(0.75, 1.0),
    default_alpha=1.0,
    source=KERAS_MOBILENETV3_DOCS,
)
_register(
    "mobilenet_v3_large",
    "MobileNetV3Large",
    "MobileNet",
    MOBILENET_V3,
    RAW,
    224,
    32,
    (None, 75.6, None, 5_507_432, None),
    alphas=(0.75, 1.0),
    default_alpha=1.0,
    source=KERAS_MOBILENETV3_DOCS,
)
_register("densenet121", "DenseNet121", "DenseNet", DENSENET, TORCH_IMAGENET, 224, 32, (33, 75.0, 92.3, 8_062_504, 242))
_register(
    "densenet169", "DenseNet169", "DenseNet", DENSENET, TORCH_IMAGENET, 224, 32, (57, 76.2, 93.2, 14_307_880, 338)
)
_register(
    "densenet201", "DenseNet201", "DenseNet", DENSENET, TORCH_IMAGENET, 224, 32, (80, 77.3, 93.6, 20_242_984, 402)
)
_register(
    "nasnet_mobile",
    "NASNetMobile",
    "NASNet",
    NASNET,
    TF_MINUS1_1,
    224,
    32,
    (23, 74.4, 91.9, 5_326_716, 389),
    strict=True,
)
_register(
    "nasnet_large",
    "NASNetLarge",
    "NASNet",
    NASNET,
    TF_MINUS1_1,
    331,
    32,
    (343, 82.5, 96.0, 88_949_818, 533),
    strict=True,
)

_EFFICIENTNET = [  # name suffix, input size, (size MB, top-1, top-5, params, depth)
    ("b0", 224, (29, 77.1, 93.3, 5_330_571, 132)),
    ("b1", 240, (31, 79.1, 94.4, 7_856_239, 186)),
    ("b2", 260, (36, 80.1, 94.9, 9_177_569, 186)),
    ("b3", 300, (48, 81.6, 95.7, 12_320_535, 210)),
    ("b4", 380, (75, 82.9, 96.4, 19_466_823, 258)),
    ("b5", 456, (118, 83.6, 96.7, 30_562_527, 312)),
    ("b6", 528, (166, 84.0, 96.8, 43_265_143, 360)),
    ("b7", 600, (256, 84.3, 97.0, 66_658_687, 438)),
]
for _suffix, _size, _ref in _EFFICIENTNET:
    _register(
        f"efficientnet_{_suffix}", f"EfficientNet{_suffix.upper()}", "EfficientNet", EFFICIENTNET, RAW, _size, 32, _ref
    )

_EFFICIENTNET_V2 = [
    ("b0", 224, (29, 78.7, 94.3, 7_200_312, None)),
    ("b1", 240, (34, 79.8, 95.0, 8_212_124, None)),
    ("b2", 260, (42, 80.5, 95.1, 10_178_374, None)),
    ("b3", 300, (59, 82.0, 95.8, 14_467_622, None)),
    ("s", 384, (88, 83.9, 96.7, 21_612_360, None)),
]
for _suffix, _size, _ref in _EFFICIENTNET_V2:
    _register(
        f"efficientnet_v2_{_suffix}",
        f"EfficientNetV2{_suffix.upper()}",
        "EfficientNetV2",
        EFFICIENTNET_V2,
        RAW,
        _size,
        32,
        _ref,
    )
