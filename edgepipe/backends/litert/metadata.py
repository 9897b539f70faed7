"""TFLite model metadata: what MediaPipe Tasks need, and what edgepipe reads back.

edgepipe's TFLite files take raw pixels (0..255): resizing aside, all
preprocessing is inside the model. MediaPipe Tasks (the ImageClassifier of
Android, iOS, web and Python) only learn that from the standard TFLite model
metadata, so :func:`write_metadata` adds it:

* a ``TFLITE_METADATA`` entry in ``Model.metadata``: a ``ModelMetadata``
  flatbuffer (``metadata_schema.fbs``, file identifier ``M001``) with the
  model's name, description, version and author, and one subgraph whose input
  is an RGB image and whose output is a probability per class. MediaPipe
  refuses a float32 input without ``NormalizationOptions``; edgepipe writes the
  identity (mean 0, std 1), which feeds the model the raw pixels it expects.
  Integer inputs get none: MediaPipe feeds them the pixels as they are.
  (MediaPipe's ImageClassifier takes only float32 or uint8 RGB inputs; int8
  and greyscale models get metadata that describes them all the same.)
* the class names as ``labels.txt``, an associated file of type
  ``TENSOR_AXIS_LABELS`` on the output tensor. Associated files live in a zip
  archive appended to the flatbuffer (the TFLite Support metadata populator's
  layout); without it MediaPipe returns categories with no names.
* an ``edgepipe`` entry in ``Model.metadata``: a buffer of UTF-8 JSON with
  edgepipe's own facts about the artifact (format, precision, ...), so they
  are read from the file itself, never guessed from its name.

The metadata flatbuffer is built here with the ``flatbuffers`` package alone
(the generated metadata bindings ship only with optional packages); the Model
flatbuffer is rewritten with TensorFlow's TFLite schema bindings, imported only
by :func:`write_metadata`. :func:`read_metadata` needs neither TensorFlow nor
MediaPipe. Models above 2 GB (flatbuffer limit) are not supported; buffers a
converter stored after the flatbuffer are moved into it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from typing import Any, Union

import flatbuffers
from flatbuffers import encode, number_types, table

from edgepipe.errors import EdgepipeError

TFLITE_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"
METADATA_ENTRY = "TFLITE_METADATA"  # the Model.metadata name MediaPipe and TFLite Support look for
EDGEPIPE_ENTRY = "edgepipe"
LABELS_FILE = "labels.txt"
# Every field written here exists since metadata schema 1.0.0, so any parser reads it all.
MIN_PARSER_VERSION = "1.0.0"

# metadata_schema.fbs enum values used below.
_COLOR_RGB, _COLOR_GRAYSCALE = 1, 2  # ColorSpaceType
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2  # ContentProperties union type
_PROCESS_NORMALIZATION = 1  # ProcessUnitOptions union type
_FILE_TENSOR_AXIS_LABELS = 2  # AssociatedFileType

# TFLite schema TensorType values of the input types edgepipe exports.
_FLOAT32, _UINT8, _INT8 = 0, 3, 9
_INPUT_TYPES = {_FLOAT32: "float32", _UINT8: "uint8", _INT8: "int8"}

ModelSource = Union[bytes, bytearray, memoryview, str, os.PathLike]


# --------------------------------------------------------------------------- writing


def write_metadata(
    model: bytes,
    *,
    name: str,
    description: str,
    version: str,
    labels: list[str],
    edgepipe_info: dict,
    author: str = "edgepipe",
) -> bytes:
    """Return ``model`` (a TFLite flatbuffer) with MediaPipe-ready metadata and edgepipe's info.

    The result runs in LiteRT exactly as ``model`` does: only ``Model.metadata``
    entries, their buffers and the appended labels archive change (and buffers
    stored after the flatbuffer move into it). Metadata
    written earlier (by this function or another writer) is replaced, not
    duplicated. Raises :class:`EdgepipeError` when ``model`` is no (intact)
    TFLite flatbuffer or above 2 GB, when its first subgraph is not one image input ``[1, H, W, 3 or 1]``
    of float32/uint8/int8 and one class-score output ``[1, N]`` / ``[1, 1, 1, N]``,
    when ``labels`` does not name the N classes (one line each), or when
    ``edgepipe_info`` is not JSON-serialisable.
    """
    data = bytes(model)
    _check_identifier(data, TFLITE_IDENTIFIER, "a TFLite model")
    schema = _tflite_schema()
    try:
        model_t = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    except (IndexError, ValueError, struct.error) as exc:  # bytes that are no valid tables
        raise EdgepipeError(f"the TFLite file is damaged: {exc}") from None
    input_type, channels = _image_input(model_t)
    _check_labels(labels, _class_count(model_t))
    metadata = _model_metadata(
        name=name,
        description=description,
        version=version,
        author=author,
        input_type=input_type,
        channels=channels,
        class_count=len(labels),
    )
    _inline_offset_buffers(model_t, data)
    _set_entry(schema, model_t, METADATA_ENTRY, metadata)
    _set_entry(schema, model_t, EDGEPIPE_ENTRY, _info_json(edgepipe_info))
    return _append_files(_pack_model(model_t, len(data)), {LABELS_FILE: "\n".join(labels) + "\n"})


def _tflite_schema():
    """TensorFlow's generated TFLite schema bindings (object API), imported only when writing."""
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _check_identifier(data: bytes, identifier: bytes, what: str) -> None:
    if len(data) < 8 or data[4:8] != identifier:
        raise EdgepipeError(f"not {what}: the flatbuffer file identifier is not {identifier.decode()}")


