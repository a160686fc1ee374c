"""Stop trials that cannot win, with Tune's own schedulers, on a per-epoch pretraining metric.

    python studies/sigma_grid.py --search optuna --num-samples 20 --scheduler asha
    python studies/sigma_grid.py --search random --num-samples 20 --scheduler median

The searcher keeps the study's final metric (`eval/<ds>/top1`, reported once at the end of a trial); the
scheduler reads `PRUNE_METRIC`, reported after every pretraining epoch, against `global_epoch` (the trial's
epoch counter across stages, the same for every trial, so a trial that reuses the branch stages is compared at
the same point of its joint pretraining as one that computed them; ASHA counts its rungs from the first joint
epoch, `JointEpochASHA`). Both are passed their own metric and mode
(TuneConfig sets neither), which Tune allows. A stopped trial's MLflow run ends KILLED with the tag
`csvr.pruned=true` (`mark_pruned`), not FAILED.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule
from ray.tune.search.optuna import OptunaSearch

from csvr.config import Config
from trainables import tracking
from trainables.csvr_trainable import GlobalSteps, RUN_FILE

# The pruning signal, one name: the per-epoch k-NN probe of the pretraining stages (csvr.pipeline.probe_metrics,
# reported every `eval.probe_every` epochs: set it to 1 for the scheduler to see every joint epoch).
PRUNE_METRIC, PRUNE_MODE = "probe/{kind}/knn_top1", "max"
SCHEDULERS = ("fifo", "asha", "median")
TIME_ATTR = "global_epoch"
JOINT_EPOCH = "joint_epoch"  # ASHA's time: TIME_ATTR minus the epochs before the joint stage
PRUNED_TAG = "csvr.pruned"


def prune_metric(cfg: Config) -> str:
    kind = cfg.data.source.split(":", 1)[0].lower()
    return PRUNE_METRIC.format(kind=kind)


def joint_window(cfg: Config) -> tuple[int, int]:
    """(first, last) global epoch of the joint pretraining: the span the scheduler compares trials over."""
    start = GlobalSteps(cfg)("joint", 0)
    return start + 1, start + cfg.train.joint_epochs


class JointEpochASHA(ASHAScheduler):
    """ASHA with rungs counted in joint-pretraining epochs: 1, 2, 4, ... (grace period 1, reduction factor 2)
    up to `train.joint_epochs`. Each result's `global_epoch` is shifted by the epochs before the joint stage
    (`offset`) into JOINT_EPOCH; branch-stage results fall below the first rung and are ignored. ASHA on
    `global_epoch` itself put its rungs at grace * 2^k global epochs (4 and 8 for 1 + 1 + 1 branch epochs), i.e.
    at joint epochs 1 and 5 only. The comparison point is still the same for every trial, whichever trial
    computed the shared branch stages."""

    def __init__(self, offset: int, **kwargs: Any):
        super().__init__(time_attr=JOINT_EPOCH, **kwargs)
        self.offset = offset

    def _joint(self, result: dict) -> dict:
        return {**result, JOINT_EPOCH: result[TIME_ATTR] - self.offset} if TIME_ATTR in result else result

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return super().on_trial_result(tune_controller, trial, self._joint(result))

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, self._joint(result))


def make_scheduler(name: str, cfg: Config, reduction_factor: int = 2, grace_period: int = 1) -> Any:
    """None for fifo (Tune's default); ASHA or median stopping on PRUNE_METRIC over the joint epochs
    (`grace_period` joint epochs before the first stop)."""
    if name == "fifo":
        return None
    first, last = joint_window(cfg)
    # results without the metric (finetuning epochs, the final result) are allowed: the scheduler skips them
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    common = {"metric": prune_metric(cfg), "mode": PRUNE_MODE}
    if name == "asha":
        # stop_last_trials=False: a trial past the joint epochs goes on to finetune and evaluate (ASHA's default
        # would stop every trial at max_t, before the searcher's metric exists)
        return JointEpochASHA(first - 1, **common, max_t=cfg.train.joint_epochs, grace_period=grace_period,
                              reduction_factor=reduction_factor, stop_last_trials=False)
    if name == "median":
        return MedianStoppingRule(**common, time_attr=TIME_ATTR, grace_period=first - 1 + grace_period,
                                  min_samples_required=2)
    raise ValueError(f"unknown scheduler {name!r}; one of {', '.join(SCHEDULERS)}")


class FinalMetricOptuna(OptunaSearch):
    """OptunaSearch told only the trial's final metric, and told a stopped trial as PRUNED.

    Every epoch report carries the metric as NaN (Tune's OptunaSearch indexes it in each result) and OptunaSearch
    passes each result to `optuna.Trial.report`, which stored NaN as an intermediate value; non-finite ones are
    dropped here (no Optuna pruner reads them: pruning is Tune's scheduler, on the probe). At the end, a trial the
    scheduler stopped has NaN as its last metric: Tune's OptunaSearch told Optuna COMPLETE with NaN, which Optuna
    refused (the log line "The value nan is not acceptable"), leaving the Optuna trial RUNNING for good; a diverged
    trial the same. Here a stopped trial is told PRUNED (what Tune's OptunaSearch does for a result without the
    metric), a diverged (`trial_failed`) or errored one FAIL, a finished one COMPLETE."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric) if isinstance(self.metric, str) else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
        if isinstance(value, float) and not math.isfinite(value):
            error = error or bool(result.get("trial_failed"))
            result = {k: v for k, v in result.items() if k != self.metric}  # no metric: PRUNED, or FAIL if error
        super().on_trial_complete(trial_id, result, error)


def was_pruned(result) -> bool:
    """A trial the scheduler stopped: no error, and its last result is not the trial's final one (which always
    carries compute_seconds, or trial_failed for a diverged trial). Tune marks a stopped trial's result done."""
    metrics = result.metrics or {}
    return result.error is None and "compute_seconds" not in metrics and not metrics.get("trial_failed")


def mark_pruned(client, results, run_dir: Path) -> int:
    """End the MLflow run of each pruned trial KILLED with csvr.pruned=true (before dead runs are closed)."""
    count = 0
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id", "")
        run_file = Path(run_dir) / "trials" / str(trial_id) / RUN_FILE
        if not was_pruned(result) or not run_file.is_file():
            continue
        run_id = json.loads(run_file.read_text())["run_id"]
        epoch = (result.metrics or {}).get(TIME_ATTR)
        tracking.retry(client.set_tag, run_id, PRUNED_TAG, "true")
        tracking.retry(client.set_tag, run_id, "csvr.pruned_at_epoch", str(epoch))
        tracking.retry(client.set_terminated, run_id, "KILLED")
        count += 1
    return count
