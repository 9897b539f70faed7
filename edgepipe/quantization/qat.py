"""Quantization-aware fine-tuning (QAT): the last INT8 recipe, tried when no post-training recipe is
within the accuracy budget.

A copy of the trained float classifier first has each BatchNormalization that directly follows a
convolution or Dense layer folded into that layer's kernel and bias, as the TFLite converter and
tf2onnx fold it, so the weights simulated are the weights the converters quantize (batch
normalization is frozen at its moving statistics). The copy is then fine-tuned for a few epochs
with int8 simulated where the converters put it:

* kernels of Conv2D, DepthwiseConv2D and Dense: per-output-channel symmetric int8 (levels
  -127..127, scale max|w| / 127), recomputed from the weights at every step;
* activations: per-tensor asymmetric 8-bit (256 levels, zero exactly representable) at the output
  of every op that gets its own quantization parameters: after the ReLU/ReLU6 the converters fuse
  into the op before it, and not after padding, max pooling, reshapes or dropout, which keep their
  input's parameters. Each range is a moving average of the batches' min/max.

Gradients pass straight through the rounding (TensorFlow's FakeQuant ops; zero outside the range).
The raw-pixel input and the softmax output are left alone: pixels are exact integers, and the
converters give the softmax output a fixed scale.

The result is a plain float Keras model with the original input, output and layer names (its
backbone without the folded BatchNormalization layers) whose kernels lie exactly on their int8
grid, so a backend's normal full-integer recipe quantizes them to the very weights the fine-tuning
simulated, and the learned activation ranges. ``with_activation_ranges`` puts those ranges back
into a copy of the model as fixed FakeQuant ops, which the TFLite converter honours (it calibrates
only the tensors without one): re-calibrating instead gives other ranges than the ones the weights
were fine-tuned for, which loses much of the gain where an activation's int8 step is coarse. ONNX
Runtime's quantizer cannot take those ops, so ONNX converts the plain model and re-calibrates.
``qat_recipe`` wraps all this as the last recipe of ``quantization.budget.within_budget``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from edgepipe.errors import EdgepipeError, first_line
from edgepipe.progress import Echo

#: the layers of edgepipe's classifiers, in order (see ``architectures.classifier``)
LAYER_NAMES = ("preprocess", "backbone", "pool", "dropout", "classifier")
#: moving-average decay of the activation ranges once 1 / (1 - decay) batches are seen; a plain
#: running mean before that, so a short fine-tuning is not dominated by its first batches
RANGE_DECAY = 0.99
#: a channel's weight range below this is taken as this (an all-zero channel has no scale)
SMALLEST_WEIGHT_RANGE = 1e-8
#: the smallest activation range width, for the same reason
SMALLEST_ACTIVATION_RANGE = 1e-6
#: images per inference batch when measuring top-1
EVALUATION_BATCH = 64


# ------------------------------------------------------------------------------------ model structure


def _kernel_types() -> tuple:
    return (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _range_keeping_types() -> tuple:
    """Layers whose output the converters quantize with their input's parameters (no range of their own)."""
    layers = keras.layers
    return (
        layers.ZeroPadding2D,
        layers.Cropping2D,
        layers.MaxPooling2D,
        layers.GlobalMaxPooling2D,
        layers.Reshape,
        layers.Flatten,
        layers.Permute,
        layers.Dropout,
        layers.SpatialDropout2D,
        layers.Identity,
        layers.UpSampling2D,
        layers.InputLayer,
    )


def _fusing_types() -> tuple:
    """Ops into which the converters fuse a following ReLU/ReLU6 (one output tensor, one range)."""
    layers = keras.layers
    return (*_kernel_types(), layers.Add, layers.Subtract, layers.Multiply, layers.BatchNormalization)


def _is_fusable_activation(layer) -> bool:
    """A ReLU or ReLU6 layer, which TFLite and ONNX Runtime fuse into the op producing its input."""
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        return not config.get("negative_slope") and not config.get("threshold") and config.get("max_value") in (None, 6)
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") in ("relu", "relu6")
    return False


