"""Stop trials that cannot win, with Tune's own schedulers, on a per-epoch pretraining metric.

    python studies/sigma_grid.py --search optuna --num-samples 20 --scheduler asha
    python studies/sigma_grid.py --search random --num-samples 20 --scheduler median

The searcher keeps the study's final metric (`eval/<ds>/top1`, reported once at the end of a trial); the
scheduler reads `PRUNE_METRIC`, reported after every pretraining epoch, against `global_epoch` (the trial's
epoch counter across stages, the same for every trial, so a trial that reuses the branch stages is compared at
the same point of its joint pretraining as one that computed them). Both are passed their own metric and mode
(TuneConfig sets neither), which Tune allows. A stopped trial's MLflow run ends KILLED with the tag
`csvr.pruned=true` (`mark_pruned`), not FAILED.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from csvr.config import Config
from trainables import tracking
from trainables.csvr_trainable import GlobalSteps, RUN_FILE

# The pruning signal, one name: the per-epoch k-NN probe of the pretraining stages (csvr.pipeline.probe_metrics,
# reported every `eval.probe_every` epochs: set it to 1 for the scheduler to see every joint epoch).
PRUNE_METRIC, PRUNE_MODE = "probe/{kind}/knn_top1", "max"
SCHEDULERS = ("fifo", "asha", "median")
TIME_ATTR = "global_epoch"
PRUNED_TAG = "csvr.pruned"


def prune_metric(cfg: Config) -> str:
    kind = cfg.data.source.split(":", 1)[0].lower()
    return PRUNE_METRIC.format(kind=kind)


def joint_window(cfg: Config) -> tuple[int, int]:
    """(first, last) global epoch of the joint pretraining: the span the scheduler compares trials over."""
    start = GlobalSteps(cfg)("joint", 0)
    return start + 1, start + cfg.train.joint_epochs


def make_scheduler(name: str, cfg: Config, reduction_factor: int = 2) -> Any:
    """None for fifo (Tune's default); ASHA or median stopping on PRUNE_METRIC over the joint epochs."""
    if name == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    first, last = joint_window(cfg)
    # results without the metric (finetuning epochs, the final result) are allowed: the scheduler skips them
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    common = {"time_attr": TIME_ATTR, "metric": prune_metric(cfg), "mode": PRUNE_MODE}
    if name == "asha":
        # stop_last_trials=False: a trial past the joint epochs goes on to finetune and evaluate (ASHA's default
        # would stop every trial at max_t, before the searcher's metric exists)
        return ASHAScheduler(**common, max_t=last, grace_period=first, reduction_factor=reduction_factor,
                             stop_last_trials=False)
    if name == "median":
        return MedianStoppingRule(**common, grace_period=first, min_samples_required=2)
    raise ValueError(f"unknown scheduler {name!r}; one of {', '.join(SCHEDULERS)}")


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
