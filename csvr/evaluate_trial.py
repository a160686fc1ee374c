"""Evaluation of a trial's representation: recognition and retrieval per downstream dataset (Section IV-B,
Tables I-V), the per-epoch k-NN probe of a pretraining stage, and Table II's pretext metrics.

    metrics, files = evaluate(cfg, spec, classifier, stages, device, artifacts)
    metrics = probe_metrics(cfg, model, "joint", device)            # {"probe/<kind>/knn_top1": ...}
    events, metrics, files = pretext(cfg, cache, stages, store, device, artifacts)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import torch

from csvr import evaluation as E
from csvr.config import Config, apply_overrides
from csvr.data.dataset import first_per_class
from csvr.data.loaders import dataset_kind, eval_loader, prepared, train_batches
from csvr.models.build import build_model, load_parts, pretrained_parts, seeded
from csvr.models.csvr import CSVR
from csvr.stages.finetune import finetune_stage, load_classifier
from csvr.stages.store import StageStore
from csvr.stages.table import IS_CLASSIFIER, stage_named
from csvr.training.finetune import Classifier, feature_model, retrieval_model


def evaluate(cfg: Config, spec: str, classifier: Classifier | None, stages: dict[str, Path], device: torch.device,
             artifacts: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Recognition (the finetuned classifier, or `eval.protocol` linear / knn on the frozen representation of
    `eval.feature_source`) and retrieval (`eval.retrieval_feature`: by default the pooled pretrained video network,
    Section IV-B), features averaged over `eval.retrieval_clips` clips per video, train split = gallery."""
    from csvr import reports

    cache, kind = prepared(spec, cfg), dataset_kind(spec)
    classes = json.loads((cache / "classes.json").read_text())
    gallery, query = split_features(retrieval_feature(cfg, stages, device), cfg, cache, device)
    if classifier is not None:
        probs, labels = E.video_scores(classifier, eval_loader(cache, cfg, "test", cfg.eval.test_clips), device)
    else:
        same = cfg.eval.retrieval_feature == "source"  # retrieval already read the frozen feature source
        frozen_gallery, frozen_query = (gallery, query) if same else split_features(
            frozen_feature(cfg, stages, device), cfg, cache, device)
        frozen_gallery = labelled(frozen_gallery, cfg.finetune.labels_per_class)
        probs, labels = frozen_scores(cfg, frozen_query, frozen_gallery, len(classes)), frozen_query[1]
    rec = E.recognition(probs, labels, len(classes))
    hits = E.retrieval_hits(*query, *gallery, cfg.eval.retrieval_ks)  # per test video, in test-split order
    ret = {name: float(hit.mean()) for name, hit in hits.items()}
    groups = E.group_accuracy(rec["per_class"], [c.get("group") for c in classes])
    metrics = {f"eval/{kind}/top1": rec["top1"], f"eval/{kind}/mean_class_acc": rec["mean_class_acc"],
               **{f"eval/{kind}/{k}": v for k, v in ret.items()},
               **{f"eval/{kind}/group/{g}": v for g, v in groups.items()}}
    files = reports.write_eval_artifacts(artifacts / "eval" / kind, rec, ret, classes, probs, labels, hits)
    return metrics, {f"eval/{kind}/{p.name}": str(p) for p in files}


Features = tuple[torch.Tensor, torch.Tensor]  # (V, D) per-video features and (V,) labels


def labelled(train: Features, per_class: int) -> Features:
    """The train videos that carry labels (`finetune.labels_per_class`; all when 0): the frozen protocols' data.
    Retrieval's gallery keeps every train video (its labels only say which match is right)."""
    rows = torch.tensor(first_per_class(train[1].tolist(), per_class), dtype=torch.long)
    return train[0][rows], train[1][rows]


def split_features(feature: torch.nn.Module, cfg: Config, cache: Path,
                   device: torch.device) -> tuple[Features, Features]:
    """(train, test) per-video features: mean over `eval.retrieval_clips` sliding-window clips."""
    clips = cfg.eval.retrieval_clips
    train = E.video_features(feature, eval_loader(cache, cfg, "train", clips), device)
    return train, E.video_features(feature, eval_loader(cache, cfg, "test", clips), device)


def retrieval_feature(cfg: Config, stages: dict[str, Path], device: torch.device) -> torch.nn.Module:
    """What retrieval ranks videos by (`eval.retrieval_feature`, csvr.training.finetune.retrieval_model); seeded
    like `frozen_feature`, so `source` is exactly that feature and scratch's random V-network is the same."""
    with seeded(cfg.train.seed, "finetune"):
        return retrieval_model(cfg, pretrained_parts(cfg, stages, device)).to(device)


