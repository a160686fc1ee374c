"""MLflow logging for studies: one parent run per study invocation, one nested child run per trial.

    uri = resolve_uri(None, Path.cwd())                   # sqlite:///<cwd>/mlflow.db
    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, "sigma_grid", uri)
    parent = start_parent(client, exp_id, "sigma_grid", "grid", run_name="sigma_grid 20250101-120000")
    run = TrialRun.open(client, exp_id, parent, run_id=None, tags={...})   # in the trial process
    run.log_metrics({"train/joint/loss": 0.3}, step=7)                      # steps already logged are skipped

Ray's MLflowLoggerCallback can neither nest runs (ray#19909) nor upload artifacts (ray#46569), so each
trial logs from its own process with a client built from the tracking URI in its context (mlflow#7206);
that works on remote nodes against an MLflow server. Names follow DESIGN.md ("MLflow naming").
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

T = TypeVar("T")
PARENT_TAG = "mlflow.parentRunId"
MAX_BATCH = 100  # log_batch accepts at most 100 params / 1000 metrics per call
MAX_TAG = 5000


def resolve_uri(uri: str | None, cwd: Path) -> str:
    """None -> sqlite:///<cwd>/mlflow.db; relative sqlite/file paths become absolute (trials run elsewhere)."""
    if not uri:
        return f"sqlite:///{(cwd / 'mlflow.db').resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(cwd / uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:
        return (cwd / uri).resolve().as_uri()
    return uri


def artifact_location(uri: str, experiment: str) -> str | None:
    """For a sqlite store: <db folder>/mlartifacts/<experiment>; servers and file stores decide themselves."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / experiment).as_uri()
    return None


def ui_command(uri: str, cwd: Path) -> str:
    if uri == resolve_uri(None, cwd):
        return "mlflow ui --backend-store-uri sqlite:///mlflow.db"
    return f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else f"open {uri}"


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def retry(fn: Callable[..., T], *args: Any, attempts: int = 8, **kwargs: Any) -> T:
    """Call an MLflow client method, retrying while a sqlite store is locked by a concurrent trial."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except MlflowException as err:
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri, name))


def start_parent(client: MlflowClient, experiment_id: str, study: str, search: str, run_name: str,
                 tags: Mapping[str, str] = ()) -> str:
    base = {"csvr.role": "study", "csvr.study": study, "csvr.search": search}
    run = client.create_run(experiment_id, run_name=run_name, tags={**base, **dict(tags)})
    return run.info.run_id


def reopen(client: MlflowClient, run_id: str) -> None:
    retry(client.update_run, run_id, status="RUNNING")


def finish_parent(client: MlflowClient, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, str],
                  summary: str, failed: bool = False) -> None:
    now = int(time.time() * 1000)
    retry(client.log_batch, run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
          tags=[RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()])
    log_text(client, run_id, summary, "summary.txt")
    retry(client.set_terminated, run_id, "FAILED" if failed else "FINISHED")


def log_text(client: MlflowClient, run_id: str, text: str, artifact_file: str) -> None:
    retry(client.log_text, run_id, text, artifact_file)


def log_files(client: MlflowClient, run_id: str, files: Mapping[str, str | Path]) -> None:
    """Upload {artifact path: local file}; the artifact path may rename the file."""
    with tempfile.TemporaryDirectory() as staging:
        for rel, local in files.items():
            dst = Path(staging) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, dst)
        retry(client.log_artifacts, run_id, staging)


class TrialRun:
    """One trial's child run. Reopened (same run id) when Tune retries or restores the trial."""

    def __init__(self, client: MlflowClient, run_id: str, last_steps: dict[str, int], params: dict[str, str]):
        self.client, self.run_id = client, run_id
        self.last_steps = last_steps  # metric key -> last logged step: later epochs only, no duplicates
        self.params = params

    @classmethod
    def open(cls, client: MlflowClient, experiment_id: str, parent_run_id: str, run_id: str | None,
             run_name: str, tags: Mapping[str, str]) -> "TrialRun":
        if run_id is None:
            all_tags = {PARENT_TAG: parent_run_id, "csvr.role": "trial", **tags}
            run = retry(client.create_run, experiment_id, run_name=run_name, tags=all_tags)
            return cls(client, run.info.run_id, {}, {})
        run = retry(client.get_run, run_id)
        last = {key: max(m.step for m in retry(client.get_metric_history, run_id, key))
                for key in run.data.metrics}
        reopen(client, run_id)
        if "csvr.error" in run.data.tags:  # an earlier attempt failed; its traceback.txt stays
            retry(client.delete_tag, run_id, "csvr.error")
        return cls(client, run_id, last, dict(run.data.params))

    def log_params(self, params: Mapping[str, Any]) -> None:
        new = [Param(k, str(v)) for k, v in params.items() if k not in self.params]
        for i in range(0, len(new), MAX_BATCH):
            retry(self.client.log_batch, self.run_id, params=new[i:i + MAX_BATCH])
        self.params.update({p.key: p.value for p in new})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        retry(self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        new = [Metric(k, float(v), now, step) for k, v in metrics.items() if step > self.last_steps.get(k, -1)]
        if new:
            retry(self.client.log_batch, self.run_id, metrics=new)
            self.last_steps.update({m.key: step for m in new})

    def log_files(self, files: Mapping[str, str | Path]) -> None:
        log_files(self.client, self.run_id, files)

    def fail(self, message: str, traceback_text: str) -> None:
        self.set_tags({"csvr.error": message or "error"})
        log_text(self.client, self.run_id, traceback_text, "traceback.txt")
        retry(self.client.set_terminated, self.run_id, "FAILED")

    def finish(self) -> None:
        retry(self.client.set_terminated, self.run_id, "FINISHED")
