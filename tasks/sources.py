"""Reading the sources: Parquet paths or globs, or `table:NAME` in the DuckDB file.

`inspect_sources` checks everything that can be checked before a run writes
anything (files, schema, modalities, dimensions, class table, unique item ids,
gold values against the class names) and plans the partitions. Bad input
raises `SourceError` with a one-line reason.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import math
import os
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pairwise_core import embeddings
from pairwise_core.hierarchy import Level
from pairwise_core.validation import check_embeddings
from tasks.sql import statement
from tasks.store import DUCKDB_MEMORY, connect

EMBEDDING_SUFFIX = "_embedding"
URI_MARK = "://"  # s3://bucket/key: read through pyarrow's filesystems, not the local one
# How long pyarrow's GCS client retries a failed request. Its own default is 15 minutes a request: without
# network, a gs:// source hung a run's validation for over 12 minutes, silent and deaf to Ctrl-C, where s3://
# fails in about 14 s. 10 s is three to four attempts with the client's backoff. A source URI's own
# ?retry_limit_seconds= is kept for its listing; the files listed are opened with this limit.
GCS_RETRY_LIMIT_S = 10
GCS_SCHEMES = ("gs", "gcs")
# Rows per decoded record batch: small batches decode several times faster
# here than whole row groups (fresh memory is expensive to fault in) and keep
# memory flat; partitions (units of work) are made of whole row groups.
READ_BATCH_ROWS = 8192
COLUMN_BATCH_ROWS = 65_536  # rows per batch when validation reads one string column alone
TABLE_PREFIX = "table:"


JOINT = "joint"  # the joint label's modality in the tables and reports: no catalog modality may take it
# the names the tables and reports give to modality_a or modality_b themselves: a catalog's modality of that name
# merges with them (a modality `gold` against another was scored as gold_accuracy, its agreement lost)
RESERVED_MODALITIES = {JOINT: "the joint label", "gold": "the gold label (modality_b of the gold metrics)"}


class SourceError(ValueError):
    """The input cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class Source:
    """Where a table comes from: Parquet files, or a table inside the DuckDB file."""

    text: str

    @property
    def table(self) -> str | None:
        return self.text.removeprefix(TABLE_PREFIX) if self.text.startswith(TABLE_PREFIX) else None


def absolute(source: str) -> str:
    """A local path or glob joined to the working folder, as typed otherwise (no symbolic link resolved, no
    ``..`` dropped); a URI (``s3://...``) or ``table:NAME`` unchanged."""
    if URI_MARK in source or Source(source).table is not None or os.path.isabs(source):
        return source
    return os.path.join(os.getcwd(), source)


@dataclass(frozen=True)
class Partition:
    """A unit of work: some row groups of one Parquet file, read by path."""

    index: int
    path: str
    row_groups: tuple[int, ...]
    n_rows: int
    # columns the file's folders give (Hive style, ``label=dress/``) rather than the file: (name, value) pairs
    keys: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class GoldValues:
    """How the gold column's values meet the class names: a value that names no class counts as wrong in the
    leaf level's gold metrics (the parent level's compare it as it is) and is not reviewed, so the user is told
    how many there are."""

    n_labelled: int  # values neither null nor blank
    n_outside: int  # of them, values that are no class name
    outside_examples: tuple[str, ...]  # the commonest of those
    unnamed_classes: tuple[str, ...] = ()  # classes no value names: the label-aware review cannot suggest them

    def details(self) -> dict[str, Any]:
        """For runs.details."""
        return {"labelled": self.n_labelled, "outside_classes": self.n_outside,
                "outside_examples": list(self.outside_examples), "unnamed_classes": list(self.unnamed_classes)}


def positions(names: Sequence[str], order: Sequence[str]) -> list[int]:
    """Where each name of ``order`` stands in ``names`` (the same names): the rows that put ``names`` in that
    order."""
    position = {name: i for i, name in enumerate(names)}
    return [position[name] for name in order]


@dataclass(frozen=True)
class Plan:
    """What validation found, and how the items are split into partitions."""

    modalities: tuple[str, ...]
    dims: dict[str, int]
    class_names: tuple[str, ...]
    n_items: int
    gold_column: str | None
    item_files: tuple[str, ...] = ()
    partitions: tuple[Partition, ...] = field(default=())
    gold: GoldValues | None = None
    changed_column: str | None = None  # the items' version column, if the run was given one
    parent: Level | None = None  # the classes' parents, if the class table has a parent column
    # the item files' signatures (file_signatures) before validation read them; None for a DuckDB table: a run
    # checks them after its last pass, so that what it labelled is what was validated
    signatures: pa.Table | None = field(default=None, compare=False, repr=False)
    # the items' modalities (<modality>_embedding columns) that the classes have no embeddings for: left out
    unmatched: tuple[str, ...] = ()
    # and the classes' modalities that the items have no column for: left out too (an items export that lost its
    # image_embedding ran on the text alone, unsaid)
    classes_unmatched: tuple[str, ...] = ()

    def parents_by_class(self) -> dict[str, str] | None:
        """Each class's parent name (the metrics stage them as a table), if the classes have parents."""
        if self.parent is None:
            return None
        return {name: self.parent.names[i] for name, i in zip(self.class_names, self.parent.index, strict=True)}

    def in_class_order(self, class_names: tuple[str, ...]) -> Plan:
        """The plan with its classes (the same ones) in the order ``class_names`` gives, their parents too."""
        parents = self.parents_by_class()
        return replace(self, class_names=tuple(class_names),
                       parent=None if parents is None else Level.of([parents[n] for n in class_names]))

    def item_columns(self) -> list[str]:
        extra = [column for column in (self.gold_column, self.changed_column) if column]
        return ["item_id", *(f"{m}{EMBEDDING_SUFFIX}" for m in self.modalities), *dict.fromkeys(extra)]


# -- listing and schema --------------------------------------------------------


