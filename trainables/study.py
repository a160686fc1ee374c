"""The one study runner: every `studies/<name>.py` declares a StudySpec and calls `main(STUDY)`.

    python studies/sigma_grid.py --smoke                         # a minute or two on 2 cores, local Ray
    python studies/sigma_grid.py --search optuna --num-samples 20 --gpus-per-trial 0.5
    python studies/feature_source.py --address auto --data ucf101:/data/UCF101 \
        --finetune-data ucf101:/data/UCF101 --finetune-data hmdb51:/data/HMDB51 \
        --storage /nfs/csvr_runs --mlflow-uri http://mlflow:5000 --seeds 3
    python studies/sigma_grid.py --resume --search optuna --num-samples 30   # continue the last run

Without --address a local Ray starts; without --mlflow-uri runs go to sqlite:///<cwd>/mlflow.db (artifacts
in <cwd>/mlartifacts); without --storage everything lands in <cwd>/csvr_runs:

    <storage>/stages/                          stages shared by every trial and study (csvr.pipeline)
    <storage>/<study>/latest                   the name of the last run (what --resume continues)
    <storage>/<study>/<run>/study.json         MLflow parent run, trial context, search settings
    <storage>/<study>/<run>/tune/              Tune's experiment (trial checkpoints, searcher state)
    <storage>/<study>/<run>/trials/<trial_id>/ each trial's workdir
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from csvr.cli import SMOKE as CLI_SMOKE
from csvr.cli import bad_input, fail
from csvr.cluster import NoClusterError, join_cluster
from csvr.config import Config, ConfigError, apply_overrides, keys, parse_overrides, preset
from csvr.data.layouts import read_dataset
from csvr.prepare import PrepareError
from trainables import tracking
from trainables.console import Capture, TrialEvents
from trainables.csvr_trainable import (FAULT_ENV, RUN_FILE, GlobalSteps, TrialContext, make_trainable,
                                       target_metric, trial_config)
from trainables.pruning import SCHEDULERS, FinalMetricOptuna, make_scheduler, mark_pruned

REPO = Path(__file__).resolve().parents[1]
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
# a tiny-preset trial alone on the embedded dataset, one thread: its branch stages took 6.5 min (pose 12 s, context
# 98 s, video 281 s), joint and evaluation about 0.5 min (README's main command, measured 2026-11-30)
TINY_TRIAL_MINUTES = 7
NODE_ROOT_ENV = "CSVR_TEST_NODE_ROOT"  # test hook: a node started with it sees the filesystem under this folder
SMOKE = CLI_SMOKE  # csvr/cli.py: the one set of --smoke overrides, shared with python -m csvr.train


@dataclass(frozen=True)
class StudySpec:
    name: str  # = MLflow experiment name = analysis.specs key
    title: str  # which table or figure of the paper
    grid: Mapping[str, list]  # dotted key -> values (a grid; seeds are added from --seeds)
    base: Mapping[str, Any] = field(default_factory=dict)  # dotted overrides shared by every trial
    smoke_grid: Mapping[str, list] = field(default_factory=dict)  # the grid under --smoke (default: grid)
    smoke_base: Mapping[str, Any] = field(default_factory=dict)  # applied after SMOKE under --smoke
    search_space: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # --search optuna ranges

    def varied_keys(self) -> list[str]:
        return list(dict.fromkeys([*self.grid, *self.smoke_grid, *self.search_space, "train.seed"]))


# ---------------------------------------------------------------------------------------------
# command line


def parse_args(spec: StudySpec, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python studies/{spec.name}.py", description=describe(spec),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default=None, help="Ray cluster to join ('auto'); default: start a local Ray")
    p.add_argument("--data", default="synthetic", help="pretraining dataset KIND:PATH (default: synthetic)")
    p.add_argument("--finetune-data", action="append", default=[], metavar="KIND:PATH",
                   help="downstream dataset, repeatable (default: the pretraining dataset)")
    p.add_argument("--preset", choices=["tiny", "paper"], default=None, help="default: tiny on the embedded dataset or with --smoke, else paper")
    p.add_argument("--mlflow-uri", default=None, help="default: sqlite:///<cwd>/mlflow.db")
    p.add_argument("--storage", "--out", dest="storage", default=None,
                   help="study storage, shared by all nodes (default: <cwd>/csvr_runs)")
    p.add_argument("--seeds", type=int, default=1, help="train.seed takes 0..N-1 (a study dimension)")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="fractions allowed; default 1 if GPUs else 0")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial (default 1)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN",
                   help="continue an earlier run (Tuner.restore): RUN = its folder name under --storage/<study> "
                        "or its MLflow parent run id; without RUN the latest")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="a cache `python -m csvr.prepare --cache DIR` wrote for --data (sets data.cache)")
    p.add_argument("--smoke", action="store_true", help="tiny preset, 1 epoch of 2 steps per stage, small grid "
                   "(the same overrides as `python -m csvr.train --smoke`)")
    p.add_argument("--verbose", action="store_true", help="show Ray's and Tune's own output (tables, checkpoint "
                   "lines, MediaPipe); by default it goes to console.log in the run folder only")
    p.add_argument("--max-failures", type=int, default=1, help="Tune retries per trial")
    p.add_argument("--pretrain-shared", action=argparse.BooleanOptionalAction, default=True,
                   help="compute the pretraining stages two or more trials share before the trials start, with the "
                        "cluster's CPUs (trainables/shared.py); --no-pretrain-shared: the first trial that needs one "
                        "computes it while the others wait")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--plan", action="store_true", help="print the trials, stages and compute; run nothing")
    p.add_argument("--plan-json", default="", metavar="FILE", help="with --plan: also write the plan as JSON")
    p.add_argument("--epoch-seconds", default="", metavar="JSON",
                   help="with --plan: per-epoch times from `python -m csvr.bench step --json` (default: the store)")
    if spec.search_space:
        p.add_argument("--search", choices=["grid", "optuna", "random"], default="grid",
                       help="grid: every grid point (default); optuna: TPE over the search space; random: uniform")
        p.add_argument("--num-samples", type=int, default=16, help="trials in total (--search optuna / random)")
        p.add_argument("--scheduler", choices=SCHEDULERS, default="fifo",
                       help="optuna / random: stop trials early on a per-epoch pretraining metric (trainables/pruning.py)")
        p.add_argument("--search-seed", type=int, default=None, help="seed of the Optuna sampler (default: random)")
    args = p.parse_args(argv)
    args.search, args.scheduler = getattr(args, "search", "grid"), getattr(args, "scheduler", "fifo")
    if args.search != "grid" and args.seeds != 1:
        p.error(f"--search {args.search} uses one seed per trial: drop --seeds or set train.seed with --set")
    if args.scheduler != "fifo" and args.search == "grid":
        p.error("--scheduler prunes --search optuna / random; a grid runs every cell")
    return args


def describe(spec: StudySpec) -> str:
    """--help: what the study reproduces, how many trials it runs and roughly how long that takes."""
    grid, smoke = math.prod(map(len, spec.grid.values())), math.prod(map(len, (spec.smoke_grid or spec.grid).values()))
    varied = ", ".join(spec.grid)
    ranges = ", ".join(f"{k} in {lo}-{hi}" for k, (lo, hi) in spec.search_space.items())
    search = f"\n--search optuna: --num-samples trials over {ranges}." if spec.search_space else ""
    return (f"Reproduces the paper's {spec.title} ({spec.name}): one trial per value of {varied} "
            f"and per seed.\nTrials: {grid} per seed (x --seeds); {smoke} with --smoke.{search}\n"
            f"Rough duration on 2 CPU cores, tiny preset on the embedded dataset: ~{TINY_TRIAL_MINUTES} min for a "
            f"trial alone, at most {grid * TINY_TRIAL_MINUTES} min per seed; stages trials share are computed once, "
            "first (the 16-trial sigma grid: 10 min in all), 1-3 min with --smoke; paper preset: GPU hours per "
            "trial. --plan estimates it from the stage store.\n"
            "The console shows one line per trial event with an ETA; Ray/Tune output goes to console.log in "
            "the run folder (--verbose shows it).")


def base_overrides(spec: StudySpec, args: argparse.Namespace) -> dict[str, Any]:
    """preset <- study base <- smoke <- --data/--finetune-data <- --set; the grid is applied per trial."""
    out: dict[str, Any] = dict(spec.base)
    if args.smoke:
        out.update(SMOKE)
        out.update(spec.smoke_base)
    out["data.source"] = args.data
    if getattr(args, "cache", None):
        out["data.cache"] = args.cache
    if args.finetune_data:
        out["data.finetune_sources"] = tuple(args.finetune_data)
    sets = parse_overrides(args.set)
    clash = sorted(set(sets) & set(grid_of(spec, args)))
    if clash:
        raise ConfigError(f"--set {', '.join(clash)}: the study varies these keys; edit its grid instead")
    return {**out, **sets}


def grid_of(spec: StudySpec, args: argparse.Namespace) -> dict[str, list]:
    if args.search != "grid":
        return {}
    grid = dict(spec.smoke_grid or spec.grid) if args.smoke else dict(spec.grid)
    return {**grid, "train.seed": list(range(args.seeds))}


def check_data(cfg: Config) -> None:
    """Read every dataset's layout (split lists, class folders) now, so a wrong --data fails in seconds;
    the driver must see the datasets at the same path as the nodes (like the storage)."""
    for source in dict.fromkeys([cfg.data.source, *cfg.data.finetune_sources]):
        read_dataset(source, cfg.data.split)
    if cfg.data.cache:  # --cache DIR must hold a prepared cache (CacheError otherwise)
        from csvr.data.sources import explicit_cache

        explicit_cache(cfg.data.source, cfg.data.cache, cfg.data.cache_size)


def check_keys(spec: StudySpec) -> None:
    valid = set(keys())
    for key in [*spec.varied_keys(), *spec.base, *spec.smoke_base]:
        if key not in valid:
            raise ConfigError(f"study {spec.name}: {key!r} is not a config field (csvr.config.keys())")


# ---------------------------------------------------------------------------------------------
# Ray


def connect_ray(address: str | None) -> None:
    import ray

    if address is None:  # a local Ray; its dashboard stays off (it would listen on every interface)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True)
        return
    try:
        join_cluster(address)
    except NoClusterError as err:
        raise SystemExit(str(err)) from None
    except ConnectionError as err:
        raise SystemExit(f"no Ray cluster at --address {address} ({err}); start one with `ray start --head` "
                         "or drop --address to run on a local Ray") from None


def check_storage_shared(storage: Path) -> None:
    """On a cluster, every node must see `storage`: write a marker here, read it on each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    marker = storage / f".reachable-{uuid.uuid4().hex}"
    marker.write_text(marker.name)

    @ray.remote(num_cpus=0)
    def probe(path: str, expect: str) -> str:
        p = Path(os.environ.get(NODE_ROOT_ENV, "/")) / Path(path).relative_to("/")
        try:
            ok = p.read_text() == expect and os.access(p.parent, os.W_OK)
        except OSError:
            ok = False
        return "" if ok else f"{ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"

    try:
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(marker), marker.name) for n in nodes]
        bad = [host for host in ray.get(refs, timeout=120) if host]
    finally:
        marker.unlink(missing_ok=True)
    if bad:
        raise SystemExit(f"--storage {storage} is not reachable (readable and writable) from node(s) "
                         f"{', '.join(bad)}: on a cluster the storage must be a shared filesystem (NFS) or "
                         "cloud bucket mounted at the same path on every node")


