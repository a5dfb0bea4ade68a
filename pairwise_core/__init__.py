"""pairwise_core: the pairwise cross-variance method, pure numpy (METHOD.md).

No I/O, no Prefect, no DuckDB: the pipeline wraps it; tests call it directly.
"""

from pairwise_core.catalog import Modality, class_names, embeddings, iter_catalog, make_catalog
from pairwise_core.classifier import Classification, NotFittedError, PairwiseClassifier
from pairwise_core.cross_ratio import cross_ratio, moments_ratio
from pairwise_core.drift import DriftResult, class_share_shift, embedding_drift
from pairwise_core.metrics import (
    accuracy,
    agreement_f1,
    calibration_bins,
    class_shares,
    cohen_kappa,
    confusion_matrix,
    expected_calibration_error,
    f1_weighted,
)
from pairwise_core.pair_stats import PairStats
from pairwise_core.refine import MixtureRefiner, MixtureSums

__all__ = [
    "Classification",
    "DriftResult",
    "Modality",
    "NotFittedError",
    "PairStats",
    "PairwiseClassifier",
    "accuracy",
    "MixtureRefiner",
    "MixtureSums",
    "agreement_f1",
    "calibration_bins",
    "class_names",
    "class_share_shift",
    "class_shares",
    "cohen_kappa",
    "confusion_matrix",
    "cross_ratio",
    "embedding_drift",
    "embeddings",
    "expected_calibration_error",
    "f1_weighted",
    "iter_catalog",
    "make_catalog",
    "moments_ratio",
]
