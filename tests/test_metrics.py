import numpy as np
import pytest

from pairwise_core import accuracy, agreement_f1, class_shares, cohen_kappa, confusion_matrix, f1_weighted

# hand-computed case:
#   true 0 0 1 1 2 / pred 0 1 1 1 0
#   class 0: tp 1, support 2, predicted 2 -> F1 0.5
#   class 1: tp 2, support 2, predicted 3 -> F1 0.8
#   class 2: tp 0, support 1, predicted 0 -> F1 0
#   weighted F1 = (0.5*2 + 0.8*2 + 0*1) / 5 = 0.52; accuracy 3/5
#   kappa: p_o = 0.6, p_e = (2*2 + 2*3 + 1*0) / 25 = 0.4 -> 0.2 / 0.6 = 1/3
TRUE = np.array([0, 0, 1, 1, 2])
PRED = np.array([0, 1, 1, 1, 0])


def test_confusion_matrix_by_hand():
    np.testing.assert_array_equal(confusion_matrix(TRUE, PRED), [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert confusion_matrix(TRUE, PRED, n_classes=4).shape == (4, 4)


def test_weighted_f1_accuracy_and_kappa_by_hand():
    assert f1_weighted(TRUE, PRED) == pytest.approx(0.52)
    assert accuracy(TRUE, PRED) == pytest.approx(0.6)
    assert cohen_kappa(TRUE, PRED) == pytest.approx(1 / 3)


def test_agreement_weights_by_the_second_modality():
    # the F1 of labels_a against labels_b: b plays the reference
    assert agreement_f1(PRED, TRUE) == pytest.approx(0.52)
    # other way round: class 0 F1 0.5 (w 2), class 1 0.8 (w 3), class 2 0 (w 0) -> 3.4 / 5
    assert agreement_f1(TRUE, PRED) == pytest.approx(0.68)


def test_perfect_and_one_class_agreement():
    assert agreement_f1(TRUE, TRUE) == 1.0 and cohen_kappa(TRUE, TRUE) == 1.0
    ones = np.zeros(5, dtype=int)
    # everything in one class agrees perfectly: why class shares are reported beside it
    assert agreement_f1(ones, ones) == 1.0
    np.testing.assert_allclose(class_shares(ones, 3), [1.0, 0.0, 0.0])


def test_metrics_reject_bad_labels():
    with pytest.raises(ValueError, match="differ in length"):
        accuracy(TRUE, PRED[:3])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="negative"):
        accuracy([0, -1], [0, 1])
    with pytest.raises(ValueError, match="must be < n_classes"):
        confusion_matrix(TRUE, PRED, n_classes=2)
