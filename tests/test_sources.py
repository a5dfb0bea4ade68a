"""Validation at the edge: bad sources stop with a one-line reason before anything is written."""

import re
import warnings
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import write_catalog, write_hive_catalog, written_otherwise
from flows.cli import main
from pairwise_core import make_catalog
from tasks import run_log
from tasks.sources import SourceError, _all_of_length, inspect_sources, is_text, plan_partitions, read_partition


@pytest.fixture()
def catalog(tmp_path):
    items, classes = make_catalog(1200, 4, seed=0)
    return tmp_path, items, classes


def inspect(items, classes, tmp_path, gold=None, changed=None):
    return inspect_sources(items, classes, db=str(tmp_path / "out.duckdb"), gold_column=gold, chunk_size=500,
                           changed_column=changed)


def test_a_good_catalog_is_planned_into_partitions(catalog):
    tmp_path, items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path, items, classes, n_files=2, row_group_size=200)
    plan = inspect(items_glob, classes_path, tmp_path, gold="label")
    assert plan.modalities == ("image", "text")
    assert plan.dims == {"image": 512, "text": 384}
    assert plan.n_items == 1200
    assert sum(p.n_rows for p in plan.partitions) == 1200
    assert all(p.n_rows <= 600 for p in plan.partitions)
    assert not (tmp_path / "out.duckdb").exists()  # nothing written


def test_the_same_files_inspected_again_give_the_plan_made_then_and_a_changed_file_is_inspected_anew(catalog):
    """`pairwise run` inspects the sources, then its flow does: the second reads nothing while no file changed."""
    tmp_path, items, classes = catalog
    pq.write_table(items, tmp_path / "items.parquet")
    pq.write_table(classes, tmp_path / "classes.parquet")
    first = inspect(str(tmp_path / "items.parquet"), str(tmp_path / "classes.parquet"), tmp_path, gold="label")
    assert inspect(str(tmp_path / "items.parquet"), str(tmp_path / "classes.parquet"), tmp_path, gold="label") is first
    assert inspect(str(tmp_path / "items.parquet"), str(tmp_path / "classes.parquet"), tmp_path) is not first
    pq.write_table(items.slice(0, 1000), tmp_path / "items.parquet")  # another size and modification time
    assert inspect(str(tmp_path / "items.parquet"), str(tmp_path / "classes.parquet"), tmp_path).n_items == 1000
    duplicated = items.set_column(0, "item_id", pa.array(["same"] * items.num_rows))
    pq.write_table(duplicated, tmp_path / "items.parquet")
    with pytest.raises(SourceError, match="item_id must be unique"):
        inspect(str(tmp_path / "items.parquet"), str(tmp_path / "classes.parquet"), tmp_path)


def _fail(tmp_path, items, classes, message, gold=None, changed=None):
    pq.write_table(items, tmp_path / "bad-items.parquet")
    pq.write_table(classes, tmp_path / "bad-classes.parquet")
    with pytest.raises(SourceError, match=message) as info:
        inspect(str(tmp_path / "bad-items.parquet"), str(tmp_path / "bad-classes.parquet"), tmp_path, gold, changed)
    assert "\n" not in str(info.value)


def test_missing_item_id(catalog):
    tmp_path, items, classes = catalog
    _fail(tmp_path, items.drop(["item_id"]), classes, "missing column item_id")


def test_missing_gold_column_is_named_as_the_option_with_the_columns_there_are(catalog):
    tmp_path, items, classes = catalog
    _fail(tmp_path, items, classes, "bad-items.parquet: --gold-column nope: no such column; the items have "
          "item_id, image_embedding, text_embedding, label$", gold="nope")


def _duckdb_table(tmp_path, name, table):
    with duckdb.connect(str(tmp_path / "out.duckdb")) as con:
        con.register("t", table)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM t")


def test_duplicate_item_ids_stop_at_validation_naming_a_few(catalog):
    """Found from item_id alone before any pass (they used to fail the run after both): in a Parquet glob,
    where the copies sit in another file than the originals, and in a DuckDB table."""
    tmp_path, items, classes = catalog
    # four ids twice, one of them three times: the first three by id are named, with their counts
    doubled = pa.concat_tables([items, items.take([700, 7, 8, 1100, 8])])
    items_glob, classes_path = write_catalog(tmp_path / "in", doubled, classes, n_files=2, row_group_size=200)
    message = (r"item_id must be unique; ids that repeat: 4, "
               r"e\.g\. item-0000007 \(2x\), item-0000008 \(3x\), item-0000700 \(2x\)$")
    with pytest.raises(SourceError, match=f"in/items-\\*\\.parquet: {message}"):
        inspect(items_glob, classes_path, tmp_path)
    _duckdb_table(tmp_path, "doubled", doubled)
    with pytest.raises(SourceError, match=f"table:doubled: {message}"):
        inspect("table:doubled", classes_path, tmp_path)


@pytest.mark.parametrize("n_null", [1, 2])
def test_null_item_ids_stop_at_validation(catalog, n_null):
    """One null id got to the commit (a NOT NULL constraint failed there), two were called duplicates."""
    tmp_path, items, classes = catalog
    ids = items.column("item_id").to_pylist()
    ids[7:7 + n_null] = [None] * n_null
    _fail(tmp_path, items.set_column(0, "item_id", pa.array(ids, pa.string())), classes,
          f"bad-items.parquet: item_id is null in {n_null} rows?; every item needs an id$")


def test_a_file_whose_item_ids_will_not_decode_is_named(catalog):
    tmp_path, items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    second = sorted((tmp_path / "in").glob("items-*.parquet"))[1]
    ids = pq.ParquetFile(second).metadata.row_group(0).column(0)  # item_id's pages in the first row group
    data = bytearray(second.read_bytes())
    start = ids.data_page_offset + 40  # past the page header
    data[start:start + 200] = bytes(200)
    second.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=rf"^{second}: cannot read column item_id \(.+\)$"):
        inspect(items_glob, classes_path, tmp_path)


def _with_gold(items, values):
    return items.set_column(items.schema.get_field_index("label"), "label", pa.array(values, pa.string()))


def test_gold_values_that_are_mostly_no_class_names_are_refused(catalog):
    """Raw codes where the classes have names: the gold metrics and the review would mean nothing."""
    tmp_path, items, classes = catalog
    codes = {"dress": "dr", "shirt": "sh", "trousers": "tr", "skirt": "sk"}
    labels = items.column("label").to_pylist()
    gold = [codes[v] if k % 5 else v for k, v in enumerate(labels)]  # 1 in 5 kept: 20% are class names
    gold[3] = None  # nulls are unlabelled items, left out of the share
    coded = _with_gold(items, gold)
    n_labelled = len(gold) - 1
    share = sum(v in codes for v in gold) / n_labelled
    _fail(tmp_path, coded, classes, rf"^--gold-column label: only {share:.1%} of its values \({n_labelled:,}, "
          rf'neither null nor blank\) are class names \(not class names: "\w\w", "\w\w", "\w\w"; class names: '
          rf'"dress", "shirt", "trousers"\)$', gold="label")
    _duckdb_table(tmp_path, "coded", coded)
    _, classes_path = write_catalog(tmp_path / "in", items, classes)
    with pytest.raises(SourceError, match=rf"only {share:.1%} of its values"):
        inspect("table:coded", classes_path, tmp_path, gold="label")


