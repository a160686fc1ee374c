"""`--plan` and the whole-paper plan: nothing runs, stages are marked computed / shared / in the store with the
keys the pipeline uses, and compute is estimated from the store or a bench JSON."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from csvr.config import apply_overrides, tiny
from csvr.stages.store import StageStore, finish
from csvr.stages.table import stage_key
from trainables import plan as P
from trainables.study import main, parse_args

SIGMA = importlib.import_module("studies.sigma_grid").STUDY


def test_sigma_grid_plan_shares_branches_and_the_is_classifier(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(SIGMA, ["--plan", "--storage", str(tmp_path / "runs"), "--plan-json", str(tmp_path / "plan.json")])
    out = capsys.readouterr().out
    assert "nothing is run" in out and not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
    doc = json.loads((tmp_path / "plan.json").read_text())
    trials = doc["trials"]
    assert len(trials) == 16
    status = {(t["trial"], s["stage"]): s["status"] for t in trials for s in t["stages"]}
    for stage in ("pose", "context", "video", "is_classifier/synthetic"):  # one per grid
        assert [t for t in trials if status[(t["trial"], stage)] == "compute"] == [trials[0]], stage
    assert all(status[(t["trial"], "joint")] == "compute" for t in trials)  # one per sigma cell
    cfg = tiny()
    epochs = sum(getattr(cfg.train, f"{s}_epochs") for s in ("pose", "context", "video"))
    saved = 15 * (epochs + cfg.finetune.epochs)  # 15 trials reuse the branches and the IS classifier
    assert doc["totals"]["stage_epochs_alone"] - doc["totals"]["stage_epochs_unique"] == saved


def test_plan_keys_are_the_pipelines_and_the_store_is_read(tmp_path):
    cfg = apply_overrides(tiny(), {"loss.sigma_p": 1.0, "eval.protocol": "finetune"})
    stages = P.trial_stages(cfg)
    assert [s.stage for s in stages] == ["pose", "context", "video", "joint", "finetune/synthetic",
                                         "is_classifier/synthetic"]
    frozen = P.trial_stages(apply_overrides(cfg, {"eval.protocol": "knn"}))  # k-NN evaluation: no finetuning
    assert "finetune/synthetic" not in [s.stage for s in frozen]
    assert {s.stage: s.key for s in stages}["joint"] == stage_key("joint", cfg)
    store = StageStore(tmp_path / "stages")
    done = store.path("joint", stage_key("joint", cfg))
    done.mkdir(parents=True)
    finish(done, "joint", stage_key("joint", cfg), 30.0)  # 3 joint epochs took 30 s
    trial = P.PlannedTrial("s", "1", {}, stages)
    P.mark([trial], store)
    joint = next(s for s in trial.stages if s.stage == "joint")
    assert joint.status == "store" and joint.seconds == 30.0
    per_epoch, source = P.epoch_times([trial], {"s#1": cfg}, None)
    assert per_epoch[("joint", joint.key)] == 30.0 / cfg.train.joint_epochs and "stage store" in source
    assert per_epoch[("pose", stages[0].key)] is None  # no pose stage measured, no bench given


def test_bench_json_gives_hours(tmp_path):
    cfg = apply_overrides(tiny(), {"train.steps_per_epoch": 10, "finetune.steps_per_epoch": 5})
    bench = {"machine": {"gpu": "H200"}, "settings": {"precision": "bf16"},
             "rows": [{"backbone": "r2plus1d", "step": "csvr", "batch": 4, "median_s": 2.0},
                      {"backbone": "r2plus1d", "step": "plain", "batch": 4, "median_s": 1.0}]}
    assert P.bench_epoch_seconds("joint", cfg, bench) == 10 * cfg.data.batch_size * 0.5
    assert P.bench_epoch_seconds("finetune/synthetic", cfg, bench) == 5 * cfg.finetune.batch_size * 0.25
    path = tmp_path / "step.json"
    path.write_text(json.dumps(bench))
    doc = P.plan([P.PlannedTrial("s", "1", {}, P.trial_stages(cfg))], {"s#1": cfg}, tmp_path, str(path), "t")
    assert doc["totals"]["hours_to_compute"] > 0 and "H200" in doc["epoch_seconds_from"]


def test_optuna_plan_counts_sampled_stages_per_trial(tmp_path, capsys):
    args = parse_args(SIGMA, ["--plan", "--search", "optuna", "--num-samples", "3"])
    trials = P.study_trials(SIGMA, args)
    P.mark(trials, StageStore(tmp_path))
    status = [[s.status for s in t.stages] for t in trials]
    assert [s.stage for s in trials[1].stages if s.status == "compute"] == ["joint"]  # tiny: k-NN evaluation
    assert status[0] == ["compute"] * 5


def test_paper_plan_one_pretraining_for_the_default_cells(tmp_path, capsys):
    doc = P.main(["--paper", "--storage", str(tmp_path), "--json", str(tmp_path / "paper.json")])
    assert doc["paper_cells"]["one_pretraining"]
    assert {t["study"] for t in doc["trials"]} == {s.name for s in P.all_studies()}
    assert "share one pretraining" in capsys.readouterr().out
    assert json.loads(Path(tmp_path / "paper.json").read_text())["totals"]["saved_by_sharing"] > 0.3
