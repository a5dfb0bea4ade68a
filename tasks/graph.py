"""The graph refinement in the flow (METHOD.md step 10, ``--graph-k``).

1. The fit projects each item's unit views to 128-d points (``fit_graph``: PCA of the seeded sample, a
   model part).
2. The labelling pass stages, per partition, its items' points and their refined posteriors, per
   modality and joint, and with a review its route's posterior of every reviewed item (``GraphParts``).
3. ``propagate_graph``, in the flow's process, indexes every point with faiss and finds each item's k
   nearest neighbours. It then propagates the posteriors over the graph, counts each item's neighbours'
   given labels (the review's vote), and stages the results per partition.
4. ``apply_graph`` rewrites each partition's staged label rows from them, and its review rows with the vote
   (tasks/graph_labels.py).
5. A run that fits its model stores with it what the inductive step needs (``Neighbourhood``: the index, the
   items' keys, F cut to its top classes, the fold powers). An incremental night then labels its items with
   ``inductive_graph``: each item's k neighbours among the stored items, one step against their stored F.

Only paths travel between the tasks, and on Dask only the projection reaches the workers, inside the model.
The index is built where the flow runs, from the staged points.

Why faiss, and an IVF index (k-means lists of the exact points, 2 sqrt(n) of them, 8 scanned a query): faiss has
the k-means, the lists and its own index format in one library. The index replaced HNSW (32 links, 8-bit
codes), which had to insert on one thread to be reproducible: at 1M items it took 252 s to build and 161 s
to search, where the IVF index took 9 s and 38 s in the benchmark, 6.5 s and 60 s in a product run
(bench/research_graph.md, "IVF instead of HNSW"; docs/results.md). On the WordNet catalogs its labels are
HNSW's within 0.3 points (recall 0.93-0.97 against exact search, HNSW's 0.99). The catalog's points are
searched a list at a time, by BLAS (``list_neighbours``).

The k-means is seeded and each list is filled in the points' order, on every core, and the points are taken
in the order of their items' keys (``item_hash``), not of the catalog's rows: the graph, and the labels, are
the same on every run, whatever the order of the rows, their files or their partitions.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from scipy import sparse
from threadpoolctl import threadpool_limits

from pairwise_core.graph import (
    REFERENCE_ITEMS, GraphProjection, Neighbourhood, TopRows, adjacency, edge_weights, fold_powers, inductive,
    inverse_permutation, label_votes, propagate, reorder, sharpen, top_classes, transition, undirected,
)
from pairwise_core.pair_stats import normalize_rows
from tasks.models import ModelMismatch, load_late_part, own_file, read_own_file, save_part
from tasks.policy import IO_TASK
from tasks.refine import CALIBRATION_ROWS, MIN_CALIBRATION_ROWS
from tasks.sample import N_FOLDS, load_sample
from tasks.sources import Plan
from tasks.staging import StagedArrays, Staging, save_arrays

DIMS = 128  # the points' dimensions: 512 bytes an item
# The IVF index: k-means lists of the points, LISTS_PER_ROOT * sqrt(n) of them (at most one per MIN_LIST_ROWS
# points, so small catalogs get few lists and k-means enough points a list), each query scanning its PROBES
# nearest lists. Chosen on the WordNet nouns and verbs (the labels' gold accuracy against HNSW's) and 1M
# synthetic points (build and search time, recall): bench/research_graph.md, "IVF instead of HNSW".
LISTS_PER_ROOT = 2.0
PROBES = 8
MIN_LIST_ROWS = 39  # faiss's k-means wants 39 training points a list or more
TRAIN_ROWS = 50_000  # k-means's seeded training rows (more when the lists need them)
EF_SEARCH = 64  # HNSW's candidates per query, at least 2k: a model stored before the IVF index has an HNSW one
# chosen on the tune halves of the WordNet nouns and verbs and held out on the others (bench/research_graph.md)
ALPHA = 0.8
POWER = 1.0  # edge weight max(cos, 0)^POWER
ITERATIONS = 10
# the review's kNN vote of the neighbours' given labels (bench/research_graph_review.md): its power in the product
# of experts, chosen on the tune halves of the WordNet nouns and verbs and confirmed on their held-out halves,
# and the pseudo-count per class that keeps an item with few voting neighbours near its own posterior
VOTE_POWER = 1.0
VOTE_PSEUDO_COUNT = 0.1
# The propagated posteriors come out underconfident. With enough given labels, a power per fold is fitted out of
# fold on them, as the refinement's confidence is; without, this label-free power (bench/research_graph.md).
SHARPEN = math.sqrt(2)
RECALL_QUERIES = 1_000  # seeded items whose neighbours are also found by exact search
SEARCH_ROWS = 20_000
PROBE_ROWS = 16 * 4096  # points a thread finds the nearest lists of at a time (faiss's BLAS takes 4,096 at once)
READ_CHUNK = 1 << 24  # bytes faiss asks for at a time as it reads a stored index
# the classes of an item's F a stored model keeps: every class up to 16, and at K = 500 a thirtieth of F
# (16 values and class ids an item and posterior, 96 bytes at K < 65,536)
TOP_CLASSES = 16


@task(name="fit-graph", **IO_TASK)
def fit_graph(sample_paths: list[str], plan: Plan, model_dir: str) -> None:
    """The model's ``graph`` part: the projection of the sample's unit views."""
    sample = load_sample(sample_paths, plan.modalities)
    units = {m: normalize_rows(sample.x[m]) for m in plan.modalities}
    present = np.stack([sample.valid[m] for m in plan.modalities], axis=1)
    save_part(Path(model_dir), "graph", GraphProjection.fit(units, present, DIMS))


class GraphParts:
    """One partition's points and refined posteriors, batch by batch, in the order of its catalog_state rows."""

    def __init__(self, modalities: list[str], dims: int) -> None:
        self._modalities = modalities
        self._dims = dims  # the projection's: a partition with nothing to label stages (0, dims) points
        self._points: list[np.ndarray] = []
        self._priors: list[list[np.ndarray]] = [[] for _ in modalities]
        self._joint: list[np.ndarray] = []
        self._present: list[np.ndarray] = []
        self._fold: list[np.ndarray] = []
        self._gold: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._review: list[np.ndarray] = []

    def add(self, points: np.ndarray, priors: list[np.ndarray], joint: np.ndarray, present: np.ndarray,
            fold: np.ndarray, gold: np.ndarray | None, keys: np.ndarray, review: np.ndarray | None = None) -> None:
        """A batch: (n, r) points, per modality (n, K) posteriors (zero rows where rejected), the joint one; the
        rows' folds and gold class ids (-1: none), for the calibration and the label vote; their keys
        (``item_hash``), which a stored model keeps to tell an item a night relabels from its own old row; with
        a review, its route's (n, K) log posterior (zero rows where not reviewed), which the vote joins."""
        if review is not None:
            self._review.append(review.astype(np.float32, copy=False))
        self._fold.append(fold)
        self._keys.append(keys)
        self._gold.append(np.full(len(points), -1, np.int64) if gold is None else gold)
        self._points.append(points.astype(np.float32, copy=False))
        for own, prior in zip(self._priors, priors, strict=True):
            own.append(prior.astype(np.float32, copy=False))
        self._joint.append(joint.astype(np.float32, copy=False))
        self._present.append(present)

    def save(self, path: Path, n_classes: int, keep_below: float | None = None) -> str:
        """The partition's arrays; ``keep_below``: the review's (None without one), which annotation_issues
        applies after the graph step."""
        def stacked(parts: list[np.ndarray], width: int, dtype: type) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros((0, width), dtype)

        arrays = {"points": stacked(self._points, self._dims, np.float32),
                  "joint": stacked(self._joint, n_classes, np.float32),
                  "present": stacked(self._present, len(self._priors), bool),
                  "modalities": np.array(self._modalities, dtype=str),
                  "fold": stacked(self._fold, 0, np.int64).ravel(), "gold": stacked(self._gold, 0, np.int64).ravel(),
                  "keys": stacked(self._keys, 0, np.uint64).ravel()}
        arrays |= {f"prior/{i}": stacked(p, n_classes, np.float32) for i, p in enumerate(self._priors)}
        if keep_below is not None:
            arrays |= {"review": stacked(self._review, n_classes, np.float32), "keep_below": np.float64(keep_below)}
        return save_arrays(path, arrays)


