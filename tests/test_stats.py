"""analysis/stats.py against hand-computed intervals, and the per-video artifact the one-seed intervals read.

    python -m pytest tests/test_stats.py -q
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.stats import (MAX_SEEDS, bootstrap_accuracy, paired_bootstrap, paired_difference, seeds_needed,
                            t_interval)

T_975_2 = 4.302652729911275  # t_{0.975, 2}, from a printed t table
T_975_1 = 12.706204736174705  # t_{0.975, 1}


def test_t_interval_by_hand():
    iv = t_interval([1.0, 2.0, 3.0])
    half = T_975_2 * 1.0 / math.sqrt(3)  # s = 1, sem = s / sqrt(n)
    assert (iv.mean, iv.n, iv.method) == (2.0, 3, "t")
    assert iv.low == pytest.approx(2.0 - half) and iv.high == pytest.approx(2.0 + half)
    assert iv.low == pytest.approx(-0.4841, abs=1e-4) and not iv.excludes_zero


def test_t_interval_two_values_and_edge_cases():
    iv = t_interval([80.0, 84.0])  # s = 2*sqrt(2), sem = 2
    assert iv.low == pytest.approx(82 - T_975_1 * 2) and iv.high == pytest.approx(82 + T_975_1 * 2)
    one = t_interval([66.7])
    assert one.low is None and one.method == "none" and one.mean == 66.7
    same = t_interval([5.0, 5.0, 5.0])
    assert (same.low, same.high) == (5.0, 5.0)
    with pytest.raises(ValueError):
        t_interval([])


def test_paired_difference_by_hand():
    values, reference = {0: 82.0, 1: 85.0, 2: 80.0, 3: 70.0}, {0: 80.0, 1: 81.0, 2: 79.0}
    iv = paired_difference(values, reference)  # seed 3 has no partner: differences 2, 4, 1
    sd = math.sqrt(((2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2 + (1 - 7 / 3) ** 2) / 2)
    half = T_975_2 * sd / math.sqrt(3)
    assert iv.n == 3 and iv.mean == pytest.approx(7 / 3)
    assert (iv.low, iv.high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert not iv.excludes_zero  # 2.33 +- 3.79
    assert paired_difference({0: 1.0}, {1: 2.0}) is None
    clear = paired_difference({0: 90.0, 1: 91.0, 2: 92.0}, {0: 80.0, 1: 80.5, 2: 81.5})
    assert clear.excludes_zero and clear.low > 0


def test_bootstrap_accuracy_over_videos():
    correct = [1] * 9 + [0] * 9  # 18 test videos, 50 %
    iv = bootstrap_accuracy(correct)
    assert iv.mean == pytest.approx(50.0) and iv.method == "bootstrap" and iv.n == 1
    se = 100 * math.sqrt(0.25 / 18)  # binomial standard error: the bootstrap should be close to +-1.96 se
    assert iv.low == pytest.approx(50 - 1.96 * se, abs=4.0) and iv.high == pytest.approx(50 + 1.96 * se, abs=4.0)
    assert bootstrap_accuracy(correct) == iv  # reproducible
    perfect = bootstrap_accuracy([1] * 18)
    assert (perfect.mean, perfect.low, perfect.high) == (100.0, 100.0, 100.0)


def test_paired_bootstrap_resamples_videos_in_pairs():
    a = np.array([1, 1, 1, 1, 0, 1] * 5)
    b = np.array([0, 1, 1, 0, 0, 1] * 5)  # a is right wherever b is, and on 10 more videos
    iv = paired_bootstrap(a, b)
    assert iv.mean == pytest.approx(100 * 10 / 30)
    assert iv.excludes_zero  # paired: the difference is never negative on any resample
    same = paired_bootstrap(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:-1])


def test_seeds_needed_matches_statsmodels_power():
    from statsmodels.stats.power import TTestPower

    n = seeds_needed(difference=2.0, sd=3.0)
    power = lambda k: TTestPower().power(effect_size=2 / 3, nobs=k, alpha=0.05, alternative="two-sided")
    assert power(n) >= 0.8 > power(n - 1)
    assert n == 20  # normal approximation (1.96 + 0.84)^2 / (2/3)^2 = 17.6, plus the t correction
    assert seeds_needed(difference=-2.0, sd=3.0) == n  # the sign does not matter
    assert seeds_needed(10.0, 0.5) == 2
    assert seeds_needed(0.01, 3.0) == MAX_SEEDS + 1
    assert seeds_needed(1.0, 0.0) == 2 and seeds_needed(0.0, 1.0) is None and seeds_needed(1.0, None) is None


def test_per_video_artifact_and_confusion(tmp_path):
    from csvr import reports

    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])
    labels = torch.tensor([0, 1, 2, 2])
    classes = [{"index": i, "name": n, "group": None} for i, n in enumerate(["a", "b", "c"])]
    rec = {"top1": 0.75, "per_class": np.array([1.0, 1.0, 0.5]), "support": np.array([1, 1, 2]),
           "confusion": np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])}
    files = reports.write_eval_artifacts(tmp_path, rec, {"retrieval_r1": 0.5}, classes, probs, labels)
    assert {p.name for p in files} == {"per_class.csv", "per_video.csv", "confusion.png", "retrieval.json"}
    per_video = pd.read_csv(tmp_path / "per_video.csv")
    assert list(per_video.columns) == ["video", "label", "prediction", "correct", "confidence"]
    assert per_video["video"].tolist() == [0, 1, 2, 3] and per_video["prediction"].tolist() == [0, 1, 0, 2]
    assert per_video["correct"].tolist() == [1, 1, 0, 1] and per_video["correct"].mean() == rec["top1"]
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    # with per-query retrieval hits, R@k gets its per-video column too (what a one-seed R@k cell bootstraps over)
    hits = {"retrieval_r1": torch.tensor([1.0, 0.0, 1.0, 0.0]), "retrieval_r5": torch.ones(4)}
    reports.write_eval_artifacts(tmp_path, rec, {"retrieval_r1": 0.5, "retrieval_r5": 1.0}, classes, probs, labels, hits)
    per_video = pd.read_csv(tmp_path / "per_video.csv")
    assert per_video["retrieval_r1"].tolist() == [1, 0, 1, 0] and per_video["retrieval_r5"].mean() == 1.0
