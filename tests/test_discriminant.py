"""The label-aware review's discriminant (pairwise_core/discriminant.py) against a brute-force reading of
METHOD.md step 9: per fold, the model of the other folds, written item by item."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairwise_core.discriminant import (
    POLISH_PENALTY, SHRINKAGES, TEMPERATURES, ClassSums, FoldDiscriminant, Scatter, lbfgs, polish,
)
from pairwise_core.refine import log_softmax

N_FOLDS = 5


@st.composite
def catalogs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k, dims, n = draw(st.integers(2, 4)), (draw(st.integers(1, 3)), draw(st.integers(1, 3))), draw(st.integers(40, 90))
    labels = rng.integers(0, k, n)
    centres = [rng.normal(size=(k, d)) for d in dims]
    xs = [(c[labels] + rng.normal(scale=0.7, size=(n, c.shape[1]))).astype(np.float32) for c in centres]
    present = rng.random((n, 2)) < 0.9
    present[:30] = True  # enough complete rows for a covariance in every fold's complement
    labels[rng.random(n) < 0.1] = -1
    labels[:30] = rng.integers(0, k, 30)
    fold = rng.integers(0, N_FOLDS, n)
    fold[:30] = np.arange(30) % N_FOLDS
    for x, column in zip(xs, present.T, strict=True):
        x[~column] = 0.0
    return xs, present, labels, fold, k


def reference(xs, present, labels, fold, k, sample, shrinkage, temperature):
    """Every row's out-of-fold log posterior, item by item."""
    n, dims = len(labels), [x.shape[1] for x in xs]
    out = np.zeros((n, k))
    for f in range(N_FOLDS):
        train = (fold != f) & (labels >= 0)
        means = np.concatenate([
            np.array([x[train & present[:, m] & (labels == c)].astype(np.float64).sum(axis=0)
                      / max((train & present[:, m] & (labels == c)).sum(), 1) for c in range(k)])
            for m, x in enumerate(xs)], axis=1)
        counts = np.array([[(train & present[:, m] & (labels == c)).sum() for m in range(2)] for c in range(k)])
        items = counts.max(axis=1)
        log_prior = np.log(np.maximum(items, 0.5) / max(items.sum(), 1))
        rows = [i for i in sample if fold[i] != f]
        z = np.concatenate([x[rows] for x in xs], axis=1).astype(np.float64)
        y = labels[rows]
        centred = np.zeros_like(z)
        seen = 0
        for c in range(k):
            if (y == c).any():
                centred[y == c] = z[y == c] - z[y == c].mean(axis=0)
                seen += 1
        cov = centred.T @ centred / (len(rows) - seen)
        for i in np.flatnonzero(fold == f):
            mods = [m for m in range(2) if present[i, m]]
            if not mods:
                continue
            cols = np.concatenate([np.arange(sum(dims[:m]), sum(dims[: m + 1])) for m in mods])
            block = cov[np.ix_(cols, cols)]
            shrunk = (1 - shrinkage) * block + shrinkage * np.trace(block) / len(cols) * np.eye(len(cols))
            inverse = np.linalg.inv(shrunk)
            row = np.concatenate([xs[m][i] for m in mods]).astype(np.float64)
            mu = means[:, cols]
            out[i] = [row @ inverse @ mu[c] - 0.5 * mu[c] @ inverse @ mu[c] + log_prior[c] for c in range(k)]
    return log_softmax(out / temperature)


def fit(xs, present, labels, fold, k, **grids):
    sums = [ClassSums.of(x[present[:, m]], labels[present[:, m]], fold[present[:, m]], N_FOLDS, k)
            for m, x in enumerate(xs)]
    sample = np.flatnonzero(present.all(axis=1) & (labels >= 0))
    z = np.concatenate([x[sample] for x in xs], axis=1)
    model = FoldDiscriminant(sums, Scatter.of(z, labels[sample], fold[sample], N_FOLDS, k), z, labels[sample],
                             fold[sample], **grids)
    return model, sample


@settings(max_examples=40, deadline=None)
@given(catalogs())
def test_out_of_fold_posteriors_equal_a_per_item_reference(catalog):
    xs, present, labels, fold, k = catalog
    model, sample = fit(xs, present, labels, fold, k, polish_steps=0)  # the Gaussian model alone
    got = model.log_posterior(xs, present, fold)
    expected = reference(xs, present, labels, fold, k, sample, model.shrinkage, model.temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)  # scored in float32, as the embeddings