def default_gpus() -> float:
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


class TrialTooLarge(ValueError):
    """A trial asks for more CPUs or GPUs than any one node of the cluster has."""


def check_trial_fits(cpus: float, gpus: float) -> None:
    """A trial that asks for more CPUs or GPUs than any one node has would wait PENDING forever (Tune warns
    every 60 s): refuse it now, before Tune starts (main prints the one line and exits 2)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if any(r.get("CPU", 0.0) >= cpus and r.get("GPU", 0.0) >= gpus for r in nodes):
        return
    largest = max(nodes, key=lambda r: (r.get("GPU", 0.0), r.get("CPU", 0.0)), default={})
    raise TrialTooLarge(f"a trial asks for {cpus:g} CPU(s) and {gpus:g} GPU(s) (--cpus-per-trial, --gpus-per-trial) but no node "
         f"of the Ray cluster has that much (largest: {largest.get('CPU', 0.0):g} CPUs, {largest.get('GPU', 0.0):g} "
         "GPUs); lower them, or start a node that size first (an autoscaling cluster: min_workers of its type)")


# ---------------------------------------------------------------------------------------------
# the study's run: folders, MLflow parent, Tune


@dataclass
class StudyRun:
    dir: Path
    state: dict  # study.json: parent run, experiment id, search, context fields

    @property
    def tune_dir(self) -> Path:
        return self.dir / "tune"

    def save(self) -> None:
        (self.dir / "study.json").write_text(json.dumps(self.state, indent=1, default=list))


def new_run(spec: StudySpec, args: argparse.Namespace, storage: Path, uri: str, base: dict) -> StudyRun:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = next(n for n in [stamp, *(f"{stamp}-{i}" for i in range(2, 1000))]
                if not (storage / spec.name / n).exists())
    run_dir = storage / spec.name / name
    run_dir.mkdir(parents=True)
    client = tracking.client(uri)
    exp_id = tracking.ensure_experiment(client, spec.name, uri)
    parent = tracking.start_parent(client, exp_id, spec.name, args.search, f"{spec.name} {name}",
                                   {"csvr.git_commit": tracking.git_commit(REPO), "csvr.argv": " ".join(sys.argv),
                                    "csvr.storage": str(run_dir), NOTE_TAG: describe(spec)})
    search = {"search": args.search, "grid": grid_of(spec, args), "search_space": dict(spec.search_space),
              "base": base, "preset": preset_name(args)}
    tracking.log_text(client, parent, json.dumps(search, indent=1, default=list), "study/search.json")
    state = {"study": spec.name, "run": name, "search": args.search, "experiment_id": exp_id,
             "parent_run_id": parent, "mlflow_uri": uri, "preset": preset_name(args), "base": base}
    (storage / spec.name / "latest").write_text(name)
    run = StudyRun(run_dir, state)
    run.save()
    return run


def last_run(spec: StudySpec, storage: Path, args: argparse.Namespace) -> StudyRun:
    """The run --resume continues: --resume RUN names it (folder name or MLflow parent run id), else the latest."""
    folder = storage / spec.name
    if args.resume is True:
        latest = folder / "latest"
        if not latest.is_file():
            raise SystemExit(f"--resume: no earlier run of {spec.name} under {storage}; run without --resume")
        run_dir = folder / latest.read_text().strip()
    else:
        run_dir = find_run(folder, str(args.resume))
    state = json.loads((run_dir / "study.json").read_text())
    if state["search"] != args.search:
        raise SystemExit(f"--resume: run {run_dir.name} used --search {state['search']}, not {args.search}")
    print(f"Resuming {run_dir} (its config overrides and MLflow parent run {state['parent_run_id']} are kept)")
    return StudyRun(run_dir, state)


def find_run(folder: Path, wanted: str) -> Path:
    """The run folder under <storage>/<study> named `wanted`, or whose MLflow parent run id is `wanted`."""
    runs = sorted(p.parent for p in folder.glob("*/study.json"))
    for run_dir in runs:
        if run_dir.name == wanted or json.loads((run_dir / "study.json").read_text())["parent_run_id"] == wanted:
            return run_dir
    names = ", ".join(r.name for r in runs[-5:]) or "none"
    raise SystemExit(f"--resume {wanted}: no run of that name or MLflow run id under {folder} (latest runs: "
                     f"{names}); pass a run folder name, its MLflow parent run id, or --resume alone for the latest")


def resume_command(spec: StudySpec, run: "StudyRun") -> str:
    search = run.state["search"]
    return (f"python studies/{spec.name}.py --resume {run.dir.name} --storage {run.dir.parents[1]}"
            + (f" --search {search}" if search != "grid" else ""))


def preset_name(args: argparse.Namespace) -> str:
    """--preset, else tiny for --smoke and for the embedded dataset (a laptop run), else paper."""
    embedded = args.data.split(":", 1)[0] == "synthetic"
    return args.preset or ("tiny" if args.smoke or embedded else "paper")


def context_for(spec: StudySpec, run: StudyRun, storage: Path) -> TrialContext:
    s = run.state
    return TrialContext(study=spec.name, preset=s["preset"], base=s["base"], mlflow_uri=s["mlflow_uri"],
                        experiment_id=s["experiment_id"], parent_run_id=s["parent_run_id"], run_dir=str(run.dir),
                        store_root=str(storage / "stages"), git_commit=tracking.git_commit(REPO),
                        varied=tuple(spec.varied_keys()), fault=os.environ.get(FAULT_ENV, ""))


def validate_grid(ctx: TrialContext, grid: Mapping[str, list]) -> int:
    """Build every grid point's config now, so a typo fails before any trial starts; returns the count."""
    combos = list(itertools.product(*grid.values()))
    for combo in combos:
        trial_config(ctx, dict(zip(grid, combo)))
    return len(combos)


