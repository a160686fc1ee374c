"""Read a study's runs from MLflow (a local sqlite store or a server), page by page.

    from analysis.runs import load_study
    runs = load_study("sigma_grid", "sqlite:///mlflow.db")   # StudyRuns(parent, trials, ...)

DESIGN.md's naming: experiment = study name; the parent run is tagged `csvr.role=study`; trials are
child runs whose params are the flat dotted config keys and whose metrics are `eval/<dataset>/...`.
A study whose experiment has another name is found by its trials' `csvr.study` tag. Only FINISHED
trials count; failed, killed and running runs are counted in `StudyRuns.skipped` and otherwise ignored.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from analysis.paper import PAPER_DATASETS

PAGE_SIZE = 1000
ROLE_TAG, STUDY_TAG = "csvr.role", "csvr.study"
SEED_KEY = "train.seed"
EVAL_METRIC = re.compile(r"^eval/([^/]+)/")

# Values that are not MLflow params themselves but are read off one (e.g. the pretraining dataset kind).
DERIVED_PARAMS = {
    "data.source:kind": lambda params: params["data.source"].split(":", 1)[0] if "data.source" in params else None,
    # Table I's row: the feature source, marked when it was evaluated at its random initialisation
    "eval.feature_source:init": lambda params: None if "eval.feature_source" not in params else (
        params["eval.feature_source"] if str(params.get("eval.pretrained", True)).lower() != "false"
        else f"{params['eval.feature_source']} (random init)"),
}


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    status: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    def param(self, key: str) -> Any:
        """The normalised value of a dotted param key (or a DERIVED_PARAMS key); None when absent."""
        raw = DERIVED_PARAMS[key](self.params) if key in DERIVED_PARAMS else self.params.get(key)
        return None if raw is None else normalise(raw)


@dataclass
class StudyRuns:
    study: str
    parent: RunRecord | None
    trials: list[RunRecord]  # FINISHED, not the parent, in start order
    skipped: dict[str, int] = field(default_factory=dict)  # status -> count of ignored runs


def normalise(value: Any) -> Any:
    """MLflow params are strings: "6" -> 6, "0.75" -> 0.75, "f_d" -> "f_d" (1 == 1.0 groups together)."""
    if not isinstance(value, str):
        return value
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            pass
    return value


def default_uri(tracking_uri: str | None) -> str | None:
    """--mlflow-uri, else $MLFLOW_TRACKING_URI, else the studies' default store ./mlflow.db when it exists."""
    if tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return tracking_uri
    local = Path.cwd() / "mlflow.db"
    return f"sqlite:///{local}" if local.is_file() else None


def client_for(tracking_uri: str | None) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()


def iter_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "",
              page_size: int = PAGE_SIZE) -> Iterator[Run]:
    """Every run matching the filter, fetched `page_size` at a time with page tokens."""
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, ViewType.ACTIVE_ONLY,
                                  max_results=page_size, order_by=["attributes.start_time ASC"],
                                  page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def all_experiment_ids(client: MlflowClient) -> list[str]:
    ids, token = [], None
    while True:
        page = client.search_experiments(max_results=PAGE_SIZE, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def study_query(client: MlflowClient, study: str, experiment: str | None) -> tuple[list[str], str]:
    """(experiment ids, filter): the experiment named `experiment` or `study`, else the csvr.study tag."""
    name = experiment or study
    found = client.get_experiment_by_name(name)
    if found is not None:
        return [found.experiment_id], ""
    if experiment:
        raise SystemExit(f"no MLflow experiment named {experiment!r}")
    return all_experiment_ids(client), f"tags.`{STUDY_TAG}` = '{study}'"


def to_record(run: Run) -> RunRecord:
    return RunRecord(run_id=run.info.run_id, status=run.info.status, start_time=run.info.start_time or 0,
                     params=dict(run.data.params), metrics=dict(run.data.metrics), tags=dict(run.data.tags))


def load_study(study: str, tracking_uri: str | None = None, experiment: str | None = None,
               page_size: int = PAGE_SIZE) -> StudyRuns:
    """The study's parent run (the latest tagged csvr.role=study) and its FINISHED trials."""
    client = client_for(tracking_uri)
    ids, filter_string = study_query(client, study, experiment)
    parent, trials, skipped = None, [], {}
    for record in map(to_record, iter_runs(client, ids, filter_string, page_size)):
        if record.tags.get(ROLE_TAG) == "study":
            parent = record  # runs come in start order: the last one wins
        elif record.status != "FINISHED":
            skipped[record.status] = skipped.get(record.status, 0) + 1
        else:
            trials.append(record)
    return StudyRuns(study, parent, trials, skipped)


def datasets_in(runs: list[RunRecord]) -> list[str]:
    """Dataset kinds named in `eval/<dataset>/...` metrics, the paper's datasets first."""
    found = {m.group(1) for r in runs for key in r.metrics if (m := EVAL_METRIC.match(key))}
    return sorted(found, key=dataset_rank)


def dataset_rank(name: str) -> tuple[int, str]:
    return (PAPER_DATASETS.index(name), "") if name in PAPER_DATASETS else (len(PAPER_DATASETS), name)


def download(client: MlflowClient, run_id: str, artifact_path: str, dst: Path) -> Path | None:
    """Local path of one artifact file, or None when the run does not have it."""
    folder, _, name = artifact_path.rpartition("/")
    if name not in {Path(a.path).name for a in client.list_artifacts(run_id, folder or None)}:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no bar
    return Path(client.download_artifacts(run_id, artifact_path, str(dst)))


# ---------------------------------------------------------------------------------------------
# per-video predictions and test-set size (artifacts of a trial's evaluation)


@dataclass(frozen=True)
class TestSet:
    videos: int
    classes: int

    @property
    def chance(self) -> float:
        """Chance top-1 in %, guessing one class uniformly."""
        return 100.0 / self.classes if self.classes else float("nan")


class Artifacts:
    """Reads eval/<dataset>/per_video.csv and per_class.csv of trials, each file once."""

    def __init__(self, client: MlflowClient, folder: Path):
        self.client, self.folder = client, Path(folder)
        self._frames: dict[tuple[str, str], pd.DataFrame | None] = {}

    def frame(self, run_id: str, artifact_path: str) -> pd.DataFrame | None:
        if (run_id, artifact_path) not in self._frames:
            path = download(self.client, run_id, artifact_path, self.folder / run_id)
            self._frames[run_id, artifact_path] = None if path is None else pd.read_csv(path)
        return self._frames[run_id, artifact_path]

    def correct(self, run_id: str, dataset: str, column: str = "correct") -> pd.Series | None:
        """1/0 per test video (indexed by the video's index in the test split) of `column` (correct: top-1;
        retrieval_r<k>: a same-class video among the k nearest), or None."""
        frame = self.frame(run_id, f"eval/{dataset}/per_video.csv")
        if frame is None or not {"video", column} <= set(frame.columns):
            return None
        return frame.set_index("video")[column].astype(float).sort_index()

    def test_set(self, run_id: str, dataset: str) -> TestSet | None:
        per_class = self.frame(run_id, f"eval/{dataset}/per_class.csv")
        if per_class is not None and {"support"} <= set(per_class.columns):
            return TestSet(int(per_class["support"].sum()), len(per_class))
        per_video = self.frame(run_id, f"eval/{dataset}/per_video.csv")
        if per_video is not None:
            return TestSet(len(per_video), int(per_video["label"].nunique()))
        return None