def _is_functional(layer) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(layer, Functional)


def _functionals(model) -> list:
    """``model`` and every Functional model nested in it."""
    found = [model]
    for layer in model.layers:
        if _is_functional(layer):
            found += _functionals(layer)
    return found


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _own_calls(functional):
    """``(layer, input tensors)`` for every call of a layer that is part of ``functional``'s graph (a
    layer shared with another model has calls of its own there).

    Reads Keras 3's graph bookkeeping (``_nodes``, ``_inbound_nodes``, ``_keras_history``), its only
    record of the graph.
    """
    from keras.src.ops.function import make_node_key

    for layer in functional.operations:
        for index, node in enumerate(layer._inbound_nodes):
            if make_node_key(layer, index) in functional._nodes:
                yield layer, node.input_tensors


def _consumers(model) -> dict[int, list]:
    """For each layer (by id) of a Functional ``model`` and the Functional models nested in it, the
    layers that read its output, with ``None`` for a model output."""
    found: dict[int, list] = {}
    for functional in _functionals(model):
        for layer, inputs in _own_calls(functional):
            for tensor in inputs:
                found.setdefault(id(tensor._keras_history.operation), []).append(layer)
        for tensor in functional.outputs:
            found.setdefault(id(tensor._keras_history.operation), []).append(None)
    return found


def _producers(functional) -> dict[int, list]:
    """For each layer (by id) of ``functional``, the layers whose outputs its calls read."""
    found: dict[int, list] = {}
    for layer, inputs in _own_calls(functional):
        found.setdefault(id(layer), []).extend(tensor._keras_history.operation for tensor in inputs)
    return found


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


#: why quantization-aware fine-tuning is not tried for a source that is not a Keras model
NOT_KERAS = "the source is not a Keras model: fine-tune it in its own framework, then bring it"


def unsupported_reason(model) -> str | None:
    """Why ``qat_finetune`` cannot fine-tune ``model``, or None when it can: it needs a Functional
    model with edgepipe's layer names, a Functional backbone and a Dense classifier."""
    if not _is_functional(model):
        return f"the model is a {type(model).__name__}, not a Functional Keras model"
    names = [layer.name for layer in model.layers]
    missing = [name for name in LAYER_NAMES if name not in names]
    if missing:
        return "the model has no layer named " + ", ".join(missing)
    if not _is_functional(model.get_layer("backbone")):
        return "its backbone is not a Functional Keras model"
    if not isinstance(model.get_layer("classifier"), keras.layers.Dense):
        return "its classifier is not a Dense layer"
    return None


def _clone(model, clone_function, call_function, failure: str):
    """``keras.models.clone_model`` through nested models; EdgepipeError(``failure``: Keras' reason) when Keras
    cannot clone the model (a subclassed model, a custom layer without ``get_config``)."""
    try:
        return keras.models.clone_model(
            model, clone_function=clone_function, call_function=call_function, recursive=True
        )
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise EdgepipeError(f"{failure}: {first_line(exc)}") from None


# -------------------------------------------------------------------------------- batch-norm folding


def _foldable(model) -> dict[int, tuple]:
    """``{id(batch_norm): (layer, batch_norm)}`` for every BatchNormalization in ``model`` (nested
    Functional models included) over the last axis of a Conv2D, DepthwiseConv2D or Dense layer that
    has no activation and no other reader: exactly the ones the converters fold."""
    consumers = _consumers(model)
    pairs: dict[int, tuple] = {}
    for functional in _functionals(model):
        producers = _producers(functional)
        for layer in functional.layers:
            inputs = producers.get(id(layer), [])
            if not isinstance(layer, keras.layers.BatchNormalization) or len(inputs) != 1:
                continue
            producer = inputs[0]
            if (
                isinstance(producer, _kernel_types())
                and _channels_last(producer)
                and layer.axis in (-1, len(layer.input.shape) - 1)
                and producer.activation is keras.activations.linear
                and len(consumers.get(id(producer), [])) == 1
            ):
                pairs[id(layer)] = (producer, layer)
    return pairs


