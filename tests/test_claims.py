"""analysis.claims: each claim's paired difference, both cells' intervals and the verdicts, by hand."""
import pytest

from analysis import claims as C
from analysis.runs import RunRecord
from analysis.specs import CLAIMS, Claim

METRIC = "eval/synthetic/group/context"


def run(i: int, source: str, pretrained: bool, seed: int, value: float) -> RunRecord:
    params = {"eval.feature_source": source, "eval.pretrained": str(pretrained), "train.seed": str(seed)}
    return RunRecord(f"r{i}", "FINISHED", i, params, {METRIC: value}, {})


def test_a_claim_pairs_by_seed_and_reads_both_intervals():
    """Seed shifts both cells together: the paired difference is resolved while the cells' own CIs overlap."""
    shift = [0.0, 0.3, 0.6]
    runs = [run(i, "f_s", True, s, 0.3 + shift[s] + 0.01 * s) for i, s in enumerate(range(3))]
    runs += [run(10 + s, "f_s", False, s, 0.2 + shift[s]) for s in range(3)]
    runs.append(run(99, "f_s", True, 7, 0.9))  # a seed the random-init cell lacks: not paired
    claim = Claim("f_s ahead on context", "eval/{ds}/group/context", "f_s", "f_s (random init)")
    (result,) = C.evaluate((claim,), runs, "synthetic")
    assert result.metric == METRIC
    assert result.difference.n == 3 and result.difference.mean == pytest.approx(10 + 1)  # points: 10 + (0+1+2)/3
    assert result.better.n == 4 and result.than.n == 3
    assert result.verdict == "yes (paired)" and result.overlap == "overlap"


def test_verdicts_reversed_unresolved_and_missing():
    runs = [run(s, "f_s", True, s, 0.2 + 0.01 * s) for s in range(3)]
    runs += [run(10 + s, "scratch", True, s, 0.5 + 0.02 * s) for s in range(3)]
    runs += [run(20 + s, "f_d", True, s, [0.2, 0.5, 0.3][s]) for s in range(3)]
    reversed_, unresolved, missing = C.evaluate((
        Claim("f_s ahead of scratch", "eval/{ds}/group/context", "f_s", "scratch"),
        Claim("f_d ahead of f_s", "eval/{ds}/group/context", "f_d", "f_s"),
        Claim("f_i ahead of f_s", "eval/{ds}/group/context", "f_i_full", "f_s"),
    ), runs, "synthetic")
    assert reversed_.verdict == "reversed (paired)" and reversed_.overlap == "apart"
    assert unresolved.verdict == "not resolved"
    assert missing.verdict == "not in these runs" and missing.overlap == "—"
    text = C.render_md("feature_source", "synthetic", [reversed_, unresolved, missing])
    assert "| f_s ahead of scratch | eval/synthetic/group/context | -31.0 [" in text  # (0.2 - 0.5) - 0.01 x mean seed 1


def test_every_feature_source_claim_names_rows_the_study_makes():
    from studies.feature_source import STUDY

    sources = set(STUDY.grid["eval.feature_source"])
    for claim in CLAIMS["feature_source"]:
        for label in (claim.better, claim.than):
            assert label.removesuffix(" (random init)") in sources, label


def test_a_seeds_random_init_cell_is_the_network_its_pretraining_starts_from():
    """What makes the random-init claims exactly paired: build_model(seed) is a function of the seed (each part from
    its own (seed, part) stream), whatever was drawn before, and other seeds give other networks."""
    import torch

    from csvr.config import apply_overrides, tiny
    from csvr.models.build import build_model

    cfg = apply_overrides(tiny(), {"train.seed": 3})
    first = build_model(cfg).state_dict()
    torch.rand(1000)  # draws in between change nothing
    again = build_model(cfg).state_dict()
    other = build_model(apply_overrides(cfg, {"train.seed": 4})).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["context.video_head.0.weight"], other["context.video_head.0.weight"])
