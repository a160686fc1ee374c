"""Computing a finetuning stage (a classifier per downstream dataset, Section IV-B / Table I) into its store
folder, resumable per epoch, and loading the finished classifier.

    for event in finetune_stage(cfg, "ucf101:/data", stages, out, key, device): ...
    classifier = load_classifier(cfg, "ucf101:/data", stages, out, device)

The same code trains the inception-score classifier of Table II (a scratch classifier, `stage="is_classifier/.."`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import torch

from csvr.config import Config
from csvr.data.loaders import dataset_kind, finetune_batches, prepared
from csvr.models.build import pretrained_parts, seeded
from csvr.stages.store import finish
from csvr.training import checkpoint as ckpt
from csvr.training.finetune import Classifier, feature_model, finetune_epochs, make_finetune_optim


def finetune_stage(cfg: Config, spec: str, stages: dict[str, Path], out: Path, key: str,
                   device: torch.device, stage: str = "") -> Iterator[dict]:
    """Finetune a classifier from `cfg.eval.feature_source` on dataset `spec` with that dataset's recipe
    (`FinetuneConfig.recipe`), on clips sampled like evaluation's (`finetune_batches`); resumable per epoch.
    Each epoch event carries `<stage>/lr`, the learning rate it ran at."""
    cache = prepared(spec, cfg)
    kind, ft = dataset_kind(spec), cfg.finetune
    stage = stage or f"finetune/{kind}"
    classes = len(json.loads((cache / "classes.json").read_text()))
    with seeded(cfg.train.seed, "finetune"):
        model = Classifier(feature_model(cfg.eval.feature_source, cfg, pretrained_parts(cfg, stages, device)),
                           classes, ft.dropout).to(device)
    opt, sched = make_finetune_optim(model, ft, kind, ft.epochs)
    start, seconds = 0, 0.0
    torch.manual_seed(cfg.train.seed * 1000 + 7)
    if (out / "progress.pt").exists():
        saved = ckpt.load(out / "progress.pt", device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
        sched.load_state_dict(saved["sched"])
        start, seconds = int(saved["epoch"]), float(saved["seconds"])
        ckpt.set_rng_state(saved["rng"])
    batches = finetune_batches(cache, cfg, ft.batch_size)
    t0 = time.perf_counter()
    for ev in finetune_epochs(model, batches, opt, sched, start, ft.epochs, ft.steps_per_epoch, device):
        ckpt.save(out / "progress.pt", model=model.state_dict(), optim=opt.state_dict(), sched=sched.state_dict(),
                  epoch=torch.tensor(ev["epoch"]), seconds=torch.tensor(seconds + time.perf_counter() - t0),
                  rng=ckpt.rng_state())
        yield {"kind": "epoch", "stage": stage, "epoch": ev["epoch"], f"{stage}/loss": ev["loss"],
               f"{stage}/acc": ev["acc"], f"{stage}/lr": ev["lr"]}
    ckpt.save(out / "model.pt", model=model.state_dict())
    (out / "progress.pt").unlink(missing_ok=True)
    yield finish(out, stage, key, seconds + time.perf_counter() - t0)


def recipe_metrics(cfg: Config, spec: str) -> dict[str, float]:
    """The recipe finetuning on `spec` ran with, as trial metrics: finetune/<kind>/lr_per_sample, .../weight_decay
    (`FinetuneConfig.recipe`; the per-epoch scheduled lr is the epoch events' finetune/<kind>/lr)."""
    kind = dataset_kind(spec)
    lr_per_sample, weight_decay = cfg.finetune.recipe(kind)
    return {f"finetune/{kind}/lr_per_sample": lr_per_sample, f"finetune/{kind}/weight_decay": weight_decay}


def load_classifier(cfg: Config, spec: str, stages: dict[str, Path], out: Path, device: torch.device) -> Classifier:
    cache = prepared(spec, cfg)
    classes = len(json.loads((cache / "classes.json").read_text()))
    model = Classifier(feature_model(cfg.eval.feature_source, cfg, pretrained_parts(cfg, stages, device)), classes,
                       cfg.finetune.dropout).to(device)
    model.load_state_dict(ckpt.load(out / "model.pt", device)["model"])
    return model
