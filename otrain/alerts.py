"""Alert packets as cutouts: ZTF and Rubin alerts read as they are delivered.

Brokers deliver transient candidates as alert packets (Avro records) and archive them
as Avro or Parquet files; each packet holds the science, template and difference
stamps of one candidate. This module turns them into otrain candidates, so that every
command that reads a folder of FITS cutouts reads a folder of alert files too.

Candidates and references
-------------------------
A candidate is one alert of one file. It is named by a *reference*, a string that
:func:`otrain.cutouts.read_cutout` (hence ``CutoutLoader``, datacubes, training,
scoring...) accepts wherever a cutout path is expected:

* ``path/to/file.avro`` -- a file that holds one alert (the ZTF archive's layout);
* ``path/to/file.parquet#1234`` -- the alert whose id is 1234 in a file that holds
  several (an Avro container of many packets, a broker's Parquet file). The id is
  the alert's own: the ZTF ``candid``, the Rubin ``diaSourceId``.

:func:`iter_references` lists the candidates of a file, and a folder scan
(:func:`otrain.datacube.find_cutouts`) gives one reference per alert.

Channels and keywords
---------------------
The stamps become the channels of the FITS world: ``SCI`` = ``cutoutScience``,
``REF`` = ``cutoutTemplate``, ``DIFF`` = ``cutoutDifference``. ZTF stamps are
gzip-compressed FITS files; Rubin stamps are FITS files whose primary HDU is the
image (the UNCERT and PSFIMAGE HDUs beside it are not used). Keywords come from the
alert: ``candid``, ``ra``, ``dec``, ``mag`` (ZTF ``magpsf``; Rubin: the AB magnitude
of ``psfFlux``), ``magerr``, ``filter``, ``fwhm``, ``xpos``/``ypos`` and ``file``
(ZTF ``pdiffimfilename``), plus the columns of :data:`ALERT_COLUMNS`: the object id
and the survey's own real/bogus scores (ZTF ``rb`` and ``drb``, Rubin
``reliability``).

Edge stamps
-----------
A stamp cut at a detector edge is smaller than the others (ZTF's 41x63, 63x53...).
It is padded with NaN to the survey's stamp size (63x63 for ZTF, 30x30 for Rubin),
on the side of the detector edge (the candidate's pixel position says which), and
flagged ``edge`` = True: the EDGE rule of FITS cutouts then applies (left out of
datacubes and scoring, and counted). Alerts whose stamps are not FITS (the JPEG stamps
of ZTF's 2016 pre-release packets), alerts without stamps and files that are not
alert files raise a :class:`~otrain.exceptions.CutoutError`, which folder readers
report as a skipped file.

Reading speed and memory
------------------------
A writer schema is parsed once per distinct schema, not once per file, and a file
whose header is byte for byte one seen before (the files of one stream) skips its
parsing. In a block of one record (brokers write one alert per block) the cutouts, the
record's last fields, are found from the block's end and the candidate is decoded up
to itself by a function written once per schema, so the previous detections, most of
a packet, are never walked; other blocks are decoded by fastavro with a reader schema
that keeps only the fields used. Stamps are inflated by libdeflate where ``deflate``
is installed (zlib otherwise); a one-HDU stamp of plain cards (every ZTF stamp) is read
straight from its bytes, any other by otrain's FITS readers. A file is indexed once
(its alert ids) and decoded a block (Avro) or row group (Parquet) at a time; the last
few files keep their last decoded block, so the references of one file read in a row
decode each block once and memory holds one block per file, however large the file
(large Avro files are memory-mapped).
"""

import bisect
import collections
import functools
import io
import itertools
import json
import math
import mmap
import os
import re
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np

from .exceptions import CutoutError, MissingDependencyError

__all__ = [
    "ALERT_SUFFIXES",
    "ALERT_COLUMNS",
    "CHANNEL_FIELDS",
    "is_alert_file",
    "split_reference",
    "make_reference",
    "iter_references",
    "iter_alerts",
    "read_alert",
    "candidate_from_alert",
    "write_fits",
    "AlertScores",
    "score_alerts",
]

#: File name endings read as alert files (any case).
ALERT_SUFFIXES = (".avro", ".parquet")

#: Keyword columns an alert adds to otrain's (column -> "str" or "float"): the object
#: id, the sign of the subtraction and the survey's own real/bogus scores.
ALERT_COLUMNS = {
    "objectId": "str",
    "isdiffpos": "str",
    "rb": "float",
    "drb": "float",
    "reliability": "float",
}

#: otrain channel -> alert field holding its stamp.
CHANNEL_FIELDS = {"SCI": "cutoutScience", "REF": "cutoutTemplate", "DIFF": "cutoutDifference"}

# Side of a full stamp, by survey: smaller stamps are edge stamps, padded to this.
_STAMP_SIDE = {"ztf": 63, "rubin": 30}
# ZTF filter ids.
_ZTF_FILTERS = {1: "g", 2: "r", 3: "i"}
# Rubin fluxes are in nJy: AB magnitude = 31.4 - 2.5 log10(flux / nJy).
_NJY_ZEROPOINT = 31.4
_SEPARATOR = "#"
# Fields read from each record; the rest are skipped without being built.
_ZTF_FIELDS = (
    "candid", "ra", "dec", "magpsf", "sigmapsf", "fid", "fwhm", "isdiffpos", "rb", "drb",
    "xpos", "ypos", "pdiffimfilename",
)  # fmt: skip
_RUBIN_FIELDS = (
    "diaSourceId", "diaObjectId", "ssObjectId", "ra", "dec", "decl", "band", "filterName",
    "psfFlux", "psfFluxErr", "psFlux", "psFluxErr", "x", "y", "reliability", "isNegative",
)  # fmt: skip
_TOP_FIELDS = (
    "candid", "objectId", "candidate", "diaSourceId", "diaSource", *CHANNEL_FIELDS.values(),
)  # fmt: skip


# ---------------------------------------------------------------- references


def is_alert_file(path):
    """Whether ``path`` (a file or a reference) names an alert file, by its suffix.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    bool
    """
    return split_reference(path)[0].lower().endswith(ALERT_SUFFIXES)


def split_reference(reference):
    """Split a candidate reference into the file and the alert id.

    Parameters
    ----------
    reference : str or path-like
        ``file`` or ``file#id`` (see the module's documentation).

    Returns
    -------
    file : str
    alert_id : str or None
        None when the reference names a whole file.
    """
    text = os.fspath(reference)
    head, sep, tail = text.rpartition(_SEPARATOR)
    if sep and tail and "/" not in tail and head.lower().endswith(ALERT_SUFFIXES):
        return head, tail
    return text, None


def make_reference(path, alert_id):
    """The reference of alert ``alert_id`` in file ``path``: ``"path#alert_id"``.

    Parameters
    ----------
    path : str or path-like
    alert_id : int or str

    Returns
    -------
    str
    """
    return f"{os.fspath(path)}{_SEPARATOR}{alert_id}"


def iter_references(path):
    """Yield the candidate references of one alert file.

    A file holding one alert gives its own path; a file holding several gives
    ``path#id`` for each, in the file's order. A file that cannot be read as alerts
    gives its own path, so that reading it reports the problem as for any other
    unreadable cutout file.

    Parameters
    ----------
    path : str or path-like
        An ``.avro`` or ``.parquet`` file.

    Returns
    -------
    iterator of str
    """
    path = os.fspath(path)
    try:
        # Counting the records of an Avro file needs no decoding: a folder of
        # one-alert files is scanned at the speed of reading their headers.
        ids = [None] if _avro_count(path) == 1 else _open(path).ids
    except CutoutError:
        yield path
        return
    if len(ids) == 1:
        yield path
    else:
        for alert_id in ids:
            yield make_reference(path, alert_id)


