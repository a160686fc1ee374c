"""The Ray Tune function trainable: one CSVR trial = `csvr.pipeline.run_trial` for one config.

    trainable = make_trainable(ctx, cpus=1, gpus=0.5)    # what trainables/study.py hands to the Tuner

Every epoch event goes to Tune (`tune.report` with a small checkpoint: workdir, stage, epoch, MLflow run
id) and to the trial's MLflow child run (step = global epoch counter). The heavy state lives in the stage
store (`<storage>/stages`) and the trial's workdir (`<run dir>/trials/<trial_id>`), so when Tune restarts
the trial (retry or `Tuner.restore`) `run_trial` resumes from the workdir and the same MLflow run
continues, logging only epochs it has not logged yet. A trial that already finished (its workdir holds
result.json) only reports its result again, so a study restored after its driver died reruns nothing.
A non-finite loss ends the trial with a FAILED run and no Tune retry (it would diverge again); any other
error (OOM included: on a shared GPU a retry can fit) fails the run with the reason and Tune retries.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import ray
from ray import tune

from csvr.config import Config, apply_overrides, flatten, preset
from csvr.data.layouts import parse_spec
from trainables import tracking
from trainables.tracking import TrialRun

RUN_FILE = "mlflow_run.json"  # in the trial workdir: the child run id, found again after a crash
PROGRESS_FILE = "progress.json"  # in each Tune checkpoint
RESULT_FILE = "result.json"  # in the trial workdir once the trial finished: its final Tune result
FAULT_ENV = "CSVR_FAULT_INJECT"  # test hook, see `maybe_inject_fault`


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one study invocation shares (passed with tune.with_parameters)."""
    study: str
    preset: str
    base: Mapping[str, Any]  # dotted overrides applied to the preset before the trial's own values
    mlflow_uri: str
    experiment_id: str
    parent_run_id: str
    run_dir: str  # <storage>/<study>/<run>: holds trials/<trial_id>
    store_root: str  # <storage>/stages: stages shared across trials and studies
    git_commit: str
    varied: tuple[str, ...] = field(default=())  # keys the study varies (names the MLflow run)
    fault: str = ""  # the driver's CSVR_FAULT_INJECT (test hook), so it reaches trials on every node


def trial_config(ctx: TrialContext, values: Mapping[str, Any]) -> Config:
    return apply_overrides(apply_overrides(preset(ctx.preset), ctx.base), values)


def finetune_kinds(cfg: Config) -> list[str]:
    return [parse_spec(s)[0] for s in (cfg.data.finetune_sources or (cfg.data.source,))]


def target_metric(cfg: Config) -> str:
    return f"eval/{finetune_kinds(cfg)[0]}/top1"


class GlobalSteps:
    """Maps (stage, epoch) to one epoch counter across stages, the same on every attempt (so resumed runs
    log later steps only). Stage order follows run_trial: pose, context, video, joint, finetune/<ds>."""

    def __init__(self, cfg: Config):
        from csvr.stages.table import FINETUNE, IS_CLASSIFIER, STAGES

        stages = [(s.name, s.epochs_of(cfg)) for s in STAGES.values()]
        stages += [(FINETUNE.store_name(k), cfg.finetune.epochs) for k in finetune_kinds(cfg)]
        stages.append((IS_CLASSIFIER.store_name(parse_spec(cfg.data.source)[0]), cfg.finetune.epochs))
        self.offsets, total = {}, 0
        for stage, epochs in stages:
            self.offsets.setdefault(stage, total)
            total += epochs
        self.total = total

    def __call__(self, stage: str, epoch: int) -> int:
        return self.offsets.get(stage, self.total) + epoch


def numeric(event: Mapping[str, Any], skip: tuple[str, ...] = ("kind", "stage", "epoch", "step")) -> dict:
    return {k: float(v) for k, v in event.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}


def load_progress(workdir: Path) -> dict:
    """The Tune checkpoint's progress if Tune restarted us from one, else what the workdir remembers."""
    progress = {}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            progress = json.loads((Path(d) / PROGRESS_FILE).read_text())
    run_file = Path(progress.get("workdir", workdir)) / RUN_FILE
    if "mlflow_run_id" not in progress and run_file.is_file():
        progress["mlflow_run_id"] = json.loads(run_file.read_text())["run_id"]
    return progress