def parquet_files(pattern: str) -> list[str]:
    """The files a Parquet path, directory or glob names, sorted; raises if there are none.

    A URI (``s3://bucket/prefix/*.parquet``, ``gs://...``) is listed through
    pyarrow's filesystems and its files come back as URIs. A directory's hidden entries are left out.
    """
    if URI_MARK in pattern:
        found = _object_store_files(pattern)
    elif os.path.isdir(os.path.join(source_root(pattern), DELTA_LOG)):
        raise SourceError(f"{pattern}: {DELTA_TABLE}")
    elif os.path.isdir(pattern):
        found = sorted(str(p) for p in Path(pattern).rglob("*.parquet") if not hidden(p.relative_to(pattern).parts))
    elif glob.has_magic(pattern):
        found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    elif os.path.isfile(pattern):
        found = [pattern]
    else:
        raise SourceError(f"{pattern}: {_unreadable(pattern) or 'no such file'}")
    if not found:
        raise SourceError(f"{pattern}: {_unreadable(pattern) or 'matches no Parquet files'}")
    return found


DELTA_LOG = "_delta_log"
# A Delta Lake table's folder keeps the files of its earlier versions until a vacuum: its Parquet files read as a
# catalog give updated items twice and deleted ones as live
DELTA_TABLE = (f"a Delta Lake table ({DELTA_LOG}/): its folder also holds the files its log has removed, so its "
               "Parquet files would give items twice or deleted ones; give a snapshot written to Parquet (deltalake's "
               "DeltaTable(path).to_pyarrow_table()) or a DuckDB table of it (table:NAME)")


def hidden(parts: Sequence[str]) -> bool:
    """Whether a file under a directory source, by the names of its folders and its own below that directory, is
    one that Spark, Hive and pyarrow's datasets leave out: a name that begins with '.' or '_'. Those are a
    writer's temporary files (Spark's _temporary/ attempts) and markers (_SUCCESS, _delta_log/): read, a job
    still writing failed the run with a half-written file, or with its ids twice."""
    return any(part.startswith((".", "_")) for part in parts)


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # the folder value Hive and Spark write for a null key


def folder_keys(path: str, root: str) -> dict[str, str | None]:
    """The ``key=value`` folders between a source's ``root`` and one of its files: columns of that file's rows, as
    Hive, Spark (``partitionBy``), pyarrow's datasets and DuckDB read them. A catalog written partitioned by its
    label holds the label in its folder names alone: ``--gold-column label`` said "no such column". Values are
    text, %-escapes decoded; keys above the root (the user's own folders) are not columns."""
    relative = path.removeprefix(root) if URI_MARK in path else os.path.relpath(path, root or ".")
    keys: dict[str, str | None] = {}
    for folder in relative.strip("/").split("/")[:-1]:
        name, equals, value = folder.partition("=")
        if equals and name:
            keys[urllib.parse.unquote(name)] = None if value == HIVE_NULL else urllib.parse.unquote(value)
    return keys


def source_root(pattern: str) -> str:
    """The folder a Parquet source's files are found under: a directory itself, a glob's folders before its first
    wildcard, a file's own folder."""
    if URI_MARK not in pattern and os.path.isdir(pattern):
        return pattern
    parts = pattern.split("/")
    magic = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts) - 1)
    return "/".join(parts[:magic])


def _unreadable(pattern: str) -> str | None:
    """Why a local listing found nothing, if a folder it could not read is why: glob and rglob skip what they
    cannot read, and a folder without read access was reported as matching no Parquet files (a file in it, as
    no such file)."""
    parts = Path(pattern).parts
    folder = Path(*parts[:next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))] or ".")
    while not os.path.isdir(folder) and folder != folder.parent:
        folder = folder.parent
    return None if os.access(folder, os.R_OK | os.X_OK) else f"cannot read the folder {folder} (permission denied)"