def test_gold_values_outside_the_classes_are_counted_when_most_are_class_names(catalog):
    tmp_path, items, classes = catalog
    gold = items.column("label").to_pylist()
    gold[:6] = ["os", "os", "os", "re", "db", "zz"]  # the commonest three are kept as examples
    gold[6] = None
    items_glob, classes_path = write_catalog(tmp_path / "in", _with_gold(items, gold), classes, n_files=2)
    plan = inspect(items_glob, classes_path, tmp_path, gold="label")
    assert (plan.gold.n_labelled, plan.gold.n_outside) == (1199, 6)
    assert plan.gold.outside_examples == ("os", "db", "re")
    assert inspect(items_glob, classes_path, tmp_path).gold is None  # no gold column: nothing read


def test_blank_gold_values_are_no_label_and_classes_no_value_names_are_listed(catalog):
    tmp_path, items, classes = catalog
    gold = [None if v == "skirt" else v for v in items.column("label").to_pylist()]  # no item is given skirt
    gold[:4] = ["", "   ", "\t", "\xa0"]  # a no-break space too, as str.isspace and the class names' check see it
    items_glob, classes_path = write_catalog(tmp_path / "in", _with_gold(items, gold), classes)
    plan = inspect(items_glob, classes_path, tmp_path, gold="label")
    assert (plan.gold.n_labelled, plan.gold.n_outside) == (sum(v is not None for v in gold) - 4, 0)
    assert plan.gold.unnamed_classes == ("skirt",)
    notes = run_log.gold_notes(plan)
    assert len(notes) == 1 and notes[0].startswith('Gold column label never names 1 of the 4 classes ("skirt"): ')
    # 599 class names of 1,199 values (49.96%) are too few, and the message does not round them up to 50.0%
    gold = [None] + ["dress"] * 599 + ["dr"] * 600
    _fail(tmp_path, _with_gold(items, gold), classes, r"only 49\.9% of its values \(1,199, ", gold="label")


def _renamed(table: pa.Table, old: str, new: str) -> pa.Table:
    return table.rename_columns([new if name == old else name for name in table.column_names])


@pytest.mark.parametrize(("item_column", "class_column"), [
    ("Image_Embedding", "image_embedding"),  # a spreadsheet's heading: the run went on with text alone, exit 0
    ("Image_embedding", "image_embedding"),  # another modality name: the same
    ("image_embedding", "Image_Embedding"),  # the classes' in another case
])
def test_an_embedding_column_in_another_case_than_the_other_source_s_is_refused_in_one_line(
        catalog, item_column, class_column, capsys):
    tmp_path, items, classes = catalog
    items, classes = _renamed(items, "image_embedding", item_column), _renamed(classes, "image_embedding", class_column)
    _fail(tmp_path, items, classes, "^" + re.escape(
        f"{tmp_path / 'bad-items.parquet'}: column {item_column}: the classes ({tmp_path / 'bad-classes.parquet'}) "
        f"have {class_column}; embedding columns are matched by their exact names, case included, so neither is "
        "read: name them alike, <modality>_embedding with the suffix in lower case") + "$")
    # the only modality: it said "no modality shared by items (none) and classes (image)", naming no column
    _fail(tmp_path, items.drop(["text_embedding"]), classes.drop(["text_embedding"]), f"column {item_column}: ")
    # through `pairwise run`: one line, exit 2
    args = ["run", "--items", str(tmp_path / "bad-items.parquet"), "--classes", str(tmp_path / "bad-classes.parquet"),
            "--db", str(tmp_path / "out.duckdb")]
    pq.write_table(items, tmp_path / "bad-items.parquet")
    pq.write_table(classes, tmp_path / "bad-classes.parquet")
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(
        f"pairwise: {tmp_path / 'bad-items.parquet'}: column {item_column}: the classes (")
    assert not (tmp_path / "out.duckdb").exists()


def test_an_embedding_suffix_in_another_case_in_both_sources_is_refused_as_such(catalog):
    """Image_Embedding in both: not an embedding column (the suffix is _embedding), so left out without a word."""
    tmp_path, items, classes = catalog
    _fail(tmp_path, _renamed(items, "image_embedding", "Image_Embedding"),
          _renamed(classes, "image_embedding", "Image_Embedding"), "^" + re.escape(
              f"{tmp_path / 'bad-items.parquet'}: column Image_Embedding, in the items and the classes "
              f"({tmp_path / 'bad-classes.parquet'}): an embedding column's name must end in _embedding, in lower "
              "case, as columns are matched by their exact names; rename it in both") + "$")


def test_an_items_table_in_the_db_is_checked_alike(catalog):
    tmp_path, items, classes = catalog
    pq.write_table(classes, tmp_path / "classes.parquet")
    with duckdb.connect(str(tmp_path / "out.duckdb")) as con:
        con.register("src", _renamed(items, "image_embedding", "Image_Embedding"))
        con.execute("CREATE TABLE my_items AS SELECT * FROM src")
    with pytest.raises(SourceError, match="^table:my_items: column Image_Embedding: the classes "):
        inspect("table:my_items", str(tmp_path / "classes.parquet"), tmp_path)


def test_an_unrelated_column_in_another_case_beside_the_exact_one_is_left_alone(catalog):
    tmp_path, items, classes = catalog
    extra = items.append_column("Image_Embedding", items.column("image_embedding"))
    items_path, classes_path = write_catalog(tmp_path, extra, classes)
    assert inspect(items_path, classes_path, tmp_path).modalities == ("image", "text")


def test_dimensions_differ_between_items_and_classes(catalog):
    tmp_path, items, classes = catalog
    short = pa.array([row[:100] for row in classes.column("text_embedding").to_pylist()], pa.list_(pa.float32()))
    _fail(tmp_path, items, classes.set_column(2, "text_embedding", short),
          "text_embedding: items have 384 dimensions, classes have 100")


def test_no_shared_modality(catalog):
    tmp_path, items, classes = catalog
    renamed = classes.rename_columns(["class_name", "photo_embedding", "title_embedding"])
    _fail(tmp_path, items, renamed, "no modality shared by items .image, text. and classes .photo, title.")


def test_the_items_modalities_the_classes_lack_are_named_as_left_out(catalog):
    """Classes from `pairwise classes` without --modality have text_embedding alone: a catalog's image_embedding
    was left out of the run without a word."""
    from tasks.run_log import modality_notes, source_notes

    tmp_path, items, classes = catalog
    pq.write_table(items, tmp_path / "items.parquet")
    pq.write_table(classes.drop(["image_embedding"]), tmp_path / "text.parquet")
    plan = inspect(str(tmp_path / "items.parquet"), str(tmp_path / "text.parquet"), tmp_path)
    assert (plan.modalities, plan.unmatched) == (("text",), ("image",))
    note = ("The classes have no embeddings for the items' image_embedding: 1 modality left out of this run "
            "(`pairwise classes --modality NAME` writes a modality's class embeddings)")
    assert modality_notes(plan) == source_notes(plan) == [note]
    pq.write_table(classes, tmp_path / "both.parquet")
    whole = inspect(str(tmp_path / "items.parquet"), str(tmp_path / "both.parquet"), tmp_path)
    assert whole.unmatched == () and source_notes(whole) == []


