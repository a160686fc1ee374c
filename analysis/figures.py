"""The paper's figures from a study's runs, written as PNGs and logged to the study's parent run.

    python -m analysis.figures sigma_grid --mlflow-uri sqlite:///mlflow.db --out reports/
    python -m analysis.figures feature_source --dataset ucf101

    from analysis.figures import write_figures
    paths = write_figures("sigma_grid", "sqlite:///mlflow.db", "reports/")

Which figures each study gets is the FIGURES dict below:
  sigma_grid           Fig. 3 heatmap of top-1 over sigma_p x sigma_c (best cell marked), and the Optuna
                       optimisation history and parameter importances of the same trials
  feature_source       Fig. 4 per-class accuracy of f_d, f_s and f_i (= f_i_full), grouped motion /
                       context / both from the `group` column of eval/<ds>/per_class.csv
  pretext_correlation  Table II: each pretext metric against downstream top-1, with Pearson r
Any study whose parent run is tagged csvr.search=optuna also gets the two Optuna figures.
Every PNG is logged to the parent run (tag csvr.role=study) under `figures/`.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from analysis import paper  # noqa: E402
from analysis.runs import StudyRuns, client_for, datasets_in, download, load_study  # noqa: E402
from analysis.specs import SIGMA_GRID, shown, specs_for  # noqa: E402
from analysis.tables import add_common_args, collect, label_text  # noqa: E402

FIG4_SOURCES = {"f_d": "f_d", "f_s": "f_s", "f_i_full": "f_i"}  # eval.feature_source -> bar label
GROUP_COLOURS = {"motion": "tab:orange", "context": "tab:blue", "both": "black"}  # Fig. 4's label colours
BAR_COLOURS = {"f_d": "tab:purple", "f_s": "tab:olive", "f_i": "tab:green"}
PRETEXT_METRICS = ("pretext/context_acc", "pretext/pose_mse_x100", "pretext/video_is")
OPTUNA_TAG = "csvr.search"


@dataclass
class FigureContext:
    study: str
    runs: StudyRuns
    client: MlflowClient
    out_dir: Path
    dataset: str | None  # --dataset, else the first dataset found

    def path(self, name: str) -> Path:
        return self.out_dir / f"{self.study}_{name}.png"


def save(fig: plt.Figure, path: Path) -> list[Path]:
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [path]


def skip(reason: str) -> list[Path]:
    print(f"figures: {reason}", file=sys.stderr)
    return []


# ---------------------------------------------------------------------------------------------
# Fig. 3


def sigma_heatmap(ctx: FigureContext) -> list[Path]:
    """Mean top-1 over seeds for each (sigma_p, sigma_c); the best cell framed in red."""
    table = collect(SIGMA_GRID, ctx.runs, ctx.dataset)
    if not table.cells:
        return skip("no sigma_grid cells: no heatmap")
    grid = np.array([[table.cell(r, c).mean if table.cell(r, c).n else np.nan for c in table.columns]
                     for r in table.rows], dtype=float)
    if np.isnan(grid).all():
        return skip("every sigma_grid cell is NaN: no heatmap")
    fig, ax = plt.subplots(figsize=(1.3 * len(table.columns) + 2.5, 1.0 * len(table.rows) + 1.8))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")  # missing cells grey
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, origin="lower")
    fig.colorbar(image, ax=ax, label=f"eval/{table.dataset}/top1")
    for i, row in enumerate(table.rows):
        for j, col in enumerate(table.columns):
            cell = table.cell(row, col)
            text = "—" if not cell.n else f"{cell.mean:.1f}" + (f"\n±{cell.std:.1f}" if cell.std else "")
            ax.text(j, i, text, ha="center", va="center", color="white" if cell.n else "black", fontsize=8)
    best_i, best_j = np.unravel_index(np.nanargmax(grid), grid.shape)
    ax.add_patch(plt.Rectangle((best_j - 0.5, best_i - 0.5), 1, 1, fill=False, ec="red", lw=3, label="best"))
    mark_paper_best(ax, table)
    ax.set_xticks(range(len(table.columns)), [label_text(c) for c in table.columns])
    ax.set_yticks(range(len(table.rows)), [label_text(r) for r in table.rows])
    ax.set_xlabel("loss.sigma_c (σc)")
    ax.set_ylabel("loss.sigma_p (σp)")
    ax.set_title(f"Fig. 3: {ctx.study}, top-1 on {table.dataset}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.25, 1.0), fontsize=8)
    return save(fig, ctx.path("fig3_sigma_heatmap"))


def mark_paper_best(ax: plt.Axes, table) -> None:
    """The paper's best cell (sigma_p = sigma_c = 0.75), dashed, when it is in the grid."""
    p, c = paper.FIG_3_BEST
    if (p,) in table.rows and (c,) in table.columns:
        i, j = table.rows.index((p,)), table.columns.index((c,))
        ax.add_patch(plt.Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, ec="magenta", ls="--", lw=1.5,
                                   label="paper best"))


