"""Study files, the Ray Tune trainable and MLflow tracking.

    pytest tests/test_studies.py              # ~1 minute on 2 cores (the slow test runs real Ray + MLflow)
    pytest tests/test_studies.py -m "not slow"

The slow test runs `python studies/sigma_grid.py --smoke` as a subprocess (cwd = a tmp folder, so the
default sqlite MLflow store and `csvr_runs` storage land there) and reads the MLflow store back.
Failed trials and Optuna resumes: tests/test_faults.py (the same study subprocess under injected faults).
"""
from __future__ import annotations

import importlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from csvr.config import apply_overrides, keys, preset, tiny
from trainables.csvr_trainable import FAULT_ENV, GlobalSteps
from trainables.study import SMOKE, StudySpec, base_overrides, check_keys, grid_of, main, parse_args

REPO = Path(__file__).resolve().parents[1]
STUDIES = ["sigma_grid", "feature_source", "pretext_correlation", "encoder_layer", "context_loss",
           "generation_target", "backbones", "fi_levels"]
TARGET = "eval/synthetic/top1"


# ---------------------------------------------------------------------------------------------
# fast: declarations and CLI


@pytest.mark.parametrize("name", STUDIES)
def test_study_file_varies_only_config_fields(name):
    study = importlib.import_module(f"studies.{name}").STUDY
    assert isinstance(study, StudySpec) and study.name == name
    valid = set(keys())
    for key in [*study.grid, *study.smoke_grid, *study.search_space, *study.base, *study.smoke_base]:
        assert key in valid, key
    assert set(study.smoke_grid) <= set(study.grid)
    check_keys(study)
    for smoke in (False, True):  # every grid point builds a valid config
        args = parse_args(study, ["--smoke"] if smoke else [])
        grid = grid_of(study, args)
        assert grid["train.seed"] == [0]
        base = base_overrides(study, args)
        for combo in itertools.product(*grid.values()):
            apply_overrides(apply_overrides(preset("tiny"), base), dict(zip(grid, combo)))


def test_pretext_correlation_shares_one_joint_run():
    study = importlib.import_module("studies.pretext_correlation").STUDY
    assert study.base["train.joint_epochs"] == 120
    assert set(study.grid["eval.pretrain_epoch"]) <= set(study.base["train.checkpoint_epochs"])
    assert set(study.smoke_grid["eval.pretrain_epoch"]) <= set(study.smoke_base["train.checkpoint_epochs"])


def test_cli_layers_overrides_and_seeds():
    study = importlib.import_module("studies.sigma_grid").STUDY
    args = parse_args(study, ["--smoke", "--seeds", "3", "--data", "ucf101:/d/u", "--finetune-data", "hmdb51:/d/h",
                              "--set", "model.width=4"])
    base = base_overrides(study, args)
    assert base["train.steps_per_epoch"] == SMOKE["train.steps_per_epoch"]
    assert base["data.source"] == "ucf101:/d/u" and base["data.finetune_sources"] == ("hmdb51:/d/h",)
    assert base["model.width"] == "4"
    assert grid_of(study, args) == {"loss.sigma_p": [0.75, 1.0], "loss.sigma_c": [0.75], "train.seed": [0, 1, 2]}
    with pytest.raises(ValueError, match="varies"):
        base_overrides(study, parse_args(study, ["--set", "loss.sigma_p=1.0"]))
    with pytest.raises(SystemExit):
        parse_args(study, ["--search", "optuna", "--seeds", "2"])
    assert grid_of(study, parse_args(study, ["--search", "optuna"])) == {}


def test_global_steps_are_the_same_on_every_attempt():
    cfg = apply_overrides(tiny(), {"train.pose_epochs": 1, "train.context_epochs": 1, "train.video_epochs": 1,
                                   "train.joint_epochs": 2, "finetune.epochs": 4})
    steps = GlobalSteps(cfg)
    assert [steps(s, 1) for s in ("pose", "context", "video", "joint")] == [1, 2, 3, 4]
    assert steps("joint", 2) == 5 and steps("finetune/synthetic", 1) == 6
    assert steps("is_classifier/synthetic", 1) == 10 and steps.total == 13
    assert GlobalSteps(cfg)("joint", 2) == steps("joint", 2)  # a new attempt maps epochs the same way


# ---------------------------------------------------------------------------------------------
# slow: the real thing, end to end


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("csvr_runs")