def object_store(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for a URI and the path in it; a GCS one gives up after GCS_RETRY_LIMIT_S."""
    if uri.split(URI_MARK, 1)[0].lower() in GCS_SCHEMES and "retry_limit_seconds=" not in uri:
        uri = f"{uri}{'&' if '?' in uri else '?'}retry_limit_seconds={GCS_RETRY_LIMIT_S}"
    return pafs.FileSystem.from_uri(uri)


def _object_store_files(uri: str) -> list[str]:
    """An object, every Parquet object under a prefix, or the objects a glob matches (``*`` spans ``/``)."""
    scheme = uri.split(URI_MARK, 1)[0]
    try:
        store, path = object_store(uri)
        if glob.has_magic(path):
            first_magic = min(i for i, c in enumerate(path) if c in "*?[")
            base = path[:first_magic].rsplit("/", 1)[0]  # the folder every match lies under
            listed = store.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            found = [info.path for info in listed if info.is_file and fnmatch.fnmatchcase(info.path, path)]
        else:
            info = store.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise SourceError(f"{uri}: no such file")
            if info.type == pafs.FileType.Directory:
                listed = store.get_file_info(pafs.FileSelector(path, recursive=True))
                if any(i.path.removeprefix(path).strip("/").split("/")[0] == DELTA_LOG for i in listed):
                    raise SourceError(f"{uri}: {DELTA_TABLE}")
                found = [i.path for i in listed if i.is_file and i.path.endswith(".parquet")
                         and not hidden(i.path.removeprefix(path).split("/"))]
            else:
                found = [path]
    except (OSError, pa.ArrowInvalid) as error:
        # GCS's status goes on with a dump of its metadata (a kilobyte, the message again): the message is enough
        raise SourceError(f"{uri}: cannot list ({str(error).splitlines()[0].split(' error_info=')[0]})") from None
    return [f"{scheme}{URI_MARK}{key}" for key in sorted(found)]


FILES_SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())])


def file_signatures(paths: tuple[str, ...]) -> pa.Table:
    """Each file's size and modification time (FILES_SCHEMA), where its filesystem gives both: a file with the
    same ones still holds the same bytes (the test rsync and make rely on)."""
    rows = []
    for path in paths:
        try:
            if URI_MARK in path:
                store, key = object_store(path)
                info = store.get_file_info(key)
                size, mtime_ns = info.size, info.mtime_ns
            else:
                stat = os.stat(path)
                size, mtime_ns = stat.st_size, stat.st_mtime_ns
        except (OSError, pa.ArrowInvalid):
            continue
        if size is not None and mtime_ns is not None:
            rows.append({"path": path, "size": size, "mtime_ns": mtime_ns})
    return pa.Table.from_pylist(rows, schema=FILES_SCHEMA)


def _parquet_file(path: str) -> pq.ParquetFile:
    """A Parquet file to read; a local one memory-mapped: its pages are decoded straight from the page cache
    instead of copied out of it by read() calls first (a pass over 1M items on two threads: 14.6-16.5 s ->
    12.4-13.4 s, its system time 8.7-13 s -> 2.6-3.5 s). A file cut short while mapped then kills the
    process (SIGBUS) rather than failing the read: to the run, the same as a crash, which it survives."""
    try:
        if URI_MARK in path:
            store, key = object_store(path)
            return pq.ParquetFile(key, filesystem=store)
        return pq.ParquetFile(path, memory_map=True)
    except PermissionError as error:
        raise SourceError(f"{path}: cannot read ({error.strerror})") from None
    except (pa.ArrowInvalid, OSError) as error:
        raise SourceError(f"{path}: not a readable Parquet file ({error})") from None


def _table_schema(db: str, table: str) -> tuple[pa.Schema, int]:
    if not os.path.isfile(db):
        raise SourceError(f"table:{table}: the DuckDB file {db} does not exist")
    with connect(db, read_only=True) as con:
        try:
            schema = con.sql("SELECT * FROM query_table($name) LIMIT 0", params={"name": table}).to_arrow_table().schema
        except duckdb.Error as error:
            [(there,)] = con.execute(statement("source_table_exists"), {"name": table}).fetchall()
            if not there:
                raise SourceError(f"table:{table}: no such table in {db}") from None
            # a view over a table since dropped or altered: it is there, and "no such table" sent the user looking
            raise SourceError(f"table:{table}: is in {db} but cannot be read ({str(error).splitlines()[0]})") from None
        [(n_rows,)] = con.execute("SELECT count(*) FROM query_table($name)", {"name": table}).fetchall()
    return schema, n_rows


def read_table(source: Source, db: str, columns: list[str] | None = None) -> pa.Table:
    """The classes (a small table): whole, or ``columns``. A column that a Parquet file names more than once is
    refused if the run reads it (one of ``columns``; read whole: class_name, parent or an embedding) and left out
    otherwise. A DuckDB table names each column once."""
    if source.table is not None:
        _table_schema(db, source.table)
        with connect(db, read_only=True) as con:
            table = con.sql("SELECT * FROM query_table($name)", params={"name": source.table}).to_arrow_table()
        return _plain_strings(table.select(columns) if columns else table)
    paths = parquet_files(source.text)
    parts = []
    for path in paths:
        handle = _parquet_file(path)
        names = handle.schema_arrow.names
        read = columns if columns is not None else [
            name for name in names  # a parent or embedding column in another case too, to be refused
            if name in ("class_name", PARENT_COLUMN) or name.casefold() == PARENT_COLUMN  # (`_parent_level`,
            or name.casefold().endswith(EMBEDDING_SUFFIX)]  # `misnamed_embedding`)
        refuse_repeated(names, read, path if len(paths) > 1 else source.text)
        wanted = columns
        if columns is None and len(set(names)) < len(names):  # the others named more than once, left out
            wanted = [name for name in names if names.count(name) == 1]
        parts.append(_plain_strings(handle.read(columns=wanted)))
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # ArrowTypeError: a column of other types
        raise SourceError(f"{source.text}: files have incompatible schemas ({error})") from None


def refuse_repeated(names: Sequence[str], read: Iterable[str], where: str) -> None:
    """Refuse a column the run reads that a file names more than once (pyarrow writes such files): Arrow finds
    a column by its name, and which of them is meant cannot be told. Unchecked, the run failed after it had
    started, or with a traceback. A column the run does not read may repeat."""
    for name in read:
        if (count := names.count(name)) > 1:
            raise SourceError(f"{where}: column {name} appears {count} times; the run reads it by name, so it must "
                              "appear once")


def _plain_strings(table: pa.Table) -> pa.Table:
    """Dictionary-encoded and view strings as plain ones: files of one source may store class names either way
    (a dictionary and a plain string column do not concatenate)."""
    for index, (name, kind) in enumerate(zip(table.schema.names, table.schema.types, strict=True)):
        if is_text(kind) and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            table = table.set_column(index, name, table.column(index).cast(pa.string()))
    return table


SPARK_VECTOR_FIELDS = {"type", "size", "indices", "values"}  # Spark ML's VectorUDT, as its Parquet stores it


def _vector_hint(kind: pa.DataType) -> str:
    """What to do with a Spark ML vector column (a struct, dense or sparse, that no list reader reads)."""
    if pa.types.is_struct(kind) and {kind.field(i).name for i in range(kind.num_fields)} == SPARK_VECTOR_FIELDS:
        return ": a Spark ML vector; write it as an array (pyspark.ml.functions.vector_to_array)"
    return ""


def _embedding_columns(schema: pa.Schema, where: str) -> dict[str, pa.DataType]:
    found = {}
    for name in schema.names:
        if not name.endswith(EMBEDDING_SUFFIX):
            continue
        if name == EMBEDDING_SUFFIX:  # a modality without a name: rows of modality '' in every table and report
            raise SourceError(f"{where}: column {name} names no modality: name it <modality>{EMBEDDING_SUFFIX}")
        kind = schema.field(name).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
            raise SourceError(f"{where}: column {name} must be a list of floats, got {kind}{_vector_hint(kind)}")
        if not pa.types.is_floating(kind.value_type):
            raise SourceError(f"{where}: column {name} must be a list of floats, got a list of {kind.value_type}")
        found[name.removesuffix(EMBEDDING_SUFFIX)] = kind
    return found


def is_text(kind: pa.DataType) -> bool:
    """Strings however Arrow holds them: plain, large, views, or dictionary-encoded (pandas' category, polars'
    Categorical and Enum, DuckDB's ENUM: the usual way labels are stored). Every reader casts them to string."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _require(schema: pa.Schema, column: str, where: str, *, valueless: bool = False) -> None:
    """A string ``column``; ``valueless``: or one typed null, of no value at all (what pandas and polars write of
    a column of None), as a gold column may be: a night's file that nobody labelled stopped the run."""
    if column not in schema.names:
        raise SourceError(f"{where}: missing column {column}")
    kind = schema.field(column).type
    if not (is_text(kind) or valueless and pa.types.is_null(kind)):
        raise SourceError(f"{where}: column {column} must be a string, got {kind}")


# -- validation ----------------------------------------------------------------


# the last inspection of Parquet sources in this process: its key (the arguments and the files' signatures
# then, `_inspection_key`) and its plan
_last_inspection: tuple[tuple[Any, ...], Plan] | None = None


def inspect_sources(
    items: str, classes: str, *, db: str, gold_column: str | None, chunk_size: int, changed_column: str | None = None
) -> Plan:
    """Check the sources and plan the partitions, reading schemas and the class table only.

    Parquet sources inspected again in this process, none of their files changed since (size and modification
    time, the test the incremental nights trust), give the plan made then: `pairwise run` checks its sources
    before it starts the flow, whose own check (a deployment's run has no CLI before it) so reads nothing
    again (1M items: 0.3 s of item ids and gold values).
    """
    global _last_inspection
    key = _inspection_key(items, classes, (items, classes, db, gold_column, chunk_size, changed_column))
    last = _last_inspection
    if key is not None and last is not None and last[0] == key:
        return last[1]
    plan = _inspect(items, classes, db=db, gold_column=gold_column, chunk_size=chunk_size,
                    changed_column=changed_column)
    if key is not None:
        _last_inspection = (key, plan)
    return plan


def _inspection_key(items: str, classes: str, arguments: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The arguments and the signatures of every file they name; None for a DuckDB table, or files missing
    or without a signature (the inspection then runs, and says what is wrong). Items that cannot be listed
    raise the SourceError the inspection would raise first."""
    if Source(items).table is not None or Source(classes).table is not None:
        return None
    item_files = parquet_files(items)  # the inspection's first error if it fails: not listed twice (gs://: 10 s)
    try:
        paths = (*item_files, *parquet_files(classes))
    except SourceError:
        return None
    signatures = file_signatures(paths)
    if signatures.num_rows != len(paths):
        return None
    return (*arguments, *zip(*(signatures.column(c).to_pylist() for c in signatures.column_names), strict=True))


def _inspect(
    items: str, classes: str, *, db: str, gold_column: str | None, chunk_size: int, changed_column: str | None
) -> Plan:
    item_source, class_source = Source(items), Source(classes)
    if item_source.table is not None:
        item_schema, n_items = _table_schema(db, item_source.table)
        signatures = None
        files: list[str] = []
        metadata: list[pq.ParquetFile] = []
        first = 0
        keys: dict[str, dict[str, str | None]] = {}
    else:
        files = parquet_files(items)
        signatures = file_signatures(tuple(files))  # before anything is read: a file replaced after it shows
        metadata = [_parquet_file(path) for path in files]
        # the other files are checked against the first that has rows
        first = next((k for k, meta in enumerate(metadata) if meta.metadata.num_rows), 0)
        item_schema, n_items = metadata[first].schema_arrow, sum(m.metadata.num_rows for m in metadata)
        keys = _folder_columns(items, files, item_schema)
        item_schema = with_folder_columns(item_schema, keys[files[first]])
    if n_items == 0:  # before the columns: a folder of empty files typed null has no string item_id either
        raise SourceError(f"{items}: no items")
    where = files[first] if len(files) > 1 else items  # of several files, the one whose columns are checked
    # every embedding column: they make the modalities, and each is checked
    refuse_repeated(item_schema.names, ["item_id", *(n for n in item_schema.names if n.endswith(EMBEDDING_SUFFIX)),
                                        *(c for c in (gold_column, changed_column) if c is not None)], where)
    _require(item_schema, "item_id", where)
    if gold_column is not None:
        if gold_column not in item_schema.names:
            raise SourceError(f"{items}: --gold-column {gold_column}: no such column; the items have "
                              f"{', '.join(item_schema.names)}")
        _require(item_schema, gold_column, where, valueless=True)
    if changed_column is not None and (changed_column not in item_schema.names or changed_column == "item_id"
                                       or changed_column.endswith(EMBEDDING_SUFFIX)):
        raise SourceError(f"{items}: --changed-column {changed_column}: no such column apart from item_id and the "
                          f"embeddings; the items have {', '.join(item_schema.names)}")
    if changed_column is not None and pa.types.is_nested(kind := item_schema.field(changed_column).type):
        # its values are compared as text: a list or struct has none (the run failed after registering)
        raise SourceError(f"{where}: --changed-column {changed_column} holds {kind} values; it must hold one value "
                          "an item: a version number or text, or a date or time")

    class_table = read_table(class_source, db)
    _require(class_table.schema, "class_name", classes)
    names = class_table.column("class_name").to_pylist()
    if len(names) < 2:
        raise SourceError(f"{classes}: {len(names)} class(es); at least 2 are needed to reclassify")
    if nulls := [str(row) for row, name in enumerate(names) if name is None]:  # "has nulls" said not where
        raise SourceError(f"{classes}: class_name is null in rows {first_few(nulls)}")
    if blank := [str(row) for row, name in enumerate(names) if not name.strip()]:
        raise SourceError(f"{classes}: class_name is empty or blank in rows {first_few(blank)}")
    parents = (class_table.column(PARENT_COLUMN).to_pylist() if PARENT_COLUMN in class_table.column_names
               and class_table.column_names.count(PARENT_COLUMN) == 1 else None)
    if duplicates := duplicate_names(names, parents):
        raise SourceError(f"{classes}: {duplicates}")
    refuse_lookalikes(names, "class names", classes)

    parent = _parent_level(class_table, classes)
    if misnamed := misnamed_embedding(item_schema.names, class_table.column_names, classes):
        raise SourceError(f"{where}: {misnamed}")
    item_modalities = _embedding_columns(item_schema, where)
    class_modalities = _embedding_columns(class_table.schema, classes)
    modalities = tuple(m for m in item_modalities if m in class_modalities)
    if reserved := next((m for m in modalities if m in RESERVED_MODALITIES), None):
        raise SourceError(f"{items}: a modality may not be named {reserved} ({reserved}{EMBEDDING_SUFFIX}): "
                          f"{RESERVED_MODALITIES[reserved]} has that name in the tables and reports; rename the "
                          "column in both files")
    if not modalities:
        raise SourceError(
            f"no modality shared by items ({', '.join(item_modalities) or 'none'}) "
            f"and classes ({', '.join(class_modalities) or 'none'}): expected <modality>{EMBEDDING_SUFFIX} columns"
        )
    dims = {}
    for modality in modalities:
        column = f"{modality}{EMBEDDING_SUFFIX}"
        _check_class_lists(class_table.column(column), names, f"{classes}: {column}")
        try:
            class_matrix = check_embeddings(embeddings(class_table, column), f"{classes}: {column}", classes=names)
        except ValueError as error:
            raise SourceError(str(error)) from None
        dims[modality] = class_matrix.shape[1]
        item_dim = _item_dim(item_schema.field(column).type, column, dims[modality], db=db, table=item_source.table,
                             handle=metadata[first] if files else None)
        if item_dim is not None and item_dim != dims[modality]:
            raise SourceError(f"{column}: items have {item_dim} dimensions, classes have {dims[modality]}")
    further = [column for column in (gold_column, changed_column) if column is not None]
    for path, meta in zip(files, metadata, strict=True):
        if path != files[first]:
            _check_columns(meta, item_schema, dims, further, path, files[first], keys[path])
    # last: the checks above read schemas and the class table only, these two read a column of every item
    _check_unique_ids(item_source, files, db, keys)
    gold = (_gold_values(item_source, files, db, gold_column, names, parent.names if parent else (), keys)
            if gold_column is not None else None)
    partitions = tuple(plan_partitions(files, chunk_size, keys)) if files else ()
    return Plan(modalities, dims, tuple(names), n_items, gold_column, tuple(files), partitions, gold, changed_column,
                parent, signatures, tuple(m for m in item_modalities if m not in modalities),
                tuple(m for m in class_modalities if m not in modalities))


PARENT_COLUMN = "parent"


def _folder_columns(pattern: str, files: list[str], schema: pa.Schema) -> dict[str, dict[str, str | None]]:
    """Each file's folder keys (``folder_keys``) that the files do not hold as columns (a column of the file
    wins, as in DuckDB's reading)."""
    root = source_root(pattern)
    return {path: {name: value for name, value in folder_keys(path, root).items() if name not in schema.names}
            for path in files}


def with_folder_columns(schema: pa.Schema, keys: dict[str, str | None]) -> pa.Schema:
    """A file's schema with the text columns its folder ``keys`` give it (those it does not hold itself)."""
    return pa.schema([*schema, *(pa.field(name, pa.string()) for name in keys if name not in schema.names)])


def folder_column(value: str | None, n_rows: int) -> pa.Array:
    """A folder key's column for ``n_rows`` rows: its value in every row."""
    return pa.repeat(pa.scalar(value, pa.string()), n_rows)


def _checked_schema(meta: pq.ParquetFile, first: pa.Schema) -> pa.Schema:
    """The file's schema as the checks see it: a file without rows adds no items, so a column of it typed null
    (what an empty pandas frame of object columns writes, as a night's empty partition may be) is taken as of
    the ``first`` file's type. Its other columns are checked as any file's."""
    schema = meta.schema_arrow
    if meta.metadata.num_rows:
        return schema
    for index, column in enumerate(schema):
        # -1: not in the first file, or named more than once there (a column the run does not read, then)
        if pa.types.is_null(column.type) and (at := first.get_field_index(column.name)) >= 0:
            schema = schema.set(index, column.with_type(first.field(at).type))
    return schema


def _check_columns(meta: pq.ParquetFile, first: pa.Schema, dims: dict[str, int], further: list[str], path: str,
                   first_path: str, keys: dict[str, str | None]) -> None:
    """A further file of the source has the columns the run reads (item_id, the modalities' embeddings and
    the ``further`` columns), of types it reads like the first file's, in the file or its folder ``keys``.
    Other columns, the columns' order and their nullability may differ, as in files written on other days by
    other writers."""
    schema = _checked_schema(meta, first)
    schema = with_folder_columns(schema, keys)
    read = ["item_id", *(f"{m}{EMBEDDING_SUFFIX}" for m in dims), *further]
    refuse_repeated(schema.names, read, path)
    for name in read:
        if name not in schema.names:
            raise SourceError(f"{path}: missing column {name}, which {first_path} has")
        kind = schema.field(name).type
        if name.endswith(EMBEDDING_SUFFIX):
            _embedding_columns(pa.schema([schema.field(name)]), path)
            dim = dims[name.removesuffix(EMBEDDING_SUFFIX)]
            if (size := _item_dim(kind, name, dim, handle=meta)) is not None and size != dim:
                raise SourceError(f"{path}: {name}: items have {size} dimensions, classes have {dim}")
        elif name == "item_id" or is_text(first.field(name).type):
            _require(schema, name, path, valueless=name != "item_id")


def _check_class_lists(column: pa.ChunkedArray, names: list[str], name: str) -> None:
    """Every class has an embedding, all of one length: else say which classes do not."""
    column = column.combine_chunks()
    if nulls := [names[row] for row in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))]:
        raise SourceError(f"{name} is null for classes {', '.join(nulls[:EXAMPLES])}")
    if pa.types.is_fixed_size_list(column.type):
        return
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    common = int(np.bincount(lengths).argmax())
    if odd := [f"{names[row]} ({lengths[row]})" for row in np.flatnonzero(lengths != common)]:
        raise SourceError(f"{name} has {common} values for most classes, other counts for {', '.join(odd[:EXAMPLES])}")


def _parent_level(class_table: pa.Table, classes: str) -> Level | None:
    """The classes' parents from the optional parent column: one per class, none missing."""
    if misnamed := misnamed_parent(class_table.column_names):
        raise SourceError(f"{classes}: {misnamed}")
    if PARENT_COLUMN not in class_table.column_names:
        return None
    _require(class_table.schema, PARENT_COLUMN, classes)
    parents = class_table.column(PARENT_COLUMN).to_pylist()
    orphans = [name for name, parent in zip(class_table.column("class_name").to_pylist(), parents, strict=True)
               if parent is None or not parent.strip()]  # a blank parent would be a nameless group
    if orphans:
        raise SourceError(f"{classes}: parent is null or blank for classes {first_few(orphans)}")
    refuse_lookalikes(parents, "parents", classes)
    return Level.of(parents)


def misnamed_parent(columns: Iterable[str]) -> str | None:
    """What to say of a column named parent in another case (``Parent``, as a spreadsheet heads it), if there is
    one. Columns are matched by their exact names, as class_name is; unsaid, such a column was left out and the
    run labelled one level without a word."""
    misnamed = [name for name in columns if name != PARENT_COLUMN and name.casefold() == PARENT_COLUMN]
    if not misnamed:
        return None
    return (f"column {misnamed[0]}: a parent column must be named {PARENT_COLUMN}, in lower case, as columns are "
            "matched by their exact names; rename it")


def misnamed_embedding(items: Sequence[str], classes: Sequence[str], where: str) -> str | None:
    """What to say of an embedding column the items and the classes (``where``) head in different cases
    (``Image_Embedding`` and ``image_embedding``), or both with the suffix in another case, if there is one.
    Columns are matched by their exact names: unsaid, that modality was left out of the run without a word
    (exit 0 on the other modalities), or the run was refused for sharing none, naming neither column."""
    folded = {name.casefold(): name for name in classes if name.casefold().endswith(EMBEDDING_SUFFIX)}
    for name in items:
        other = folded.get(name.casefold())
        if other is None:
            continue
        if other != name and name not in classes and other not in items:
            return (f"column {name}: the classes ({where}) have {other}; embedding columns are matched by their "
                    f"exact names, case included, so neither is read: name them alike, <modality>{EMBEDDING_SUFFIX} "
                    "with the suffix in lower case")
        if other == name and not name.endswith(EMBEDDING_SUFFIX):
            return (f"column {name}, in the items and the classes ({where}): an embedding column's name must end in "
                    f"{EMBEDDING_SUFFIX}, in lower case, as columns are matched by their exact names; rename it in both")
    return None


def refuse_lookalikes(names: Iterable[str], what: str, where: str) -> None:
    """Refuse two distinct names that are one once NFC-normalized and stripped ('café' as one code point or as
    'e' and an accent, 'shirt' and 'shirt '): they would be two classes or parents shown as identical rows."""
    seen: dict[str, str] = {}
    for name in dict.fromkeys(names):
        other = seen.setdefault(unicodedata.normalize("NFC", name).strip(), name)
        if other == name:
            continue
        forms = other.strip() != name.strip()  # quoted shows spaces, not how an accent is encoded: say which
        spaces = unicodedata.normalize("NFC", other) != unicodedata.normalize("NFC", name)
        why = ("Unicode normalization and surrounding spaces" if forms and spaces
               else "Unicode normalization" if forms else "surrounding spaces")
        raise SourceError(f"{where}: {what} {quoted((other, name))} are one name but for {why}")


# Fewer gold values than this share naming a class: the column holds something else (codes, another
# taxonomy), and its accuracy, calibration and review would mean nothing.
GOLD_MIN_SHARE = 0.5
EXAMPLES = 3  # ids or values an error or a log line shows


def duplicate_names(names: Sequence[str], parents: Sequence[Any] | None = None) -> str | None:
    """What repeats among the class names, for a one-line error, or None. Where a repeated name is under more
    than one parent (a taxonomy's "mouse" under animal and under device), it says so and how to name them
    apart: a class is a name, whatever its parent, and "duplicate class names mouse" alone read as a slip."""
    counts: dict[str, list[Any]] = {}
    for k, name in enumerate(names):
        counts.setdefault(name, []).append(parents[k] if parents is not None else None)
    duplicates = sorted(name for name, under in counts.items() if len(under) > 1)
    if not duplicates:
        return None
    shown = first_few(duplicates)
    split = [name for name in duplicates if len(set(counts[name])) > 1]
    if not split:
        return f"duplicate class names {shown}"
    name = split[0]
    under = sorted({str(parent) for parent in counts[name]})
    return (f"duplicate class names {shown} ({name} is under {' and '.join(under)}): a class name must be unique "
            f"across parents; name the leaves apart, e.g. '{name} ({under[0]})'")


def first_few(values: Sequence[str], show: Callable[[Sequence[str]], str] = ", ".join) -> str:
    """The first EXAMPLES of ``values`` as a message lists them (``show``), and how many more there are."""
    more = f" and {len(values) - EXAMPLES:,} more" if len(values) > EXAMPLES else ""
    return show(values[:EXAMPLES]) + more


@contextmanager
def _one_column(source: Source, files: list[str], db: str, column: str,
                keys: dict[str, dict[str, str | None]] | None = None) -> Iterator[pa.RecordBatchReader]:
    """One column of the items, streamed as strings named ``value``: Parquet decodes that column's pages
    alone (an s3:// file too, through the same reader) and DuckDB scans that column alone: no embedding is
    read. A file whose pages of that column will not decode is bad input, named. A table's ``files`` are
    none, or its staged copy. A column of a file's folder ``keys`` is that key's value in every row."""
    if not files:
        with connect(db, read_only=True) as con:
            yield con.sql(statement("source_column"), params={"name": source.table, "column": column}) \
                .to_arrow_reader(COLUMN_BATCH_ROWS)
        return
    schema = pa.schema([pa.field("value", pa.string())])
    unreadable: list[SourceError] = []  # DuckDB, which consumes the batches, hides which file failed

    def batches() -> Iterator[pa.RecordBatch]:
        for path in files:
            folder = (keys or {}).get(path, {})
            try:
                if column in folder:
                    n_rows = _parquet_file(path).metadata.num_rows
                    for start in range(0, n_rows, COLUMN_BATCH_ROWS):
                        yield pa.record_batch([folder_column(folder[column], min(COLUMN_BATCH_ROWS, n_rows - start))],
                                              schema=schema)
                    continue
                # by name: asked for column 'gold.label', pyarrow also reads a struct gold's field label
                for batch in _parquet_file(path).iter_batches(batch_size=COLUMN_BATCH_ROWS, columns=[column]):
                    yield pa.RecordBatch.from_arrays([batch.column(column).cast(pa.string())], schema=schema)
            except (OSError, pa.ArrowException) as error:
                unreadable.append(SourceError(f"{path}: cannot read column {column} ({error})".splitlines()[0]))
                raise

    try:
        yield pa.RecordBatchReader.from_batches(schema, batches())
    except duckdb.Error:
        if unreadable:
            raise unreadable[0] from None
        raise


def _check_unique_ids(source: Source, files: list[str], db: str,
                      keys: dict[str, dict[str, str | None]] | None = None) -> None:
    """Refuse null and duplicate item ids now, naming a few: found only after both passes, they cost a whole run."""
    with _one_column(source, files, db, "item_id", keys) as ids, duckdb.connect(config=DUCKDB_MEMORY) as con:
        con.register("item_ids", ids)
        duplicates = con.execute(statement("check_duplicate_items"), {"examples": EXAMPLES}).fetchall()
    if duplicates and duplicates[0][0] is None:
        n = duplicates[0][1]
        raise SourceError(f"{source.text}: item_id is null in {n:,} row{'s' * (n != 1)}; every item needs an id")
    if duplicates:
        shown = ", ".join(f"{item_id} ({n}x)" for item_id, n, _ in duplicates)
        raise SourceError(f"{source.text}: item_id must be unique; ids that repeat: {duplicates[0][2]:,}, "
                          f"e.g. {shown}")


def _gold_values(source: Source, files: list[str], db: str, gold_column: str, names: list[str],
                 parents: Iterable[str] = (), keys: dict[str, dict[str, str | None]] | None = None) -> GoldValues:
    """Count the gold values that name no class; refuse a column where most do not (saying so when they name
    the classes' parents: the gold column names leaf classes, and the parent level is scored from them)."""
    with _one_column(source, files, db, gold_column, keys) as gold, duckdb.connect(config=DUCKDB_MEMORY) as con:
        con.register("gold", gold)
        con.register("classes", pa.table({"class_name": pa.array(names, pa.string())}))
        counted = con.execute(statement("check_gold_values"), {"examples": EXAMPLES}).fetchone()
    n_labelled, n_outside, examples, unnamed = counted
    values = GoldValues(int(n_labelled), int(n_outside), tuple(examples or ()), tuple(unnamed or ()))
    share = 1 - values.n_outside / values.n_labelled if values.n_labelled else 1.0
    if share < GOLD_MIN_SHARE:
        shown = math.floor(share * 1000) / 10  # 49.97% is not "50.0%" in a message that says it is too few
        named = [value for value in values.outside_examples if value in set(parents)]
        raise SourceError(
            f"--gold-column {gold_column}: only {shown:.1f}% of its values ({values.n_labelled:,}, neither null nor "
            f"blank) are class names (not class names: {quoted(values.outside_examples)}; class names: "
            f"{quoted(names[:EXAMPLES])})" + (f"; {quoted(named)} name parents: a gold column names the leaf "
                                              "classes, and the parent level is scored from them" if named else ""))
    return values


def quoted(values: Iterable[str]) -> str:
    """Values as a message shows them: quoted, so that an empty value or a trailing space can be seen, and
    with characters that print as nothing or as a space (a no-break space) escaped."""
    shown = (json.dumps(value, ensure_ascii=False) for value in values)
    return ", ".join("".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text) for text in shown)