# ---------------------------------------------------------------------------------------------
# Fig. 4


def per_class_table(ctx: FigureContext, dataset: str) -> pd.DataFrame:
    """Per-class accuracy (%) averaged over seeds: one column per FIG4_SOURCES label, indexed by class."""
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in ctx.runs.trials:
            source = run.param("eval.feature_source")
            path = download(ctx.client, run.run_id, f"eval/{dataset}/per_class.csv",
                            Path(tmp) / run.run_id) if source in FIG4_SOURCES else None
            if path is not None:
                frame = pd.read_csv(path)
                frames.append(frame.assign(source=FIG4_SOURCES[source], group=frame.get("group"),
                                           accuracy=100.0 * frame["accuracy"]))  # logged as fractions
    if not frames:
        return pd.DataFrame()
    data = pd.concat(frames, ignore_index=True)
    data["group"] = data["group"].astype("object").where(data["group"].notna(), "")
    wide = data.pivot_table(index=["group", "class_index", "class_name"], columns="source",
                            values="accuracy", aggfunc="mean")
    return wide[[s for s in FIG4_SOURCES.values() if s in wide.columns]]


def order_by_group(wide: pd.DataFrame) -> pd.DataFrame:
    """Classes with a group only (the paper's typical classes), motion / context / both; else all."""
    groups = wide.index.get_level_values("group")
    if not any(g in GROUP_COLOURS for g in groups):
        return wide.sort_index(level="class_index")
    wide = wide[[g in GROUP_COLOURS for g in groups]]
    rank = {g: i for i, g in enumerate(GROUP_COLOURS)}
    keys = [(rank[g], idx) for g, idx, _ in wide.index]
    return wide.iloc[sorted(range(len(wide)), key=keys.__getitem__)]


def per_class_bars(ctx: FigureContext) -> list[Path]:
    """Fig. 4: grouped bars of per-class accuracy for f_d, f_s and f_i."""
    dataset = ctx.dataset or next(iter(datasets_in(ctx.runs.trials)), None)
    wide = per_class_table(ctx, dataset) if dataset else pd.DataFrame()
    if wide.empty:
        return skip(f"no eval/{dataset}/per_class.csv for {', '.join(FIG4_SOURCES)}: no Fig. 4")
    wide = order_by_group(wide)
    x = np.arange(len(wide))
    width = 0.8 / len(wide.columns)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(wide) + 2), 4))
    for k, source in enumerate(wide.columns):
        ax.bar(x + (k - (len(wide.columns) - 1) / 2) * width, wide[source], width, label=source,
               color=BAR_COLOURS[source])
    ax.set_xticks(x, wide.index.get_level_values("class_name"), rotation=75, ha="right", fontsize=7)
    for tick, group in zip(ax.get_xticklabels(), wide.index.get_level_values("group")):
        tick.set_color(GROUP_COLOURS.get(group, "black"))
    ax.set_ylabel("per-class accuracy (%)")
    ax.set_title(f"Fig. 4: {ctx.study} on {dataset}")
    ax.set_xlabel("class (orange: motion, blue: context, black: both)")
    ax.legend(fontsize=8)
    return save(fig, ctx.path(f"fig4_per_class_{dataset}"))


# ---------------------------------------------------------------------------------------------
# Table II as a figure


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return statistics.correlation(xs, ys)


def r_text(r: float | None) -> str:
    return "n/a" if r is None else f"{r:+.3f}"


def pretext_scatter(ctx: FigureContext) -> list[Path]:
    """Each pretext metric against eval/<ds>/top1, one point per run; the paper's points in grey."""
    dataset = ctx.dataset or next(iter(datasets_in(ctx.runs.trials)), None)
    target = f"eval/{dataset or '<dataset>'}/top1"
    runs = [r for r in ctx.runs.trials if target in r.metrics]
    if not runs:
        return skip(f"no {target} in {ctx.study}: no pretext correlation figure")
    fig, axes = plt.subplots(1, len(PRETEXT_METRICS), figsize=(4.2 * len(PRETEXT_METRICS), 3.8))
    for ax, metric in zip(axes, PRETEXT_METRICS):
        pts = [(shown(metric, r.metrics[metric]), shown(target, r.metrics[target])) for r in runs
               if metric in r.metrics]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.scatter(xs, ys, label=f"runs, r = {r_text(pearson(xs, ys))}")
        if dataset == "ucf101":
            px, py = list(paper.TABLE_II[metric].values()), list(paper.TABLE_II[target].values())
            ax.scatter(px, py, facecolors="none", edgecolors="grey", label=f"paper, r = {r_text(pearson(px, py))}")
        ax.set_xlabel(metric)
        ax.set_ylabel(target)
        ax.legend(fontsize=8)
    fig.suptitle(f"Table II: pretext vs downstream ({ctx.study})")
    return save(fig, ctx.path("table2_pretext_vs_top1"))