def run_study(cwd: Path, storage: Path, *args: str, fault: dict | None = None, timeout: int = 400):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = json.dumps(fault)
    cmd = [sys.executable, str(REPO / "studies" / "sigma_grid.py"), "--smoke", "--storage", str(storage), *args]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout


def trial_cfg(run):
    """The smoke config a trial ran with (preset tiny, SMOKE, its grid values)."""
    values = {k: run.data.params[k] for k in ("loss.sigma_p", "loss.sigma_c", "train.seed")}
    return apply_overrides(apply_overrides(preset("tiny"), SMOKE), values)


def assert_quiet_console(out: str, storage: Path) -> None:
    """One line per trial event and a short summary; Ray's and Tune's own output only in console.log."""
    lines = out.splitlines()
    assert len(lines) <= 25, out  # the 16-trial grid stays near 60 lines: ~2 per trial plus throttled progress
    assert sum(line.split("] ", 1)[-1].startswith("started") for line in lines) == 2
    assert sum(line.split("] ", 1)[-1].startswith("finished") for line in lines) == 2
    assert "trials done, elapsed" in out and "ETA" in out
    for noise in ("Checkpoint successfully created", "snapshotting", "Trial status", "Started a local Ray", "INFO"):
        assert noise not in out, noise
    run_dir = storage / "sigma_grid" / (storage / "sigma_grid" / "latest").read_text().strip()
    log = (run_dir / "console.log").read_text()
    assert "Checkpoint successfully created" in log and "started" in log  # all of it lands in the log
    assert "Experiment state snapshotting" not in log  # its cause (num_to_keep forcing snapshots) is gone


def mlflow_runs(cwd: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sigma_grid")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("csvr.role") == "study"]
    children = [r for r in runs if r.data.tags.get("csvr.role") == "trial"]
    return client, parents, children


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def assert_no_duplicate_steps(client, run) -> None:
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, steps)


