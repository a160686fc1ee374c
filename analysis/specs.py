"""Which params and metrics make each study's table: one explicit dict, SPECS, study -> TableSpecs.

    from analysis.specs import SPECS
    SPECS["feature_source"]    # (TableSpec(name="Table I", rows=("eval.feature_source",), ...),)

A cell is the metric `metrics[i]` (with `{ds}` -> a dataset kind) of the trials whose params match the
row and column; its label is a tuple:
    row    = values of `rows` params          (+ the metric, if several and metric_axis == "rows")
    column = values of `columns` params       (+ the dataset when datasets == "columns")
                                              (+ the metric's last part, if several and metric_axis == "columns")
`reference` names the paper's setting (scratch for Table I) by the values of some label keys: every
cell is compared with the cell whose labels carry those values instead (paired by seed).
`paper` is keyed by the same labels (a 1-tuple is keyed by its element). The paper's rows and columns are
always shown (missing cells print "—") unless `show_paper_labels` is False, together with every label
found in the runs. Labels sort by `order` (the values it lists first, in its order), then numbers, then
text; datasets follow the paper (ucf101, hmdb51, ssv2, kinetics400), metrics the order of `metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from analysis import paper

# Metrics the platform logs as fractions in [0, 1] (csvr/evaluation.py) and the paper prints in %:
# tables and figures show them x100. pretext/pose_mse_x100 is already scaled; pretext/video_is has no unit.
LOGGED_AS_FRACTION = ("top1", "mean_class_acc", "retrieval_r1", "retrieval_r5", "retrieval_r10", "retrieval_r20",
                      "context_acc", "motion", "context", "both", "knn_top1")
BACKBONES = ("c3d", "s3d", "r2plus1d", "r3d")  # the paper's order (Table VI)
PRETRAIN = ("ucf101", "kinetics400")


@dataclass(frozen=True)
class TableSpec:
    name: str  # "Table I": also the output file stem (table_i)
    title: str
    rows: tuple[str, ...]  # param keys (or runs.DERIVED_PARAMS keys) forming the row label
    columns: tuple[str, ...] = ()  # param keys forming the column label
    metrics: tuple[str, ...] = ("eval/{ds}/top1",)
    metric_axis: Literal["rows", "columns"] = "columns"  # where the metric goes when there are several
    datasets: Literal["columns", "one"] = "columns"  # a column per dataset, or one (--dataset / first found)
    order: Mapping[str, tuple] = field(default_factory=dict)  # param key -> the paper's order of its values
    paper: Mapping[Any, Mapping[Any, float]] = field(default_factory=dict)
    paper_dataset: str | None = None  # datasets == "one": paper values apply only to this dataset
    paper_inline: bool = False  # paper value and delta inside the cell instead of beside it
    show_paper_labels: bool = True
    search_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # Optuna distributions
    reference: Mapping[str, Any] = field(default_factory=dict)  # the row/cell every other one is compared to
    note: str = ""
    # param key -> what its values count, shown after the key in the header; `{section.field}` placeholders in it
    # and in `note` are filled with the runs' values of that param (tables.fill_params)
    key_notes: Mapping[str, str] = field(default_factory=dict)
    decimals: int = 1  # of every cell and difference (2 for L2s near 1, such as 0.70 vs 0.69)


SIGMA_GRID = TableSpec(
    name="Fig. 3", title="Top-1 for each sigma_p (rows) x sigma_c (columns), Eq. 9 weights",
    rows=("loss.sigma_p",), columns=("loss.sigma_c",), datasets="one",
    paper=paper.FIG_3, paper_dataset="ucf101", paper_inline=True, show_paper_labels=False,
    reference={"loss.sigma_p": paper.FIG_3_BEST[0], "loss.sigma_c": paper.FIG_3_BEST[1]},
    search_ranges={"loss.sigma_p": paper.SIGMA_SEARCH_RANGE, "loss.sigma_c": paper.SIGMA_SEARCH_RANGE},
    note="The paper gives only Fig. 3's best cell (sigma_p = sigma_c = 0.75); its value is Table V's 90.4.",
)

FEATURE_SOURCE = TableSpec(
    name="Table I", title="Top-1 by the feature that initialises finetuning (or, under eval.protocol=knn/linear, "
                          "the frozen feature)",
    rows=("eval.feature_source:init",), order={"eval.feature_source:init": tuple(paper.TABLE_I)},
    paper=paper.TABLE_I, reference={"eval.feature_source:init": "scratch"},
    note="'(random init)' rows evaluate the same feature at its random initialisation (eval.pretrained=false).",
)

FEATURE_SOURCE_GROUPS = TableSpec(
    name="Table I by group", title="Accuracy per class group (Fig. 4's motion / context / both groups) by feature",
    rows=("eval.feature_source:init",), metrics=("eval/{ds}/group/motion", "eval/{ds}/group/context",
                                                 "eval/{ds}/group/both", "eval/{ds}/top1"),
    datasets="one", order={"eval.feature_source:init": tuple(paper.TABLE_I)}, show_paper_labels=False,
    reference={"eval.feature_source:init": "scratch"},
    note="Each group cell is the mean per-class accuracy of that group's classes. The paper reports groups only "
         "as a figure (Fig. 4, UCF101), so no paper values are shown.",
)

BRANCH_EPOCHS = "{train.pose_epochs} pose, {train.context_epochs} context, {train.video_epochs} video epochs"
PRETEXT_CORRELATION = TableSpec(
    name="Table II", title="Pretext metrics and downstream top-1 by joint-pretraining epoch",
    rows=(), columns=("eval.pretrain_epoch",), datasets="one", metric_axis="rows",
    metrics=("pretext/context_acc", "pretext/pose_mse_x100", "pretext/video_is", "eval/{ds}/top1"),
    order={"eval.pretrain_epoch": paper.TABLE_II_EPOCHS}, paper=paper.TABLE_II, paper_dataset="ucf101",
    paper_inline=True,
    key_notes={"eval.pretrain_epoch": f"joint-pretraining epoch after branch pretraining: {BRANCH_EPOCHS}"},
    note="Epochs count joint pretraining (Eq. 9) only, which starts after branch pretraining (" + BRANCH_EPOCHS
         + "), so joint epoch 1 already has every branch pretrained. The paper counts from the start of "
         "pretraining (its epoch-1 top-1, 65.0, equals training from scratch in Table I): its values are shown "
         "under the same epoch number, which is not the same amount of pretraining.",
)

ENCODER_LAYER = TableSpec(
    name="Table III", title="Top-1 by the G_p encoder layer that gives f_d",
    rows=("model.pose_encoder_layer",), paper=paper.TABLE_III, reference={"model.pose_encoder_layer": 6},
)

CONTEXT_LOSS = TableSpec(
    name="Table IV", title="Top-1 by the contrastive loss of the context branch",
    rows=("loss.context",), order={"loss.context": tuple(paper.TABLE_IV)}, paper=paper.TABLE_IV,
    reference={"loss.context": "mi_infonce"},
)

GENERATION_TARGET = TableSpec(
    name="Table V", title="Top-1 by the video generating objective",
    rows=("loss.generation_target",), order={"loss.generation_target": tuple(paper.TABLE_V)},
    paper=paper.TABLE_V, reference={"loss.generation_target": "both"},
)

BACKBONES_RECOGNITION = TableSpec(
    name="Table VI", title="Top-1 by backbone and pretraining dataset (Tables VI and VII)",
    rows=("model.backbone", "data.source:kind"), order={"model.backbone": BACKBONES, "data.source:kind": PRETRAIN},
    paper=paper.recognition(), reference={"model.backbone": "r2plus1d"},
)

BACKBONES_RETRIEVAL = TableSpec(
    name="Table VIII", title="Video retrieval R@k by backbone and pretraining dataset",
    rows=("model.backbone", "data.source:kind"),
    metrics=tuple(f"eval/{{ds}}/retrieval_r{k}" for k in paper.RECALL_KS),
    order={"model.backbone": BACKBONES, "data.source:kind": PRETRAIN},
    paper=paper.retrieval(), reference={"model.backbone": "r2plus1d"},
    note="The paper's retrieval rows are pretrained on Kinetics-400.",
)

FI_LEVELS = TableSpec(
    name="f_i levels", title="Video L2 (held out) and frozen-feature top-1 by the V-network maps f_i integrates",
    rows=(), columns=("model.fi_levels",), datasets="one", metric_axis="rows",
    metrics=("pretext/video_l2_reconstruct", "pretext/video_l2_mean_frame", "pretext/video_l2_predict",
             "pretext/video_l2_mean_frame_future", "pretext/video_l2_person", "eval/{ds}/group/motion",
             "eval/{ds}/group/context", "eval/{ds}/top1"),
    reference={"model.fi_levels": 1}, paper_inline=True, decimals=2,
    key_notes={"model.fi_levels": "maps from the V-network's last resolution back; 1 = the paper's one layer"},
    note="Not a paper ablation (Section III-D has one integration layer). video_l2_mean_frame(_future) are the "
         "clip-mean-frame baselines of the two generators; lower L2 is better.",
)

SPECS: dict[str, tuple[TableSpec, ...]] = {
    "sigma_grid": (SIGMA_GRID,),
    "feature_source": (FEATURE_SOURCE, FEATURE_SOURCE_GROUPS),
    "pretext_correlation": (PRETEXT_CORRELATION,),
    "encoder_layer": (ENCODER_LAYER,),
    "context_loss": (CONTEXT_LOSS,),
    "generation_target": (GENERATION_TARGET,),
    "backbones": (BACKBONES_RECOGNITION, BACKBONES_RETRIEVAL),
    "fi_levels": (FI_LEVELS,),
}


@dataclass(frozen=True)
class Claim:
    """One claim a study tests: the cell `better` beats the cell `than` on `metric` (`{ds}` -> the dataset),
    cells named by their value of the row key `key` (as the tables label their rows). `python -m analysis.claims`
    gives the difference paired by seed beside both cells' own intervals."""

    text: str
    metric: str
    better: str
    than: str
    key: str = "eval.feature_source:init"