def _folded_weights(layer, batch_norm) -> list[np.ndarray]:
    """``[kernel, bias]`` of ``layer`` followed by ``batch_norm`` at its moving statistics, as one layer."""
    mean = batch_norm.moving_mean.numpy()
    gamma = batch_norm.gamma.numpy() if batch_norm.scale else np.ones_like(mean)
    beta = batch_norm.beta.numpy() if batch_norm.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(batch_norm.moving_variance.numpy() + batch_norm.epsilon)
    kernel = layer.kernel.numpy()
    bias = layer.bias.numpy() if layer.use_bias else np.zeros_like(mean)
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # output channels are (input, multiplier), flattened
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    else:
        kernel = kernel * scale
    return [kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]


def fold_batchnorm(model) -> tuple[Any, dict[str, str]]:
    """A float copy of ``model`` (weights copied, nothing shared) with every foldable BatchNormalization
    (see ``_foldable``) folded into the layer before it, and ``{layer name: folded batch-norm name}``.

    The copy computes what ``model`` computes in inference mode, up to float rounding; batch
    normalization it cannot fold stays as it is. Raises EdgepipeError when Keras cannot clone the
    model (a subclassed model, a custom layer without ``get_config``).
    """
    pairs = _foldable(model)
    by_layer = {id(layer): batch_norm for layer, batch_norm in pairs.values()}
    originals: dict[int, Any] = {}  # id(copy) -> original layer, for the call function and the weights

    def clone(layer):
        config = layer.get_config()
        if id(layer) in by_layer:
            config["use_bias"] = True  # the batch norm's shift becomes the bias
        copy = layer.__class__.from_config(config)
        originals[id(copy)] = layer
        return copy

    def call(layer, *args, **kwargs):
        if id(originals.get(id(layer))) in pairs:
            return args[0]  # folded into the layer before it
        return layer(*args, **kwargs)

    folded = _clone(model, clone, call, "quantization-aware training cannot copy the model")
    for copy in _all_layers(folded):
        original = originals.get(id(copy))
        if original is not None and id(original) in by_layer:
            copy.set_weights(_folded_weights(original, by_layer[id(original)]))
        elif original is not None and original.weights:
            copy.set_weights(original.get_weights())
    _copy_trainable_flags(model, folded)
    return folded, {layer.name: batch_norm.name for layer, batch_norm in pairs.values()}


# -------------------------------------------------------------------------------- fake quantization


def fake_quant_kernel(kernel, depthwise: bool = False):
    """``kernel`` rounded to per-output-channel symmetric int8 (levels -127..127, scale max|w| / 127),
    gradients passed straight through. Output channels are the last axis, or for a depthwise kernel
    (height, width, input, multiplier) the last two flattened, as TFLite and ONNX number them."""
    import tensorflow as tf

    shape = kernel.shape
    channels = shape[-2] * shape[-1] if depthwise else shape[-1]
    flat = tf.reshape(kernel, (-1, channels))
    # the range follows the weights but is not trained: no gradient through max|w|
    limit = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(flat), axis=0), SMALLEST_WEIGHT_RANGE))
    rounded = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        flat, -limit, limit, num_bits=8, narrow_range=True
    )
    return tf.reshape(rounded, shape)