@settings(max_examples=20, deadline=None)
@given(catalogs())
def test_shrinkage_and_temperature_maximize_the_held_out_likelihood_of_the_first_fold(catalog):
    xs, present, labels, fold, k = catalog
    model, sample = fit(xs, present, labels, fold, k, polish_steps=0)
    held = sample[fold[sample] == fold[sample].min()]
    # the chosen pair scores at least as well as every other pair of the grids, each scored by the reference
    scores = {}
    for a in SHRINKAGES:
        logits = reference(xs, present, labels, fold, k, sample, a, 1.0)[held]  # up to a constant per row
        for t in TEMPERATURES:
            scores[a, t] = log_softmax(logits / t)[np.arange(held.size), labels[held]].sum()
    chosen = reference(xs, present, labels, fold, k, sample, model.shrinkage, model.temperature)
    best = chosen[held][np.arange(held.size), labels[held]].sum()
    assert best >= max(scores.values()) - 1e-6


@given(catalogs(), st.lists(st.integers(0, 90), max_size=4))
def test_class_sums_merge_across_chunks(catalog, cuts):
    xs, present, labels, fold, k = catalog
    cuts = sorted(c for c in cuts if c < len(labels))
    whole = ClassSums.of(xs[0], labels, fold, N_FOLDS, k)
    merged = ClassSums.zeros(N_FOLDS, k, xs[0].shape[1])
    for x, y, f in zip(np.split(xs[0], cuts), np.split(labels, cuts), np.split(fold, cuts), strict=True):
        merged = merged + ClassSums.of(x, y, f, N_FOLDS, k)
    np.testing.assert_allclose(merged.total, whole.total, atol=1e-5)  # a call sums in the rows' dtype (float32)
    np.testing.assert_array_equal(merged.count, whole.count)
    for f in range(N_FOLDS):
        for c in range(k):
            rows = (fold == f) & (labels == c)
            assert whole.count[f, c] == rows.sum()
            np.testing.assert_allclose(whole.total[f, c], xs[0][rows].sum(axis=0), atol=1e-5)