# Issue 10's claims and Table I's (Section IV-C): what each branch is for, under the protocol the runs used
CLAIMS: dict[str, tuple[Claim, ...]] = {
    "feature_source": (
        Claim("f_d ahead of a random pose encoder on the motion classes", "eval/{ds}/group/motion",
              "f_d", "f_d (random init)"),
        Claim("f_s ahead of a random V-network on the context classes", "eval/{ds}/group/context",
              "f_s", "f_s (random init)"),
        Claim("f_i (full) at least as good as f_s overall", "eval/{ds}/top1", "f_i_full", "f_s"),
        Claim("f_i (full) at least as good as f_d overall", "eval/{ds}/top1", "f_i_full", "f_d"),
        Claim("pretraining helps f_i (full)", "eval/{ds}/top1", "f_i_full", "f_i_full (random init)"),
        Claim("pretrained f_i (full) ahead of scratch (Table I)", "eval/{ds}/top1", "f_i_full", "scratch"),
        Claim("pretrained f_i (full) ahead of scratch on the motion classes", "eval/{ds}/group/motion",
              "f_i_full", "scratch"),
    ),
}


def in_percent(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1] in LOGGED_AS_FRACTION


def shown(metric: str, value: float) -> float:
    """The value as tables and figures show it: % for LOGGED_AS_FRACTION metrics, else as logged."""
    return 100.0 * value if in_percent(metric) else value


def specs_for(study: str) -> tuple[TableSpec, ...]:
    if study not in SPECS:
        raise SystemExit(f"no table spec for study {study!r}; known studies: {', '.join(SPECS)}")
    return SPECS[study]