# ---------------------------------------------------------------- files


class _Schema:
    """One Avro writer schema, parsed once, with the projections the reader uses.

    ``reader``: the writer schema cut down to the fields used (fastavro then skips
    the others without building them). ``head`` and ``head_reader``: the fields up
    to the candidate record only, for decoding the start of a record and stopping
    there; ``read_fast``: the same decoding as a function written for this schema
    (see :func:`_head_reader`), or None where fastavro does it. ``tail``: how the
    cutouts are written when they are the record's last fields (as in every ZTF and
    Rubin schema), see :func:`_tail_stamps`.
    """

    def __init__(self, schema_json):
        import fastavro

        writer = json.loads(schema_json)
        self.writer = fastavro.parse_schema(writer)
        fields = writer.get("fields", []) if isinstance(writer, dict) else []
        names = [field["name"] for field in fields]
        if "diaSource" in names:
            self.survey, nested, keep = "rubin", "diaSource", _RUBIN_FIELDS
        elif "candidate" in names:
            self.survey, nested, keep = "ztf", "candidate", _ZTF_FIELDS
            if "candid" in names:
                # ZTF writes the id twice, in the record and in its candidate: it is
                # read once (a long of nine bytes, decoded in Python).
                keep = tuple(name for name in keep if name != "candid")
        else:
            raise ValueError(
                f"an Avro file of records {writer.get('name', '?')!r}, not ZTF or Rubin "
                "alerts (no 'candidate' or 'diaSource' field); give alert files"
            )
        self.reader = _project(writer, fields, nested, keep)
        head = fields[: names.index(nested) + 1]
        self.head = _parse({**writer, "fields": head})
        self.head_reader = _project(writer, head, nested, keep)
        self.read_fast = _head_reader(head, nested, keep) if self.head_reader else None
        self.tail = _tail_layout(fields)

    def read_head(self, fastavro, block):
        """The fields up to the candidate of the record starting ``block``, projected
        (``head_reader``), as fastavro decodes them."""
        if self.read_fast is not None:
            try:
                return self.read_fast(block)
            except (IndexError, ValueError, struct.error):
                pass  # damaged: fastavro decodes it again and says why
        return fastavro.schemaless_reader(io.BytesIO(block), self.head, self.head_reader)


# Decoding the start of a record. fastavro spends about half a microsecond on each field
# of ZTF's candidate (a hundred fields, a dozen used), kept or not, going through the
# schema each time. Here a schema's head is turned once into a Python function that
# walks those fields in a straight line (as namedtuple and dataclasses write theirs):
# skipping a float is one addition. It covers what candidates are made of (primitive
# types and unions of them); a schema with anything else is left to fastavro, and so
# is a record that does not decode cleanly (fastavro then says why). A union of
# fixed-size types skipped (ZTF's ["float", "null"], 65 of its candidate's 103 fields)
# is one step: its branch byte indexes a table of how far to move on.
_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "string", "bytes"))
_FIXED_SIZES = {"null": 0, "boolean": 1, "float": 4, "double": 8}
# How far a branch byte that names no branch moves: past any block, so that the next
# read fails (IndexError) or the end check does, and fastavro says why.
_NO_BRANCH = 1 << 62


def _head_reader(fields, nested, keep):
    """A function ``block -> dict`` decoding ``fields`` as fastavro does with the schema
    projected on ``keep`` (see :func:`_project`), or None where it cannot."""
    lines = ["def read_head(block):", "    pos = 0", "    record = {}"]
    tables = {}  # branch tables of skipped unions (see _field_code) -> their names
    for field in fields:
        name, kind = field["name"], field["type"]
        if name == nested and isinstance(kind, dict) and kind.get("type") == "record":
            lines.append(f"    inner = record[{name!r}] = {{}}")
            for inner in kind["fields"]:
                kept = inner["name"] if inner["name"] in keep else None
                code = _field_code(kept, inner["type"], "inner", "    ", tables)
                if code is None:
                    return None
                lines += code
        else:
            code = _field_code(
                name if name in _TOP_FIELDS else None, kind, "record", "    ", tables
            )
            if code is None:
                return None
            lines += code
    lines += [
        "    if pos > len(block):",
        "        raise ValueError('the record runs past the end of its block')",
        "    return record",
    ]
    namespace = {"_FLOAT": struct.Struct("<f"), "_DOUBLE": struct.Struct("<d"), "_varint": _varint}
    namespace.update((name, table) for table, name in tables.items())
    # The code holds nothing but field names (Avro names: letters, digits, _) written
    # as literals with repr, and the steps above.
    exec(compile("\n".join(lines), "<otrain.alerts: head of a schema>", "exec"), namespace)
    return namespace["read_head"]


