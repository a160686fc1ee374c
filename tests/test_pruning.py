"""--scheduler: Tune's ASHA / median stopping on the per-epoch pretraining metric while Optuna keeps the final
metric; a pruned trial's MLflow run ends KILLED with csvr.pruned=true, not FAILED."""
from __future__ import annotations

import importlib
import json
import math

import pytest

from csvr.config import apply_overrides, tiny
from trainables import pruning
from trainables.csvr_trainable import RUN_FILE, GlobalSteps
from trainables.study import parse_args

SIGMA = importlib.import_module("studies.sigma_grid").STUDY
TARGET = "eval/synthetic/top1"


def test_scheduler_reads_the_probe_over_the_joint_epochs():
    cfg = apply_overrides(tiny(), {"train.joint_epochs": 8})
    first, last = pruning.joint_window(cfg)
    assert (first, last) == (GlobalSteps(cfg)("joint", 1), GlobalSteps(cfg)("joint", 8))
    asha = pruning.make_scheduler("asha", cfg)
    assert (asha._metric, asha._time_attr, asha._max_t) == (pruning.prune_metric(cfg), pruning.JOINT_EPOCH, 8)
    assert asha.offset == first - 1
    assert [milestone for milestone, _ in asha._brackets[0]._rungs] == [8, 4, 2, 1]  # joint epochs, not global
    assert not asha._stop_last_trials  # trials that survive the joint epochs still finetune and evaluate
    assert asha._metric != TARGET  # the searcher's metric stays the downstream top-1
    assert pruning.make_scheduler("fifo", cfg) is None
    median = pruning.make_scheduler("median", cfg)
    assert (median._metric, median._grace_period) == (pruning.prune_metric(cfg), first)


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def test_asha_stops_at_the_first_joint_epoch_not_during_branch_pretraining():
    """Results from branch epochs (global epochs before the joint stage) never stop a trial; at joint epoch 1 a
    trial whose probe is below the rung's cutoff stops, and again at joint epoch 2 (ASHA on the raw global epoch
    had its rungs at global epochs grace * 2^k: joint epochs 1 and 6 here)."""
    from ray.tune.schedulers import TrialScheduler

    cfg = apply_overrides(tiny(), {"train.pose_epochs": 2, "train.context_epochs": 1, "train.video_epochs": 1,
                                   "train.joint_epochs": 8})
    asha, metric = pruning.make_scheduler("asha", cfg), pruning.prune_metric(cfg)
    first = pruning.joint_window(cfg)[0]
    good, bad, late = _Trial("good"), _Trial("bad"), _Trial("late")
    for trial in (good, bad, late):
        asha.on_trial_add(None, trial)
    for epoch in range(1, first):  # branch epochs: a low probe there is no reason to stop
        assert asha.on_trial_result(None, bad, {"global_epoch": epoch, metric: 0.0}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, good, {"global_epoch": first, metric: 0.6}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, bad, {"global_epoch": first, metric: 0.3}) == TrialScheduler.STOP
    assert asha.on_trial_result(None, late, {"global_epoch": first, metric: 0.7}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, good, {"global_epoch": first + 1, metric: 0.6}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, late, {"global_epoch": first + 1, metric: 0.4}) == TrialScheduler.STOP


def test_optuna_is_told_only_finite_metrics():
    """Epoch reports carry the final metric as NaN; the searcher drops them (Optuna stored them as intermediate
    values) and keeps finite values."""
    from ray import tune

    search = pruning.FinalMetricOptuna(space={"loss.sigma_p": tune.uniform(0.5, 1.25)}, metric=TARGET, mode="max",
                                       seed=0)
    search.suggest("t1")
    search.on_trial_result("t1", {TARGET: math.nan, "training_iteration": 1, "global_epoch": 1})
    search.on_trial_result("t1", {TARGET: 0.5, "training_iteration": 2, "global_epoch": 2})
    assert search._ot_study.trials[0].intermediate_values == {2: 0.5}