def test_the_classes_modalities_the_items_lack_are_named_as_left_out(catalog):
    """An items export that lost its image_embedding, with classes of both: the run labelled by text alone
    without a word (the other way round had a warning line)."""
    from tasks.run_log import modality_notes, source_notes

    tmp_path, items, classes = catalog
    pq.write_table(items.drop(["image_embedding"]), tmp_path / "text-items.parquet")
    pq.write_table(classes, tmp_path / "both.parquet")
    plan = inspect(str(tmp_path / "text-items.parquet"), str(tmp_path / "both.parquet"), tmp_path)
    assert (plan.modalities, plan.unmatched, plan.classes_unmatched) == (("text",), (), ("image",))
    note = "The items have no image_embedding, which the classes have: 1 modality left out of this run"
    assert modality_notes(plan) == source_notes(plan) == [note]


@pytest.mark.parametrize(("name", "holder"), [("joint", "the joint label"), ("gold", "the gold label")])
def test_a_modality_named_joint_or_gold_is_refused(catalog, name, holder):
    """The joint label is modality 'joint' in the tables and reports, the gold label modality_b 'gold': a
    catalog's would merge with them (the agreement of modalities image and gold was scored as gold_accuracy)."""
    tmp_path, items, classes = catalog
    _fail(tmp_path, items.rename_columns([n.replace("text", name) for n in items.column_names]),
          classes.rename_columns([n.replace("text", name) for n in classes.column_names]),
          f"a modality may not be named {name} .{name}_embedding.: {holder} .*has that name")


def test_an_embedding_column_without_a_modality_name_is_refused(catalog):
    """Column _embedding ran as modality '', a nameless one in every table and report."""
    tmp_path, items, classes = catalog
    _fail(tmp_path, items.rename_columns([n.replace("image", "") for n in items.column_names]),
          classes.rename_columns([n.replace("image", "") for n in classes.column_names]),
          "bad-items.parquet: column _embedding names no modality: name it <modality>_embedding$")


def test_embedding_column_of_strings_is_named(catalog):
    tmp_path, items, classes = catalog
    strings = pa.array(["x"] * items.num_rows)
    _fail(tmp_path, items.set_column(1, "image_embedding", strings), classes,
          "column image_embedding must be a list of floats, got string")


def test_embedding_column_of_ints_is_named(catalog):
    tmp_path, items, classes = catalog
    ints = pa.array([[1, 2]] * items.num_rows, pa.list_(pa.int64()))
    _fail(tmp_path, items.set_column(1, "image_embedding", ints), classes,
          "column image_embedding must be a list of floats, got a list of int64")


def test_a_spark_ml_vector_column_is_named_with_what_to_do(catalog):
    """Spark ML's VectorUDT is stored as a struct (type, size, indices, values): the message says how to write it."""
    tmp_path, items, classes = catalog
    n = items.num_rows
    vectors = pa.StructArray.from_arrays(
        [pa.array([1] * n, pa.int8()), pa.nulls(n, pa.int32()), pa.nulls(n, pa.list_(pa.int32())),
         items.column("image_embedding").combine_chunks().cast(pa.list_(pa.float64()))],
        names=["type", "size", "indices", "values"])
    _fail(tmp_path, items.set_column(1, "image_embedding", vectors), classes,
          "column image_embedding must be a list of floats, got struct<.*>: a Spark ML vector; write it as an array "
          r"\(pyspark.ml.functions.vector_to_array\)")


def test_duplicate_and_single_classes(catalog):
    tmp_path, items, classes = catalog
    duplicated = pa.concat_tables([classes, classes.slice(0, 1)])
    _fail(tmp_path, items, duplicated, "duplicate class names dress")
    # a taxonomy's leaf repeated under two parents: the message says so, and how to name them apart
    names = classes.column("class_name").to_pylist()
    parents = ["clothing"] * len(names)
    parents[-1] = "furniture"
    taxonomy = pa.concat_tables([classes.slice(0, 1), classes.slice(1)]).append_column("parent", pa.array(parents))
    taxonomy = taxonomy.set_column(0, "class_name", pa.array([*names[:-1], names[0]]))
    _fail(tmp_path, items, taxonomy, re.escape(f"duplicate class names {names[0]} ({names[0]} is under clothing and "
                                               f"furniture): a class name must be unique across parents; name the "
                                               f"leaves apart, e.g. '{names[0]} (clothing)'"))
    _fail(tmp_path, items, classes.slice(0, 1), "1 class.es.; at least 2 are needed")


@pytest.mark.parametrize(("renamed", "why"), [
    (["caf\u00e9", "cafe\u0301"], "Unicode normalization"),
    (["shirt", " shirt\u00a0"], "surrounding spaces"),
    (["caf\u00e9", " cafe\u0301"], "Unicode normalization and surrounding spaces"),
])
def test_class_or_parent_names_one_but_for_spaces_or_unicode_normalization_are_refused(catalog, renamed, why):
    """They were two classes (or parents) that a report shows as two identical rows."""
    tmp_path, items, classes = catalog
    names = ["dress", *renamed, "skirt"]
    shown = f'"{renamed[0]}", "{renamed[1]}"'.replace("\u00a0", "\\u00a0")
    _fail(tmp_path, items, classes.set_column(0, "class_name", pa.array(names)),
          f"^.*classes.parquet: class names {re.escape(shown)} are one name but for {why}$")
    with_parents = classes.append_column("parent", pa.array(["top", renamed[0], renamed[1], "top"]))
    _fail(tmp_path, items, with_parents, f"^.*classes.parquet: parents {re.escape(shown)} are one name but for {why}$")
    spaced = classes.set_column(0, "class_name", pa.array([" dress", "shirt ", "trousers", "skirt"]))
    plan = inspect(*write_catalog(tmp_path, items, spaced.append_column("parent", pa.array([" a", "b", "b", "c"]))),
                   tmp_path)
    assert plan.class_names == (" dress", "shirt ", "trousers", "skirt") and plan.parent.names == (" a", "b", "c")


def test_zero_class_embedding_is_refused(catalog):
    tmp_path, items, classes = catalog
    rows = classes.column("image_embedding").to_pylist()
    rows[2] = [0.0] * 512
    _fail(tmp_path, items, classes.set_column(1, "image_embedding", pa.array(rows, pa.list_(pa.float32()))),
          f"image_embedding has all-zero vectors for classes {classes.column('class_name')[2]}$")


def test_a_class_embedding_null_or_of_another_length_is_named(catalog):
    tmp_path, items, classes = catalog
    names = classes.column("class_name").to_pylist()
    rows = classes.column("image_embedding").to_pylist()
    for row, message in ((None, f"image_embedding is null for classes {names[2]}$"),
                         ([0.5] * 8, f"image_embedding has 512 values for most classes, other counts for {names[2]} "
                                     r"\(8\)$")):
        changed = rows[:2] + [row] + rows[3:]
        _fail(tmp_path, items, classes.set_column(1, "image_embedding", pa.array(changed, pa.list_(pa.float32()))),
              message)
    named = classes.column("class_name").to_pylist()
    _fail(tmp_path, items, classes.set_column(0, "class_name", pa.array(named[:3] + [" "] + named[4:])),
          "class_name is empty or blank in rows 3$")
    _fail(tmp_path, items, classes.set_column(0, "class_name", pa.array([None] * 4, pa.string())),
          "class_name is null in rows 0, 1, 2 and 1 more$")


def test_empty_items(catalog):
    tmp_path, items, classes = catalog
    _fail(tmp_path, items.slice(0, 0), classes, "no items")