@pytest.mark.slow
def test_sigma_grid_smoke_end_to_end(tmp_path, storage):
    # the sigma_p=1.0 trial fails once after its first epoch: Tune retries it from its checkpoint
    out = run_study(tmp_path, storage, fault={"match": {"loss.sigma_p": 1.0}, "after_epochs": 1, "attempts": 1})
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in out
    assert_quiet_console(out, storage)
    assert "retrying sigma_p=1 sigma_c=0.75 seed=0 from its last checkpoint" in out
    assert "python -m analysis.tables sigma_grid" in out and "Best by eval/synthetic/top1" in out
    client, parents, children = mlflow_runs(tmp_path)
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.tags["csvr.search"] == "grid"
    assert parent.data.metrics["study/trials_terminated"] == 2 and parent.data.metrics["study/trials_error"] == 0
    parent_files = artifact_paths(client, parent.info.run_id)
    assert {"summary.txt", "study/search.json", "tables/sigma_grid.md", "figures/sigma_grid_fig3_sigma_heatmap.png",
            "figures/sigma_grid_fig4_per_class_synthetic.png"} <= parent_files, parent_files
    assert "Fig. 3" in parent.data.tags["mlflow.note.content"] and "95 % CI" in parent.data.tags["mlflow.note.content"]
    search = json.loads(Path(client.download_artifacts(parent.info.run_id, "study/search.json",
                                                       str(tmp_path))).read_text())
    assert search["grid"]["loss.sigma_p"] == [0.75, 1.0] and search["search_space"]["loss.sigma_p"] == [0.5, 1.25]
    assert len(children) == 2  # one run per trial, the retried one included
    assert sorted(float(r.data.params["loss.sigma_p"]) for r in children) == [0.75, 1.0]
    for run in children:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert run.info.status == "FINISHED", tags.get("csvr.error")
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["csvr.study"] == "sigma_grid" and tags["csvr.dataset"] == "synthetic" and tags["csvr.trial_id"]
        assert tags["csvr.git_commit"] and tags["csvr.stage.joint"] in ("computed", "reused")
        assert run.info.run_name.startswith("sigma_p=") and "`loss.sigma_p` =" in tags["mlflow.note.content"]
        joint = client.get_metric_history(run.info.run_id, "train/joint/loss")  # one point per joint epoch,
        assert [m.step for m in joint] == [GlobalSteps(trial_cfg(run))("joint", 1)]  # step = epoch across stages
        assert set(params) == set(keys()) and params["loss.sigma_c"] == "0.75" and params["train.seed"] == "0"
        assert {TARGET, "eval/synthetic/retrieval_r1", "pretext/context_acc", "train/joint/loss"} <= set(metrics)
        assert_no_duplicate_steps(client, run)
        files = artifact_paths(client, run.info.run_id)
        assert {"config.json", "checkpoint.txt", "eval/synthetic/per_class.csv", "eval/synthetic/per_video.csv",
                "eval/synthetic/confusion.png",
                "eval/synthetic/retrieval.json"} <= files
        assert any(f.startswith("samples/") for f in files)
    retried = next(r for r in children if r.data.params["loss.sigma_p"] == "1.0")
    assert "traceback.txt" in artifact_paths(client, retried.info.run_id)  # the failed attempt's
    assert "csvr.error" not in retried.data.tags
    # branch pretraining ran once for the whole grid, before the trials (trainables/shared.py): both reused it,
    # and its curves are on the parent run at the steps the trials use for those stages
    assert "Pretraining the stages the trials share: pose (" in out and "shared stage video computed in" in out
    for stage in ("pose", "context", "video"):
        assert [r.data.tags[f"csvr.stage.{stage}"] for r in children] == ["reused", "reused"], stage
        assert parent.data.tags[f"csvr.shared.{stage}"].startswith("computed before the trials in"), stage
        loss = client.get_metric_history(parent.info.run_id, f"train/{stage}/loss")
        assert [m.step for m in loss] == [GlobalSteps(trial_cfg(children[0]))(stage, 1)], stage
    computed = sum(float(r.data.tags["csvr.compute_seconds"]) for r in children)
    assert parent.data.metrics["study/compute_seconds"] > computed  # the shared stages' seconds are counted once
    assert {r.data.tags["csvr.stage.joint"] for r in children} == {"computed"}  # sigma enters here
    # the IS classifier does not depend on sigma: trained once for the grid, before the trials
    assert [r.data.tags["csvr.stage.is_classifier/synthetic"] for r in children] == ["reused", "reused"]
    assert parent.data.tags["csvr.shared.is_classifier/synthetic"].startswith("computed before the trials in")
    # --plan on this storage finds every stage of the grid done: its keys are the pipeline's
    main(importlib.import_module("studies.sigma_grid").STUDY,
         ["--smoke", "--plan", "--storage", str(storage), "--plan-json", str(tmp_path / "plan.json")])
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert {s["status"] for t in plan["trials"] for s in t["stages"]} == {"store"}
    assert plan["totals"]["stage_epochs_to_compute"] == 0 and "stage store" in plan["epoch_seconds_from"]

    # analysis/ turns exactly these runs into the Fig. 3 matrix and figures
    from analysis.figures import write_figures
    from analysis.tables import build_table

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    import io

    import pandas as pd

    table = pd.read_csv(io.StringIO(build_table("sigma_grid", uri, "csv"))).set_index("loss.sigma_p")
    for run in children:
        cell = table.loc[float(run.data.params["loss.sigma_p"]), "0.75 mean"]
        assert cell == pytest.approx(100 * run.data.metrics[TARGET]), table
    assert (table["0.75 n"] == 1).all()
    figures = write_figures("sigma_grid", uri, tmp_path / "figures")
    assert any("heatmap" in f.name for f in figures) and all(f.stat().st_size > 1000 for f in figures)


# A trial that fails on every attempt is a FAILED run with its reason and the study goes on:
# tests/test_faults.py::test_diverged_or_oom_trial_is_a_failed_run_with_its_reason (an OOM trial retried and
# failed, a diverged one, a normal one). Optuna resumed with more samples:
# tests/test_faults.py::test_killed_driver_resumes_without_rerunning_finished_trials (it resumes 3 -> 4 samples).


def optuna_trials(storage: Path):
    """The Optuna study's trials as the search saved them (tests/test_faults.py)."""
    import pickle

    run_dir = storage / "sigma_grid" / (storage / "sigma_grid" / "latest").read_text().strip()
    state = max((run_dir / "tune").glob("searcher-state-*.pkl"))  # newest session (names hold its time)
    with open(state, "rb") as f:
        return pickle.load(f)["_ot_study"].trials


# ---------------------------------------------------------------------------------------------
# fast: the console's trial events


