import numpy as np
import pytest
from scipy import stats
from scipy.special import softmax
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from sklearn.metrics.pairwise import cosine_similarity

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
    assert large == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 3000), rel=0.2)  # normal approximation


def test_fidelity_figures() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    assert metrics.sqnr_db(a, a) == float("inf")
    assert metrics.sqnr_db(a, a + 0.01 * a) == pytest.approx(40.0, abs=0.01)
    assert metrics.sqnr_db(a, a + 0.1 * b) == pytest.approx(20.0, abs=1.0)  # noise 1/100 of the power
    assert metrics.kl_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    p, q = softmax(a, axis=-1), softmax(b, axis=-1)
    assert metrics.kl_divergence(a, b) == pytest.approx(float(np.mean(stats.entropy(p, q, axis=-1))))
    assert metrics.kl_divergence(a, b) != pytest.approx(metrics.kl_divergence(b, a))  # direction matters
    assert np.allclose(metrics.cosine_rows(a, 2 * a), 1.0) and np.allclose(metrics.cosine_rows(a, -a), -1.0)
    assert np.allclose(metrics.cosine_rows(a, b), np.diag(cosine_similarity(a, b)))
    figures = metrics.fidelity(
        {"logits": a, "sentence_embedding": a}, {"logits": b, "sentence_embedding": -a}
    )
    assert figures["logits"]["top1_agreement"] == pytest.approx(np.mean(a.argmax(-1) == b.argmax(-1)))
    assert figures["logits"]["top1_agreement"] < 0.5 and figures["sentence_embedding"][
        "cosine_mean"
    ] == pytest.approx(-1.0)


def test_ratio_ci_pairs_interleaved_runs() -> None:
    from edgeslim import bench

    rng = np.random.default_rng(0)
    load = rng.lognormal(0.0, 0.5, 200)  # machine load shared by run i of both models
    a = 2.0 * load * rng.normal(1.0, 0.01, 200)
    b = 4.0 * load * rng.normal(1.0, 0.01, 200)
    ratio, low, high = bench.ratio_ci(a, b)
    assert low <= ratio <= high and low <= 0.5 <= high
    assert high - low < 0.04  # paired: the shared load cancels (independent resampling: ~0.14)
    _, low_u, high_u = bench.ratio_ci(a, b[:-1])  # unequal counts: resampled independently
    assert high_u - low_u > 3 * (high - low)
    with pytest.raises(ValueError, match="equal lengths"):
        metrics.bootstrap_ci(metrics.accuracy, a, b[:-1])
