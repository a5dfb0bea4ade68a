"""Class embeddings from class names and prompt templates: the table `pairwise classes` writes.

A class's embedding in a modality is CLIP's prompt ensemble (Radford et al.
2021, section 3.1.4): every prompt's embedding normalized, their mean over the
templates, normalized again. So each template weighs the same whatever the
norms the encoder gives, and the result sits on the unit sphere as cosine
scoring expects. The table has `class_name`, one `<modality>_embedding` per
modality (what `pairwise run --classes` reads) and `<modality>_prompts`, the
prompts behind each embedding.
"""

from __future__ import annotations

import csv
import os
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.encoders import Encoder, encode
from tasks.sources import (EMBEDDING_SUFFIX, PARENT_COLUMN, duplicate_names, first_few, is_text, misnamed_parent,
                           refuse_lookalikes)
from tasks.sql import OWN_NAMES
from tasks.staging import replacing
from tasks.store import check_db_file, connect, run_lock

NAME_COLUMNS = ("class_name", "class", "name")  # the first one present in a CSV or Parquet names file
DEFAULT_TEMPLATE = "{}"
DEFAULT_MODALITY = "text"
PROMPTS_SUFFIX = "_prompts"
_PREFIX = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)  # image=a photo of a {}.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_FIELDS = ("", "0", "name")


class ClassesError(ValueError):
    """The names, templates or destination cannot be used; the message says why, in one line."""


# -- names ---------------------------------------------------------------------


def read_names(path: str) -> tuple[list[str], list[str] | None]:
    """Class names from a text file (one a line, blank lines skipped) or a CSV/Parquet column, and their
    parents when every line of a text file is ``leaf<TAB>parent`` or the table has a ``parent`` column (None
    otherwise)."""
    if os.path.isdir(path):
        raise ClassesError(f"--names {path}: a folder, not a file")
    if not os.path.isfile(path):
        raise ClassesError(f"--names {path}: no such file")
    suffix = Path(path).suffix.lower()
    parents = None
    if suffix in (".csv", ".parquet"):
        names, parents = _column_names(path, suffix)
    else:  # utf-8-sig: a byte order mark (Windows editors write one) is not part of the first name
        data = Path(path).read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = data[:error.start].count(b"\n") + 1
            raise ClassesError(f"--names {path}: not UTF-8 text (line {line}: {error.reason})") from None
        names, parents = _text_names(path, [(number, line) for number, line in enumerate(text.split("\n"), 1)
                                            if line.strip()])
    if not names:
        raise ClassesError(f"--names {path}: no class names")
    if duplicates := duplicate_names(names, parents):
        raise ClassesError(f"--names {path}: {duplicates}")
    refuse_lookalikes(names, "class names", f"--names {path}")  # `run` would refuse the table written
    if parents is not None:
        refuse_lookalikes(parents, "parents", f"--names {path}")
    return names, parents


PARENT_SEPARATOR = "\t"


def _text_names(path: str, lines: list[tuple[int, str]]) -> tuple[list[str], list[str] | None]:
    """``leaf`` lines, or ``leaf<TAB>parent`` lines (numbered): a file of both is refused, since a class without
    a parent would fail the run later, far from the file."""
    split = [_fields(line) for _, line in lines]
    if split and _is_header(split[0]):
        raise ClassesError(f"--names {path}: line {_shown(*lines[0])} looks like a header, not a class: remove it, "
                           "or use a .csv file, whose header is read")
    with_parent = [len(parts) > 1 for parts in split]
    if not any(with_parent):
        return [parts[0] for parts in split], None
    tabbed = _shown(*lines[with_parent.index(True)])  # the line that made it a file with parents
    for parts, (number, line) in zip(split, lines, strict=True):
        if len(parts) != 2 or not all(parts):
            what = ("no tab" if len(parts) == 1 else f"{len(parts) - 1} tabs" if len(parts) > 2
                    else "an empty leaf" if not parts[0] else "an empty parent")
            tab = f" while line {tabbed} has a tab" if len(parts) == 1 else ""
            raise ClassesError(f"--names {path}: line {_shown(number, line)} is not leaf<TAB>parent ({what}){tab}; "
                               "with parents, every line must be one")
    return [leaf for leaf, _ in split], [parent for _, parent in split]