def _load(paths: list[str], name: str) -> np.ndarray:
    """The array ``name`` of every partition's staged folder, one after the other: each mapped, then copied
    once into the whole."""
    return np.concatenate([np.asarray(StagedArrays(path).mapped(name)) for path in paths])


def n_lists(n: int) -> int:
    """The IVF index's lists for n points: about LISTS_PER_ROOT * sqrt(n), at least one, and at most one per
    MIN_LIST_ROWS points."""
    return max(1, min(round(LISTS_PER_ROOT * math.sqrt(n)), n // MIN_LIST_ROWS))


def build_index(points: np.ndarray, seed: int, threads: int | None = None) -> tuple[Any, np.ndarray]:
    """The faiss IVF index of the points (exact vectors, inner product), and each point's ``nprobe`` nearest
    lists: k-means lists trained on seeded rows with a seeded k-means; each point then goes to the first of
    its nearest lists, which the search needs anyway (``nearest_lists``): one search of the lists, not two
    (1M points: adding them 3.2 -> 1.0 s). Each list is filled by one thread in the points' order, so the
    index, and the labels, are the same on every run for points in the same order (``propagate_graph`` gives
    them in their items' key order, ``key_order``)."""
    import faiss

    n, dims = points.shape
    lists = n_lists(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # a catalog under MIN_LIST_ROWS items: one list, and no warning
    rows = np.random.default_rng(seed).permutation(n)[: max(TRAIN_ROWS, MIN_LIST_ROWS * lists)]
    index.train(points[np.sort(rows)])
    _search_settings(index, 0)
    probes = nearest_lists(index, points, threads)
    # faiss reads raw pointers: both arrays are held by name until it returns
    points, nearest = np.ascontiguousarray(points, np.float32), np.ascontiguousarray(probes[:, 0], np.int64)
    index.add_core(n, faiss.swig_ptr(points), None, faiss.swig_ptr(nearest))
    return index, probes


def _search_settings(index: Any, k: int) -> None:
    """How many lists a query scans (IVF), or candidates it keeps (the HNSW index of a model stored before the
    IVF one), set before every search whatever a stored index kept (faiss does not serialise efSearch)."""
    import faiss

    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(PROBES, index.nlist)
    else:
        index.hnsw.efSearch = max(EF_SEARCH, 2 * (k + 1))


def neighbours(points: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, float], Any]:
    """Each point's k nearest other points by inner product (-1 where fewer exist), their cosines (the
    search's float32 products of the unit points), the index's build and search seconds, and the index."""
    n = len(points)
    k = min(k, n - 1)
    began = time.perf_counter()
    index, probes = build_index(points, seed)
    built = time.perf_counter()
    found, cosines = list_neighbours(index, points, k, probes)
    timings = {"build_s": round(built - began, 3), "search_s": round(time.perf_counter() - built, 3)}
    return found, cosines, timings, index


def nearest_lists(index: Any, points: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Each point's ``index.nprobe`` nearest lists, the nearest first: blocks of PROBE_ROWS points on every
    core, each block by one thread (``_product_pool``), so the lists do not depend on the thread count."""
    def probe(start: int) -> np.ndarray:
        return index.quantizer.search(points[start : start + PROBE_ROWS], index.nprobe)[1]

    with _product_pool(threads) as pool:
        return np.concatenate([np.zeros((0, index.nprobe), np.int64),
                               *pool.map(probe, range(0, len(points), PROBE_ROWS))])


def list_neighbours(index: Any, points: np.ndarray, k: int, probes: np.ndarray, threads: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each indexed point's k nearest other points (-1 where fewer) and their inner products (NaN where none:
    the products that ranked them; recomputing them over the points took 3 s at 1M), a list of the index at a
    time: the list's points against every point of the lists any of them would scan (``probes``: each point's
    ``nprobe`` nearest lists), one matrix product by BLAS. A point so sees every point ``index.search`` would
    show it, and some more; at 1M points this took 38 s, ``index.search`` 52-145 s (bench/research_graph.md,
    "IVF instead of HNSW").

    The lists are searched on ``threads`` threads (every core), each list by one thread with one BLAS and one
    OpenMP thread (``_product_pool``): its neighbours are then the same whichever thread, and however many,
    search it. 1M points: 30 s -> 18 s against faiss's own loop on both cores."""
    import faiss

    members = _members(index)
    found = np.full((len(points), k), -1, np.int64)
    products = np.full((len(points), k), np.nan, np.float32)

    def search(own: np.ndarray) -> None:
        candidates = np.concatenate([members[c] for c in np.unique(probes[own]) if c >= 0])
        width = min(k + 1, len(candidates))
        scores, ids = faiss.knn(points[own], points[candidates], width, metric=faiss.METRIC_INNER_PRODUCT)
        pad = ((0, 0), (0, k + 1 - width))
        ids = np.pad(np.where(ids >= 0, candidates[np.maximum(ids, 0)], -1), pad, constant_values=-1)
        found[own], products[own] = _first(ids, ids != own[:, None], k, np.pad(scores, pad))

    with _product_pool(threads) as pool:
        list(pool.map(search, [own for own in members if len(own)]))
    return found, products


def _members(index: Any) -> list[np.ndarray]:
    """The ids of each list of the IVF index, list by list (every indexed point in exactly one)."""
    import faiss

    lists = index.invlists
    return [faiss.rev_swig_ptr(lists.get_ids(c), lists.list_size(c)).copy() if lists.list_size(c)
            else np.zeros(0, np.int64) for c in range(index.nlist)]


@contextmanager
def _product_pool(threads: int | None = None) -> Iterator[ThreadPoolExecutor]:
    """A pool of ``threads`` threads (every core) for faiss's exhaustive search by BLAS products (its default
    below 128,000 queries is its own loop, half as fast here), one BLAS and one OpenMP thread each: the
    callers are the threads. faiss's settings are restored after."""
    import faiss

    threshold, omp = faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()
    faiss.cvar.distance_compute_blas_threshold = 0
    faiss.omp_set_num_threads(1)
    try:  # OpenMP's thread count is each thread's own: the pool's threads set theirs
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(
                threads or os.cpu_count() or 1, initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool:
            yield pool
    finally:
        faiss.cvar.distance_compute_blas_threshold = threshold
        faiss.omp_set_num_threads(omp)


def _first(ids: np.ndarray, others: np.ndarray, k: int, scores: np.ndarray | None = None
           ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The k first results that are ``others`` than the query itself (an exact duplicate may come first
    instead of it), -1 past the end; with ``scores``, theirs too (NaN past the end)."""
    order = np.argsort(~others, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(others, order, axis=1) & (np.take_along_axis(ids, order, axis=1) >= 0)
    found = np.where(kept, np.take_along_axis(ids, order, axis=1), -1)
    if scores is None:
        return found
    return found, np.where(kept, np.take_along_axis(scores, order, axis=1), np.nan).astype(np.float32)


def recall(points: np.ndarray, found: np.ndarray, seed: int) -> float:
    """The share of exact k nearest neighbours the index found, on ``RECALL_QUERIES`` seeded items: an exact
    search by faiss (``faiss.knn``: blocks of the points by BLAS, a heap per query). Partitioning every block's
    scores here instead took 17.6 s of a 1M run's graph step."""
    import faiss

    n, k = found.shape
    if k == 0:
        return 1.0
    queries = np.sort(np.random.default_rng(seed + 1).permutation(n)[:RECALL_QUERIES])
    _, ids = faiss.knn(points[queries], points, min(k + 1, n), metric=faiss.METRIC_INNER_PRODUCT)
    exact = _first(ids, ids != queries[:, None], k)
    hits = sum(len(np.intersect1d(e[e >= 0], f)) for e, f in zip(exact, found[queries], strict=True))
    return round(hits / max(1, int((exact >= 0).sum())), 4)


@task(name="propagate-graph", **IO_TASK)
def propagate_graph(part_paths: list[str], k: int, n_modalities: int, staging: Staging, seed: int,
                    model_folder: str | None = None, reference: int = REFERENCE_ITEMS
                    ) -> tuple[list[str], dict[str, Any]]:
    """Propagate every partition's posteriors over the catalog's kNN graph; stage the results per partition
    (``posterior/<i>`` per modality and ``joint``) and say what was done (``runs.details.graph``). With
    ``model_folder`` (a run that fits its model), store there the model's ``neighbourhood`` part. With no
    item to place, nothing: no paths, and the details say why (``skipped``).

    The graph is built over at most ``reference`` items, those with the smallest keys (a seeded sample, the
    same whatever the rows); every other item takes one step against its k nearest of them and their F as the
    model stores it (``TopRows``), exactly as an incremental night's new item does with the stored model. Those
    items are taken a partition at a time, so past the reference the step's memory does not grow with the
    catalog, and the model stores only the reference.

    Items with no usable view are no point of the graph: they keep no label, as before."""
    began = time.perf_counter()
    present = [_load([path], "present") for path in part_paths]
    sizes = [len(p) for p in present]
    starts = np.cumsum([0, *sizes])
    keys = _load(part_paths, "keys")
    # the graph's points are the placed rows in the order of their items' keys: the index's k-means, its lists
    # and their search, and the propagation, see the same points in the same order whatever the rows' order or
    # partitioning (taken in the rows' order, a shuffled file gave other lists and other neighbours)
    placed = key_order(keys, np.flatnonzero(np.concatenate(present).any(axis=1)))
    if not len(placed):  # every item rejected: no graph to build (faiss cannot train on no points)
        return [], {"k": k, "skipped": "no item has a usable embedding"}
    inside, outside = placed[:reference], placed[reference:]
    points = _rows(part_paths, starts, "points", inside)
    found, cosines, timings, index = neighbours(points, k, seed)
    measured = recall(points, found, seed) if len(inside) > 1 else 1.0
    dims = int(points.shape[1])  # the projection's: DIMS, or fewer when the views have fewer
    del points
    directed = adjacency(found, edge_weights(cosines, POWER), len(inside))
    edges = int(directed.nnz)
    graph = undirected(directed)
    del directed
    # the items list by list of the index: their neighbours sit near them, and so do their rows of F
    order = np.concatenate([np.zeros(0, np.int64), *_members(index)])
    inverse = inverse_permutation(order)
    step = reorder(transition(graph, symmetric=False), order)
    fold, gold = _load(part_paths, "fold"), _load(part_paths, "gold")
    # the neighbours' given labels, which the review weighs in (tasks/graph_labels.py); W is let go before the
    # propagation (1M items: 40M edges). An item outside the reference hears its neighbours in it.
    n_classes = _load(part_paths[:1], "joint").shape[1]
    labels = [str(i) for i in range(n_modalities)] + ["joint"]
    given = gold[inside]
    votes = None if (gold[placed] < 0).all() else label_votes(graph, given, n_classes)
    del graph
    propagated: dict[str, np.ndarray] = {}
    powers: dict[str, np.ndarray] = {}
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label in labels:
        # the step runs alone after the pass: the propagation's products take every core
        f = propagate(_rows(part_paths, starts, _prior(label), inside)[order], step, alpha=ALPHA,
                      iterations=ITERATIONS, threads=os.cpu_count() or 1)[inverse]
        fitted = _fold_powers(f, fold[inside], gold[inside], seed)
        powers[label] = np.full(N_FOLDS, SHARPEN) if fitted is None else fitted
        propagated[label] = f
        if len(outside) or model_folder is not None:
            kept[label] = top_classes(f, TOP_CLASSES)
    del step
    outside_powers = _outside_powers(part_paths, starts, outside, index, keys, inside, kept, powers, fold, gold,
                                     n_classes, k, seed, timings) if len(outside) else {}
    # as the model keeps them: a night's item then meets the powers the run gave its twin outside
    outside_rounded = _as_stored(outside_powers)
    # a row's place in the reference (-1: outside it, or not placed); the partitions' rows, one at a time
    position = np.full(int(starts[-1]), -1, np.int64)
    position[inside] = np.arange(len(inside))
    beyond = np.zeros(int(starts[-1]), bool)
    beyond[outside] = True
    stored_keys = keys[inside]
    paths = []
    for number, path in enumerate(part_paths):
        own = np.arange(starts[number], starts[number + 1])
        ins, outs = own[position[own] >= 0], own[beyond[own]]
        arrays: dict[str, Any] = {}
        staged = StagedArrays(path)
        onward = None
        if len(outs):
            searched = time.perf_counter()
            onward = adjacency(*_outside_neighbours(index, staged.mapped("points")[outs - own[0]], keys[outs],
                                                    stored_keys, k), len(inside))
            timings["outside_search_s"] = timings.get("outside_search_s", 0.0) + time.perf_counter() - searched
            edges += int(onward.nnz)
            onward_step = transition(onward, symmetric=False)
        for label in labels:
            out = np.zeros((len(own), n_classes), np.float32)
            out[ins - own[0]] = sharpen_by_fold(propagated[label][position[ins]], fold[ins], powers[label])
            if onward is not None:
                f = inductive(staged.mapped(_prior(label))[outs - own[0]], onward_step,
                              TopRows(*kept[label], n_classes), alpha=ALPHA)
                out[outs - own[0]] = sharpen_by_fold(f, fold[outs], np.asarray(outside_rounded[label]))
            arrays[_prior(label).replace("prior", "posterior")] = out
        if votes is not None:
            heard = [votes[position[ins]]] + ([] if onward is None else [label_votes(onward, given, n_classes)])
            part_votes = _placed_rows(sparse.vstack(heard, format="csr"), np.concatenate([ins, outs]) - own[0],
                                      len(own))
            arrays |= {"votes/data": part_votes.data.astype(np.float32), "votes/indices": part_votes.indices,
                       "votes/indptr": part_votes.indptr}
        paths.append(save_arrays(staging.path("graph_posteriors", f"part-{number:05d}"), arrays))
    if "outside_search_s" in timings:
        timings["outside_search_s"] = round(timings["outside_search_s"], 3)
    rounded = _as_stored(powers)
    if model_folder is not None:
        save_neighbourhood(model_folder, index, stored_keys, kept, outside_rounded or rounded,
                           {"k": k, "alpha": ALPHA, "power": POWER, "seed": seed, "n_classes": n_classes})
    calibration = "gold" if fitted is not None else "label-free"
    # k as asked; k_used: the neighbours each item has, fewer in a catalog of k items or less
    details = {"k": k, "k_used": int(found.shape[1]), "alpha": ALPHA, "power": POWER, "iterations": ITERATIONS,
               "calibration": calibration, "sharpen": rounded, "dims": dims,
               **({"sharpen_outside": outside_rounded} if outside_rounded else {}),
               "index": f"faiss IVF{index.nlist},Flat nprobe {index.nprobe}",
               "items": int(len(placed)), "reference": int(len(inside)), "edges": edges, "recall": measured,
               "recall_queries": min(RECALL_QUERIES, len(inside)),
               "vote": None if votes is None else {"power": VOTE_POWER, "pseudo_count": VOTE_PSEUDO_COUNT},
               **timings, "total_s": round(time.perf_counter() - began, 3)}
    return paths, details


def _prior(label: str) -> str:
    """The staged name of a posterior's prior: ``prior/<i>`` per modality, ``joint``."""
    return "joint" if label == "joint" else f"prior/{label}"


def _rows(paths: list[str], starts: np.ndarray, name: str, rows: np.ndarray) -> np.ndarray:
    """The staged array ``name``'s rows ``rows`` (indices over every partition's rows, one after the other), in
    that order: read from each partition's mapped file, so that only those rows are copied."""
    ascending = np.argsort(rows, kind="stable")
    wanted = rows[ascending]
    part = np.searchsorted(starts, wanted, side="right") - 1
    first = StagedArrays(paths[0]).mapped(name)
    out = np.empty((len(rows), *first.shape[1:]), first.dtype)
    out[ascending] = np.concatenate([np.zeros((0, *first.shape[1:]), first.dtype)] + [
        np.asarray(StagedArrays(paths[p]).mapped(name)[wanted[part == p] - starts[p]]) for p in np.unique(part)])
    return out


def _outside_neighbours(index: Any, points: np.ndarray, keys: np.ndarray, stored_keys: np.ndarray, k: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Items outside the reference: their k nearest reference items as a night finds them, and the edge weights."""
    found, cosines = stored_neighbours(index, np.asarray(points), keys, stored_keys, k)
    return found, edge_weights(cosines, POWER)


def _outside_powers(paths: list[str], starts: np.ndarray, outside: np.ndarray, index: Any, keys: np.ndarray,
                    inside: np.ndarray, kept: dict[str, tuple[np.ndarray, np.ndarray]], powers: dict[str, np.ndarray],
                    fold: np.ndarray, gold: np.ndarray, n_classes: int, k: int, seed: int,
                    timings: dict[str, float]) -> dict[str, np.ndarray]:
    """The sharpening powers of the items outside the reference: one step leaves F less sharp than ten, so they
    are fitted on those items, on a seeded sample of at most CALIBRATION_ROWS with given labels (the
    reference's own where too few have one). A night's items take them from the model."""
    labelled = outside[gold[outside] >= 0]
    sample = np.sort(np.random.default_rng(seed).permutation(labelled)[:CALIBRATION_ROWS])
    if not len(sample):
        return dict(powers)
    searched = time.perf_counter()
    step = transition(adjacency(*_outside_neighbours(index, _rows(paths, starts, "points", sample), keys[sample],
                                                     keys[inside], k), len(inside)), symmetric=False)
    timings["outside_search_s"] = time.perf_counter() - searched
    fitted = {}
    for label, own in powers.items():
        f = inductive(_rows(paths, starts, _prior(label), sample), step, TopRows(*kept[label], n_classes), alpha=ALPHA)
        power = _fold_powers(f, fold[sample], gold[sample], seed)
        fitted[label] = own if power is None else power
    return fitted


def _fold_powers(f: np.ndarray, fold: np.ndarray, gold: np.ndarray, seed: int) -> np.ndarray | None:
    """The sharpening powers per fold fitted on the given labels (``fold_powers``), None with too few."""
    return fold_powers(f, fold, gold, N_FOLDS, min_rows=MIN_CALIBRATION_ROWS, max_rows=CALIBRATION_ROWS, seed=seed)


def key_order(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` in the order of their ``keys`` (``item_hash``: seeded, the same for an item in every file and
    partition); rows with equal keys (the same item id, or a 64-bit collision) in their own order."""
    return rows[np.argsort(keys[rows], kind="stable")]


def _as_stored(powers: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Each label's fold powers as the model and runs.details keep them: 4 decimals."""
    return {label: [round(float(p), 4) for p in power] for label, power in powers.items()}


def sharpen_by_fold(f: np.ndarray, fold: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """Each row of ``f`` sharpened by its fold's power."""
    out = np.empty_like(f)
    for own, power in enumerate(powers):
        rows = fold == own
        out[rows] = sharpen(f[rows], float(power))
    return out


def _placed_rows(m: sparse.csr_matrix, placed: np.ndarray, n: int) -> sparse.csr_matrix:
    """``m``'s rows at rows ``placed`` (distinct, in any order) of an n-row matrix; the other rows empty."""
    ascending = np.argsort(placed)
    m, placed = m[ascending], placed[ascending]
    counts = np.zeros(n, np.int64)
    counts[placed] = np.diff(m.indptr)
    return sparse.csr_matrix((m.data, m.indices, np.concatenate([[0], np.cumsum(counts)])), shape=(n, m.shape[1]))


def _stage(results: dict[str, np.ndarray], sizes: list[int], staging: Staging,
           votes: sparse.csr_matrix | None = None) -> list[str]:
    """The graph's posteriors, rows of every partition one after the other, staged as a file per partition;
    with ``votes`` (every row's, sparse), each partition's rows of them too (``votes/data``, ``/indices``,
    ``/indptr``)."""
    paths = []
    for index, (start, size) in enumerate(zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True)):
        path = staging.path("graph_posteriors", f"part-{index:05d}")
        arrays = {name: values[start : start + size] for name, values in results.items()}
        if votes is not None:
            own = votes[start : start + size]
            arrays |= {"votes/data": own.data.astype(np.float32), "votes/indices": own.indices,
                       "votes/indptr": own.indptr}
        paths.append(save_arrays(path, arrays))
    return paths


def staged_votes(data: Any, n_classes: int) -> sparse.csr_matrix | None:
    """A partition's votes as ``_stage`` wrote them (``data``: its staged arrays), or None if the step had
    none."""
    if "votes/data" not in data:
        return None
    indptr = data["votes/indptr"]
    return sparse.csr_matrix((data["votes/data"], data["votes/indices"], indptr), shape=(len(indptr) - 1, n_classes))


def save_neighbourhood(model_folder: str, index: Any, keys: np.ndarray, kept: dict[str, tuple[np.ndarray, np.ndarray]],
                       powers: dict[str, list[float]], settings: dict[str, Any]) -> None:
    """The model's ``neighbourhood`` part: its arrays (no pickle), and the index in faiss's own file beside them,
    written by faiss straight from the index (its serialization as bytes in the npz took three copies of 500 MB
    at 1M items, and 4.6 s against 1.1 s)."""
    import faiss

    save_part(Path(model_folder), "neighbourhood", Neighbourhood(
        None, keys.astype(np.uint64), {name: v for name, (v, _) in kept.items()},
        {name: c for name, (_, c) in kept.items()}, {name: np.asarray(powers[name]) for name in kept}, settings))
    faiss.write_index(index, str(own_file(model_folder, "neighbourhood")))


def stored_index(sealed: dict[str, str], stored: Neighbourhood) -> Any:
    """The stored faiss index of the model's neighbourhood: its own file, checked against the model's manifest
    and read by faiss from the checked file as it is open; or, in a model stored before, the bytes in the npz."""
    import faiss

    if stored.index is not None:
        return faiss.deserialize_index(stored.index)
    index = read_own_file(sealed["folder"], sealed["content_hash"], sealed["model_id"], "neighbourhood",
                          lambda handle: faiss.read_index(faiss.PyCallbackIOReader(handle.read, READ_CHUNK)))
    if index is None:
        raise ModelMismatch(f"model {sealed['model_id']}: its neighbourhood has no index; refit with a full run")
    return index


def stored_neighbours(index: Any, points: np.ndarray, keys: np.ndarray, stored_keys: np.ndarray, k: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Each point's k nearest stored items (-1 where fewer), other than its own old row (same key), and their
    cosines as the index has them: exact in the IVF index (it keeps the points), from 8-bit codes in the HNSW
    index of a model stored before it. Each point scans its own ``nprobe`` nearest lists (``index.search``)."""
    k = min(k, index.ntotal)
    _search_settings(index, k)
    found = np.empty((len(points), k), np.int64)
    cosines = np.empty((len(points), k), np.float32)
    for start in range(0, len(points), SEARCH_ROWS):
        block = slice(start, start + SEARCH_ROWS)
        scores, ids = index.search(points[block], k + 1)
        others = stored_keys[np.maximum(ids, 0)] != keys[block, None]
        found[block], cosines[block] = _first(ids, others, k, scores)
    return found, cosines


@task(name="inductive-graph", **IO_TASK)
def inductive_graph(part_paths: list[str], sealed: dict[str, str], k: int, n_modalities: int, staging: Staging
                    ) -> tuple[list[str], dict[str, Any]]:
    """An incremental night's graph: each labelled item's k nearest stored items (the model's index), and one
    step against their stored F, sharpened by the item's fold's power, as the full run's was; stage the
    results per partition as ``propagate_graph`` does and say what was done (``runs.details.graph``).

    The stored items are the catalog of the run that fitted the model: an item deleted since is still a
    neighbour (its F is what the model learned), and the night's items are not each other's."""
    began = time.perf_counter()
    stored = load_late_part(sealed["folder"], sealed["content_hash"], sealed["model_id"], "neighbourhood")
    index = stored_index(sealed, stored)
    loaded = time.perf_counter()
    present = [_load([path], "present") for path in part_paths]
    placed = np.flatnonzero(np.concatenate(present).any(axis=1))
    found, cosines = stored_neighbours(index, _load(part_paths, "points")[placed],
                                       _load(part_paths, "keys")[placed], stored.keys, k)
    searched = time.perf_counter()
    settings = stored.settings
    step = transition(adjacency(found, edge_weights(cosines, settings["power"]), len(stored.keys)), symmetric=False)
    fold = _load(part_paths, "fold")[placed]
    results: dict[str, np.ndarray] = {}
    for name in [f"prior/{i}" for i in range(n_modalities)] + ["joint"]:
        prior = _load(part_paths, name)
        label = name.replace("prior/", "")
        f = inductive(prior[placed], step, stored.stored(label), alpha=settings["alpha"])
        out = np.zeros_like(prior)
        out[placed] = sharpen_by_fold(f, fold, stored.powers[label])
        results[name.replace("prior", "posterior")] = out
    paths = _stage(results, [len(p) for p in present], staging)
    details = {"k": k, "inductive": True, "alpha": settings["alpha"], "power": settings["power"],
               "stored_items": int(index.ntotal), "stored_k": settings["k"], "items": int(len(placed)),
               "neighbours": int((found >= 0).sum()), "load_s": round(loaded - began, 3),
               "search_s": round(searched - loaded, 3), "total_s": round(time.perf_counter() - began, 3)}
    return paths, details