def _field_code(name, kind, target, indent, tables):
    """Lines decoding one field of type ``kind`` at ``pos`` (kept as
    ``target[name]`` unless ``name`` is None), or None for a type left to fastavro.
    ``tables`` collects the branch tables the lines use (table -> its name)."""
    store = f"{indent}{target}[{name!r}] = " if name is not None else None
    if (
        isinstance(kind, list)
        and kind
        and all(isinstance(k, str) and k in _PRIMITIVES for k in kind)
    ):
        if store is None and len(kind) < 64 and all(k in _FIXED_SIZES for k in kind):
            # Branch i is written as the byte 2i: byte -> 1 + the branch's size.
            table = tuple(
                1 + _FIXED_SIZES[kind[byte // 2]]
                if byte % 2 == 0 and byte // 2 < len(kind)
                else _NO_BRANCH
                for byte in range(256)
            )
            table_name = tables.setdefault(table, f"_SKIP{len(tables)}")
            return [f"{indent}pos += {table_name}[block[pos]]"]
        lines = [f"{indent}branch = block[pos]", f"{indent}pos += 1"]
        for index, branch in enumerate(kind):
            lines.append(f"{indent}{'if' if index == 0 else 'elif'} branch == {2 * index}:")
            code = _field_code(name, branch, target, indent + "    ", tables)
            lines += code or [f"{indent}    pass"]
        lines += [f"{indent}else:", f"{indent}    raise ValueError('no such union branch')"]
        return lines
    if not isinstance(kind, str) or kind not in _PRIMITIVES:
        return None  # named, logical or complex types: fastavro's
    if kind == "null":
        return [f"{store}None"] if store else []
    if kind in ("float", "double", "boolean"):
        size = {"float": 4, "double": 8, "boolean": 1}[kind]
        if store is None:
            return [f"{indent}pos += {size}"]
        value = (
            "block[pos] == 1"
            if kind == "boolean"
            else f"_{kind.upper()}.unpack_from(block, pos)[0]"
        )
        return [f"{store}{value}", f"{indent}pos += {size}"]
    if kind in ("int", "long") and store is None:
        return [f"{indent}while block[pos] > 0x7F:", f"{indent}    pos += 1", f"{indent}pos += 1"]
    lines = [f"{indent}value, pos = _varint(block, pos)"]
    if kind in ("int", "long"):
        return [*lines, f"{store}value"]
    lines += [
        f"{indent}if value < 0:",
        f"{indent}    raise ValueError('a negative length')",
    ]
    if store is not None:
        text = ".decode()" if kind == "string" else ""
        lines.append(f"{store}bytes(block[pos : pos + value]){text}")
    return [*lines, f"{indent}pos += value"]


def _varint(block, pos):
    """(the zigzag varint at ``pos``, the position after it)."""
    byte = block[pos]
    pos += 1
    value = byte & 0x7F
    shift = 7
    while byte > 0x7F:
        byte = block[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
    return (value >> 1) ^ -(value & 1), pos


def _parse(schema):
    import fastavro

    try:
        return fastavro.parse_schema(schema)
    except fastavro.schema.SchemaParseException:
        # A kept field refers to a type defined in a field left out.
        return None


def _project(writer, fields, nested, keep):
    projected = []
    for field in fields:
        if field["name"] not in _TOP_FIELDS:
            continue
        field = dict(field)
        if field["name"] == nested and isinstance(field["type"], dict):
            record = dict(field["type"])
            record["fields"] = [f for f in record["fields"] if f["name"] in keep]
            field["type"] = record
        projected.append(field)
    return _parse({**writer, "fields": projected})


def _tail_layout(fields):
    """[(field, branch of the stamp in its union, whether it is a {fileName, stampData}
    record)] for the cutout fields ending the record, or None."""
    cutouts = set(CHANNEL_FIELDS.values())
    last = fields[-len(cutouts) :]
    if {field["name"] for field in last} != cutouts:
        return None
    layout = []
    named = {}
    for field in last:
        kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
        stamp = [i for i, kind in enumerate(kinds) if kind != "null"]
        if len(stamp) != 1 or len(kinds) > 2:
            return None
        kind = kinds[stamp[0]]
        if isinstance(kind, dict) and "name" in kind:
            # ZTF defines the cutout record once and names it in the next fields.
            named[kind["name"]] = named[f"{kind.get('namespace')}.{kind['name']}"] = kind
        kind = named.get(kind, kind) if isinstance(kind, str) else kind
        if kind == "bytes":
            layout.append((field["name"], stamp[0], len(kinds) == 2, False))
        elif isinstance(kind, dict) and [(f["name"], f["type"]) for f in kind["fields"]] == [
            ("fileName", "string"),
            ("stampData", "bytes"),
        ]:
            layout.append((field["name"], stamp[0], len(kinds) == 2, True))
        else:
            return None
    return layout


# The first bytes of a stamp: gzip-compressed FITS (ZTF) or plain FITS (Rubin).
_STAMP_MAGIC = (b"\x1f\x8b\x08", b"SIMPLE  =")


def _tail_stamps(block, layout):
    """The cutouts of a one-record block, found from its end, or None.

    Avro records are not indexed: reaching the cutouts from the front means walking
    every previous detection, most of the time fastavro spends on a packet. The
    cutouts are the record's last fields and the block ends where the record does, so
    they are found from the end: each stamp's bytes begin with a stamp's magic bytes
    and are preceded by their length; the last one must end the block, and each
    other must end where the next field's bytes (union branch, file name) lead
    exactly to the next stamp's length. Anything else (a null cutout, a stamp that is
    not FITS) returns None and the record is decoded in full.
    """
    stamps = {}
    magics = _STAMP_MAGIC
    limit, follows = len(block), None
    for name, branch, is_union, is_record in reversed(layout):
        found = _stamp_before(block, limit, magics, follows)
        if found is None:
            return None
        start, payload = found
        if payload[:3] == _STAMP_MAGIC[0] and magics is _STAMP_MAGIC:
            # The stamps of a packet were compressed together: their gzip headers
            # (with the time) are the same, a longer needle found sooner.
            magics = (payload[:10], *_STAMP_MAGIC)
        stamps[name] = payload
        limit, follows = start, (start, branch, is_union, is_record)
    return stamps


def _stamp_before(block, limit, magics, follows):
    """(start of the length, payload) of the last bytes field starting before ``limit``
    with one of ``magics`` and ending at the block's end (``follows`` None) or where
    the field ``follows`` starts (see :func:`_leads_to`), or None."""
    for magic in magics:
        position = block.rfind(magic, 0, limit)
        while position > 0:
            start = _varint_before(block, position)
            if start is not None:
                stop = position + _zigzag(block, start, position)
                if stop == len(block) if follows is None else _leads_to(block, stop, follows):
                    return start, block[position:stop]
            position = block.rfind(magic, 0, position)
    return None


def _leads_to(block, position, field):
    """Whether a cutout field read from ``position`` (its union branch, then the file
    name of a {fileName, stampData} record) reaches its stamp's length exactly."""
    start, branch, is_union, is_record = field
    if position >= start:
        return False
    if is_union:
        if block[position] != 2 * branch:
            return False
        position += 1
    if is_record:
        # Never past the block: the stamp's magic bytes (under 0x80) end any varint.
        length, position = _varint(block, position)
        position += length
    return position == start


def _varint_before(block, position):
    """Start of the varint that ends just before ``position``, or None."""
    last = position - 1
    if last < 0 or block[last] & 0x80:
        return None
    start = last
    while start > 0 and block[start - 1] & 0x80 and last - start < 9:
        start -= 1
    return start


def _zigzag(block, start, stop):
    value = shift = 0
    for byte in block[start:stop]:
        value |= (byte & 0x7F) << shift
        shift += 7
    return (value >> 1) ^ -(value & 1)


_LAST_SCHEMA = None


@functools.lru_cache(maxsize=64)
def _schema_of(schema_json):
    fastavro = _fastavro()  # where it is missing, the error names the extra

    try:
        return _Schema(schema_json)
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        fastavro.schema.SchemaParseException,
    ) as err:
        return str(err).splitlines()[0] if str(err) else type(err).__name__


def _schema(schema_json, path):
    """The parsed schema of a file (cached by the schema's text, not by file)."""
    global _LAST_SCHEMA
    last = _LAST_SCHEMA
    # Files of one stream share their schema: comparing with the last one is cheaper
    # than hashing its text (tens of kB) for the cache.
    schema = last[1] if last is not None and last[0] == schema_json else None
    if schema is None:
        schema = _schema_of(bytes(schema_json))
        _LAST_SCHEMA = (bytes(schema_json), schema)
    if isinstance(schema, str):
        raise CutoutError(f"{path}: {schema}", path)
    return schema


def _fastavro():
    try:
        import fastavro
    except ImportError as err:
        raise MissingDependencyError(
            'reading alert packets needs fastavro: pip install "otrain[alerts]"'
        ) from err
    return fastavro


def _pyarrow_parquet(path):
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise MissingDependencyError(
            f'{path}: reading Parquet alert files needs pyarrow: pip install "otrain[alerts]"'
        ) from err
    return pq


class _AlertFile:
    """The alerts of one file, decoded a block (Avro) or row group (Parquet) at a time.

    ``ids`` lists every alert's id in the file's order; :meth:`alert` decodes the
    block holding the one asked for and keeps that block only, so that a file of a
    million alerts read in order decodes each block once and holds one in memory.
    """

    def __len__(self):
        return len(self.ids)

    def alert(self, number):
        """The ``number``-th alert of the file (an :func:`iter_alerts` dict)."""
        block = bisect.bisect_right(self._starts, number) - 1
        if self._cached is None or self._cached[0] != block:
            self._cached = (block, self._decode_block(block))
        return self._cached[1][number - self._starts[block]]

    def __iter__(self):
        for block in range(len(self._starts)):
            yield from (
                self._cached[1]
                if self._cached is not None and self._cached[0] == block
                else self._decode_block(block)
            )

    def index(self, alert_id):
        """Position of the first alert ``alert_id`` of the file, or None."""
        if self._index is None:
            self._index = {i: n for n, i in reversed(list(enumerate(self.ids)))}
        return self._index.get(alert_id)


class _AvroFile(_AlertFile):
    """An Avro container file of ZTF or Rubin alert packets."""

    def __init__(self, path, data):
        self.path = path
        self.fastavro = _fastavro()
        header, offset = _avro_header(data, path)
        meta = header["meta"]
        self.codec = meta.get("avro.codec", b"null").decode()
        if self.codec not in ("null", "deflate"):
            raise CutoutError(
                f"{path}: Avro blocks compressed with {self.codec!r}; otrain reads the 'null' "
                "and 'deflate' codecs the brokers use; write the file again with one of them",
                path,
            )
        self.schema = _schema(meta["avro.schema"], path)
        self.survey = self.schema.survey
        sync = header["sync"]
        self._blocks, self.ids, starts = [], [], []
        self._cached = self._index = None
        while offset < len(data):
            count, offset = _read_long(data, offset, path)
            size, offset = _read_long(data, offset, path)
            if offset + size + 16 > len(data) or data[offset + size : offset + size + 16] != sync:
                raise CutoutError(f"{path}: truncated Avro file; download it again", path)
            starts.append(len(self.ids))
            self._blocks.append((offset, size, count))
            if len(data) == offset + size + 16 and not self._blocks[:-1]:
                # The whole file is this block (one-alert files): decode it once, now.
                alerts = self._decode_block(0, data)
                self._cached = (0, alerts)
            else:
                alerts = self._ids_of(data[offset : offset + size], count)
            self.ids.extend(alert if isinstance(alert, str) else alert["id"] for alert in alerts)
            offset += size + 16
        self._starts = starts
        if not self.ids:
            raise CutoutError(f"{path}: holds no alert", path)

    def _records(self, block, count):
        if self.codec == "deflate":
            block = zlib.decompress(block, -15)
        stream = io.BytesIO(block)
        for _ in range(count):
            try:
                yield _decode(self.fastavro, stream, block, count, self.schema)
            except (EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError) as err:
                raise CutoutError(
                    f"{self.path}: an Avro record cannot be decoded ({_short(err)}); the "
                    "file is truncated or damaged, download it again",
                    self.path,
                ) from err

    def _ids_of(self, block, count):
        """The alert ids of a block, decoding no more than needed."""
        schema = self.schema
        if count == 1 and self.codec == "null" and schema.head is not None:
            # The id is in the record's first fields: decode those only.
            head = schema.read_head(self.fastavro, block)
            return [_normalise(head, self.survey, self.path)["id"]]
        return [
            _normalise(record, self.survey, self.path)["id"]
            for record in self._records(block, count)
        ]

    def _decode_block(self, number, data=None):
        offset, size, count = self._blocks[number]
        if data is None:
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                block = handle.read(size)
        else:
            block = data[offset : offset + size]
        if len(block) != size:
            raise CutoutError(f"{self.path}: truncated Avro file; download it again", self.path)
        return [
            _normalise(record, self.survey, self.path) for record in self._records(block, count)
        ]


class _ParquetFile(_AlertFile):
    """A broker's Parquet file of ZTF or Rubin alerts, read a row group at a time."""

    def __init__(self, path):
        pq = _pyarrow_parquet(path)
        import pyarrow

        self.path = path
        self._arrow_errors = (OSError, ValueError, pyarrow.ArrowException)
        try:
            self._file = pq.ParquetFile(path)
            names = set(self._file.schema_arrow.names)
            if "diaSource" in names:
                self.survey, columns, id_column = "rubin", ["diaSource"], "diaSourceId"
            elif "candidate" in names:
                self.survey, columns, id_column = "ztf", ["candidate", "objectId"], "candid"
            else:
                raise CutoutError(
                    f"{path}: a Parquet file without a 'candidate' or 'diaSource' column, "
                    "not ZTF or Rubin alerts; give alert files",
                    path,
                )
            self._columns = [c for c in (*columns, *CHANNEL_FIELDS.values()) if c in names]
            if id_column in names:
                ids = self._file.read(columns=[id_column]).column(0).to_pylist()
            else:  # the id inside the record only: read the record (no stamps)
                rows = self._file.read(columns=columns[:1]).to_pylist()
                ids = [_normalise(row, self.survey, path)["id"] for row in rows]
        except CutoutError:
            raise
        except self._arrow_errors as err:
            raise CutoutError(
                f"{path}: not a readable Parquet file ({_short(err)}); download it again", path
            ) from err
        self.ids = ["" if i is None else str(i) for i in ids]
        if not self.ids:
            raise CutoutError(f"{path}: holds no alert", path)
        sizes = [
            self._file.metadata.row_group(g).num_rows for g in range(self._file.num_row_groups)
        ]
        self._starts = [0, *itertools.accumulate(sizes[:-1])]
        self._cached = self._index = None

    def _decode_block(self, number):
        try:
            rows = self._file.read_row_group(number, columns=self._columns).to_pylist()
        except self._arrow_errors as err:
            raise CutoutError(
                f"{self.path}: not a readable Parquet file ({_short(err)}); download it again",
                self.path,
            ) from err
        return [_normalise(row, self.survey, self.path) for row in rows]


def _decode(fastavro, stream, block, count, schema):
    """Decode the next record of ``stream`` (a block of ``count`` records)."""
    record = _from_the_end(block, schema) if count == 1 else None
    if record is not None:
        return record
    return fastavro.schemaless_reader(stream, schema.writer, schema.reader)


def _from_the_end(block, schema):
    """The record of a one-record block: its stamps found from the block's end
    (:func:`_tail_stamps`), its first fields by the schema's generated reader; None
    where either gives up (fastavro then decodes the record and says what is wrong)."""
    if schema.tail is None or schema.read_fast is None:
        return None
    stamps = _tail_stamps(block, schema.tail)
    if stamps is None:
        return None
    try:
        record = schema.read_fast(block)
    except (IndexError, ValueError, struct.error):
        return None
    record.update(stamps)
    return record


def _avro_count(path):
    """Number of records of an Avro file (block counts), None for other files."""
    if not path.lower().endswith(".avro"):
        return None
    if _HEADERS:
        # The files of a stream share their header and hold one block: the bytes just
        # past a header seen before (its sync marker, two longs) say how long the
        # first block is, and whether it ends the file. The stamps are not read.
        head, size = _prefix(path, max(len(known) for known, _ in _HEADERS) + 16 + 20)
        try:
            _, offset = _avro_header(head, path)
            count, offset = _read_long(head, offset, path)
            length, offset = _read_long(head, offset, path)
        except CutoutError:  # another header, or a damaged file: read it all below
            pass
        else:
            if offset + length + 16 == size:
                return count
    with _contents(path) as data:
        _, offset = _avro_header(data, path)
        total = 0
        while offset < len(data):
            count, offset = _read_long(data, offset, path)
            size, offset = _read_long(data, offset, path)
            offset += size + 16
            total += count
    return total


# The headers parsed last: [(their bytes up to the sync marker, their metadata)], the
# latest first. The files of one stream (one schema, one producer) differ only by their
# sync marker, so a file that starts with the same bytes has the same metadata, read
# without walking it again; a comparison that fails does so within the first bytes
# that differ. A few are kept: a folder may interleave schema versions.
_HEADERS = collections.deque(maxlen=16)


def _avro_header(data, path):
    # bytes.startswith compares in place; a mapped file is compared by a slice.
    starts = data.startswith if isinstance(data, bytes) else lambda k: data[: len(k)] == k
    for known, meta in tuple(_HEADERS):
        if starts(known):
            sync = data[len(known) : len(known) + 16]
            if len(sync) == 16:
                return {"meta": meta, "sync": sync}, len(known) + 16
    return _parse_avro_header(data, path)


def _parse_avro_header(data, path):
    if data[:4] != b"Obj\x01":
        raise CutoutError(
            f"{path}: not an Avro container file (it does not start with Avro's magic "
            "bytes); give ZTF or Rubin alert files",
            path,
        )
    offset = 4
    meta = {}
    while True:
        count, offset = _read_long(data, offset, path)
        if count == 0:
            break
        if count < 0:
            _, offset = _read_long(data, offset, path)
            count = -count
        for _ in range(count):
            key, offset = _read_bytes(data, offset, path)
            value, offset = _read_bytes(data, offset, path)
            meta[key.decode("utf-8", "replace")] = value
    sync = data[offset : offset + 16]
    if len(sync) != 16 or "avro.schema" not in meta:
        raise CutoutError(f"{path}: truncated Avro header; download the file again", path)
    _HEADERS.appendleft((bytes(data[:offset]), meta))
    return {"meta": meta, "sync": sync}, offset + 16


def _read_long(data, offset, path):
    shift = result = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise CutoutError(f"{path}: truncated Avro file; download it again", path)
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), offset
        shift += 7


def _read_bytes(data, offset, path):
    size, offset = _read_long(data, offset, path)
    end = offset + size
    if size < 0 or end > len(data):
        raise CutoutError(f"{path}: truncated Avro file; download it again", path)
    return data[offset:end], end


# The files decoded last, so that the references of one file read in a row decode it
# once. A few files, not one: a reader thread and the labelling page may interleave.
_CACHE = collections.OrderedDict()
_CACHE_FILES = 4
_CACHE_LOCK = threading.Lock()


def _open(path):
    """The decoded alerts of ``path`` (cached by path, size and modification time)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError as err:
        raise CutoutError(f"{path}: no such file; check the path", path) from err
    except OSError as err:
        raise CutoutError(f"{path}: cannot be opened ({err.strerror}); check it", path) from err
    key = (path, stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    if path.lower().endswith(".parquet"):
        decoded = _ParquetFile(path)
    else:
        with _contents(path) as data:
            decoded = _AvroFile(path, data)
    with _CACHE_LOCK:
        _CACHE[key] = decoded
        while len(_CACHE) > _CACHE_FILES:
            _CACHE.popitem(last=False)
    return decoded


# Files larger than this are mapped, not read: indexing a broker's container of many
# alerts then never holds the whole file in memory.
_MAP_FROM = 16 * 2**20


class _contents:  # noqa: N801 - used as a function: with _contents(path) as data
    """The bytes of a file: read whole when small, memory-mapped when large.

    A class, not a generator-based context manager: it is entered for every alert file
    decoded, and contextlib's machinery would cost more than reading the file.
    """

    def __init__(self, path):
        self.path = path
        self.mapped = None

    def __enter__(self):
        try:
            # os.open and os.read: a file object costs more than the system calls.
            descriptor = os.open(self.path, os.O_RDONLY)
            try:
                size = os.fstat(descriptor).st_size
                if size >= _MAP_FROM:
                    # The mapping outlives the descriptor that made it.
                    self.mapped = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
                    return self.mapped
                data = os.read(descriptor, size + 1)
                if len(data) != size:  # changed since fstat, or a short read: read to the end
                    while more := os.read(descriptor, 2**20):
                        data += more
                return data
            finally:
                os.close(descriptor)
        except OSError as err:
            raise CutoutError(
                f"{self.path}: cannot be read ({err.strerror}); check it", self.path
            ) from err

    def __exit__(self, kind, err, traceback):
        if self.mapped is not None:
            self.mapped.close()
        if isinstance(err, OSError):  # reading the mapped bytes failed
            raise CutoutError(
                f"{self.path}: cannot be read ({err.strerror}); check it", self.path
            ) from err
        return False


def _prefix(path, length):
    """(the first ``length`` bytes of a file, its size)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            return os.pread(descriptor, length, 0), os.fstat(descriptor).st_size
        finally:
            os.close(descriptor)
    except OSError as err:
        raise CutoutError(f"{path}: cannot be read ({err.strerror}); check it", path) from err


def _clear_cache():
    global _LAST_SCHEMA
    with _CACHE_LOCK:
        _CACHE.clear()
    _HEADERS.clear()
    _LAST_SCHEMA = None
    _schema_of.cache_clear()


def iter_alerts(path):
    """Yield the alerts of one file as plain dicts (the fields otrain uses).

    Parameters
    ----------
    path : str or path-like
        An ``.avro`` or ``.parquet`` alert file.

    Returns
    -------
    iterator of dict
        Each with ``id`` (str), ``survey`` (``"ztf"`` or ``"rubin"``), ``keywords``
        (otrain's keyword columns and :data:`ALERT_COLUMNS`) and ``stamps`` (channel
        -> the stamp's bytes as stored, or None).

    Raises
    ------
    CutoutError
        If the file is not a readable ZTF or Rubin alert file.
    """
    path = os.fspath(path)
    yield from _open(path)


# ---------------------------------------------------------------- records


def _normalise(record, survey, path):
    """An alert record (Avro dict or Parquet row) -> id, keywords and stamp bytes."""
    if survey == "ztf":
        keywords, alert_id = _ztf_keywords(record)
    else:
        keywords, alert_id = _rubin_keywords(record)
    keywords["path"] = str(path)
    stamps = {}
    for channel, field in CHANNEL_FIELDS.items():
        stamp = record.get(field)
        if isinstance(stamp, dict):  # ZTF: {fileName, stampData}
            stamp = stamp.get("stampData")
        stamps[channel] = stamp
    return {"id": alert_id, "survey": survey, "keywords": keywords, "stamps": stamps}


def _float(value):
    """A number of the alert as a float; NaN for null, non-finite or sentinel values."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    # ZTF writes -999 (and brokers -99) for "not measured".
    if not math.isfinite(number) or number in (-99.0, -999.0, -9999.0):
        return math.nan
    return number


def _ztf_keywords(record):
    candidate = record.get("candidate") or {}
    candid = record.get("candid", candidate.get("candid"))
    fid = candidate.get("fid")
    keywords = {
        "candid": "" if candid is None else str(candid),
        "ra": math.nan,
        "dec": math.nan,
        "mag": _float(candidate.get("magpsf")),
        "magerr": _float(candidate.get("sigmapsf")),
        "filter": _ZTF_FILTERS.get(fid, "" if fid is None else str(fid)),
        "fwhm": _float(candidate.get("fwhm")),
        "fwhmpsf": math.nan,
        "edge": False,
        "file": str(candidate.get("pdiffimfilename") or ""),
        "xpos": math.nan,
        "ypos": math.nan,
        "objectId": str(record.get("objectId") or ""),
        "isdiffpos": str(candidate.get("isdiffpos") or ""),
        "rb": _float(candidate.get("rb")),
        "drb": _float(candidate.get("drb")),
        "reliability": math.nan,
    }
    # Positions of 99 are legal: read them without the sentinel rule of magnitudes.
    for column in ("ra", "dec", "xpos", "ypos"):
        value = candidate.get(column)
        keywords[column] = math.nan if value is None else float(value)
    return keywords, keywords["candid"]


def _rubin_keywords(record):
    source = record.get("diaSource") or {}
    source_id = source.get("diaSourceId", record.get("diaSourceId"))
    flux = source.get("psfFlux", source.get("psFlux"))
    error = source.get("psfFluxErr", source.get("psFluxErr"))
    mag = magerr = math.nan
    if flux is not None and math.isfinite(flux) and flux > 0:
        mag = _NJY_ZEROPOINT - 2.5 * math.log10(flux)
        if error is not None and math.isfinite(error):
            magerr = 2.5 / math.log(10) * error / flux
    negative = source.get("isNegative")
    if negative is None and flux is not None and math.isfinite(flux):
        negative = flux < 0
    object_id = source.get("diaObjectId") or source.get("ssObjectId")
    dec = source.get("dec", source.get("decl"))
    keywords = {
        "candid": "" if source_id is None else str(source_id),
        "ra": math.nan if source.get("ra") is None else float(source["ra"]),
        "dec": math.nan if dec is None else float(dec),
        "mag": mag,
        "magerr": magerr,
        "filter": str(source.get("band") or source.get("filterName") or ""),
        "fwhm": math.nan,
        "fwhmpsf": math.nan,
        "edge": False,
        "file": "",
        "xpos": math.nan if source.get("x") is None else float(source["x"]),
        "ypos": math.nan if source.get("y") is None else float(source["y"]),
        # Fink stores diaObjectId as a double: print it as the integer it is.
        "objectId": "" if not object_id else str(int(object_id)),
        "isdiffpos": "" if negative is None else ("f" if negative else "t"),
        "rb": math.nan,
        "drb": math.nan,
        "reliability": _float(source.get("reliability")),
    }
    return keywords, keywords["candid"]


def _stamp_image(stamp, channel, where):
    """Pixels of one stamp (bytes as stored in the alert) as a 2-D array.

    float32, or a view of a simple stamp's big-endian pixels (see
    :func:`_simple_image`), which the caller converts as it copies.
    """
    if stamp is None:
        raise CutoutError(
            f"{where}: the alert has no {CHANNEL_FIELDS[channel]} stamp (null); it cannot "
            "be used with the channel " + channel,
            where,
        )
    data = bytes(stamp)
    if data[:2] == b"\x1f\x8b":
        try:
            data = _inflate()(data)
        except Exception as err:  # noqa: BLE001 - zlib.error, or libdeflate's errors
            raise CutoutError(
                f"{where}: the {CHANNEL_FIELDS[channel]} stamp is damaged gzip data ({err})",
                where,
            ) from err
    if not data.startswith(b"SIMPLE"):
        kind = "a JPEG image" if data[:3] == b"\xff\xd8\xff" else "not a FITS file"
        raise CutoutError(
            f"{where}: the {CHANNEL_FIELDS[channel]} stamp is {kind}, not FITS (as in ZTF's "
            "2016 pre-release packets); otrain reads FITS stamps only, leave this alert out",
            where,
        )
    return _fits_image(data, channel, where)


@functools.cache
def _inflate():
    """gunzip: libdeflate's where installed (twice zlib's speed on ZTF stamps), else zlib's."""
    try:
        from deflate import gzip_decompress
    except ImportError:
        return functools.partial(zlib.decompress, wbits=31)
    return gzip_decompress  # a bytearray: see _simple_image and _fits_image


