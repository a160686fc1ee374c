"""Which pretraining stages a study computes before its trials, and with how many CPUs (trainables/shared.py).
The study-level behaviour (trials reuse them, the parent run holds their curves, a failure leaves the study
going) is checked by tests/test_studies.py and tests/test_faults.py.

    pytest tests/test_shared.py          # a second, no Ray
"""
from __future__ import annotations

import itertools

import pytest

from csvr.config import apply_overrides, preset
from csvr.stages.table import stage_key
from studies.feature_source import STUDY as FEATURE_SOURCE
from studies.sigma_grid import SIGMAS
from trainables.shared import SharedOutcome, parent_tags, shared_stages, stage_cpus


def configs(grid: dict, base: dict | None = None) -> list:
    cfg = apply_overrides(preset("tiny"), base or {})
    return [apply_overrides(cfg, dict(zip(grid, combo))) for combo in itertools.product(*grid.values())]


def names(stages) -> list[tuple[str, int]]:
    return [(s.stage, s.level) for s in stages]


def test_sigma_grid_shares_its_branch_stages_not_the_joint_stage():
    grid = configs({"loss.sigma_p": SIGMAS, "loss.sigma_c": SIGMAS})
    stages = shared_stages(grid)
    # video reads pose and context; the IS classifier (Table II's instrument) reads no pretraining stage
    assert names(stages) == [("pose", 0), ("context", 0), ("video", 1), ("is_classifier/synthetic", 0)]
    for s in stages[:3]:
        assert {stage_key(s.stage, c) for c in grid} == {s.key}  # one key across the grid: computed once
    assert {s.upstream for s in stages} == {(), ("pose", "context")}
    assert [(s.label, s.suffix) for s in stages[:1]] == [("pose", "")]  # one of each: plain names


def test_a_seed_or_a_stage_field_splits_the_shared_stages():
    seeds = shared_stages(configs({"loss.sigma_p": [0.5, 1.0], "train.seed": [0, 1, 2]}))
    assert names(seeds) == [("pose", 0), ("context", 0), ("video", 1), ("is_classifier/synthetic", 0)] * 3
    assert len({s.key for s in seeds}) == 12
    # one stage of a name per seed: the console and the parent run's metric and tag names tell them apart
    assert [s.label for s in seeds[:4]] == ["pose train.seed=0", "context train.seed=0", "video train.seed=0",
                                            "is_classifier/synthetic train.seed=0"]
    assert seeds[4].suffix == "/train.seed_1"
    outcome = SharedOutcome(computed={s.id: 1.0 for s in seeds[:4]}, found=[s.id for s in seeds[4:8]],
                            failed={seeds[8].id: "NonFiniteLossError"})
    tags = parent_tags(seeds, outcome)
    assert len(tags) == 9 and tags["csvr.shared.is_classifier/synthetic/train.seed_0"].startswith("computed")
    assert tags["csvr.shared.pose/train.seed_2"] == "failed before the trials: NonFiniteLossError"
    alone = shared_stages(configs({"loss.sigma_p": [0.5]}))  # one trial shares nothing
    assert alone == []
    rates = shared_stages(configs({"train.lr_per_sample": [1e-4, 2e-4]}))  # every pretraining stage reads it,
    assert names(rates) == [("is_classifier/synthetic", 0)]  # the IS classifier (finetune.* only) does not


def test_feature_source_shares_the_branches_its_sources_read():
    """Table I at 2 seeds: pose (f_d, f_i_*) and context (f_s, f_i_*) are shared; video and joint only
    f_i_full reads; random initialisations (eval.pretrained=false) and scratch read no stage."""
    stages = shared_stages(configs({**FEATURE_SOURCE.grid, "train.seed": [0, 1]}))
    assert sorted(names(stages)) == [("context", 0)] * 2 + [("pose", 0)] * 2


def test_a_searched_key_keeps_its_stages_per_trial():
    """--search optuna over sigma: every sample draws its own sigma, so the joint stage is never shared
    (even though the base configs, before the draw, are equal); the branch stages are."""
    base = configs({"loss.sigma_p": [1.0]}) * 4
    assert names(shared_stages(base, ("loss.sigma_p", "loss.sigma_c"))) == [
        ("pose", 0), ("context", 0), ("video", 1), ("is_classifier/synthetic", 0)]
    assert "joint" in [s.stage for s in shared_stages(base)]  # without the search, equal configs share it


@pytest.mark.parametrize("cluster, node, per_trial, want", [
    (2, 2, 1, (1, 1, 2, 1)),  # this machine: pose, context, IS classifier two at a time, then video on both cores
    (64, 16, 1, (16, 16, 16, 16)),  # a task runs on one node: at most a node's CPUs
    (2, 2, 2, (2, 2, 2, 2)),  # never fewer than a trial holds
    (3, 3, 1, (1, 1, 3, 1)),
])
def test_stage_cpus_divide_the_cluster_among_the_stages_that_run_at_once(cluster, node, per_trial, want):
    stages = shared_stages(configs({"loss.sigma_p": [0.5, 1.0]}))
    cpus = stage_cpus(stages, cluster, node, per_trial)
    assert tuple(cpus[(s.stage, s.key)] for s in stages) == want


def test_the_plan_keys_the_is_classifier_as_the_pipeline_does():
    """The IS classifier trains on every label whatever finetune.labels_per_class says (a measuring instrument):
    the plan, and so the shared stages, must give it the pipeline's key, or a label-scarce study would compute
    it under a key no trial reads."""
    import torch

    from csvr.evaluate_trial import is_classifier_stage
    from trainables.plan import trial_stages

    cfg = apply_overrides(preset("tiny"), {"finetune.labels_per_class": 5})
    name, key, _ = is_classifier_stage(cfg, torch.device("cpu"))
    assert {s.stage: s.key for s in trial_stages(cfg)}[name] == key
    assert key == is_classifier_stage(preset("tiny"), torch.device("cpu"))[1]  # labels_per_class does not enter it
