"""Loaders of a trial: the prepared cache of a dataset spec, training batches per epoch, evaluation clips.

    cache = prepared(cfg.data.source, cfg)                  # prepares the cache on first use
    batches = train_batches(cache, cfg, cfg.data.batch_size)
    for batch in batches(epoch): ...                        # augmented on the training device
    finetune = finetune_batches(cache, cfg, cfg.finetune.batch_size)  # one clip per video, sampled like eval
    loader = eval_loader(cache, cfg, "test", clips=10)      # EvalClips, centred, every video in order
"""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch.utils.data import DataLoader, Sampler

from csvr.config import Config, DataConfig
from csvr.data.augment import DeviceBatches
from csvr.data.dataset import ClipDataset, EvalClips, default_context, finetune_clips, seed_worker
from csvr.data.sources import cache_dir_for, ensure_prepared
from csvr.training.loop import resolve_device


# The held-out batches' order, the same for every trial and seed. Not the split's (class-sorted) order: a batch of
# one class would give context matching (`losses.context_accuracy`, candidates = the batch's I-frames) only
# same-scene negatives, unlike every training batch, and measure another task than the one trained.
HELD_OUT_ORDER = 0


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
    if not train:  # held-out clips for the pretext metrics: every video once, in one fixed shuffled order
        held_out = _loader(ds, max(2, min(batch_size, len(ds))), d.workers, EpochShuffle(len(ds), HELD_OUT_ORDER))
        return lambda epoch: DeviceBatches(held_out, d, device, None, epoch)
    return _epoch_batches(ds, cfg, d, batch_size, split)


def finetune_batches(cache: Path, cfg: Config, batch_size: int) -> Callable[[int], Iterable[dict]]:
    """`batches(epoch)` for finetuning: one clip of data.clip_len frames per video at data.stride, sampled like
    evaluation's clips (`csvr.data.dataset.finetune_clips`), no future clip, no I-frames; only the labelled
    videos (`finetune.labels_per_class`)."""
    d = cfg.data
    ds = finetune_clips(cache, "train", d.clip_len, d.stride, d.cache_size, train=True, seed=cfg.train.seed,
                        max_videos=d.max_videos, per_class=cfg.finetune.labels_per_class)
    return _epoch_batches(ds, cfg, replace(d, future_len=0), batch_size, "train")


def _epoch_batches(ds: ClipDataset, cfg: Config, d: DataConfig, batch_size: int,
                   split: str) -> Callable[[int], Iterable[dict]]:
    """Shuffled, augmented training batches of `ds` per epoch; `d` tells `augment` the sample's layout."""
    if len(ds) < batch_size:
        raise ValueError(f"{ds.cache}: the {split} split has {len(ds)} usable videos, fewer than the batch size "
                         f"{batch_size}; lower data.batch_size / finetune.batch_size or raise data.max_videos")
    device = resolve_device(cfg.train.device)
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