def _image_input(model_t) -> tuple[str, int]:
    """The input's element type name and channel count; raises unless it is one [1, H, W, C] image."""
    graph = _first_subgraph(model_t)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        # MediaPipe requires one tensor metadata per model input and output.
        raise EdgepipeError(
            f"expected one input and one output, the model has {len(graph.inputs)} and {len(graph.outputs)}",
            hint="Only single-image classifiers get metadata.",
        )
    tensor = graph.tensors[graph.inputs[0]]
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise EdgepipeError(f"the model input has shape {shape}, expected an image [1, H, W, 3] or [1, H, W, 1]")
    if tensor.type not in _INPUT_TYPES:
        raise EdgepipeError(f"the model input has TFLite tensor type {tensor.type}, expected float32, uint8 or int8")
    return _INPUT_TYPES[tensor.type], shape[-1]


def _class_count(model_t) -> int:
    """N of the output [1, N] or [1, 1, 1, N] (the shapes MediaPipe's classifier accepts)."""
    graph = _first_subgraph(model_t)
    tensor = graph.tensors[graph.outputs[0]]
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    if len(shape) not in (2, 4) or any(d != 1 for d in shape[1:-1]):
        raise EdgepipeError(f"the model output has shape {shape}, expected class scores [1, N] or [1, 1, 1, N]")
    return shape[-1]


def _first_subgraph(model_t):
    if not model_t.subgraphs:
        raise EdgepipeError("the TFLite model has no subgraph")
    return model_t.subgraphs[0]


def _check_labels(labels: list[str], class_count: int) -> None:
    """Labels must name every class, one per line of labels.txt."""
    if len(labels) != class_count:
        raise EdgepipeError(f"{len(labels)} labels for a model with {class_count} classes")
    for label in labels:
        if not isinstance(label, str) or not label or "\n" in label or "\r" in label:
            raise EdgepipeError(f"label {label!r} cannot be one line of {LABELS_FILE}")


