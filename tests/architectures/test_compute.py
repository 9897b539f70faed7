"""MAC counts checked against published figures."""

import keras
import pytest

from edgepipe.architectures import get_architecture
from edgepipe.architectures.compute import count


def test_5x5_convolution_cost_and_1x1_reduce():
    inputs = keras.Input((32, 32, 200))
    direct = keras.Model(inputs, keras.layers.Conv2D(32, 5, padding="same")(inputs))
    assert count(direct).macs == 163_840_000  # about 163 million multiplications
    reduced = keras.Model(inputs, keras.layers.Conv2D(32, 5, padding="same")(keras.layers.Conv2D(16, 1)(inputs)))
    assert count(reduced).macs == 16_384_000  # about 16 million with a 1x1 reduce to 16 channels first


@pytest.mark.parametrize(
    "name, expected, tolerance",
    [
        ("mobilenet_v2", 300e6, 0.02),  # Keras MobileNetV2 docs: 300M MACs at 1.0 / 224
        ("mobilenet_v3_large", 217e6, 0.02),  # Keras MobileNetV3 docs: 217M
        ("resnet50", 3.9e9, 0.05),  # He et al.: 3.8 x 10^9 FLOPs (multiply-adds)
        ("googlenet", 1.5e9, 0.06),  # Szegedy et al.: about 1.5 billion multiply-adds
    ],
)
def test_published_mac_counts(name, expected, tolerance):
    arch = get_architecture(name)
    model = arch.build(
        input_shape=(224, 224, 3), alpha=arch.default_alpha, weights=None, include_top=True, classes=1000
    )
    assert abs(count(model).macs - expected) / expected < tolerance


def test_depthwise_grouped_and_nested_layers_are_counted():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="same")(inputs)  # 8*8*4*9 = 2304
    x = keras.layers.Conv2D(8, 3, padding="same", groups=2)(x)  # 8*8*8*9*2 = 9216
    inner = keras.Model(inputs, x)
    outer_in = keras.Input((8, 8, 4))
    y = keras.layers.GlobalAveragePooling2D()(inner(outer_in))
    outer = keras.Model(outer_in, keras.layers.Dense(3)(y))  # 8*3 = 24
    report = count(outer)
    assert report.macs == 2304 + 9216 + 24
    assert report.params == outer.count_params()
    assert any("/" in layer.name for layer in report.layers)
