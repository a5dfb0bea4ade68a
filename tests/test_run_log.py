"""The run log's lines word their counts right: one partition, one pair, one fallback, one labelled item."""

import pyarrow as pa
import pyarrow.parquet as pq

from pairwise_core.hierarchy import Level
from tasks import run_log
from tasks.sources import GoldValues, Partition, Plan


def test_counts_of_one_are_singular_and_the_others_plural():
    assert [run_log.count(n, "partition") for n in (0, 1, 2, 1200)] == [
        "0 partitions", "1 partition", "2 partitions", "1,200 partitions"]
    assert run_log.count(1, "class", "classes") == "1 class" and run_log.count(2, "class", "classes") == "2 classes"
    assert run_log.count(1.0, "dim") == "1 dim" and run_log.count(2.5, "dim") == "2.5 dims"


def test_a_one_partition_catalog_with_one_pair_is_worded_in_the_singular(tmp_path):
    one = (Partition(0, "items.parquet", (0,), 1),)
    plan = Plan(("text",), {"text": 3}, ("a", "b"), 1, "label", partitions=one, gold=GoldValues(1, 1, ("zz",)))
    assert run_log.catalog(plan, 50_000) == ("Catalog: 1 item in 1 partition (chunk size 50,000), 2 classes; "
                                             "modalities text (3-d); gold column label")
    assert run_log.partition_pass("Pass 2/2, labels", one, 0.5, 1).startswith(
        "Pass 2/2, labels: 1 item in 1 partition, ")
    assert run_log.gold_notes(plan)[0].startswith(
        'Gold column label names no class in 1 of 1 labelled item (100.0%; values such as "zz")')
    path = tmp_path / "pair_masks.parquet"
    pq.write_table(pa.table({"modality": ["text"], "n_dims": [1], "fallback": [True]}), path)
    assert run_log.masks(str(path), 0.25) == (
        "Masks fitted in 0.25 s: text 1 pair, median 1 dim (1-1), 1 fallback to all dims")
    assert run_log.review_fit({"route": "both", "requested": "auto", "sample_rows": 1}, 1.0).endswith(
        "on 1 labelled sample row")


def test_gold_values_that_differ_from_a_class_by_spaces_alone_are_pointed_out():
    """Gold values "food " under a class "food" count as naming no class; the note said so without the reason."""
    plan = Plan(("text",), {"text": 3}, ("food", "plant"), 3, "label",
                gold=GoldValues(3, 2, ("food ", " plant", "zz")))
    assert run_log.gold_notes(plan)[0] == (
        'Gold column label names no class in 2 of 3 labelled items (66.7%; values such as "food ", " plant", "zz"; '
        '"food ", " plant" differ from a class name by surrounding spaces alone): those items count as wrong in the '
        'gold metrics, and the review leaves them out')
    assert "spaces" not in run_log.gold_notes(
        Plan(("text",), {"text": 3}, ("food", "plant"), 1, "label", gold=GoldValues(1, 1, ("zz",))))[0]


def test_the_gold_note_says_the_parent_level_counts_a_value_naming_a_parent_as_it_is():
    """Gold values that are parent names were said to "count as wrong in the gold metrics"; the parent level
    (refined_parent) counts them right where the item's parent label is that parent."""
    plan = Plan(("text",), {"text": 3}, ("cat", "dog", "rose"), 5, "label", gold=GoldValues(5, 3, ("animal", "zz")),
                parent=Level.of(["animal", "animal", "plant"]))
    assert run_log.gold_notes(plan)[0] == (
        'Gold column label names no class in 3 of 5 labelled items (60.0%; values such as "animal", "zz"): those '
        "items count as wrong in the leaf level's gold metrics, and the review leaves them out; in the parent "
        'level\'s (methods *_parent) a value that names a parent, as "animal" does, counts as right where the item\'s '
        "parent label is that parent, the others as wrong")
    assert run_log.gold_notes(Plan(("text",), {"text": 3}, ("cat", "dog", "rose"), 5, "label",
                                   gold=GoldValues(5, 1, ("zz",)), parent=Level.of(["animal", "animal", "plant"])))[
        0].endswith("in the parent level's (methods *_parent) a value that names a parent counts as right where the "
                    "item's parent label is that parent, the others as wrong")


def test_a_night_with_nothing_to_read_says_so_without_a_rate_of_nothing():
    """It said 'Pass 1/1, labels: 0 items in 0 partitions (those with new or changed items of 2), 0.00 s (0
    items/s)'."""
    assert run_log.partition_pass("Pass 1/1, labels", (), 0.0, 2, "those with new or changed items") == (
        "Pass 1/1, labels: no partition read (those with new or changed items: none of 2 partitions)")