# ZTF's stamps are the simplest FITS files there are: one HDU, a header of a few cards
# in one 2,880-byte block, then the pixels. They are read straight from the bytes; any
# card that would need thought (scaling, blank values, extensions, long strings, a
# layout card written twice, lower-case keywords) or a file that is not exactly one HDU
# long goes to the general readers below, which read it as astropy does.
_SIMPLE_LAYOUT = (b"BITPIX  ", b"NAXIS   ", b"NAXIS1  ", b"NAXIS2  ")
_SIMPLE_GIVE_UP = frozenset(
    key.ljust(8).encode("ascii")
    for key in (
        "SIMPLE", "XTENSION", "EXTEND", "NAXIS3", "BSCALE", "BZERO", "BLANK", "GROUPS",
        "PCOUNT", "GCOUNT", "ZIMAGE", "CONTINUE", "HIERARCH",
    )
)  # fmt: skip
_SIMPLE_INT = re.compile(rb"= +([-+]?\d+) *(?:/.*)?")
_SIMPLE_FIRST = re.compile(rb"SIMPLE  = +T *(?:/.*)?")
_BIG_ENDIAN = {-32: np.dtype(">f4"), -64: np.dtype(">f8"), 16: np.dtype(">i2"),
               32: np.dtype(">i4"), 64: np.dtype(">i8"), 8: np.dtype("u1")}  # fmt: skip