_DIM_SAMPLE_ROWS = 1000


def _item_dim(kind: pa.DataType, column: str, dim: int, *, handle: pq.ParquetFile | None = None, db: str = "",
              table: str | None = None) -> int | None:
    """The dimension of a Parquet file's (``handle``) or a DuckDB table's embeddings: from the type when fixed,
    else the commonest length among the first rows that are not null; None if every row is null. ``dim`` is
    the classes': a file whose metadata shows every row of that length on average, none null, is not read.

    A single bad row must not decide it: rows of another length are rejected one by one later, while a whole
    column of the wrong length stops the run. Each file is sampled: the first file's first rows alone were, and
    a further file of another length (or a first whose first rows were null) had every row rejected, exit 0.
    """
    if pa.types.is_fixed_size_list(kind):
        return kind.list_size
    if table is not None:
        with connect(db, read_only=True) as con:
            sample = con.sql(statement("source_embedding_sample"),
                             params={"name": table, "column": column, "n": _DIM_SAMPLE_ROWS}).to_arrow_table().column(0)
        return _commonest_length(sample)
    if _all_of_length(handle.metadata, column, dim):
        return dim
    for batch in handle.iter_batches(batch_size=_DIM_SAMPLE_ROWS, columns=[column]):
        if (length := _commonest_length(batch.column(0))) is not None:
            return length
    return None


