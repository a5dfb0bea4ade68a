"""Research: the weight of a lone modality's refined terms without a gold column (LABEL_FREE_WEIGHT).

    .venv/bin/python bench/research_label_free_weight.py bench/data/real:title bench/data/real:gloss \\
        bench/data/real-verbs:title bench/data/real-verbs:gloss --choose-on real real-verbs \\
        [bench/data/real-mpnet:title ...] [--work /tmp/lfw]

With one modality and no gold column a run has no witness to calibrate its confidence against: it is
softmax(w * terms) with a fixed w. Per CATALOG:VIEW, one `pairwise run` on that view alone, without
--gold-column (a catalog of its own under --work, reused when there); then every item's terms are computed
again from the model the run stored (its refiner, the run's pairwise labels: the labelling pass's terms up to
rounding) and the confidence max softmax(terms / s) is scored for each temperature s against the catalog's
`label` column: ECE (15 equal-width bins) on each half of the items (`np.random.default_rng(0).random(n) <
0.5` is the tune half). The weight is chosen as the s with the lowest mean tune-half ECE over the views of the
catalogs named by --choose-on; the table gives the held-out halves, and the other catalogs are not read to
choose it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pairwise_core import embeddings  # noqa: E402
from tasks.models import load_model  # noqa: E402

TEMPERATURES = np.array(sorted({*np.geomspace(4, 64, 65).round(2), 12.0, 18.0}))


def ece(confidence: np.ndarray, right: np.ndarray, bins: int = 15) -> float:
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(confidence[which == b].mean() - right[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def view_terms(catalog: Path, view: str, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """(terms (n, K) of the stored model's refiner, gold class indices (n,)) of one view run alone."""
    folder = work / f"{catalog.name}-{view}"
    folder.mkdir(parents=True, exist_ok=True)
    items = pq.read_table(catalog / "items.parquet", columns=["item_id", f"{view}_embedding", "label"])
    db = folder / "run.duckdb"
    if not db.exists():
        pq.write_table(items.select(["item_id", f"{view}_embedding"]), folder / "items.parquet")
        pq.write_table(pq.read_table(catalog / "classes.parquet", columns=["class_name", f"{view}_embedding"]),
                       folder / "classes.parquet")
        subprocess.run([sys.executable, "-m", "flows.cli", "run", "--items", str(folder / "items.parquet"),
                        "--classes", str(folder / "classes.parquet"), "--db", str(db), "--quiet"],
                       cwd=ROOT, check=True)
    with duckdb.connect(str(db), read_only=True) as con:
        path, content_hash, model_id = con.execute("SELECT path, content_hash, model_id FROM models").fetchone()
        pairwise = dict(con.execute("SELECT item_id, pairwise_class FROM item_labels").fetchall())
    refiner = load_model(db.parent / path, content_hash, model_id).refinement.refiners[view]
    names = pq.read_table(folder / "classes.parquet").column("class_name").to_pylist()
    index = {name: k for k, name in enumerate(names)}
    labels = np.array([index[pairwise[item]] for item in items.column("item_id").to_pylist()])
    terms = refiner.log_terms(embeddings(items, f"{view}_embedding").astype(np.float32), labels)
    gold = np.array([index.get(label, -1) for label in items.column("label").to_pylist()])
    return terms.astype(np.float64), gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("views", nargs="+", help="CATALOG_DIR:VIEW, e.g. bench/data/real:title")
    parser.add_argument("--choose-on", nargs="+", required=True, help="catalog names whose tune halves choose s")
    parser.add_argument("--work", type=Path, default=Path("/tmp/label-free-weight"))
    args = parser.parse_args()
    scores: dict[str, np.ndarray] = {}  # view -> (temperatures, 2 halves) ECE
    for spec in args.views:
        catalog, view = spec.rsplit(":", 1)
        terms, gold = view_terms(Path(catalog), view, args.work)
        right = terms.argmax(axis=1) == gold
        tune = np.random.default_rng(0).random(len(gold)) < 0.5
        shifted = terms - terms.max(axis=1, keepdims=True)
        name = f"{Path(catalog).name}/{view}"
        scores[name] = np.array([[ece(c[half], right[half]) for half in (tune, ~tune)]
                                 for c in (1 / np.exp(shifted / s).sum(axis=1) for s in TEMPERATURES)])
        print(f"{name}: {len(gold)} items, refined accuracy {right.mean():.3f}", flush=True)
    chosen_on = [name for name in scores if name.split("/")[0] in args.choose_on]
    best = int(np.argmin(np.mean([scores[name][:, 0] for name in chosen_on], axis=0)))
    print(f"\nchosen on the tune halves of {', '.join(chosen_on)}: s = {TEMPERATURES[best]:.2f}\n")
    print("| s | " + " | ".join(scores) + " | mean |")
    print("|---" * (len(scores) + 2) + "|")
    for i, s in enumerate(TEMPERATURES):
        held_out = [scores[name][i, 1] for name in scores]
        mark = " (chosen)" if i == best else ""
        print(f"| {s:.2f}{mark} | " + " | ".join(f"{e:.3f}" for e in held_out) + f" | {np.mean(held_out):.3f} |")


if __name__ == "__main__":
    main()