def _info_json(info: dict) -> bytes:
    if not isinstance(info, dict):
        raise EdgepipeError(f"edgepipe_info must be a dict, not {type(info).__name__}")
    try:
        return json.dumps(info, sort_keys=True, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise EdgepipeError(f"edgepipe_info is not JSON-serialisable: {exc}") from None


def _inline_offset_buffers(model_t, data: bytes) -> None:
    """Move buffer data stored after the flatbuffer (Buffer.offset/size) into the flatbuffer.

    Such offsets count from the start of the file, which the rewrite changes,
    so they would point at the wrong bytes. offset 0 means inline data and 1 is
    a converter placeholder; neither points anywhere. The converter's
    ``buffer_location`` marker of such files goes too, as it no longer holds.
    """
    moved = False
    for buffer in model_t.buffers or []:
        if buffer.offset > 1:
            end = buffer.offset + buffer.size
            if end > len(data):
                raise EdgepipeError("a TFLite buffer points past the end of the file: the model is truncated")
            buffer.data = _uint8_array(data[buffer.offset : end])
            buffer.offset, buffer.size = 0, 0
            moved = True
    if moved:
        model_t.metadata = [m for m in model_t.metadata or [] if _text(m.name) != "buffer_location"]


def _uint8_array(payload: bytes):
    """Buffer data as a uint8 array: the object API packs arrays in one copy, other sequences byte by byte."""
    import numpy as np

    return np.frombuffer(payload, dtype=np.uint8)


def _set_entry(schema, model_t, entry: str, payload: bytes) -> None:
    """Point the Model.metadata entry named ``entry`` at a buffer holding ``payload`` (replacing any)."""
    buffer = schema.BufferT()
    buffer.data = _uint8_array(payload)
    model_t.buffers = model_t.buffers or []
    model_t.metadata = model_t.metadata or []
    for meta in model_t.metadata:
        if _text(meta.name) == entry:
            model_t.buffers[meta.buffer] = buffer
            return
    model_t.buffers.append(buffer)
    meta = schema.MetadataT()
    meta.name = entry
    meta.buffer = len(model_t.buffers) - 1
    model_t.metadata.append(meta)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _pack_model(model_t, size_hint: int) -> bytes:
    """Serialise ``model_t`` as a TFLite flatbuffer (identifier TFL3)."""
    builder = flatbuffers.Builder(size_hint + 4096)
    try:
        builder.Finish(model_t.Pack(builder), TFLITE_IDENTIFIER)
    except flatbuffers.builder.BuilderSizeError:
        raise EdgepipeError("the model is too large for one flatbuffer (2 GB)") from None
    return bytes(builder.Output())


def _append_files(model: bytes, files: dict[str, str]) -> bytes:
    """Append ``files`` as a zip archive after the flatbuffer, where metadata readers look for them.

    Stored uncompressed, as the TFLite Support populator writes them; offsets
    in the archive count from the start of the file. Entries carry a fixed date, so the same model and
    labels always give the same bytes (a rerun reproduces an artifact's digest).
    """
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for file_name, text in files.items():
            archive.writestr(zipfile.ZipInfo(file_name, date_time=(1980, 1, 1, 0, 0, 0)), text.encode("utf-8"))
    return out.getvalue()


# ------------------------------------------------------- metadata_schema.fbs builders
# Only the tables edgepipe writes. Each slot number is the field id in
# metadata_schema.fbs (a union field takes two ids: its type, then its value).


def _model_metadata(
    *, name: str, description: str, version: str, author: str, input_type: str, channels: int, class_count: int
) -> bytes:
    """A finished ModelMetadata flatbuffer (identifier M001) for an image classifier."""
    b = flatbuffers.Builder(1024)
    image = _input_tensor_metadata(b, input_type, channels)
    scores = _output_tensor_metadata(b, class_count)
    subgraph = _table(
        b,
        {  # table SubGraphMetadata
            0: _string(b, "image_classifier"),  # id 0: name
            2: _offsets(b, [image]),  # id 2: input_tensor_metadata
            3: _offsets(b, [scores]),  # id 3: output_tensor_metadata
        },
    )
    root = _table(
        b,
        {  # table ModelMetadata
            0: _string(b, name),  # id 0: name
            1: _string(b, description),  # id 1: description
            2: _string(b, version),  # id 2: version
            3: _offsets(b, [subgraph]),  # id 3: subgraph_metadata
            4: _string(b, author),  # id 4: author
            7: _string(b, MIN_PARSER_VERSION),  # id 7: min_parser_version
        },
    )
    b.Finish(root, METADATA_IDENTIFIER)
    return bytes(b.Output())


def _input_tensor_metadata(b: flatbuffers.Builder, input_type: str, channels: int) -> int:
    """An image of raw pixels; float inputs get identity NormalizationOptions, which MediaPipe requires."""
    color = _COLOR_RGB if channels == 3 else _COLOR_GRAYSCALE
    properties = _table(b, {0: ("byte", color)})  # table ImageProperties, id 0: color_space
    content = _table(
        b,
        {  # table Content
            0: ("ubyte", _CONTENT_IMAGE),  # id 0: content_properties_type
            1: properties,  # id 1: content_properties
        },
    )
    stats = _table(
        b,
        {  # table Stats
            0: _floats(b, [255.0] * channels),  # id 0: max
            1: _floats(b, [0.0] * channels),  # id 1: min
        },
    )
    fields = {
        0: _string(b, "image"),  # id 0: name
        1: _string(
            b, f"Input image ({input_type}): raw pixels 0..255, the model does its own preprocessing."
        ),  # id 1: description
        3: content,  # id 3: content
        5: stats,  # id 5: stats
    }
    if input_type == "float32":
        normalization = _table(
            b,
            {  # table NormalizationOptions
                0: _floats(b, [0.0] * channels),  # id 0: mean
                1: _floats(b, [1.0] * channels),  # id 1: std
            },
        )
        unit = _table(
            b,
            {  # table ProcessUnit
                0: ("ubyte", _PROCESS_NORMALIZATION),  # id 0: options_type
                1: normalization,  # id 1: options
            },
        )
        fields[4] = _offsets(b, [unit])  # TensorMetadata id 4: process_units
    return _table(b, fields)  # table TensorMetadata


def _output_tensor_metadata(b: flatbuffers.Builder, class_count: int) -> int:
    """A probability per class, named by labels.txt."""
    labels = _table(
        b,
        {  # table AssociatedFile
            0: _string(b, LABELS_FILE),  # id 0: name
            1: _string(b, "Class names, one per line, in output order."),  # id 1: description
            2: ("byte", _FILE_TENSOR_AXIS_LABELS),  # id 2: type
        },
    )
    content = _table(
        b,
        {  # table Content
            0: ("ubyte", _CONTENT_FEATURE),  # id 0: content_properties_type
            1: _table(b, {}),  # id 1: content_properties (FeatureProperties)
        },
    )
    stats = _table(
        b,
        {  # table Stats
            0: _floats(b, [1.0]),  # id 0: max
            1: _floats(b, [0.0]),  # id 1: min
        },
    )
    return _table(
        b,
        {  # table TensorMetadata
            0: _string(b, "probability"),  # id 0: name
            1: _string(b, f"Probabilities of the {class_count} classes."),  # id 1: description
            3: content,  # id 3: content
            5: stats,  # id 5: stats
            6: _offsets(b, [labels]),  # id 6: associated_files
        },
    )


def _table(b: flatbuffers.Builder, fields: dict[int, Any]) -> int:
    """One table. ``fields`` maps a field id to an offset already built, or to ("byte"|"ubyte", value)."""
    b.StartObject(max(fields, default=-1) + 1)
    for slot, value in sorted(fields.items()):
        if isinstance(value, tuple):
            kind, number = value
            (b.PrependInt8Slot if kind == "byte" else b.PrependUint8Slot)(slot, number, 0)
        else:
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
    return b.EndObject()


def _string(b: flatbuffers.Builder, text: str) -> int:
    return b.CreateString(str(text))


def _floats(b: flatbuffers.Builder, values: list[float]) -> int:
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependFloat32(float(value))
    return b.EndVector()


def _offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


# --------------------------------------------------------------------------- reading


def read_metadata(model: ModelSource) -> dict[str, Any]:
    """What a TFLite file says about itself: edgepipe's info, labels, name, version, description, author.

    ``model`` is the file's bytes or its path. Every value is None when the
    file does not hold it (a plain converter output holds none). Raises
    :class:`EdgepipeError` when the file is no TFLite flatbuffer, is damaged,
    or its ``edgepipe`` entry is not a JSON object; ``OSError`` when a path
    cannot be read.
    """
    data = _read_bytes(model)
    _check_identifier(data, TFLITE_IDENTIFIER, "a TFLite model")
    result: dict[str, Any] = {
        "edgepipe": None,
        "labels": None,
        "name": None,
        "version": None,
        "description": None,
        "author": None,
    }
    try:
        entries = _metadata_entries(data)
        if EDGEPIPE_ENTRY in entries:
            result["edgepipe"] = _edgepipe_info(entries[EDGEPIPE_ENTRY])
        if METADATA_ENTRY in entries:
            result.update(_model_metadata_fields(entries[METADATA_ENTRY], data))
    except (IndexError, ValueError, struct.error, zipfile.BadZipFile) as exc:  # bytes that are no valid tables
        raise EdgepipeError(f"the TFLite file's metadata is damaged: {exc}") from None
    return result


def _read_bytes(model: ModelSource) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    with open(model, "rb") as f:
        return f.read()


def _metadata_entries(data: bytes) -> dict[str, bytes]:
    """Model.metadata as {name: buffer bytes}, from the TFLite flatbuffer (schema.fbs)."""
    model = _root(data)
    buffers = _tables(model, 4)  # Model id 4: buffers
    entries = {}
    for meta in _tables(model, 6):  # Model id 6: metadata
        name = _string_field(meta, 0)  # Metadata id 0: name
        index = _uint32_field(meta, 1)  # Metadata id 1: buffer
        if name is not None and index < len(buffers):
            entries[name] = _buffer_bytes(buffers[index], data)
    return entries


def _buffer_bytes(buffer: table.Table, data: bytes) -> bytes:
    """A Buffer's bytes: inline (id 0: data), or outside the flatbuffer (id 1: offset, id 2: size)."""
    inline = _bytes_field(buffer, 0)
    if inline is not None:
        return inline
    offset, size = _uint64_field(buffer, 1), _uint64_field(buffer, 2)
    return data[offset : offset + size] if offset > 1 else b""


def _edgepipe_info(payload: bytes) -> dict:
    info = json.loads(payload.decode("utf-8"))
    if not isinstance(info, dict):
        raise EdgepipeError("the TFLite file's edgepipe metadata is not a JSON object")
    return info


def _model_metadata_fields(payload: bytes, data: bytes) -> dict[str, Any]:
    """Name, version, description, author and labels from a ModelMetadata flatbuffer (metadata_schema.fbs)."""
    _check_identifier(payload, METADATA_IDENTIFIER, "TFLite model metadata")
    root = _root(payload)
    fields = {
        key: _string_field(root, slot) for key, slot in (("name", 0), ("description", 1), ("version", 2), ("author", 4))
    }
    fields["labels"] = _labels(root, data)
    return fields


def _labels(root: table.Table, data: bytes) -> list[str] | None:
    """The first TENSOR_AXIS_LABELS file of the first output tensor, read from the appended zip."""
    subgraphs = _tables(root, 3)  # ModelMetadata id 3: subgraph_metadata
    outputs = _tables(subgraphs[0], 3) if subgraphs else []  # SubGraphMetadata id 3: output_tensor_metadata
    for file in _tables(outputs[0], 6) if outputs else []:  # TensorMetadata id 6: associated_files
        if _int8_field(file, 2) == _FILE_TENSOR_AXIS_LABELS:  # AssociatedFile id 2: type
            text = _packed_file(data, _string_field(file, 0))  # AssociatedFile id 0: name
            return None if text is None else text.splitlines()
    return None


def _packed_file(data: bytes, name: str | None) -> str | None:
    """A file from the zip archive appended to the model, or None when there is none by that name."""
    if name is None or not zipfile.is_zipfile(io.BytesIO(data)):
        return None
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if name not in archive.namelist():
            return None
        return archive.read(name).decode("utf-8")


# Minimal flatbuffer table access (what generated readers do), so reading needs no bindings.


def _root(data: bytes) -> table.Table:
    return table.Table(data, encode.Get(number_types.UOffsetTFlags.packer_type, data, 0))


def _field(tab: table.Table, slot: int) -> int:
    """The field's offset within the table, 0 when absent."""
    return tab.Offset(4 + 2 * slot)


def _string_field(tab: table.Table, slot: int) -> str | None:
    o = _field(tab, slot)
    return tab.String(o + tab.Pos).decode("utf-8") if o else None


def _bytes_field(tab: table.Table, slot: int) -> bytes | None:
    o = _field(tab, slot)
    if not o:
        return None
    start = tab.Vector(o)
    return bytes(tab.Bytes[start : start + tab.VectorLen(o)])


def _tables(tab: table.Table, slot: int) -> list[table.Table]:
    o = _field(tab, slot)
    if not o:
        return []
    start = tab.Vector(o)
    return [table.Table(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(tab.VectorLen(o))]


def _uint32_field(tab: table.Table, slot: int) -> int:
    o = _field(tab, slot)
    return tab.Get(number_types.Uint32Flags, o + tab.Pos) if o else 0


def _uint64_field(tab: table.Table, slot: int) -> int:
    o = _field(tab, slot)
    return tab.Get(number_types.Uint64Flags, o + tab.Pos) if o else 0


def _int8_field(tab: table.Table, slot: int) -> int:
    o = _field(tab, slot)
    return tab.Get(number_types.Int8Flags, o + tab.Pos) if o else 0
