"""Refit stability (issue 21): which threshold tau lets an unchanged item keep its label across a refit.

    cd /work/wt/i21-stab && PYTHONPATH=. DO_NOT_TRACK=1 .venv/bin/python bench/research_stability.py \
        bench/data/real bench/data/real-verbs --seeds 0 1 2 3 4 [--workdir DIR]

(.venv and bench/data as in the README; the catalogs are built by bench/build_real_catalog.py.)

The rule measured: on a refit, an item whose embeddings are unchanged keeps its previous consensus label
(and confidence) unless the new model's consensus confidence in its different new label is at least tau;
tau = 0 is off (always the new label), tau = 1.01 never lets an unchanged item change. New items always
take the new label. Taus: 0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01 (the issue's grid), and 0.2, 0.3, 0.4,
since the unchanged items that flip on a refit mostly do so at low confidence (median about 0.2 on the
nouns and verbs; none at 0.75 or more in any run of docs/results.md, "Refit stability").

Per catalog and seed S, two full runs of the real product (`pairwise run --gold-column label`, each a fresh
fit, in its own DuckDB file):

- day 0: a seeded 95% of the catalog's items, `--seed S`;
- day 1, the refit: day 0's items less a seeded 1% of them, plus new items (5% of day 0's count, drawn from
  the 5% day 0 did not have), `--seed S+1` so that the model differs as a weekly refit's would.

The unchanged items are those in both days (same rows of items.parquet: identical embeddings). From each
run's `consensus_labels` (label, confidence) and `joint_labels.gold_class`, for every tau: churn is the
share of unchanged items whose label after the rule differs from day 0's; accuracy is the gold accuracy of
all of day 1's items (unchanged ones after the rule, new ones with the new label). Delta is accuracy minus
tau = 0's accuracy in the same runs (paired, so it is far less noisy than accuracy itself).

Choice of tau, on held-out halves: the items are split into seeded halves A and B (seed 12345, one split
per catalog, the same for every run seed). On half A, the chosen tau is the one with the lowest churn
whose mean delta is at least -0.001 (0.1 point of accuracy: within noise, or a gain); it is then read on
half B, and the other way round. The runs' labels are kept in --workdir (labels-*.parquet), and reused
when present, so the analysis can be re-run without the runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TAUS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01)  # 0.2-0.4: the flips' confidences are low
COST = 0.001  # the accuracy cost taken as within noise: 0.1 point
HALF_SEED = 12345


def days(items: pa.Table, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of day 0 (a seeded 95%) and of day 1 (day 0 less 1% of it, plus 5% of its count new)."""
    rng = np.random.default_rng(seed)
    n = items.num_rows
    order = rng.permutation(n)
    n0 = int(round(0.95 * n))
    day0, pool = order[:n0], order[n0:]
    kept = rng.permutation(day0)[int(round(0.01 * n0)):]
    new = rng.permutation(pool)[:int(round(0.05 * n0))]
    return np.sort(day0), np.sort(np.concatenate([kept, new]))


