import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from edgeslim import metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gold, pred = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    pred[:150] = gold[:150]
    assert metrics.accuracy(gold, pred) == pytest.approx(accuracy_score(gold, pred))
    assert metrics.macro_f1(gold, pred) == pytest.approx(f1_score(gold, pred, average="macro"))
    assert metrics.mcc(gold, pred) == pytest.approx(matthews_corrcoef(gold, pred))


def test_correlations_match_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 200).astype(float)  # many ties
    y = x + rng.normal(0, 2, 200)
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])


def test_bootstrap_ci_contains_value_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)

    def width(n: int) -> float:
        gold = rng.integers(0, 2, n)
        pred = np.where(rng.random(n) < 0.8, gold, 1 - gold)
        low, high = metrics.bootstrap_ci(metrics.accuracy, gold, pred)
        assert low <= metrics.accuracy(gold, pred) <= high
        return high - low

    small, large = width(100), width(3000)
    assert large < small / 3  # ~1/sqrt(n): 5.5x narrower expected


def test_fidelity_figures() -> None:
    a = np.random.default_rng(0).normal(size=(50, 8))
    assert metrics.sqnr_db(a, a) == float("inf")
    assert metrics.sqnr_db(a, a + 0.01 * a) == pytest.approx(40.0, abs=0.01)
    assert metrics.kl_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(metrics.cosine_rows(a, 2 * a), 1.0)
