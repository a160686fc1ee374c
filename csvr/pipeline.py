"""The full CSVR pipeline for one config, as resumable stages shared between trials.

    for event in run_trial(cfg, workdir, store_root):
        ...   # {"kind": "stage" | "epoch" | "result", ...}

Stages (Section III-E / IV-B): branch pretraining ("pose", "context", then "video" on the frozen
branches), joint pretraining ("joint", Eq. 9), finetuning per downstream dataset, then evaluation.
Each stage's output lives in `store_root/<stage>/<key>/`, where key is a hash of exactly the config
fields the stage depends on (`STAGE_KEYS`), so trials that agree on them compute it once: all σ-grid
trials share branch pretraining, Table I's trials share pretraining and differ only in finetuning.
A file lock per stage key makes concurrent trials (on any node that sees the store) wait for the one
that computes. Each stage checkpoints every epoch inside its folder, so a restarted trial resumes.
Every part is initialised from a seed derived from (train.seed, part), so a stage's result depends only
on its key: shared and unshared runs give the same numbers.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Sampler

from csvr import evaluation as E
from csvr.config import Config, apply_overrides, finetune_for, flatten, to_dict
from csvr.data.augment import DeviceBatches
from csvr.data.dataset import ClipDataset, EvalClips, default_context, seed_worker
from csvr.data.sources import cache_dir_for, ensure_prepared
from csvr.models.csvr import CSVR, build_context, build_pose
from csvr.models.integration import INTEGRATIONS
from csvr.models.video_gan import build_video_gan
from csvr.training import checkpoint as ckpt
from csvr.training.finetune import (Classifier, IntegratedFeature, PooledMotionFeature, Pretrained, VideoFeature,
                                    feature_model, finetune_epochs, make_finetune_optim)
from csvr.training.loop import StageState, make_optimizers, place_model, resolve_device, train_stage

STORE_VERSION = "1"
_DATA = ("data.source", "data.cache_size", "data.split", "data.clip_len", "data.future_len", "data.stride",
         "data.size", "data.batch_size", "data.max_videos")
_OPTIM = ("train.seed", "train.lr_per_sample", "train.momentum", "train.weight_decay", "train.steps_per_epoch",
          "train.amp", "train.gan_update", "train.optimizer")
_POSE = _DATA + _OPTIM + ("model.joints", "model.pose_channels", "model.pose_noise_dim", "loss.pose_l2",
                          "loss.gradient_penalty", "loss.adversarial", "train.pose_epochs")
_CONTEXT = _DATA + _OPTIM + ("model.backbone", "model.width", "model.feature_dim", "model.head_hidden",
                             "loss.context", "loss.temperature", "loss.context_negatives", "train.context_epochs")
_VIDEO = tuple(dict.fromkeys(_POSE + _CONTEXT + (
    "model.integration", "model.pose_encoder_layer", "model.video_noise_dim", "model.gen_channels",
    "model.disc_channels", "model.video_gan", "model.video_levels", "loss.video_l2", "loss.generation_target",
    "train.video_epochs")))
_JOINT = _VIDEO + ("loss.sigma_p", "loss.sigma_c", "loss.sigma_scales_discriminator", "train.joint_epochs",
                   "train.checkpoint_epochs")
_FINETUNE = tuple(k for k in flatten(Config()) if k.startswith("finetune."))
# The inception-score classifier (a scratch classifier on the pretraining data, Table II): no pretrained part,
# so no loss weight, branch or epoch count of pretraining enters it; a sigma grid trains it once.
_IS_CLASSIFIER = tuple(k for k in _DATA if k != "data.batch_size") + (
    "train.seed", "model.backbone", "model.width") + _FINETUNE
# The config fields each stage's output depends on: the sharing rule, in one place.
STAGE_KEYS: dict[str, tuple[str, ...]] = {"pose": _POSE, "context": _CONTEXT, "video": _VIDEO, "joint": _JOINT,
                                          "is_classifier": _IS_CLASSIFIER}
# The pretraining stages each feature source needs (see csvr.training.finetune for what they initialise).
NEEDS: dict[str, tuple[str, ...]] = {
    "scratch": (), "f_d": ("pose",), "f_s": ("context",), "f_i_adain": ("pose", "context"),
    "f_i_concat": ("pose", "context"), "f_i_full": ("pose", "context", "video", "joint")}

# What the per-epoch k-NN probe of each pretraining stage reads from the model being trained.
PROBE_FEATURE: dict[str, Callable[[CSVR, int], torch.nn.Module]] = {
    "pose": lambda m, c: PooledMotionFeature(m.pose_generator),
    "context": lambda m, c: VideoFeature(m.context.video_net, m.context.video_head, c),
    "video": lambda m, c: IntegratedFeature(m.context, m.pose_generator, m.integration, c),
    "joint": lambda m, c: IntegratedFeature(m.context, m.pose_generator, m.integration, c)}


def needed_stages(cfg: Config) -> tuple[str, ...]:
    """The pretraining stages a trial runs: those its feature source reads, none for random features."""
    return NEEDS[cfg.eval.feature_source] if cfg.eval.pretrained else ()


# The parameters each pretraining stage saves (prefixes of CSVR.state_dict keys); video/joint save all.
SAVES = {"pose": ("pose_generator.encoder.", "pose_generator.decoder.", "pose_discriminator."),
         "context": ("context.",), "video": ("",), "joint": ("",)}
UPSTREAM = {"pose": (), "context": (), "video": ("pose", "context"), "joint": ("video",)}


def stage_key(stage: str, cfg: Config, extra: dict | None = None) -> str:
    flat = flatten(cfg)
    fields = {k: flat[k] for k in STAGE_KEYS.get(stage, ())} | (extra or {})
    blob = json.dumps({"v": STORE_VERSION, "stage": stage, **fields}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# the stage store


DONE = "done.json"


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary name beside `path`, flush it to disk, then rename it over `path`: a reader
    (or a crash) sees the old file, the new file or none, never half of one."""
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _outputs(out: Path) -> dict[str, int]:
    """{file name: size} of a finished stage's files (model.pt, epoch_N.pt): what done.json vouches for."""
    return {p.name: p.stat().st_size for p in sorted(out.iterdir())
            if p.is_file() and p.name != DONE and not p.name.startswith(".")}


