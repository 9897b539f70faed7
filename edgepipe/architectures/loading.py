"""A user's own saved model as a pipeline entry (.keras, or a Keras 2 .h5 file).

Loading is safe by default: Keras' ``safe_mode`` refuses models whose loading
would run arbitrary code (Python lambdas); ``unsafe=True`` must be asked for
explicitly. The loaded model becomes the backbone: its classifier top (a
final Dense/softmax after pooling) is cut off and a new head is attached.
"""

from __future__ import annotations

from pathlib import Path

from edgepipe.architectures.base import RAW, Architecture, Preprocessing, Reference
from edgepipe.errors import EdgepipeError, first_line

SUFFIXES = (".keras", ".h5", ".hdf5")


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").exists()


def is_model_file(path: str | Path) -> bool:
    """Whether ``path`` names a model (a .keras/.h5 file, a folder such as a SavedModel, or a file a backend reads as
    a source, such as an ONNX classifier) rather than a config file."""
    from edgepipe.backends import model_source

    p = Path(path)
    return p.suffix.lower() in SUFFIXES or p.is_dir() or model_source(p) is not None


#: what the first bytes of a file must be: .keras files are zip archives, .h5 files HDF5
SIGNATURES = {
    ".keras": (b"PK\x03\x04", "a zip archive"),
    ".h5": (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    ".hdf5": (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
}


def check_model_path(path: str) -> Path:
    """A usable model file: exists, is a .keras or .h5 file, and starts as one; one-line errors otherwise.

    A TensorFlow SavedModel folder is refused: it holds a traced graph, not Keras layers that can get a
    new head and be trained.
    """
    from edgepipe.backends import model_source

    p = Path(path)
    source = model_source(p)
    if source is not None:
        raise EdgepipeError(
            f"'{path}' is {source.description}: it is not a Keras model",
            f"Export it with 'edgepipe export {p.name} --calibration-data DIR' (with its preprocessing "
            "declared), or pass a .keras or .h5 file.",
        )
    if not p.exists():
        raise EdgepipeError(f"model file '{path}' does not exist", "Pass a .keras or .h5 file.")
    if _is_saved_model(p):
        raise EdgepipeError(
            f"'{path}' is a TensorFlow SavedModel, which holds a traced graph, not Keras layers that "
            "can get a new head and be trained",
            "Load the model in Keras and save it as .keras (model.save('model.keras')), then pass that.",
        )
    if not (p.is_file() and p.suffix.lower() in SUFFIXES):
        raise EdgepipeError(f"'{path}' is not a Keras model file", "Pass a .keras or .h5 file.")
    magic, what = SIGNATURES[p.suffix.lower()]
    try:
        with open(p, "rb") as handle:
            head = handle.read(len(magic))
    except OSError as exc:
        raise EdgepipeError(f"model file '{path}' cannot be read ({exc.strerror})", "Check its permissions.") from None
    if head != magic:
        raise EdgepipeError(
            f"'{path}' is not {what}, so it is not a {p.suffix} model file",
            "Pass a model saved by Keras (model.save('model.keras')).",
        )
    return p


def register_custom_layers() -> None:
    """Make edgepipe's own layers (preprocessing, LRN, channel split) known to Keras' loader: a model edgepipe
    built holds them, and a fresh process that only loads it has not imported them yet."""
    import edgepipe.architectures.layers  # noqa: F401  (registers the layers with keras.saving)


def load_keras_model(path: str, unsafe: bool = False):
    """Load a .keras/.h5 model (Keras' safe mode unless ``unsafe``); one-line EdgepipeError when it cannot."""
    import keras

    register_custom_layers()
    p = check_model_path(path)
    try:
        return keras.models.load_model(p, compile=False, safe_mode=not unsafe)
    except Exception as exc:  # Keras and h5py raise many types for files they cannot read
        if "arbitrary code" in str(exc) or "safe_mode" in str(exc):
            raise EdgepipeError(
                f"'{path}' needs arbitrary Python code to load (e.g. a Lambda layer), which is refused by default",
                "If you trust the file, pass --unsafe-load (the command line only; never read from a config file).",
            ) from None
        first = first_line(exc)
        raise EdgepipeError(
            f"could not load '{path}' as a Keras model: {first}",
            "Pass a model saved by Keras 3 (model.save('model.keras')) or a Keras .h5 file.",
        ) from None


def feature_extractor(model):
    """The part of ``model`` before its classifier top: up to the last 4-D (spatial) output,
    else the input of its final Dense layer."""
    import keras

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


def _input_size(model) -> int | None:
    shape = model.inputs[0].shape
    if len(shape) == 4 and shape[1] and shape[1] == shape[2]:
        return int(shape[1])
    return None


def user_architecture(path: str, unsafe: bool = False, preprocessing: Preprocessing = RAW) -> Architecture:
    """An Architecture entry whose backbone is the saved model's feature extractor."""
    model = load_keras_model(path, unsafe)
    size = _input_size(model)

    def build(input_shape, alpha, weights, include_top: bool, classes: int):
        return model if include_top else feature_extractor(model)

    return Architecture(
        name=f"user:{Path(path).stem}",
        family="user model",
        paper=f"loaded from {path}",
        build=build,
        preprocessing=preprocessing,
        default_input_size=size or 224,
        min_input_size=size or 8,
        reference=Reference(source="user model"),
    )
