"""pairwise_core: the pairwise cross-variance method, pure numpy (METHOD.md).

No I/O, no Prefect, no DuckDB: the pipeline wraps it; tests call it directly.
"""

from pairwise_core.catalog import Modality, class_names, embeddings, iter_catalog, make_catalog
from pairwise_core.classifier import Classification, NotFittedError, PairwiseClassifier
from pairwise_core.cross_ratio import cross_ratio, moments_ratio
from pairwise_core.metrics import (
    accuracy,
    agreement_f1,
    class_shares,
    cohen_kappa,
    confusion_matrix,
    f1_weighted,
)
from pairwise_core.pair_stats import PairStats

__all__ = [
    "Classification",
    "Modality",
    "NotFittedError",
    "PairStats",
    "PairwiseClassifier",
    "accuracy",
    "agreement_f1",
    "class_names",
    "class_shares",
    "cohen_kappa",
    "confusion_matrix",
    "cross_ratio",
    "embeddings",
    "f1_weighted",
    "iter_catalog",
    "make_catalog",
    "moments_ratio",
]