def test_optuna_records_stopped_trials_as_pruned():
    """A trial the scheduler stopped ends with NaN as its metric: PRUNED in Optuna (Tune's OptunaSearch told it
    COMPLETE with NaN, Optuna logged "The value nan is not acceptable" and left it RUNNING); a diverged trial FAIL;
    a finished one COMPLETE."""
    from optuna.trial import TrialState
    from ray import tune

    search = pruning.FinalMetricOptuna(space={"loss.sigma_p": tune.uniform(0.5, 1.25)}, metric=TARGET, mode="max",
                                       seed=0)
    for trial_id in ("stopped", "diverged", "finished"):
        search.suggest(trial_id)
    search.on_trial_complete("stopped", {TARGET: math.nan, "global_epoch": 5})
    search.on_trial_complete("diverged", {TARGET: math.nan, "trial_failed": 1.0})
    search.on_trial_complete("finished", {TARGET: 0.5, "compute_seconds": 1.0})
    trials = search._ot_study.trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].value == 0.5


def test_scheduler_needs_a_search():
    assert parse_args(SIGMA, ["--search", "optuna", "--scheduler", "asha"]).scheduler == "asha"
    assert parse_args(SIGMA, ["--search", "random", "--scheduler", "median"]).search == "random"
    with pytest.raises(SystemExit):
        parse_args(SIGMA, ["--scheduler", "asha"])  # a grid runs every cell


def _trial(config: dict) -> None:
    """Stand-in trainable: `quality` sets the per-epoch probe; the top-1 comes only with the final result."""
    from ray import tune

    for epoch in range(1, 9):
        tune.report({"global_epoch": epoch, "probe/synthetic/knn_top1": config["quality"] * epoch, TARGET: math.nan})
    tune.report({"global_epoch": 9, TARGET: config["quality"], "compute_seconds": 1.0})


@pytest.mark.slow
def test_asha_prunes_with_optuna_on_another_metric(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from mlflow import MlflowClient
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    if ray.is_initialized():
        pytest.skip("needs its own local Ray")
    # the final result carries no probe metric: allowed, as make_scheduler allows it (the test no longer depends
    # on an earlier test having called make_scheduler in this process)
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        asha = ASHAScheduler(time_attr="global_epoch", metric=pruning.PRUNE_METRIC.format(kind="synthetic"),
                             mode="max", max_t=8,
                             grace_period=1, reduction_factor=2, stop_last_trials=False)
        tuner = tune.Tuner(_trial, param_space={"quality": tune.uniform(0.0, 1.0)},
                           # reuse_actors: the 8 stand-in trials share one worker process (~1 s less per trial)
                           tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric=TARGET, mode="max", seed=0),
                                                       scheduler=asha, num_samples=8, max_concurrent_trials=1,
                                                       reuse_actors=True),
                           run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0))
        results = tuner.fit()
    finally:
        ray.shutdown()
    pruned = [r for r in results if pruning.was_pruned(r)]
    finished = [r for r in results if not pruning.was_pruned(r)]
    assert pruned and finished and all(r.error is None for r in results)
    best = max(r.config["quality"] for r in results)
    assert max(r.metrics[TARGET] for r in finished) == best  # the best trial was never pruned
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("t")
    run_dir = tmp_path / "run"
    for r in results:
        workdir = run_dir / "trials" / r.metrics["trial_id"]
        workdir.mkdir(parents=True)
        (workdir / RUN_FILE).write_text(json.dumps({"run_id": client.create_run(exp).info.run_id}))
    assert pruning.mark_pruned(client, results, run_dir) == len(pruned)
    for r in results:
        run_id = json.loads((run_dir / "trials" / r.metrics["trial_id"] / RUN_FILE).read_text())["run_id"]
        run = client.get_run(run_id)
        assert (run.data.tags.get(pruning.PRUNED_TAG) == "true") == pruning.was_pruned(r)
        assert run.info.status == ("KILLED" if pruning.was_pruned(r) else "RUNNING")
