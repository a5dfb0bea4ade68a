"""Research: per-class corrections of the joint posterior, fitted on the gold column out of fold.

    PYTHONPATH=. .venv/bin/python bench/research_class_bias.py [--noise=0.1] DB:CATALOG [DB:CATALOG ...]

DB is a full ``pairwise run --gold-column label`` of CATALOG (a folder of bench/build_real_catalog.py: items.parquet,
classes.parquet). The run's joint log posterior is recomputed from its stored model (each view's refiner terms,
weighed by the run's fitted joint weights of the item's fold; checked against the run's joint labels), then
corrected per class, on the run's 5 folds (``item_folds``) as the product fits its weights: the bias (vector
scaling, ``corrected``): p' = softmax(t log p + b), t > 0 and b (K,) fitted by L-BFGS on the gold labels of the
other folds with the penalty lam / 2 |b|^2 per labelled item; and the closed-form prior shift (``prior_shift``).
``--noise``: that share of the fitting labels flipped uniformly. Per catalog and correction: joint accuracy and ECE
(10 bins) against gold, and how many classes the reports would name (``tasks.report``'s rule), on the whole
catalog, the held-out half of the research scripts (``np.random.default_rng(0).random(n) >= 0.5``) and the tune
half (``< 0.5``), on which lam is to be chosen. Results: research_class_bias.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pairwise_core import embeddings  # noqa: E402
from pairwise_core.joint import joint_log_posterior  # noqa: E402
from pairwise_core.refine import log_softmax  # noqa: E402
from tasks.models import load_model  # noqa: E402
from tasks.report import CLASS_GAP, CLASS_MIN_GOLD, CLASS_Z  # noqa: E402
from tasks.sample import N_FOLDS, item_folds  # noqa: E402

LAMS = (0.0, 1e-3, 1e-2)


def ece(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(confidence[which == b].mean() - right[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def named(label: np.ndarray, confidence: np.ndarray, gold: np.ndarray) -> int:
    n_named = 0
    for k in np.unique(label):
        rows = label == k
        n, conf, acc = rows.sum(), confidence[rows].mean(), (gold[rows] == k).mean()
        spread = np.sqrt(max(conf * (1 - conf), 1e-4) / n)
        n_named += bool(n >= CLASS_MIN_GOLD and conf - acc >= CLASS_GAP and conf - acc >= CLASS_Z * spread)
    return n_named


def joint_of_run(db: str, catalog: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(joint log posterior (n, K), gold class index (n,), fold (n,)) of the run's items, as the run made them."""
    with duckdb.connect(db, read_only=True) as con:
        path, content_hash, model_id, run_id = con.execute(
            "SELECT path, content_hash, model_id, run_id FROM models").fetchone()
        pairwise = con.execute("SELECT item_id, modality, pairwise_class FROM item_labels WHERE run_id = ?",
                               [run_id]).fetchall()
        joint = dict(con.execute("SELECT item_id, label FROM joint_labels WHERE run_id = ?", [run_id]).fetchall())
        (seed,) = con.execute("SELECT json_extract(params, '$.seed')::INT FROM runs WHERE run_id = ?",
                              [run_id]).fetchone()
    model = load_model(Path(db).parent / path, content_hash, model_id)
    refinement = model.refinement
    views = list(refinement.refiners)
    names = pq.read_table(catalog / "classes.parquet", columns=["class_name"]).column("class_name").to_pylist()
    index = {name: k for k, name in enumerate(names)}
    items = pq.read_table(catalog / "items.parquet", columns=["item_id", "label", *(f"{v}_embedding" for v in views)])
    ids = items.column("item_id").to_pylist()
    by_view = {(item, view): index[label] for item, view, label in pairwise}
    terms = np.stack([refinement.refiners[v].log_terms(
        embeddings(items, f"{v}_embedding").astype(np.float32), np.array([by_view[(i, v)] for i in ids]))
        for v in views], axis=1).astype(np.float64)
    fold = item_folds(items.column("item_id").cast(pa.string()).combine_chunks(), seed)
    present = np.ones(terms.shape[:2], bool)
    log_p = joint_log_posterior(terms, present, refinement.joint_weights[fold])
    agree = np.mean(log_p.argmax(axis=1) == np.array([index[joint[i]] for i in ids]))
    assert agree > 0.999, f"recomputed joint labels agree with the run's on {agree:.4f} only"
    gold = np.array([index.get(g, -1) for g in items.column("label").to_pylist()])
    return log_p, gold, fold