def _commonest_length(lists: pa.Array | pa.ChunkedArray) -> int | None:
    lengths = pc.drop_null(pc.list_value_length(lists))
    if len(lengths) == 0:
        return None
    values, counts = np.unique(lengths.to_numpy(), return_counts=True)
    return int(values[np.argmax(counts)])


def _all_of_length(meta: pq.FileMetaData, column: str, dim: int) -> bool:
    """Whether every row group's values of a list ``column`` number its rows times ``dim``, none null (no null
    list, element or empty list): its rows are then ``dim`` long on average, not all of another length. False
    where the metadata cannot tell (no statistics)."""
    leaves = [i for i in range(meta.num_columns) if meta.schema.column(i).path.startswith(f"{column}.")]
    if len(leaves) != 1:
        return False
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        chunk = group.column(leaves[0])
        statistics = chunk.statistics
        if (statistics is None or not statistics.has_null_count or statistics.null_count
                or chunk.num_values != group.num_rows * dim):
            return False
    return True


def plan_partitions(files: list[str], chunk_size: int,
                    keys: dict[str, dict[str, str | None]] | None = None) -> Iterator[Partition]:
    """Consecutive row groups of each file, about chunk_size rows per partition, with the file's folder keys."""
    index = 0
    for path in files:
        folder = tuple((keys or {}).get(path, {}).items())
        meta = _parquet_file(path).metadata
        group: list[int] = []
        rows = 0
        for row_group in range(meta.num_row_groups):
            group.append(row_group)
            rows += meta.row_group(row_group).num_rows
            if rows >= chunk_size:
                yield Partition(index, path, tuple(group), rows, folder)
                index, group, rows = index + 1, [], 0
        if group:
            yield Partition(index, path, tuple(group), rows, folder)
            index += 1