def search_setup(spec: StudySpec, args: argparse.Namespace, grid: Mapping[str, list], target: str):
    """(param_space, search_alg or None)."""
    from ray import tune

    if args.search == "grid":
        return {k: tune.grid_search(list(v)) for k, v in grid.items()}, None
    space = {k: tune.uniform(lo, hi) for k, (lo, hi) in spec.search_space.items()}
    search = FinalMetricOptuna(metric=target, mode="max", seed=args.search_seed) if args.search == "optuna" else None
    return space, search


def raise_sample_budget(tune_dir: Path, num_samples: int) -> None:
    """Let a restored Optuna search run up to `num_samples` trials in total. Tune restores the search's
    sample budget from its saved state (search_gen_state-*.json, a cloudpickled dict), so raise it there;
    the Optuna study itself (searcher-state-*.pkl) is restored untouched and its history continues."""
    import ray.cloudpickle as cloudpickle

    for path in tune_dir.glob("search_gen_state-*.json"):
        state = cloudpickle.loads(path.read_bytes())
        if num_samples > state["total_samples"]:
            state.update(total_samples=num_samples, finished=False)
            path.write_bytes(cloudpickle.dumps(state))


def trial_events(spec: StudySpec, ctx: TrialContext, target: str, total: int, say,
                 since: float | None = None) -> TrialEvents:
    """The console's per-trial lines: named by the varied keys, epochs counted as the trainable does."""
    def values(config: Mapping[str, Any]) -> dict:
        return {k: v for k, v in config.items() if not k.startswith("_")}

    def name_of(config: Mapping[str, Any]) -> str:
        shown = values(config)
        return " ".join(f"{k.split('.')[-1]}={_short(shown[k])}" for k in spec.varied_keys() if k in shown)

    return TrialEvents(say, total, target, epochs_of=lambda c: GlobalSteps(trial_config(ctx, values(c))).total,
                       name_of=name_of, since=since)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def build_tuner(spec: StudySpec, args: argparse.Namespace, run: StudyRun, ctx: TrialContext, target: str,
                grid: Mapping[str, list], resume: bool, events=None):
    from ray import tune
    from ray.tune import CLIReporter

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's new output ignores the CLIReporter and verbose=0
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else default_gpus()
    trainable = make_trainable(ctx, args.cpus_per_trial, gpus)
    callbacks = [events] if events is not None else []
    if resume:
        if args.search == "optuna":
            raise_sample_budget(run.tune_dir, args.num_samples)
        tuner = tune.Tuner.restore(str(run.tune_dir), trainable=trainable, resume_errored=True)
        if events is not None:  # restore brings back the pickled run config: swap in this session's callback
            run_config = tuner._local_tuner.get_run_config()
            run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, TrialEvents)] + [events]
        return tuner
    param_space, search_alg = search_setup(spec, args, grid, target)
    shown = [k for k in spec.varied_keys() if k in param_space]
    reporter = CLIReporter(metric_columns={target: "top1", "global_epoch": "epoch", "saved_seconds": "saved_s"},
                           parameter_columns={k: k.split(".")[-1] for k in shown}, max_report_frequency=30)
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=1 if args.search == "grid" else args.num_samples,
                                    scheduler=make_scheduler(args.scheduler, trial_config(ctx, {})),
                                    reuse_actors=False),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(run.dir), callbacks=callbacks,
            progress_reporter=reporter if args.verbose else None, verbose=1 if args.verbose else 0,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            # num_to_keep=None: with num_to_keep=N Tune forces an experiment snapshot every N checkpoints of a
            # trial (one per epoch here), hence the "Experiment state snapshotting" warnings; our per-epoch
            # checkpoints are a few hundred bytes (progress.json), so all of them are kept
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None)),
    )


