"""What a study (or the whole paper) will cost, before anything runs: trials, stages computed or reused, compute.

    python studies/sigma_grid.py --plan [--plan-json plan.json]          # one study, its usual options
    python -m trainables.plan --paper [--storage DIR] [--data ucf101:/d] [--finetune-data hmdb51:/d] \
        [--seeds 3] [--epoch-seconds step.json] [--json plan.json]     # every study at the paper preset

Nothing runs: no Ray, no MLflow run, no dataset read. Each trial's stages are listed in `run_trial`'s order
with the key the pipeline gives them (`csvr.stages.table.stage_key`), and marked
  compute   first use of that key, not in the stage store yet
  store     already done in `<storage>/stages` (its done.json exists)
  shared    an earlier trial of this plan (any study) computes the same key
so identical stages across studies are one stage. Compute is counted in stage-epochs and, where a per-epoch
time is known, in hours: measured from the store (done.json seconds / epochs of the planned stages already
done, per stage kind) or, with `--epoch-seconds`, from `python -m csvr.bench step --json` (the CSVR step for
pretraining stages, an upper bound for the branch stages; the plain step for finetuning). An Optuna search
draws its values later, so stages that depend on them count once per sample; a pruning scheduler (`--scheduler`)
can only lower what the plan shows.
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import pkgutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from csvr.config import Config, apply_overrides, flatten, preset
from csvr.data.loaders import dataset_kind
from csvr.evaluate_trial import is_classifier_config
from csvr.stages.store import StageStore
from csvr.stages.table import FINETUNE, IS_CLASSIFIER, STAGES, needed_stages, stage_key

KNOWN_TRAIN_VIDEOS = {"ucf101": 9537, "hmdb51": 3570}  # official split 1 train lists, when no cache is prepared
PAPER_CELLS = {  # Table I f_i_full, III layer 6, IV MI-InfoNCE, V both and Fig. 3 (0.75, 0.75): one pretraining
    "feature_source": {"eval.feature_source": "f_i_full"}, "encoder_layer": {"model.pose_encoder_layer": 6},
    "context_loss": {"loss.context": "mi_infonce"}, "generation_target": {"loss.generation_target": "both"},
    "sigma_grid": {"loss.sigma_p": 0.75, "loss.sigma_c": 0.75}}


@dataclass
class PlannedStage:
    stage: str  # store name: pose, ..., joint, finetune/<kind>, is_classifier/<kind>
    key: str
    epochs: int
    kind: str  # what its per-epoch time is measured by (stage name, finetune per dataset)
    status: str = "compute"  # compute | store | shared
    by: str = ""  # for "shared": the trial that computes it
    seconds: float | None = None  # store: measured seconds of the done stage


@dataclass
class PlannedTrial:
    study: str
    trial: str
    values: dict[str, Any]
    stages: list[PlannedStage] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# the stages of one trial (the order and keys of csvr.pipeline.run_trial)


def trial_stages(cfg: Config, sampled: Iterable[str] = (), sample: str = "") -> list[PlannedStage]:
    """`sampled`: config keys an Optuna search draws per trial; stages that read them get a per-sample key."""
    sampled = set(sampled)

    def key(stage: str, reads: Iterable[str], value: str) -> str:
        return f"sampled:{sample}:{stage}" if sampled & set(reads) else value

    out, flat = [], flatten(cfg)
    needs = needed_stages(cfg)
    for stage in needs:
        row = STAGES[stage]
        out.append(PlannedStage(stage, key(stage, row.key, stage_key(stage, cfg)), row.epochs_of(cfg), stage))
    for spec in (cfg.data.finetune_sources or (cfg.data.source,)) if cfg.eval.protocol == "finetune" else ():
        name = FINETUNE.store_name(dataset_kind(spec))
        out.append(PlannedStage(name, key(name, flat, FINETUNE.key_of(cfg, spec)), flat[FINETUNE.epochs], name))
    if "joint" in needs:
        scratch = is_classifier_config(cfg)  # the pipeline's (csvr.evaluate_trial.pretext)
        name = IS_CLASSIFIER.store_name(dataset_kind(cfg.data.source))
        value = IS_CLASSIFIER.key_of(scratch, cfg.data.source)
        out.append(PlannedStage(name, key(name, IS_CLASSIFIER.key, value), flat[IS_CLASSIFIER.epochs], name))
    return out


# ---------------------------------------------------------------------------------------------
# the trials of a study


def study_trials(spec, args: argparse.Namespace) -> list[PlannedTrial]:
    """The trials `trainables.study.main(spec)` would start with these options (grid or Optuna samples)."""
    from trainables.study import base_overrides, grid_of, preset_name

    base = apply_overrides(preset(preset_name(args)), base_overrides(spec, args))
    if args.search != "grid":  # optuna / random: values drawn per trial
        sampled = tuple(spec.search_space)
        return [PlannedTrial(spec.name, f"sample{i}", {k: f"{lo}..{hi}" for k, (lo, hi) in spec.search_space.items()},
                             trial_stages(base, sampled, f"{spec.name}#{i}")) for i in range(args.num_samples)]
    grid = grid_of(spec, args)
    trials = []
    for i, combo in enumerate(itertools.product(*grid.values())):
        values = dict(zip(grid, combo))
        trials.append(PlannedTrial(spec.name, str(i + 1), values, trial_stages(apply_overrides(base, values))))
    return trials


def mark(trials: list[PlannedTrial], store: StageStore) -> None:
    """Each stage: store (done there), shared (an earlier planned trial computes it) or compute."""
    first: dict[tuple[str, str], str] = {}
    for trial in trials:
        for s in trial.stages:
            done = store.path(s.stage, s.key) / "done.json"
            if done.is_file():
                s.status, s.seconds = "store", float(json.loads(done.read_text())["seconds"])
            elif (s.stage, s.key) in first:
                s.status, s.by = "shared", first[(s.stage, s.key)]
            else:
                first[(s.stage, s.key)] = f"{trial.study}#{trial.trial}"


# ---------------------------------------------------------------------------------------------
# per-epoch times


def store_epoch_seconds(trials: list[PlannedTrial]) -> dict[str, float]:
    """Seconds per epoch by stage kind, from the planned stages already done in the store."""
    sums: dict[str, list[float]] = {}
    for s in (s for t in trials for s in t.stages):
        if s.status == "store" and s.epochs > 0 and s.seconds is not None:
            total = sums.setdefault(s.kind, [0.0, 0.0])
            total[0], total[1] = total[0] + s.seconds, total[1] + s.epochs
    return {kind: sec / epochs for kind, (sec, epochs) in sums.items()}


def train_videos(spec: str, cfg: Config) -> int | None:
    """Usable train videos of a dataset: its prepared manifest if there is one, else the known split size."""
    from csvr.data.sources import cache_dir_for

    manifest = cache_dir_for(spec, cfg.data.cache_size, cfg.data.cache_root) / "manifest.parquet"
    if manifest.is_file():
        import pandas as pd

        df = pd.read_parquet(manifest)
        n = int(((df["split"] == "train") & (df["status"] == "ok")).sum())
    else:
        n = KNOWN_TRAIN_VIDEOS.get(dataset_kind(spec))
    if n is not None and cfg.data.max_videos:
        n = min(n, cfg.data.max_videos)
    return n


def bench_epoch_seconds(stage: str, cfg: Config, bench: Mapping) -> float | None:
    """Seconds per epoch of `stage` from a `csvr.bench step` JSON: clips per epoch x seconds per clip."""
    step = "csvr" if stage in STAGES else "plain"  # the classifiers train the plain network
    rows = [r for r in bench.get("rows", []) if r["step"] == step and r["backbone"] == cfg.model.backbone]
    if not rows:
        return None
    per_clip = rows[0]["median_s"] / rows[0]["batch"]
    finetune = step == "plain"
    batch = cfg.finetune.batch_size if finetune else cfg.data.batch_size
    steps = cfg.finetune.steps_per_epoch if finetune else cfg.train.steps_per_epoch
    if steps:
        return steps * batch * per_clip
    specs = cfg.data.finetune_sources or (cfg.data.source,)
    spec = next((s for s in specs if FINETUNE.store_name(dataset_kind(s)) == stage), cfg.data.source)
    videos = train_videos(spec, cfg)
    return None if videos is None else (videos // batch) * batch * per_clip


# ---------------------------------------------------------------------------------------------
# totals


def totals(trials: list[PlannedTrial], per_epoch: Mapping[tuple[str, str], float | None]) -> dict[str, Any]:
    """Stage-epochs (and seconds, where known) if every trial ran alone, as unique stages, and to compute."""
    alone = sum(s.epochs for t in trials for s in t.stages)
    unique = sum(s.epochs for t in trials for s in t.stages if s.status != "shared")
    compute = [s for t in trials for s in t.stages if s.status == "compute"]
    seconds = [per_epoch.get((s.stage, s.key)) for t in trials for s in t.stages]
    known = [(s, sec) for s, sec in zip((s for t in trials for s in t.stages), seconds) if sec is not None]
    out = {"trials": len(trials), "stages": sum(len(t.stages) for t in trials),
           "stage_epochs_alone": alone, "stage_epochs_unique": unique,
           "stage_epochs_in_store": sum(s.epochs for t in trials for s in t.stages if s.status == "store"),
           "stage_epochs_to_compute": sum(s.epochs for s in compute),
           "saved_by_sharing": 1 - unique / alone if alone else 0.0,
           "stages_without_time": len({(s.stage, s.key) for s in compute if per_epoch.get((s.stage, s.key)) is None})}
    if known:
        out["hours_alone"] = sum(s.epochs * sec for s, sec in known) / 3600
        out["hours_to_compute"] = sum(s.epochs * sec for s, sec in known if s.status == "compute") / 3600
        unique_h = sum(s.epochs * sec for s, sec in known if s.status != "shared") / 3600
        out["saved_by_sharing_hours"] = 1 - unique_h / out["hours_alone"] if out["hours_alone"] else 0.0
    return out


def epoch_times(trials: list[PlannedTrial], configs: Mapping[str, Config], bench: Mapping | None
                ) -> tuple[dict[tuple[str, str], float | None], str]:
    """Per planned stage (stage, key): seconds per epoch, and where those numbers come from."""
    measured = store_epoch_seconds(trials)
    out: dict[tuple[str, str], float | None] = {}
    for t in trials:
        cfg = configs[f"{t.study}#{t.trial}"]
        for s in t.stages:
            sec = measured.get(s.kind)
            if sec is None and bench is not None:
                sec = bench_epoch_seconds(s.stage, cfg, bench)
            out[(s.stage, s.key)] = sec
    sources = []
    if measured:
        sources.append("the stage store (done.json seconds / epochs, per stage kind: "
                       + ", ".join(f"{k} {v:.3g} s" for k, v in sorted(measured.items())) + ")")
    if bench is not None:
        gpu = (bench.get("machine") or {}).get("gpu") or "CPU"
        sources.append(f"csvr.bench step on {gpu} ({bench.get('settings', {}).get('precision', '?')})")
    return out, " and ".join(sources) or "nothing measured: pass --epoch-seconds (csvr.bench step --json) or run a trial"


# ---------------------------------------------------------------------------------------------
# printing


def _cell(s: PlannedStage) -> str:
    mark_ = {"compute": "compute", "store": "store", "shared": f"shared<-{s.by}"}[s.status]
    return f"{s.stage}[{s.epochs}]:{mark_}"


def render(trials: list[PlannedTrial], summary: Mapping[str, Any], source: str, title: str) -> str:
    lines = [f"Plan: {title} (nothing is run)"]
    for t in trials:
        values = " ".join(f"{k.split('.')[-1]}={v}" for k, v in t.values.items())
        lines.append(f"  {t.study}#{t.trial} {values}")
        lines.append("      " + "  ".join(_cell(s) for s in t.stages))
    s = summary
    lines.append(f"Stages: {s['stages']} in {s['trials']} trials. Stage-epochs: {s['stage_epochs_alone']} if every "
                 f"trial ran alone, {s['stage_epochs_unique']} as unique stages ({s['saved_by_sharing']:.0%} saved by "
                 f"sharing), {s['stage_epochs_in_store']} already in the store, {s['stage_epochs_to_compute']} to compute")
    if "hours_alone" in s:
        lines.append(f"Estimated: {s['hours_to_compute']:.3g} h to compute ({s['hours_alone']:.3g} h if every trial ran "
                     f"alone; sharing saves {s['saved_by_sharing_hours']:.0%} of the hours)"
                     + (f"; {s['stages_without_time']} stage(s) to compute have no measured time" if
                        s["stages_without_time"] else ""))
    lines.append(f"Per-epoch times from: {source}")
    return "\n".join(lines)


def to_json(trials: list[PlannedTrial], summary: Mapping[str, Any], source: str, extra: Mapping | None = None) -> dict:
    return {"trials": [asdict(t) for t in trials], "totals": dict(summary), "epoch_seconds_from": source,
            **(extra or {})}


def plan(trials: list[PlannedTrial], configs: Mapping[str, Config], storage: Path, bench_json: str, title: str,
         json_path: str = "", extra: Mapping | None = None) -> dict:
    """Mark, estimate, print and (optionally) write the plan; returns the JSON document."""
    mark(trials, StageStore(storage / "stages"))
    bench = json.loads(Path(bench_json).read_text()) if bench_json else None
    per_epoch, source = epoch_times(trials, configs, bench)
    summary = totals(trials, per_epoch)
    print(render(trials, summary, source, title), flush=True)
    doc = to_json(trials, summary, source, extra)
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=1, default=str))
    return doc


def trial_configs(spec, args: argparse.Namespace, trials: list[PlannedTrial]) -> dict[str, Config]:
    from trainables.study import base_overrides, preset_name

    base = apply_overrides(preset(preset_name(args)), base_overrides(spec, args))
    return {f"{t.study}#{t.trial}": apply_overrides(base, {k: v for k, v in t.values.items()
                                                          if not (args.search != "grid" and k in spec.search_space)})
            for t in trials}


def plan_study(spec, args: argparse.Namespace, storage: Path) -> dict:
    """What `python studies/<name>.py --plan` prints."""
    trials = study_trials(spec, args)
    return plan(trials, trial_configs(spec, args, trials), storage, args.epoch_seconds,
                f"{spec.name} ({spec.title}), storage {storage}", args.plan_json)


# ---------------------------------------------------------------------------------------------
# the whole paper


def all_studies() -> list:
    import studies

    names = sorted(m.name for m in pkgutil.iter_modules(studies.__path__))
    return [importlib.import_module(f"studies.{n}").STUDY for n in names]


def study_args(spec, args: argparse.Namespace) -> argparse.Namespace:
    from trainables.study import parse_args

    argv = ["--preset", "paper", "--data", args.data, "--seeds", str(args.seeds)]
    for f in args.finetune_data:
        argv += ["--finetune-data", f]
    for s in args.set:
        argv += ["--set", s]
    out = parse_args(spec, argv)
    out.epoch_seconds, out.plan_json = args.epoch_seconds, ""
    return out


def paper_cells_share(trials: list[PlannedTrial]) -> dict[str, Any]:
    """Whether the PAPER_CELLS trials use only stages of Table I's f_i_full trial (seed 0): one pretraining."""
    cells = {}
    for study, values in PAPER_CELLS.items():
        found = [t for t in trials if t.study == study and t.values.get("train.seed") == 0
                 and all(t.values.get(k) == v for k, v in values.items())]
        cells[study] = {(s.stage, s.key) for s in found[0].stages if s.stage in STAGES}
    reference = cells["feature_source"]
    return {"one_pretraining": all(c <= reference for c in cells.values()),
            "joint_key": next(k for s, k in reference if s == "joint"),
            "stages": {study: sorted(s for s, _ in c) for study, c in cells.items()}}