def test_missing_file_glob_and_non_parquet(catalog):
    tmp_path, items, classes = catalog
    _, classes_path = write_catalog(tmp_path, items, classes)
    with pytest.raises(SourceError, match="no such file"):
        inspect(str(tmp_path / "missing.parquet"), classes_path, tmp_path)
    with pytest.raises(SourceError, match="matches no Parquet files"):
        inspect(str(tmp_path / "nothing-*.parquet"), classes_path, tmp_path)
    (tmp_path / "notes.parquet").write_text("not parquet at all")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        inspect(str(tmp_path / "notes.parquet"), classes_path, tmp_path)


def mixed_folder(catalog):
    """A folder of a.parquet (the first 600 items) and b.parquet (the rest, written otherwise), the classes'
    path, and the rest of the items as b.parquet holds them."""
    tmp_path, items, classes = catalog
    _, classes_path = write_catalog(tmp_path, items, classes)
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(items.slice(0, 600), folder / "a.parquet")
    rest = written_otherwise(items.slice(600))
    pq.write_table(rest, folder / "b.parquet")
    return folder, classes_path, rest


def test_a_folder_leaves_out_what_spark_and_hive_hide_and_reads_partition_folders(catalog):
    """Spark's _temporary/ attempts and dot files were read as items: a job still writing failed the run with its
    half-written file, or with its ids twice."""
    tmp_path = catalog[0]
    folder, classes_path, rest = mixed_folder(catalog)
    (folder / "day=2").mkdir()
    (folder / "b.parquet").rename(folder / "day=2" / "b.parquet")
    (folder / "_temporary" / "0").mkdir(parents=True)
    (folder / "_temporary" / "0" / "part-0.parquet").write_bytes(b"PAR1 half-written")
    pq.write_table(rest.slice(0, 10), folder / ".b.parquet")  # a writer's copy in progress: ids twice
    (folder / "_SUCCESS").touch()
    plan = inspect(str(folder), classes_path, tmp_path, gold="label")
    assert plan.item_files == (str(folder / "a.parquet"), str(folder / "day=2" / "b.parquet"))
    assert plan.n_items == 1200


def _read_column(plan, column):
    """item_id -> the column's value, as the passes read the plan's partitions."""
    return {item: value for partition in plan.partitions
            for batch in read_partition(partition, plan.item_columns())
            for item, value in zip(batch.column("item_id").to_pylist(), batch.column(column).to_pylist(), strict=True)}


@pytest.mark.parametrize("pattern", ["{items}", "{items}/*/*.parquet", "{items}/label=*/*.parquet"])
def test_hive_folders_give_the_columns_their_keys_name_to_their_files_rows(catalog, pattern):
    """Items written partitioned by their label (Spark's partitionBy, pyarrow's hive partitioning) hold it in the
    folder names alone: `--gold-column label` said "no such column"."""
    tmp_path, items, classes = catalog
    folder, classes_path = write_hive_catalog(tmp_path / "shop=a", items, classes, "label")
    plan = inspect(pattern.format(items=folder), classes_path, tmp_path, gold="label")
    assert (plan.gold.n_labelled, plan.gold.n_outside) == (1200, 0)
    assert _read_column(plan, "label") == dict(zip(items.column("item_id").to_pylist(),
                                                   items.column("label").to_pylist(), strict=True))
    with pytest.raises(SourceError, match="--gold-column shop: no such column; the items have item_id, .*, label$"):
        inspect(str(folder), classes_path, tmp_path, gold="shop")  # a folder above the source's: the user's own


def test_a_file_s_own_column_wins_over_its_folder_key_and_keys_decode_as_hive_writes_them(catalog):
    tmp_path, items, classes = catalog
    _, classes_path = write_catalog(tmp_path, items, classes)
    folder = tmp_path / "items"
    for path, part in ((folder / "batch=1" / "x=a%20b" / "0.parquet", items.slice(0, 400)),
                       (folder / "batch=2" / "x=__HIVE_DEFAULT_PARTITION__" / "0.parquet", items.slice(400))):
        path.parent.mkdir(parents=True)
        pq.write_table(part.append_column("batch", pa.array(["own"] * part.num_rows)), path)
    plan = inspect(str(folder), classes_path, tmp_path, changed="batch")
    assert set(_read_column(plan, "batch").values()) == {"own"}
    plan = inspect(str(folder), classes_path, tmp_path, changed="x")
    assert Counter(_read_column(plan, "x").values()) == {"a b": 400, None: 800}


def test_a_file_whose_folders_lack_a_key_the_run_reads_is_named(catalog):
    tmp_path, items, classes = catalog
    folder, classes_path = write_hive_catalog(tmp_path, items, classes, "label")
    (Path(folder) / "zz").mkdir()
    extra = items.slice(0, 5).drop_columns(["label"])
    extra = extra.set_column(0, "item_id", pa.array([f"extra-{i}" for i in range(5)]))
    pq.write_table(extra, Path(folder) / "zz" / "extra.parquet")
    with pytest.raises(SourceError, match=r"zz/extra\.parquet: missing column label, which .*label=.* has"):
        inspect(str(folder), classes_path, tmp_path, gold="label")
    assert inspect(str(folder), classes_path, tmp_path).n_items == 1205  # a key the run does not read: no matter


def test_a_delta_lake_table_s_folder_is_refused_saying_why(catalog):
    """Its folder keeps the files of earlier versions: read as Parquet, an updated item came twice."""
    tmp_path, items, classes = catalog
    folder = tmp_path / "delta"
    items_glob, classes_path = write_catalog(folder, items, classes, n_files=2)
    (folder / "_delta_log").mkdir()
    (folder / "_delta_log" / "00000000000000000000.json").write_text("{}")
    for source in (str(folder), items_glob):
        with pytest.raises(SourceError, match=r"a Delta Lake table \(_delta_log/\): .* \(table:NAME\)$"):
            inspect(source, classes_path, tmp_path)


def test_files_of_one_source_may_differ_in_what_the_run_does_not_read(catalog):
    tmp_path, items, _ = catalog
    folder, classes_path, _ = mixed_folder(catalog)
    plan = inspect(str(folder), classes_path, tmp_path, gold="label")
    assert (plan.n_items, plan.dims) == (1200, {"image": 512, "text": 384})
    pq.write_table(items.slice(600).drop(["label"]), folder / "b.parquet")
    assert inspect(str(folder), classes_path, tmp_path).n_items == 1200  # no gold column read


def test_the_first_of_several_files_without_what_the_run_reads_is_named(catalog):
    """The file the others are checked against was not named: "mixed: missing column item_id" for a folder
    (a classes.parquet in the items' folder, sorted first, is an easy way to get there)."""
    tmp_path = catalog[0]
    folder, classes_path, rest = mixed_folder(catalog)
    first = pq.read_table(folder / "a.parquet")
    for table, message in [(first.drop(["item_id"]), "missing column item_id"),
                           (first.set_column(first.schema.get_field_index("image_embedding"), "image_embedding",
                                             pa.array(["x"] * 600)),
                            "column image_embedding must be a list of floats, got string"),
                           (first.set_column(first.schema.get_field_index("label"), "label", pa.array(range(600))),
                            "column label must be a string, got int64")]:
        pq.write_table(table, folder / "a.parquet")
        with pytest.raises(SourceError, match=rf"^{re.escape(str(folder / 'a.parquet'))}: {message}"):
            inspect(str(folder), classes_path, tmp_path, gold="label")


