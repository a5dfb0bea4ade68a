import numpy as np
import pyarrow as pa
import pytest

from pairwise_core import PairwiseClassifier, accuracy, embeddings, make_catalog


def test_catalog_follows_the_input_contract():
    items, classes = make_catalog(500, 13, seed=3)
    assert items.column_names == ["item_id", "image_embedding", "text_embedding", "label"]
    assert classes.column_names == ["class_name", "image_embedding", "text_embedding"]
    assert items.schema.field("image_embedding").type == pa.list_(pa.float32(), 512)
    assert len(set(items.column("item_id").to_pylist())) == 500
    assert set(items.column("label").to_pylist()) <= set(classes.column("class_name").to_pylist())
    assert embeddings(items, "text_embedding").shape == (500, 384)


def test_catalog_is_seeded():
    a, _ = make_catalog(200, 5, seed=11)
    b, _ = make_catalog(200, 5, seed=11)
    c, _ = make_catalog(200, 5, seed=12)
    assert a.equals(b) and not a.equals(c)


def test_label_noise_moves_the_requested_share_to_other_classes():
    clean, _ = make_catalog(4000, 10, seed=2)
    noisy, _ = make_catalog(4000, 10, seed=2, label_noise=0.2)
    moved = np.array(clean.column("label").to_pylist()) != np.array(noisy.column("label").to_pylist())
    assert 0.17 < moved.mean() < 0.23
    np.testing.assert_array_equal(embeddings(clean, "image_embedding"), embeddings(noisy, "image_embedding"))


def test_planted_structure_is_what_pairwise_exploits():
    items, classes = make_catalog(6000, 13, seed=5)
    names = classes.column("class_name").to_pylist()
    gold = np.array([names.index(v) for v in items.column("label").to_pylist()])
    x, c = embeddings(items, "image_embedding"), embeddings(classes, "image_embedding")
    clf = PairwiseClassifier(c).fit(x)
    assert accuracy(gold, clf.predict(x)) > accuracy(gold, clf.predict_base(x)) + 0.1


def test_catalog_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_items"):
        make_catalog(0)
    with pytest.raises(ValueError, match="label_noise"):
        make_catalog(10, label_noise=1.5)