# ---------------------------------------------------------------------------------------------
# summary


def close_dead_trials(client, parent_run_id: str, experiment_id: str, interrupted: bool = False) -> int:
    """A child run still RUNNING after fit() lost its process (killed, node lost): end it FAILED; after an
    interrupt (Ctrl-C) the trials were stopped, not broken: end them KILLED (--resume continues them)."""
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
                                               "and attributes.status = 'RUNNING'")
    for r in runs:
        if interrupted:
            tracking.retry(client.set_tag, r.info.run_id, "csvr.interrupted", "the study was interrupted (Ctrl-C); "
                           "--resume continues this trial")
            tracking.retry(client.set_terminated, r.info.run_id, "KILLED")
            continue
        tracking.retry(client.set_tag, r.info.run_id, "csvr.error", "the trial process ended without closing its "
                       "run (killed, its node was lost, or MLflow was unreachable); see Tune's error file")
        tracking.retry(client.set_terminated, r.info.run_id, "FAILED")
    return len(runs)


def ended(metrics: Mapping[str, Any], error) -> bool:
    """The trial reached its end: its final result (compute_seconds) or an error / a diverged loss."""
    return error is not None or bool(metrics.get("trial_failed")) or "compute_seconds" in metrics


def summarize(results, target: str, spec: StudySpec, total: int | None = None, interrupted: bool = False,
              shared_seconds: float = 0.0) -> tuple[str, dict[str, float], dict[str, str]]:
    """(printable summary, parent-run metrics, parent-run tags) from Tune's ResultGrid. After an interrupt
    (Ctrl-C) Tune reports the trials it stopped as TERMINATED: only trials that ended count as finished.
    `shared_seconds`: stage time computed before the trials (trainables/shared.py), which every trial that
    needs those stages reports as reused: one of those reuses is the computation itself."""
    rows = [(r.config, r.metrics or {}, r.error) for r in results]
    finished = [(c, m) for c, m, e in rows if e is None and math.isfinite(m.get(target, math.nan))]
    compute = sum(m.get("compute_seconds", 0.0) for _, m, _ in rows) + shared_seconds
    saved = max(0.0, sum(m.get("saved_seconds", 0.0) for _, m, _ in rows) - shared_seconds)
    errors = sum(e is not None or bool(m.get("trial_failed")) for _, m, e in rows)  # trial_failed: not retried
    planned = max(total or 0, len(rows))
    unfinished = (sum(not ended(m, e) for _, m, e in rows) + planned - len(rows)) if interrupted else 0
    counts = {"TERMINATED": planned - errors - unfinished, "ERROR": errors}
    metrics = {"study/trials_terminated": counts["TERMINATED"], "study/trials_error": counts["ERROR"],
               "study/trials_unfinished": unfinished, "study/compute_seconds": compute, "study/saved_seconds": saved}
    tags, lines = {}, [f"Study {spec.name} ({spec.title}): trials {counts}"]
    if unfinished:
        lines.append(f"interrupted: {planned - unfinished} of {planned} finished ({unfinished} unfinished)")
    if finished:
        best_cfg, best = max(finished, key=lambda cm: cm[1][target])
        shown = {k: v for k, v in best_cfg.items() if not k.startswith("_")}
        metrics[f"study/best_{target}"] = best[target]
        tags = {"csvr.best_config": json.dumps(shown), "csvr.best_trial_id": str(best.get("trial_id", ""))}
        lines.append(f"Best by {target} = {best[target]:.4f}: {shown}")
    else:
        lines.append(f"No trial finished with a finite {target}.")
    share = saved / (saved + compute) if saved + compute > 0 else 0.0
    lines.append(f"Shared stages: {compute:.0f} s computed, {saved:.0f} s reused instead of recomputed "
                 f"({share:.0%} of the stage time saved)")
    return "\n".join(lines), metrics, tags