def test_files_of_one_source_without_what_the_run_reads_say_what_is_wrong(catalog):
    tmp_path = catalog[0]
    folder, classes_path, rest = mixed_folder(catalog)
    short = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(600 * 5), pa.float32()), 5)
    for other, message in [
        (rest.drop(["label"]), "missing column label, which .*a.parquet has"),
        (rest.drop(["text_embedding"]), "missing column text_embedding, which .*a.parquet has"),
        (rest.set_column(rest.schema.get_field_index("item_id"), "item_id", pa.array(range(600))),
         "column item_id must be a string, got int64"),
        (rest.set_column(rest.schema.get_field_index("image_embedding"), "image_embedding", short),
         "image_embedding: items have 5 dimensions, classes have 512"),
        (rest.set_column(rest.schema.get_field_index("label"), "label", pa.array(range(600))),
         "column label must be a string, got int64"),
    ]:
        pq.write_table(other, folder / "b.parquet")
        with pytest.raises(SourceError, match=f"b.parquet: {message}$"):
            inspect(str(folder), classes_path, tmp_path, gold="label")


def _lists(rows: list) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float32()))


def test_a_file_or_table_whose_embeddings_are_all_of_another_length_is_refused_past_null_first_rows(catalog):
    """Only the first file's first 1,000 rows were sampled: a further file of another model's dimension, or one
    whose first rows were null, had every row rejected and the run exited 0 without that modality."""
    tmp_path, items, classes = catalog
    folder, classes_path, rest = mixed_folder(catalog)
    rest_lists = rest.set_column(rest.schema.get_field_index("image_embedding"), "image_embedding",
                                 _lists([[0.5] * 10] * 600))
    pq.write_table(rest_lists, folder / "b.parquet")
    with pytest.raises(SourceError, match="b.parquet: image_embedding: items have 10 dimensions, classes have 512$"):
        inspect(str(folder), classes_path, tmp_path, gold="label")
    rows = [None] * 1100 + [[0.5] * 10] * 100  # the first 1,000 rows null: a first batch of no length
    for path in folder.iterdir():
        path.unlink()
    pq.write_table(items.set_column(1, "image_embedding", _lists(rows)), folder / "a.parquet", row_group_size=200)
    with pytest.raises(SourceError, match="^image_embedding: items have 10 dimensions, classes have 512$"):
        inspect(str(folder), classes_path, tmp_path, gold="label")
    with duckdb.connect(str(tmp_path / "out.duckdb")) as con:
        con.register("src", items.set_column(1, "image_embedding", _lists(rows)))
        con.execute("CREATE TABLE nulls_first AS SELECT * FROM src")
    with pytest.raises(SourceError, match="^image_embedding: items have 10 dimensions, classes have 512$"):
        inspect("table:nulls_first", classes_path, tmp_path)


def test_further_files_of_lists_are_read_only_where_their_metadata_cannot_vouch_for_the_length(catalog):
    """Sampling every file's embeddings read a row group of each from object storage: a file whose statistics
    show every row of the classes' length on average, none null, is taken at its metadata; one with a null row
    or a row of another length is sampled, and passes if most rows are of that length."""
    tmp_path, items, classes = catalog
    folder, classes_path, rest = mixed_folder(catalog)
    image = rest.schema.get_field_index("image_embedding")
    vectors = rest.column(image).to_pylist()
    for rows, vouched in [(vectors, True), ([None, *vectors[1:]], False), ([vectors[0][:7], *vectors[1:]], False),
                          ([[*vectors[0], 0.5], vectors[1][:-1], *vectors[2:]], True)]:  # 512 on average
        pq.write_table(rest.set_column(image, "image_embedding", _lists(rows)), folder / "b.parquet")
        assert _all_of_length(pq.ParquetFile(folder / "b.parquet").metadata, "image_embedding", 512) == vouched
        assert inspect(str(folder), classes_path, tmp_path, gold="label").dims == {"image": 512, "text": 384}


def _empty_typed_null(items: pa.Table) -> pa.Table:
    """What an empty pandas frame of object columns writes: no rows, every column typed null."""
    return pa.table({name: pa.nulls(0) for name in items.column_names})


def test_a_file_without_rows_may_type_its_columns_null_first_or_not(catalog):
    """A nightly job's empty partition stopped the run: `column item_id must be a string, got null`."""
    tmp_path = catalog[0]
    folder, classes_path, rest = mixed_folder(catalog)
    empty = _empty_typed_null(rest)
    for name in ("0-first.parquet", "c-last.parquet"):  # before a.parquet, whose schema the others then meet
        pq.write_table(empty, folder / name)
    plan = inspect(str(folder), classes_path, tmp_path, gold="label")
    assert (plan.n_items, plan.dims, len(plan.item_files)) == (1200, {"image": 512, "text": 384}, 4)
    assert sum(p.n_rows for p in plan.partitions) == 1200


def test_a_file_without_rows_is_still_refused_for_a_missing_column_or_another_type_than_null(catalog):
    tmp_path = catalog[0]
    folder, classes_path, rest = mixed_folder(catalog)
    empty = _empty_typed_null(rest)
    for other, message in [
        (empty.drop(["label"]), "missing column label, which .*a.parquet has"),
        (empty.set_column(empty.schema.get_field_index("item_id"), "item_id", pa.array([], pa.int64())),
         "column item_id must be a string, got int64"),
        (pa.table({name: pa.nulls(1) for name in empty.column_names}),  # a row: not empty
         "column item_id must be a string, got null"),
    ]:
        pq.write_table(other, folder / "b.parquet")
        with pytest.raises(SourceError, match=f"b.parquet: {message}$"):
            inspect(str(folder), classes_path, tmp_path, gold="label")
    for path in folder.iterdir():
        pq.write_table(empty, path)
    with pytest.raises(SourceError, match="mixed: no items$"):
        inspect(str(folder), classes_path, tmp_path, gold="label")


def test_a_gold_column_typed_null_is_one_without_labels(catalog):
    """What pandas and polars write of a column of None: a night's file that nobody labelled stopped the run
    (`column label must be a string, got null`), though a gold column without values is no error."""
    tmp_path = catalog[0]
    folder, classes_path, rest = mixed_folder(catalog)
    label = rest.schema.get_field_index("label")
    pq.write_table(rest.set_column(label, "label", pa.nulls(600)), folder / "b.parquet")
    plan = inspect(str(folder), classes_path, tmp_path, gold="label")
    assert (plan.n_items, plan.gold.n_labelled) == (1200, 600)
    plan = inspect(str(folder / "b.parquet"), classes_path, tmp_path, gold="label")
    assert (plan.n_items, plan.gold.n_labelled) == (600, 0)
    pq.write_table(rest.set_column(rest.schema.get_field_index("item_id"), "item_id", pa.nulls(600)),
                   folder / "b.parquet")
    with pytest.raises(SourceError, match="b.parquet: column item_id must be a string, got null$"):  # ids are needed
        inspect(str(folder), classes_path, tmp_path, gold="label")


def test_duckdb_table_sources(catalog):
    tmp_path, items, classes = catalog
    db = tmp_path / "out.duckdb"
    with duckdb.connect(str(db)) as con:
        con.register("i", items)
        con.execute("CREATE TABLE catalog_items AS SELECT * FROM i")
    _, classes_path = write_catalog(tmp_path, items, classes)
    plan = inspect("table:catalog_items", classes_path, tmp_path, gold="label")
    assert plan.n_items == 1200 and plan.modalities == ("image", "text")
    with pytest.raises(SourceError, match="table:nope: no such table"):
        inspect("table:nope", classes_path, tmp_path)