def _valid_checkpoint(path: Path) -> bool:
    """torch.save writes a zip: a truncated file has no end-of-archive record."""
    import zipfile

    return zipfile.is_zipfile(path)


def read_done(out: Path) -> dict | None:
    """done.json of a finished stage, or None when the stage is not (validly) done: no marker, an unreadable
    one (empty, truncated JSON), or a file it vouches for that is missing or of another size (a truncated
    model.pt). Markers from before sizes were recorded are checked by opening their checkpoints' zip index."""
    try:
        done = json.loads((out / DONE).read_text())
        files = done.get("files")
        if files is None:
            return done if all(_valid_checkpoint(p) for p in out.glob("*.pt")) else None
        return done if all((out / name).stat().st_size == size for name, size in files.items()) else None
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class StageStore:
    root: Path

    def path(self, stage: str, key: str) -> Path:
        return Path(self.root) / stage.replace("/", "_") / key

    def run(self, stage: str, key: str, compute: Callable[[Path], Iterator[dict]]) -> Iterator[dict]:
        """Yield `compute(dir)`'s events unless the stage is done; always end with a "stage" event.
        A stage whose marker or outputs are unreadable is not done: it is recomputed under the lock."""
        out = self.path(stage, key)
        done = read_done(out)
        if done is None:
            out.mkdir(parents=True, exist_ok=True)
            with FileLock(str(out) + ".lock"):
                done = read_done(out)  # somebody may have finished it while we waited
                if done is None:
                    _discard_unreadable(out)
                    yield from compute(out)
                    return
        yield {"kind": "stage", "stage": stage, "status": "reused", "seconds": done["seconds"], "key": key,
               "path": str(out)}


def _discard_unreadable(out: Path) -> None:
    """Before (re)computing under the lock: drop an invalid done.json and set aside an unreadable progress.pt,
    so the stage starts over (from its last epoch when progress.pt is fine) instead of failing on them."""
    import logging

    log = logging.getLogger(__name__)
    if (out / DONE).exists():
        log.warning("stage %s: done.json or its outputs are unreadable; recomputing the stage", out)
        (out / DONE).unlink()
    progress = out / "progress.pt"
    if progress.exists() and not _valid_checkpoint(progress):
        log.warning("stage %s: progress.pt is unreadable; set aside as .progress.pt.corrupt, starting over", out)
        progress.replace(out / ".progress.pt.corrupt")


