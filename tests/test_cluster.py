"""A study on a two-node Ray cluster logging to a real MLflow server, and a node lost mid-trial.

    pytest tests/test_cluster.py              # ~2 minutes on 2 busy cores

`ray.cluster_utils.Cluster` runs a head and a worker raylet on this machine (Ray's own multi-node tests do
the same); every node, the driver and the MLflow server listen on 127.0.0.1 only. The Ray temp folder
(RAY_TMPDIR) is private to the test, so no other Ray on the machine is joined or disturbed.
The helpers here (loopback cluster, MLflow server, study subprocess) are shared with test_faults.py and
test_bad_input.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from tests.test_studies import artifact_paths
from trainables.csvr_trainable import FAULT_ENV

REPO = Path(__file__).resolve().parents[1]
LOCAL = "127.0.0.1"
TARGET = "eval/synthetic/top1"
EPOCH_METRIC = "train/joint/loss"  # logged once per joint epoch: its history must have no gap, no duplicate
# Ray maps 127.0.0.1 to the machine's address unless told the cluster is local (its macOS default)
LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


# ---------------------------------------------------------------------------------------------
# helpers: ports, Ray, the MLflow server, the study subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_tmp() -> Iterator[str]:
    """A private RAY_TMPDIR (short: Ray's socket paths must stay under 108 characters)."""
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def study_env(ray_tmp: str, fault: dict | None = None) -> dict[str, str]:
    env = {**os.environ, **LOOPBACK_RAY, "RAY_TMPDIR": ray_tmp,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for key in (FAULT_ENV, "RAY_ADDRESS"):
        env.pop(key, None)
    if fault:
        env[FAULT_ENV] = json.dumps(fault)
    return env


def study_cmd(storage: Path, *args: str, script: Path = REPO / "studies" / "sigma_grid.py") -> list[str]:
    # --verbose: these tests read Ray's and Tune's own lines (joins, retries, errored trials), which a study
    # otherwise writes only to console.log (tests/test_studies.py checks that quiet console)
    return [sys.executable, str(script), "--smoke", "--verbose", "--storage", str(storage), *args]


def run_study(cwd: Path, storage: Path, ray_tmp: str, *args: str, fault: dict | None = None,
              script: Path = REPO / "studies" / "sigma_grid.py", timeout: int = 300, ok: bool = True):
    out = subprocess.run(study_cmd(storage, *args, script=script), cwd=cwd, env=study_env(ray_tmp, fault),
                         capture_output=True, text=True, timeout=timeout)
    if ok:
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out


def start_study(cwd: Path, storage: Path, ray_tmp: str, *args: str, fault: dict | None = None) -> subprocess.Popen:
    """The study in its own process group (so a test can kill it and everything it started)."""
    return subprocess.Popen(study_cmd(storage, *args), cwd=cwd, env=study_env(ray_tmp, fault), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: int = 300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        pytest.fail(f"study did not finish in {timeout} s:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-6000:]
    return out


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the study ended before {what}:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@contextlib.contextmanager
def loopback_cluster(ray_tmp: str, head_cpus: int = 1, workers: tuple[dict, ...] = ({},)):
    """Head + worker raylets on 127.0.0.1; a worker dict holds extra environment for that node's processes."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**LOOPBACK_RAY, "RAY_TMPDIR": ray_tmp}.items():
            mp.setenv(key, value)
        mp.delenv("RAY_ADDRESS", raising=False)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "node_ip_address": LOCAL,
                                                                "include_dashboard": False})
        try:
            for env in workers:
                with pytest.MonkeyPatch.context() as node_env:  # raylets pass their environment to workers
                    for key, value in env.items():
                        node_env.setenv(key, value)
                    cluster.add_node(num_cpus=1, node_ip_address=LOCAL)
            cluster.wait_for_nodes()
            yield cluster
        finally:
            cluster.shutdown()


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite store and proxied artifacts; stop() and start() again
    keep the port and the store (an outage)."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return f"http://{LOCAL}:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def start(self, timeout: float = 120) -> "MlflowServer":
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", LOCAL, "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.artifacts)]
        log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self.healthy, timeout, f"mlflow server on port {self.port}")
        return self

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"mlflow server exited:\n{(self.root / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill_group(self.proc)
            self.proc.wait(timeout=30)


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(root)
    try:
        yield server.start()
    finally:
        server.stop()


def study_state(storage: Path, study: str = "sigma_grid") -> dict:
    run = (storage / study / "latest").read_text().strip()
    return json.loads((storage / study / run / "study.json").read_text())


def study_runs(uri: str, storage: Path, study: str = "sigma_grid"):
    """(client, parent run, child runs) of the study's latest run."""
    from mlflow import MlflowClient

    state = study_state(storage, study)
    client = MlflowClient(uri)
    parent = client.get_run(state["parent_run_id"])
    children = client.search_runs([state["experiment_id"]], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return client, parent, children


def metric_steps(client, run, key: str) -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp)]


def assert_contiguous(client, run, key: str = EPOCH_METRIC, count: int | None = None) -> list[int]:
    """Every epoch once, in order: no gap (a lost epoch) and no duplicate (a re-logged one)."""
    steps = metric_steps(client, run, key)
    assert steps and steps == list(range(steps[0], steps[0] + len(steps))), (key, steps)
    assert count is None or len(steps) == count, (key, steps)
    for other in run.data.metrics:  # no other metric was logged twice at one step either
        history = metric_steps(client, run, other)
        assert len(history) == len(set(history)), (other, history)
    return steps


def trial_workdirs(storage: Path, study: str = "sigma_grid") -> list[Path]:
    run = storage / study / (storage / study / "latest").read_text().strip()
    return sorted((run / "trials").glob("*"))


def sleeping_trials(storage: Path) -> list[tuple[Path, str]]:
    """(workdir, node id) of trials asleep in the CSVR_FAULT_INJECT "sleep" hook."""
    if not (storage / "sigma_grid" / "latest").is_file():
        return []
    return [(w, json.loads((w / "fault_sleeping").read_text())["node_id"])
            for w in trial_workdirs(storage) if (w / "fault_sleeping").is_file()]


# ---------------------------------------------------------------------------------------------
# the tests: one cluster (head + worker, 1 CPU each) and one MLflow server for the module


@pytest.fixture(scope="module")
def cluster(ray_tmp):
    with loopback_cluster(ray_tmp) as c:
        yield c


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as s:
        yield s


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("csvr_runs")


@pytest.fixture(scope="module")
def lost_node_study(cluster, server, storage, ray_tmp, tmp_path_factory):
    """One study on the two nodes, logging through the MLflow server, whose worker node is lost mid-trial; both
    tests below read it (one study run instead of two: the run that survives a lost node is also a two-node run).
    Every trial sleeps once after its first joint epoch; the one on the worker node loses its node there."""
    nodes = {cluster.head_node.node_id: "head", **{n.node_id: "worker" for n in cluster.worker_nodes}}
    worker = next(iter(cluster.worker_nodes))
    fault = {"match": {}, "kind": "sleep", "seconds": 12, "after_epochs": 1, "attempts": 1}
    proc = start_study(tmp_path_factory.mktemp("study_cwd"), storage, ray_tmp, "--address", cluster.address,
                       "--mlflow-uri", server.uri, "--max-failures", "2", "--set", "train.joint_epochs=3", fault=fault)
    try:
        victim = wait_for(lambda: [w for w, node in sleeping_trials(storage) if node == worker.node_id], 180,
                          "a trial asleep on the worker node", proc)[0]
        cluster.remove_node(worker)
        out = finish(proc)
    finally:
        kill_group(proc)
    # where each trial's first attempt ran (its "sleep" hook wrote the node id; a retry does not sleep again)
    first_node = {w.name: nodes[node] for w, node in sleeping_trials(storage)}
    return SimpleNamespace(out=out, victim=victim.name, first_node=first_node, head=cluster.head_node.node_id)


@pytest.mark.slow
def test_study_on_two_nodes_logs_through_mlflow_server(lost_node_study, server, storage):
    out = lost_node_study.out
    assert "Connected to Ray cluster" in out and "'ERROR': 0" in out
    client, parent, children = study_runs(server.uri, storage)
    assert parent.info.status == "FINISHED" and parent.data.metrics["study/trials_terminated"] == 2
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    # both trials ran at once, one per node (each node has one CPU)
    assert sorted(lost_node_study.first_node.values()) == ["head", "worker"]
    assert {r.data.tags["csvr.trial_id"] for r in children} == set(lost_node_study.first_node)
    assert {r.data.tags["csvr.node_ip"] for r in children} == {LOCAL}
    for run in children:
        assert {TARGET, "pretext/context_acc", EPOCH_METRIC} <= set(run.data.metrics)
        assert_contiguous(client, run)  # the victim's epochs before the loss were logged from the worker node
        files = artifact_paths(client, run.info.run_id)
        assert {"config.json", "checkpoint.txt", "eval/synthetic/per_class.csv"} <= files
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server ...
    uploaded = list(server.artifacts.rglob("per_class.csv"))  # ... into its --artifacts-destination
    assert len(uploaded) == 2 and all(p.stat().st_size > 0 for p in uploaded)


@pytest.mark.slow
def test_worker_node_lost_mid_trial_is_retried_from_its_checkpoint(lost_node_study, server, storage):
    assert "'ERROR': 0" in lost_node_study.out
    assert lost_node_study.first_node[lost_node_study.victim] == "worker"
    client, parent, children = study_runs(server.uri, storage)
    assert parent.info.status == "FINISHED" and len(children) == 2  # one run per trial, the retried one included
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags.get("csvr.error")
        assert_contiguous(client, run, count=3)  # joint epochs 1-3, each logged once
    (retried,) = [r for r in children if r.data.tags["csvr.trial_id"] == lost_node_study.victim]
    assert retried.data.tags["csvr.node_id"] == lost_node_study.head  # the retry ran on the surviving node
    assert TARGET in retried.data.metrics


@pytest.mark.slow
def test_address_auto_joins_a_cluster_started_with_ray_start(tmp_path):
    """`ray start --head` with a token (Ray's token authentication), then `--address auto`."""
    port, ray_tmp = free_port(), tempfile.mkdtemp(prefix="rs", dir="/tmp")  # no other cluster's address file
    home = tmp_path / "home"  # its own ~/.ray/auth_token, not the user's
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
                   env={**os.environ, "HOME": str(home)}, check=True, capture_output=True, timeout=60)
    env = {**study_env(ray_tmp), "HOME": str(home)}
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):  # Ray's defaults, as for a user
        env.pop(key, None)
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             f"--port={port}", f"--node-ip-address={LOCAL}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        address_file = Path(ray_tmp) / "ray" / "ray_current_cluster"
        wait_for(lambda: address_file.exists() and str(port) in address_file.read_text(), 60, "ray start", head)
        out = subprocess.run(study_cmd(tmp_path / "runs", "--address", "auto"), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "trials {'TERMINATED': 2, 'ERROR': 0}" in out.stdout
        assert f"{LOCAL}:{port}" in out.stderr  # it joined that cluster rather than starting its own
    finally:
        head.send_signal(signal.SIGTERM)  # --block: stopping `ray start` stops the processes it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
