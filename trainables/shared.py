"""The stages two or more of a study's trials share, computed before the trials start: pretraining stages and the
inception-score classifier.

    stages = shared_stages(configs, sampled=())   # [SharedStage(stage, key, cfg, upstream, level)], pipeline order
    outcome = pretrain_shared(stages, store_root, mlflow_uri, parent_run_id, cpus_per_trial=1, gpus_per_trial=0,
                              say=print)          # SharedOutcome: computed (seconds), found, failed (reason)

Without this step the first trial computes a shared stage on the CPUs it holds (one by default) while every
other trial that needs it waits on the stage lock (`csvr.stages.store`) with its CPUs idle: on 2 cores the
σ grid's branch stages ran on one torch thread for 6.5 of the main command's 11.7 minutes. Here each shared
stage is one Ray task; a stage's task waits for its upstream stages' tasks, and the CPUs of the cluster are
divided among the stages that can run at the same time (`stage_cpus`), up to one node's worth. The trials
then find the stages done and reuse them. A stage that fails here is reported and left to the trials: each
trial that needs it computes it again and, if it fails again, is recorded as failed while the study goes on.

Each stage's per-epoch metrics go to the study's parent MLflow run (tag `csvr.shared.<stage>`), at the step
the trials use for that stage (`GlobalSteps`); the trials' runs tag the stage `reused`. Where a study shares
several stages of one name (one pose stage per seed), each carries the key fields that tell them apart: on the
console ("pose train.seed=5") and in the parent run's metric and tag names ("train/pose/loss/train.seed_5").
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from csvr.config import Config, flatten
from csvr.stages.store import StageStore, read_done
from csvr.stages.table import IS_CLASSIFIER, STAGE_KEYS, STAGES, stage_key
from trainables.console import clock

EPOCH_FILE = ".shared_epoch.json"  # in the stage's store folder while it computes: {"epoch": k, "epochs": n}
PROGRESS_SECONDS = 180.0  # at most one "still computing" line per this many seconds


@dataclass(frozen=True)
class SharedStage:
    stage: str  # pose | context | video | joint | is_classifier/<dataset kind>
    key: str  # csvr.stages.table.stage_key
    cfg: Config  # the first trial's config that needs it (every trial that shares the key computes the same)
    upstream: tuple[str, ...]  # its upstream stages (their store folders are read by this stage)
    level: int  # 0: no upstream stage among the shared ones; else one more than its deepest shared upstream
    tell: tuple[tuple[str, str], ...] = ()  # its key fields that differ among the study's shared stages of its name

    @property
    def id(self) -> str:
        return f"{self.stage}:{self.key}"

    @property
    def label(self) -> str:
        """For the console: "pose", or "pose train.seed=5" when the study shares a pose stage per seed."""
        return " ".join([self.stage, *(f"{k}={v}" for k, v in self.tell)])

    @property
    def suffix(self) -> str:
        """For the parent run's metric and tag names: "", or "/train.seed_5" (MLflow names allow no "=")."""
        return "".join("/" + re.sub(r"[^\w.\-]", "_", f"{k}_{v}")[:60] for k, v in self.tell)


def shared_stages(configs: Sequence[Config], sampled: Iterable[str] = ()) -> list[SharedStage]:
    """Stages (`shareable`) that two or more of `configs` need with the same key, in pipeline order.
    `sampled`: config keys an Optuna search draws per trial; a stage that reads one is never shared."""
    from trainables.plan import trial_stages

    sampled = tuple(sampled)
    count: Counter = Counter()
    first: dict[tuple[str, str], Config] = {}
    for i, cfg in enumerate(configs):
        for s in trial_stages(cfg, sampled, f"#{i}"):
            if shareable(s.stage) and not s.key.startswith("sampled:"):
                count[(s.stage, s.key)] += 1
                first.setdefault((s.stage, s.key), cfg)
    out: list[SharedStage] = []
    levels: dict[tuple[str, str], int] = {}
    for (stage, key), n in count.items():
        if n < 2:
            continue
        cfg = first[(stage, key)]
        ups = STAGES[stage].upstream if stage in STAGES else ()
        level = max((levels[(u, stage_key(u, cfg))] + 1 for u in ups if (u, stage_key(u, cfg)) in levels), default=0)
        levels[(stage, key)] = level
        out.append(SharedStage(stage, key, cfg, ups, level))
    return told_apart(out)


