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

from dataclasses import dataclass

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


def make_catalog(
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
) -> tuple[pa.Table, pa.Table]:
    """A synthetic catalog: (items, classes) Arrow tables. See the module docstring.

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
        Seeds everything.
    """
    if n_items < 1 or n_classes < 1:
        raise ValueError("make_catalog needs n_items >= 1 and n_classes >= 1")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, size=n_items)
    styles = rng.integers(0, n_styles, size=n_items)
    item_columns: dict[str, pa.Array] = {}
    class_columns: dict[str, pa.Array] = {}
    for modality in modalities:
        items, prompts = _modality(
            rng, modality, truth, styles, n_classes,
            signal_dims=signal_dims, signal_strength=signal_strength,
            nuisance_dims=nuisance_dims, nuisance_strength=nuisance_strength,
            n_styles=n_styles, common_strength=common_strength, prompt_noise=prompt_noise,
        )
        column = f"{modality.name}_embedding"
        item_columns[column] = _fixed_size_list(items)
        class_columns[column] = _fixed_size_list(prompts)
    gold = truth.copy()
    flipped = rng.random(n_items) < label_noise
    if n_classes > 1:
        gold[flipped] = (truth[flipped] + rng.integers(1, n_classes, size=int(flipped.sum()))) % n_classes
    names = np.array(class_names(n_classes))
    item_table = pa.table({
        "item_id": pa.array([f"item-{i:07d}" for i in range(n_items)], pa.string()),
        **item_columns,
        "label": pa.array(names[gold], pa.string()),
    })
    class_table = pa.table({"class_name": pa.array(names, pa.string()), **class_columns})
    return item_table, class_table


def _modality(
    rng: np.random.Generator,
    modality: Modality,
    truth: np.ndarray,
    styles: np.ndarray,
    n_classes: int,
    *,
    signal_dims: int,
    signal_strength: float,
    nuisance_dims: int,
    nuisance_strength: float,
    n_styles: int,
    common_strength: float,
    prompt_noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Item and prompt embeddings of one modality (float32)."""
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
    style_vectors = np.zeros((n_styles, d))
    style_vectors[:, nuisance_block] = rng.standard_normal((n_styles, n_nuisance)) * (
        nuisance_strength / np.sqrt(max(n_nuisance, 1))
    )
    items = common + means[truth] + style_vectors[styles]
    items += modality.noise * rng.standard_normal((truth.size, d))
    prompts = common + means + prompt_noise * rng.standard_normal((n_classes, d))
    return items.astype(np.float32), prompts.astype(np.float32)


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
