# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Zero-copy reading of the `series` column (`list<float32>`) of a prepared Parquet shard.

pyarrow decodes a `list<float32>` column value by value through its repetition and definition levels (~0.5 GB/s
here). A prepared shard writes `series` PLAIN and uncompressed, so the float32 values of every data page already lie
in the file back to back: this module walks the column's pages (their Thrift headers), reads the levels only as runs
(to find where each recording starts and to prove that no value is null) and returns each recording as a numpy view
of the memory-mapped file (or of the downloaded bytes). A recording that spans two pages is copied once.

`series_values` returns None for anything it does not handle exactly (compression, dictionary or non-PLAIN
encoding, nulls or empty lists, another type or nesting): the caller then uses pyarrow, so every shard stays readable
and the arrays are always those pyarrow would give.
"""

import struct

import numpy as np

_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3
_PLAIN, _RLE = 0, 3


class _Unsupported(Exception):
    """The column is not in the layout this reader handles; use pyarrow."""


def series_values(buffer, metadata, column: str = "series") -> list[np.ndarray] | None:
    """
    The flat float32 values of every row of `column` (a `list<float32>`), or None when the column's layout needs
    pyarrow.

    Args:
        buffer: the whole Parquet file (a `pyarrow.Buffer`, e.g. of a memory-mapped file, or bytes).
        metadata: its `pyarrow.parquet.FileMetaData`.
    """
    try:
        return _read(memoryview(buffer).cast("B"), metadata, column)
    except (_Unsupported, IndexError, KeyError, TypeError, ValueError, struct.error):
        return None


def _read(data: memoryview, metadata, column: str) -> list[np.ndarray]:
    schema = metadata.schema
    paths = [schema.column(i).path for i in range(len(schema))]
    leaf = f"{column}.list.element"
    if leaf not in paths:
        raise _Unsupported(f"no {leaf} column")
    index = paths.index(leaf)
    described = schema.column(index)
    if described.physical_type != "FLOAT" or described.max_repetition_level != 1:
        raise _Unsupported("not a list<float32> column")
    max_definition = described.max_definition_level
    rows = []
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group).column(index)
        if chunk.compression != "UNCOMPRESSED" or chunk.dictionary_page_offset is not None:
            raise _Unsupported("compressed or dictionary-encoded")
        pieces, starts, position = [], [], 0
        offset, end = chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size
        while offset < end:
            header, offset = _struct(data, offset)
            body = data[offset : offset + header[3]]  # compressed_page_size
            offset += header[3]
            values, record_starts = _data_page(header, body, max_definition)
            starts.append(record_starts + position)
            pieces.append(values)
            position += len(values)
        if chunk.num_values != position:
            raise _Unsupported("value count differs from the column metadata")
        rows += _split(pieces, np.concatenate(starts) if starts else np.zeros(0, np.int64), position)
        if len(rows) != sum(metadata.row_group(g).num_rows for g in range(group + 1)):
            raise _Unsupported("row count differs")
    return rows


def _data_page(header: dict, body: memoryview, max_definition: int) -> tuple[np.ndarray, np.ndarray]:
    """One data page -> its float32 values (a view) and the value index where each record starts."""
    kind = header[1]
    if kind == _DATA_PAGE:
        page = header[5]
        count = page[1]
        if page[2] != _PLAIN or page.get(3, _RLE) != _RLE or page.get(4, _RLE) != _RLE:
            raise _Unsupported("not PLAIN values with RLE levels")
        repetition_length = int.from_bytes(body[:4], "little")
        repetition = body[4 : 4 + repetition_length]
        position = 4 + repetition_length
        definition_length = int.from_bytes(body[position : position + 4], "little")
        definition = body[position + 4 : position + 4 + definition_length]
        position += 4 + definition_length
    elif kind == _DATA_PAGE_V2:
        page = header[8]
        count, definition_length, repetition_length = page[1], page[5], page[6]
        if page[2] != 0 or page[4] != _PLAIN:
            raise _Unsupported("nulls, or not PLAIN values")
        repetition = body[:repetition_length]
        definition = body[repetition_length : repetition_length + definition_length]
        position = repetition_length + definition_length
    else:  # a dictionary page, or an index page
        raise _Unsupported(f"page type {kind}")
    if len(body) - position != 4 * count:
        raise _Unsupported("values do not fill the page")
    if not _all_equal(definition, count, max_definition):
        raise _Unsupported("null values or empty lists")
    values = np.frombuffer(body, dtype="<f4", count=count, offset=position)
    return values, _zero_positions(repetition, count)


def _split(pieces: list[np.ndarray], starts: np.ndarray, total: int) -> list[np.ndarray]:
    """The values of each record: a view when it lies in one page, else one copy joining its pieces."""
    if len(starts) and starts[0] != 0:
        raise _Unsupported("the first page does not start a record")
    bounds = np.cumsum([0] + [len(p) for p in pieces])
    ends = np.append(starts[1:], total)
    rows = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        if end <= bounds[first + 1]:
            rows.append(pieces[first][start - bounds[first] : end - bounds[first]])
        else:
            last = int(np.searchsorted(bounds, end, side="left")) - 1
            parts = [
                pieces[first][start - bounds[first] :],
                *pieces[first + 1 : last],
                pieces[last][: end - bounds[last]],
            ]
            rows.append(np.concatenate(parts))
    return rows


def _runs(levels: memoryview, count: int, bit_width: int):
    """Runs of an RLE / bit-packed hybrid level stream: `(value, length)` for RLE runs, `(array, None)` otherwise."""
    position, seen, value_bytes = 0, 0, (bit_width + 7) // 8
    while seen < count:
        header, position = _varint(levels, position)
        if header & 1:  # bit-packed: (header >> 1) groups of 8 values, bit_width bits each, least significant first
            groups = header >> 1
            raw = np.frombuffer(levels, np.uint8, groups * bit_width, position)
            position += groups * bit_width
            bits = np.unpackbits(raw, bitorder="little").reshape(-1, bit_width)
            decoded = (bits.astype(np.int64) << np.arange(bit_width)).sum(1)[: count - seen]
            seen += len(decoded)
            yield decoded, None
        else:
            length = min(header >> 1, count - seen)
            value = int.from_bytes(levels[position : position + value_bytes], "little")
            position += value_bytes
            seen += length
            yield value, length


def _all_equal(levels: memoryview, count: int, expected: int) -> bool:
    for value, length in _runs(levels, count, expected.bit_length()):
        if (length is not None and value != expected) or (length is None and (value != expected).any()):
            return False
    return True


def _zero_positions(levels: memoryview, count: int) -> np.ndarray:
    """Indices of the repetition levels that are 0 (a new record starts there)."""
    found, position = [], 0
    for value, length in _runs(levels, count, 1):
        if length is None:
            found.append(np.flatnonzero(value == 0) + position)
            position += len(value)
        else:
            if value == 0:
                found.append(np.arange(position, position + length))
            position += length
    return np.concatenate(found) if found else np.zeros(0, np.int64)


# Thrift compact protocol, just enough for Parquet page headers (fields by id; unknown fields skipped)


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _struct(data: memoryview, position: int) -> tuple[dict, int]:
    fields, last = {}, 0
    while True:
        byte = data[position]
        position += 1
        if byte == 0:
            return fields, position
        kind, delta = byte & 0x0F, byte >> 4
        if delta:
            last += delta
        else:
            raw, position = _varint(data, position)
            last = (raw >> 1) ^ -(raw & 1)
        fields[last], position = _value(data, position, kind)


def _value(data: memoryview, position: int, kind: int):
    if kind in (1, 2):  # booleans live in the field header
        return kind == 1, position
    if kind == 3:
        return data[position], position + 1
    if kind in (4, 5, 6):
        raw, position = _varint(data, position)
        return (raw >> 1) ^ -(raw & 1), position
    if kind == 7:
        return struct.unpack_from("<d", data, position)[0], position + 8
    if kind == 8:
        length, position = _varint(data, position)
        return bytes(data[position : position + length]), position + length
    if kind in (9, 10):
        header = data[position]
        position += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, position = _varint(data, position)
        items = []
        for _ in range(size):
            if element in (1, 2):  # list booleans take one byte each
                items.append(data[position] == 1)
                position += 1
            else:
                item, position = _value(data, position, element)
                items.append(item)
        return items, position
    if kind == 11:
        size, position = _varint(data, position)
        if not size:
            return {}, position
        types = data[position]
        position += 1
        items = {}
        for _ in range(size):
            key, position = _value(data, position, types >> 4)
            items[key], position = _value(data, position, types & 0x0F)
        return items, position
    if kind == 12:
        return _struct(data, position)
    raise _Unsupported(f"thrift type {kind}")