def told_apart(stages: list[SharedStage]) -> list[SharedStage]:
    """Each stage with the key fields that tell it from the other shared stages of its name (a seeds study shares
    one pose stage per seed: their parent-run curves and tags must not land on one name)."""
    flats = [flatten(s.cfg) for s in stages]
    differing: dict[str, list[str]] = {}  # stage name -> its key fields that differ within the name
    for name in {s.stage for s in stages}:
        group = [f for s, f in zip(stages, flats) if s.stage == name]
        differing[name] = [k for k in STAGE_KEYS[name.split("/")[0]] if len({str(f[k]) for f in group}) > 1]
    return [replace(s, tell=tuple((k, str(f[k])) for k in differing[s.stage])) for s, f in zip(stages, flats)]


def shareable(stage: str) -> bool:
    """The pretraining stages and the IS classifier (one per dataset; it reads no pretraining stage). Finetuning
    is keyed by the whole config, so two trials never share it."""
    return stage in STAGES or stage.startswith(IS_CLASSIFIER.name + "/")


def stage_cpus(stages: Sequence[SharedStage], cluster_cpus: float, node_cpus: float, cpus_per_trial: float) -> dict:
    """CPUs for each stage's task: the cluster's CPUs divided among the stages of its level (those that can run
    at once), at least a trial's share, at most one node's (a task runs on one node). {(stage, key): cpus}"""
    width = Counter(s.level for s in stages)
    return {(s.stage, s.key): float(max(cpus_per_trial, min(node_cpus, int(cluster_cpus // width[s.level]))))
            for s in stages}


def compute_stage(stage: SharedStage, store_root: str, threads: int, parent_uri: str, parent_run_id: str,
                  *upstream_done: Any) -> dict:
    """Ray task: compute one shared stage into the store (or find it done), logging its epochs to the parent
    run; returns its "stage" event. `upstream_done`: the upstream tasks' events (Ray runs this task after them)."""
    import torch

    from csvr.data.loaders import prepared
    from csvr.evaluate_trial import is_classifier_stage
    from csvr.stages.pretrain import pretrain_stage
    from csvr.training.loop import resolve_device
    from trainables.csvr_trainable import GlobalSteps, numeric
    from trainables.tracking import TrialRun, client

    torch.set_num_threads(max(1, threads))  # the CPUs this task holds, no more (see use_trial_cpus)
    cfg, store = stage.cfg, StageStore(Path(store_root))
    device, cache = resolve_device(cfg.train.device), prepared(cfg.data.source, cfg)
    if stage.stage in STAGES:
        upstream = {u: store.path(u, stage_key(u, cfg)) for u in stage.upstream}
        epochs = STAGES[stage.stage].epochs_of(cfg)

        def compute(folder: Path):
            return pretrain_stage(stage.stage, cfg, cache, upstream, folder, stage.key, device)
    else:  # the IS classifier, as csvr.evaluate_trial.pretext computes it
        name, key, compute = is_classifier_stage(cfg, device)
        assert (name, key) == (stage.stage, stage.key), (name, key, stage)
        epochs = flatten(cfg)[IS_CLASSIFIER.epochs]
    out, steps = store.path(stage.stage, stage.key), GlobalSteps(cfg)
    parent, last = TrialRun(client(parent_uri), parent_run_id, {}, {}), {}
    for event in store.run(stage.stage, stage.key, compute):
        if event["kind"] == "epoch":
            (out / EPOCH_FILE).write_text(json.dumps({"epoch": event["epoch"], "epochs": epochs}))
            metrics = {f"{name}{stage.suffix}": value for name, value in numeric(event).items()}
            parent.log_metrics(metrics, steps(stage.stage, event["epoch"]))
        elif event["kind"] == "stage":
            last = event
    (out / EPOCH_FILE).unlink(missing_ok=True)
    return last


@dataclass
class SharedOutcome:
    computed: dict  # "stage:key" -> seconds, computed here
    found: list  # "stage:key" already done in the store
    failed: dict  # "stage:key" -> the error's first line (the trials compute it again)

    @property
    def seconds(self) -> float:
        return sum(self.computed.values())


def parent_tags(stages: Sequence[SharedStage], outcome: SharedOutcome) -> dict[str, str]:
    """The parent run's tags: csvr.shared.<stage><suffix> = computed / failed / found, with the key."""
    out = {}
    for s in stages:
        tag = f"csvr.shared.{s.stage}{s.suffix}"
        if s.id in outcome.computed:
            out[tag] = f"computed before the trials in {outcome.computed[s.id]:.1f} s (key {s.key})"
        elif s.id in outcome.failed:
            out[tag] = f"failed before the trials: {outcome.failed[s.id]}"
        elif s.id in outcome.found:
            out[tag] = f"found in the store (key {s.key})"
    return out


def pretrain_shared(stages: Sequence[SharedStage], store_root: str, parent_uri: str, parent_run_id: str,
                    cpus_per_trial: float, gpus_per_trial: float, say: Callable[[str], None]) -> SharedOutcome:
    """Compute `stages` as Ray tasks (module docstring) and wait for them; failures are reported, not raised."""
    import ray

    store = StageStore(Path(store_root))
    outcome = SharedOutcome({}, [], {})
    todo = [s for s in stages if read_done(store.path(s.stage, s.key)) is None]
    outcome.found = [s.id for s in stages if s not in todo]
    if not todo:
        return outcome
    cpus = stage_cpus(todo, *cluster_cpus(gpus_per_trial), cpus_per_trial)
    say("Pretraining the stages the trials share: " + ", ".join(
        f"{s.label} ({cpus[(s.stage, s.key)]:g} CPU{'s' if cpus[(s.stage, s.key)] != 1 else ''})" for s in todo))
    refs: dict[tuple[str, str], Any] = {}
    task = ray.remote(compute_stage)
    for s in todo:
        ups = [refs[(u, stage_key(u, s.cfg))] for u in s.upstream if (u, stage_key(u, s.cfg)) in refs]
        c = cpus[(s.stage, s.key)]
        refs[(s.stage, s.key)] = task.options(num_cpus=c, num_gpus=gpus_per_trial, max_retries=0).remote(
            s, store_root, int(c), parent_uri, parent_run_id, *ups)
    wait_for([(s, refs[(s.stage, s.key)]) for s in todo], store, outcome, say)
    return outcome


def wait_for(tasks: Sequence[tuple[SharedStage, Any]], store: StageStore, outcome: SharedOutcome,
             say: Callable[[str], None]) -> None:
    """One line per finished (or failed) stage, and one per PROGRESS_SECONDS with the running stages' epochs.
    `tasks`: (stage, its task's ObjectRef)."""
    import ray

    stage_of = {ref: s for s, ref in tasks}
    pending, started = [ref for _, ref in tasks], time.monotonic()
    while pending:
        try:
            done, pending = ray.wait(pending, num_returns=1, timeout=PROGRESS_SECONDS)
        except KeyboardInterrupt:  # Ctrl-C: stop the tasks too (on a cluster they would outlive the driver)
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        if not done:
            say(f"  ... {running(store, [stage_of[r] for r in pending])} ({clock(time.monotonic() - started)} so far)")
            continue
        s = stage_of[done[0]]
        try:
            event = ray.get(done[0])
        except Exception as err:  # noqa: BLE001 - the trials compute it again and report their own failure
            first = next((line for line in str(err).splitlines()[::-1] if line.strip()), type(err).__name__)
            outcome.failed[s.id] = first.strip()[:200]
            say(f"  shared stage {s.label} failed ({outcome.failed[s.id]}); "
                "the trials that need it will compute it themselves")
            continue
        if event.get("status") == "computed":
            outcome.computed[s.id] = float(event["seconds"])
            say(f"  shared stage {s.label} computed in {clock(event['seconds'])}")
        else:
            outcome.found.append(s.id)


def running(store: StageStore, stages: Iterable[SharedStage]) -> str:
    parts = []
    for s in stages:
        path = store.path(s.stage, s.key) / EPOCH_FILE
        try:
            e = json.loads(path.read_text())
            parts.append(f"{s.label} epoch {e['epoch']}/{e['epochs']}")
        except (OSError, ValueError, KeyError):
            parts.append(f"{s.label} waiting")
    return ", ".join(parts)


def cluster_cpus(gpus_per_trial: float) -> tuple[float, float]:
    """(CPUs of the cluster, CPUs of the largest node with `gpus_per_trial` GPUs): what the stages divide."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    fit = [r.get("CPU", 0.0) for r in nodes if r.get("GPU", 0.0) >= gpus_per_trial] or [1.0]
    return sum(r.get("CPU", 0.0) for r in nodes), max(fit)
