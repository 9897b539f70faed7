"""A user's own saved model as a pipeline entry (.keras, Keras 2 .h5, or a TF SavedModel directory).

Loading is safe by default: Keras' ``safe_mode`` refuses models whose loading
would run arbitrary code (Python lambdas); ``unsafe=True`` must be asked for
explicitly. The loaded model becomes the backbone: its classifier top (a
final Dense/softmax after pooling) is cut off and a new head is attached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgepipe.architectures.base import RAW, Architecture, Preprocessing, Reference
from edgepipe.errors import EdgepipeError

SUFFIXES = (".keras", ".h5", ".hdf5")


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").exists()


def is_model_file(path: str | Path) -> bool:
    """Whether ``path`` names a model (a .keras/.h5 file or a SavedModel folder) rather than a config file."""
    p = Path(path)
    return p.suffix.lower() in SUFFIXES or p.is_dir()


def check_model_path(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise EdgepipeError(f"model file '{path}' does not exist", "Pass a .keras or .h5 file or a SavedModel directory.")
    if not (_is_saved_model(p) or (p.is_file() and p.suffix.lower() in SUFFIXES)):
        raise EdgepipeError(
            f"'{path}' is not a Keras model file or SavedModel directory",
            "Pass a .keras or .h5 file, or a folder holding saved_model.pb.",
        )
    return p


def load_keras_model(path: str, unsafe: bool = False):
    """Load a .keras/.h5 model (safe mode unless ``unsafe``) or wrap a SavedModel as a frozen layer."""
    import keras

    p = check_model_path(path)
    if _is_saved_model(p):
        layer = keras.layers.TFSMLayer(str(p), call_endpoint="serving_default", trainable=False)
        return layer
    try:
        return keras.models.load_model(p, compile=False, safe_mode=not unsafe)
    except ValueError as exc:
        if "arbitrary code" in str(exc) or "safe_mode" in str(exc):
            raise EdgepipeError(
                f"'{path}' needs arbitrary Python code to load (e.g. a Lambda layer), which is refused by default",
                "If you trust the file, pass --unsafe-load (the command line only; never read from a config file).",
            ) from None
        raise EdgepipeError(f"could not load '{path}': {str(exc).splitlines()[0][:200]}") from None


def feature_extractor(model):
    """The part of ``model`` before its classifier top: up to the last 4-D (spatial) output,
    else the input of its final Dense layer."""
    import keras

    if not isinstance(model, keras.Model):
        return model  # a SavedModel layer: its outputs are the features
    layers = model.layers
    for layer in reversed(layers):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4 and layer is not layers[0]:
            return keras.Model(model.inputs, layer.output, name=f"{model.name}_features")
    last_dense = next((l for l in reversed(layers) if isinstance(l, keras.layers.Dense)), None)
    features = model.outputs[0] if last_dense is None else last_dense.input
    if len(features.shape) == 2:  # flat features become a 1x1 map, so the head's pooling applies unchanged
        features = keras.layers.Reshape((1, 1, features.shape[-1]), name="features_as_map")(features)
    return keras.Model(model.inputs, features, name=f"{model.name}_features")


def _input_size(model) -> Optional[int]:
    import keras

    if isinstance(model, keras.Model):
        shape = model.inputs[0].shape
        if len(shape) == 4 and shape[1] and shape[1] == shape[2]:
            return int(shape[1])
    return None


def user_architecture(path: str, unsafe: bool = False, preprocessing: Preprocessing = RAW) -> Architecture:
    """An Architecture entry whose backbone is the saved model's feature extractor."""
    model = load_keras_model(path, unsafe)
    size = _input_size(model)

    def build(input_shape, alpha, weights, include_top: bool, classes: int):
        import keras

        if include_top:
            return model
        features = feature_extractor(model)
        if isinstance(features, keras.Model):
            return features
        inputs = keras.Input(input_shape)
        outputs = features(inputs)
        if isinstance(outputs, dict):
            outputs = next(iter(outputs.values()))
        if len(outputs.shape) == 2:
            outputs = keras.layers.Reshape((1, 1, outputs.shape[-1]))(outputs)
        return keras.Model(inputs, outputs, name="saved_model_features")

    return Architecture(
        name=f"user:{Path(path).stem}", family="user model", paper=f"loaded from {path}", build=build,
        preprocessing=preprocessing, default_input_size=size or 224, min_input_size=size or 8,
        reference=Reference(source="user model"),
    )
