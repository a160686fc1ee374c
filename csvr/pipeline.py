"""The full CSVR pipeline for one config, as resumable stages shared between trials.

    for event in run_trial(cfg, workdir, store_root):
        ...   # {"kind": "stage" | "epoch" | "result", ...}

Stages (Section III-E / IV-B): branch pretraining ("pose", "context", then "video" on the frozen
branches), joint pretraining ("joint", Eq. 9), finetuning per downstream dataset, then evaluation.
Each stage's output lives in `store_root/<stage>/<key>/`, where key is a hash of exactly the config
fields the stage depends on (`csvr.stages.table`), so trials that agree on them compute it once: all σ-grid
trials share branch pretraining, Table I's trials share pretraining and differ only in finetuning.
A file lock per stage key makes concurrent trials (on any node that sees the store) wait for the one
that computes (`csvr.stages.store`). Each stage checkpoints every epoch inside its folder, so a restarted
trial resumes. Every part is initialised from a seed derived from (train.seed, part), so a stage's result
depends only on its key: shared and unshared runs give the same numbers.

Where the parts live: loaders `csvr.data.loaders`, model building `csvr.models.build`, the stage table and
store `csvr.stages.table` / `csvr.stages.store`, stage computation `csvr.stages.pretrain` /
`csvr.stages.finetune`, evaluation `csvr.evaluate_trial`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from csvr.config import Config, to_dict
from csvr.data.loaders import dataset_kind, prepared
from csvr.evaluate_trial import evaluate, pretext
from csvr.stages.finetune import finetune_stage, load_classifier, recipe_metrics
from csvr.stages.pretrain import pretrain_stage
from csvr.stages.store import StageStore
from csvr.stages.table import FINETUNE, needed_stages, stage_key
from csvr.training.loop import resolve_device


def run_trial(cfg: Config, workdir: Path, store_root: Path) -> Iterator[dict]:
    """Branch pretraining -> joint pretraining -> finetune -> evaluate, yielding events (module docstring)."""
    from csvr import reports

    device = resolve_device(cfg.train.device)
    store, workdir = StageStore(Path(store_root)), Path(workdir)
    cache = prepared(cfg.data.source, cfg)
    stages: dict[str, Path] = {}
    events: list[dict] = []
    for stage in needed_stages(cfg):
        key = stage_key(stage, cfg)
        compute = lambda out, s=stage, k=key: pretrain_stage(s, cfg, cache, stages, out, k, device)  # noqa
        for ev in store.run(stage, key, compute):
            events.append(ev)
            yield ev
        stages[stage] = store.path(stage, key)
    metrics: dict[str, float] = {}
    artifacts = workdir / "artifacts"
    files = {"config.json": str(reports.write_json(artifacts / "config.json", to_dict(cfg)))}
    for spec in cfg.data.finetune_sources or (cfg.data.source,):
        classifier = None
        if cfg.eval.protocol == "finetune":
            key, name = FINETUNE.key_of(cfg, spec), FINETUNE.store_name(dataset_kind(spec))
            for ev in store.run(name, key, lambda out, s=spec, k=key: finetune_stage(cfg, s, stages, out, k, device)):
                events.append(ev)
                yield ev
            classifier = load_classifier(cfg, spec, stages, store.path(name, key), device)
            metrics.update(recipe_metrics(cfg, spec))  # what finetuning ran with (DESIGN.md)
        m, f = evaluate(cfg, spec, classifier, stages, device, artifacts)
        metrics.update(m)
        files.update(f)
    if "joint" in stages:
        extra_events, pretext_metrics, samples = pretext(cfg, cache, stages, store, device, artifacts)
        for ev in extra_events:
            events.append(ev)
            yield ev
        metrics.update(pretext_metrics)
        files.update(samples)
    files["checkpoint.txt"] = str(reports.write_text(artifacts / "checkpoint.txt", "\n".join(
        f"{s}: {p}" for s, p in stages.items()) + "\n"))
    stage_events = [e for e in events if e["kind"] == "stage"]
    yield {"kind": "result", "metrics": metrics, "artifacts": files,
           "compute_seconds": sum(e["seconds"] for e in stage_events if e["status"] == "computed"),
           "saved_seconds": sum(e["seconds"] for e in stage_events if e["status"] == "reused"),
           "stages": {e["stage"]: e["status"] for e in stage_events}}
