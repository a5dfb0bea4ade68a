"""Research (issue 23): faiss IVF indexes against the product's HNSW,SQ8 for the graph refinement's kNN.

    cd /work/wt/ivf      # bench/data -> /work/main/bench/data
    export PYTHONPATH=$PWD DO_NOT_TRACK=1 PY=/work/main/.venv/bin/python
    $PY bench/research_ivf.py dump bench/data/real /tmp/ivf/dump-real          # one product run, --graph-k 20
    $PY bench/research_ivf.py dump bench/data/real-verbs /tmp/ivf/dump-verbs
    $PY bench/research_ivf.py real /tmp/ivf/dump-real /tmp/ivf/dump-verbs      # recall and gold accuracy
    $PY bench/research_ivf.py project bench/data/synthetic-1000000 /tmp/ivf/points-1m.npy
    $PY bench/research_ivf.py big /tmp/ivf/points-1m.npy                       # build, search, recall, MB

``dump`` runs the product's flow (``flows.cli run``) on a catalog with ``--graph-k 20`` and copies the files
``propagate_graph`` reads (each partition's 128-d points, refined posteriors per view and joint, folds,
given labels = the catalog's gold): the graph's inputs exactly as the product computes them. ``real`` then
builds each index over those points, finds every item's k = 20 neighbours with the product's own loop
(``tasks.graph._first``: self excluded, exact cosines recomputed) and runs the product's propagation on them
(``pairwise_core.graph``: adjacency, transition, propagate, the per-fold power): the labels' gold accuracy
per view and joint, and their gold ECE, as a ``--graph-k 20`` run would give them.

``project`` maps the synthetic 1M catalog to the product's points: ``GraphProjection`` fitted on a seeded
50,000-row sample of the unit views (the product fits it on its fit sample), then every item projected.
``big`` times the build and the search of every item (k = 20, blocks of 20,000 queries as the product
searches), the recall on 1,000 seeded queries (``tasks.graph.recall``: exact search in the 128-d space) and
the index's bytes (``faiss.serialize_index``) per million items; ``--twice`` builds and searches again with
the same seed and says whether the neighbour ids are identical.

faiss runs on every core (OpenMP) except the HNSW insertions, which the product runs on one thread.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pairwise_core import embeddings
from pairwise_core.graph import GraphProjection, adjacency, edge_weights, fold_powers, propagate, transition
from pairwise_core.pair_stats import normalize_rows
from tasks.graph import _first, list_neighbours, nearest_lists, recall
from tasks.refine import CALIBRATION_ROWS, MIN_CALIBRATION_ROWS
from tasks.sample import N_FOLDS

K = 20
SEED = 0
SEARCH_ROWS = 20_000
ALPHA, POWER, ITERATIONS, SHARPEN = 0.8, 1.0, 10, np.sqrt(2)  # the product's settings (tasks/graph.py)


# ---------------------------------------------------------------- indexes


def train_rows(n: int, count: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:count])


def hnsw_sq8(points: np.ndarray, seed: int, **_) -> object:
    """The product's index before this change (tasks/graph.py at f2f2148): HNSW32, SQ8, IP, efConstruction
    40 (faiss's default), SQ trained on 50,000 seeded rows, inserted on one thread."""
    import faiss

    index = faiss.IndexHNSWSQ(points.shape[1], faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT)
    index.train(points[train_rows(len(points), 50_000, seed)])
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(points)
    finally:
        faiss.omp_set_num_threads(threads)
    return index


def ivf(points: np.ndarray, seed: int, *, nlist: int, sq8: bool, train: int) -> object:
    """IVF (flat or SQ8) by inner product: k-means of ``train`` seeded rows into ``nlist`` lists (faiss's
    clustering seeded too), then every point added, on every core."""
    import faiss

    n, dims = points.shape
    quantizer = faiss.IndexFlatIP(dims)
    if sq8:
        index = faiss.IndexIVFScalarQuantizer(quantizer, dims, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(quantizer, dims, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(points[train_rows(n, train, seed)])
    index.add(points)  # (faiss's Python wrapper keeps the quantizer alive with the index)
    return index


def exact(points: np.ndarray, seed: int, **_) -> object:
    import faiss

    index = faiss.IndexFlatIP(points.shape[1])
    index.add(points)
    return index


def configure(index: object, *, nprobe: int = 0, ef: int = 64) -> None:
    import faiss

    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(ef, 2 * (K + 1))
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = nprobe


def search_all(index: object, points: np.ndarray, k: int, *, by_list: bool = False,
               rows: np.ndarray | None = None) -> np.ndarray:
    """Every point's k nearest other points (or those of ``rows``; -1 elsewhere), as tasks.graph.neighbours
    finds them (blocks of 20,000 queries, self dropped by ``_first``). ``by_list``: the queries taken in the
    order of their nearest list (the results are the same; consecutive queries then scan the same lists)."""
    n = len(points)
    order = np.arange(n) if rows is None else np.asarray(rows)
    if by_list:
        _, assigned = index.quantizer.search(points[order], 1)
        order = order[np.argsort(assigned.ravel(), kind="stable")]
    found = np.full((n, k), -1, np.int64)
    for start in range(0, len(order), SEARCH_ROWS):
        block = order[start : start + SEARCH_ROWS]
        _, ids = index.search(points[block], k + 1)
        found[block] = _first(ids, ids != block[:, None], k)
    return found


def search_by_lists(index: object, points: np.ndarray, k: int, nprobe: int) -> np.ndarray:
    """Every point's k nearest other points, a list at a time: the list's members against every point of the
    ``nprobe`` lists nearest its centroid (itself first), by BLAS (``faiss.knn``): the product's
    ``tasks.graph.list_neighbours``. The probed lists are the list's, not each query's own as in
    ``index.search``."""
    index.nprobe = min(nprobe, index.nlist)
    return list_neighbours(index, points, k, nearest_lists(index, points))[0]


def exact_cosines(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    cos = np.empty(found.shape, np.float32)
    for start in range(0, len(points), SEARCH_ROWS):
        block = slice(start, start + SEARCH_ROWS)
        cos[block] = np.einsum("nd,nkd->nk", points[block], points[np.maximum(found[block], 0)])
    cos[found < 0] = np.nan
    return cos


def variants(n: int, nlists: tuple[float, ...], nprobes: tuple[int, ...], train: int = 50_000,
             sq8: tuple[bool, ...] = (False, True)) -> list[tuple]:
    """(name, builder, options, nprobe) of every index measured."""
    out = [("HNSW32,SQ8 (product)", hnsw_sq8, {}, 0)]
    for scale in nlists:
        nlist = max(1, round(scale * np.sqrt(n)))
        for quantised in sq8:
            for nprobe in nprobes:
                name = f"IVF{nlist},{'SQ8' if quantised else 'Flat'} nprobe {nprobe}"
                out.append((name, ivf, {"nlist": nlist, "sq8": quantised, "train": min(n, max(train, 39 * nlist))},
                            nprobe))
    return out


# ---------------------------------------------------------------- the real catalogs


def dump(catalog: Path, out: Path) -> None:
    """One product run with --graph-k 20; the files propagate_graph reads are copied to ``out``."""
    import tasks.graph as product_graph
    from flows import cli

    out.mkdir(parents=True, exist_ok=True)
    load = product_graph._load

    def copying(paths: list[str], name: str) -> np.ndarray:
        for path in paths:
            if not (out / Path(path).name).exists():
                shutil.copy(path, out / Path(path).name)
        return load(paths, name)

    product_graph._load = copying
    db = out / "run.duckdb"
    for stale in out.glob("run.duckdb*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    code = cli.main(["run", "--items", str(catalog / "items.parquet"), "--classes", str(catalog / "classes.parquet"),
                     "--db", str(db), "--gold-column", "label", "--graph-k", str(K), "--run-id", "dump", "--quiet"])
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        details = json.loads(con.execute("SELECT details FROM runs").fetchone()[0])["graph"]
        per_view = con.execute("SELECT modality, count(*), avg((refined_class = gold_class)::int) FROM item_labels "
                               "GROUP BY 1 ORDER BY 1").fetchall()
        joint = con.execute("SELECT avg((label = gold_class)::int) FROM joint_labels").fetchone()[0]
    print(f"{catalog.name}: exit {code}; product run graph {details}")
    print("product run accuracy: " + ", ".join(f"{m} {a:.4f} ({c:,} rows)" for m, c, a in per_view)
          + f", joint {joint:.4f}")


def load_dump(folder: Path) -> dict[str, np.ndarray]:
    paths = sorted(str(p) for p in folder.glob("part-*.npz"))
    with np.load(paths[0], allow_pickle=False) as first:
        names = [name for name in first.files if name.startswith("prior/")] + ["joint"]
        modalities = list(first["modalities"])
    data = {name: np.concatenate([np.load(p, allow_pickle=False)[name] for p in paths])
            for name in ["points", "present", "fold", "gold", *names]}
    placed = data["present"].any(axis=1)
    out = {name: values[placed] for name, values in data.items()}
    out["names"] = [f"{modalities[int(name.split('/')[1])]}" if name.startswith("prior/") else name for name in names]
    out["keys"] = names
    return out


def ece(p: np.ndarray, gold: np.ndarray, bins: int = 10) -> float:
    conf, correct = p.max(1), p.argmax(1) == gold
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum((idx == b).sum() * abs(correct[idx == b].mean() - conf[idx == b].mean())
                     for b in range(bins) if (idx == b).any()) / conf.size)


def graph_labels(data: dict, found: np.ndarray, cosines: np.ndarray, seed: int) -> dict[str, tuple[float, float]]:
    """The product's propagation over these neighbours: per view and joint, (gold accuracy, gold ECE) of the
    sharpened posteriors, on the rows with a prior (as item_labels has them) and a gold label."""
    from tasks.graph import sharpen_by_fold

    step = transition(adjacency(found, edge_weights(cosines, POWER), len(found)))
    out = {}
    for key, name in zip(data["keys"], data["names"], strict=True):
        prior = data[key]
        f = propagate(prior, step, alpha=ALPHA, iterations=ITERATIONS)
        fitted = fold_powers(f, data["fold"], data["gold"], N_FOLDS, min_rows=MIN_CALIBRATION_ROWS,
                             max_rows=CALIBRATION_ROWS, seed=seed)
        p = sharpen_by_fold(f, data["fold"], np.full(N_FOLDS, SHARPEN) if fitted is None else fitted)
        rows = (data["gold"] >= 0) & (p.sum(axis=1) > 0)
        out[name] = (float((p[rows].argmax(1) == data["gold"][rows]).mean()), ece(p[rows], data["gold"][rows]))
    return out


def cmd_real(folders: list[Path], seeds: tuple[int, ...], nlists: tuple[float, ...], nprobes: tuple[int, ...],
             sq8: tuple[bool, ...], blocks: bool) -> None:
    for folder in folders:
        data = load_dump(folder)
        points = np.ascontiguousarray(data["points"], np.float32)
        n = len(points)
        exact_ids = search_all(exact(points, SEED), points, K)
        print(f"\n### {folder.name}: {n:,} points, k = {K}"
              f"{'; IVF searched a list at a time by BLAS' if blocks else ''}\n")
        print("| index | nprobe | seed | build s | search s | recall (all items) | recall (1,000, product) | "
              + " | ".join(f"{name} acc (ECE)" for name in data["names"]) + " | rows with other ids than HNSW's |")
        print("|---|---|---|---|---|---|---|" + "---|" * len(data["names"]) + "---|")
        reference = None
        for name, build, options, nprobe in [("exact (flat IP)", exact, {}, 0),
                                              *variants(n, nlists, nprobes, sq8=sq8)]:
            for seed in (seeds if build is not exact else (SEED,)):
                began = time.perf_counter()
                index = build(points, seed, **options)
                built = time.perf_counter()
                configure(index, nprobe=nprobe)
                if blocks and build is ivf:
                    found = search_by_lists(index, points, K, nprobe)
                else:
                    found = search_all(index, points, K)
                searched = time.perf_counter()
                full = float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, exact_ids, strict=True)]) / K)
                labels = graph_labels(data, found, exact_cosines(points, found), SEED)
                if build is hnsw_sq8 and seed == SEED:
                    reference = found
                moved = "-" if reference is None else f"{(found != reference).any(axis=1).mean():.3f}"
                print(f"| {name} | {nprobe or '-'} | {seed} | {built - began:.2f} | {searched - built:.2f} | "
                      f"{full:.4f} | {recall(points, found, SEED):.4f} | "
                      + " | ".join(f"{a:.4f} ({e:.3f})" for a, e in labels.values()) + f" | {moved} |", flush=True)


