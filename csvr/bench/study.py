"""Benchmark `study`: the README's sigma grid with a fresh stage store per trial against one store for the grid;
with `--search optuna`, the same Optuna search with and without a pruning scheduler.

    python -m csvr.bench study [--grid 4] [--trials N] [--steps 2] [--set KEY=VALUE ...]
    python -m csvr.bench study --search optuna [--scheduler asha|median] [--seeds 3] [--trials 8]
                               [--joint-epochs 4] [--steps 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from csvr.bench.common import Report
from csvr.config import Config
from csvr.stages.table import STAGES

# ---------------------------------------------------------------------------------------------
# study: shared stages against recomputing them


# the pretraining stages a sigma grid shares: those whose key holds no sigma (read from the stage table)
BRANCH_STAGES = tuple(name for name, stage in STAGES.items() if "loss.sigma_p" not in stage.key)
SIGMAS = [0.5, 0.75, 1.0, 1.25]  # the README's sigma grid (studies/sigma_grid.py), first `--grid` values per axis


def _add_stage(out: dict, ev: dict) -> None:
    """Count one stage event: seconds computed (of them branch pretraining and the IS classifier), or the seconds
    a reused stage had cost when it was computed."""
    if ev["status"] == "reused":
        out["stages_reused"] += 1
        out["reused_s"] += ev["seconds"]
        return
    out["stages_computed"] += 1
    out["compute_s"] += ev["seconds"]
    out["branch_s"] += ev["seconds"] if ev["stage"] in BRANCH_STAGES else 0.0
    out["is_classifier_s"] += ev["seconds"] if ev["stage"].startswith("is_classifier/") else 0.0


def _grid_compute(configs: list[Config], root: Path) -> tuple[dict, dict]:
    """Every config's pipeline twice, interleaved trial by trial so that both arms see the same machine load:
    with a fresh store (everything recomputed) and with the grid's one store. Totals per arm, and wall time."""
    from csvr.pipeline import run_trial

    arms = {arm: {"compute_s": 0.0, "reused_s": 0.0, "branch_s": 0.0, "is_classifier_s": 0.0, "stages_computed": 0,
                  "stages_reused": 0, "wall_s": 0.0} for arm in ("alone", "shared")}
    for i, cfg in enumerate(configs):
        for arm, store in (("alone", root / f"alone{i}"), ("shared", root / "shared")):
            start = time.perf_counter()
            for ev in run_trial(cfg, root / arm / f"trial{i}", store):
                if ev["kind"] == "stage":
                    _add_stage(arms[arm], ev)
            arms[arm]["wall_s"] += time.perf_counter() - start
    return arms["alone"], arms["shared"]


def grid_configs(args: argparse.Namespace) -> list[Config]:
    """The README's sigma grid at the tiny preset's own epochs (branches 30 + 20 + 20, joint 5, IS classifier 20;
    `--preset`/`--set` as everywhere), `--steps` steps per epoch, `--grid` values per axis."""
    from csvr.bench.common import bench_config
    from csvr.config import apply_overrides

    steps = args.steps or 2
    base = apply_overrides(bench_config(args, "tiny"), {"train.steps_per_epoch": steps,
                                                         "finetune.steps_per_epoch": steps})
    values = SIGMAS[: args.grid or 2]
    points = [(p, c) for p in values for c in values][: args.trials or None]
    return [apply_overrides(base, {"loss.sigma_p": p, "loss.sigma_c": c}) for p, c in points]


