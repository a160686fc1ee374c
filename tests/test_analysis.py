"""Tests for analysis/: tables, figures and compare against a small real MLflow store, and the paper's
numbers against the text of the paper.

    python -m pytest tests/test_analysis.py -q

One sqlite store (module fixture) holds four studies with known values: several seeds, a missing cell,
FAILED and RUNNING runs that must be ignored, parent runs carrying a decoy metric, and a study found by
its csvr.study tag instead of its experiment name.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from analysis import paper
from analysis.compare import compare_runs, write_compare
from analysis.figures import write_figures
from analysis.runs import RunRecord, StudyRuns, load_study, normalise
from analysis.specs import FEATURE_SOURCE, SIGMA_GRID
from analysis.tables import RENDERERS, build_table, build_tables, collect, main as tables_main, render_md

# the paper's text lives in the team's shared/ folder beside the checkout (CI lays it there too)
PAPER_MD = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "paper" / "CSVR.md",
                             Path("/work/shared/paper/CSVR.md")) if p.exists()), None)


def paper_text() -> str:
    if PAPER_MD is None:
        pytest.skip("the paper's text (shared/paper/CSVR.md beside the checkout) is not here")
    return PAPER_MD.read_text()
PER_CLASS_HEADER = "class_index,class_name,group,accuracy,support\n"
CLASSES = [(0, "JumpRope", "motion"), (1, "Surfing", "context"), (2, "Basketball", "both"), (3, "Other", "")]


# ---------------------------------------------------------------------------------------------
# building a store


class Store:
    """A tiny MLflow writer: one experiment per study, runs with params, metrics and artifacts."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root}/mlflow.db"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.clock = 1_700_000_000_000  # run start times, increasing

    def experiment(self, name: str) -> str:
        return self.client.create_experiment(name, artifact_location=(self.root / "artifacts" / name).as_uri())

    def run(self, exp: str, params: dict, metrics: dict, status: str = "FINISHED", tags: dict | None = None,
            parent: str | None = None, per_class: dict | None = None, per_video: dict | None = None) -> str:
        self.clock += 1000
        tags = dict(tags or {}, **({"mlflow.parentRunId": parent, "csvr.role": "trial"} if parent else {}))
        run_id = self.client.create_run(exp, start_time=self.clock, tags=tags).info.run_id
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), self.clock, 0) for k, v in metrics.items()],
                              params=[Param(k, str(v)) for k, v in params.items()])
        for ds, accuracies in (per_class or {}).items():
            self.per_class(run_id, ds, accuracies)
        for ds, correct in (per_video or {}).items():
            self.per_video(run_id, ds, correct)
        self.client.set_terminated(run_id, status)
        return run_id

    def parent(self, exp: str, study: str, extra_tags: dict | None = None) -> str:
        # a decoy metric: were the parent counted as a trial, cells would change
        return self.run(exp, {"loss.sigma_p": 0.5, "loss.sigma_c": 0.5, "eval.feature_source": "f_d"},
                        {"eval/ucf101/top1": 0.0},
                        tags={"csvr.role": "study", "csvr.study": study, **(extra_tags or {})})

    def per_class(self, run_id: str, dataset: str, accuracies: list[float]) -> None:
        folder = self.root / "upload" / run_id
        folder.mkdir(parents=True)
        lines = [f"{i},{name},{group},{acc},10\n" for (i, name, group), acc in zip(CLASSES, accuracies)]
        (folder / "per_class.csv").write_text(PER_CLASS_HEADER + "".join(lines))
        self.client.log_artifact(run_id, str(folder / "per_class.csv"), f"eval/{dataset}")

    def per_video(self, run_id: str, dataset: str, correct: list[int]) -> None:
        folder = self.root / "upload_video" / run_id
        folder.mkdir(parents=True)
        lines = [f"{i},{i % 5},{i % 5 if c else (i + 1) % 5},{c}\n" for i, c in enumerate(correct)]
        (folder / "per_video.csv").write_text("video,label,prediction,correct\n" + "".join(lines))
        self.client.log_artifact(run_id, str(folder / "per_video.csv"), f"eval/{dataset}")


SIGMA_VIDEOS_REF = [1] * 45 + [0] * 5  # 90 % of 50 videos
SIGMA_VIDEOS_A = [1] * 44 + [0] * 6  # 88 %: wrong on the reference's 5 videos and one more