def _simple_image(data):
    """The pixels of a one-HDU FITS stamp as a 2-D view of its bytes, or None."""
    # The stamps of a survey share their header (same cards, same size): a header
    # block seen before gives its layout. The last few are compared in place (no
    # copy, no hash of 2,880 bytes); the others are looked up in a dictionary.
    # A tuple: other threads may add one. The layout found is used after the break.
    for header, layout in tuple(_SIMPLE_RECENT):  # noqa: B007
        if data.startswith(header):
            break
    else:
        header = bytes(data[:2880])  # data may be a bytearray (libdeflate's), unhashable
        layout = _SIMPLE_HEADERS.get(header)
        if layout is None:
            layout = _simple_layout(bytes(data))
            if layout is None:
                return None
            if layout[2] != 2880 or len(header) != 2880:
                header = None  # a header of more than one block: not kept
            elif len(_SIMPLE_HEADERS) >= 256:
                _SIMPLE_HEADERS.clear()
        if header is not None:
            _SIMPLE_HEADERS[header] = layout
            _SIMPLE_RECENT.appendleft((header, layout))
    dtype, shape, start, size = layout
    if len(data) != size:
        return None  # truncated, or more HDUs
    return np.frombuffer(data, dtype, shape[0] * shape[1], start).reshape(shape)