def report(metrics: dict, progress: dict) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / PROGRESS_FILE).write_text(json.dumps(progress))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def maybe_inject_fault(values: Mapping[str, Any], epochs_seen: int, workdir: Path) -> None:
    """Test hook: CSVR_FAULT_INJECT='{"match": {"loss.sigma_p": 1.0}, "after_epochs": 1, "attempts": 1}'
    makes matching trials fail after that many epoch events, on their first `attempts` attempts (all
    attempts when absent). "kind": "error" (default, RuntimeError) | "oom" (torch.OutOfMemoryError) |
    "sleep" (write <workdir>/fault_sleeping with the node id, then sleep "seconds": time for a test to kill
    the node or the MLflow server). Unset, it does nothing."""
    spec = json.loads(os.environ.get(FAULT_ENV) or "null")
    if not spec or epochs_seen != spec.get("after_epochs", 0):
        return
    if any(str(values.get(k)) != str(v) for k, v in spec["match"].items()):
        return
    counter = workdir / "injected_faults"
    failed = int(counter.read_text()) if counter.is_file() else 0
    if failed >= spec.get("attempts", 10 ** 9):
        return
    counter.write_text(str(failed + 1))
    kind = spec.get("kind", "error")
    if kind == "sleep":
        (workdir / "fault_sleeping").write_text(json.dumps({"node_id": ray.get_runtime_context().get_node_id()}))
        time.sleep(float(spec["seconds"]))
        return
    import torch

    error = {"error": RuntimeError, "oom": torch.OutOfMemoryError}[kind]
    raise error(f"injected fault ({FAULT_ENV}) after {epochs_seen} epochs, attempt {failed + 1}")


def node_tags() -> dict[str, str]:
    """Where this attempt runs (a retried trial shows its last node)."""
    return {"csvr.node_id": ray.get_runtime_context().get_node_id(), "csvr.node_ip": ray.util.get_node_ip_address()}


def describe_trial(ctx: TrialContext, cfg: Config, values: Mapping[str, Any]) -> str:
    """The child run's description in the MLflow UI (tag mlflow.note.content)."""
    varied = ", ".join(f"`{k}` = {values[k]}" for k in ctx.varied if k in values)
    return (f"Trial of study **{ctx.study}** with {varied or 'the base config'}; preset {ctx.preset}, pretraining "
            f"data `{cfg.data.source}`. Target: `{target_metric(cfg)}`.\n\nParams: the full config (dotted keys). "
            "Metrics: one point per epoch, step = epoch counted across stages (pose, context, video, joint, "
            "finetune/<dataset>, is_classifier/<dataset>); eval/* and pretext/* at the end. Artifacts: "
            "eval/<dataset>/per_class.csv, per_video.csv, confusion.png, retrieval.json; samples/*.png.")


def open_run(ctx: TrialContext, cfg: Config, values: Mapping[str, Any], trial_id: str, workdir: Path,
             run_id: str | None) -> TrialRun:
    name = " ".join(f"{k.split('.')[-1]}={values[k]}" for k in ctx.varied if k in values) or trial_id
    tags = {"csvr.study": ctx.study, "csvr.trial_id": trial_id, "csvr.git_commit": ctx.git_commit,
            "csvr.dataset": parse_spec(cfg.data.source)[0], "csvr.preset": ctx.preset,
            "mlflow.note.content": describe_trial(ctx, cfg, values)}
    run = TrialRun.open(tracking.client(ctx.mlflow_uri), ctx.experiment_id, ctx.parent_run_id, run_id, name, tags)
    (workdir / RUN_FILE).write_text(json.dumps({"run_id": run.run_id}))
    run.set_tags(node_tags())
    run.log_params(flatten(cfg))
    return run


def csvr_trainable(config: dict, ctx: TrialContext) -> None:
    from csvr.pipeline import run_trial
    from csvr.training.loop import NonFiniteLossError

    if ctx.fault:
        os.environ[FAULT_ENV] = ctx.fault  # this process runs this one trial (reuse_actors=False)
    use_trial_cpus()
    trial_id = tune.get_context().get_trial_id()
    values = {k: v for k, v in config.items() if not k.startswith("_")}
    cfg = trial_config(ctx, values)
    workdir = Path(ctx.run_dir) / "trials" / trial_id
    workdir.mkdir(parents=True, exist_ok=True)
    progress = {"workdir": str(workdir), "store_root": ctx.store_root, "stages": {}, **load_progress(workdir)}
    workdir = Path(progress["workdir"])
    if (workdir / RESULT_FILE).is_file():  # finished, but Tune's state predates it (driver killed): no rerun
        report(json.loads((workdir / RESULT_FILE).read_text()), progress)
        return
    run = open_run(ctx, cfg, values, trial_id, workdir, progress.get("mlflow_run_id"))
    progress["mlflow_run_id"] = run.run_id
    try:
        maybe_inject_fault(values, 0, workdir)
        result = follow(run_trial(cfg, workdir, Path(ctx.store_root)), cfg, values, run, progress)
    except NonFiniteLossError as err:  # deterministic: a retry from the last checkpoint diverges again
        end_failed(run, err)
        report({target_metric(cfg): math.nan, "trial_failed": 1.0}, {**progress, "failed": str(err)})
        return
    except (SystemExit, KeyboardInterrupt):  # Tune stopped the trial (study interrupted, scheduler pruned it)
        end_stopped(run)
        raise
    except BaseException as err:  # noqa: BLE001 - the run must end FAILED whatever stopped it
        end_failed(run, err)
        raise
    run.finish()
    (workdir / RESULT_FILE).write_text(json.dumps(result))