# -- staging and reading -------------------------------------------------------


def stage_table(db: str, table: str, directory: Path, chunk_size: int) -> list[str]:
    """Copy a DuckDB table to Parquet (row groups of chunk_size) so that partitions read it by path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "part-00000.parquet"
    with connect(db, read_only=True) as con:
        reader = con.sql("SELECT * FROM query_table($name)", params={"name": table}).to_arrow_reader(chunk_size)
        with pq.ParquetWriter(path, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch, row_group_size=chunk_size)
    return [str(path)]


def check_staged_table(source: Source, files: list[str], n_items: int) -> None:
    """SourceError unless the staged copy of a DuckDB items table holds what validation checked: a writer in
    between added rows whose ids were never checked, and a run labelled and committed duplicate ids."""
    n_staged = sum(_parquet_file(path).metadata.num_rows for path in files)
    if n_staged != n_items:
        raise SourceError(f"{source.text}: changed while the run read it ({n_items:,} rows when validated, "
                          f"{n_staged:,} when staged); nothing was committed: run again once its writer is done")
    _check_unique_ids(source, files, "")  # the same rows in number, some replaced: the ids of the copy


def read_partition(partition: Partition, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Stream a partition's rows in record batches of at most READ_BATCH_ROWS.

    Decoded on the calling thread: partitions already run in parallel, and
    Arrow's own pool on top made both passes slower (1M items: 5-9%). A column of the file's folder keys is
    added, its value in every row.
    """
    folder = {name: value for name, value in partition.keys if name in columns}
    batches = _parquet_file(partition.path).iter_batches(
        batch_size=READ_BATCH_ROWS, row_groups=list(partition.row_groups),
        columns=[column for column in columns if column not in folder], use_threads=False
    )
    for batch in batches:
        for name, value in folder.items():
            batch = batch.append_column(name, folder_column(value, batch.num_rows))
        yield batch