# ---------------------------------------------------------------------------------------------
# Optuna


def distribution(values: list, search_range: tuple[float, float] | None) -> optuna.distributions.BaseDistribution:
    if all(isinstance(v, (int, float)) for v in values):
        lo, hi = min(values), max(values)
        if search_range:
            lo, hi = min(lo, search_range[0]), max(hi, search_range[1])
        return optuna.distributions.FloatDistribution(float(lo), float(hi))
    return optuna.distributions.CategoricalDistribution(sorted(set(values), key=str))


def rebuild_optuna(ctx: FigureContext) -> tuple[optuna.Study | None, str]:
    """An in-memory Optuna study with one trial per finished run, in run start order (maximise top-1)."""
    spec = specs_for(ctx.study)[0]
    keys = spec.rows + spec.columns
    dataset = ctx.dataset or next(iter(datasets_in(ctx.runs.trials)), None)
    target = spec.metrics[0].format(ds=dataset or "<dataset>")
    runs = [r for r in ctx.runs.trials
            if math.isfinite(r.metrics.get(target, math.nan)) and all(r.param(k) is not None for k in keys)]
    if not runs or not keys:
        return None, target
    dists = {k: distribution([r.param(k) for r in runs], spec.search_ranges.get(k)) for k in keys}
    study = optuna.create_study(direction="maximize", study_name=ctx.study)
    for r in runs:
        study.add_trial(optuna.trial.create_trial(params={k: r.param(k) for k in keys}, distributions=dists,
                                                  value=shown(target, r.metrics[target])))
    return study, target


def optuna_figures(ctx: FigureContext) -> list[Path]:
    """Optimisation history (optuna's own plot) and parameter importances (bar chart)."""
    study, target = rebuild_optuna(ctx)
    if study is None:
        return skip(f"no finished trials with {target}: no Optuna figures")
    with warnings.catch_warnings(), matplotlib.rc_context():  # optuna's plot sets the ggplot style globally
        warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is marked experimental
        ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=target)
        paths = save(ax.figure, ctx.path("optuna_history"))
    return paths + importance_bars(ctx, study, target)


def importance_bars(ctx: FigureContext, study: optuna.Study, target: str) -> list[Path]:
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as err:
        return skip(f"no parameter importances ({err})")
    if not importances or any(math.isnan(v) for v in importances.values()):
        return skip("no parameter importances (too few distinct trials)")
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel(f"importance for {target} ({len(study.trials)} trials)")
    ax.set_title(f"Parameter importances: {ctx.study}")
    return save(fig, ctx.path("optuna_importances"))


# ---------------------------------------------------------------------------------------------
# API and CLI

FIGURES: dict[str, tuple[Callable[[FigureContext], list[Path]], ...]] = {
    "sigma_grid": (sigma_heatmap, optuna_figures),
    "feature_source": (per_class_bars,),
    "pretext_correlation": (pretext_scatter,),
}


def figure_makers(study: str, runs: StudyRuns) -> tuple[Callable[[FigureContext], list[Path]], ...]:
    makers = FIGURES.get(study, ())
    searched = runs.parent is not None and runs.parent.tags.get(OPTUNA_TAG) == "optuna"
    return makers + ((optuna_figures,) if searched and optuna_figures not in makers else ())


def write_figures(study: str, tracking_uri: str | None, out_dir: str | Path, dataset: str | None = None,
                  experiment: str | None = None, log: bool = True) -> list[Path]:
    """Write the study's PNGs to out_dir and (log=True) log them to the parent run under figures/."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_study(study, tracking_uri, experiment)
    client = client_for(tracking_uri)
    ctx = FigureContext(study, runs, client, out, dataset)
    paths = [p for make in figure_makers(study, runs) for p in make(ctx)]
    if log and paths and runs.parent is None:
        skip(f"{study} has no parent run (tag csvr.role=study): figures not logged")
    elif log:
        for path in paths:
            client.log_artifact(runs.parent.run_id, str(path), "figures")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.figures", description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--no-log", action="store_true", help="do not log the PNGs to the parent run")
    args = parser.parse_args(argv)
    for path in write_figures(args.study, args.mlflow_uri, args.out or Path("."), args.dataset,
                              args.experiment, log=not args.no_log):
        print(path)


if __name__ == "__main__":
    main()