def mark_interrupted(client, results, run_dir: Path) -> None:
    """Trials Tune stopped because the study was interrupted: their runs end KILLED with csvr.interrupted
    (Tune stops a trial by raising SystemExit(0) in it; the trainable ends its run KILLED too, `end_stopped`)."""
    for result in results:
        metrics = result.metrics or {}
        run_file = Path(run_dir) / "trials" / str(metrics.get("trial_id", "")) / RUN_FILE
        if ended(metrics, result.error) or not metrics.get("trial_id") or not run_file.is_file():
            continue
        run_id = json.loads(run_file.read_text())["run_id"]
        tracking.retry(client.set_tag, run_id, "csvr.interrupted", "the study was interrupted (Ctrl-C); "
                       "--resume continues this trial")
        with contextlib.suppress(Exception):  # absent unless the trainable saw Tune's stop as an error
            tracking.retry(client.delete_tag, run_id, "csvr.error", seconds=5)
        tracking.retry(client.set_terminated, run_id, "KILLED")


def close_dead_trials_or_warn(client, state: dict, interrupted_results=None, run_dir: Path | None = None
                              ) -> tuple[int, str]:
    """(runs closed, warning): mark_interrupted (given the results of an interrupted fit) and
    close_dead_trials, but MLflow being down at the very end is a warning (the trials are done, and the
    next --resume closes those runs), not a crash."""
    interrupted = interrupted_results is not None
    try:
        if interrupted:
            mark_interrupted(client, interrupted_results, run_dir)
        return close_dead_trials(client, state["parent_run_id"], state["experiment_id"], interrupted), ""
    except Exception as err:  # noqa: BLE001 - MlflowUnavailable, a server error: the results are safe
        first = str(err).splitlines()[0][:200] if str(err).strip() else ""
        return 0, (f"warning: could not close the runs of lost trials in MLflow ({type(err).__name__}: {first}); "
                   "they stay RUNNING until a --resume")