def bench_study(args: argparse.Namespace) -> Report:
    """The grid run through the pipeline twice in this process, after one warm-up trial (data prepared, code paths
    warm): with a fresh store per trial (every stage recomputed) and with one store for the whole grid (as
    studies run it), trial by trial in turn."""
    if args.search:
        return bench_search(args)
    configs = grid_configs(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _grid_compute(configs[:1], root / "warm")
        alone, shared = _grid_compute(configs, root)
    total = max(alone["compute_s"], 1e-9)
    saved = 1 - shared["compute_s"] / total
    shares = {"branch_share": alone["branch_s"] / total, "is_classifier_share": alone["is_classifier_s"] / total}
    goal = shares["branch_share"] + shares["is_classifier_share"]
    rows = [{"stages": "recomputed", **alone}, {"stages": "shared", **shared}]
    n = len(configs)
    return Report("study", ["stages", "compute_s", "reused_s", "branch_s", "is_classifier_s", "wall_s",
                            "stages_computed", "stages_reused"], rows,
                  f"shared stages: {100 * saved:.0f}% less stage compute for a {n}-trial grid "
                  f"({shared['compute_s']:.0f} s computed, {shared['reused_s']:.0f} s reused; branch pretraining "
                  f"{100 * shares['branch_share']:.0f}% + IS classifier {100 * shares['is_classifier_share']:.0f}% "
                  f"= {100 * goal:.0f}% of the unshared grid's stage compute, at most {n - 1}/{n} of it savable)",
                  numbers={"saved_fraction": saved, **shares, "goal_fraction": goal,
                           "savable_fraction": goal * (n - 1) / n, "trials": n,
                           "compute_s": shared["compute_s"], "reused_s": shared["reused_s"],
                           "compute_ratio": alone["compute_s"] / max(shared["compute_s"], 1e-9)},
                  settings={"trials": n, "steps": args.steps or 2, "preset": args.preset or "tiny",
                            "epochs": "preset", "set": list(args.set)})


# ---------------------------------------------------------------------------------------------
# study --search optuna [--scheduler asha]: pruning against the same search unpruned


SEARCH_SETTINGS = {  # tiny models, the whole embedded dataset (66 train / 54 test videos: a probe that moves),
    # branch stages short (shared by every trial of a search), joint pretraining long enough for ASHA's rungs
    "train.pose_epochs": 1, "train.context_epochs": 1, "train.video_epochs": 1, "train.checkpoint_epochs": "1",
    "finetune.epochs": 2, "finetune.steps_per_epoch": 2, "data.max_videos": 0, "data.workers": 0,
    "eval.retrieval_clips": 1, "eval.test_clips": 1, "train.log_every": 2, "eval.probe_every": 1}
SEARCH_DEFAULTS = {"trials": 8, "seeds": 3, "joint_epochs": 4, "steps": 2}
TARGET = "eval/synthetic/top1"


def run_search(tmp: Path, scheduler: str, seed: int, samples: int, joint_epochs: int, steps: int,
               extra: dict[str, str]) -> dict:
    """One sigma_grid Optuna search (own storage, stage store and MLflow) in a subprocess; its Tune results."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    cwd = tmp / f"{scheduler}-{seed}"
    cwd.mkdir(parents=True)
    sets = {**SEARCH_SETTINGS, "train.joint_epochs": joint_epochs, "train.steps_per_epoch": steps, **extra}
    cmd = [sys.executable, str(repo / "studies" / "sigma_grid.py"), "--search", "optuna", "--num-samples",
           str(samples), "--search-seed", str(seed), "--scheduler", scheduler, "--storage", str(cwd / "runs"),
           "--preset", "tiny", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return {"scheduler": scheduler, "seed": seed, "wall_s": time.perf_counter() - t0,
            **tune_totals(next((cwd / "runs" / "sigma_grid").glob("*/tune")))}


def tune_totals(tune_dir: Path) -> dict:
    """From every trial's result.json: trial-seconds spent (start to last report), of them the seconds up to each
    epoch report (training, without the final evaluation), epochs trained, trials pruned, best target."""
    import json
    import math

    spent, epoch_s, epochs, pruned, best, trials = 0.0, 0.0, 0, 0, -math.inf, []
    for path in tune_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        spent += rows[-1]["time_total_s"]
        trained = [r for r in rows if "compute_seconds" not in r]  # one report per trained epoch
        epochs += len(trained)
        epoch_s += sum(r["time_this_iter_s"] for r in trained)
        pruned += "compute_seconds" not in rows[-1]
        finals = [r[TARGET] for r in rows if isinstance(r.get(TARGET), (int, float)) and math.isfinite(r[TARGET])]
        best = max([best, *finals])
        trials.append({**rows[-1]["config"], "epochs": len(trained), TARGET: finals[-1] if finals else None})
    return {"trial_s": spent, "epoch_s": epoch_s, "epochs_trained": epochs, "pruned": pruned, "best": best,
            "trials": sorted(trials, key=lambda t: json.dumps(t, sort_keys=True, default=str))}


def search_sizes(args: argparse.Namespace) -> dict[str, int]:
    return {k: getattr(args, k, 0) or v for k, v in SEARCH_DEFAULTS.items()}


def paired_ratios(rows: list[dict], scheduler: str, seeds: int) -> dict:
    """Per seed: pruned / unpruned compute (stage-epochs, epoch seconds, trial seconds) and the gap in the best
    target; each as a t interval over the seeds (analysis.stats)."""
    from analysis.stats import t_interval

    by = {(r["scheduler"], r["seed"]): r for r in rows}
    pairs = [(by[(scheduler, s)], by[("fifo", s)]) for s in range(seeds)]
    per_seed = {"epochs_ratio": [a["epochs_trained"] / f["epochs_trained"] for a, f in pairs],
                "epoch_s_ratio": [a["epoch_s"] / f["epoch_s"] for a, f in pairs],
                "trial_s_ratio": [a["trial_s"] / f["trial_s"] for a, f in pairs],
                "best_gap": [a["best"] - f["best"] for a, f in pairs]}
    intervals = {k: vars(t_interval(v)) for k, v in per_seed.items()}
    fifo_best = vars(t_interval([f["best"] for _, f in pairs]))
    return {"per_seed": per_seed, "intervals": intervals, "fifo_best": fifo_best}


def _interval(i: dict, digits: int = 2, sign: str = "") -> str:
    if i["low"] is None:
        return f"{i['mean']:{sign}.{digits}f} (n={i['n']}, no interval)"
    return f"{i['mean']:{sign}.{digits}f} [{i['low']:{sign}.{digits}f}, {i['high']:{sign}.{digits}f}] (n={i['n']})"


def bench_search(args: argparse.Namespace) -> Report:
    """`seeds` paired searches: the same Optuna sampler seed with fifo and with `--scheduler`."""
    size = search_sizes(args)
    with tempfile.TemporaryDirectory(prefix="csvr-bench-") as tmp:
        extra = dict(kv.split("=", 1) for kv in args.set)  # --set overrides the benchmark's settings
        rows = [run_search(Path(tmp), s, seed, size["trials"], size["joint_epochs"], size["steps"], extra)
                for seed in range(size["seeds"]) for s in ("fifo", args.scheduler)]
    stats = paired_ratios(rows, args.scheduler, size["seeds"])
    iv = stats["intervals"]
    headline = (f"{args.scheduler} / fifo: {_interval(iv['epochs_ratio'])} of the stage-epochs, "
                f"{_interval(iv['trial_s_ratio'])} of the trial seconds; best {TARGET} "
                f"{_interval(iv['best_gap'], 3, '+')} (fifo best {_interval(stats['fifo_best'], 3)})")
    return Report("study", ["scheduler", "seed", "epochs_trained", "pruned", "epoch_s", "trial_s", "best", "wall_s"],
                  rows, headline,
                  numbers={"compute_ratio": sum(stats["per_seed"]["epochs_ratio"]) / size["seeds"], **stats},
                  settings={"search": "optuna", "scheduler": args.scheduler, **size, "preset": "tiny",
                            "data": "synthetic", "settings": {**SEARCH_SETTINGS, **dict(
                                kv.split("=", 1) for kv in args.set)}})
