"""Every registry entry: builds small, runs, and has the parameter count its source gives."""

import numpy as np
import pytest

from edgepipe.architectures import ARCHITECTURES, build_classifier, get_architecture
from edgepipe.architectures.facts import build_reference, measure, reference_classes

NAMES = ARCHITECTURES.names()


def test_registry_covers_the_families():
    for name in (
        "xception",
        "vgg16",
        "vgg19",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet50_v2",
        "resnet101_v2",
        "resnet152_v2",
        "inception_v3",
        "inception_resnet_v2",
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "densenet121",
        "densenet169",
        "densenet201",
        "nasnet_mobile",
        "nasnet_large",
        *[f"efficientnet_b{i}" for i in range(8)],
        *[f"efficientnet_v2_{s}" for s in ("b0", "b1", "b2", "b3", "s")],
        "lenet5",
        "alexnet",
        *[f"vgg_{c}" for c in ("a", "a_lrn", "b", "c", "d", "e")],
        "googlenet",
        "bottleneck_resnet50",
        "densenet_bc121",
        *[f"efficientnet_lite{i}" for i in range(5)],
    ):
        assert name in NAMES, name


@pytest.mark.parametrize("name", NAMES)
def test_entry_builds_small_runs_and_has_its_published_parameter_count(name):
    """Parameters of a GAP-topped classifier do not depend on the input size, so most entries are
    built small; those whose top flattens a feature map are built at their default size."""
    arch = get_architecture(name)
    size = arch.default_input_size if arch.flatten_top else max(arch.min_input_size, 32)
    model = build_reference(arch, size)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, arch.default_channels)).astype("float32")
    out = np.asarray(model(images, training=False))  # eager: no graph tracing for a one-off pass
    assert out.shape == (2, reference_classes(arch)) and np.isfinite(out).all()
    assert arch.paper and arch.family and arch.reference.source
    ref = arch.reference
    if ref.params_counted == "trainable":
        measured = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    else:
        measured = model.count_params()
    if ref.params_precision == 1:  # exact figures: Keras' own counts, LeNet-5, AlexNet, the PyTorch-counted layouts
        assert measured == ref.params, (measured, ref.params)
    else:
        assert abs(measured - ref.params) <= max(0.01 * ref.params, ref.params_precision / 2), (measured, ref.params)


def test_new_head_replaces_the_top_for_a_sample_of_families():
    for name in ("lenet5", "googlenet", "efficientnet_lite0", "mobilenet_v3_small"):
        arch = get_architecture(name)
        model = build_classifier(name, 3, max(arch.min_input_size, 32), arch.default_channels, None, "none")
        assert model.output.shape[-1] == 3 and model.get_layer("classifier").units == 3


def test_lenet5_is_exactly_the_paper_network():
    facts = measure(get_architecture("lenet5"))
    assert facts["params"] == 61_706 and facts["input"] == [28, 28, 1]


def test_googlenet_parameters_follow_table_1():
    from edgepipe.architectures.googlenet import INCEPTION_TABLE

    def conv(k, cin, cout):
        return k * k * cin * cout + cout

    total = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192)
    channels = 192
    for n1, r3, n3, r5, n5, proj in INCEPTION_TABLE.values():
        total += conv(1, channels, n1) + conv(1, channels, r3) + conv(3, r3, n3) + conv(1, channels, r5)
        total += conv(5, r5, n5) + conv(1, channels, proj)
        channels = n1 + n3 + n5 + proj
    total += channels * 1000 + 1000
    assert measure(get_architecture("googlenet"))["params"] == total
    assert abs(total - 6.8e6) / 6.8e6 < 0.03  # the paper's Table 1 column rounds each layer down to about 6.8M


def test_googlenet_auxiliary_classifiers_only_in_training_model():
    from edgepipe.architectures.googlenet import build_googlenet_for_training

    training, inference = build_googlenet_for_training((96, 96, 3), 5)
    assert len(training.outputs) == 3 and len(inference.outputs) == 1
    assert {w.path for w in inference.weights} <= {w.path for w in training.weights}
    assert not any("aux" in layer.name for layer in inference.layers)


def test_alexnet_and_vgg_a_lrn_use_local_response_normalization():
    from edgepipe.architectures.layers import LocalResponseNormalization

    for name in ("alexnet", "vgg_a_lrn"):
        model = get_architecture(name).backbone((64, 64, 3))
        assert any(isinstance(layer, LocalResponseNormalization) for layer in model.layers), name
    assert not any(
        isinstance(layer, LocalResponseNormalization)
        for layer in get_architecture("vgg_a").backbone((64, 64, 3)).layers
    )


def test_efficientnet_lite_has_no_squeeze_excitation_or_swish():
    import keras

    model = get_architecture("efficientnet_lite0").backbone((64, 64, 3))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "ReLU" in kinds and "Multiply" not in kinds  # SE blocks multiply; swish is not used
    assert all(
        getattr(layer, "activation", None) in (None, keras.activations.linear)
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    )