def tune_was_interrupted(before) -> bool:
    """Tune swaps in its own SIGINT handler for fit() and puts the previous one back only when a SIGINT
    (Ctrl-C) or SIGUSR1 arrives: the previous handler back in place after fit() means it was interrupted."""
    if os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") != "0" or threading.current_thread() is not threading.main_thread():
        return False
    return signal.getsignal(signal.SIGINT) is before


def mark_killed(spec: StudySpec, run: StudyRun, reason: str) -> None:
    """The driver is going down with trials unfinished: the parent run says so (KILLED + how to resume)."""
    try:
        client = tracking.client(run.state["mlflow_uri"])
        tracking.retry(client.set_tag, run.state["parent_run_id"], "csvr.resume",
                       f"{reason}; resume with: {resume_command(spec, run)}", seconds=10)
        tracking.retry(client.set_terminated, run.state["parent_run_id"], "KILLED", seconds=10)
    except Exception as err:  # noqa: BLE001 - already failing; say it and let the original error through
        print(f"warning: could not mark the study's MLflow run KILLED ({type(err).__name__})", file=sys.stderr)


def report_end(spec: StudySpec, run: StudyRun, results, target: str, cwd: Path, total: int | None = None,
               interrupted: bool = False, shared_seconds: float = 0.0) -> str:
    s = run.state
    client = tracking.client(s["mlflow_uri"])
    # after an interrupt, stopped trials look like pruned ones (no final result): only mark real prunings
    pruned = 0 if interrupted else mark_pruned(client, results, run.dir)  # before close_dead_trials
    closed, warning = close_dead_trials_or_warn(client, s, results if interrupted else None, run.dir)
    text, metrics, tags = summarize(results, target, spec, total, interrupted, shared_seconds)
    if warning:
        text += f"\n{warning}"
    if pruned:
        text += f"\n{pruned} trial(s) stopped early by the scheduler (MLflow: KILLED, tag csvr.pruned=true)."
    if closed:
        text += (f"\n{closed} interrupted trial run(s) were marked KILLED." if interrupted else
                 f"\n{closed} trial run(s) had lost their process and were marked FAILED.")
    text += (f"\nMLflow UI:  {tracking.ui_command(s['mlflow_uri'], cwd)}"
             f"\nTable:      python -m analysis.tables {spec.name} --mlflow-uri {s['mlflow_uri']}"
             f"\nResume:     python studies/{spec.name}.py --resume --storage {run.dir.parents[1]} "
             f"(+ the same --search; the run keeps its config and MLflow parent)")
    status = ""
    if metrics["study/trials_unfinished"]:
        status, tags = "KILLED", {**tags, "csvr.resume": f"interrupted; resume with: {resume_command(spec, run)}"}
        text += f"\nInterrupted: resume with {resume_command(spec, run)}"
    tags = {**tags, NOTE_TAG: f"{describe(spec)}\n\n```\n{text}\n```\n\n{publish_results(spec, run, client)}"}
    tracking.finish_parent(client, s["parent_run_id"], metrics, tags, text, status=status)
    return text