def sigma_grid(store: Store) -> dict:
    exp = store.experiment("sigma_grid")
    parent = store.parent(exp, "sigma_grid")
    cells = {(0.5, 0.5): [80, 82, 84], (0.75, 0.75): [90, 91], (0.75, 0.5): [85], (0.5, 0.75): [88],
             (1.0, 0.75): [87]}  # (1.0, 0.5) is missing
    videos = {(0.5, 0.75, 0): SIGMA_VIDEOS_A, (0.75, 0.75, 0): SIGMA_VIDEOS_REF}  # 50 test videos each
    for (p, c), values in cells.items():
        for seed, v in enumerate(values):
            correct = videos.get((p, c, seed))
            store.run(exp, {"loss.sigma_p": p, "loss.sigma_c": c, "train.seed": seed},
                      {"eval/ucf101/top1": v / 100}, parent=parent,
                      per_video={"ucf101": correct} if correct else None)
    store.run(exp, {"loss.sigma_p": 0.5, "loss.sigma_c": 0.5, "train.seed": 3}, {"eval/ucf101/top1": 0.0},
              status="FAILED", parent=parent)
    store.run(exp, {"loss.sigma_p": 1.0, "loss.sigma_c": 0.5, "train.seed": 0}, {"eval/ucf101/top1": 0.5},
              status="RUNNING", parent=parent)
    return {"parent": parent}


def feature_source(store: Store) -> dict:
    exp = store.experiment("feature_source")
    parent = store.parent(exp, "feature_source")
    ids = {}
    runs = {("f_d", 0): (75, 38, [0.9, 0.2, 0.5, 0.4]), ("f_d", 1): (77, 40, [0.7, 0.4, 0.5, 0.4]),
            ("f_s", 0): (73, None, [0.3, 0.9, 0.6, 0.5]),
            ("f_i_full", 0): (90, 56, [0.95, 0.85, 0.9, 0.6]), ("f_i_full", 1): (91, 57, None),
            ("f_i_full", 2): (92, 58, None)}
    for (source, seed), (ucf, hmdb, per_class) in runs.items():
        metrics = {"eval/ucf101/top1": ucf / 100, **({"eval/hmdb51/top1": hmdb / 100} if hmdb is not None else {})}
        ids[(source, seed)] = store.run(exp, {"eval.feature_source": source, "train.seed": seed}, metrics,
                                        parent=parent, per_class={"ucf101": per_class} if per_class else None)
    store.run(exp, {"eval.feature_source": "f_s", "train.seed": 1}, {"eval/hmdb51/top1": 0.0}, status="FAILED",
              parent=parent)
    return {"parent": parent, "runs": ids}


BRANCH_EPOCHS = {"train.pose_epochs": 20, "train.context_epochs": 20, "train.video_epochs": 10}


def pretext_correlation(store: Store) -> dict:
    exp = store.experiment("pretext_correlation")
    parent = store.parent(exp, "pretext_correlation")
    rows = [(1, 0, 30, 40, 2, 60), (1, 1, 32, 38, 2, 62), (5, 0, 45, 20, 7, 70), (10, 0, 50, 6, 9, 80)]
    for epoch, seed, acc, mse, inception, top1 in rows:
        store.run(exp, {"eval.pretrain_epoch": epoch, "train.seed": seed, **BRANCH_EPOCHS},
                  {"pretext/context_acc": acc / 100, "pretext/pose_mse_x100": mse, "pretext/video_is": inception,
                   "eval/ucf101/top1": top1 / 100}, parent=parent)
    return {"parent": parent}


def backbones(store: Store) -> dict:
    exp = store.experiment("bb_experiment")  # not the study name: found by the csvr.study tag
    parent = store.parent(exp, "backbones")
    tags = {"csvr.study": "backbones"}
    retrieval = {f"eval/ucf101/retrieval_r{k}": v for k, v in zip(paper.RECALL_KS, (0.60, 0.78, 0.86, 0.91))}
    store.run(exp, {"model.backbone": "r3d", "data.source": "kinetics400:/data/k400", "train.seed": 0},
              {"eval/ucf101/top1": 0.94, "eval/hmdb51/top1": 0.65, **retrieval}, tags=tags, parent=parent)
    store.run(exp, {"model.backbone": "c3d", "data.source": "ucf101:/data/UCF101", "train.seed": 0},
              {"eval/ucf101/top1": 0.88}, tags=tags, parent=parent)
    store.run(exp, {"model.backbone": "r2plus1d", "data.source": "synthetic", "train.seed": 0},
              {"eval/synthetic/top1": 0.5}, tags=tags, parent=parent)
    return {"parent": parent}


