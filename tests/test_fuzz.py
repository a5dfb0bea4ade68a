"""Hypothesis builds malformed catalogs; every item is accounted for, or the run stops with a clear reason."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import make_catalog
from tasks.sources import SourceError

pytestmark = pytest.mark.usefixtures("prefect_harness")

N, D = 60, {"image": 512, "text": 384}
ROW_FAULTS = ["ok", "ok", "ok", "null", "short", "nan", "inf", "zeros", "null value"]


def corrupt(value: list[float], fault: str) -> list[float] | None:
    return {"ok": value, "null": None, "short": value[:-1], "nan": [float("nan")] + value[1:],
            "inf": value[:-1] + [float("inf")], "zeros": [0.0] * len(value),
            "null value": [None] + value[1:]}[fault]


@st.composite
def malformed(draw):
    faults = {m: draw(st.lists(st.sampled_from(ROW_FAULTS), min_size=N, max_size=N)) for m in D}
    duplicate = draw(st.booleans()) and draw(st.integers(0, 9)) == 0
    table_fault = draw(st.sampled_from([None] * 6 + ["no item_id", "ints", "strings", "no modality"]))
    return faults, duplicate, table_fault


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(malformed())
def test_every_item_is_labelled_or_rejected_or_the_run_stops_cleanly(tmp_path_factory, case):
    faults, duplicate, table_fault = case
    tmp = tmp_path_factory.mktemp("fuzz")
    items, classes = make_catalog(N, 4, seed=1)
    rows = items.to_pylist()
    for m in D:
        for row, fault in zip(rows, faults[m], strict=True):
            row[f"{m}_embedding"] = corrupt(row[f"{m}_embedding"], fault)
    if duplicate:
        rows.append(dict(rows[0]))
    columns = {"item_id": pa.string(), **{f"{m}_embedding": pa.list_(pa.float32()) for m in D}, "label": pa.string()}
    table = pa.Table.from_pylist(rows, schema=pa.schema(columns))
    if table_fault == "no item_id":
        table = table.drop(["item_id"])
    elif table_fault == "ints":
        table = table.set_column(1, "image_embedding", pa.array([[1, 2]] * table.num_rows, pa.list_(pa.int32())))
    elif table_fault == "strings":
        table = table.set_column(2, "text_embedding", pa.array(["x"] * table.num_rows))
    elif table_fault == "no modality":
        table = table.rename_columns(["item_id", "photo_embedding", "title_embedding", "label"])
    pq.write_table(table, tmp / "items.parquet", row_group_size=25)
    pq.write_table(classes, tmp / "classes.parquet")
    db = tmp / "out.duckdb"
    params = ReclassifyParams(items=str(tmp / "items.parquet"), classes=str(tmp / "classes.parquet"), db=str(db),
                              gold_column="label", run_id="fuzz", chunk_size=25, min_items=2)
    try:
        reclassify_catalog(params)
    except SourceError as error:  # stopped before writing anything, with one line
        assert table_fault is not None or (duplicate and "item_id must be unique" in str(error))
        assert "\n" not in str(error)
        assert not db.exists()
        return
    assert table_fault is None and not duplicate
    with duckdb.connect(str(db), read_only=True) as con:
        labelled = con.execute("SELECT item_id, modality FROM item_labels").fetchall()
        rejected = con.execute("SELECT item_id, modality FROM rejected_items").fetchall()
    assert sorted(labelled + rejected) == sorted((row["item_id"], m) for row in rows for m in D)
    expected_rejected = {(row["item_id"], m) for m in D for row, f in zip(rows, faults[m], strict=True) if f != "ok"}
    assert set(rejected) == expected_rejected