def publish_results(spec: StudySpec, run: StudyRun, client) -> str:
    """The study's tables (markdown) and figures as artifacts of the parent run; returns the tables, which
    also become the parent's description. A failure here is logged, never fatal: the trials are done."""
    from analysis.figures import write_figures
    from analysis.specs import SPECS
    from analysis.tables import build_table

    uri, parent = run.state["mlflow_uri"], run.state["parent_run_id"]
    if spec.name not in SPECS:  # a study without a paper table (tests, ad-hoc grids)
        return ""
    try:
        tables = build_table(spec.name, uri, "md")
        tracking.log_text(client, parent, tables, f"tables/{spec.name}.md")
        write_figures(spec.name, uri, run.dir / "figures", log=True)
        return tables
    except (Exception, SystemExit) as err:  # noqa: BLE001 - a convenience at the end of a finished study
        print(f"tables/figures for the parent run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return ""


# ---------------------------------------------------------------------------------------------
# entry point


def prepare_datasets(cfg) -> None:
    """Prepare every dataset the trials read once, here in the driver, as Ray tasks across the cluster;
    trials then find complete caches instead of all preparing (and competing for CPUs) at once."""
    from csvr.data.sources import ensure_prepared

    for spec in dict.fromkeys((cfg.data.source, *cfg.data.finetune_sources)):
        explicit = cfg.data.cache if spec == cfg.data.source else ""  # --cache DIR: use it as it is
        ensure_prepared(spec, cfg.data.cache_size, cfg.data.cache_root, split=cfg.data.split, cache=explicit)


def pretrain_shared_stages(spec: StudySpec, args: argparse.Namespace, ctx: TrialContext, grid: Mapping[str, list],
                           started: float, say) -> float:
    """The stages two or more trials share, computed before Tune starts (trainables/shared.py); their outcome
    becomes the parent run's csvr.shared.<stage>[/<field>_<value>] tags. Returns the seconds computed here."""
    from trainables.console import clock
    from trainables.shared import parent_tags, pretrain_shared, shared_stages

    if not args.pretrain_shared:
        return 0.0
    if args.search == "grid":
        configs = [trial_config(ctx, dict(zip(grid, combo))) for combo in itertools.product(*grid.values())]
    else:  # the sampled keys' stages differ per trial; the others are shared by all samples
        configs = [trial_config(ctx, {})] * args.num_samples
    stages = shared_stages(configs, spec.search_space if args.search != "grid" else ())
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else default_gpus()
    outcome = pretrain_shared(stages, ctx.store_root, ctx.mlflow_uri, ctx.parent_run_id, args.cpus_per_trial, gpus,
                              lambda text: say(f"[{clock(time.monotonic() - started)}] {text}"))
    tags = parent_tags(stages, outcome)
    if tags:
        client = tracking.client(ctx.mlflow_uri)
        for name, value in tags.items():
            tracking.retry(client.set_tag, ctx.parent_run_id, name, value)
    return outcome.seconds


def main(spec: StudySpec, argv: list[str] | None = None) -> None:
    args = parse_args(spec, argv)
    cwd = Path.cwd()
    storage = Path(args.storage or cwd / "csvr_runs").expanduser().resolve()
    uri = tracking.resolve_uri(args.mlflow_uri, cwd)
    grid = grid_of(spec, args)
    with bad_input():  # every input is checked before Ray starts: one line, exit 2, no trial started
        check_keys(spec)
        base = base_overrides(spec, args)
        cfg = apply_overrides(preset(preset_name(args)), base)
        for combo in itertools.product(*grid.values()):
            apply_overrides(cfg, dict(zip(grid, combo)))
        check_data(cfg)
    if args.plan:  # trainables/plan.py: no Ray, no MLflow run
        from trainables.plan import plan_study

        plan_study(spec, args, storage)
        return
    storage.mkdir(parents=True, exist_ok=True)
    resumed = last_run(spec, storage, args) if args.resume else None
    try:  # before Ray starts: an MLflow server that does not answer is one line, not a traceback after 90 s
        tracking.check_reachable(resumed.state["mlflow_uri"] if resumed else uri)
    except tracking.MlflowUnavailable as err:
        fail(str(err))
    total = args.num_samples if args.search != "grid" else math.prod(map(len, grid.values()))
    with Capture(storage / spec.name / f".console-{os.getpid()}.log", verbose=args.verbose) as console:
        console.say(f"Study {spec.name} ({spec.title}): {total} trials" +
                    (f" ({args.search})" if args.search != "grid" else "") +
                    f", preset {preset_name(args)}, data {args.data}")
        connect_ray(args.address)
        check_storage_shared(storage)
        try:
            check_trial_fits(args.cpus_per_trial,
                             args.gpus_per_trial if args.gpus_per_trial is not None else default_gpus())
        except TrialTooLarge as err:  # one line on the terminal (fds 1/2 go to the log here), exit 2
            console.say(f"error: {err}")
            raise SystemExit(2) from None
        run = resumed or new_run(spec, args, storage, uri, base)
        console.move_to(run.dir / "console.log")
        console.say(f"Run folder {run.dir} (Ray/Tune output: console.log there; --verbose shows it here)\n"
                    f"MLflow {run.state['mlflow_uri']} (open it with: "
                    f"{tracking.ui_command(run.state['mlflow_uri'], cwd)})")
        ctx = context_for(spec, run, storage)
        started = time.monotonic()
        console.say("Preparing datasets (first run: generate the embedded dataset, I-frames, MediaPipe poses) ...")
        try:
            prepare_datasets(trial_config(ctx, {}))
        except PrepareError as err:  # e.g. Ray workers lost while preparing: nothing is wrong with the videos
            mark_killed(spec, run, "datasets not prepared")
            console.say(f"error: {err}")
            raise SystemExit(3) from None
        console.say(f"Datasets ready ({time.monotonic() - started:.0f} s)")
        target = target_metric(trial_config(ctx, {}))
        if args.resume:
            tracking.reopen(tracking.client(run.state["mlflow_uri"]), run.state["parent_run_id"])
        try:
            shared_seconds = pretrain_shared_stages(spec, args, ctx, grid, started, console.say)
        except KeyboardInterrupt:
            mark_killed(spec, run, "interrupted while pretraining the shared stages")
            raise SystemExit(130) from None
        events = trial_events(spec, ctx, target, total, console.say, since=started)
        tuner = build_tuner(spec, args, run, ctx, target, grid, args.resume, events)
        before = signal.getsignal(signal.SIGINT)
        try:
            results = tuner.fit()
        except BaseException as err:  # Ctrl-C twice, a Tune error: the parent must not stay RUNNING
            mark_killed(spec, run, f"the driver stopped ({type(err).__name__})")
            raise
        interrupted = tune_was_interrupted(before)
        console.say(report_end(spec, run, results, target, cwd, total, interrupted, shared_seconds))
        import ray

        ray.shutdown()  # still inside the capture: Ray's last forwarded worker lines land in the log
    if interrupted:
        raise SystemExit(130)  # Ctrl-C: not a finished study (see the summary's "interrupted:" line)
