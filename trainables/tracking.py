"""MLflow logging for studies: one parent run per study invocation, one nested child run per trial.

    uri = resolve_uri(None, Path.cwd())                   # sqlite:///<cwd>/mlflow.db
    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, "sigma_grid", uri)
    parent = start_parent(client, exp_id, "sigma_grid", "grid", run_name="sigma_grid 20250101-120000")
    run = TrialRun.open(client, exp_id, parent, run_id=None, tags={...})   # in the trial process
    run.log_metrics({"train/joint/loss": 0.3}, step=7)                      # steps already logged are skipped

Every client call goes through `retry`: while the store is locked or the server is unreachable, it backs off
(0.2 s doubling to 8 s) for up to RETRY_SECONDS, then the trial fails with MlflowUnavailable; a metric is
never dropped silently.

Ray's MLflowLoggerCallback can neither nest runs (ray#19909) nor upload artifacts (ray#46569), so each
trial logs from its own process with a client built from the tracking URI in its context (mlflow#7206);
that works on remote nodes against an MLflow server. Names follow DESIGN.md ("MLflow naming").
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import RequestException, Timeout

T = TypeVar("T")
log = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"
MAX_BATCH = 100  # log_batch accepts at most 100 params / 1000 metrics per call
MAX_TAG = 5000
RETRY_SECONDS = 60.0  # how long a trial waits for an unreachable MLflow before it fails
TRANSIENT = ("locked", "max retries exceeded", "connection", "timed out", "temporarily_unavailable",
             "too many requests", "bad gateway", "service unavailable", "gateway timeout")
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class MlflowUnavailable(RuntimeError):
    """MLflow stayed unreachable for RETRY_SECONDS; the trial fails (and Tune retries it) instead of
    going on without its metrics."""


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


def retry(fn: Callable[..., T], *args: Any, seconds: float = RETRY_SECONDS, **kwargs: Any) -> T:
    """Call an MLflow client method; retry transient failures (a sqlite store locked by a concurrent trial, an
    MLflow server that is down, restarting or overloaded) with exponential backoff for up to `seconds`, then
    raise MlflowUnavailable. Retried calls are safe: a metric logged twice with the same step and timestamp
    is stored once, and tags, params, artifacts and run status are overwritten with the same value."""
    deadline, wait = time.monotonic() + seconds, 0.2
    while True:
        try:
            return fn(*args, **kwargs)
        except (MlflowException, RequestException, OSError) as err:
            if not transient(err):
                raise
            if time.monotonic() + wait > deadline:
                raise MlflowUnavailable(f"MLflow did not answer for {seconds:.0f} s ({fn.__name__}): {err}") from err
            log.warning("MLflow %s failed (%s); retrying in %.1f s", fn.__name__, str(err).splitlines()[0][:160], wait)
            time.sleep(wait)
            wait = min(wait * 2, 8.0)


def transient(err: BaseException) -> bool:
    if isinstance(err, (RequestsConnectionError, Timeout)):
        return True
    text = str(err).lower()
    return any(marker in text for marker in TRANSIENT)


# Two processes creating a fresh sqlite store's schema at once race (one sees the other's half-made schema):
# a lock file beside the database serialises it; a process that does not take the lock (an older version,
# `mlflow ui`) can still race, so these errors are retried too.
SCHEMA_RACE = ("already exists", "duplicate column", "unique constraint failed", "no such table",
               "database is locked")


def client(uri: str) -> MlflowClient:
    """An MlflowClient whose HTTP calls give up after a few seconds (MLflow's own retries take ~4 min per
    call), so that `retry` bounds the wait; variables set in the environment win. Building the client builds
    the store (a sqlite store creates its schema then): that happens inside the retry, with the schema race
    of two fresh clients retried too."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return retry(_ready_client, uri)


def _ready_client(uri: str) -> MlflowClient:
    try:
        if not uri.startswith("sqlite:///"):
            return MlflowClient(uri)
        from filelock import FileLock

        with FileLock(uri[len("sqlite:///"):] + ".lock"):  # one process at a time creates or migrates the schema
            made = MlflowClient(uri)
            made.search_experiments(max_results=1)  # builds the store and its schema now
        return made
    except Exception as err:  # sqlalchemy/alembic errors of the schema race: retried by `retry`
        if any(marker in str(err).lower() for marker in SCHEMA_RACE):
            raise MlflowException(f"store not ready (database is locked by a concurrent schema creation): "
                                  f"{str(err).splitlines()[0][:200]}") from err
        raise


def check_reachable(uri: str, seconds: float | None = None) -> None:
    """Fail in seconds, with one line, when an MLflow server at an http(s) URI does not answer (a study
    would otherwise start Ray first and fail in its first MLflow call, after the retries). It waits `seconds`,
    default $CSVR_MLFLOW_WAIT_S or 10."""
    import requests

    if not uri.startswith(("http://", "https://")):
        return
    seconds = float(os.environ.get("CSVR_MLFLOW_WAIT_S", 10.0)) if seconds is None else seconds
    deadline, last = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{uri.rstrip('/')}/health", timeout=3).status_code == 200:
                return
            last = "GET /health did not return 200"
        except RequestException as err:
            last = type(err).__name__
        time.sleep(1.0)
    raise MlflowUnavailable(f"--mlflow-uri {uri}: no MLflow server answers ({last}, {seconds:.0f} s); start it "
                            "(`mlflow server`, docker compose up mlflow) or fix the address")


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    found = retry(client.get_experiment_by_name, name)
    if found is not None:
        return found.experiment_id
    try:
        return retry(client.create_experiment, name, artifact_location=artifact_location(uri, name))
    except MlflowException as err:  # another study created it a moment ago
        if "already exists" not in str(err).lower():
            raise
        return retry(client.get_experiment_by_name, name).experiment_id


def start_parent(client: MlflowClient, experiment_id: str, study: str, search: str, run_name: str,
                 tags: Mapping[str, str] = ()) -> str:
    base = {"csvr.role": "study", "csvr.study": study, "csvr.search": search}
    run = retry(client.create_run, experiment_id, run_name=run_name, tags={**base, **dict(tags)})
    return run.info.run_id


def reopen(client: MlflowClient, run_id: str) -> None:
    retry(client.update_run, run_id, status="RUNNING")


def finish_parent(client: MlflowClient, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, str],
                  summary: str, failed: bool = False, status: str = "") -> None:
    """Log the study's summary and end its parent run: FINISHED, FAILED, or `status` (KILLED when trials are
    left unfinished; the caller tags csvr.resume with the command that continues it)."""
    now = int(time.time() * 1000)
    retry(client.log_batch, run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
          tags=[RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()])
    log_text(client, run_id, summary, "summary.txt")
    retry(client.set_terminated, run_id, status or ("FAILED" if failed else "FINISHED"))


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
        for tag in ("csvr.error", "csvr.interrupted", "csvr.stopped"):  # an earlier attempt failed or was stopped
            if tag in run.data.tags:
                retry(client.delete_tag, run_id, tag)
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

    def stop(self, reason: str) -> None:
        self.set_tags({"csvr.stopped": reason})
        retry(self.client.set_terminated, self.run_id, "KILLED")

    def finish(self) -> None:
        retry(self.client.set_terminated, self.run_id, "FINISHED")
