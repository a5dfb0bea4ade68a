"""Evidence against an item's given label, across its modalities: the annotation_issues rules.

Per item, with M modalities (columns), of which ``reviewed`` says which
labelled it against a known given label:

- raw score: the mean, over reviewed modalities, of [pairwise label != given]
  + given_gap (base cosine of the best class minus the given label's): first
  how many modalities disagree, then how far the given label trails;
- suggested label: among the pairwise labels other than the given one, the
  one most modalities give, then the one with the larger margin, then the
  class listed first; if every pairwise label is the given one, the base
  label other than the given one with the widest gap (then the class listed
  first); -1 when nothing speaks against the given label;
- agreeing modalities: how many pairwise labels are the suggested one.

The pipeline then ranks by the raw score standardized among the items given
the same label (sql/annotation_issues.sql): a class the prompts describe
badly draws disagreement on most of its items, clean ones included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ItemReview:
    raw_score: np.ndarray  # (n,) float64, NaN where no modality was reviewed
    suggested: np.ndarray  # (n,) int64 class index, -1 where nothing speaks against the given label
    agreeing: np.ndarray  # (n,) int64


def review_items(
    given: np.ndarray,
    base_label: np.ndarray,
    label: np.ndarray,
    margin: np.ndarray,
    given_gap: np.ndarray,
    reviewed: np.ndarray,
) -> ItemReview:
    """The rules above, for (n,) given labels and (n, M) per-modality evidence; O(n M^2), no loop over items."""
    differ = reviewed & (label != given[:, None])
    with np.errstate(invalid="ignore"):
        evidence = np.where(reviewed, differ + np.nan_to_num(given_gap), 0.0).sum(axis=1) / reviewed.sum(axis=1)
    suggested, votes = _best(label, differ, np.where(np.isnan(margin), -np.inf, margin), reviewed, count_votes=True)
    base_differ = reviewed & (base_label != given[:, None])
    by_base, _ = _best(base_label, base_differ, np.nan_to_num(given_gap), reviewed, count_votes=False)
    from_base = suggested < 0
    suggested[from_base] = by_base[from_base]
    return ItemReview(evidence, suggested, np.where(from_base, 0, votes))


def _best(
    labels: np.ndarray, eligible: np.ndarray, strength: np.ndarray, reviewed: np.ndarray, *, count_votes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the eligible label with most votes (if counted), then most strength, then lowest index."""
    n, n_modalities = labels.shape
    best = np.full(n, -1, dtype=np.int64)
    best_votes = np.full(n, -1, dtype=np.int64)
    best_strength = np.full(n, -np.inf)
    for j in range(n_modalities):
        same = reviewed & (labels == labels[:, j : j + 1])
        votes = same.sum(axis=1) if count_votes else np.zeros(n, dtype=np.int64)
        top = np.where(same, strength, -np.inf).max(axis=1)
        better = eligible[:, j] & (
            (votes > best_votes)
            | ((votes == best_votes) & (top > best_strength))
            | ((votes == best_votes) & (top == best_strength) & (labels[:, j] < best))
        )
        best = np.where(better, labels[:, j], best)
        best_votes = np.where(better, votes, best_votes)
        best_strength = np.where(better, top, best_strength)
    return best, best_votes
