"""Uncertainty for tables and figures, from kept libraries only (scipy.stats, statsmodels).

    from analysis.stats import t_interval, bootstrap_accuracy, paired_difference, seeds_needed
    t_interval([1.0, 2.0, 3.0])            # Interval(mean=2.0, low=-0.48, high=4.48, n=3, method="t")
    bootstrap_accuracy([1, 0, 1, 1])       # one seed: resample the test videos (percent)
    paired_difference({0: 82, 1: 85}, {0: 80, 1: 81})       # paired by seed
    seeds_needed(difference=2.0, sd=3.0)   # seeds for 80 % power at alpha 0.05 (paired t-test)

- Over seeds: Student's t interval, scipy.stats.t.interval(level, n - 1, mean, sem).
- One seed: a percentile bootstrap over the test videos (scipy.stats.bootstrap), from the run's
  per-video predictions (eval/<dataset>/per_video.csv); the interval then covers test-set sampling only,
  not the seed-to-seed variation of training.
- A difference against a reference: paired by seed (the t interval of the per-seed differences), or with
  one seed each, a paired bootstrap over the same test videos.
- Seeds needed: statsmodels' power of the one-sample t-test on the per-seed differences.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # intervals are reproducible from the same runs
ALPHA, POWER = 0.05, 0.8
MAX_SEEDS = 1000  # "more than this": a difference this small is not worth resolving with seeds


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None  # None: no interval (one seed and no per-video predictions)
    high: float | None
    n: int  # seeds (or paired seeds) the mean is over
    method: str  # "t" (over seeds) | "bootstrap" (over test videos, one seed) | "none"

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and the t interval over `values` (seeds); one value has no interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("t_interval of no values")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, None, None, int(x.size), "none")
    sem = float(stats.sem(x))
    if sem == 0.0:  # identical values: scipy returns nan for a zero scale
        return Interval(mean, mean, mean, int(x.size), "t")
    low, high = stats.t.interval(level, x.size - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), int(x.size), "t")


def _bootstrap(data: tuple[np.ndarray, ...], statistic, paired: bool, level: float) -> tuple[float, float]:
    if all(np.all(d == d[0]) for d in data):  # nothing to resample: the statistic is fixed
        value = float(statistic(*data, axis=-1))
        return value, value
    res = stats.bootstrap(data, statistic, paired=paired, vectorized=True, confidence_level=level,
                          n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                          random_state=np.random.default_rng(BOOTSTRAP_SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def bootstrap_accuracy(correct: Sequence[float], level: float = LEVEL, scale: float = 100.0) -> Interval:
    """Accuracy (x scale) of one run and its bootstrap interval over the test videos (1 = correct)."""
    x = np.asarray(correct, dtype=float) * scale
    if x.size == 0:
        raise ValueError("bootstrap_accuracy of no videos")
    low, high = _bootstrap((x,), _mean, paired=False, level=level)
    return Interval(float(x.mean()), low, high, 1, "bootstrap")


def _diff_of_means(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def paired_bootstrap(correct_a: Sequence[float], correct_b: Sequence[float], level: float = LEVEL,
                     scale: float = 100.0) -> Interval:
    """accuracy(a) - accuracy(b) over the same test videos (same order), resampling videos in pairs."""
    a, b = (np.asarray(v, dtype=float) * scale for v in (correct_a, correct_b))
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_bootstrap needs the same videos: {a.shape} vs {b.shape}")
    low, high = _bootstrap((a, b), _diff_of_means, paired=True, level=level)
    return Interval(float(a.mean() - b.mean()), low, high, 1, "bootstrap")


def paired_difference(values: Mapping, reference: Mapping, level: float = LEVEL) -> Interval | None:
    """values[seed] - reference[seed] over the seeds both have: mean and t interval; None without one."""
    seeds = [s for s in values if s in reference]
    if not seeds:
        return None
    return t_interval([values[s] - reference[s] for s in seeds], level)


def seeds_needed(difference: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seeds (paired with the reference) for a two-sided paired t-test at `alpha` to detect `difference`
    with `power`, when per-seed differences vary with standard deviation `sd`. None: no difference to
    detect (0) or no noise estimate (sd None); MAX_SEEDS + 1: more than MAX_SEEDS."""
    if sd is None or not math.isfinite(sd) or not difference:
        return None
    if sd == 0:  # no noise at all: the smallest paired sample resolves any difference
        return 2
    nobs = np.arange(2, MAX_SEEDS + 1)
    reached = np.flatnonzero(t_test_power(abs(difference) / sd, nobs, alpha) >= power)
    return int(nobs[reached[0]]) if reached.size else MAX_SEEDS + 1


def t_test_power(effect: float, nobs: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Power of the two-sided one-sample (paired) t-test for each sample size (statsmodels). Where its
    noncentral t gives NaN (very large effects), the upper tail alone (scipy's nct), the lower being ~0."""
    from statsmodels.stats.power import TTestPower

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = np.asarray(TTestPower().power(effect_size=effect, nobs=nobs, alpha=alpha, alternative="two-sided"),
                         dtype=float)
        bad = ~np.isfinite(out)
        df = nobs[bad] - 1
        out[bad] = stats.nct.sf(stats.t.ppf(1 - alpha / 2, df), df, effect * np.sqrt(nobs[bad]))
    return out
