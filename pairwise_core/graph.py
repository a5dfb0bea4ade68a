"""Graph refinement (METHOD.md step 10): the refined posteriors propagated over the catalog's kNN graph.

With P the items' refined posteriors, A the kNN graph (a_ij = max(cos_ij, 0)^p for each of item i's k
neighbours j) and W = A + A^T, iterate F <- (1 - alpha) P + alpha D^-1 W F from F = P. D^-1 W is
row-stochastic, so every row of F stays a mixture of P's rows; a row of P that is all zeros (an item its
modality rejected) still gets its neighbours' classes. Symmetrising W is worth 1.5 points of joint
accuracy over the directed A on the WordNet nouns (0.507 against 0.492, held-out half; bench/research_graph.md).

A new item (``inductive``) takes one step against its neighbours' stored F with its directed row of A:
(1 - alpha) P + alpha D^-1 A F. What that step needs of a fit's graph is stored with the model
(``Neighbourhood``): the index, the items' keys and each row of F cut to its top classes.

Pure numpy and scipy.sparse: the neighbours come from an index the pipeline builds (tasks/graph.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from pairwise_core.joint import fit_weights
from pairwise_core.refine import log_softmax

# A run's graph is built over at most this many items (a seeded sample); the others take one step against it,
# as a night's new items do (docs/results.md, "A bounded graph"): catalogs up to it keep the graph over every item
REFERENCE_ITEMS = 1_000_000


def edge_weights(similarities: np.ndarray, power: float) -> np.ndarray:
    """w = max(cos, 0)^power, float32; a missing neighbour (NaN) weighs 0."""
    cos = np.nan_to_num(np.asarray(similarities, np.float32), nan=0.0)
    return np.power(np.maximum(cos, 0.0), np.float32(power), dtype=np.float32)


def adjacency(neighbours: np.ndarray, weights: np.ndarray, n_columns: int) -> sparse.csr_matrix:
    """A as a sparse (n, n_columns) matrix from (n, k) neighbour indices (-1: none) and their weights."""
    neighbours = np.asarray(neighbours, np.int64)
    keep = (neighbours >= 0) & (np.asarray(weights) > 0)
    rows = np.broadcast_to(np.arange(len(neighbours))[:, None], neighbours.shape)
    return sparse.csr_matrix((np.asarray(weights, np.float64)[keep], (rows[keep], neighbours[keep])),
                             shape=(len(neighbours), n_columns))


def undirected(a: sparse.csr_matrix) -> sparse.csr_matrix:
    """W = A + A^T: the catalog's graph, whose edges both the propagation and the label vote read."""
    return (a + a.T).tocsr()


def transition(a: sparse.csr_matrix, *, symmetric: bool = True) -> sparse.csr_matrix:
    """D^-1 W, float32, with W = A + A^T (the catalog's graph) or A (``symmetric=False``: a new item's row
    against the stored items, or a W already made by ``undirected``). A row whose weights sum to zero stays
    empty: its item keeps (1 - alpha) P, renormalised later."""
    w = (a + a.T).tocsr() if symmetric else a.tocsr()
    degree = np.asarray(w.sum(axis=1)).ravel()
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    # each entry scaled by its row's 1 / degree in place (a product with diag(1 / degree) took 2.3 s at 1M)
    scaled = (w.data * np.repeat(inverse, np.diff(w.indptr))).astype(np.float32)
    return sparse.csr_matrix((scaled, w.indices, w.indptr), shape=w.shape)


def reorder(step: sparse.csr_matrix, order: np.ndarray) -> sparse.csr_matrix:
    """P S P^T: S with its rows and its columns both taken in ``order`` (a permutation), each row's entries in
    the order S holds them, so (P S P^T)(P F) = P (S F) bit for bit. In an order where neighbours sit near each
    other (an IVF index's lists) the rows of F a row reads stay in cache: the propagation of 1M items' three
    posteriors took 6.4 s instead of 13.8."""
    order = np.asarray(order, np.int64)
    inverse = inverse_permutation(order).astype(step.indices.dtype)
    counts = np.diff(step.indptr)[order]
    indptr = np.zeros(len(order) + 1, step.indptr.dtype)
    np.cumsum(counts, out=indptr[1:])
    # where each new entry is in S, in S's own index type (int32 below 2^31 entries: 1M items, 1.5 -> 0.55 s)
    taken = np.repeat((step.indptr[order] - indptr[:-1]).astype(step.indptr.dtype), counts)
    taken += np.arange(indptr[-1], dtype=step.indptr.dtype)
    return sparse.csr_matrix((step.data[taken], inverse[step.indices[taken]], indptr), shape=step.shape)


def inverse_permutation(order: np.ndarray) -> np.ndarray:
    """The positions of 0, 1, ... in ``order``: ``x[order][inverse_permutation(order)]`` is ``x``."""
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.arange(len(order))
    return inverse


