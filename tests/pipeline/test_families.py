"""A representative of every family flows through build, train and export in the pipeline."""

import pytest

from edgepipe import config as cfg
from edgepipe.architectures import get_architecture
from edgepipe.fileio import read_json
from edgepipe.pipeline.runner import run_stages
from tests.conftest import tiny_overrides

FAST = ["lenet5", "alexnet", "vgg_a_lrn", "googlenet", "efficientnet_lite0", "mobilenet_v3_small"]
# deep or wide networks whose conversion alone takes a minute or more on two cores
SLOW = ["bottleneck_resnet50", "densenet_bc121", "resnet50", "efficientnet_b0", "inception_v3", "xception",
        "nasnet_mobile", "densenet121", "efficientnet_v2_b0", "resnet50_v2", "mobilenet_v1", "vgg16"]


@pytest.mark.parametrize("name", FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_family_trains_and_exports(tmp_path, name):
    arch = get_architecture(name)
    overrides = tiny_overrides(
        tmp_path, **{"model.arch": name, "model.alpha": None, "model.input_size": max(arch.min_input_size, 32),
                     "model.channels": arch.default_channels, "train.epochs": 1, "data.max_per_class": 8,
                     "export.formats": ["tflite-fp32", "tflite-int8", "onnx-fp32"]})
    run = run_stages(cfg.from_dict({}, overrides), ["build", "train", "export"], echo=lambda s: None)
    records = {a["format"]: a for a in read_json(run.artifacts_index)["artifacts"]}
    assert records["tflite-fp32"]["status"] == "ok", records["tflite-fp32"]
    assert records["onnx-fp32"]["status"] == "ok", records["onnx-fp32"]
    int8 = records["tflite-int8"]
    assert int8["status"] == "ok" or int8["reason"], int8
    assert read_json(run.build_info)["architecture"] == name