def encoder_layer(store: Store) -> dict:
    exp = store.experiment("encoder_layer")
    parent = store.parent(exp, "encoder_layer", {"csvr.search": "optuna"})  # searched by Optuna
    for layer, top1 in ((2, 0.70), (4, 0.73), (6, 0.76), (6, 0.74)):
        store.run(exp, {"model.pose_encoder_layer": layer, "train.seed": int(top1 == 0.74)},
                  {"eval/ucf101/top1": top1, "eval/hmdb51/top1": top1 / 2}, parent=parent)
    return {"parent": parent}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("mlflow"))
    store.ids = {"sigma_grid": sigma_grid(store), "feature_source": feature_source(store),
                 "pretext_correlation": pretext_correlation(store), "backbones": backbones(store),
                 "encoder_layer": encoder_layer(store)}
    return store


def md_rows(text: str) -> dict[str, list[str]]:
    """Markdown table lines -> {first cell: the other cells}."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


# ---------------------------------------------------------------------------------------------
# tables


def test_normalise_params():
    assert normalise("6") == 6 and isinstance(normalise("6"), int)
    assert normalise("0.75") == 0.75 and normalise("f_i_full") == "f_i_full"
    assert normalise("1") == normalise("1.0")


def half(values: list[float], t: float) -> float:
    """Half width of the 95 % t interval, by hand: t_{0.975, n-1} * s / sqrt(n)."""
    n, mean = len(values), sum(values) / len(values)
    return t * (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 / n ** 0.5


T2, T3 = 12.706204736174705, 4.302652729911275  # t_{0.975, 1}, t_{0.975, 2}


def ci(mean: float, h: float, n: int) -> str:
    return f"{mean:.1f} [{mean - h:.1f}, {mean + h:.1f}] (n={n})"


def test_sigma_grid_matrix_md(store):
    rows = md_rows(build_table("sigma_grid", store.uri, "md"))
    assert rows["loss.sigma_p \\ loss.sigma_c"] == ["0.5", "vs ref", "0.75", "vs ref"]
    # the FAILED 0.0 and the parent's 0.0 ignored; reference = the paper's sigma_p = sigma_c = 0.75
    assert rows["0.5"][0] == ci(82.0, half([80, 82, 84], T3), 3)
    diff = half([80 - 90, 82 - 91], T2)  # paired with the reference's seeds 0 and 1 (seed 2 has no partner)
    assert rows["0.5"][1] == f"-9.5 [{-9.5 - diff:.1f}, {-9.5 + diff:.1f}] *"  # excludes 0
    # one seed with per-video predictions: bootstrap over its 50 test videos, and paired with the reference
    assert rows["0.5"][2].startswith("88.0 [") and rows["0.5"][2].endswith("(n=1, videos)")
    assert rows["0.5"][3] == "-2.0 [-6.0, 0.0]"  # the two runs differ on one video only: a narrow interval
    assert rows["0.75"] == ["85.0 (n=1)", "-5.0", ci(90.5, half([90, 91], T2), 2) + " [paper 90.4, Δ +0.1]", "ref"]
    assert rows["1.0"] == ["—", "—", "87.0 (n=1)", "-3.0"]  # the RUNNING run does not fill the missing cell


def test_one_seed_bootstrap_interval(store):
    (table,) = build_tables("sigma_grid", store.uri)
    iv = table.cell((0.5,), (0.75,)).interval
    assert iv.method == "bootstrap" and iv.mean == pytest.approx(88.0)
    se = 100 * (0.88 * 0.12 / 50) ** 0.5  # binomial standard error of 44/50
    assert iv.low == pytest.approx(88 - 1.96 * se, abs=3) and iv.high == pytest.approx(min(100, 88 + 1.96 * se), abs=3)
    unpaired = table.cell((0.5,), (0.75,)).interval.half_width + table.cell((0.75,), (0.75,)).interval.half_width
    assert table.comparison((0.5,), (0.75,)).half_width < unpaired / 2  # pairing by video removes shared noise


def test_sigma_grid_notes(store):
    text = build_table("sigma_grid", store.uri, "md")
    assert "only Fig. 3's best cell" in text
    assert "1 FAILED, 1 RUNNING" in text
    assert "Test set ucf101: 50 videos, 5 classes, chance top-1 20.0 %; one video = 2.0 points" in text
    assert "t interval over seeds" in text and "bootstrap over the test videos" in text


def test_seeds_needed(store, capsys):
    from statsmodels.stats.power import TTestPower

    tables_main(["sigma_grid", "--mlflow-uri", store.uri, "--seeds-needed"])
    rows = md_rows(capsys.readouterr().out)
    diff, sd = rows["0.5 @ 0.5"][0], float(rows["0.5 @ 0.5"][1])
    assert diff == "-9.50" and sd == pytest.approx(2 ** 0.5 / 2, abs=0.01)  # differences -10, -9
    assert rows["0.5 @ 0.5"][2] == "2"  # 9.5 points at sd 0.7 is resolved by 2 seeds already
    assert rows["0.5 @ 0.75"][1].endswith("(test set only)") and rows["0.5 @ 0.75"][2].startswith(">= ")
    n = int(rows["0.5 @ 0.75"][2][3:])
    effect = 2.0 / float(rows["0.5 @ 0.75"][1].split()[0])
    power = lambda k: TTestPower().power(effect_size=effect, nobs=k, alpha=0.05)
    assert power(n) >= 0.8 > power(n - 1)
    assert rows["0.75 @ 0.5"][2].startswith("—")  # one seed, no per-video predictions: no noise estimate


def table_i(store: Store, fmt: str = "md") -> str:
    """Table I alone (feature_source also has a per-group table)."""
    return RENDERERS[fmt](build_tables("feature_source", store.uri)[0])


def test_feature_source_md(store):
    rows = md_rows(table_i(store))
    assert rows["eval.feature_source:init"] == ["ucf101", "vs ref", "paper", "Δ", "hmdb51", "vs ref", "paper", "Δ"]
    assert rows["f_d"] == [ci(76.0, half([75, 77], T2), 2), "—", "75.1", "+0.9",
                           ci(39.0, half([38, 40], T2), 2), "—", "38.4", "+0.6"]  # no scratch run to compare to
    assert rows["f_s"] == ["73.0 (n=1)", "—", "73.1", "-0.1", "—", "—", "40.2", "—"]
    assert rows["f_i_full"][:4] == [ci(91.0, half([90, 91, 92], T3), 3), "—", "90.4", "+0.6"]
    assert rows["scratch"] == ["—", "—", "65.0", "—", "—", "—", "32.5", "—"]
    assert list(rows)[1:] == list(paper.TABLE_I)  # the paper's row order
    text = table_i(store)
    assert "Test set ucf101: 40 videos, 4 classes, chance top-1 25.0 %" in text


def test_feature_source_latex(store):
    text = table_i(store, "latex")
    h = half([75, 77], T2)
    assert rf"f\_d & 76.0 [{76 - h:.1f}, {76 + h:.1f}] (n=2) & -- & 75.1 & +0.9 & " in text
    assert r"f\_s & 73.0 (n=1) & -- & 73.1 & -0.1 & -- & -- & 40.2 & -- \\" in text
    assert r"\begin{tabular}{lcccccccc}" in text and r"\end{table}" in text


def test_feature_source_csv(store):
    rows = list(csv.DictReader(io.StringIO(table_i(store, "csv"))))
    by_source = {r["eval.feature_source:init"]: r for r in rows}
    f_d = by_source["f_d"]
    assert float(f_d["ucf101 mean"]) == 76.0 and float(f_d["ucf101 std"]) == pytest.approx(2 ** 0.5)
    assert float(f_d["ucf101 ci_low"]) == pytest.approx(76 - half([75, 77], T2), abs=1e-5)
    assert f_d["ucf101 ci_method"] == "t"
    assert f_d["ucf101 n"] == "2" and float(f_d["ucf101 paper"]) == 75.1
    assert float(f_d["ucf101 delta"]) == pytest.approx(0.9)
    f_s = by_source["f_s"]
    assert f_s["ucf101 std"] == "" and f_s["ucf101 n"] == "1" and f_s["ucf101 ci_low"] == ""  # one seed
    assert f_s["hmdb51 mean"] == "" and f_s["hmdb51 n"] == "0" and f_s["hmdb51 delta"] == ""  # missing, not 0


def test_paired_comparison_against_scratch():
    def rec(i, source, seed, value):
        return RunRecord(f"r{i}", "FINISHED", i, {"eval.feature_source": source, "train.seed": str(seed)},
                         {"eval/ucf101/top1": value}, {})
    runs = StudyRuns("feature_source", None, [rec(1, "scratch", 0, 0.60), rec(2, "scratch", 1, 0.70),
                                              rec(3, "scratch", 2, 0.65), rec(4, "f_d", 0, 0.64),
                                              rec(5, "f_d", 1, 0.75), rec(6, "f_d", 2, 0.68)])
    table = collect(FEATURE_SOURCE, runs)
    cmp = table.comparison(("f_d",), ("ucf101",))
    h = half([4, 5, 3], T3)  # differences paired by seed: 4, 5, 3 points
    assert cmp.mean == pytest.approx(4.0) and (cmp.low, cmp.high) == pytest.approx((4 - h, 4 + h))
    assert cmp.excludes_zero  # unpaired, the two cells' intervals overlap; paired, the gain is clear
    assert table.cell(("f_d",), ("ucf101",)).interval.low < table.cell(("scratch",), ("ucf101",)).interval.high
    rows = md_rows(render_md(table))
    assert rows["scratch"][1] == "ref" and rows["f_d"][1].endswith(" *")


def test_paper_column_on_another_dataset():
    params = {"loss.sigma_p": "0.75", "loss.sigma_c": "0.75"}
    runs = StudyRuns("sigma_grid", None, [RunRecord("r", "FINISHED", 0, params, {"eval/synthetic/top1": 0.5}, {})])
    table = collect(SIGMA_GRID, runs)
    rows = md_rows(render_md(table))
    assert rows["0.75"][0] == "50.0 (n=1) [paper ucf101 90.4]"  # shown with its dataset, never compared
    assert table.delta((0.75,), (0.75,)) is None
    assert any("ran on synthetic; the paper reports this table on ucf101 only" in n for n in table.notes)
    runs = StudyRuns("feature_source", None, [RunRecord("r", "FINISHED", 0, {"eval.feature_source": "f_d"},
                                                        {"eval/synthetic/top1": 0.5}, {})])
    notes = collect(FEATURE_SOURCE, runs).notes
    assert any("did not report synthetic: its values are in the ucf101, hmdb51 column(s)" in n for n in notes)


def test_pretext_table(store):
    text = build_table("pretext_correlation", store.uri, "md")
    rows = md_rows(text)
    corner = ("metric \\ eval.pretrain_epoch (joint-pretraining epoch after branch pretraining: 20 pose, 20 context, "
              "10 video epochs)")  # the count this table uses, read off the runs' params
    assert rows[corner] == ["1", "5", "10", "20", "50", "120"]
    assert "_Epochs count joint pretraining (Eq. 9) only, which starts after branch pretraining (20 pose, 20 " \
           "context, 10 video epochs)" in text and "The paper counts from the start of pretraining" in text
    assert rows["pretext/context_acc"][0] == ci(31.0, half([30, 32], T2), 2) + " [paper 36.3, Δ -5.3]"
    assert rows["eval/ucf101/top1"][2] == "80.0 (n=1) [paper 82.4, Δ -2.4]"
    assert rows["pretext/video_is"][3] == "— [paper 11.9]"


def test_backbones_found_by_tag(store):
    recognition, retrieval = build_tables("backbones", store.uri)
    assert recognition.cell(("r3d", "kinetics400"), ("ucf101",)).mean == pytest.approx(94.0)
    assert recognition.delta(("r3d", "kinetics400"), ("ucf101",)) == pytest.approx(94.0 - 94.5)
    assert recognition.paper(("r2plus1d", "synthetic"), ("synthetic",)) is None
    assert ("r2plus1d", "synthetic") in recognition.rows and ("synthetic",) in recognition.columns
    assert len([r for r in recognition.rows if r[1] != "synthetic"]) == 8  # the paper's 8 CSVR rows
    assert retrieval.cell(("r3d", "kinetics400"), ("ucf101", "retrieval_r5")).mean == pytest.approx(78.0)
    assert retrieval.paper(("r3d", "kinetics400"), ("ucf101", "retrieval_r5")) == 79.5
    assert retrieval.columns[:4] == [("ucf101", f"retrieval_r{k}") for k in paper.RECALL_KS]


def test_encoder_layer_md(store):
    rows = md_rows(build_table("encoder_layer", store.uri, "md"))
    assert rows["6"] == [ci(75.0, half([76, 74], T2), 2), "ref", "75.1", "-0.1",
                         ci(37.5, half([38, 37], T2), 2), "ref", "38.4", "-0.9"]
    assert rows["2"][:4] == ["70.0 (n=1)", "-6.0", "72.0", "-2.0"]  # paired with the reference's seed 0


def test_dataset_option_restricts_columns(store):
    table = build_tables("feature_source", store.uri, dataset="hmdb51")[0]
    assert table.columns == [("hmdb51",)]


def test_paging_returns_every_run(store):
    small_pages = load_study("sigma_grid", store.uri, page_size=2)
    assert len(small_pages.trials) == 8 and small_pages.skipped == {"FAILED": 1, "RUNNING": 1}
    assert small_pages.parent.run_id == store.ids["sigma_grid"]["parent"]


def test_later_run_replaces_same_seed():
    def rec(i, seed, value):
        return RunRecord(f"r{i}", "FINISHED", i, {"eval.feature_source": "f_d", "train.seed": str(seed)},
                         {"eval/ucf101/top1": value}, {})
    runs = StudyRuns("feature_source", None, [rec(1, 0, 0.10), rec(2, 1, 0.20), rec(3, 0, 0.30)])
    table = collect(FEATURE_SOURCE, runs)
    assert table.cell(("f_d",), ("ucf101",)).values == pytest.approx((30.0, 20.0))
    assert any("replaced" in note for note in table.notes)


def test_percent_logged_warning():
    params = {"loss.sigma_p": "0.75", "loss.sigma_c": "0.75"}
    runs = StudyRuns("sigma_grid", None, [RunRecord("r", "FINISHED", 0, params, {"eval/ucf101/top1": 90.4}, {})])
    assert any("exceed 100%" in note for note in collect(SIGMA_GRID, runs).notes)


def test_t_intervals_past_100_are_flagged_not_clipped():
    def rec(i, seed, value):
        return RunRecord(f"r{i}", "FINISHED", i, {"eval.feature_source": "f_s", "train.seed": str(seed)},
                         {"eval/ucf101/top1": value}, {})
    wide = collect(FEATURE_SOURCE, StudyRuns("feature_source", None, [rec(0, 0, 0.99), rec(1, 1, 0.40)]))
    iv = wide.cell(("f_s",), ("ucf101",)).interval
    assert iv.high > 100.0  # shown as computed
    assert any("reach past 0 or 100" in note for note in wide.notes)
    narrow = collect(FEATURE_SOURCE, StudyRuns("feature_source", None, [rec(0, 0, 0.60), rec(1, 1, 0.62)]))
    assert not any("reach past" in note for note in narrow.notes)


def test_cli_writes_files(store, tmp_path, capsys):
    tables_main(["backbones", "--mlflow-uri", store.uri, "--format", "csv", "--out", str(tmp_path)])
    assert "model.backbone,data.source:kind" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbones_table_vi.csv", "backbones_table_viii.csv"]


# ---------------------------------------------------------------------------------------------
# figures and compare


def artifact_names(store: Store, run_id: str) -> set[str]:
    return {Path(a.path).name for a in store.client.list_artifacts(run_id, "figures")}


def test_sigma_grid_figures(store, tmp_path):
    paths = write_figures("sigma_grid", store.uri, tmp_path)
    names = {p.name for p in paths}
    assert names == {"sigma_grid_fig3_sigma_heatmap.png"}  # a grid: no Optuna history/importances
    assert all(p.stat().st_size > 1024 for p in paths)
    assert names <= artifact_names(store, store.ids["sigma_grid"]["parent"])


def test_feature_source_and_pretext_figures(store, tmp_path):
    paths = write_figures("feature_source", store.uri, tmp_path) + \
        write_figures("pretext_correlation", store.uri, tmp_path)
    assert [p.name for p in paths] == ["feature_source_fig4_per_class_ucf101.png",
                                       "pretext_correlation_table2_pretext_vs_top1.png"]
    assert all(p.stat().st_size > 1024 for p in paths)
    assert "feature_source_fig4_per_class_ucf101.png" in artifact_names(store, store.ids["feature_source"]["parent"])


def test_optuna_tagged_study_gets_optuna_figures(store, tmp_path):
    paths = write_figures("encoder_layer", store.uri, tmp_path)
    assert {p.name for p in paths} == {"encoder_layer_optuna_history.png", "encoder_layer_optuna_importances.png"}
    assert all(p.stat().st_size > 1024 for p in paths)


def test_figures_do_not_overclaim():
    import matplotlib.pyplot as plt

    from analysis.figures import figure_makers, mark_paper_best, optuna_figures, per_class_bars, sigma_heatmap

    def runs(search):
        parent = RunRecord("p", "FINISHED", 0, {}, {}, {"csvr.search": search})
        return StudyRuns("sigma_grid", parent, [])
    assert figure_makers("sigma_grid", runs("grid")) == (sigma_heatmap, per_class_bars)  # per-class bars too
    assert optuna_figures in figure_makers("sigma_grid", runs("optuna"))
    assert figure_makers("context_loss", runs("grid")) == (per_class_bars,)
    params = {"loss.sigma_p": "0.75", "loss.sigma_c": "0.75"}
    for ds, marked in (("synthetic", False), ("ucf101", True)):  # the paper has Fig. 3 on UCF101 only
        table = collect(SIGMA_GRID, StudyRuns("sigma_grid", None, [
            RunRecord("r", "FINISHED", 0, params, {f"eval/{ds}/top1": 0.5}, {})]))
        fig, ax = plt.subplots()
        assert mark_paper_best(ax, table) is marked
        plt.close(fig)


def test_compare_per_class(store, tmp_path):
    ids = store.ids["feature_source"]["runs"]
    frame = compare_runs(ids[("f_d", 0)], ids[("f_i_full", 0)], store.uri)
    assert frame.attrs["dataset"] == "ucf101"
    assert list(frame["class_name"]) == [name for _, name, _ in CLASSES]
    assert list(frame["diff"].round(6)) == [0.05, 0.65, 0.4, 0.2]
    assert (frame["diff_low"] < frame["diff"]).all() and (frame["diff"] < frame["diff_high"]).all()
    surfing = frame.iloc[1]  # 2/10 -> 8.5/10: the interval excludes 0; JumpRope 9/10 -> 9.5/10 does not
    assert surfing["diff_low"] > 0 and frame.iloc[0]["diff_low"] < 0
    paths = write_compare(frame, tmp_path)
    assert [p.suffix for p in paths] == [".csv", ".png"] and paths[1].stat().st_size > 1024


# ---------------------------------------------------------------------------------------------
# the paper's numbers against the paper's text


def paper_table(caption: str) -> list[list[str]]:
    """The tab-separated lines that follow the caption line `caption...` in CSVR.md, <b> removed."""
    lines = paper_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(caption))
    rows, seen = [], False
    for line in lines[start + 1:]:
        if "\t" in line:
            rows.append([re.sub(r"</?b>", "", c).strip() for c in line.split("\t")])
            seen = True
        elif seen and line.strip():
            break
    return rows


def numbers(cells: list[str]) -> list[float | None]:
    return [None if c == "-" else float(c) for c in cells]


def test_paper_table_i():
    ticked = list(paper.TABLE_I)[1:]  # the ✓ columns: f_d, f_s, f_i (AdaIN), f_i (Concat), f_i (full)
    for row in paper_table("TABLE I:")[1:]:
        source = "scratch" if "scratch" in row[0] else ticked[row.index("✓")]
        assert paper.TABLE_I[source] == dict(zip(("ucf101", "hmdb51"), numbers(row[-2:])))


def test_paper_table_ii():
    rows = paper_table("TABLE II:")
    assert [int(c) for c in rows[1][1:]] == list(paper.TABLE_II_EPOCHS)
    for row, metric in zip(rows[2:], paper.TABLE_II):
        assert list(paper.TABLE_II[metric].values()) == numbers(row[1:]), row[0]


@pytest.mark.parametrize("caption,table,labels", [
    ("TABLE III:", paper.TABLE_III, {"Layer 2": 2, "Layer 4": 4, "Layer 6": 6}),
    ("TABLE IV:", paper.TABLE_IV, {"L2 Loss": "l2", "InfoNCE": "infonce", "MI-InfoNCE": "mi_infonce"}),
    ("TABLE V:", paper.TABLE_V, {"$\\mathcal{L}_r$": "reconstruct", "$\\mathcal{L}_p$": "predict",
                                 "$\\mathcal{L}_r$ & $\\mathcal{L}_p$": "both"}),
])
def test_paper_ablation_tables(caption, table, labels):
    rows = paper_table(caption)
    datasets = [h.lower() for h in rows[0][1:]]
    for row in rows[1:]:
        assert table[labels[row[0]]] == dict(zip(datasets, numbers(row[1:])))


def test_paper_fig3_best_cell_is_table_v():
    text = paper_text()
    assert "best results are achieved when  $\\sigma_p = \\sigma_c = 0.75$" in text
    assert paper.FIG_3 == {0.75: {0.75: paper.TABLE_V["both"]["ucf101"]}}


def test_paper_table_vi_and_vii():
    names = {v: k for k, v in paper.BACKBONE_NAMES.items()}
    pretrain = {"UCF101": "ucf101", "Kinetics-400": "kinetics400"}
    ours = [r for r in paper_table("TABLE VI:") if r[0].startswith("CSVr")]
    assert len(ours) == len(paper.TABLE_VI)
    for row in ours:
        key = (names[row[1]], pretrain[row[2]])
        assert paper.TABLE_VI[key] == dict(zip(("ucf101", "hmdb51"), numbers(row[-2:])))
    others = [r for r in paper_table("TABLE VI:")[1:] if not r[0].startswith("CSVr")]
    assert [tuple(numbers(r[-2:])) for r in others] == [o[-2:] for o in paper.TABLE_VI_OTHERS]
    ours_vii = [r for r in paper_table("TABLE VII:") if r[0].startswith("CSVr")]
    assert paper.TABLE_VII == {(names[r[1]], pretrain[r[2]]): {"ssv2": float(r[-1])} for r in ours_vii}


def test_paper_table_viii():
    names = {v: k for k, v in paper.BACKBONE_NAMES.items()}
    rows = paper_table("TABLE VIII:")
    for row in (r for r in rows if r[0].startswith("CSVr")):
        values = numbers(row[3:])
        assert paper.TABLE_VIII[names[row[1]]] == {"ucf101": dict(zip(paper.RECALL_KS, values[:4])),
                                                   "hmdb51": dict(zip(paper.RECALL_KS, values[4:]))}
    others = [r for r in rows[2:] if not r[0].startswith("CSVr")]
    assert [(tuple(numbers(r[3:7])), tuple(numbers(r[7:]))) for r in others] == \
        [o[3:] for o in paper.TABLE_VIII_OTHERS]


def test_paper_table_ix():
    rows = paper_table("TABLE IX:")[1:]
    assert [(float(r[2]), float(r[3].rstrip("M")), float(r[4])) for r in rows] == \
        [row[2:] for row in paper.TABLE_IX]


def test_interval_text_keeps_the_decimals_a_table_asks_for():
    """Accuracies in % read at one decimal; an L2 near 0.7 needs two (TableSpec.decimals), and a difference that
    rounds to zero reads as 0.00, never -0.00."""
    from analysis.stats import Interval
    from analysis.tables import interval_text

    iv = Interval(0.6994, 0.6512, 0.7481, 3, "t")
    assert interval_text(iv) == "0.7 [0.7, 0.7]"
    assert interval_text(iv, decimals=2) == "0.70 [0.65, 0.75]"
    assert interval_text(Interval(-0.001, -0.02, 0.018, 3, "t"), signed=True, decimals=2) == "0.00 [-0.02, +0.02]"
