"""Faults during a study: the driver killed (and the study resumed with more samples), the MLflow server down
for a while, a trial that diverges or runs out of memory. (A worker node lost mid-trial: tests/test_cluster.py.)

    pytest tests/test_faults.py               # ~2.5 minutes on 2 cores

Each test runs a `--smoke` study as a subprocess on a local Ray (private RAY_TMPDIR) and checks what MLflow
holds afterwards: one run per trial, every epoch's metrics once, the reason of every failure.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from tests.test_cluster import (TARGET, MlflowServer, assert_contiguous, finish, kill_group, ray_tmp,  # noqa: F401
                                run_study, sleeping_trials, start_study, study_runs, trial_workdirs, wait_for)
from tests.test_studies import optuna_trials

FAILED_MARK = "ended without closing its run"  # csvr.error of a run whose process was killed


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("csvr_runs")  # shared by the tests: branch pretraining is computed once


def sqlite_uri(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'mlflow.db'}"


def finished_workdirs(storage: Path) -> list[Path]:
    if not (storage / "sigma_grid" / "latest").is_file():
        return []
    return [w for w in trial_workdirs(storage) if (w / "result.json").is_file()]


def kill_driver(proc) -> None:
    """SIGKILL the driver, then (by pid) the local Ray it started: a lost driver machine."""
    started = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait(timeout=30)
    for child in started:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(started, timeout=30)


@pytest.mark.slow
def test_killed_driver_resumes_without_rerunning_finished_trials(storage, ray_tmp, tmp_path):
    """The resume also raises --num-samples from 3 to 4: Optuna continues its history with one more trial
    (this test covers what test_studies' optuna-resume test checked with a study of its own)."""
    proc = start_study(tmp_path, storage, ray_tmp, "--search", "optuna", "--num-samples", "3")
    try:
        done = wait_for(lambda: finished_workdirs(storage), 240, "a finished trial", proc)
        kill_driver(proc)
    finally:
        kill_group(proc)
    snapshot = {w.name: [(w / f).stat().st_mtime_ns for f in ("result.json", "artifacts/config.json")] for w in done}
    client, parent, before = study_runs(sqlite_uri(tmp_path), storage)
    finished = {r.data.tags["csvr.trial_id"]: r for r in before if r.info.status == "FINISHED"}
    assert set(snapshot) <= set(finished)

    out = run_study(tmp_path, storage, ray_tmp, "--search", "optuna", "--num-samples", "4", "--resume").stdout
    assert "Resuming" in out and "'ERROR': 0" in out
    client, parent_after, runs = study_runs(sqlite_uri(tmp_path), storage)
    assert parent_after.info.run_id == parent.info.run_id and parent_after.info.status == "FINISHED"
    assert parent_after.data.tags["csvr.search"] == "optuna"
    by_trial = {}
    for run in runs:
        by_trial.setdefault(run.data.tags["csvr.trial_id"], []).append(run)
    for trial_id, was in finished.items():  # finished before the kill: untouched
        (now,) = by_trial[trial_id]
        assert (now.info.status, now.info.start_time, now.info.end_time) == \
               (was.info.status, was.info.start_time, was.info.end_time)
        assert now.data.metrics == was.data.metrics and now.data.params == was.data.params
    for name, mtimes in snapshot.items():  # and their workdirs were not recomputed
        w = next(w for w in trial_workdirs(storage) if w.name == name)
        assert [(w / f).stat().st_mtime_ns for f in ("result.json", "artifacts/config.json")] == mtimes
    completed = [r for r in runs if r.info.status == "FINISHED"]
    assert len(completed) == 4 and len({r.data.tags["csvr.trial_id"] for r in completed}) == 4
    for run in runs:  # a trial started after Tune's last state save is regenerated: its run says so
        if run.info.status == "FINISHED":
            assert_contiguous(client, run, key=TARGET)  # and no metric logged twice at one step
        else:
            assert FAILED_MARK in run.data.tags["csvr.error"]
    # Optuna kept its history: the trials told before the kill are still there, all four complete
    history = optuna_trials(storage)
    assert len(history) == 4 and all(t.state.name == "COMPLETE" for t in history)
    assert all(0.5 <= float(t.params["loss.sigma_p"]) <= 1.25 for t in history)  # the study's search space
    told = sorted(round(float(t.params["loss.sigma_p"]), 6) for t in history)
    assert {round(float(r.data.params["loss.sigma_p"]), 6) for r in finished.values()} <= set(told)
    assert sorted(round(float(r.data.params["loss.sigma_p"]), 6) for r in completed) == told


@pytest.mark.slow
def test_mlflow_outage_delays_metrics_but_loses_none(storage, ray_tmp, tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    # the sigma_p=1.0 trial naps after its first joint epoch; the server goes down then, for ~10-15 s
    fault = {"match": {"loss.sigma_p": 1.0}, "kind": "sleep", "seconds": 3, "after_epochs": 1, "attempts": 1}
    proc = start_study(tmp_path, storage, ray_tmp, "--mlflow-uri", server.uri, "--set", "train.joint_epochs=3",
                       fault=fault)
    try:
        wait_for(lambda: sleeping_trials(storage), 240, "the trial's nap", proc)
        server.stop()
        time.sleep(4)
        assert proc.poll() is None
        server.start()
        out = finish(proc)
        check_after_outage(out, server.uri, storage)
    finally:
        kill_group(proc)
        server.stop()


def check_after_outage(out: str, uri: str, storage: Path) -> None:
    assert "retrying in" in out and "'ERROR': 0" in out  # the trials hit the outage and waited it out
    client, parent, children = study_runs(uri, storage)
    assert parent.info.status == "FINISHED" and len(children) == 2
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags.get("csvr.error")
        assert_contiguous(client, run, count=3)  # all three joint epochs, each once
        assert TARGET in run.data.metrics and "finetune/synthetic/loss" in run.data.metrics


DIVERGE_STUDY = '''"""Three trials: a normal one, one whose learning rate diverges, one that runs out of memory."""
from trainables.study import StudySpec, main

STUDY = StudySpec(name="reliability", title="tests/test_faults.py",
                  grid={"train.lr_per_sample": [0.005, 10000.0, 0.0051]})

if __name__ == "__main__":
    main(STUDY)
'''


@pytest.mark.slow
def test_diverged_or_oom_trial_is_a_failed_run_with_its_reason(storage, ray_tmp, tmp_path):
    script = tmp_path / "reliability.py"
    script.write_text(DIVERGE_STUDY)
    oom = {"match": {"train.lr_per_sample": 0.0051}, "kind": "oom", "after_epochs": 0}
    out = run_study(tmp_path, storage, ray_tmp, "--max-failures", "1", script=script, fault=oom).stdout
    assert "trials {'TERMINATED': 1, 'ERROR': 2}" in out
    assert "Number of errored trials: 1" in out  # the diverged trial ended without a Tune error: no retry
    client, parent, children = study_runs(sqlite_uri(tmp_path), storage, study="reliability")
    assert parent.info.status == "FINISHED" and parent.data.metrics["study/trials_error"] == 2
    by_lr = {r.data.params["train.lr_per_sample"]: r for r in children}
    assert len(children) == 3 and by_lr["0.005"].info.status == "FINISHED"
    assert TARGET in by_lr["0.005"].data.metrics
    diverged, oomed = by_lr["10000.0"], by_lr["0.0051"]
    assert diverged.info.status == "FAILED" and oomed.info.status == "FAILED"
    error = diverged.data.tags["csvr.error"]
    assert error.startswith("NonFiniteLossError: loss term train/") and "non-finite at step" in error
    assert oomed.data.tags["csvr.error"].startswith("OutOfMemoryError: injected fault")
    # a failed trial is a FAILED run with its reason and traceback, and the study goes on (the retried OOM trial
    # reused its run: 3 runs for 3 trials); this also covers a plain error (test_studies used to run a study for it)
    for run, error in ((diverged, "NonFiniteLossError"), (oomed, "OutOfMemoryError")):
        text = Path(client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))).read_text()
        assert "Traceback" in text and error in text
    run_dir = storage / "reliability" / (storage / "reliability" / "latest").read_text().strip()
    attempts = json.loads((run_dir / "trials" / oomed.data.tags["csvr.trial_id"] / "injected_faults").read_text())
    assert attempts == 2  # OOM may be a neighbour's fault on a shared GPU: retried once (--max-failures 1)


