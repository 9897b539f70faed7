"""DenseNet-BC built from dense blocks and transition layers (Huang et al., CVPR 2017, Table 1)."""

from __future__ import annotations

from edgepipe.architectures.base import TORCH_IMAGENET, Architecture, Reference, register_architecture
from edgepipe.architectures.paper_common import imagenet_stem, load_weights_file

DENSENET_PAPER = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017"
BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}
GROWTH_RATE = 32
COMPRESSION = 0.5
BOTTLENECK_WIDTH = 4  # the 1x1 "bottleneck" produces 4k maps


def dense_layer(x, growth_rate: int, name: str):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k), concatenated onto its input."""
    from keras import layers

    y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_bn1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(BOTTLENECK_WIDTH * growth_rate, 1, use_bias=False, name=f"{name}_conv1")(y)
    y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = layers.Conv2D(growth_rate, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def transition_layer(x, compression: float, name: str):
    """Batch norm, ReLU, 1x1 convolution (compressing channels by ``compression``), 2x2 average pooling."""
    from keras import layers

    x = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    x = layers.Conv2D(int(x.shape[-1] * compression), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, 2, name=f"{name}_pool")(x)


def densenet_builder(depth: int, growth_rate: int = GROWTH_RATE, compression: float = COMPRESSION):
    def build(input_shape, alpha, weights, include_top: bool, classes: int):
        import keras
        from keras import layers

        inputs = keras.Input(input_shape)
        x = imagenet_stem(inputs, 2 * growth_rate)
        blocks = BLOCKS[depth]
        for b, count in enumerate(blocks, start=1):
            for i in range(1, count + 1):
                x = dense_layer(x, growth_rate, f"block{b}_layer{i}")
            if b < len(blocks):
                x = transition_layer(x, compression, f"transition{b}")
        x = layers.BatchNormalization(epsilon=1.001e-5, name="final_bn")(x)
        x = layers.ReLU(name="final_relu")(x)
        if include_top:
            x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
            x = layers.Dense(classes, activation="softmax", name="predictions")(x)
        return load_weights_file(keras.Model(inputs, x, name=f"densenet_bc{depth}"), weights)

    return build


# Parameter counts of the Table 1 layouts with 1000 classes; errors from the authors' released models (single crop).
_REFERENCE = {121: (74.98, 92.29, 7_978_856), 169: (76.20, 93.15, 14_149_480), 201: (77.42, 93.66, 20_013_928)}

for _depth, (_top1, _top5, _params) in _REFERENCE.items():
    register_architecture(
        Architecture(
            name=f"densenet_bc{_depth}",
            family="DenseNet (built from the paper)",
            paper=DENSENET_PAPER,
            build=densenet_builder(_depth),
            preprocessing=TORCH_IMAGENET,
            default_input_size=224,
            min_input_size=32,
            reference=Reference(
                top1=_top1,
                top5=_top5,
                params=_params,
                params_counted="trainable",
                depth=_depth,
                source="Huang et al. 2017, Table 1 layout (k=32, BC); accuracy of the authors' "
                "released ImageNet models, single 224x224 crop",
            ),
        ),
    )