def _is_header(fields: list[str]) -> bool:
    """A first line of the column names a .csv names file takes (class_name, class or name, then parent), in
    any case: a spreadsheet exported as text keeps its header row (``Name``, ``Class_Name<TAB>Parent``), which
    would become a class. A class so named can still come from a .csv file."""
    folded = [field.casefold() for field in fields]
    return folded[0] in NAME_COLUMNS and folded[1:] in ([], [PARENT_COLUMN])


def _shown(number: int, line: str) -> str:
    return f"{number} {line.rstrip(chr(13) + chr(10))!r}"


def _fields(line: str) -> list[str]:
    """A line's tab-separated fields, stripped. One empty field after the parent is dropped: spreadsheets
    export an empty last column as a trailing tab (``cat<TAB>animal<TAB>``). A ``leaf<TAB>`` keeps its empty
    parent: it may be one that was forgotten."""
    parts = [part.strip() for part in line.split(PARENT_SEPARATOR)]
    return parts[:2] if len(parts) == 3 and not parts[2] else parts


def _column_names(path: str, suffix: str) -> tuple[list[str], list[str] | None]:
    try:
        table = _read_parquet(path) if suffix == ".parquet" else _read_csv_text(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ClassesError(f"--names {path}: cannot read it ({str(error).splitlines()[0]})") from None
    column = next((name for name in NAME_COLUMNS if name in table.column_names), None)
    if column is None:
        raise ClassesError(f"--names {path}: no column {', '.join(NAME_COLUMNS[:-1])} or {NAME_COLUMNS[-1]}")
    if misnamed := misnamed_parent(table.column_names):
        raise ClassesError(f"--names {path}: {misnamed}")
    values = _text_column(table, column, path)
    if empty := [row for row, value in enumerate(values) if value is None or not value.strip()]:
        raise ClassesError(f"--names {path}: column {column} is empty or null {_where(path, suffix, empty, len(values))}")
    if PARENT_COLUMN not in table.column_names:
        return [value.strip() for value in values], None
    parents = _text_column(table, PARENT_COLUMN, path)
    orphans = [name.strip() for name, parent in zip(values, parents, strict=True)
               if parent is None or not parent.strip()]
    if orphans:  # named, as `pairwise run` names them and the text form names the line
        raise ClassesError(f"--names {path}: column {PARENT_COLUMN} is empty or null for classes "
                           f"{first_few(orphans)}")
    return [value.strip() for value in values], [parent.strip() for parent in parents]


def _where(path: str, suffix: str, rows: Sequence[int], n_rows: int) -> str:
    """Where the rows (0-based) of a names table are, for a message: the lines of a CSV file (1-based, the
    header counted, as an editor numbers them), the rows of a Parquet file (1-based); the first few of them."""
    lines = _csv_lines(path, n_rows) if suffix == ".csv" else None
    if lines is not None:
        return f"on lines {first_few([str(lines[row]) for row in rows])} of the file"
    after = " after the header" if suffix == ".csv" else ""
    return f"in rows {first_few([str(row + 1) for row in rows])} (counting from 1{after})"


def _csv_lines(path: str, n_rows: int) -> list[int] | None:
    """The line each data row of a CSV file starts on (1-based, the header counted), as pyarrow reads the rows:
    empty lines skipped, a quoted value may hold line breaks. None where Python's csv reads another number of
    rows than pyarrow did (``n_rows``): then the lines are not known."""
    starts, line = [], 0
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                if row:  # an empty line: [], and pyarrow skips it
                    starts.append(line + 1)
                line = reader.line_num
        except csv.Error:
            return None
    return starts[1:] if len(starts) == n_rows + 1 else None


def _text_column(table: pa.Table, column: str, path: str) -> list[str | None]:
    """A column of strings, as `pairwise run` wants the class table's: numbers cast to text are not the text
    written (3.10 is 3.1), and a list or struct has no text at all."""
    if (count := table.column_names.count(column)) > 1:
        raise ClassesError(f"--names {path}: column {column} appears {count} times")
    kind = table.schema.field(column).type
    if not is_text(kind):
        raise ClassesError(f"--names {path}: column {column} must be a string, got {kind}")
    return table.column(column).cast(pa.string()).to_pylist()


def _read_parquet(path: str) -> pa.Table:
    """The file's columns. `pq.read_table` refused a file that names a column twice, whatever the column
    ("Multiple matches for FieldRef.Name(note)"): so read, a name column named twice is refused as such
    (`_text_column`), and a column not read may repeat."""
    with pq.ParquetFile(path) as handle:
        return handle.read()


def _read_csv_text(path: str) -> pa.Table:
    """Every column as the text written: inferred as numbers, parents 007 and 7 were one and 0101 became 101.
    The header is read first to name the columns (pyarrow drops a byte order mark before it)."""
    with pacsv.open_csv(path) as reader:
        header = reader.schema.names
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())))