@pytest.mark.slow
def test_a_shared_stage_that_fails_is_reported_and_the_study_goes_on(storage, ray_tmp, tmp_path):
    """The video stage both sigma cells share diverges at its first step before the trials start
    (trainables/shared.py; pose and context are done): the console and the parent run say so, each trial computes
    the stage again, fails with its own reason and is recorded FAILED, and the study still ends with its summary."""
    out = run_study(tmp_path, storage, ray_tmp, "--set", "train.lr_per_sample=1e8").stdout
    assert "shared stage pose computed" in out and "shared stage context computed" in out
    assert "shared stage video failed (" in out and "NonFiniteLossError" in out, out
    assert "the trials that need it will compute it themselves" in out
    assert "trials {'TERMINATED': 0, 'ERROR': 2}" in out
    client, parent, children = study_runs(sqlite_uri(tmp_path), storage)
    assert parent.info.status == "FINISHED" and parent.data.metrics["study/trials_error"] == 2
    assert parent.data.tags["csvr.shared.pose"].startswith("computed before the trials")
    assert parent.data.tags["csvr.shared.video"].startswith("failed before the trials: ")
    assert "train/video/reconstruct/l2 became non-finite" in parent.data.tags["csvr.shared.video"]
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FAILED" and run.data.tags["csvr.error"].startswith("NonFiniteLossError")
        assert run.data.tags["csvr.stage.pose"] == "reused" and "csvr.stage.video" not in run.data.tags
