"""Shared stages: keyed by exactly the fields they depend on, computed once under concurrency, and a
trial that reuses them gets the same numbers as one that computes everything itself."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from csvr.config import apply_overrides, keys, preset, tiny
from csvr.pipeline import run_trial
from csvr.stages.store import StageStore
from csvr.stages.table import NEEDS, NOT_IN_ANY_STAGE, STAGE_KEYS, STAGES, stage_key
from tests.workers import compute_stage_once  # light imports: each spawned worker starts fast

SMOKE = {"train.steps_per_epoch": 2, "train.pose_epochs": 2, "train.context_epochs": 2, "train.video_epochs": 2,
         "train.joint_epochs": 1, "train.checkpoint_epochs": "1", "eval.probe_every": 0,
         "finetune.epochs": 1, "finetune.steps_per_epoch": 2, "eval.retrieval_clips": 1, "eval.test_clips": 1,
         "data.max_videos": 8}  # as --smoke: evaluating every embedded video was most of each trial's time


# the tiny preset as those stores were computed (it trains the context branch 60 epochs since)
OLD_TINY = apply_overrides(tiny(), {"train.context_epochs": 20})


def test_stage_keys_are_those_of_existing_stores():
    """Stores written before the stage table (pipeline.py's STAGE_KEYS) stay valid: the key of a stage whose
    fields nobody renamed is the one computed then. Change this value only with a deliberate key change."""
    assert stage_key("context", OLD_TINY) == "f43b52511c476b3c"
    assert stage_key("context", preset("paper")) == "ac3c008a493e2556"
    assert stage_key("context", tiny()) != stage_key("context", OLD_TINY)  # 60 context epochs: new stages, on purpose


def test_every_config_key_keys_a_stage_or_says_why_not():
    """A new hyperparameter can never silently reuse a stale stage: it enters some stage's key, or
    NOT_IN_ANY_STAGE says why it changes no stage's output. No entry there is stale or contradicts a key."""
    in_a_stage = set().union(*STAGE_KEYS.values())

    def excused(k: str) -> bool:
        return k in NOT_IN_ANY_STAGE or f"{k.split('.')[0]}.*" in NOT_IN_ANY_STAGE
    assert [k for k in keys() if k not in in_a_stage and not excused(k)] == []
    assert [k for k in in_a_stage if k not in keys()] == []  # a renamed field leaves no dead key behind
    assert [k for k in in_a_stage if excused(k)] == []  # excused yet keyed: one of the two is wrong
    for entry, reason in NOT_IN_ANY_STAGE.items():
        matches = [k for k in keys() if k == entry or (entry.endswith(".*") and k.startswith(entry[:-1]))]
        assert matches and reason, f"stale NOT_IN_ANY_STAGE entry {entry!r}"
    assert all(k in keys() for row in STAGES.values() for k in (row.epochs, row.keeps_epochs) if k)


def test_data_flip_keys_every_pretraining_stage_without_moving_existing_stores():
    """data.flip entered the keys after stores existed: at its old value (flip on) the keys stay those stores'."""
    base, off = OLD_TINY, apply_overrides(OLD_TINY, {"data.flip": False})
    assert stage_key("context", base) == "f43b52511c476b3c"  # the pinned key above, with data.flip=True
    assert all(stage_key(s, base) != stage_key(s, off) for s in STAGE_KEYS)


def test_sigma_enters_only_the_joint_stage():
    a = apply_overrides(tiny(), {"loss.sigma_p": 0.5})
    b = apply_overrides(tiny(), {"loss.sigma_p": 1.25, "loss.sigma_c": 1.0})
    for stage in ("pose", "context", "video", "is_classifier"):  # a sigma grid trains one IS classifier
        assert stage_key(stage, a) == stage_key(stage, b)
    assert stage_key("joint", a) != stage_key("joint", b)


def test_each_ablation_changes_only_the_stages_that_read_it():
    base = tiny()
    changes = {"model.pose_encoder_layer": (6, 2, {"video", "joint"}),
               "loss.context": ("mi_infonce", "l2", {"context", "video", "joint"}),
               "model.backbone": ("r2plus1d", "r3d", {"context", "video", "joint", "is_classifier"}),
               "finetune.lr_per_sample": (0.005, 0.01, {"is_classifier"}),
               "loss.generation_target": ("both", "predict", {"video", "joint"}),
               "eval.feature_source": ("f_i_full", "f_s", set()),
               "model.fi_levels": (4, 2, {"video", "joint"}),
               "loss.video_trains_encoders": (True, False, {"video", "joint"}),
               "data.future_len": (8, 4, {"pose", "context", "video", "joint"}),  # the IS classifier reads no future
               "finetune.labels_per_class": (0, 2, {"is_classifier"})}  # pretext() trains it at 0 whatever this is
    for key, (_, new, stages) in changes.items():
        other = apply_overrides(base, {key: new})
        changed = {s for s in STAGE_KEYS if stage_key(s, base) != stage_key(s, other)}
        assert changed == stages, key
    vector = apply_overrides(base, {"model.fi_shape": "vector", "model.fi_levels": 1})  # a vector has one level
    assert {s for s in STAGE_KEYS if stage_key(s, base) != stage_key(s, vector)} == {"video", "joint"}
    assert set(NEEDS) == {"scratch", "f_d", "f_s", "f_i_adain", "f_i_concat", "f_i_full"}


def test_concurrent_trials_compute_a_stage_once(tmp_path):
    log = tmp_path / "log.txt"
    with mp.get_context("spawn").Pool(3) as pool:
        statuses = pool.starmap(compute_stage_once, [(str(tmp_path / "store"), str(log))] * 3)
    assert log.read_text().count("computed") == 1
    assert sorted(statuses) == ["computed", "reused", "reused"]


@pytest.mark.slow
def test_reused_stages_give_the_same_result_as_computing_them(tmp_path):
    torch.set_num_threads(1)
    a = apply_overrides(tiny(), {**SMOKE, "loss.sigma_p": 0.75})
    b = apply_overrides(tiny(), {**SMOKE, "loss.sigma_p": 1.25})
    shared = tmp_path / "shared"
    first = [e for e in run_trial(a, tmp_path / "a", shared) if e["kind"] == "stage"]
    events = list(run_trial(b, tmp_path / "b", shared))
    status = {e["stage"]: e["status"] for e in events if e["kind"] == "stage"}
    assert status["pose"] == status["context"] == status["video"] == "reused" and status["joint"] == "computed"
    # the IS classifier of a 2-cell sigma grid: computed once, reused once
    assert [e["status"] for e in first if e["stage"] == "is_classifier/synthetic"] == ["computed"]
    assert status["is_classifier/synthetic"] == "reused"
    alone = list(run_trial(b, tmp_path / "b_alone", tmp_path / "alone"))
    assert all(e["status"] == "computed" for e in alone if e["kind"] == "stage")
    with_sharing, without = events[-1]["metrics"], alone[-1]["metrics"]
    assert with_sharing.keys() == without.keys()
    for key in with_sharing:
        assert with_sharing[key] == pytest.approx(without[key], abs=1e-5), key
    def joint_weights(root: Path) -> dict:
        path = StageStore(root).path("joint", stage_key("joint", b)) / "model.pt"
        return torch.load(path, weights_only=True)["model"]
    reused, computed = joint_weights(shared), joint_weights(tmp_path / "alone")
    assert reused.keys() == computed.keys()
    for name, tensor in computed.items():
        assert torch.allclose(tensor, reused[name], atol=1e-6), name