# ---------------------------------------------------------------- 1M points


def cmd_project(catalog: Path, out: Path, sample_rows: int = 50_000) -> None:
    """The product's points of the synthetic catalog: unit views, GraphProjection fitted on seeded rows."""
    files = sorted(glob.glob(str(catalog / "items" / "*.parquet")))
    columns = [c for c in pq.read_schema(files[0]).names if c.endswith("_embedding")]
    modalities = [c.removesuffix("_embedding") for c in columns]
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    n = sum(sizes)
    chosen = train_rows(n, sample_rows, SEED)
    began = time.perf_counter()
    sample: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    offset = 0
    for f, size in zip(files, sizes, strict=True):
        rows = chosen[(chosen >= offset) & (chosen < offset + size)] - offset
        table = pq.read_table(f, columns=columns).take(rows)
        for m, c in zip(modalities, columns, strict=True):
            sample[m].append(normalize_rows(embeddings(table, c)))
        offset += size
    units = {m: np.concatenate(v) for m, v in sample.items()}
    projection = GraphProjection.fit(units, np.ones((len(chosen), len(modalities)), bool), 128)
    points = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, 128))
    offset = 0
    for f, size in zip(files, sizes, strict=True):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=50_000, columns=columns):
            batch = pa.Table.from_batches([batch])
            views = {}
            for m, c in zip(modalities, columns, strict=True):
                x = embeddings(batch, c)
                views[m] = (x, 1 / np.linalg.norm(x, axis=1), np.ones(len(x), bool))
            points[offset : offset + batch.num_rows] = projection.project(batch.num_rows, views)
            offset += batch.num_rows
    points.flush()
    print(f"{n:,} points of {catalog} ({', '.join(modalities)}) projected to 128-d in "
          f"{time.perf_counter() - began:.1f} s -> {out}")