def one_view(seed, n, k):
    """A small one-modality catalog: class k sits on axis k; folds in turn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    xs = [(np.eye(k)[labels] + rng.normal(scale=0.5, size=(n, k))).astype(np.float32)]
    return xs, np.ones((n, 1), bool), labels, np.arange(n) % N_FOLDS


def test_a_label_seen_only_in_its_own_fold_does_not_judge_it():
    # out of fold: changing the labels of fold 0's items leaves fold 0's posteriors unchanged
    k = 3
    xs, present, labels, fold = one_view(1, 200, k)
    # the grids' choice reads every fold: fixed here, so that fold 0's posteriors could only move by its labels
    grids = {"shrinkages": (0.1,), "temperatures": (1.5,), "polish_steps": 10}
    first, _ = fit(xs, present, labels, fold, k, **grids)
    changed = labels.copy()
    changed[fold == 0] = (changed[fold == 0] + 1) % k
    second, _ = fit(xs, present, changed, fold, k, **grids)
    rows = fold == 0
    np.testing.assert_allclose(first.log_posterior(xs, present, fold)[rows],
                               second.log_posterior(xs, present, fold)[rows], atol=1e-9)
    assert not np.allclose(first.log_posterior(xs, present, fold)[~rows],
                           second.log_posterior(xs, present, fold)[~rows])


def test_an_item_with_no_modality_gets_the_uniform_posterior():
    k = 3
    xs, present, labels, fold = one_view(2, 100, k)
    model, _ = fit(xs, present, labels, fold, k)
    present[0] = False
    np.testing.assert_allclose(np.exp(model.log_posterior(xs, present, fold)[0]), 1 / k)


def test_the_scatter_is_the_pooled_within_class_covariance():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    labels, fold = rng.integers(0, 3, 50), rng.integers(0, N_FOLDS, 50)
    folds = np.array([False, True, True, False, True])
    scatter = Scatter.of(x, labels, fold, N_FOLDS, 3)
    rows = folds[fold]
    z, y = x[rows].astype(np.float64), labels[rows]
    centred = np.concatenate([z[y == c] - z[y == c].mean(axis=0) for c in range(3) if (y == c).any()])
    expected = centred.T @ centred / (rows.sum() - len(set(y)))
    np.testing.assert_allclose(scatter.within(folds), expected, rtol=1e-6, atol=1e-9)
    with pytest.raises(AssertionError):  # and it is not the plain covariance
        np.testing.assert_allclose(scatter.within(folds), np.cov(z.T, bias=True), rtol=1e-3)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 8))
def test_lbfgs_reaches_the_minimum_of_a_convex_quadratic(seed, d):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    hessian, b = a @ a.T + 0.5 * np.eye(d), rng.normal(size=(d, 1))
    got = lbfgs(lambda w: (float(0.5 * (w * (hessian @ w)).sum() - (b * w).sum()), hessian @ w - b),
                np.zeros((d, 1)), 200)
    np.testing.assert_allclose(got, np.linalg.solve(hessian, b), atol=1e-5)


def test_the_polish_lowers_the_penalized_logistic_loss_and_keeps_near_the_start():
    rng = np.random.default_rng(4)
    n, d, k = 300, 6, 3
    labels = rng.integers(0, k, n)
    x = np.eye(k, d)[labels] + rng.normal(scale=0.8, size=(n, d))
    coef, intercept = rng.normal(scale=0.1, size=(d, k)), np.zeros(k)

    def penalized(c, b):
        log_p = log_softmax(x @ c + b)
        return -log_p[np.arange(n), labels].mean() + POLISH_PENALTY / 2 * (((c - coef) ** 2).sum()
                                                                          + ((b - intercept) ** 2).sum())

    few, more = polish(coef, intercept, x, labels, 3), polish(coef, intercept, x, labels, 50)
    assert penalized(*few) < penalized(coef, intercept)
    assert penalized(*more) <= penalized(*few) + 1e-12
    # at the minimum the gradient vanishes: the optimum of the penalized loss, checked by its first-order condition
    c, b = more
    residual = (np.exp(log_softmax(x @ c + b)) - np.eye(k)[labels]) / n
    np.testing.assert_allclose(x.T @ residual + POLISH_PENALTY * (c - coef), 0, atol=1e-5)


def test_class_sums_of_many_groups_take_the_segmented_sum_and_agree():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 3)).astype(np.float32)
    labels, fold = rng.integers(-1, 40, 3000), rng.integers(0, N_FOLDS, 3000)  # up to 200 groups: over the cut
    sums = ClassSums.of(x, labels, fold, N_FOLDS, 40)
    for f in range(N_FOLDS):
        for c in range(40):
            rows = (fold == f) & (labels == c)
            assert sums.count[f, c] == rows.sum()
            np.testing.assert_allclose(sums.total[f, c], x[rows].astype(np.float64).sum(axis=0), atol=1e-4)


@pytest.mark.parametrize("n_classes", [3, 40])  # the one-hot product and the segmented sum
def test_scaled_class_sums_are_the_sums_of_the_scaled_rows(n_classes):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    labels, fold = rng.integers(-1, n_classes, 2000), rng.integers(0, N_FOLDS, 2000)
    scale = rng.uniform(0.2, 3.0, 2000)
    got = ClassSums.of(x, labels, fold, N_FOLDS, n_classes, scale)
    expected = ClassSums.of((x * scale[:, None]).astype(np.float32), labels, fold, N_FOLDS, n_classes)
    np.testing.assert_array_equal(got.count, expected.count)
    np.testing.assert_allclose(got.total, expected.total, rtol=1e-5, atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(catalogs(), st.floats(0.1, 10.0))
def test_rows_scored_with_their_scales_score_as_the_scaled_rows(catalog, spread):
    xs, present, labels, fold, k = catalog
    model, _ = fit(xs, present, labels, fold, k)
    rng = np.random.default_rng(len(labels))
    scales = [rng.uniform(1.0, 1.0 + spread, len(labels)) for _ in xs]
    scaled = [(x * s[:, None]).astype(np.float32) for x, s in zip(xs, scales, strict=True)]
    np.testing.assert_allclose(model.log_posterior(xs, present, fold, scales),
                               model.log_posterior(scaled, present, fold), rtol=1e-4, atol=1e-4)
