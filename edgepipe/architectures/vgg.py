"""VGG configurations A, A-LRN, B, C, D, E as in Simonyan and Zisserman (ICLR 2015), Table 1."""

from __future__ import annotations

from edgepipe.architectures.base import CAFFE_BGR, Architecture, Reference, register_architecture
from edgepipe.architectures.paper_common import load_weights_file

VGG_PAPER = "Simonyan and Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, ICLR 2015"

# Per block: convolutions as (filters, kernel); "LRN" marks A-LRN's normalization after the first layer.
_B1, _B2 = [(64, 3)], [(128, 3)]
CONFIGS: dict[str, list[list]] = {
    "A": [_B1, _B2, [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2],
    "A-LRN": [[(64, 3), "LRN"], _B2, [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2],
    "B": [_B1 * 2, _B2 * 2, [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2],
    "C": [
        _B1 * 2,
        _B2 * 2,
        [(256, 3), (256, 3), (256, 1)],
        [(512, 3), (512, 3), (512, 1)],
        [(512, 3), (512, 3), (512, 1)],
    ],
    "D": [_B1 * 2, _B2 * 2, [(256, 3)] * 3, [(512, 3)] * 3, [(512, 3)] * 3],
    "E": [_B1 * 2, _B2 * 2, [(256, 3)] * 4, [(512, 3)] * 4, [(512, 3)] * 4],
}
# Table 2 of the paper (millions of parameters) and Table 3 single-scale top-1/top-5 errors (training scale S=256, test scale Q=256).
PAPER_PARAMS_M = {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}
PAPER_ERRORS = {
    "A": (29.6, 10.4),
    "A-LRN": (29.7, 10.5),
    "B": (28.7, 9.9),
    "C": (28.1, 9.4),
    "D": (27.0, 8.8),
    "E": (27.3, 9.0),
}
DEPTHS = {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19}


def vgg_builder(config: str):
    def build(input_shape, alpha, weights, include_top: bool, classes: int):
        import keras
        from keras import layers

        from edgepipe.architectures.layers import LocalResponseNormalization

        inputs = keras.Input(input_shape)
        x = inputs
        for b, block in enumerate(CONFIGS[config], start=1):
            for i, item in enumerate(block, start=1):
                if item == "LRN":
                    x = LocalResponseNormalization(name=f"block{b}_lrn")(x)
                    continue
                filters, kernel = item
                x = layers.Conv2D(filters, kernel, padding="same", activation="relu", name=f"block{b}_conv{i}")(x)
            x = layers.MaxPooling2D(2, 2, name=f"block{b}_pool")(x)
        if include_top:
            x = layers.Flatten(name="flatten")(x)
            for i in (1, 2):
                x = layers.Dense(4096, activation="relu", name=f"fc{i}")(x)
                x = layers.Dropout(0.5, name=f"dropout{i}")(x)
            x = layers.Dense(classes, activation="softmax", name="predictions")(x)
        name = "vgg_" + config.lower().replace("-", "_")
        return load_weights_file(keras.Model(inputs, x, name=name), weights)

    return build


for _config in CONFIGS:
    _top1_err, _top5_err = PAPER_ERRORS[_config]
    register_architecture(
        Architecture(
            name="vgg_" + _config.lower().replace("-", "_"),
            family="VGG (paper configurations)",
            paper=VGG_PAPER,
            build=vgg_builder(_config),
            preprocessing=CAFFE_BGR,
            default_input_size=224,
            min_input_size=32,
            flatten_top=True,
            reference=Reference(
                top1=round(100 - _top1_err, 1),
                top5=round(100 - _top5_err, 1),
                params=PAPER_PARAMS_M[_config] * 1_000_000,
                params_precision=1_000_000,
                depth=DEPTHS[_config],
                source="Simonyan and Zisserman 2015: parameters Table 2 (millions), single-scale errors Table 3",
            ),
        ),
        aliases=("vgg-" + _config.lower(),),
    )