def fit_bias(log_p: np.ndarray, gold: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    n, k = log_p.shape
    rows = np.arange(n)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        t, b = np.exp(w[0]), w[1:]
        z = log_softmax(t * log_p + b)
        p = np.exp(z)
        residual = p.copy()
        residual[rows, gold] -= 1
        grad_b = residual.sum(axis=0) / n + lam * b
        grad_t = float((residual * log_p).sum() / n) * t
        return float(-z[rows, gold].mean() + lam / 2 * b @ b), np.concatenate([[grad_t], grad_b])

    w = minimize(loss, np.zeros(k + 1), jac=True, method="L-BFGS-B").x
    return float(np.exp(w[0])), w[1:]


def fit_temperature(log_p: np.ndarray, gold: np.ndarray) -> float:
    """The scalar t of softmax(t log p) with the best likelihood of ``gold``."""
    rows = np.arange(len(gold))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        t = np.exp(w[0])
        z = log_softmax(t * log_p)
        residual = np.exp(z)
        residual[rows, gold] -= 1
        return float(-z[rows, gold].mean()), np.array([float((residual * log_p).sum() / len(gold)) * t])

    return float(np.exp(minimize(loss, np.zeros(1), jac=True, method="L-BFGS-B").x[0]))


def retempered(log_p: np.ndarray, fit_gold: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out of fold: each fold's rows under a temperature fitted on the other folds' rows."""
    known = fit_gold >= 0
    out = np.empty_like(log_p)
    for f in range(N_FOLDS):
        train = (fold != f) & known
        out[fold == f] = log_softmax(fit_temperature(log_p[train], fit_gold[train]) * log_p[fold == f])
    return out


def corrected(log_p: np.ndarray, fit_gold: np.ndarray, fold: np.ndarray, lam: float, retemper: bool) -> np.ndarray:
    """Out of fold: each fold's rows under the bias (and temperature) fitted on the other folds' labels; with
    ``retemper``, then a temperature per fold fitted on the other folds' corrected rows."""
    known = fit_gold >= 0
    out = np.empty_like(log_p)
    for f in range(N_FOLDS):
        train = (fold != f) & known
        t, b = fit_bias(log_p[train], fit_gold[train], lam)
        out[fold == f] = log_softmax(t * log_p[fold == f] + b)
    return retempered(out, fit_gold, fold) if retemper else out


def prior_shift(log_p: np.ndarray, fit_gold: np.ndarray, fold: np.ndarray, retemper: bool) -> np.ndarray:
    """Out of fold: p(c | x) pi_gold(c) / pi_model(c) renormalized (Saerens et al. 2002 with the new priors known):
    pi_gold the other folds' gold class shares (add-one), pi_model their mean posterior; with ``retemper``, then a
    temperature per fold fitted on the other folds' shifted rows."""
    known, k = fit_gold >= 0, log_p.shape[1]
    out = np.empty_like(log_p)
    for f in range(N_FOLDS):
        train = (fold != f) & known
        gold_share = (np.bincount(fit_gold[train], minlength=k) + 1) / (train.sum() + k)
        model_share = np.exp(log_p[train]).mean(axis=0)
        out[fold == f] = log_softmax(log_p[fold == f] + np.log(gold_share) - np.log(model_share))
    return retempered(out, fit_gold, fold) if retemper else out


def main() -> None:
    noise = 0.0
    specs = sys.argv[1:]
    if specs and specs[0].startswith("--noise="):
        noise, specs = float(specs[0].split("=")[1]), specs[1:]
    flipped = f" with {noise:.0%} flipped uniformly (seed 0)" if noise else ""
    print(f"fitting labels: gold{flipped}; scored against gold")
    print("| catalog | correction | accuracy whole | ECE whole | named whole | accuracy held-out | ECE held-out | "
          "named held-out | accuracy tune | ECE tune |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for spec in specs:
        db, catalog = spec.split(":")
        log_p, gold, fold = joint_of_run(db, Path(catalog))
        rng = np.random.default_rng(0)
        held = rng.random(len(gold)) >= 0.5
        fit_gold = gold.copy()
        if noise:
            flip = (rng.random(len(gold)) < noise) & (gold >= 0)
            fit_gold[flip] = (gold[flip] + rng.integers(1, log_p.shape[1], flip.sum())) % log_p.shape[1]
        known = gold >= 0
        for name, lam, retemper in (("the run", None, False), *((f"bias, lam {lam}", lam, False) for lam in LAMS),
                                    ("bias, lam 0, then a temperature", 0.0, True), ("prior shift", "shift", False),
                                    ("prior shift, then a temperature", "shift", True)):
            post = (log_p if lam is None else prior_shift(log_p, fit_gold, fold, retemper) if lam == "shift"
                    else corrected(log_p, fit_gold, fold, lam, retemper))
            label, confidence = post.argmax(axis=1), np.exp(post.max(axis=1))
            cells = []
            for rows in (known, known & held, known & ~held):
                right = label[rows] == gold[rows]
                cells += [f"{right.mean():.4f}", f"{ece(confidence[rows], right):.3f}",
                          str(named(label[rows], confidence[rows], gold[rows]))]
            print(f"| {Path(catalog).name} | {name} | " + " | ".join(cells[:8]) + " |", flush=True)


if __name__ == "__main__":
    main()