# Header block -> layout (see _simple_layout), for headers of one block; the last
# few used, as (header, layout), the latest first (ZTF: the science and template
# stamps share one header, the difference stamp may have its own).
_SIMPLE_HEADERS = {}
_SIMPLE_RECENT = collections.deque(maxlen=4)


def _simple_layout(data):
    """(dtype, (height, width), start of the pixels, file size) of a one-HDU stamp
    whose header holds only plain cards, or None."""
    if not _SIMPLE_FIRST.fullmatch(data, 0, 80):
        return None
    layout = {}
    position = 80
    while True:
        key = data[position : position + 8]
        if key == b"END     ":
            break
        if len(key) < 8 or key in _SIMPLE_GIVE_UP or key.upper() != key:
            # Truncated, or a card for the general readers (lower-case keywords
            # included: astropy upper-cases them).
            return None
        if key in _SIMPLE_LAYOUT:
            match = _SIMPLE_INT.fullmatch(data, position + 8, position + 80)
            if match is None or key in layout:
                return None
            layout[key] = int(match[1])
        position += 80
    start = (position // 2880 + 1) * 2880
    bitpix = layout.get(b"BITPIX  ")
    width, height = layout.get(b"NAXIS1  ", 0), layout.get(b"NAXIS2  ", 0)
    if layout.get(b"NAXIS   ") != 2 or bitpix not in _BIG_ENDIAN or width < 1 or height < 1:
        return None
    nbytes = width * height * abs(bitpix) // 8
    return _BIG_ENDIAN[bitpix], (height, width), start, start + -(-nbytes // 2880) * 2880


def _fits_image(data, channel, where):
    fast = _simple_image(data)
    if fast is not None:
        return fast
    _decode_plain = _cutouts()._decode_plain
    data = bytes(data)  # the general readers take bytes
    # The primary HDU is the stamp (ZTF: the only HDU; Rubin: beside UNCERT and
    # PSFIMAGE, which have EXTNAMEs): the image without EXTNAME.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            fast = _decode_plain(data, ("",))
        except (Warning, ValueError, TypeError, KeyError, IndexError):
            fast = None
    if fast is not None:
        return fast[0][0]
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            # ZTF writes "SIMPLE  =  T" off its column: astropy's warning says so, and
            # the file is read the same.
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(io.BytesIO(data), memmap=False) as hdul:
                for hdu in hdul:
                    if hdu.is_image and hdu.data is not None and np.squeeze(hdu.data).ndim == 2:
                        return np.squeeze(hdu.data).astype(np.float32)
    except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
        raise CutoutError(
            f"{where}: the {CHANNEL_FIELDS[channel]} stamp is not a readable FITS file "
            f"({_short(err)})",
            where,
        ) from err
    raise CutoutError(f"{where}: the {CHANNEL_FIELDS[channel]} stamp holds no image", where)


def _pad(plane, side, position):
    """NaN-pad an edge stamp to side x side, on the side of the detector edge."""
    height, width = plane.shape
    if height >= side and width >= side:
        return plane
    out = np.full((max(side, height), max(side, width)), np.nan, np.float32)
    # A candidate near pixel 0 lost the rows (columns) below it: pad before.
    x, y = position
    top = out.shape[0] - height if (math.isfinite(y) and y < side / 2 + 1) else 0
    left = out.shape[1] - width if (math.isfinite(x) and x < side / 2 + 1) else 0
    out[top : top + height, left : left + width] = plane
    return out


def _check_alert_channels(channels, where):
    unknown = [c for c in channels if c not in CHANNEL_FIELDS]
    if unknown:
        raise CutoutError(
            f"{where}: alerts hold the channels SCI, REF and DIFF, not {', '.join(unknown)}; "
            "choose channels among SCI, REF, DIFF",
            where,
        )


def _candidate(alert, channels, cutout_size, where):
    cutouts = _cutouts()
    _check_alert_channels(channels, where)
    keywords = dict(alert["keywords"])
    keywords["path"] = where
    planes = [_stamp_image(alert["stamps"][c], c, where) for c in channels]
    side = _STAMP_SIDE.get(alert["survey"], 0)
    if all(p.shape == (side, side) for p in planes):  # full stamps, nearly all of them
        padded = planes
        keywords["edge"] = False
    else:
        side = max(side, *(s for p in planes for s in p.shape))
        position = (keywords["xpos"], keywords["ypos"])
        padded = [_pad(p, side, position) for p in planes]
        keywords["edge"] = any(p is not q for p, q in zip(planes, padded, strict=True))
    if len({p.shape for p in padded}) != 1:
        return cutouts._stack(padded, channels, cutout_size, where), keywords  # says so
    # Planes may be views of the stamps' big-endian bytes: each is converted as it is
    # copied into place, with no float32 copy of its own and no np.stack.
    image = np.empty((*padded[0].shape, len(padded)), np.float32)
    for number, plane in enumerate(padded):
        image[..., number] = plane
    return cutouts._centre_crop(image, cutout_size, where), keywords


@functools.cache
def _cutouts():
    # otrain.cutouts imports this module: it is imported on first use, once (an import
    # statement in a function costs microseconds per alert).
    from . import cutouts

    return cutouts


def candidate_from_alert(alert, channels=("SCI", "REF", "DIFF"), cutout_size=-1, *, where=None):
    """Pixels and keywords of one alert packet, as :func:`otrain.cutouts.read_cutout` gives.

    Parameters
    ----------
    alert : dict
        A ZTF or Rubin alert as fastavro, fink-client or a Kafka consumer decode it
        (a dict with ``candidate`` or ``diaSource`` and the three cutout fields), a row
        of a broker's Parquet file as a dict, or an alert of :func:`iter_alerts`.
    channels : sequence of str, default ("SCI", "REF", "DIFF")
        Among ``SCI``, ``REF``, ``DIFF``.
    cutout_size : int, default -1
        Side of the centred square crop, or -1 for the native size.
    where : str, optional
        What to name in messages and in the ``path`` keyword (default: the alert id).

    Returns
    -------
    image : ndarray of shape (H, W, C), float32
    keywords : dict
        otrain's keyword columns plus :data:`ALERT_COLUMNS`.

    Raises
    ------
    CutoutError
        If the alert has no such stamp, a stamp is not FITS, or it is not a ZTF or
        Rubin alert.
    """
    from ._validation import check_channels, check_cutout_size

    channels = check_channels(channels)
    check_cutout_size(cutout_size)
    alert = _as_alert(alert, where)
    return _candidate(alert, channels, cutout_size, where or alert["id"])


def _as_alert(alert, where):
    if isinstance(alert, dict) and "stamps" in alert and "keywords" in alert:
        return alert
    if isinstance(alert, dict) and "diaSource" in alert:
        return _normalise(alert, "rubin", where or "")
    if isinstance(alert, dict) and "candidate" in alert:
        return _normalise(alert, "ztf", where or "")
    raise CutoutError(
        f"{where or 'alert'}: not a ZTF or Rubin alert (a dict with a 'candidate' or "
        "'diaSource' field is expected)",
        where,
    )


def read_alert(reference, channels=("SCI", "REF", "DIFF"), cutout_size=-1):
    """Read one candidate of an alert file: :func:`otrain.cutouts.read_cutout` for alerts.

    Parameters
    ----------
    reference : str or path-like
        ``file`` (a file of one alert) or ``file#id`` (see the module's documentation).
    channels : sequence of str, default ("SCI", "REF", "DIFF")
        Among ``SCI``, ``REF``, ``DIFF``; a comma-separated string is accepted.
    cutout_size : int, default -1
        Side of the centred square crop, or -1 for the native size.

    Returns
    -------
    image : ndarray of shape (H, W, C), float32
        Edge stamps NaN-padded (``keywords["edge"]`` True).
    keywords : dict
        otrain's keyword columns (``path`` is the reference) plus :data:`ALERT_COLUMNS`.

    Raises
    ------
    CutoutError
        If the file is not a readable alert file, holds no alert of that id, holds
        several and none was named, or the alert's stamps cannot be used.

    Examples
    --------
    >>> image, keywords = read_alert("alerts/472263571115115000.avro")  # doctest: +SKIP
    >>> image.shape, keywords["objectId"], keywords["drb"]  # doctest: +SKIP
    ((63, 63, 3), 'ZTF17aaajnnn', 0.98764...)
    """
    from ._validation import check_channels, check_cutout_size

    channels = check_channels(channels)
    check_cutout_size(cutout_size)
    return _read_reference(os.fspath(reference), channels, cutout_size)


def _read_reference(reference, channels, cutout_size):
    alert = _single_alert(reference) if reference.lower().endswith(".avro") else None
    if alert is None:
        alert = _find(reference)
    return _candidate(alert, channels, cutout_size, reference)


def _single_alert(path):
    """The alert of a one-alert Avro file, or None where :func:`_find` must read it.

    A folder of ZTF's archive is thousands of one-alert files, each read once: they
    skip the file cache and :class:`_AvroFile` (a fifth of the time spent outside the
    stamps), and are decoded as :func:`_decode` decodes one-record blocks. Anything
    else (several records or blocks, compressed blocks, cutouts that are not the
    record's last fields, a damaged or unreadable file) returns None, and the general
    path reads the file and says what is wrong with it.
    """
    try:
        with _contents(path) as data:
            header, offset = _avro_header(data, path)
            schema = _schema(header["meta"]["avro.schema"], path)
            count, offset = _read_long(data, offset, path)
            length, offset = _read_long(data, offset, path)
            if (
                count != 1
                or offset + length + 16 != len(data)
                or header["meta"].get("avro.codec", b"null") != b"null"
                or data[offset + length :] != header["sync"]
            ):
                return None
            block = data[offset : offset + length]
    except CutoutError:
        return None
    record = _from_the_end(block, schema)
    return None if record is None else _normalise(record, schema.survey, path)


def _find(reference):
    path, alert_id = split_reference(reference)
    decoded = _open(path)
    if alert_id is None:
        if len(decoded) != 1:
            raise CutoutError(
                f"{path}: holds {len(decoded)} alerts; name one as "
                f"{make_reference(path, decoded.ids[0])} (a folder scan lists them all)",
                path,
            )
        return decoded.alert(0)
    number = decoded.index(alert_id)
    if number is None:
        raise CutoutError(f"{reference}: {path} holds no alert {alert_id}; check the id", reference)
    return decoded.alert(number)


# ---------------------------------------------------------------- writing


def write_fits(reference, path, *, overwrite=False):
    """Write one alert as a multi-extension FITS cutout (PRIMARY, SCI, REF, DIFF).

    The file is what :mod:`otrain.cutouts` reads: keywords CANDID, OBJECTID, RA, DEC,
    MAG, MAGERR, FILTER, FWHM, EDGE ('True'/'False'), FILE, POSDIFF, XPOS, YPOS and
    the survey's scores (RB, DRB, RELIAB) in the primary header, the three stamps as
    float32 images (edge stamps NaN-padded). Written atomically.

    Parameters
    ----------
    reference : str, path-like or dict
        A candidate reference (see :func:`read_alert`) or an alert dict.
    path : str or path-like
        The FITS file to write; a folder writes ``<folder>/<alert id>.fits``.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    CutoutError
        If the alert cannot be read.
    OutputError
        If the file exists (and ``overwrite`` is False) or cannot be written.
    """
    from astropy.io import fits

    from ._atomic import atomic_output
    from .exceptions import OutputError

    channels = tuple(CHANNEL_FIELDS)
    if isinstance(reference, dict):
        image, keywords = candidate_from_alert(reference, channels)
    else:
        image, keywords = read_alert(reference, channels)
    path = Path(path)
    if path.is_dir():
        path = path / f"{keywords['candid']}.fits"
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; remove it or pass overwrite=True")
    primary = fits.PrimaryHDU()
    header = primary.header
    header["CANDID"] = keywords["candid"]
    header["OBJECTID"] = keywords["objectId"]
    for key, column in (("RA", "ra"), ("DEC", "dec"), ("MAG", "mag"), ("MAGERR", "magerr"),
                        ("FWHM", "fwhm"), ("XPOS", "xpos"), ("YPOS", "ypos"), ("RB", "rb"),
                        ("DRB", "drb"), ("RELIAB", "reliability")):  # fmt: skip
        value = keywords[column]
        if math.isfinite(value):
            header[key] = value
    header["FILTER"] = keywords["filter"]
    header["EDGE"] = str(bool(keywords["edge"]))
    header["FILE"] = keywords["file"]
    header["POSDIFF"] = {"t": "T", "1": "T", "f": "F", "0": "F"}.get(keywords["isdiffpos"], "")
    # The reference (file#id), its end where it is longer than a card holds.
    header["ALERT"] = (keywords["candid"] if isinstance(reference, dict) else str(reference))[-68:]
    hdus = [primary] + [fits.ImageHDU(image[..., i], name=name) for i, name in enumerate(channels)]
    with atomic_output(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return path


# ---------------------------------------------------------------- streams


AlertScores = collections.namedtuple("AlertScores", ["ids", "p_real", "skipped"])
AlertScores.__doc__ = """One batch of scored alerts, as :func:`score_alerts` yields it.

Attributes
----------
ids : list of str
    Alert ids (ZTF candid, Rubin diaSourceId), in the order the alerts came.
p_real : ndarray of shape (n,), float64
    P(real) of each (calibrated when the classifier is).
skipped : list of (str, str)
    ``(alert id, reason)`` of the alerts of this batch left out (edge stamps,
    missing or non-FITS stamps).
"""


def score_alerts(classifier, alerts, *, batch_size=256, precision="auto", include_edge=False):
    """Score a stream of alert packets, batch by batch, in bounded memory.

    Alerts are decoded as they come, gathered into batches of ``batch_size`` and each
    batch is scored in one call of the network; the generator holds one batch at a
    time, however long the stream.

    Parameters
    ----------
    classifier : CutoutClassifier
        A fitted or loaded classifier; its channels (``channels_``) must be among SCI,
        REF and DIFF, its input size at most the stamps' (larger stamps are cropped).
    alerts : iterable of dict
        Alert packets as fastavro, fink-client or a Kafka consumer decode them, rows
        of a broker's Parquet file as dicts, or the alerts of :func:`iter_alerts`.
    batch_size : int, default 256
        Alerts scored together.
    precision : {"auto", "float32", "bfloat16"}, default "auto"
        Precision of the forward pass (see :mod:`otrain.precision`).
    include_edge : bool, default False
        Score edge stamps (NaN-padded) too; by default they are skipped, as in
        :func:`otrain.inference.score_files`.

    Yields
    ------
    AlertScores
        ``(ids, p_real, skipped)`` for each batch; the last one may be smaller.

    Examples
    --------
    >>> import fastavro
    >>> with open("alerts.avro", "rb") as handle:  # doctest: +SKIP
    ...     for batch in score_alerts(classifier, fastavro.reader(handle)):
    ...         for alert_id, p in zip(batch.ids, batch.p_real):
    ...             print(alert_id, p)
    """
    from .precision import choose_precision

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    scorer, _, _ = choose_precision(classifier, precision)
    shape = tuple(int(s) for s in classifier.model_.input_shape[1:])
    channels = tuple(getattr(classifier, "channels_", None) or ("DIFF",))
    crop = shape[0] if shape[0] == shape[1] else -1
    # One buffer for the whole stream: memory does not grow with it.
    buffer = np.empty((batch_size, *shape), np.float32)
    ids, skipped = [], []
    for alert in alerts:
        alert_id = "?"
        try:
            normalised = _as_alert(alert, None)
            alert_id = normalised["id"]
            image, keywords = _candidate(normalised, channels, crop, alert_id)
            if image.shape != shape:
                raise CutoutError(
                    f"{alert_id}: stamps of {'x'.join(map(str, image.shape))} where the model "
                    f"takes {'x'.join(map(str, shape))}",
                    alert_id,
                )
            if keywords["edge"] and not include_edge:
                skipped.append((alert_id, f"{alert_id}: edge stamp (NaN-padded), skipped"))
                continue
        except CutoutError as err:
            skipped.append((alert_id, str(err)))
            continue
        buffer[len(ids)] = image
        ids.append(alert_id)
        if len(ids) == batch_size:
            yield _score_batch(scorer, buffer, ids, skipped)
            ids, skipped = [], []
    if ids or skipped:
        yield _score_batch(scorer, buffer, ids, skipped)


def _score_batch(scorer, buffer, ids, skipped):
    if ids:
        p_real = np.asarray(scorer.predict_proba(buffer[: len(ids)])[:, 1], dtype=np.float64)
    else:
        p_real = np.empty(0, np.float64)
    return AlertScores(list(ids), p_real, list(skipped))


def _short(err):
    text = str(err).strip().splitlines()
    return text[0] if text and text[0] else type(err).__name__
