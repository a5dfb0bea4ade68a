"""Parquet on object storage: the flow reads s3:// sources through pyarrow, against a real local
S3-compatible server (moto's), and finds the same labels as from local files."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import free_port, write_catalog
from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import make_catalog
from tasks.sources import SourceError, inspect_sources, parquet_files

pytestmark = pytest.mark.usefixtures("prefect_harness")
BUCKET = "catalog"


@pytest.fixture(scope="module")
def s3_endpoint():
    """`moto_server` on a free port, for the module; yields its URL."""
    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint, monkeypatch, tmp_path):
    """A bucket holding a catalog (items/ in 3 files, classes.parquet); yields the same files' local paths."""
    # the standard AWS variables, as a user would set them for pyarrow (and on every Dask worker)
    for name, value in {"AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    items, classes = make_catalog(900, 5, seed=6)
    items_glob, classes_path = write_catalog(tmp_path / "local", items, classes, n_files=3, row_group_size=150)
    for path in sorted((tmp_path / "local").glob("items-*.parquet")):
        client.upload_file(str(path), BUCKET, f"items/{path.name}")
    client.upload_file(classes_path, BUCKET, "classes.parquet")
    yield items_glob, classes_path
    for entry in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=entry["Key"])
    client.delete_bucket(Bucket=BUCKET)


def labels(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT item_id, modality, base_class, pairwise_class, pairwise_margin FROM item_labels "
                           "ORDER BY item_id, modality").fetchall()


def test_s3_sources_give_the_same_labels_as_local_files(s3, tmp_path):
    local_items, local_classes = s3
    remote_items = parquet_files(f"s3://{BUCKET}/items/*.parquet")
    assert remote_items == [f"s3://{BUCKET}/items/items-{i}.parquet" for i in range(3)]
    assert parquet_files(f"s3://{BUCKET}/items") == remote_items  # a prefix: every Parquet object under it
    runs = {}
    for name, items, classes in [
        ("local", local_items, local_classes),
        ("s3", f"s3://{BUCKET}/items/*.parquet", f"s3://{BUCKET}/classes.parquet"),
    ]:
        db = tmp_path / name / "out.duckdb"
        summary = reclassify_catalog(ReclassifyParams(items=items, classes=classes, db=str(db), chunk_size=150))
        assert summary["details"]["n_partitions"] == 6
        runs[name] = labels(db)
    assert len(runs["s3"]) == 2 * 900 and runs["s3"] == runs["local"]


def test_a_prefix_leaves_out_hidden_objects_as_a_local_folder_does(s3, tmp_path):
    """Spark's _temporary/ attempts and dot files under a prefix were read as items."""
    client = boto3.client("s3")
    listed = parquet_files(f"s3://{BUCKET}/items")
    (tmp_path / "partial.parquet").write_bytes(b"PAR1 half-written")
    for key in ("items/_temporary/0/part-0.parquet", "items/.items-0.parquet"):
        client.upload_file(str(tmp_path / "partial.parquet"), BUCKET, key)
    assert parquet_files(f"s3://{BUCKET}/items") == listed == [f"s3://{BUCKET}/items/items-{i}.parquet"
                                                                for i in range(3)]


def test_a_delta_lake_table_under_a_prefix_is_refused_as_a_local_one_is(s3, tmp_path):
    client = boto3.client("s3")
    (tmp_path / "log.json").write_text("{}")
    client.upload_file(str(tmp_path / "log.json"), BUCKET, "items/_delta_log/00000000000000000000.json")
    with pytest.raises(SourceError, match=r"^s3://catalog/items: a Delta Lake table \(_delta_log/\): "):
        parquet_files(f"s3://{BUCKET}/items")


@pytest.mark.parametrize(("uri", "message"), [
    (f"s3://{BUCKET}/nothing-here.parquet", "no such file"),
    (f"s3://{BUCKET}/items/*.csv", "matches no Parquet files"),
])
def test_a_missing_object_is_a_one_line_source_error(s3, uri, message):
    with pytest.raises(SourceError, match=message) as error:
        parquet_files(uri)
    assert "\n" not in str(error.value) and uri in str(error.value)


def test_duplicate_item_ids_on_s3_stop_at_validation(s3, tmp_path):
    """The same check as for local files, through the same reader: item_id alone, before any pass."""
    local_items, local_classes = s3
    first = pq.read_table(sorted(Path(local_items).parent.glob("items-*.parquet"))[0])
    pq.write_table(first.slice(3, 2), tmp_path / "again.parquet")  # two items of items-0 once more
    boto3.client("s3").upload_file(str(tmp_path / "again.parquet"), BUCKET, "items/items-3.parquet")
    ids = first.column("item_id").to_pylist()[3:5]
    with pytest.raises(SourceError, match=rf"item_id must be unique; ids that repeat: 2, "
                                          rf"e\.g\. {ids[0]} \(2x\), {ids[1]} \(2x\)$"):
        inspect_sources(f"s3://{BUCKET}/items/*.parquet", local_classes, db=str(tmp_path / "out.duckdb"),
                        gold_column="label", chunk_size=150)