class QuantizedKernel(keras.layers.Layer):
    """Runs a built Conv2D, DepthwiseConv2D or Dense layer (channels last) with its kernel
    fake-quantized by ``fake_quant_kernel``; the layer's own variables are the ones trained.
    ``with_activation=False`` leaves the layer's activation to the caller (the softmax is applied
    after the logits' range)."""

    def __init__(self, layer, with_activation: bool = True, **kwargs):
        super().__init__(name=f"{layer.name}_qat", **kwargs)
        self.layer, self.with_activation = layer, with_activation

    def build(self, input_shape):
        self.built = True  # the wrapped layer is built already

    def call(self, inputs):
        layer = self.layer
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        kernel = fake_quant_kernel(layer.kernel, depthwise)
        if depthwise:
            outputs = ops.depthwise_conv(
                inputs, kernel, layer.strides, layer.padding, layer.data_format, layer.dilation_rate
            )
        elif isinstance(layer, keras.layers.Conv2D):
            outputs = ops.conv(inputs, kernel, layer.strides, layer.padding, layer.data_format, layer.dilation_rate)
        else:
            outputs = ops.matmul(inputs, kernel)
        if layer.use_bias:
            outputs = outputs + layer.bias
        return layer.activation(outputs) if self.with_activation else outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def quantize_in_place(self) -> None:
        """Replace the wrapped layer's kernel by its int8-grid value (what the converters will store)."""
        depthwise = isinstance(self.layer, keras.layers.DepthwiseConv2D)
        self.layer.kernel.assign(fake_quant_kernel(self.layer.kernel, depthwise))


class ActivationRange(keras.layers.Layer):
    """Fake-quantizes its input to per-tensor asymmetric 8-bit over [minimum, maximum] (zero always
    inside). In training each batch moves the range towards the batch's min/max: a running mean for
    the first 1 / (1 - decay) batches, then an exponential moving average."""

    def __init__(self, decay: float = RANGE_DECAY, **kwargs):
        super().__init__(**kwargs)
        self.decay = decay

    def build(self, input_shape):
        self.minimum = self.add_weight(name="minimum", shape=(), initializer="zeros", trainable=False)
        self.maximum = self.add_weight(name="maximum", shape=(), initializer="zeros", trainable=False)
        self.batches = self.add_weight(name="batches", shape=(), initializer="zeros", trainable=False)

    def call(self, inputs, training=False):
        import tensorflow as tf

        low, high = ops.convert_to_tensor(self.minimum), ops.convert_to_tensor(self.maximum)
        if training:
            weight = tf.maximum(1.0 / (ops.convert_to_tensor(self.batches) + 1.0), 1.0 - self.decay)
            low = low + weight * (tf.minimum(tf.reduce_min(inputs), 0.0) - low)
            high = high + weight * (tf.maximum(tf.reduce_max(inputs), 0.0) - high)
            self.minimum.assign(low)
            self.maximum.assign(high)
            self.batches.assign(self.batches + 1.0)
        high = tf.maximum(high, low + SMALLEST_ACTIVATION_RANGE)
        return tf.quantization.fake_quant_with_min_max_vars(inputs, low, high, num_bits=8, narrow_range=False)

    def compute_output_shape(self, input_shape):
        return input_shape

    def fix(self, minimum: float, maximum: float) -> None:
        """Set the range, as if learned over enough batches that further ones only nudge it."""
        self.minimum.assign(minimum)
        self.maximum.assign(maximum)
        self.batches.assign(round(1.0 / (1.0 - self.decay)))


def _needs_range(layer, consumers: dict[int, list]) -> bool:
    """Whether the converters give ``layer``'s output quantization parameters of its own."""
    if isinstance(layer, (keras.Model, *_range_keeping_types())):
        return False  # a nested model's ops have their own ranges inside
    readers = consumers.get(id(layer), [])
    fused = len(readers) == 1 and readers[0] is not None and _is_fusable_activation(readers[0])
    return not (fused and isinstance(layer, _fusing_types()))


def _layer_paths(model, prefix: str = "") -> list[tuple[str, Any]]:
    """``(path, layer)`` for every layer in ``model``, parents before their layers; a path is the layer's
    name after the names of the models it is nested in: ``preprocess``, ``backbone/Conv1_relu``."""
    found = []
    for layer in model.layers:
        found.append((prefix + layer.name, layer))
        if isinstance(layer, keras.Model):
            found += _layer_paths(layer, f"{prefix}{layer.name}/")
    return found