def cmd_big(path: Path, configs: list[str], twice: bool, by_list: bool, queries: int, blocks: bool) -> None:
    import faiss

    points = np.ascontiguousarray(np.load(path))
    n = len(points)
    print(f"\n### {n:,} points ({path}), k = {K}, faiss threads {faiss.omp_get_max_threads()}"
          f"{', queries in list order' if by_list else ''}{', searched a list at a time by BLAS' if blocks else ''}\n")
    timed = n if queries <= 0 else min(queries, n)
    if timed < n:
        print(f"(search timed on the first {timed:,} points, x {n / timed:g} for all; recall on its own 1,000 queries)\n")
    probe = np.sort(np.random.default_rng(SEED + 1).permutation(n)[:1000])  # tasks.graph.recall's queries
    print("| index | nprobe | build s | search s | recall (1,000 seeded) | MB per 1M items | same ids twice |")
    print("|---|---|---|---|---|---|---|")
    for config in configs:
        spec = json.loads(config)
        kind = spec.pop("kind")
        nprobe = spec.pop("nprobe", 0)
        runs = []
        for _ in range(2 if twice else 1):
            began = time.perf_counter()
            index = hnsw_sq8(points, SEED) if kind == "hnsw" else ivf(points, SEED, **spec)
            built = time.perf_counter()
            configure(index, nprobe=nprobe)
            if blocks:
                found = search_by_lists(index, points, K, nprobe)
            else:
                found = search_all(index, points, K, by_list=by_list and kind != "hnsw",
                                   rows=None if timed == n else np.arange(timed))
            searched = time.perf_counter()
            if timed < n and not blocks:
                found = np.maximum(found, search_all(index, points, K, rows=probe))
            runs.append(found)
            size = len(faiss.serialize_index(index))
            print(f"| {kind} {spec} | {nprobe or '-'} | {built - began:.1f} | {(searched - built) * (1 if blocks else n / timed):.1f} | "
                  f"{recall(points, found, SEED):.4f} | {size / n * 1e6 / 2**20:.0f} | "
                  + ("-" if len(runs) == 1 else str(bool(np.array_equal(runs[0], runs[1])))) + " |", flush=True)
            del index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cmd", choices=("dump", "real", "project", "big"))
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the indexes (real)")
    parser.add_argument("--nlists", default="1,2,4", help="nlist / sqrt(n), comma-separated (real)")
    parser.add_argument("--nprobes", default="4,8,16,32", help="comma-separated (real)")
    parser.add_argument("--flat-only", action="store_true", help="IVF-Flat alone, no IVF-SQ8 (real)")
    parser.add_argument("--config", action="append", default=[], help="JSON of an index (big), repeatable")
    parser.add_argument("--twice", action="store_true")
    parser.add_argument("--by-list", action="store_true")
    parser.add_argument("--blocks", action="store_true", help="search a list at a time by BLAS (big, real)")
    parser.add_argument("--queries", type=int, default=0, help="time the search of this many points (big)")
    args = parser.parse_args()
    if args.cmd == "dump":
        dump(*args.paths)
    elif args.cmd == "real":
        cmd_real(args.paths, tuple(int(s) for s in args.seeds.split(",")),
                 tuple(float(s) for s in args.nlists.split(",")), tuple(int(s) for s in args.nprobes.split(",")),
                 (False,) if args.flat_only else (False, True), args.blocks)
    elif args.cmd == "project":
        cmd_project(*args.paths)
    else:
        cmd_big(args.paths[0], args.config, args.twice, args.by_list, args.queries, args.blocks)


if __name__ == "__main__":
    sys.exit(main())
