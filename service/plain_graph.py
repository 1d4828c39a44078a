"""A model's graph cut down to the outputs a plain classification asks for.

onnxruntime optimises a graph for all its outputs: every ``features/*`` tensor that is a graph
output must be kept as it is, so the convolutions that produce them are not fused with what
follows nor laid out for speed, even in a run that asks for ``probabilities`` alone. The same
graph with only ``probabilities`` as its output runs 14-19 % faster per picture for the default
model (benchmarks/README.md). onnxruntime drops the nodes no output needs by itself, so only
the graph's output list changes.

The service does not depend on the ``onnx`` package: the edit is made on the protobuf wire
format, whose layout the ONNX spec fixes (ModelProto.graph = field 7, GraphProto.output = field
12, ValueInfoProto.name = field 1). Every other byte is copied as it is.
"""

from __future__ import annotations

MODEL_GRAPH, GRAPH_OUTPUT, VALUE_INFO_NAME = 7, 12, 1
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a protobuf message this module can walk."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise WireError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _fields(data: bytes) -> list[tuple[int, int, int, int]]:
    """(field number, wire type, start of the field, end of the field) for each field; for a
    length-delimited one the payload is data[end - length:end]."""
    fields, at = [], 0
    while at < len(data):
        start = at
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == VARINT:
            _, at = _varint(data, at)
        elif wire == FIXED64:
            at += 8
        elif wire == FIXED32:
            at += 4
        elif wire == LENGTH:
            length, at = _varint(data, at)
            at += length
        else:
            raise WireError(f"wire type {wire} (groups are not used by ONNX)")
        if at > len(data):
            raise WireError("a field runs past the end of its message")
        fields.append((number, wire, start, at))
    return fields


def _payload(data: bytes, start: int, end: int) -> bytes:
    _, at = _varint(data, start)  # the tag
    length, at = _varint(data, at)
    return data[at : at + length]


def _length_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | LENGTH) + _encode_varint(len(payload)) + payload


def _name(value_info: bytes) -> str | None:
    for number, wire, start, end in _fields(value_info):
        if number == VALUE_INFO_NAME and wire == LENGTH:
            return _payload(value_info, start, end).decode("utf-8", "replace")
    return None


def _graph_keeping(graph: bytes, keep: frozenset[str]) -> bytes:
    out = bytearray()
    for number, wire, start, end in _fields(graph):
        dropped = number == GRAPH_OUTPUT and wire == LENGTH
        if dropped and _name(_payload(graph, start, end)) not in keep:
            continue
        out += graph[start:end]
    return bytes(out)


def keep_outputs(model: bytes, keep: frozenset[str]) -> bytes:
    """The serialized ModelProto ``model`` with only the graph outputs named in ``keep``."""
    out = bytearray()
    found = False
    for number, wire, start, end in _fields(model):
        if number == MODEL_GRAPH and wire == LENGTH:
            found = True
            out += _length_field(number, _graph_keeping(_payload(model, start, end), keep))
        else:
            out += model[start:end]
    if not found:
        raise WireError("no graph in the model")
    return bytes(out)