def plan_paper(args: argparse.Namespace) -> dict:
    storage = Path(args.storage or Path.cwd() / "csvr_runs").expanduser().resolve()
    trials, configs = [], {}
    for spec in all_studies():
        sargs = study_args(spec, args)
        study = study_trials(spec, sargs)
        trials += study
        configs.update(trial_configs(spec, sargs, study))
    check = paper_cells_share(trials)
    doc = plan(trials, configs, storage, args.epoch_seconds, f"the whole paper (every study, paper preset), "
               f"storage {storage}", args.json, {"paper_cells": check})
    verdict = "share one pretraining" if check["one_pretraining"] else "do NOT share one pretraining"
    print(f"Table I f_i_full, III layer 6, IV mi_infonce, V both and Fig. 3 (0.75, 0.75) {verdict} "
          f"(joint key {check['joint_key']}; their pretraining stages: {check['stages']})")
    return doc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.plan", description=__doc__.split("\n")[0])
    p.add_argument("--paper", action="store_true", required=True, help="plan every study at the paper preset")
    p.add_argument("--storage", default=None, help="study storage whose stages/ to look in (default ./csvr_runs)")
    p.add_argument("--data", default="synthetic", help="pretraining dataset KIND:PATH")
    p.add_argument("--finetune-data", action="append", default=[], metavar="KIND:PATH")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--epoch-seconds", default="", metavar="JSON", help="a `python -m csvr.bench step --json` file")
    p.add_argument("--json", default="", help="also write the plan here")
    return p


def main(argv: list[str] | None = None) -> dict:
    return plan_paper(parser().parse_args(argv))


if __name__ == "__main__":
    main()
