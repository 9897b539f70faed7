"""model.preprocessing: the named string form as before, and the detailed mapping (layout, channels, scale, mean,
std) that an ONNX model declares; both mean the same transform where they overlap."""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe import config as cfg
from edgepipe.architectures.base import CAFFE_BGR, TORCH_IMAGENET
from edgepipe.architectures.classifier import detailed_preprocessing
from edgepipe.errors import ConfigError, EdgepipeError
from edgepipe.pixels import PixelTransform, from_named, resolve

TORCH = {"channels": "rgb", "scale": 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_the_string_form_keeps_working_and_the_mapping_form_is_validated():
    assert cfg.from_dict({"model": {"preprocessing": "torch"}}).model.preprocessing == "torch"
    detailed = cfg.from_dict({"model": {"preprocessing": {**TORCH, "layout": "nchw"}}}).model.preprocessing
    assert detailed.layout == "nchw" and detailed.mean == TORCH["mean"]
    with pytest.raises(ConfigError, match="model.preprocessing.layout"):
        cfg.from_dict({"model": {"preprocessing": {"layout": "chw"}}})
    with pytest.raises(ConfigError, match="unknown config key 'model.preprocessing.order'"):
        cfg.from_dict({"model": {"preprocessing": {"order": "bgr"}}})
    with pytest.raises(ConfigError, match="must be one of"):
        cfg.from_dict({"model": {"preprocessing": "pytorch"}})
    overridden = cfg.from_dict({"model": {"preprocessing": "auto"}}, {"model.preprocessing.scale": 255.0})
    assert overridden.model.preprocessing.scale == 255.0


def test_named_and_detailed_forms_are_the_same_transform():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.float32)
    for name, named in (("torch", TORCH_IMAGENET), ("caffe", CAFFE_BGR)):
        ordered = pixels[..., ::-1] if named.reverse_channels else pixels
        expected = ordered * np.asarray(named.scale) + np.asarray(named.offset)
        assert np.allclose(resolve(name).with_defaults(layout="nhwc").apply(pixels), expected, atol=1e-4)
    keras_side = detailed_preprocessing(cfg.from_dict({"model": {"preprocessing": TORCH}}).model.preprocessing)
    assert np.allclose(keras_side.scale, TORCH_IMAGENET.scale) and np.allclose(keras_side.offset, TORCH_IMAGENET.offset)
    assert resolve("torch", scale=1.0).scale == 1.0  # a flag overrides the named transform's key
    assert from_named(CAFFE_BGR).channels == "bgr"


def test_nchw_apply_and_bad_values():
    transform = PixelTransform("nchw", "rgb", 255.0, (0.0,), (1.0,))
    assert transform.apply(np.zeros((1, 5, 5, 3), np.uint8)).shape == (1, 3, 5, 5)
    with pytest.raises(EdgepipeError, match="mean has 2 values but the network takes 3 channels"):
        PixelTransform("nhwc", "rgb", 1.0, (1.0, 2.0), (1.0,)).per_channel(3)
    with pytest.raises(EdgepipeError, match="nchw applies to ONNX models"):
        detailed_preprocessing({**TORCH, "layout": "nchw"})
    with pytest.raises(EdgepipeError, match="unknown preprocessing 'pytorch'"):
        resolve("pytorch")


def test_named_transforms_read_as_users_write_them():
    assert resolve("unit", layout="nhwc").describe() == "(x / 255 - mean [0]) / std [1], NHWC"
    assert resolve("tf", layout="nhwc").describe() == "(x / 127.5 - mean [1]) / std [1], NHWC"
    assert "mean [123.675, 116.28, 103.53]) / std [58.395, 57.12, 57.375]" in resolve("torch", layout="nchw").describe()