def _paths(model) -> dict[int, str]:
    """Each layer's (by id) path in ``model`` (see ``_layer_paths``)."""
    return {id(layer): path for path, layer in _layer_paths(model)}


def _copy_trainable_flags(source, target) -> None:
    """Give ``target`` and each of its layers the trainable flag of ``source``'s layer at the same path
    (cloning keeps a layer's own flag, not a nested model's)."""
    flags = dict((path, layer.trainable) for path, layer in _layer_paths(source))
    target.trainable = source.trainable
    for path, layer in _layer_paths(target):  # parents first: a model's flag may set its layers' too
        if path in flags:
            layer.trainable = flags[path]


class FakeQuantized:
    """The fine-tuning graph over a folded model: the same layer objects (training updates the folded
    model's weights), kernels wrapped in QuantizedKernel, ActivationRange where the converters
    quantize. ``kernels`` and ``ranges`` are keyed by layer path (see ``_paths``).

    Every layer is trainable while it exists, whatever the model's flags say (edgepipe saves its
    classifiers with the backbone frozen), except batch normalization left unfolded, which runs in
    inference mode at its moving statistics, as exported; ``finish`` restores the flags.
    """

    def __init__(self, folded):
        consumers, paths = _consumers(folded), _paths(folded)
        self.kernels: dict[str, QuantizedKernel] = {}
        self.ranges: dict[str, ActivationRange] = {}
        self.flags = [(layer, layer.trainable) for layer in [folded, *_all_layers(folded)]]  # parents first
        for layer, _ in self.flags:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)

        def clone(layer):
            if isinstance(layer, _kernel_types()) and _channels_last(layer):
                keep_softmax_out = layer.activation is keras.activations.softmax
                self.kernels[paths[id(layer)]] = QuantizedKernel(layer, with_activation=not keep_softmax_out)
                return self.kernels[paths[id(layer)]]
            return layer

        def call(layer, *args, **kwargs):
            original = layer.layer if isinstance(layer, QuantizedKernel) else layer
            outputs = layer(*args, **kwargs)
            if not _needs_range(original, consumers):
                return outputs
            self.ranges[paths[id(original)]] = ActivationRange(name=f"{original.name}_range")
            outputs = self.ranges[paths[id(original)]](outputs)
            if isinstance(layer, QuantizedKernel) and not layer.with_activation:
                outputs = keras.layers.Activation(original.activation, name=f"{original.name}_activation")(outputs)
            return outputs

        self.model = keras.models.clone_model(folded, clone_function=clone, call_function=call, recursive=True)

    def learned_ranges(self) -> dict[str, list[float]]:
        """``{layer path: [min, max]}`` of every simulated activation, as trained so far."""
        return {
            path: [float(layer.minimum.numpy()), float(layer.maximum.numpy())] for path, layer in self.ranges.items()
        }

    def finish(self) -> None:
        """Put every kernel on its int8 grid and give every layer back its own trainable flag."""
        for wrapper in self.kernels.values():
            wrapper.quantize_in_place()
        for layer, trainable in self.flags:  # parents first: setting a layer's flag may set its sublayers' too
            layer.trainable = trainable