# -- templates -----------------------------------------------------------------


def parse_options(
    templates: Sequence[str], encoders: Sequence[str], modalities: Sequence[str] = ()
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Each modality's templates and encoder spec, from `[MODALITY=]VALUE` options.

    A value without a prefix serves every modality (at most one such encoder).
    The modalities are `modalities` if given, else those the prefixes name,
    else `text`.
    """
    named_forms, shared_forms = _split(templates or (DEFAULT_TEMPLATE,))
    named_specs, shared_specs = _split(encoders)
    chosen = list(dict.fromkeys(modalities)) or list(dict.fromkeys([*named_forms, *named_specs])) or [DEFAULT_MODALITY]
    for modality in chosen:
        if not _IDENTIFIER.fullmatch(modality):
            raise ClassesError(f"--modality {modality}: not a name (letters, digits and _)")
    for option, named in (("--template", named_forms), ("--encoder", named_specs)):
        stray = [m for m in named if m not in chosen]
        if stray:
            raise ClassesError(f"{option} {stray[0]}=...: {stray[0]} is not among the modalities {', '.join(chosen)}")
    if len(shared_specs) > 1 or any(len(specs) > 1 for specs in named_specs.values()):
        raise ClassesError("--encoder: one encoder per modality (prefix each with MODALITY=)")
    forms = {m: tuple(dict.fromkeys([*named_forms.get(m, []), *shared_forms])) for m in chosen}
    specs = {m: (named_specs.get(m) or shared_specs or [""])[0] for m in chosen}
    for modality in chosen:
        if not forms[modality]:
            raise ClassesError(f"modality {modality} has no template: add --template {modality}=... "
                               "or one without a prefix")
        if not specs[modality]:
            raise ClassesError(f"modality {modality} has no encoder: add --encoder {modality}=... "
                               "or one without a prefix")
        for form in forms[modality]:
            _check_template(form)
    return forms, specs


def _split(texts: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """`image=a photo of a {}.` under image; a value without a prefix among the shared ones."""
    named: dict[str, list[str]] = {}
    shared: list[str] = []
    for text in texts:
        match = _PREFIX.fullmatch(text)
        if match:
            named.setdefault(match[1], []).append(match[2])
        else:
            shared.append(text)
    return named, shared


def _check_template(template: str) -> None:
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as error:
        raise ClassesError(f"--template {template!r}: {error} (write {{{{ and }}}} for literal braces)") from None
    unknown = [field for field in fields if field not in (*_NAME_FIELDS, "article")]
    if unknown:
        raise ClassesError(f"--template {template!r}: unknown field {{{unknown[0]}}}; "
                           "use {} for the class name and {article} for a/an")
    if not any(field in _NAME_FIELDS for field in fields):
        raise ClassesError(f"--template {template!r}: has no {{}} for the class name")


def article(word: str) -> str:
    """'a' or 'an' by the first letter, as a prompt would read (an animal, a verb)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def fill(template: str, name: str) -> str:
    return template.format(name, name=name, article=article(name))


# -- embeddings ----------------------------------------------------------------


def prompt_ensemble(vectors: np.ndarray) -> np.ndarray:
    """(n_classes, n_templates, d) prompt embeddings -> (n_classes, d): normalize, average, normalize."""
    unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    mean = unit.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero mean gives NaN: the caller says which class
        return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def class_table(
    names: Sequence[str], templates: Mapping[str, Sequence[str]], encoders: Mapping[str, tuple[str, Encoder]],
    parents: Sequence[str] | None = None,
) -> pa.Table:
    """One row per class: its name, its parent if given, and per modality the ensemble embedding and the
    prompts behind it. The prompts name the class alone: its parent is a level above, not a description.

    `encoders` maps each modality to (spec, encoder); the spec names it in errors.
    """
    columns: dict[str, pa.Array] = {"class_name": pa.array(list(names), pa.string())}
    if parents is not None:
        columns[PARENT_COLUMN] = pa.array(list(parents), pa.string())
    for modality, forms in templates.items():
        spec, encoder = encoders[modality]
        prompts = [[fill(form, name) for form in forms] for name in names]
        flat = [prompt for row in prompts for prompt in row]
        vectors = encode(encoder, flat, spec)
        zero = np.flatnonzero(np.linalg.norm(vectors, axis=1) == 0)
        if zero.size:
            raise ClassesError(f"--encoder {spec}: all-zero embedding for the prompt {flat[zero[0]]!r}")
        ensemble = prompt_ensemble(vectors.reshape(len(names), len(forms), -1)).astype(np.float32)
        if not np.isfinite(ensemble).all():  # templates that cancel out: the mean of unit vectors is zero
            cancelled = [names[row] for row in np.flatnonzero(~np.isfinite(ensemble).all(axis=1))]
            raise ClassesError(f"modality {modality}: the prompts of {', '.join(cancelled[:3])} average to zero; "
                               "change the templates")
        columns[f"{modality}{EMBEDDING_SUFFIX}"] = pa.FixedSizeListArray.from_arrays(
            pa.array(ensemble.ravel(), pa.float32()), ensemble.shape[1])
        columns[f"{modality}{PROMPTS_SUFFIX}"] = pa.array(prompts, pa.list_(pa.string()))
    return pa.table(columns)


# -- writing -------------------------------------------------------------------


def write_parquet(table: pa.Table, path: str) -> None:
    """Write beside the target, then rename over it: readers see the old file or the whole new one."""
    try:
        with replacing(Path(path)) as partial:
            pq.write_table(table, partial)
    except OSError as error:
        raise ClassesError(f"--out {path}: cannot write it ({error.strerror or error})") from None


def check_destination(db: str, name: str) -> None:
    """Before any model loads: a DuckDB file (or none yet), and a plain identifier (it is spliced into SQL) that
    names none of our own tables or views."""
    check_db_file(db)
    if not _IDENTIFIER.fullmatch(name):
        raise ClassesError(f"--table {name}: not a table name (letters, digits and _)")
    if name.lower() in OWN_NAMES:
        raise ClassesError(f"--table {name}: a table or view of pairwise's own; choose another name")


def write_duckdb(table: pa.Table, db: str, name: str) -> None:
    """Replace the table in one statement: readers see the old table or the whole new one."""
    check_destination(db, name)
    with run_lock(db), connect(db) as con:
        con.register("new_classes", table)
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM new_classes')