def test_a_view_that_cannot_be_read_is_said_to_be_there_with_duckdb_s_reason(catalog):
    """A view over a table since dropped was "no such table", though the view is there."""
    tmp_path, items, classes = catalog
    db = tmp_path / "out.duckdb"
    with duckdb.connect(str(db)) as con:
        con.register("i", items)
        con.execute("CREATE TABLE night AS SELECT * FROM i")
        con.execute("CREATE SCHEMA staging")
        con.execute("CREATE VIEW staging.items AS SELECT * FROM night")
        con.execute("DROP TABLE night")
    _, classes_path = write_catalog(tmp_path, items, classes)
    for name in ("staging.items", "STAGING.Items"):
        with pytest.raises(SourceError, match=rf"^table:{name}: is in .*out.duckdb but cannot be read \(Catalog "
                                              r"Error: Table with name night does not exist!\)$"):
            inspect(f"table:{name}", classes_path, tmp_path)
    with pytest.raises(SourceError, match=r"^table:items: no such table in "):
        inspect("table:items", classes_path, tmp_path)


def test_a_table_source_may_be_a_view_in_a_schema_and_a_gold_column_may_have_a_dot_in_its_name(catalog):
    """Both pass the schema checks (query_table) and used to crash reading item_id and the gold values
    (con.table knew no view in a schema, ColumnExpression took 'gold.label' for column label of table gold)."""
    tmp_path, items, classes = catalog
    gold = items.column("label").to_pylist()
    gold[:2] = ["os", None]
    dotted = _with_gold(items, gold).rename_columns(["item_id", "image_embedding", "text_embedding", "gold.label"])
    _duckdb_table(tmp_path, "raw", dotted)
    with duckdb.connect(str(tmp_path / "out.duckdb")) as con:
        con.execute("CREATE SCHEMA staging; CREATE VIEW staging.items AS SELECT * FROM raw")
        con.execute("CREATE VIEW staging.doubled AS SELECT * FROM raw UNION ALL "
                    "SELECT * FROM raw WHERE item_id = 'item-0000007'")
    _, classes_path = write_catalog(tmp_path / "in", items, classes)
    plan = inspect("table:staging.items", classes_path, tmp_path, gold="gold.label")
    assert (plan.n_items, plan.gold_column) == (1200, "gold.label")
    assert (plan.gold.n_labelled, plan.gold.n_outside, plan.gold.outside_examples) == (1199, 1, ("os",))
    repeat = r"^table:staging.doubled: item_id must be unique; ids that repeat: 1, e\.g\. item-0000007 \(2x\)$"
    with pytest.raises(SourceError, match=repeat):
        inspect("table:staging.doubled", classes_path, tmp_path, gold="gold.label")
    # a Parquet file reads the dotted column alike, though pyarrow also reads a struct gold's field label for it
    pq.write_table(dotted.add_column(0, "gold", pa.array([{"label": "x"}] * 1200)), tmp_path / "dotted.parquet")
    assert inspect(str(tmp_path / "dotted.parquet"), classes_path, tmp_path, gold="gold.label").gold == plan.gold


TEXT = ("item_id", "label", "class_name")  # the string columns a run reads of items and classes


def _arrow_encoded(encode):
    def write(tmp_path, items, classes):
        tmp_path.mkdir(exist_ok=True)
        for table, name in ((items, "items"), (classes, "classes")):
            for column in TEXT:
                if column in table.column_names:
                    table = table.set_column(table.schema.get_field_index(column), column,
                                             encode(table.column(column).combine_chunks()))
            pq.write_table(table, tmp_path / f"{name}.parquet")
        return str(tmp_path / "items.parquet"), str(tmp_path / "classes.parquet")
    return write


def _polars_encoded(kind):
    def write(tmp_path, items, classes):
        tmp_path.mkdir(exist_ok=True)
        names = classes.column("class_name").to_pylist()
        dtype = {"item_id": pl.Categorical, "label": pl.Enum(names) if kind == "enum" else pl.Categorical,
                 "class_name": pl.Enum(names) if kind == "enum" else pl.Categorical}
        for table, name in ((items, "items"), (classes, "classes")):
            frame = pl.from_arrow(table)
            frame.with_columns(pl.col(c).cast(dtype[c]) for c in TEXT if c in frame.columns) \
                .write_parquet(tmp_path / f"{name}.parquet")
        return str(tmp_path / "items.parquet"), str(tmp_path / "classes.parquet")
    return write


def _duckdb_enums(tmp_path, items, classes):
    tmp_path.mkdir(exist_ok=True)
    with duckdb.connect(str(tmp_path / "out.duckdb")) as con:
        con.register("i", items)
        con.register("c", classes)
        con.execute("CREATE TYPE id AS ENUM (SELECT DISTINCT item_id FROM i); CREATE TYPE class AS ENUM (SELECT class_name FROM c)")
        con.execute("CREATE TABLE items AS SELECT * REPLACE (item_id::id AS item_id, label::class AS label) FROM i")
        con.execute("CREATE TABLE classes AS SELECT * REPLACE (class_name::class AS class_name) FROM c")
    return "table:items", "table:classes"


