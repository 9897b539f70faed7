"""GoogLeNet / Inception v1 (Szegedy et al., Going Deeper with Convolutions, CVPR 2015), laid out per Table 1."""

from __future__ import annotations

from edgepipe.architectures.base import TF_MINUS1_1, Architecture, Reference, register_architecture
from edgepipe.architectures.paper_common import load_weights_file

GOOGLENET_PAPER = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015"

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION_TABLE = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
POOL_AFTER = ("3b", "4e")
AUX_AFTER = ("4a", "4d")


def _conv(x, filters, kernel, name, strides=1):
    from keras import layers

    return layers.Conv2D(filters, kernel, strides=strides, padding="same", activation="relu", name=name)(x)


def inception_module(x, name: str):
    """Four branches: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5; 3x3 max-pool -> 1x1 projection; concatenated."""
    from keras import layers

    n1, r3, n3, r5, n5, proj = INCEPTION_TABLE[name]
    b1 = _conv(x, n1, 1, f"inception{name}_1x1")
    b2 = _conv(_conv(x, r3, 1, f"inception{name}_3x3_reduce"), n3, 3, f"inception{name}_3x3")
    b3 = _conv(_conv(x, r5, 1, f"inception{name}_5x5_reduce"), n5, 5, f"inception{name}_5x5")
    b4 = layers.MaxPooling2D(3, 1, padding="same", name=f"inception{name}_pool")(x)
    b4 = _conv(b4, proj, 1, f"inception{name}_pool_proj")
    return layers.Concatenate(name=f"inception{name}_output")([b1, b2, b3, b4])


def _aux_classifier(x, classes: int, name: str):
    """Section 5: 5x5/3 average pool, 1x1 conv 128, FC 1024, dropout 0.7, softmax classifier."""
    from keras import layers

    x = layers.AveragePooling2D(5, 3, name=f"{name}_pool")(x)
    x = _conv(x, 128, 1, f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return layers.Dense(classes, activation="softmax", name=name)(x)


def _graph(input_shape, include_top: bool, classes: int, aux: bool):
    import keras
    from keras import layers

    from edgepipe.architectures.layers import LocalResponseNormalization

    inputs = keras.Input(input_shape)
    x = _conv(inputs, 64, 7, "conv1_7x7", strides=2)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = LocalResponseNormalization(name="lrn1")(x)
    x = _conv(x, 64, 1, "conv2_3x3_reduce")
    x = _conv(x, 192, 3, "conv2_3x3")
    x = LocalResponseNormalization(name="lrn2")(x)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool2")(x)
    aux_outputs = []
    for name in INCEPTION_TABLE:
        x = inception_module(x, name)
        if aux and name in AUX_AFTER:
            aux_outputs.append(_aux_classifier(x, classes, f"aux_{name}"))
        if name in POOL_AFTER:
            x = layers.MaxPooling2D(3, 2, padding="same", name=f"pool_{name}")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.4, name="dropout")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return inputs, x, aux_outputs


def build_googlenet(input_shape, alpha, weights, include_top: bool, classes: int):
    """The inference network: no auxiliary classifiers (the paper discards them at inference time)."""
    import keras

    inputs, outputs, _ = _graph(input_shape, include_top, classes, aux=False)
    return load_weights_file(keras.Model(inputs, outputs, name="googlenet"), weights)


def build_googlenet_for_training(input_shape, classes: int):
    """(training model with outputs [main, aux_4a, aux_4d], inference model sharing its weights).

    Train the first with loss weights (1, 0.3, 0.3) as in the paper; deploy the second.
    """
    import keras

    inputs, main, aux = _graph(input_shape, True, classes, aux=True)
    training = keras.Model(inputs, [main, *aux], name="googlenet_training")
    inference = keras.Model(inputs, main, name="googlenet")
    return training, inference


register_architecture(
    Architecture(
        name="googlenet",
        keras_name="GoogLeNet",
        family="Inception",
        paper=GOOGLENET_PAPER,
        build=build_googlenet,
        preprocessing=TF_MINUS1_1,
        default_input_size=224,
        min_input_size=32,
        reference=Reference(
            top5=89.93,
            params=6_998_552,
            depth=22,
            source="Szegedy et al. 2015: parameters of the Table 1 layout counted exactly (weights and "
            "biases, no auxiliary classifiers; the table's own column rounds to about 6.8M); "
            "Table 3 (1 model, 1 crop: 10.07% top-5 error)",
        ),
    ),
    aliases=("inception_v1",),
)
