"""AlexNet (Krizhevsky, Sutskever and Hinton, ImageNet Classification with Deep CNNs, NeurIPS 2012)."""

from __future__ import annotations

from edgepipe.architectures.base import TF_MINUS1_1, Architecture, Reference, register_architecture
from edgepipe.architectures.paper_common import load_weights_file

ALEXNET_PAPER = "Krizhevsky et al., ImageNet Classification with Deep Convolutional Neural Networks, NeurIPS 2012"
WEIGHT_DECAY = 5e-4


def build_alexnet(input_shape, alpha, weights, include_top: bool, classes: int):
    """96@11x11/4, LRN, 3x3/2 max-pool; 256@5x5, LRN, pool; 384, 384, 256 @3x3; pool; FC 4096 x2 with dropout 0.5.

    Convolutions 2, 4 and 5 are split in two groups, as the paper's two-GPU
    layout has them (each half sees only its own GPU's maps), built as
    split/convolve/concatenate so every converter handles them: 60,965,224
    parameters with 1000 classes at 224x224x3. ReLU everywhere, L2 5e-4.
    """
    import keras
    from keras import layers, regularizers

    from edgepipe.architectures.layers import LocalResponseNormalization, grouped_conv2d

    l2 = regularizers.L2(WEIGHT_DECAY)

    def conv(x, filters, kernel, name, strides=1, groups=1):
        return grouped_conv2d(
            x, filters, kernel, groups, name, strides=strides, padding="same", activation="relu", kernel_regularizer=l2
        )

    inputs = keras.Input(input_shape)
    x = conv(inputs, 96, 11, "conv1", strides=4)
    x = LocalResponseNormalization(name="lrn1")(x)
    x = layers.MaxPooling2D(3, 2, name="pool1")(x)
    x = conv(x, 256, 5, "conv2", groups=2)
    x = LocalResponseNormalization(name="lrn2")(x)
    x = layers.MaxPooling2D(3, 2, name="pool2")(x)
    x = conv(x, 384, 3, "conv3")
    x = conv(x, 384, 3, "conv4", groups=2)
    x = conv(x, 256, 3, "conv5", groups=2)
    x = layers.MaxPooling2D(3, 2, name="pool5")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        for i in (6, 7):
            x = layers.Dense(4096, activation="relu", kernel_regularizer=l2, name=f"fc{i}")(x)
            x = layers.Dropout(0.5, name=f"dropout{i}")(x)
        x = layers.Dense(classes, activation="softmax", kernel_regularizer=l2, name="fc8")(x)
    return load_weights_file(keras.Model(inputs, x, name="alexnet"), weights)


register_architecture(
    Architecture(
        name="alexnet",
        keras_name="AlexNet",
        family="AlexNet",
        paper=ALEXNET_PAPER,
        build=build_alexnet,
        preprocessing=TF_MINUS1_1,
        default_input_size=224,
        min_input_size=64,
        flatten_top=True,
        reference=Reference(
            top1=59.3,
            top5=81.8,
            params=60_965_224,
            depth=8,
            source="Krizhevsky et al. 2012, Table 2: one CNN on ILSVRC-2012 validation "
            "(40.7% top-1 and 18.2% top-5 error)",
        ),
    ),
)
