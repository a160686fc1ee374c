"""`python -m csvr.bench video`: how far the video generators are from each baseline, and what bounds them.

Two parts, both on the held-out split of the config's dataset (no augmentation), L2 as `pretext/video_l2_*`:
  floors  decoders that know the target exactly but only at a coarse grid: every frame (or the clip's mean frame)
          average-pooled to r x r cells and upsampled back (bilinear). A generator whose condition carries
          r x r cells of average colour cannot do better than its row; it is the reach of f_i's resolution
          (`model.fi_shape`), not a trained result. Beside them the zeros, unconditional (train mean frame) and
          clip-mean-frame rows that `pretext_metrics` logs.
  train   with `--steps N` (> 0): the video stage alone (`csvr.training.steps.video_stage`, the stage's own
          optimiser and update) for N steps on frozen pose and context branches loaded from `--stages DIR` (a
          stage store, e.g. runs/train/stages, holding this config's pose and context stages under their keys;
          random branches when no --stages), printing the held-out L2 (`pretext_metrics`) of both
          generators every `--every` steps. `--set` changes the config as anywhere else, e.g.
          `--set model.fi_levels=1` or `--set loss.video_adversarial=1`; `--joint` runs Eq. 9 instead (every
          part trains) from the same start.
Numbers here are one seed (n = 1); DESIGN.md ("f_i as a map") has the measured ones and how to read them.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from csvr import evaluation as E
from csvr import losses as L
from csvr.bench.common import Report, bench_config

CPU = torch.device("cpu")


def _held_out(cfg) -> list[dict]:
    from csvr.data.loaders import prepared, train_batches

    cache = prepared(cfg.data.source, cfg)
    return list(train_batches(cache, cfg, cfg.data.batch_size, train=False, split="test")(0))


def resolution_floors(clips: torch.Tensor, future: torch.Tensor, grids=(1, 2, 4, 8, 16)) -> list[dict]:
    """One row per grid size r: L2 of the clip (and of the future clip) against r x r decoders of the truth."""
    size, frames = clips.shape[-1], clips.shape[2]
    mean = clips.mean(2)  # (N, 3, S, S)
    rows = []
    for r in grids:
        coarse_mean = F.interpolate(F.adaptive_avg_pool2d(mean, r), size=size, mode="bilinear", align_corners=False)
        coarse_frames = F.interpolate(F.adaptive_avg_pool3d(clips, (frames, r, r)), size=(frames, size, size),
                                      mode="trilinear", align_corners=False)
        rows.append({"decoder": f"{r}x{r} cells ({size // r} px)",
                     "reconstruct": float(L.pixel_l2(coarse_frames, clips)),
                     "clip mean frame": float(L.pixel_l2(coarse_mean[:, :, None].expand_as(clips), clips)),
                     "predict (from the clip)": float(L.pixel_l2(coarse_mean[:, :, None].expand_as(future), future))})
    return rows


def _branch_paths(cfg, stages: Path) -> list[Path]:
    """This config's pose and context stage files in the store `stages` (their keyed folders); a missing one
    is refused here, before any data is prepared."""
    from csvr.stages.store import StageStore
    from csvr.stages.table import stage_key

    paths = [StageStore(stages).path(part, stage_key(part, cfg)) / "model.pt" for part in ("pose", "context")]
    for part, path in zip(("pose", "context"), paths):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: --stages must be a stage store that holds this config's "
                                    f"{part} stage (run python -m csvr.train with the same preset and --set first)")
    return paths


def train_video_stage(cfg, batches_test: list[dict], steps: int, every: int, stages: Path | None,
                      stage: str = "video") -> list[dict]:
    """The video stage (or Eq. 9 with stage="joint") alone for `steps` steps; held-out L2 every `every` steps."""
    from csvr.data.loaders import prepared, train_batches
    from csvr.models.build import build_model, load_parts
    from csvr.training.loop import make_optimizers, set_train_mode, to_device, train_step

    model = build_model(cfg)
    for path in _branch_paths(cfg, stages) if stages else []:
        load_parts(model, path)
    opt = make_optimizers(model, stage, cfg)
    batches = train_batches(prepared(cfg.data.source, cfg), cfg, cfg.data.batch_size)
    rows, step, epoch, start = [], 0, 0, time.perf_counter()
    while step < steps:
        set_train_mode(model, stage, cfg)
        for b in batches(epoch):
            train_step(model, to_device(b, CPU, cfg), stage, cfg, opt)
            step += 1
            if step % every == 0 or step == steps:
                with torch.no_grad():
                    held_out = E.pretext_metrics(model, batches_test, None, CPU)
                rows.append({"decoder": f"{stage} stage, {step} steps", "reconstruct": held_out["video_l2_reconstruct"],
                             "predict (from the clip)": held_out["video_l2_predict"],
                             "seconds": time.perf_counter() - start})
                set_train_mode(model, stage, cfg)
            if step >= steps:
                break
        epoch += 1
    return rows


def bench_video(args) -> Report:
    torch.set_num_threads(max(args.threads, 1))
    cfg = bench_config(args, "tiny")
    if args.steps and args.stages:
        _branch_paths(cfg, Path(args.stages))  # a wrong --stages fails now, not after the data is prepared
    test = _held_out(cfg)
    clips, future = torch.cat([b["clip"] for b in test]), torch.cat([b["future"] for b in test])
    from csvr.data.loaders import prepared, train_batches

    train_mean = E.mean_frame_of(train_batches(prepared(cfg.data.source, cfg), cfg, cfg.data.batch_size,
                                               train=False)(0))[:, None]  # (3, 1, S, S)
    rows = [{"decoder": "zeros", "reconstruct": float(clips.pow(2).sum(1).mean()),
             "predict (from the clip)": float(future.pow(2).sum(1).mean())},
            {"decoder": "unconditional (train mean frame)",
             "reconstruct": float(L.pixel_l2(train_mean.expand_as(clips), clips)),
             "predict (from the clip)": float(L.pixel_l2(train_mean.expand_as(future), future))},
            *resolution_floors(clips, future)]
    if args.steps:
        stages = Path(args.stages) if args.stages else None
        rows += train_video_stage(cfg, test, args.steps, args.every or max(args.steps // 4, 1), stages,
                                  "joint" if args.joint else "video")
    exact = rows[-1] if args.steps else next(r for r in rows if r["decoder"].startswith("8x8"))  # else the 8 x 8 floor
    mean_frame = float(L.pixel_l2(L.mean_frame(clips), clips))
    return Report("video", ["decoder", "reconstruct", "clip mean frame", "predict (from the clip)", "seconds"], rows,
                  f"clip-mean-frame oracle: reconstruct {mean_frame:.3f}; {exact['decoder']}: reconstruct "
                  f"{exact['reconstruct']:.3f} (n = 1 seed, {len(clips)} held-out clips)",
                  numbers={"mean_frame": mean_frame, "reconstruct": exact["reconstruct"]},
                  settings={"source": cfg.data.source, "size": cfg.data.size, "fi_shape": cfg.model.fi_shape,
                            "steps": args.steps})