def _finish(out: Path, stage: str, key: str, seconds: float) -> dict:
    marker = {"seconds": seconds, "stage": stage, "key": key, "files": _outputs(out)}
    _write_atomic(out / DONE, json.dumps(marker))
    return {"kind": "stage", "stage": stage, "status": "computed", "seconds": seconds, "key": key, "path": str(out)}


# ---------------------------------------------------------------------------------------------
# data


class EpochShuffle(Sampler[int]):
    """A permutation per epoch from (seed, epoch): the order of epoch e does not depend on earlier epochs."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _loader(ds, batch_size: int, workers: int, sampler=None, drop_last: bool = False) -> DataLoader:
    extra = dict(persistent_workers=True, worker_init_fn=seed_worker,
                 multiprocessing_context=default_context()) if workers > 0 else {}
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available(), **extra)


def train_batches(cache: Path, cfg: Config, batch_size: int, train: bool = True, split: str = "train",
                  poses_only: bool = False) -> Callable[[int], Iterable[dict]]:
    """`batches(epoch)` for the loop: deterministic per (seed, epoch), augmentations included. The workers only
    decode; each batch is augmented on the training device (csvr.data.augment). `poses_only`: no clip decode."""
    d, device = cfg.data, resolve_device(cfg.train.device)
    ds = ClipDataset(cache, split, d.clip_len, d.future_len, d.stride, d.cache_size, train=train,
                     seed=cfg.train.seed, max_videos=d.max_videos, poses_only=poses_only)
    if not train:  # held-out clips for the pretext metrics: every video once, in order
        held_out = _loader(ds, max(2, min(batch_size, len(ds))), d.workers)
        return lambda epoch: DeviceBatches(held_out, d, device, None, epoch)
    if len(ds) < batch_size:
        raise ValueError(f"{cache}: the {split} split has {len(ds)} usable videos, fewer than the batch size "
                         f"{batch_size}; lower data.batch_size / finetune.batch_size or raise data.max_videos")
    sampler = EpochShuffle(len(ds), cfg.train.seed)
    loader = _loader(ds, batch_size, d.workers, sampler, drop_last=True)

    def batches(epoch: int) -> Iterable[dict]:
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        return DeviceBatches(loader, d, device, cfg.train.seed, epoch)
    return batches


def eval_loader(cache: Path, cfg: Config, split: str, clips: int) -> DataLoader:
    d = cfg.data
    ds = EvalClips(cache, split, d.clip_len, d.stride, d.size, clips, max_videos=d.max_videos)
    return _loader(ds, max(1, cfg.finetune.batch_size // clips), d.workers)


def dataset_kind(spec: str) -> str:
    return spec.split(":", 1)[0].lower()


def prepared(spec: str, cfg: Config) -> Path:
    """The dataset's cache, prepared on first use (checked once per process: a complete cache stays complete).
    Inside a Ray trial (where a study's driver has normally prepared it already) any missing work runs
    in-process: Ray tasks would wait for CPUs the trials hold."""
    explicit = cfg.data.cache if spec == cfg.data.source else ""  # data.cache: prepare --cache DIR wrote it
    where = Path(explicit) if explicit else cache_dir_for(spec, cfg.data.cache_size, cfg.data.cache_root)
    return _prepared(spec, cfg.data.cache_size, cfg.data.cache_root, cfg.data.split, where, explicit)


@functools.lru_cache(maxsize=None)
def _prepared(spec: str, cache_size: int, cache_root: str, split: int, where: Path, explicit: str) -> Path:
    import ray

    inline = 0 if ray.is_initialized() else None
    return ensure_prepared(spec, cache_size, cache_root, workers=inline, split=split, cache=explicit)


# ---------------------------------------------------------------------------------------------
# models


@contextlib.contextmanager
def _seeded(seed: int, part: str):
    """Initialise `part` from its own seed so it does not depend on what was built before it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1000 + zlib.crc32(part.encode()) % 1000)
        yield


def build_model(cfg: Config) -> CSVR:
    m, d, seed = cfg.model, cfg.data, cfg.train.seed
    with _seeded(seed, "pose"):
        pose_g, pose_d = build_pose(cfg)
    with _seeded(seed, "context"):
        context = build_context(cfg)
    with _seeded(seed, "video"):
        integration = INTEGRATIONS[m.integration](m.feature_dim)
        gans = [build_video_gan(m.feature_dim, m.video_noise_dim, t, d.size, m.gen_channels, m.disc_channels,
                                m.video_gan, m.video_levels) for t in (d.clip_len, d.future_len)]
    return CSVR(context, pose_g, pose_d, integration, *gans)