def frozen_feature(cfg: Config, stages: dict[str, Path], device: torch.device) -> torch.nn.Module:
    """The representation of `eval.feature_source` as pretraining left it (random when not `eval.pretrained`)."""
    with seeded(cfg.train.seed, "finetune"):
        return feature_model(cfg.eval.feature_source, cfg, pretrained_parts(cfg, stages, device)).to(device)


def frozen_scores(cfg: Config, query: tuple[torch.Tensor, torch.Tensor], gallery: tuple[torch.Tensor, torch.Tensor],
                  classes: int) -> torch.Tensor:
    """(Q, classes) scores of the frozen-feature protocols: the train split is the k-NN gallery / probe data."""
    e = cfg.eval
    if e.protocol == "knn":
        return E.knn_scores(query[0], gallery[0], gallery[1], classes, e.knn_k, e.knn_temperature)
    return E.linear_probe(gallery[0], gallery[1], query[0], classes, seed=cfg.train.seed)


def probe_metrics(cfg: Config, model: CSVR, stage: str, device: torch.device) -> dict[str, float]:
    """The per-epoch k-NN probe of a pretraining stage: top-1 of the stage's `probe` feature on the pretraining
    dataset (train split = gallery, test split = queries, one centred clip per video)."""
    spec = cfg.data.source
    cache, kind = prepared(spec, cfg), dataset_kind(spec)
    classes = len(json.loads((cache / "classes.json").read_text()))
    feature = stage_named(stage).probe(model, cfg.model.feature_dim)
    was_training = model.training
    with torch.random.fork_rng(devices=[]):  # the loaders draw seeds: training must not depend on probing
        gallery = E.video_features(feature, eval_loader(cache, cfg, "train", 1), device)
        query = E.video_features(feature, eval_loader(cache, cfg, "test", 1), device)
    model.train(was_training)
    probs = E.knn_scores(query[0], gallery[0], gallery[1], classes, cfg.eval.knn_k, cfg.eval.knn_temperature)
    return {f"probe/{kind}/knn_top1": float((probs.argmax(1) == query[1]).float().mean())}


def is_classifier_config(cfg: Config) -> Config:
    """The IS classifier is a measuring instrument: a scratch classifier on every label, whatever
    `finetune.labels_per_class` gives the method."""
    return apply_overrides(cfg, {"eval.feature_source": "scratch", "finetune.labels_per_class": 0})


def is_classifier_stage(cfg: Config, device: torch.device) -> tuple[str, str, Callable[[Path], Iterator[dict]]]:
    """(store name, key, compute(out)) of the IS classifier on the pretraining data (Table II)."""
    scratch_cfg, spec = is_classifier_config(cfg), cfg.data.source
    key, name = IS_CLASSIFIER.key_of(scratch_cfg, spec), IS_CLASSIFIER.store_name(dataset_kind(spec))
    return name, key, lambda out: finetune_stage(scratch_cfg, spec, {}, out, key, device, stage=name)


def pretext(cfg: Config, cache: Path, stages: dict[str, Path], store: StageStore, device: torch.device,
            artifacts: Path) -> tuple[list[dict], dict[str, float], dict[str, str]]:
    """Table II's pretext metrics on the test split; the IS classifier is the shared scratch classifier."""
    from csvr import reports

    name, key, compute = is_classifier_stage(cfg, device)
    events = list(store.run(name, key, compute))
    is_classifier = load_classifier(is_classifier_config(cfg), cfg.data.source, {}, store.path(name, key), device)
    joint_file = f"epoch_{cfg.eval.pretrain_epoch}.pt" if cfg.eval.pretrain_epoch else "model.pt"
    model = build_model(cfg)
    load_parts(model, stages["joint"] / joint_file)
    model.to(device)
    test = train_batches(cache, cfg, cfg.data.batch_size, train=False, split="test")(0)
    train_mean = E.mean_frame_of(train_batches(cache, cfg, cfg.data.batch_size, train=False, split="train")(0))
    with seeded(cfg.train.seed, "pretext"):  # noise draws independent of which stages were reused before
        metrics = E.pretext_metrics(model, test, is_classifier, device, train_mean)
        samples = reports.write_samples(artifacts / "samples", model, next(iter(test)), device)
    return events, {f"pretext/{k}": v for k, v in metrics.items()}, {f"samples/{p.name}": str(p) for p in samples}