def end_stopped(run: TrialRun) -> None:
    """Tune stops a trial by raising SystemExit(0) in it: a stop, not a failure. The run ends KILLED, the
    status the driver gives it too (mark_interrupted, mark_pruned), so whichever of the two writes last, the
    run is not FAILED; the driver adds why (csvr.interrupted, csvr.pruned)."""
    with contextlib.suppress(Exception):
        run.stop("Tune stopped this trial (the study was interrupted or the scheduler pruned it)")


def end_failed(run: TrialRun, err: BaseException) -> None:
    """Mark the run FAILED with the reason; when MLflow itself is what failed, the driver closes the run."""
    with contextlib.suppress(Exception):
        run.fail(f"{type(err).__name__}: {err}", traceback.format_exc())


def follow(events, cfg: Config, values: Mapping[str, Any], run: TrialRun, progress: dict) -> dict:
    """Turn run_trial's events into MLflow logging and Tune reports; returns the final Tune result."""
    steps, target, epochs_seen, final = GlobalSteps(cfg), target_metric(cfg), 0, {}
    workdir = Path(progress["workdir"])
    for event in events:
        if event["kind"] == "stage":
            name = event["stage"]
            progress["stages"][name] = {k: event.get(k) for k in ("status", "seconds", "key", "path")}
            run.set_tags({f"csvr.stage.{name}": event["status"]})
        elif event["kind"] == "epoch":
            step = steps(event["stage"], event["epoch"])
            metrics = numeric(event)  # the epoch's means
            run.log_metrics(metrics, step)
            progress.update(stage=event["stage"], epoch=event["epoch"], global_epoch=step)
            report({**metrics, target: math.nan, "global_epoch": step}, progress)
            epochs_seen += 1
            maybe_inject_fault(values, epochs_seen, workdir)
        elif event["kind"] == "result":
            log_result(event, run, progress, steps.total)
            totals = {"compute_seconds": float(event.get("compute_seconds", 0.0)),
                      "saved_seconds": float(event.get("saved_seconds", 0.0))}
            progress.update(done=True)
            final = {target: math.nan, **numeric(event["metrics"], ()), **totals, "global_epoch": steps.total}
            report(final, progress)
    return final


def log_result(event: Mapping[str, Any], run: TrialRun, progress: dict, step: int) -> None:
    run.log_metrics(numeric(event["metrics"], ()), step)
    run.set_tags({"csvr.compute_seconds": f"{event.get('compute_seconds', 0.0):.1f}",
                  "csvr.saved_seconds": f"{event.get('saved_seconds', 0.0):.1f}"})
    artifacts = dict(event.get("artifacts", {}))
    workdir = Path(progress["workdir"])
    lines = [f"trial workdir: {workdir}", f"stage store: {progress.get('store_root', '')}"]
    lines += [f"stage {name}: {s['status']} key={s['key']} path={s.get('path')} seconds={s['seconds']:.1f}"
              for name, s in progress["stages"].items()]
    if "checkpoint.txt" in artifacts:  # the pipeline's own list of stage folders comes first
        lines = [Path(artifacts["checkpoint.txt"]).read_text().rstrip()] + lines
    (workdir / "checkpoint.txt").write_text("\n".join(lines) + "\n")
    run.log_files({**artifacts, "checkpoint.txt": workdir / "checkpoint.txt"})


def use_trial_cpus() -> None:
    """One torch thread per CPU the trial holds: oversubscribed threads on shared cores spin-wait in OpenMP and ran
    a tiny step ~10x slower on a 2-core machine (DESIGN.md, "Making CSVR learn at the tiny size")."""
    import torch

    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))


def make_trainable(ctx: TrialContext, cpus: float, gpus: float):
    resources = {"cpu": cpus, "gpu": gpus} if gpus else {"cpu": cpus}
    return tune.with_resources(tune.with_parameters(csvr_trainable, ctx=ctx), resources)