def with_activation_ranges(model, ranges: dict[str, list[float]]):
    """A copy of ``model`` (weights copied) with a fixed FakeQuant op, named ``<layer>_range``, at the
    output of every layer whose path (see ``_paths``) is in ``ranges``, except a softmax layer's.

    Made for the TFLite converter: given a representative dataset it quantizes those tensors with
    exactly these ranges and calibrates the others (the pixel input, a softmax layer's logits).
    ONNX export of it would turn the ops into QuantizeLinear/DequantizeLinear pairs that ONNX
    Runtime's quantizer does not expect, so ONNX takes the plain model. Raises EdgepipeError when
    Keras cannot clone the model.
    """
    paths, originals, added = _paths(model), {}, {}

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        originals[id(copy)] = layer
        return copy

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        path = paths.get(id(originals.get(id(layer))))
        if path not in ranges or getattr(layer, "activation", None) is keras.activations.softmax:
            return outputs
        added[path] = ActivationRange(name=f"{layer.name}_range")
        return added[path](outputs)

    copy = _clone(model, clone, call, "cannot add the activation ranges to the model")
    for layer in _all_layers(copy):
        original = originals.get(id(layer))
        if original is not None and original.weights:
            layer.set_weights(original.get_weights())
    for path, layer in added.items():
        layer.fix(*ranges[path])
    _copy_trainable_flags(model, copy)
    return copy


# ---------------------------------------------------------------------------------------- training


def _batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int | None):
    """A tf.data pipeline of (float32 images, labels), reshuffled every epoch when ``seed`` is given."""
    import tensorflow as tf

    def to_float(x, y):
        return tf.cast(x, tf.float32), y

    data = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
    if seed is not None:
        data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).map(to_float).prefetch(1)


def _observe_ranges(model, batches) -> None:
    """One pass over ``batches`` in training mode without updating weights: every ActivationRange
    starts from the data rather than from zero."""
    import tensorflow as tf

    @tf.function
    def observe(images):
        model(images, training=True)

    for images, _ in batches:
        observe(images)


class _Progress(keras.callbacks.Callback):
    """Echoes each epoch's loss and training top-1; stops after the batch that passes ``max_seconds``."""

    def __init__(self, echo: Echo, epochs: int, max_seconds: float | None):
        super().__init__()
        self.echo, self.epochs, self.max_seconds = echo, epochs, max_seconds
        self.start = time.perf_counter()
        self.completed = 0
        self.stopped_early = False

    def on_train_batch_end(self, batch, logs=None):
        if self.max_seconds is not None and time.perf_counter() - self.start > self.max_seconds:
            self.model.stop_training = True
            self.stopped_early = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.completed = epoch if self.stopped_early else epoch + 1  # Keras ends a cut-short epoch too
        self.echo(
            f"    QAT epoch {epoch + 1}/{self.epochs}: loss {logs.get('loss', float('nan')):.4f}, "
            f"training top-1 {logs.get('accuracy', float('nan')):.2%} ({time.perf_counter() - self.start:.1f} s)"
        )


def _train(model, batches, epochs: int, learning_rate: float, max_seconds: float | None, echo: Echo) -> dict:
    """Fine-tune ``model`` in place; returns what ran (epochs completed, per-epoch loss and top-1)."""
    progress = _Progress(echo, epochs, max_seconds)
    # no XLA: TensorFlow has no XLA kernel for the per-channel FakeQuant op
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    history = model.fit(batches, epochs=epochs, verbose=0, callbacks=[progress], shuffle=False)  # batches shuffle
    return {
        "epochs_completed": progress.completed,
        "stopped_at_time_limit": progress.stopped_early,
        "loss": [round(float(v), 5) for v in history.history.get("loss", [])],
        "training_top1": [round(float(v), 5) for v in history.history.get("accuracy", [])],
    }


