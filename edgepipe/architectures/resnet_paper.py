"""ResNet built from bottleneck residual blocks (He et al., Deep Residual Learning, CVPR 2016, Table 1)."""

from __future__ import annotations

from edgepipe.architectures.base import CAFFE_BGR, Architecture, Reference, register_architecture
from edgepipe.architectures.paper_common import imagenet_stem, load_weights_file

RESNET_PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


def bottleneck_block(x, width: int, strides: int, name: str):
    """1x1 (width) -> 3x3 (width) -> 1x1 (4 x width), batch norm after each; identity shortcut,
    or a 1x1 projection ("reduce") shortcut with batch norm when the shape changes. Downsampling
    is done by the first 1x1 with stride 2 (conv3_1, conv4_1, conv5_1), as in the paper."""
    from keras import layers

    out_channels = width * EXPANSION
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = layers.Conv2D(out_channels, 1, strides=strides, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_proj_bn")(shortcut)
    y = x
    for i, (filters, kernel, stride) in enumerate(((width, 1, strides), (width, 3, 1), (out_channels, 1, 1)), start=1):
        y = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv{i}")(y)
        y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_bn{i}")(y)
        if i < 3:
            y = layers.ReLU(name=f"{name}_relu{i}")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet_builder(depth: int):
    def build(input_shape, alpha, weights, include_top: bool, classes: int):
        import keras
        from keras import layers

        inputs = keras.Input(input_shape)
        x = imagenet_stem(inputs, 64)
        for stage, (blocks, width) in enumerate(zip(STAGES[depth], WIDTHS), start=2):
            for block in range(1, blocks + 1):
                strides = 2 if block == 1 and stage > 2 else 1
                x = bottleneck_block(x, width, strides, f"conv{stage}_block{block}")
        if include_top:
            x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
            x = layers.Dense(classes, activation="softmax", name="predictions")(x)
        return load_weights_file(keras.Model(inputs, x, name=f"bottleneck_resnet{depth}"), weights)

    return build


# Top-1/top-5 accuracy from the paper's Table 3 (single model, 10-crop testing); parameters with 1000 classes.
_REFERENCE = {50: (77.15, 93.29, 25_557_032), 101: (78.25, 93.95, 44_549_160), 152: (78.57, 94.29, 60_192_808)}

for _depth, (_top1, _top5, _params) in _REFERENCE.items():
    register_architecture(
        Architecture(
            name=f"bottleneck_resnet{_depth}",
            family="ResNet (built from the paper)",
            paper=RESNET_PAPER,
            build=resnet_builder(_depth),
            preprocessing=CAFFE_BGR,
            default_input_size=224,
            min_input_size=32,
            reference=Reference(
                top1=_top1,
                top5=_top5,
                params=_params,
                params_counted="trainable",
                depth=_depth,
                source="He et al. 2016, Table 3 (10-crop validation errors); parameters of the "
                "Table 1 layout with projection shortcuts where shapes change",
            ),
        ),
    )