# how the usual writers store labels and ids: pandas' category (int8 indices for few values, int16 or int32 for
# more), a plain dictionary-encoded Arrow column (uint32 or int64), Arrow's string views, polars' Categorical
# and Enum, DuckDB's ENUM
ENCODINGS = {
    "pandas category": _arrow_encoded(lambda c: pc.dictionary_encode(c).cast(
        pa.dictionary(pa.int8() if len(pc.unique(c)) < 128 else pa.int16(), pa.string()))),
    "dictionary uint32": _arrow_encoded(lambda c: pc.dictionary_encode(c).cast(pa.dictionary(pa.uint32(), pa.string()))),
    "dictionary int64": _arrow_encoded(lambda c: pc.dictionary_encode(c).cast(pa.dictionary(pa.int64(), pa.string()))),
    "string_view": _arrow_encoded(lambda c: c.cast(pa.string_view())),
    "polars Categorical": _polars_encoded("categorical"),
    "polars Enum": _polars_encoded("enum"),
    "DuckDB ENUM": _duckdb_enums,
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_ids_gold_and_class_names_may_be_dictionary_encoded_or_string_views(catalog, encoding):
    """They were refused ('column label must be a string, got dictionary<values=string, ...>', exit 2): read as
    the strings they hold, they give the plain catalog's plan, gold counts and duplicate ids."""
    tmp_path, items, classes = catalog
    gold = items.column("label").to_pylist()
    gold[:3] = ["os", None, "os"]
    if "Enum" not in encoding and "ENUM" not in encoding:  # an enum of the class names holds nothing else
        items = _with_gold(items, gold)
    plain = inspect(*write_catalog(tmp_path / "plain", items, classes), tmp_path / "plain", gold="label")
    sources = ENCODINGS[encoding](tmp_path, items, classes)
    if not sources[0].startswith("table:"):  # the writer kept its encoding: the test reads what it says
        for path in sources:
            schema = pq.ParquetFile(path).schema_arrow
            assert not any(schema.field(c).type == pa.string() for c in ("item_id", "label") if c in schema.names)
    plan = inspect(*sources, tmp_path, gold="label")
    assert (plan.class_names, plan.gold, plan.n_items) == (plain.class_names, plain.gold, plain.n_items)
    doubled = pa.concat_tables([items, items.slice(7, 1)])
    sources = ENCODINGS[encoding](tmp_path / "doubled", doubled, classes)
    with pytest.raises(SourceError, match=r"item_id must be unique; ids that repeat: 1, e\.g\. item-0000007 \(2x\)$"):
        inspect(*sources, tmp_path / "doubled", gold="label")


def test_files_of_one_source_may_hold_a_string_column_encoded_otherwise_but_not_as_ints(catalog):
    """A night's file from another writer stores the labels plain, or the first file's are a category: both
    are strings; ints in a further file are refused though the first file's labels are dictionary-encoded."""
    tmp_path, items, classes = catalog
    _, classes_path = write_catalog(tmp_path, items, classes)
    folder = tmp_path / "mixed"
    folder.mkdir()
    first = items.slice(0, 600)
    category = pc.dictionary_encode(first.column("label").combine_chunks())
    pq.write_table(first.set_column(3, "label", category), folder / "a.parquet")
    rest = items.slice(600)
    pq.write_table(rest.set_column(0, "item_id", rest.column("item_id").cast(pa.string_view())), folder / "b.parquet")
    assert inspect(str(folder), classes_path, tmp_path, gold="label").gold.n_labelled == 1200
    pq.write_table(rest.set_column(3, "label", pa.array(range(600))), folder / "b.parquet")
    with pytest.raises(SourceError, match="b.parquet: column label must be a string, got int64$"):
        inspect(str(folder), classes_path, tmp_path, gold="label")


def test_class_files_may_hold_the_class_names_encoded_otherwise(catalog):
    """A dictionary and a plain string column did not concatenate (a traceback): class names are read as strings."""
    tmp_path, items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path, items, classes)
    folder = tmp_path / "classes"
    folder.mkdir()
    classes = classes.append_column("parent", pa.array(["top", "top", "bottom", "bottom"]))
    names = pc.dictionary_encode(classes.column("class_name").combine_chunks())
    parents = pc.dictionary_encode(classes.column("parent").combine_chunks())
    pq.write_table(classes.set_column(0, "class_name", names).set_column(3, "parent", parents).slice(0, 2),
                   folder / "a.parquet")
    pq.write_table(classes.slice(2).set_column(0, "class_name", classes.column("class_name").slice(2)
                                               .cast(pa.string_view())), folder / "b.parquet")
    plan = inspect(items_glob, str(folder), tmp_path, gold="label")
    assert plan.class_names == tuple(classes.column("class_name").to_pylist())
    assert plan.parents_by_class() == dict(zip(plan.class_names, ["top", "top", "bottom", "bottom"]))


def test_class_files_of_incompatible_types_are_refused_in_one_line(catalog):
    """Class names as ints in one file and strings in another: pyarrow's ArrowTypeError escaped as a traceback."""
    tmp_path, items, classes = catalog
    items_glob, _ = write_catalog(tmp_path, items, classes)
    folder = tmp_path / "classes"
    folder.mkdir()
    pq.write_table(classes.set_column(0, "class_name", pa.array([1, 2, 3, 4])).slice(0, 2), folder / "a.parquet")
    pq.write_table(classes.slice(2), folder / "b.parquet")
    with pytest.raises(SourceError, match=r"classes: files have incompatible schemas \(.*class_name.*\)$"):
        inspect(items_glob, str(folder), tmp_path)


def _twice(table: pa.Table, name: str, column=None) -> pa.Table:
    """The table with one more column named ``name`` (pyarrow writes such a file): a copy of it, or ``column``."""
    extra = table.column(name) if column is None else column
    return pa.Table.from_arrays([*table.columns, extra], names=[*table.column_names, name])


def _versioned(items: pa.Table) -> pa.Table:
    return items.append_column("version", pa.array(["v1"] * items.num_rows))


@pytest.mark.parametrize("column", ["item_id", "text_embedding", "label", "version"])
def test_a_column_the_run_reads_named_twice_is_refused_naming_it_and_the_file(catalog, column):
    """Two version columns with --changed-column version passed validation and failed the run once it had
    started (KeyError: Field "version" exists 2 times in schema); two gold columns, a traceback naming no column
    twice (Column label does not exist in schema)."""
    tmp_path, items, classes = catalog
    _fail(tmp_path, _twice(_versioned(items), column), classes, gold="label", changed="version",
          message=rf"^{re.escape(str(tmp_path / 'bad-items.parquet'))}: column {column} appears 2 times; the run "
                  "reads it by name, so it must appear once$")


@pytest.mark.parametrize(("values", "kind"), [([[1, 2]], "list"), ([{"major": 1, "minor": 2}], "struct")])
def test_a_changed_column_of_lists_or_structs_is_refused_naming_its_type(catalog, values, kind):
    """Its values are compared as text: the run registered, then failed on an Arrow cast (exit 1, a failed row
    in runs: 'Unsupported cast from list<element: int64> to utf8'); now it is bad input, as a missing column is."""
    tmp_path, items, classes = catalog
    versions = pa.array(values * items.num_rows)
    _fail(tmp_path, items.append_column("version", versions), classes, changed="version",
          message=rf"^{re.escape(str(tmp_path / 'bad-items.parquet'))}: --changed-column version holds "
                  rf"{kind}<[^>]+> values; it must hold one value an item: ")


def test_an_embedding_column_named_twice_is_refused_though_the_classes_lack_it(catalog):
    """The items' embedding columns are all checked (they make the modalities): it was a KeyError, a traceback."""
    tmp_path, items, classes = catalog
    audio = items.column("text_embedding")
    doubled = _twice(items.append_column("audio_embedding", audio), "audio_embedding", audio)
    _fail(tmp_path, doubled, classes, "bad-items.parquet: column audio_embedding appears 2 times; ")


def test_columns_the_run_does_not_read_may_be_named_twice(catalog):
    """As other columns may differ between files: the run reads its own columns by name, and runs did succeed."""
    tmp_path, items, classes = catalog
    notes = pa.array(["a"] * items.num_rows)
    pq.write_table(_twice(_twice(_versioned(items), "note", notes), "note", notes), tmp_path / "items.parquet")
    plan = inspect(str(tmp_path / "items.parquet"), _classes_path(tmp_path, classes), tmp_path, gold="label",
                   changed="version")
    assert (plan.n_items, plan.modalities, plan.changed_column) == (1200, ("image", "text"), "version")


def _classes_path(tmp_path, classes):
    pq.write_table(classes, tmp_path / "classes.parquet")
    return str(tmp_path / "classes.parquet")