def top1(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``images`` (raw pixels) whose most probable class under ``model`` is their label."""
    predictions = [
        np.asarray(model(images[i : i + EVALUATION_BATCH].astype(np.float32), training=False)).argmax(-1)
        for i in range(0, len(images), EVALUATION_BATCH)
    ]
    return float(np.mean(np.concatenate(predictions) == labels)) if len(images) else float("nan")


def _fresh_copy(model):
    """A copy of ``model`` with its own layers and weights (nothing shared with the training graph)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    _copy_trainable_flags(model, copy)
    return copy


def _check_data(images: np.ndarray, labels: np.ndarray, model) -> None:
    expected = tuple(model.inputs[0].shape[1:])
    if len(images) == 0 or len(images) != len(labels):
        raise EdgepipeError(
            f"quantization-aware training needs training images with one label each "
            f"(got {len(images)} images, {len(labels)} labels)"
        )
    if tuple(images.shape[1:]) != expected:
        raise EdgepipeError(f"the training images are {tuple(images.shape[1:])}, the model takes {expected}")


def qat_finetune(
    model,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    *,
    epochs: int = 3,
    learning_rate: float = 1e-4,
    batch_size: int = 32,
    seed: int = 0,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    max_seconds: float | None = None,
    echo: Echo = print,
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune a copy of the trained float classifier ``model`` with int8 simulated (see the module
    docstring) on ``train_images`` (raw pixels, N x H x W x C) and ``train_labels``; returns
    ``(float model, record)``.

    ``model`` itself is not changed. Every layer's weights are fine-tuned, a frozen backbone's too;
    the returned model keeps each layer's trainable flag. It has ``model``'s input, output and layer
    names (``preprocess``, ``backbone``, ``pool``, ``dropout``, ``classifier``; the backbone without
    its folded BatchNormalization layers) and float weights on their int8 grid, ready for the
    backends' normal full-integer conversion with the usual calibration set (for TFLite, better
    with ``with_activation_ranges(model, record["activation_ranges"])``). Training stops after
    ``epochs``, or after the batch that passes ``max_seconds`` of training. ``validation`` (raw
    images, labels), when given, is used only to report top-1: FP32, fake-quantized before and
    after fine-tuning, and the returned model's in float.

    The record holds epochs (asked and completed), learning rate, batch size, the layers whose
    weights and outputs were fake-quantized (by path, ``backbone/Conv1_relu``), the batch
    normalization folded, the learned activation ranges, seconds spent (all, and training), the
    per-epoch loss and training top-1, and those validation top-1s. Raises EdgepipeError when the
    model is not shaped as edgepipe builds it (see ``unsupported_reason``) or the images do not
    fit it.
    """
    reason = unsupported_reason(model)
    if reason:
        raise EdgepipeError(f"quantization-aware training cannot fine-tune this model: {reason}")
    _check_data(train_images, train_labels, model)
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    folded, folds = fold_batchnorm(model)
    graph = FakeQuantized(folded)
    batches = _batches(train_images, train_labels, min(batch_size, len(train_images)), seed)
    _observe_ranges(graph.model, batches)
    record: dict[str, Any] = {
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": seed,
        "training_images": len(train_images),
        "folded_batchnorm": folds,
        "fake_quantized_weights": list(graph.kernels),
        "fake_quantized_activations": list(graph.ranges),
        "weights": "int8, symmetric, per output channel",
        "activations": f"8-bit, asymmetric, per tensor; min/max moving average (decay {RANGE_DECAY})",
    }
    if validation is not None:
        record["validation"] = {
            "images": len(validation[1]),
            "fp32_top1": top1(model, *validation),
            "fake_quant_top1_before": top1(graph.model, *validation),
        }
    train_start = time.perf_counter()
    record.update(_train(graph.model, batches, epochs, learning_rate, max_seconds, echo))
    record["training_seconds"] = round(time.perf_counter() - train_start, 2)
    if validation is not None:
        record["validation"]["fake_quant_top1_after"] = top1(graph.model, *validation)
    record["activation_ranges"] = graph.learned_ranges()
    graph.finish()
    result = _fresh_copy(folded)
    if validation is not None:
        record["validation"]["float_top1_after"] = top1(result, *validation)
    record["seconds"] = round(time.perf_counter() - start, 2)
    return result, record


# ------------------------------------------------------------------------------- the export recipe


def brief(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without its per-layer lists and ranges: what an export's details keep."""
    kept = {
        key: value
        for key, value in record.items()
        if key not in ("fake_quantized_weights", "fake_quantized_activations", "folded_batchnorm", "activation_ranges")
    }
    return {
        **kept,
        "fake_quantized_weights": len(record["fake_quantized_weights"]),
        "fake_quantized_activations": len(record["fake_quantized_activations"]),
        "folded_batchnorm": len(record["folded_batchnorm"]),
    }


def qat_recipe(
    ctx, convert: Callable[[Any, Any], dict[str, Any]], then: str, *, keep_ranges: bool = False, **overrides: Any
) -> Any:
    """The last INT8 recipe, a ``quantization.budget.Recipe`` for ``within_budget``.

    Its attempt fine-tunes ``ctx.model`` with ``qat_finetune`` on the training split
    (``ctx.calibration_pool``, at most ``max_images`` of it, drawn stratified; validation top-1
    reported on ``ctx.validation``) with the settings of ``ctx.qat`` (a ``quantization.options.QatConfig``; its
    defaults when None; ``overrides`` replace single settings), then runs
    ``convert(fine_tuned_ctx, path)``, the backend's normal full-integer path, on a copy of the
    export context whose model is the fine-tuned one (``keep_ranges``: with its learned activation
    ranges kept as FakeQuant ops, which the TFLite converter honours; ONNX takes the plain model).
    ``then`` describes that conversion. The attempt's details gain ``qat``, the fine-tuning record
    in brief. The factory returns ``Skipped`` with the reason when fine-tuning is switched off
    (``epochs`` 0), the context has no training split or no Keras model (a foreign source), or its model
    is not shaped as edgepipe builds it.
    """
    import dataclasses
    import shutil
    import tempfile
    from pathlib import Path

    from edgepipe.calibration import draw
    from edgepipe.quantization.budget import Attempt, Skipped
    from edgepipe.quantization.options import QatConfig

    settings = dataclasses.replace(ctx.qat or QatConfig(), **overrides)

    def factory():
        if ctx.model is None:  # an ONNX or PyTorch source: nothing here can fine-tune it
            return Skipped(NOT_KERAS)
        if settings.epochs == 0:
            return Skipped("export.qat.epochs is 0")
        if ctx.calibration_pool is None or len(ctx.calibration_pool[1]) == 0:
            return Skipped(
                "no training images to fine-tune on (export from a run directory, or calibrate with labelled images)"
            )
        reason = unsupported_reason(ctx.model)
        if reason:
            return Skipped(f"not a model edgepipe built: {reason}")
        images, labels = ctx.calibration_pool
        if len(labels) > settings.max_images:
            chosen = draw(images, labels, settings.max_images, getattr(ctx.calibration, "seed", 0))
            images, labels = chosen.images, chosen.labels

        def build(path):
            model, record = qat_finetune(
                ctx.model,
                images,
                labels,
                epochs=settings.epochs,
                learning_rate=settings.learning_rate,
                validation=ctx.validation,
                max_seconds=settings.max_seconds,
                echo=ctx.echo,
            )
            exported = with_activation_ranges(model, record["activation_ranges"]) if keep_ranges else model
            # a context of its own, in a folder of its own: the export job's SavedModel (kept beside the work
            # folder and reused when present) and other formats' files are the original model's
            parent = Path(tempfile.mkdtemp(prefix="qat-", dir=ctx.workdir))
            fine_tuned = dataclasses.replace(
                ctx, model=exported, outputs={}, workdir_parent=parent, _workdir=None, _saved_model=None, _frozen=None
            )
            try:
                details = convert(fine_tuned, path)
            finally:
                fine_tuned.close()
                shutil.rmtree(parent, ignore_errors=True)
            return {**details, "qat": brief(record)}

        epoch_count = f"{settings.epochs} epoch" + ("s" if settings.epochs != 1 else "")
        return Attempt(
            f"quantization-aware fine-tuning ({epoch_count} on {len(labels)} training images, "
            f"int8 simulated), then {then}",
            build,
        )

    from edgepipe.quantization.budget import Recipe

    # minutes of training are not spent chasing a loss chance explains
    return Recipe("quantization-aware fine-tuning", factory, needs_real_loss=True)