class FakeTrial:
    def __init__(self, trial_id: str, sigma: float):
        self.trial_id, self.config, self.last_result, self.error_file = trial_id, {"loss.sigma_p": sigma}, {}, ""


def test_trial_events_lines_progress_and_eta(monkeypatch):
    from trainables import console

    now = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    lines: list[str] = []
    events = console.TrialEvents(lines.append, total=4, target=TARGET, epochs_of=lambda c: 10,
                                 name_of=lambda c: f"sigma_p={c['loss.sigma_p']}", every=60)
    a, b = FakeTrial("a", 0.5), FakeTrial("b", 1.0)
    events.on_trial_start(0, [], a)
    events.on_trial_start(0, [], b)
    for t in (10, 20, 30):  # epochs inside the throttle window print nothing
        now[0] = t
        events.on_trial_result(0, [], a, {"global_epoch": t // 10, "finetune/synthetic/acc": 0.5})
    assert len(lines) == 2
    now[0] = 70
    events.on_trial_result(0, [], a, {"global_epoch": 5, "finetune/synthetic/acc": 0.625})
    assert lines[-1].startswith("[1:10] epoch 5/10 sigma_p=0.5 finetune/synthetic acc=0.625")
    now[0] = 100
    a.last_result = {TARGET: 0.75, "global_epoch": 10}
    events.on_trial_complete(0, [], a)
    # a done, b at epoch 0: 1 of 4 trials in 100 s -> 300 s to go
    assert lines[-1] == f"[1:40] finished sigma_p=0.5: {TARGET} = 0.7500 | 1/4 trials done, elapsed 1:40, ETA 5:00"
    events.on_trial_recover(0, [], b)
    assert "retrying sigma_p=1.0" in lines[-1]
    events.on_trial_start(0, [], b)
    assert "restarted" in lines[-1]
    b.last_result = {"trial_failed": 1.0, TARGET: float("nan")}
    events.on_trial_complete(0, [], b)
    assert "failed   sigma_p=1.0: non-finite loss" in lines[-1] and "2/4 trials done, 1 failed" in lines[-1]
    import pickle

    restored = pickle.loads(pickle.dumps(events))  # Tune pickles its callbacks with the experiment
    restored.on_trial_start(0, [], FakeTrial("c", 2.0))  # a restored copy stays silent
    assert len(lines) == 7  # started x2, epoch, finished, retrying, restarted, failed


def test_trial_events_count_the_clock_from_the_study_start_and_the_eta_from_the_trials(monkeypatch):
    """After 300 s of shared pretraining (trainables/shared.py) the first trial takes 100 s: the clock says
    6:40, the ETA for 3 more trials is 5:00 (the trials' pace), not 20:00 (the study's)."""
    from trainables import console

    now = [300.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    lines: list[str] = []
    events = console.TrialEvents(lines.append, total=4, target=TARGET, epochs_of=lambda c: 10,
                                 name_of=lambda c: f"sigma_p={c['loss.sigma_p']}", since=0.0)
    a = FakeTrial("a", 0.5)
    events.on_trial_start(0, [], a)
    assert lines[-1] == "[5:00] started  sigma_p=0.5"
    now[0], a.last_result = 400.0, {TARGET: 0.75, "global_epoch": 10}
    events.on_trial_complete(0, [], a)
    assert lines[-1].endswith("1/4 trials done, elapsed 6:40, ETA 5:00")


CAPTURE_SCRIPT = '''
import logging, os, sys
from pathlib import Path
from trainables.console import Capture
folder = Path(sys.argv[1])
with Capture(folder / ".console.log") as console:
    console.say("for the researcher")
    print("python print")
    os.system("echo from a child process; echo child stderr 1>&2")   # like Ray's raylet or MediaPipe's C++
    logging.getLogger("csvr.progress").info("generating: class %d/%d", 1, 6)
    console.move_to(folder / "run" / "console.log")
    print("after the move")
print("after the capture")
'''


def test_capture_keeps_the_terminal_for_console_lines(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CAPTURE_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["for the researcher", "generating: class 1/6", "after the capture"]
    assert out.stderr == ""
    log = (tmp_path / "run" / "console.log").read_text().splitlines()
    assert log == ["for the researcher", "python print", "from a child process", "child stderr",
                   "generating: class 1/6", "after the move"]
    assert not (tmp_path / ".console.log").exists()