@dataclass(frozen=True)
class BatchEmbeddings:
    """One modality of one record batch: the usable rows as float32, and why the others are rejected."""

    x: np.ndarray  # (n_valid, d)
    valid: np.ndarray  # (n,) bool
    reasons: np.ndarray  # (n,) object: None where valid
    square_norms: np.ndarray  # (n_valid,) float32, of the rows of x (validation computes them anyway)

    def inverse_norms(self) -> np.ndarray:
        """1 / |x| per usable row: scales products to those of unit rows without a scaled copy of x."""
        return 1 / np.sqrt(self.square_norms)


def matrix(batch: pa.RecordBatch, modality: str, dim: int) -> BatchEmbeddings:
    """A modality's embeddings, with the bad rows set aside instead of failing the run.

    A row is rejected for this modality when its embedding is null, has the
    wrong number of values, holds a NaN, Inf or null value, or is all zeros; and when its square norm
    overflows or underflows float32 (values past about 1e19, or all below about 1e-23): its cosines would be
    NaN or wrong.
    """
    column = batch.column(f"{modality}{EMBEDDING_SUFFIX}")
    n = batch.num_rows
    reasons = np.full(n, None, dtype=object)
    null = np.asarray(column.is_null(), dtype=bool)
    reasons[null] = "null embedding"
    if pa.types.is_fixed_size_list(column.type):
        lengths = np.full(n, column.type.list_size)
    else:
        lengths = np.asarray(column.value_lengths().fill_null(dim), dtype=np.int64)
    wrong = ~null & (lengths != dim)
    for row in np.flatnonzero(wrong):
        reasons[row] = f"embedding has {lengths[row]} values, expected {dim}"
    shaped = ~null & ~wrong
    kept = column if shaped.all() else column.filter(pa.array(shaped))
    values = pc.list_flatten(kept) if not pa.types.is_fixed_size_list(kept.type) else kept.flatten()
    given = values.to_numpy(zero_copy_only=False).reshape(-1, dim)  # float16, 32 or 64, nulls as NaN
    with np.errstate(over="ignore"):  # float64 past float32's range: a reason below, not numpy's warning on stderr
        x = given.astype(np.float32, copy=False)
    square_norms = np.einsum("ij,ij->i", x, x)
    nonfinite = ~np.isfinite(square_norms)
    zero = square_norms == 0
    rows = np.flatnonzero(shaped)
    if nonfinite.any():  # the precise reasons only on the rare bad path
        bad_value = nonfinite & ~np.isfinite(given).all(axis=1)  # as given: 1e300 is too large, not Inf
        reasons[rows[bad_value]] = "NaN, Inf or null value in embedding"
        reasons[rows[nonfinite & ~bad_value]] = "embedding values too large (the square norm overflows float32)"
    if zero.any():
        tiny = zero & (given != 0).any(axis=1)  # as given: 1e-300 is too small, not zero
        reasons[rows[zero & ~tiny]] = "all-zero embedding"
        reasons[rows[tiny]] = "embedding values too small (the square norm underflows float32)"
    good = ~nonfinite & ~zero
    valid = np.zeros(n, dtype=bool)
    valid[rows[good]] = True
    if good.all():
        return BatchEmbeddings(x, valid, reasons, square_norms)
    return BatchEmbeddings(x[good], valid, reasons, square_norms[good])