def run(items: pa.Table, rows: np.ndarray, classes: Path, seed: int, workdir: Path, name: str) -> pa.Table:
    """One full `pairwise run` on the given rows: its consensus labels with the gold class (cached)."""
    cached = workdir / f"labels-{name}.parquet"
    if cached.exists():
        return pq.read_table(cached)
    subset = workdir / f"items-{name}.parquet"
    pq.write_table(items.take(pa.array(rows)), subset)
    db = workdir / f"{name}.duckdb"
    command = [str(Path(sys.executable).with_name("pairwise")), "run", "--items", str(subset),
               "--classes", str(classes), "--db", str(db), "--gold-column", "label", "--seed", str(seed),
               "--quiet"]
    start = time.perf_counter()
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"pairwise run failed ({name}):\n{result.stderr}")
    with duckdb.connect(str(db), read_only=True) as con:
        labels = con.sql(
            "SELECT c.item_id, c.label, c.confidence, j.gold_class FROM consensus_labels AS c "
            "JOIN joint_labels AS j USING (run_id, item_id) ORDER BY c.item_id").to_arrow_table()
    if labels.num_rows != rows.size:
        sys.exit(f"{name}: consensus_labels has {labels.num_rows} rows for {rows.size} items")
    pq.write_table(labels, cached)
    subset.unlink()
    print(f"  {name}: {rows.size} items, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return labels


def outcomes(day0: pa.Table, day1: pa.Table, half: dict[str, bool]) -> dict[str, dict[float, tuple]]:
    """Per half ('all', 'A', 'B') and tau: (churn, accuracy) of day 1's items after the rule."""
    ids0 = day0.column("item_id").to_pylist()
    label0 = dict(zip(ids0, day0.column("label").to_pylist()))
    ids = day1.column("item_id").to_pylist()
    new_label = np.array(day1.column("label").to_pylist(), dtype=object)
    confidence = day1.column("confidence").to_numpy()
    gold = np.array(day1.column("gold_class").to_pylist(), dtype=object)
    unchanged = np.array([i in label0 for i in ids])
    old_label = np.array([label0.get(i) for i in ids], dtype=object)
    flipped = unchanged & (new_label != old_label)
    in_half = {"all": np.ones(len(ids), dtype=bool), "A": np.array([half[i] for i in ids])}
    in_half["B"] = ~in_half["A"]
    result = {}
    for name, rows in in_half.items():
        result[name] = {}
        for tau in TAUS:
            keep = flipped & (confidence < tau)
            label = np.where(keep, old_label, new_label)
            churn = (unchanged & rows & (label != old_label)).sum() / (unchanged & rows).sum()
            result[name][tau] = (churn, (label[rows] == gold[rows]).mean())
    return result


def choose(per_seed: list[dict[float, tuple]]) -> float:
    """The tau with the lowest mean churn whose mean accuracy delta against tau = 0 is at least -COST."""
    churn = {t: np.mean([s[t][0] for s in per_seed]) for t in TAUS}
    delta = {t: np.mean([s[t][1] - s[0.0][1] for s in per_seed]) for t in TAUS}
    return min((t for t in TAUS if delta[t] >= -COST), key=lambda t: (churn[t], -delta[t]))


def spread(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    return f"{np.mean(values) * scale:.{digits}f} ({min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f})"


def signed(values: list[float]) -> str:
    return f"{np.mean(values) * 100:+.2f} ({min(values) * 100:+.2f} to {max(values) * 100:+.2f})"


def report(name: str, n_items: int, results: list[dict], flip_stats: list[tuple]) -> None:
    print(f"\n{name}: {n_items} items, seeds {len(results)}; churn and accuracy in %, mean (min-max) over seeds; "
          f"delta = accuracy - accuracy at tau 0, same runs")
    print("at tau 0, per seed: unchanged items that flipped; of the flips, % right on day 0 and on day 1; "
          "day 1 confidence of the flips, median and max")
    for u, f, r, r1, median, top in flip_stats:
        print(f"  {f} of {u} ({100 * f / u:.2f}%); right {100 * r:.1f}% -> {100 * r1:.1f}%; "
              f"confidence {median:.2f}, max {top:.2f}")
    print()
    print("| tau | churn % | accuracy % | delta (points) | half A: churn / delta | half B: churn / delta |")
    print("|---|---|---|---|---|---|")
    for tau in TAUS:
        cells = [spread([r["all"][tau][0] for r in results]), spread([r["all"][tau][1] for r in results]),
                 signed([r["all"][tau][1] - r["all"][0.0][1] for r in results])]
        for half in ("A", "B"):
            churn = np.mean([r[half][tau][0] for r in results]) * 100
            delta = np.mean([r[half][tau][1] - r[half][0.0][1] for r in results]) * 100
            cells.append(f"{churn:.2f} / {delta:+.2f}")
        print(f"| {tau:g} | " + " | ".join(cells) + " |")
    for tune, held in (("A", "B"), ("B", "A")):
        tau = choose([r[tune] for r in results])
        churn0 = np.mean([r[held][0.0][0] for r in results]) * 100
        churn = np.mean([r[held][tau][0] for r in results]) * 100
        deltas = [r[held][tau][1] - r[held][0.0][1] for r in results]
        print(f"\nchosen on half {tune}: tau {tau:g}; on half {held}: churn {churn0:.2f}% -> {churn:.2f}%, "
              f"accuracy delta {signed(deltas)} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path, help="catalog folders with items.parquet and classes.parquet")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--workdir", type=Path, help="keep the runs' labels here (and reuse them); default: a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for data in args.data:
            items = pq.read_table(data / "items.parquet")
            ids = items.column("item_id").to_pylist()
            in_a = np.random.default_rng(HALF_SEED).random(len(ids)) < 0.5
            half = dict(zip(ids, in_a.tolist()))
            results, flip_stats = [], []
            for seed in args.seeds:
                day0_rows, day1_rows = days(items, seed)
                day0 = run(items, day0_rows, data / "classes.parquet", seed, workdir, f"{data.name}-s{seed}-day0")
                day1 = run(items, day1_rows, data / "classes.parquet", seed + 1, workdir, f"{data.name}-s{seed}-day1")
                results.append(outcomes(day0, day1, half))
                joined = day1.join(day0.select(["item_id", "label"]).rename_columns(["item_id", "label0"]),
                                   "item_id", join_type="inner")
                flipped = joined.filter(pc.not_equal(joined.column("label"), joined.column("label0")))
                gold = flipped.column("gold_class")
                flip_stats.append((joined.num_rows, flipped.num_rows,
                                   pc.mean(pc.equal(flipped.column("label0"), gold).cast("float64")).as_py() or 0.0,
                                   pc.mean(pc.equal(flipped.column("label"), gold).cast("float64")).as_py() or 0.0,
                                   float(np.median(flipped.column("confidence").to_numpy())),
                                   pc.max(flipped.column("confidence")).as_py()))
            report(data.name, len(ids), results, flip_stats)


if __name__ == "__main__":
    main()
