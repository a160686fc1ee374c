"""Benchmark: how much building a table costs on top of merely fetching the study's runs from MLflow.

    python tests/bench_analysis.py                 # 1,000 runs in a fresh sqlite store (about a minute)
    python tests/bench_analysis.py --runs 200 --repeat 5

Writes a sigma_grid study (4 x 4 sigmas, seeds to fill `--runs`) whose runs carry every config key as a
param (as the trainables log them) and 12 metrics, then times, best of `--repeat`:
  fetch    paging through search_runs (1,000 a page) and nothing else
  load     analysis.runs.load_study (fetch + RunRecord + parent / status filtering)
  table    analysis.tables.build_table, markdown (load + cells + rendering)
  cells    collect + render_md on runs already loaded (what the table adds to the fetch)
and prints each with its ratio to fetch. On a shared machine fetch times vary: take the best of several.
Not collected by pytest (no test_ prefix).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402

from analysis.runs import iter_runs, load_study  # noqa: E402
from analysis.specs import SIGMA_GRID  # noqa: E402
from analysis.tables import build_table, collect, render_md  # noqa: E402
from csvr.config import flatten, paper as paper_config  # noqa: E402

SIGMAS = (0.5, 0.75, 1.0, 1.25)
EXTRA_METRICS = ("train/pose/g_adv", "train/pose/d", "train/context/nce", "train/video/g_adv", "train/video/d",
                 "pretext/context_acc", "pretext/pose_mse_x100", "pretext/video_is", "eval/ucf101/mean_class_acc",
                 "eval/ucf101/retrieval_r1", "eval/ucf101/retrieval_r5")


def populate(uri: str, root: Path, n_runs: int) -> None:
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("sigma_grid", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"csvr.role": "study"}).info.run_id
    base = {k: str(v) for k, v in flatten(paper_config()).items()}
    cells = [(p, c) for p in SIGMAS for c in SIGMAS]
    for i in range(n_runs):
        p, c = cells[i % len(cells)]
        params = dict(base, **{"loss.sigma_p": str(p), "loss.sigma_c": str(c), "train.seed": str(i // len(cells))})
        metrics = {"eval/ucf101/top1": 0.8 + 0.1 * p - 0.05 * (c - 0.75) ** 2 + (i % 7) * 0.001,
                   **{m: (i % 11) / 11 for m in EXTRA_METRICS}}
        tags = {"mlflow.parentRunId": parent, "csvr.role": "trial", "csvr.study": "sigma_grid"}
        run_id = client.create_run(exp, tags=tags).info.run_id
        client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                         params=[Param(k, v) for k, v in params.items()])
        client.set_terminated(run_id)
    client.set_terminated(parent)


def fetch_only(uri: str) -> int:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sigma_grid").experiment_id
    return sum(1 for _ in iter_runs(client, [exp]))


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        start = time.perf_counter()
        populate(uri, Path(tmp), args.runs)
        print(f"wrote {args.runs} runs in {time.perf_counter() - start:.1f} s")
        assert fetch_only(uri) == args.runs + 1 and len(load_study("sigma_grid", uri).trials) == args.runs
        fetch = best_time(lambda: fetch_only(uri), args.repeat)
        load = best_time(lambda: load_study("sigma_grid", uri), args.repeat)
        table = best_time(lambda: build_table("sigma_grid", uri, "md"), args.repeat)
        runs = load_study("sigma_grid", uri)
        cells = best_time(lambda: render_md(collect(SIGMA_GRID, runs)), args.repeat)
    print(f"\n| step ({args.runs} runs, best of {args.repeat}) | seconds | / fetch |")
    print("|---|---|---|")
    steps = (("fetch (search_runs pages)", fetch), ("load_study", load), ("build_table md", table),
             ("cells + render only", cells))
    for name, seconds in steps:
        print(f"| {name} | {seconds:.3f} | {seconds / fetch:.2f} |")


if __name__ == "__main__":
    main()
