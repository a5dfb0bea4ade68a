"""make_catalog: a seeded SYNTHETIC catalog for demos, tests and benchmarks.

Nothing here is real data. The generator plants the structure the method is
built for, so that its effect can be seen and tested:

- every class has its own few *signal* dimensions per modality, so each class
  pair differs on its own small set of dimensions;
- a large *nuisance* component (think colour or background) lives on
  dimensions of its own, is drawn per item from a few shared styles, and is
  the same for every class: it swamps full-embedding cosines but carries no
  class information;
- a common offset shared by all items and prompts (embeddings of one model
  share a mean direction);
- per-modality isotropic item noise;
- class-prompt embeddings are the class signal plus the common offset plus
  prompt noise on every dimension (a prompt is not its class's centroid);
- optional label noise: a seeded share of gold labels is moved to another class.

Tables follow the input contract of SPEC.md: items have ``item_id``,
``<modality>_embedding`` (fixed-size list of float32) and a gold ``label``;
classes have ``class_name`` and the same embedding columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

CLASS_NAMES = (
    "dress", "shirt", "trousers", "skirt", "jacket", "coat", "sweater", "shorts",
    "shoes", "boots", "sandals", "hat", "bag", "scarf", "belt", "socks",
    "gloves", "swimwear", "pyjamas", "suit",
)


@dataclass(frozen=True)
class Modality:
    """How one modality is generated."""

    name: str
    dim: int
    noise: float


DEFAULT_MODALITIES = (Modality("image", 512, 0.045), Modality("text", 384, 0.035))


def class_names(n_classes: int) -> list[str]:
    """Readable class names: clothing words, then class-<k> past the list."""
    return [CLASS_NAMES[k] if k < len(CLASS_NAMES) else f"class-{k}" for k in range(n_classes)]


_CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class _Planted:
    """The structure of one modality: what every item and prompt is built from."""

    modality: Modality
    common: np.ndarray  # (d,)
    means: np.ndarray  # (K, d) class signal
    styles: np.ndarray  # (n_styles, d) nuisance, class-independent


def make_catalog(n_items: int = 10_000, n_classes: int = 13, **options: Any) -> tuple[pa.Table, pa.Table]:
    """A synthetic catalog: (items, classes) Arrow tables. See the module docstring and ``iter_catalog``."""
    classes, chunks = iter_catalog(n_items, n_classes, **options)
    return pa.concat_tables(list(chunks)).combine_chunks(), classes


def iter_catalog(
    n_items: int = 10_000,
    n_classes: int = 13,
    *,
    modalities: tuple[Modality, ...] = DEFAULT_MODALITIES,
    signal_dims: int = 6,
    signal_strength: float = 0.12,
    nuisance_dims: int = 24,
    nuisance_strength: float = 0.6,
    n_styles: int = 8,
    common_strength: float = 0.5,
    prompt_noise: float = 0.03,
    label_noise: float = 0.0,
    seed: int = 0,
) -> tuple[pa.Table, Iterator[pa.Table]]:
    """The classes table, and the items as a stream of tables of at most 50,000 rows.

    Memory stays bounded by the chunk, so catalogs of millions of items can be
    written to disk; ``make_catalog`` is the same catalog in one table.

    Parameters
    ----------
    n_items, n_classes : int
        Catalog size. Classes are drawn uniformly.
    modalities : tuple of Modality
        Name, dimension and item-noise level of each modality.
    signal_dims, signal_strength : int, float
        Dimensions planted per class and modality, and their offset.
    nuisance_dims, nuisance_strength, n_styles : int, float, int
        The class-independent nuisance block and how many shared styles it has.
    common_strength, prompt_noise : float
        Shared offset of all embeddings; noise on every dimension of a prompt.
    label_noise : float
        Share of gold labels moved to a different class (seeded).
    seed : int
        Seeds everything: the structure, and each chunk of items from (seed, chunk index).
    """
    if n_items < 1 or n_classes < 1:
        raise ValueError("make_catalog needs n_items >= 1 and n_classes >= 1")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    rng = np.random.default_rng(seed)
    planted = [
        _plant(rng, m, n_classes, signal_dims=signal_dims, signal_strength=signal_strength,
               nuisance_dims=nuisance_dims, nuisance_strength=nuisance_strength, n_styles=n_styles,
               common_strength=common_strength)
        for m in modalities
    ]
    names = np.array(class_names(n_classes))
    class_table = pa.table({
        "class_name": pa.array(names, pa.string()),
        **{
            f"{p.modality.name}_embedding": _fixed_size_list(
                p.common + p.means + prompt_noise * rng.standard_normal(p.means.shape)
            )
            for p in planted
        },
    })

    def chunks() -> Iterator[pa.Table]:
        for index, start in enumerate(range(0, n_items, _CHUNK_ROWS)):
            n = min(_CHUNK_ROWS, n_items - start)
            chunk_rng = np.random.default_rng([seed, index])
            truth = chunk_rng.integers(0, n_classes, size=n)
            styles = chunk_rng.integers(0, n_styles, size=n)
            columns = {}
            for p in planted:
                x = p.common + p.means[truth] + p.styles[styles]
                x += p.modality.noise * chunk_rng.standard_normal(x.shape)
                columns[f"{p.modality.name}_embedding"] = _fixed_size_list(x)
            gold = truth.copy()
            flipped = chunk_rng.random(n) < label_noise
            if n_classes > 1:
                gold[flipped] = (truth[flipped] + chunk_rng.integers(1, n_classes, size=int(flipped.sum()))) % n_classes
            yield pa.table({
                "item_id": pa.array([f"item-{i:07d}" for i in range(start, start + n)], pa.string()),
                **columns,
                "label": pa.array(names[gold], pa.string()),
            })

    return class_table, chunks()


def _plant(
    rng: np.random.Generator,
    modality: Modality,
    n_classes: int,
    *,
    signal_dims: int,
    signal_strength: float,
    nuisance_dims: int,
    nuisance_strength: float,
    n_styles: int,
    common_strength: float,
) -> _Planted:
    """Draw one modality's structure: signal dimensions per class, nuisance block, common offset."""
    d = modality.dim
    n_nuisance = min(nuisance_dims, d // 4)
    dims = rng.permutation(d)
    nuisance_block, signal_pool = dims[:n_nuisance], dims[n_nuisance:]
    common = rng.standard_normal(d)
    common *= common_strength / np.linalg.norm(common)
    means = np.zeros((n_classes, d))
    for k in range(n_classes):
        planted = rng.choice(signal_pool, size=min(signal_dims, signal_pool.size), replace=False)
        means[k, planted] = signal_strength * rng.choice([-1.0, 1.0], size=planted.size)
    styles = np.zeros((n_styles, d))
    styles[:, nuisance_block] = rng.standard_normal((n_styles, n_nuisance)) * (
        nuisance_strength / np.sqrt(max(n_nuisance, 1))
    )
    return _Planted(modality, common, means, styles)


def _fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).ravel(), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


def embeddings(table: pa.Table, column: str) -> np.ndarray:
    """An embedding column of an Arrow table as an (n, d) float32 matrix (zero-copy when it can)."""
    chunked = table.column(column).combine_chunks()
    if pa.types.is_fixed_size_list(chunked.type):
        width = chunked.type.list_size
    else:
        lengths = np.asarray(chunked.value_lengths())
        width = int(lengths[0]) if lengths.size else 0
        if lengths.size and (lengths != width).any():
            raise ValueError(f"{column} has lists of different lengths")
    flat = chunked.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(len(table), width)
