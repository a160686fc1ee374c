"""Bad input fails fast, before any Ray trial starts, with a message that names the problem and the fix;
and the safe defaults hold (loopback-only services, weights-only checkpoint loading).

    pytest tests/test_bad_input.py            # ~40 s on 2 cores

(A broken video inside a dataset is not fatal: `prepare` marks it status=error with the decoder's message
and goes on; tests/test_prepare.py::test_prepare_marks_broken_files_and_resumes covers it.)
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.test_cluster import REPO, loopback_cluster, ray_tmp, run_study  # noqa: F401
from csvr.cluster import NoClusterError, cluster_address
from trainables.study import NODE_ROOT_ENV

# the study's options, the problem the message must name, the fix it must suggest
CASES = {
    "unknown dataset kind": (["--data", "nosuch:/x"], "unknown dataset kind 'nosuch'", "with KIND one of: ucf101"),
    "missing split lists": (["--data", "ucf101:{tree}"], "ucfTrainTestlist", "expected ucf101 layout"),
    "unknown config key": (["--set", "model.nosuch=1"], "unknown config key 'model.nosuch'", "keys are SECTION.FIELD"),
    "mistyped config key": (["--set", "model.backbon=r3d"], "unknown config key 'model.backbon'",
                            "did you mean model.backbone?"),
    "sigma out of range": (["--set", "loss.sigma_p=-1"], "loss.sigma_p=-1.0 is out of range", "the paper uses"),
    "sigma the study varies": (["--set", "loss.sigma_c=-1"], "loss.sigma_c: the study varies", "edit its grid"),
    "address auto, no cluster": (["--address", "auto"], "no Ray cluster found", "ray start --head"),
}
ONE_SIGMA_STUDY = '''from trainables.study import StudySpec, main

STUDY = StudySpec(name="one_sigma", title="tests/test_bad_input.py", grid={"train.seed": [0]})

if __name__ == "__main__":
    main(STUDY)
'''


def assert_failed_fast(out, seconds: float, storage: Path, cwd: Path, *needles: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    for needle in needles:
        assert needle in text, (needle, text[-3000:])
    assert "Traceback" not in text, text[-3000:]  # a message, not a crash
    assert seconds < 45, seconds  # imports only (~3-10 s on a busy 2-core machine); Tune never started
    assert not any(storage.glob("*/*/trials")), "a trial started"
    assert not (cwd / "mlflow.db").exists(), "an MLflow run was created"


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_before_any_trial(case, ray_tmp, tmp_path):
    args, problem, fix = CASES[case]
    tree = tmp_path / "ucf"  # videos but no ucfTrainTestlist/
    (tree / "UCF-101" / "ApplyEyeMakeup").mkdir(parents=True)
    args = [a.format(tree=tree) for a in args]
    script = REPO / "studies" / "sigma_grid.py"
    if case == "sigma out of range":  # sigma_grid varies both sigmas: use a study that varies neither
        script = tmp_path / "one_sigma.py"
        script.write_text(ONE_SIGMA_STUDY)
    storage, t0 = tmp_path / "csvr_runs", time.monotonic()
    out = run_study(tmp_path, storage, ray_tmp, *args, script=script, timeout=120, ok=False)
    assert_failed_fast(out, time.monotonic() - t0, storage, tmp_path, problem, fix)
    assert "Started a local Ray instance" not in out.stdout + out.stderr


@pytest.mark.slow
def test_storage_a_node_cannot_see_fails_before_any_trial(ray_tmp, tmp_path):
    # the worker node sees the filesystem under an empty folder: the study's marker file is absent there
    elsewhere = tmp_path / "node_root"
    elsewhere.mkdir()
    with loopback_cluster(ray_tmp, workers=({NODE_ROOT_ENV: str(elsewhere)},)) as cluster:
        head, worker = cluster.head_node.node_id, next(iter(cluster.worker_nodes)).node_id
        storage, t0 = tmp_path / "csvr_runs", time.monotonic()
        out = run_study(tmp_path, storage, ray_tmp, "--address", cluster.address, timeout=120, ok=False)
    assert_failed_fast(out, time.monotonic() - t0, storage, tmp_path, f"--storage {storage} is not reachable",
                       f"({worker[:8]})", "the storage must be a shared filesystem")
    assert f"({head[:8]})" not in out.stderr  # the head sees it
    assert not list(storage.glob(".reachable-*"))  # the marker is cleaned up


# ---------------------------------------------------------------------------------------------
# safe defaults (fast)


def python_files() -> list[Path]:
    return [p for d in ("csvr", "trainables", "analysis", "studies", "tests") for p in (REPO / d).rglob("*.py")]


def calls(text: str, name: str) -> list[str]:
    """The argument text of every `name(...)` call (balanced parentheses)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end():i - 1])
    return out


def test_every_torch_load_is_weights_only():
    found = {}
    for path in python_files():
        for args in calls(path.read_text(), "torch" + ".load"):
            found[f"{path.relative_to(REPO)}: {args}"] = "weights_only=True" in args
    assert found and all(found.values()), [k for k, ok in found.items() if not ok]


def test_local_ray_and_mlflow_listen_on_loopback_only():
    for path in python_files():
        text = path.read_text()
        for args in calls(text, "ray" + ".init"):
            if "address=" not in args:  # a local Ray: no dashboard, or one on 127.0.0.1
                assert "include_dashboard=False" in args or 'dashboard_host="127.0.0.1"' in args, (path, args)
    commands = [REPO / "README.md", REPO / "DESIGN.md", *python_files()]  # docker/: tests/test_docker.py
    for path in commands:
        for line in path.read_text().splitlines():
            if re.search(r"(mlflow (server|ui)|ray start).*", line):
                assert "0.0.0.0" not in line, (path, line)


def test_address_auto_never_joins_another_users_local_ray(monkeypatch, tmp_path):
    # Ray's own "auto" falls back to any Ray process on the machine; the study only takes RAY_ADDRESS or
    # the cluster that `ray start` registered on this node
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(NoClusterError, match="ray start --head"):
        cluster_address("auto")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("10.0.0.5:6379")
    assert cluster_address("auto") == "10.0.0.5:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert cluster_address("auto") == "10.0.0.7:6379" and cluster_address("h:1") == "h:1"