def propagate(prior: np.ndarray, step: sparse.csr_matrix, *, alpha: float, iterations: int,
              threads: int = 1) -> np.ndarray:
    """F after ``iterations`` of F <- (1 - alpha) P + alpha S F from F = P, with S = D^-1 W (``transition``),
    rows scaled to sum to one. ``threads``: S F is taken in that many blocks of rows at once (scipy's
    product lets the GIL go, and each row's sum is the same whichever block it is in)."""
    prior = np.asarray(prior, np.float32)
    anchored = (1 - alpha) * prior
    blocks = [(slice(None), step)]
    if threads > 1 and step.shape[0] > 1:
        bounds = np.linspace(0, step.shape[0], threads + 1).astype(np.int64)
        blocks = [(slice(a, b), _rows(step, a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    f = prior
    with ThreadPoolExecutor(len(blocks)) if len(blocks) > 1 else nullcontext() as pool:
        for _ in range(iterations):
            f = anchored + np.float32(alpha) * _product(blocks, f, pool)
    return normalize(f)


def _rows(step: sparse.csr_matrix, start: int, stop: int) -> sparse.csr_matrix:
    """Rows start:stop of ``step`` over its own arrays (``step[start:stop]`` copies them: 320 MB at 1M items)."""
    first, last = step.indptr[start], step.indptr[stop]
    return sparse.csr_matrix((step.data[first:last], step.indices[first:last], step.indptr[start : stop + 1] - first),
                             shape=(stop - start, step.shape[1]), copy=False)


def _product(blocks: list[tuple[slice, sparse.csr_matrix]], f: np.ndarray, pool: ThreadPoolExecutor | None
             ) -> np.ndarray:
    """S F from S's blocks of rows, on the pool's threads."""
    out = np.empty_like(f)

    def rows(block: tuple[slice, sparse.csr_matrix]) -> None:
        out[block[0]] = block[1] @ f

    if pool is None:
        rows(blocks[0])
    else:
        list(pool.map(rows, blocks))
    return out


@dataclass
class TopRows:
    """F as a stored model keeps it (``top_classes``): each row's top classes, and the rest of its mass spread
    evenly over its other classes. Without that mass given back, one step against the cut F came out
    underconfident: on the WordNet nouns (24 classes) with a quarter of the items in the graph, the other items'
    joint ECE was 0.048, against 0.017 with the whole F, at the same accuracy (docs/results.md)."""

    values: np.ndarray
    classes: np.ndarray
    n_classes: int

    def spread(self, step: sparse.csr_matrix) -> np.ndarray:
        """S F, dense (rows of ``step``, n_classes), without making F dense: the kept classes' part, plus each
        stored row's even share of its dropped mass on every class, less that share on its kept classes."""
        kept = top_rows(self.values, self.classes, self.n_classes)
        spread = np.asarray((step @ kept).toarray(), np.float32)
        width = self.values.shape[1]
        if width < self.n_classes:
            even = np.maximum(1 - self.values.sum(axis=1, dtype=np.float64), 0) / (self.n_classes - width)
            spread += (step @ even).astype(np.float32)[:, None]
            on_kept = top_rows(np.repeat(even[:, None], width, axis=1), self.classes, self.n_classes)
            spread -= np.asarray((step @ on_kept).toarray(), np.float32)
        return spread

    def dense(self) -> np.ndarray:
        """F with the dropped mass given back, (rows, n_classes)."""
        return self.spread(sparse.identity(len(self.values), np.float32, format="csr"))


def inductive(prior: np.ndarray, step: sparse.csr_matrix, stored: np.ndarray | TopRows, *,
              alpha: float) -> np.ndarray:
    """New items' F: one step against their neighbours' stored F, (1 - alpha) P + alpha S F_stored, where
    ``step`` maps the new items (rows) to the stored items (columns). ``stored`` may be ``TopRows``: a stored
    model keeps only each row's top classes."""
    spread = stored.spread(step) if isinstance(stored, TopRows) else np.asarray(step @ stored)
    f = (1 - alpha) * np.asarray(prior, np.float32) + np.float32(alpha) * spread.astype(np.float32)
    return normalize(f)


def label_votes(w: sparse.csr_matrix, given: np.ndarray, n_classes: int) -> sparse.csr_matrix:
    """(n, K), sparse: the weight of each row's neighbours that carry each given label, W times the one-hot
    given labels. A neighbour without a given label (-1) does not vote; an item is not its own neighbour."""
    given = np.asarray(given, np.int64)
    voters = np.flatnonzero(given >= 0)
    onehot = sparse.csr_matrix((np.ones(voters.size), (voters, given[voters])), shape=(len(given), n_classes))
    return (w @ onehot).tocsr()


def vote_shares(votes: np.ndarray, pseudo_count: float) -> np.ndarray:
    """(n, K) float64: each row's vote as a distribution, (votes + c) / (sum of votes + K c); a row with no
    voting neighbour is uniform."""
    votes = np.asarray(votes, np.float64)
    return (votes + pseudo_count) / (votes.sum(axis=1, keepdims=True) + votes.shape[1] * pseudo_count)


def with_votes(route: np.ndarray, votes: np.ndarray, *, power: float, pseudo_count: float) -> np.ndarray:
    """The review's log posterior with the neighbours' given labels as one more expert (SimiFeat's kNN vote,
    as a product of experts): log_softmax(route + power * log v), v = ``vote_shares(votes, pseudo_count)``.
    A row with no voting neighbour has a uniform v and keeps its posterior. Float64, as the routes' are."""
    return log_softmax(np.asarray(route, np.float64) + power * np.log(vote_shares(votes, pseudo_count)))


def top_classes(f: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``m`` largest values and their classes (the smallest integer type that holds them): F of a
    catalog with many classes, at m / K of its size. The mass cut off is a neighbour's least likely classes."""
    n, k = f.shape
    kind = np.min_scalar_type(max(k - 1, 0))
    if m >= k:  # every class kept: no partition to take (1M x 13, three posteriors: 0.7 s)
        return f.astype(np.float32), np.tile(np.arange(k, dtype=kind), (n, 1))
    classes = np.sort(np.argpartition(-f, m - 1, axis=1)[:, :m], axis=1) if m else np.zeros((n, 0), np.int64)
    values = np.take_along_axis(f, classes, axis=1).astype(np.float32)
    return values, classes.astype(kind)


def top_rows(values: np.ndarray, classes: np.ndarray, n_classes: int) -> sparse.csr_matrix:
    """The sparse (n, n_classes) F that ``top_classes`` kept."""
    n, m = values.shape
    return sparse.csr_matrix((values.ravel(), classes.astype(np.int64).ravel(), np.arange(0, n * m + 1, m)),
                             shape=(n, n_classes))


def normalize(f: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to one: an item whose prior was empty, or with no neighbour, sums to alpha or 1 - alpha.
    A row of zeros (no prior and no neighbour) stays zero."""
    total = f.sum(axis=1, keepdims=True)
    return np.divide(f, total, out=np.zeros_like(f), where=total > 0)


def sharpen(f: np.ndarray, power: float) -> np.ndarray:
    """f^power, rows renormalised: softmax(power * log f). Propagation averages neighbours, so its posteriors
    come out underconfident; a label-free power brings their calibration back (bench/research_graph.md).

    Each row is taken relative to its largest entry first, as a softmax subtracts its largest term: the fitted
    powers reach 150 on well-separated catalogs, where a row whose largest entry is below 0.55 underflowed
    float32 to all zeros (1M synthetic items: 1,583 image rows, labelled class 0 with confidence 0)."""
    top = f.max(axis=1, keepdims=True)
    if power == 0:  # f^0: every class alike, as numpy's 0^0 = 1 (a row with no mass stays empty)
        return normalize(np.broadcast_to(top > 0, f.shape).astype(f.dtype))
    relative = np.divide(f, top, out=np.zeros_like(f), where=top > 0)
    # exp(power * log): numpy's float32 exp and log are vectorised, its power is not, and is slower still where
    # the results are subnormal (1M x 13 at power 152: 1.3 s against 0.1 s). A row's largest entry stays 1.
    with np.errstate(divide="ignore", under="ignore"):
        np.log(relative, out=relative)
        relative *= np.float32(power)
        return normalize(np.exp(relative, out=relative))


@dataclass
class GraphProjection:
    """How an item becomes a point of the graph: its unit views concatenated and scaled by 1/sqrt(M) (a
    missing view left at zero), centred and projected on the fit sample's top principal axes, then unit
    length. 128 axes keep a catalog's graph at 512 bytes an item; on the WordNet catalogs they labelled as
    well as the full 768 dimensions, or better (bench/research_graph.md).

    ``components``: per modality, its (d_m, r) block of the axes; ``offset``: the centre's projection (r,).
    """

    components: dict[str, np.ndarray]
    offset: np.ndarray

    @property
    def dims(self) -> int:
        """The projected points' dimensions: min(dims asked, the views' total)."""
        return int(self.offset.shape[0])

    @classmethod
    def fit(cls, units: dict[str, np.ndarray], present: np.ndarray, dims: int = 128) -> GraphProjection:
        """PCA of the sample's concatenated unit views (rows with no view at all are left out), in float64.
        A sample without any view (every item rejected) gives the first axes and no centre: a projection that
        is still one, where a mean of no rows made every point NaN."""
        scale = 1 / np.sqrt(len(units))
        rows = present.any(axis=1)
        x = np.concatenate([np.asarray(u, np.float64)[rows] * scale for u in units.values()], axis=1)
        centre = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
        centred = x - centre
        _, vectors = np.linalg.eigh(centred.T @ centred)
        axes = vectors[:, ::-1][:, : min(dims, x.shape[1])]
        axes *= np.where(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])] < 0, -1, 1)  # a fixed sign
        splits = np.cumsum([u.shape[1] for u in units.values()])[:-1]
        blocks = np.split(axes * scale, splits, axis=0)
        return cls({m: b.astype(np.float32) for m, b in zip(units, blocks, strict=True)},
                   (centre @ axes).astype(np.float32))

    def project(self, n: int, views: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
        """(n, r) unit points. ``views``: per modality, its usable rows (raw), their inverse norms and which of
        the n rows they are; a view a row lacks counts as zero. A row with no view at all stays zero."""
        total = np.tile(-self.offset, (n, 1))
        for modality, (x, inverse, valid) in views.items():
            total[valid] += (x @ self.components[modality]) * inverse[:, None]
        norms = np.linalg.norm(total, axis=1, keepdims=True)
        norms[~np.logical_or.reduce([valid for _, _, valid in views.values()])] = 0
        return np.divide(total, norms, out=np.zeros_like(total), where=norms > 0)

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {f"components/{i}": c for i, c in enumerate(self.components.values())}
        return {**arrays, "offset": self.offset}, {"modalities": list(self.components)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], state: dict) -> GraphProjection:
        return cls({m: arrays[f"components/{i}"] for i, m in enumerate(state["modalities"])}, arrays["offset"])


def fold_powers(f: np.ndarray, fold: np.ndarray, gold: np.ndarray, n_folds: int, *, min_rows: int,
                max_rows: int, seed: int) -> np.ndarray | None:
    """Per fold, the power of F that fits the gold labels of the other folds' items best (out of fold, as the
    refinement's confidence is calibrated); None when a fold's complement has fewer than ``min_rows``
    labelled items with a posterior. At most ``max_rows`` seeded labelled items are read."""
    labelled = np.flatnonzero((gold >= 0) & (f.sum(axis=1) > 0))
    labelled = np.sort(np.random.default_rng(seed).permutation(labelled)[:max_rows])
    log_f = np.log(np.maximum(f[labelled], np.float32(1e-30)))[:, None, :]
    powers = np.zeros(n_folds)
    for own in range(n_folds):
        rows = fold[labelled] != own
        if rows.sum() < min_rows:
            return None
        powers[own] = fit_weights(log_f[rows], np.ones((rows.sum(), 1), bool), gold[labelled][rows])[0]
    return powers


@dataclass
class Neighbourhood:
    """What the inductive step needs of a full run's graph, stored with its model: the index of the
    catalog's points (the core never reads it: ``None`` where the index is a file of its own, in faiss's
    format, beside these arrays; faiss's serialization as bytes in a model stored before 2026-12-05), each
    indexed item's key (a seeded 64-bit hash of its id, so an item a night relabels is not its own
    neighbour; the index's ids are positions in ``keys``, in the keys' order since 2026-12-06 and in the
    catalog's rows' before, which the step reads alike) and, per posterior
    (``"0"``, ``"1"``, ... per modality, ``"joint"``), each item's propagated F before sharpening, cut to its
    top classes, and the fold powers a night's step takes (those fitted on the run's items outside its graph,
    which took that step, when it had some; else those that sharpened the graph's own).

    ``settings``: what the propagation used (alpha, power, k, seed, n_classes), for the step to use the same.
    """

    index: np.ndarray | None
    keys: np.ndarray
    values: dict[str, np.ndarray]
    classes: dict[str, np.ndarray]
    powers: dict[str, np.ndarray]
    settings: dict

    def stored(self, name: str) -> TopRows:
        """The posterior ``name``'s stored F, (items, classes), each row cut to its top classes."""
        return TopRows(self.values[name], self.classes[name], int(self.settings["n_classes"]))

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {"keys": self.keys} | ({} if self.index is None else {"index": self.index})
        for name in self.values:
            arrays |= {f"values/{name}": self.values[name], f"classes/{name}": self.classes[name],
                       f"powers/{name}": self.powers[name]}
        return arrays, {**self.settings, "posteriors": list(self.values)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], state: dict) -> Neighbourhood:
        names = state["posteriors"]
        return cls(arrays.get("index"), arrays["keys"], {n: arrays[f"values/{n}"] for n in names},
                   {n: arrays[f"classes/{n}"] for n in names}, {n: arrays[f"powers/{n}"] for n in names},
                   {key: value for key, value in state.items() if key != "posteriors"})