def _load_parts(model: CSVR, path: Path) -> None:
    state = ckpt.load(path)["model"]
    missing = set(state) - set(model.state_dict())
    if missing:
        raise RuntimeError(f"{path} does not fit this model: unexpected keys {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=False)


def _saved_state(model: CSVR, stage: str) -> dict:
    return {k: v for k, v in model.state_dict().items() if k.startswith(SAVES[stage])}


# ---------------------------------------------------------------------------------------------
# pretraining stages


def pretrain_stage(stage: str, cfg: Config, cache: Path, upstream: dict[str, Path], out: Path, key: str,
                   device: torch.device) -> Iterator[dict]:
    """Train one pretraining stage into `out`, resuming from `out/progress.pt` if it exists."""
    model = build_model(cfg)
    for name in UPSTREAM[stage]:
        _load_parts(model, upstream[name] / "model.pt")
    model = place_model(model, cfg, device)
    opt = make_optimizers(model, stage, cfg)
    state, seconds = StageState(), 0.0
    torch.manual_seed(cfg.train.seed * 1000 + zlib.crc32(stage.encode()) % 1000)
    if (out / "progress.pt").exists():
        saved = ckpt.load(out / "progress.pt", device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
        state, seconds = StageState(**saved["state"]), float(saved["seconds"])
        ckpt.set_rng_state(saved["rng"])
    epochs = getattr(cfg.train, f"{stage}_epochs")
    batches = train_batches(cache, cfg, cfg.data.batch_size, poses_only=stage == "pose")
    t0 = time.perf_counter()
    for event in train_stage(model, stage, cfg, batches, state, epochs, opt, device):
        every = cfg.eval.probe_every
        if event["kind"] == "epoch" and every and (state.epoch % every == 0 or state.epoch == epochs):
            event.update(probe_metrics(cfg, model, stage, device))
        if event["kind"] == "epoch":
            elapsed = seconds + time.perf_counter() - t0
            ckpt.save(out / "progress.pt", model=model.state_dict(), optim=opt.state_dict(),
                      state=vars(state).copy(), seconds=torch.tensor(elapsed), rng=ckpt.rng_state())
            if stage == "joint" and state.epoch in cfg.train.checkpoint_epochs:
                ckpt.save(out / f"epoch_{state.epoch}.pt", model=_saved_state(model, stage))
        yield event
    ckpt.save(out / "model.pt", model=_saved_state(model, stage))
    total = seconds + time.perf_counter() - t0
    (out / "progress.pt").unlink(missing_ok=True)
    yield _finish(out, stage, key, total)


# ---------------------------------------------------------------------------------------------
# finetuning and evaluation


def _pretrained(cfg: Config, stages: dict[str, Path], device: torch.device) -> Pretrained:
    def part(stage: str, file: str = "model.pt") -> CSVR:
        model = build_model(cfg)
        if cfg.eval.pretrained:
            _load_parts(model, stages[stage] / file)
        return model.to(device)
    joint_file = f"epoch_{cfg.eval.pretrain_epoch}.pt" if cfg.eval.pretrain_epoch else "model.pt"
    return Pretrained(pose_generator=lambda: part("pose").pose_generator, context=lambda: part("context").context,
                      joint=lambda: part("joint", joint_file))


def finetune_stage(cfg: Config, spec: str, stages: dict[str, Path], out: Path, key: str,
                   device: torch.device, stage: str = "") -> Iterator[dict]:
    """Finetune a classifier from `cfg.eval.feature_source` on dataset `spec`; resumable per epoch."""
    cache = prepared(spec, cfg)
    kind, ft = dataset_kind(spec), finetune_for(dataset_kind(spec), cfg.finetune)
    stage = stage or f"finetune/{kind}"
    classes = len(json.loads((cache / "classes.json").read_text()))
    with _seeded(cfg.train.seed, "finetune"):
        model = Classifier(feature_model(cfg.eval.feature_source, cfg, _pretrained(cfg, stages, device)),
                           classes, ft.dropout).to(device)
    opt, sched = make_finetune_optim(model, ft, ft.epochs)
    start, seconds = 0, 0.0
    torch.manual_seed(cfg.train.seed * 1000 + 7)
    if (out / "progress.pt").exists():
        saved = ckpt.load(out / "progress.pt", device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
        sched.load_state_dict(saved["sched"])
        start, seconds = int(saved["epoch"]), float(saved["seconds"])
        ckpt.set_rng_state(saved["rng"])
    batches = train_batches(cache, cfg, ft.batch_size)
    t0 = time.perf_counter()
    for ev in finetune_epochs(model, batches, opt, sched, start, ft.epochs, ft.steps_per_epoch, device):
        ckpt.save(out / "progress.pt", model=model.state_dict(), optim=opt.state_dict(), sched=sched.state_dict(),
                  epoch=torch.tensor(ev["epoch"]), seconds=torch.tensor(seconds + time.perf_counter() - t0),
                  rng=ckpt.rng_state())
        yield {"kind": "epoch", "stage": stage, "epoch": ev["epoch"], f"{stage}/loss": ev["loss"],
               f"{stage}/acc": ev["acc"]}
    ckpt.save(out / "model.pt", model=model.state_dict())
    (out / "progress.pt").unlink(missing_ok=True)
    yield _finish(out, stage, key, seconds + time.perf_counter() - t0)


def load_classifier(cfg: Config, spec: str, stages: dict[str, Path], out: Path, device: torch.device) -> Classifier:
    cache = prepared(spec, cfg)
    classes = len(json.loads((cache / "classes.json").read_text()))
    ft = finetune_for(dataset_kind(spec), cfg.finetune)
    model = Classifier(feature_model(cfg.eval.feature_source, cfg, _pretrained(cfg, stages, device)), classes,
                       ft.dropout).to(device)
    model.load_state_dict(ckpt.load(out / "model.pt", device)["model"])
    return model


def evaluate(cfg: Config, spec: str, classifier: Classifier | None, stages: dict[str, Path], device: torch.device,
             artifacts: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Recognition (the finetuned classifier, or `eval.protocol` linear / knn on frozen features) and retrieval,
    both on the pretrained representation of `eval.feature_source` (mean over `eval.retrieval_clips` clips)."""
    from csvr import reports

    cache, kind = prepared(spec, cfg), dataset_kind(spec)
    classes = json.loads((cache / "classes.json").read_text())
    frozen = frozen_feature(cfg, stages, device)
    clips = cfg.eval.retrieval_clips
    gallery = E.video_features(frozen, eval_loader(cache, cfg, "train", clips), device)
    query = E.video_features(frozen, eval_loader(cache, cfg, "test", clips), device)
    if classifier is not None:
        probs, labels = E.video_scores(classifier, eval_loader(cache, cfg, "test", cfg.eval.test_clips), device)
    else:
        probs, labels = frozen_scores(cfg, query, gallery, len(classes)), query[1]
    rec = E.recognition(probs, labels, len(classes))
    hits = E.retrieval_hits(*query, *gallery, cfg.eval.retrieval_ks)  # per test video, in test-split order
    ret = {name: float(hit.mean()) for name, hit in hits.items()}
    groups = E.group_accuracy(rec["per_class"], [c.get("group") for c in classes])
    metrics = {f"eval/{kind}/top1": rec["top1"], f"eval/{kind}/mean_class_acc": rec["mean_class_acc"],
               **{f"eval/{kind}/{k}": v for k, v in ret.items()},
               **{f"eval/{kind}/group/{g}": v for g, v in groups.items()}}
    files = reports.write_eval_artifacts(artifacts / "eval" / kind, rec, ret, classes, probs, labels, hits)
    return metrics, {f"eval/{kind}/{p.name}": str(p) for p in files}


def frozen_feature(cfg: Config, stages: dict[str, Path], device: torch.device) -> torch.nn.Module:
    """The representation of `eval.feature_source` as pretraining left it (random when not `eval.pretrained`)."""
    with _seeded(cfg.train.seed, "finetune"):
        return feature_model(cfg.eval.feature_source, cfg, _pretrained(cfg, stages, device)).to(device)


def frozen_scores(cfg: Config, query: tuple[torch.Tensor, torch.Tensor], gallery: tuple[torch.Tensor, torch.Tensor],
                  classes: int) -> torch.Tensor:
    """(Q, classes) scores of the frozen-feature protocols: the train split is the k-NN gallery / probe data."""
    e = cfg.eval
    if e.protocol == "knn":
        return E.knn_scores(query[0], gallery[0], gallery[1], classes, e.knn_k, e.knn_temperature)
    return E.linear_probe(gallery[0], gallery[1], query[0], classes, seed=cfg.train.seed)


def probe_metrics(cfg: Config, model: CSVR, stage: str, device: torch.device) -> dict[str, float]:
    """The per-epoch k-NN probe of a pretraining stage: top-1 of `PROBE_FEATURE[stage]` on the pretraining
    dataset (train split = gallery, test split = queries, one centred clip per video)."""
    spec = cfg.data.source
    cache, kind = prepared(spec, cfg), dataset_kind(spec)
    classes = len(json.loads((cache / "classes.json").read_text()))
    feature = PROBE_FEATURE[stage](model, cfg.model.feature_dim)
    was_training = model.training
    with torch.random.fork_rng(devices=[]):  # the loaders draw seeds: training must not depend on probing
        gallery = E.video_features(feature, eval_loader(cache, cfg, "train", 1), device)
        query = E.video_features(feature, eval_loader(cache, cfg, "test", 1), device)
    model.train(was_training)
    probs = E.knn_scores(query[0], gallery[0], gallery[1], classes, cfg.eval.knn_k, cfg.eval.knn_temperature)
    return {f"probe/{kind}/knn_top1": float((probs.argmax(1) == query[1]).float().mean())}


# ---------------------------------------------------------------------------------------------
# one trial


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
            key = stage_key("joint", cfg, {"finetune": flatten(cfg), "dataset": spec})
            name = f"finetune/{dataset_kind(spec)}"
            for ev in store.run(name, key, lambda out, s=spec, k=key: finetune_stage(cfg, s, stages, out, k, device)):
                events.append(ev)
                yield ev
            classifier = load_classifier(cfg, spec, stages, store.path(name, key), device)
        m, f = evaluate(cfg, spec, classifier, stages, device, artifacts)
        metrics.update(m)
        files.update(f)
    if "joint" in stages:
        extra_events, pretext, samples = _pretext(cfg, cache, stages, store, device, artifacts)
        for ev in extra_events:
            events.append(ev)
            yield ev
        metrics.update(pretext)
        files.update(samples)
    files["checkpoint.txt"] = str(reports.write_text(artifacts / "checkpoint.txt", "\n".join(
        f"{s}: {p}" for s, p in stages.items()) + "\n"))
    stage_events = [e for e in events if e["kind"] == "stage"]
    yield {"kind": "result", "metrics": metrics, "artifacts": files,
           "compute_seconds": sum(e["seconds"] for e in stage_events if e["status"] == "computed"),
           "saved_seconds": sum(e["seconds"] for e in stage_events if e["status"] == "reused"),
           "stages": {e["stage"]: e["status"] for e in stage_events}}


def _pretext(cfg: Config, cache: Path, stages: dict[str, Path], store: StageStore, device: torch.device,
             artifacts: Path) -> tuple[list[dict], dict[str, float], dict[str, str]]:
    """Table II's pretext metrics on the test split; the IS classifier is the shared scratch classifier."""
    from csvr import reports

    scratch_cfg = apply_overrides(cfg, {"eval.feature_source": "scratch"})
    spec = cfg.data.source
    key, name = stage_key("is_classifier", scratch_cfg, {"dataset": spec}), f"is_classifier/{dataset_kind(spec)}"
    events = list(store.run(name, key, lambda out: finetune_stage(scratch_cfg, spec, {}, out, key, device,
                                                                  stage=name)))
    is_classifier = load_classifier(scratch_cfg, spec, {}, store.path(name, key), device)
    joint_file = f"epoch_{cfg.eval.pretrain_epoch}.pt" if cfg.eval.pretrain_epoch else "model.pt"
    model = build_model(cfg)
    _load_parts(model, stages["joint"] / joint_file)
    model.to(device)
    test = train_batches(cache, cfg, cfg.data.batch_size, train=False, split="test")(0)
    with _seeded(cfg.train.seed, "pretext"):  # noise draws independent of which stages were reused before
        metrics = E.pretext_metrics(model, test, is_classifier, device)
        samples = reports.write_samples(artifacts / "samples", model, next(iter(test)), device)
    return events, {f"pretext/{k}": v for k, v in metrics.items()}, {f"samples/{p.name}": str(p) for p in samples}
