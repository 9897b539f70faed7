"""Property-based tests: random YAML and random bytes give a valid result or a clear error, never a traceback."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepipe import config as cfg
from edgepipe.errors import EdgepipeError

KEYS = [
    "name",
    "seed",
    "data",
    "path",
    "classes",
    "model",
    "arch",
    "alpha",
    "input_size",
    "train",
    "epochs",
    "learning_rate",
    "strategy",
    "export",
    "formats",
    "tflite",
    "int8_io",
    "bench",
    "threads",
    "devices",
    "x",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["mobilenet_v2", "builtin:digits", "tflite-int8", "uint8", "cpu", "nan", ".inf"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=15,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def _load(text: str) -> None:
    try:
        config = cfg.from_dict(cfg.parse_yaml(text, "the test config"))
    except EdgepipeError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line
        return
    assert config.train.epochs >= 1 and config.seed >= 0  # a config that loads is a valid one


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_configurations_load_or_fail_clearly(document):
    _load(yaml.safe_dump(document))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_random_text_as_yaml_loads_or_fails_clearly(text):
    _load(text)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_as_a_config_file_fail_clearly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "random.yaml"
    path.write_bytes(data)
    try:
        cfg.load(path)
    except EdgepipeError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=600), st.sampled_from([".png", ".jpg", ".gif", ".bmp"]))
def test_random_bytes_as_images_are_listed_as_rejected(tmp_path_factory, data, suffix):
    from PIL import Image

    from edgepipe.config import DataConfig
    from edgepipe.data import make_index, materialize

    root = tmp_path_factory.mktemp("images")
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name / f"ok{i}.png")
    (root / "a" / f"random{suffix}").write_bytes(data)
    index = make_index(DataConfig(path=str(root), val_fraction=0.0), seed=0)
    kept = [item for entries in index["splits"].values() for item, _ in entries]
    rejected = {r["file"] for r in index["rejected"]}
    assert (f"a/random{suffix}" in rejected) != (f"a/random{suffix}" in kept)
    materialize(index, 8, 3)  # whatever was accepted decodes