def test_the_first_of_several_files_or_a_further_one_is_named_for_a_column_it_names_twice(catalog):
    tmp_path = catalog[0]
    folder, classes_path, rest = mixed_folder(catalog)
    first = pq.read_table(folder / "a.parquet")
    pq.write_table(_twice(first, "label"), folder / "a.parquet")
    with pytest.raises(SourceError, match=rf"^{re.escape(str(folder / 'a.parquet'))}: column label appears 2 times; "):
        inspect(str(folder), classes_path, tmp_path, gold="label")
    assert inspect(str(folder), classes_path, tmp_path).n_items == 1200  # without --gold-column, label is not read
    pq.write_table(first, folder / "a.parquet")
    for column in ("item_id", "image_embedding", "label"):
        pq.write_table(_twice(rest, column), folder / "b.parquet")
        with pytest.raises(SourceError, match=rf"^{re.escape(str(folder / 'b.parquet'))}: column {column} appears 2 "):
            inspect(str(folder), classes_path, tmp_path, gold="label")
    # a file without rows whose column typed null the first file names twice (it is not read)
    pq.write_table(_twice(first, "note", pa.array(["x"] * 600)).append_column("note", pa.array(["y"] * 600)),
                   folder / "a.parquet")
    pq.write_table(_empty_typed_null(rest.append_column("note", pa.nulls(600))), folder / "b.parquet")
    assert inspect(str(folder), classes_path, tmp_path, gold="label").n_items == 600


@pytest.mark.parametrize("column", ["class_name", "parent", "image_embedding"])
def test_a_class_column_the_run_reads_named_twice_is_refused_naming_it_and_the_file(catalog, column):
    """It was "files have incompatible schemas (Can't unify schema with duplicate field names.)" for one file."""
    tmp_path, items, classes = catalog
    items_glob, _ = write_catalog(tmp_path, items, classes)
    classes = classes.append_column("parent", pa.array(["top", "top", "bottom", "bottom"]))
    pq.write_table(_twice(classes, column), tmp_path / "twice.parquet")
    with pytest.raises(SourceError, match=rf"^{re.escape(str(tmp_path / 'twice.parquet'))}: column {column} "
                                          "appears 2 times; the run reads it by name, so it must appear once$"):
        inspect(items_glob, str(tmp_path / "twice.parquet"), tmp_path)
    folder = tmp_path / "classes"  # of several files, the one that names it twice
    folder.mkdir()
    pq.write_table(classes.slice(0, 2), folder / "a.parquet")
    pq.write_table(_twice(classes.slice(2), column), folder / "b.parquet")
    with pytest.raises(SourceError, match=rf"^{re.escape(str(folder / 'b.parquet'))}: column {column} appears 2 "):
        inspect(items_glob, str(folder), tmp_path)


def test_class_columns_the_run_does_not_read_may_be_named_twice(catalog):
    tmp_path, items, classes = catalog
    items_glob, _ = write_catalog(tmp_path, items, classes)
    folder = tmp_path / "classes"
    folder.mkdir()
    pq.write_table(_twice(_twice(classes, "note", pa.array(["a"] * 4)), "note", pa.array([1] * 4)).slice(0, 2),
                   folder / "a.parquet")
    pq.write_table(classes.slice(2), folder / "b.parquet")
    plan = inspect(items_glob, str(folder), tmp_path, gold="label")
    assert plan.class_names == tuple(classes.column("class_name").to_pylist())
    assert plan.modalities == ("image", "text")


def test_a_table_source_cannot_name_a_column_twice(catalog):
    """DuckDB refuses a table so made and names a view's columns apart (version, version_1): a `table:` source
    needs no such check."""
    tmp_path, items, classes = catalog
    pq.write_table(_twice(_versioned(items), "version", pa.array(["v2"] * 1200)), tmp_path / "twice.parquet")
    with duckdb.connect(str(tmp_path / "out.duckdb")) as con:
        con.execute(f"CREATE VIEW twice AS SELECT * FROM read_parquet('{tmp_path / 'twice.parquet'}')")
        assert [name for name, *_ in con.execute("DESCRIBE twice").fetchall()][-2:] == ["version", "version_1"]
        with pytest.raises(duckdb.CatalogException, match="already exists"):
            con.execute("CREATE TABLE twice_table (item_id VARCHAR, version VARCHAR, version VARCHAR)")
    plan = inspect("table:twice", _classes_path(tmp_path, classes), tmp_path, changed="version")
    assert plan.changed_column == "version"


def test_strings_are_any_arrow_string_type_or_a_dictionary_of_one():
    for kind in (pa.string(), pa.large_string(), pa.string_view(), pa.dictionary(pa.int8(), pa.string()),
                 pa.dictionary(pa.uint64(), pa.large_string()), pa.dictionary(pa.int32(), pa.string_view())):
        assert is_text(kind), kind
    for kind in (pa.binary(), pa.int64(), pa.dictionary(pa.int32(), pa.int64()), pa.list_(pa.string())):
        assert not is_text(kind), kind


def test_partitions_follow_row_groups(tmp_path):
    table = pa.table({"x": np.arange(1000)})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=300)
    parts = list(plan_partitions([str(tmp_path / "a.parquet")], 500))
    assert [p.row_groups for p in parts] == [(0, 1), (2, 3)]
    assert [p.n_rows for p in parts] == [600, 400]


def test_bad_rows_are_set_aside_with_a_reason():
    from tasks.sources import matrix

    values = [[1.0, 2.0], None, [1.0], [float("inf"), 1.0], [0.0, 0.0], [1.0, None], [3.0, 4.0],
              [3e38, 1.0], [1e-30, -1e-30], [1e19, 1e-30]]  # finite, but the square norm over- or underflows
    batch = pa.RecordBatch.from_pydict({"item_id": [f"i{k}" for k in range(10)],
                                        "x_embedding": pa.array(values, pa.list_(pa.float32()))})
    got = matrix(batch, "x", 2)
    assert got.valid.tolist() == [True, False, False, False, False, False, True, False, False, True]
    assert got.reasons.tolist() == [None, "null embedding", "embedding has 1 values, expected 2",
                                    "NaN, Inf or null value in embedding", "all-zero embedding",
                                    "NaN, Inf or null value in embedding", None,
                                    "embedding values too large (the square norm overflows float32)",
                                    "embedding values too small (the square norm underflows float32)", None]
    np.testing.assert_array_equal(got.x, np.array([[1.0, 2.0], [3.0, 4.0], [1e19, 1e-30]], np.float32))
    assert np.isfinite(got.square_norms).all() and (got.square_norms > 0).all()
    fixed = pa.RecordBatch.from_pydict({"item_id": ["a", "b"], "x_embedding": pa.FixedSizeListArray.from_arrays(
        pa.array([1.0, float("nan"), 2.0, 2.0], pa.float32()), 2)})
    assert matrix(fixed, "x", 2).valid.tolist() == [False, True]


def test_float64_values_past_float32_s_range_are_rejected_as_too_large_or_small_without_a_warning():
    """1e300 was 'NaN, Inf or null value' and 1e-300 'all-zero', with numpy's overflow warning (two lines of
    source) on stderr under --quiet."""
    from tasks.sources import matrix

    values = [[1e300, 1.0], [1e-300, -1e-300], [float("nan"), 1.0], [0.0, 0.0], [3.0, 4.0]]
    batch = pa.RecordBatch.from_pydict({"item_id": list("abcde"),
                                        "x_embedding": pa.array(values, pa.list_(pa.float64()))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = matrix(batch, "x", 2)
    assert got.reasons.tolist() == ["embedding values too large (the square norm overflows float32)",
                                    "embedding values too small (the square norm underflows float32)",
                                    "NaN, Inf or null value in embedding", "all-zero embedding", None]


def test_messages_quote_values_and_escape_what_prints_as_nothing_or_a_space():
    from tasks.sources import quoted

    assert quoted(["x ", "", "caf\u00e9", "\xa0", "\t"]) == '"x ", "", "caf\u00e9", "\\u00a0", "\\t"'
