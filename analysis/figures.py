"""The paper's figures from a study's runs, written as PNGs and logged to the study's parent run.

    python -m analysis.figures sigma_grid --mlflow-uri sqlite:///mlflow.db --out reports/
    python -m analysis.figures feature_source --dataset ucf101

    from analysis.figures import write_figures
    paths = write_figures("sigma_grid", "sqlite:///mlflow.db", "reports/")

Which figures each study gets is the FIGURES dict below:
  sigma_grid           Fig. 3 heatmap of top-1 over sigma_p x sigma_c: mean, 95 % CI and n in each cell,
                       colours from chance to 100 %, the best mean framed, the paper's best cell marked
                       only on the paper's dataset; per-class bars
  feature_source       Fig. 4 per-class accuracy of f_d, f_s and f_i (= f_i_full), grouped motion /
                       context / both from the `group` column of eval/<ds>/per_class.csv
  pretext_correlation  Table II: each pretext metric against downstream top-1, with Pearson r
  every other study    per-class bars (one series per setting) when its trials logged per_class.csv
Every bar has a 95 % CI error bar (t over seeds; one seed: exact binomial over the class's test videos).
Only studies whose parent run is tagged csvr.search=optuna get the Optuna history and importances (in a
grid, trial order means nothing); importances show their spread over fANOVA seeds and a caveat below
MIN_TRIALS trials.
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
from scipy import stats  # noqa: E402

from analysis.runs import (SEED_KEY, Artifacts, RunRecord, StudyRuns, client_for, datasets_in,  # noqa: E402
                           default_uri, load_study)
from analysis.specs import FEATURE_SOURCE, SIGMA_GRID, SPECS, TableSpec, shown, specs_for  # noqa: E402
from analysis.stats import t_interval  # noqa: E402
from analysis.tables import Cell, Table, add_common_args, collect, label_text  # noqa: E402

FIG4_SOURCES = {"f_d": "f_d", "f_s": "f_s", "f_i_full": "f_i"}  # eval.feature_source -> bar label
GROUP_COLOURS = {"motion": "tab:orange", "context": "tab:blue", "both": "black"}  # Fig. 4's label colours
BAR_COLOURS = {"f_d": "tab:purple", "f_s": "tab:olive", "f_i": "tab:green"}
PRETEXT_METRICS = ("pretext/context_acc", "pretext/pose_mse_x100", "pretext/video_is")
OPTUNA_TAG = "csvr.search"
MAX_SERIES = 6  # per-class bars: more settings than this show the reference, the best and the worst
IMPORTANCE_SEEDS = 5  # fANOVA forests refitted with these many seeds: the importance bars' range
MIN_TRIALS = 30  # below this many trials, importances carry a caveat


@dataclass
class FigureContext:
    study: str
    runs: StudyRuns
    client: MlflowClient
    out_dir: Path
    dataset: str | None  # --dataset, else the first dataset found
    artifacts: Artifacts  # per_class.csv / per_video.csv of the trials, each read once

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


def chance_of(table: Table) -> float:
    size = table.test_sets.get(table.dataset or "")
    return size.chance if size else 0.0


def heatmap_text(cell: Cell) -> str:
    if not cell.n:
        return "—"
    iv = cell.interval
    text = f"{iv.mean:.1f}\nn={cell.n}" + (" (videos)" if iv.method == "bootstrap" else "")
    return text if iv.low is None else f"{iv.mean:.1f}\n[{iv.low:.0f}, {iv.high:.0f}]\nn={cell.n}"


def sigma_heatmap(ctx: FigureContext) -> list[Path]:
    """Mean top-1 with its 95 % CI per (sigma_p, sigma_c); colours from chance to 100 %, so that noise does
    not look like structure; the best mean framed; the paper's best cell only where the paper has a value."""
    table = collect(SIGMA_GRID, ctx.runs, ctx.dataset, ctx.artifacts)
    if not table.cells:
        return skip("no sigma_grid cells: no heatmap")
    grid = np.array([[table.cell(r, c).mean if table.cell(r, c).n else np.nan for c in table.columns]
                     for r in table.rows], dtype=float)
    if np.isnan(grid).all():
        return skip("every sigma_grid cell is NaN: no heatmap")
    chance = chance_of(table)
    fig, ax = plt.subplots(figsize=(1.5 * len(table.columns) + 3.0, 1.1 * len(table.rows) + 2.0))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")  # missing cells grey
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, origin="lower", vmin=chance, vmax=100.0)
    fig.colorbar(image, ax=ax, label=f"top-1 (%), scale from chance ({chance:.1f}) to 100")
    for i, row in enumerate(table.rows):
        for j, col in enumerate(table.columns):
            cell = table.cell(row, col)
            light = cell.n and cell.mean < chance + 0.6 * (100 - chance)
            ax.text(j, i, heatmap_text(cell), ha="center", va="center", fontsize=7,
                    color="white" if light else "black")
    best_i, best_j = np.unravel_index(np.nanargmax(grid), grid.shape)
    ax.add_patch(plt.Rectangle((best_j - 0.5, best_i - 0.5), 1, 1, fill=False, ec="red", lw=3,
                               label="best mean (CIs may overlap)"))
    marked = mark_paper_best(ax, table)
    ax.set_xticks(range(len(table.columns)), [label_text(c) for c in table.columns])
    ax.set_yticks(range(len(table.rows)), [label_text(r) for r in table.rows])
    ax.set_xlabel("loss.sigma_c (σc)")
    ax.set_ylabel("loss.sigma_p (σp)")
    size = table.test_sets.get(table.dataset or "")
    videos = f", {size.videos} test videos" if size else ""
    ax.set_title(f"Fig. 3: {ctx.study}, eval/{table.dataset}/top1{videos}\nmean [95 % CI], n seeds" +
                 ("" if marked else f"; paper's best (σp = σc = 0.75) is on {SIGMA_GRID.paper_dataset}: "
                                    "not marked"), fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=2)
    return save(fig, ctx.path("fig3_sigma_heatmap"))


def mark_paper_best(ax: plt.Axes, table: Table) -> bool:
    """The paper's best cell (sigma_p = sigma_c = 0.75), dashed, only when the paper has a value for this
    dataset and the cell is in the grid."""
    p, c = paper.FIG_3_BEST
    if table.paper((p,), (c,)) is None or (p,) not in table.rows or (c,) not in table.columns:
        return False
    i, j = table.rows.index((p,)), table.columns.index((c,))
    ax.add_patch(plt.Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, ec="magenta", ls="--", lw=1.5,
                               label=f"paper's best on {table.dataset} ({table.paper((p,), (c,)):.1f})"))
    return True


# ---------------------------------------------------------------------------------------------
# Fig. 4 (and the same per-class bars for every study with per-class results)


def series_label(spec: TableSpec, run: RunRecord) -> str | None:
    """The bar series a run belongs to: Fig. 4's f_d / f_s / f_i for Table I, else its varied params."""
    if spec is FEATURE_SOURCE:
        return FIG4_SOURCES.get(run.param("eval.feature_source"))
    keys = spec.rows + spec.columns
    values = [run.param(k) for k in keys]
    if not keys or any(v is None for v in values):
        return None
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values))


def per_class_long(ctx: FigureContext, dataset: str) -> pd.DataFrame:
    """One row per (run, class): series, seed, class, group, accuracy (%), support."""
    spec, frames = specs_for(ctx.study)[0], []
    for run in ctx.runs.trials:
        label = series_label(spec, run)
        frame = ctx.artifacts.frame(run.run_id, f"eval/{dataset}/per_class.csv") if label else None
        if frame is not None:
            group = frame["group"] if "group" in frame else pd.Series([""] * len(frame))
            frames.append(frame.assign(series=label, seed=run.param(SEED_KEY), group=group.fillna(""),
                                       accuracy=100.0 * frame["accuracy"]))  # logged as fractions
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def class_interval(accuracy: pd.Series, support: pd.Series) -> tuple[float, float, float]:
    """Mean per-class accuracy (%) and its 95 % CI: a t interval over seeds, or with one seed the exact
    (Clopper-Pearson) binomial interval of that class's test videos."""
    if len(accuracy) > 1:
        iv = t_interval(accuracy.to_numpy())
        return iv.mean, max(0.0, iv.low), min(100.0, iv.high)
    n = int(support.iloc[0])
    if n == 0 or not np.isfinite(accuracy.iloc[0]):
        return float("nan"), float("nan"), float("nan")
    k = int(round(accuracy.iloc[0] / 100 * n))
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(accuracy.iloc[0]), 100 * ci.low, 100 * ci.high


def pick_series(long: pd.DataFrame, spec: TableSpec, limit: int = MAX_SERIES) -> list[str]:
    """Every series when few; else the reference, the best and the worst by mean accuracy."""
    order = list(dict.fromkeys(long["series"]))
    if spec is FEATURE_SOURCE:
        return [s for s in FIG4_SOURCES.values() if s in order]
    if len(order) <= limit:
        return order
    means = long.groupby("series")["accuracy"].mean().sort_values()
    ref = " ".join(f"{k.split('.')[-1]}={v}" for k, v in spec.reference.items())
    return list(dict.fromkeys([s for s in (ref,) if s in order] + [means.index[-1], means.index[0]]))


def per_class_bars(ctx: FigureContext) -> list[Path]:
    """Grouped bars of per-class accuracy with 95 % CI error bars, one series per setting (Fig. 4: f_d,
    f_s, f_i); classes with a motion/context/both group only, when the dataset has groups."""
    dataset = ctx.dataset or next(iter(datasets_in(ctx.runs.trials)), None)
    long = per_class_long(ctx, dataset) if dataset else pd.DataFrame()
    if long.empty:
        return skip(f"no eval/{dataset}/per_class.csv in {ctx.study}: no per-class bars")
    spec = specs_for(ctx.study)[0]
    series = pick_series(long, spec)
    rows = [(s, g, ci, cn, *class_interval(d["accuracy"], d["support"]), d["seed"].nunique())
            for (s, g, ci, cn), d in long[long["series"].isin(series)].groupby(
                ["series", "group", "class_index", "class_name"])]
    wide = pd.DataFrame(rows, columns=["series", "group", "class_index", "class_name", "mean", "low", "high", "n"])
    classes = order_by_group(wide[["group", "class_index", "class_name"]].drop_duplicates())
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(classes) * len(series) + 2), 4.5))
    x = np.arange(len(classes))
    for k, name in enumerate(series):
        data = classes.merge(wide[wide["series"] == name], how="left", on=["group", "class_index", "class_name"])
        err = np.vstack([data["mean"] - data["low"], data["high"] - data["mean"]])
        ax.bar(x + (k - (len(series) - 1) / 2) * width, data["mean"], width, yerr=err, capsize=2,
               label=f"{name} (n={int(data['n'].max())})", color=BAR_COLOURS.get(name), error_kw={"lw": 0.8})
    ax.set_xticks(x, classes["class_name"], rotation=75, ha="right", fontsize=7)
    for tick, group in zip(ax.get_xticklabels(), classes["group"]):
        tick.set_color(GROUP_COLOURS.get(group, "black"))
    size = ctx.artifacts.test_set(long_run(ctx, dataset), dataset)
    if size:
        ax.axhline(size.chance, color="grey", ls=":", lw=1, label=f"chance {size.chance:.1f} %")
    ax.set_ylim(0, 105)
    ax.set_ylabel("per-class accuracy (%), 95 % CI")
    name = "Fig. 4" if spec is FEATURE_SOURCE else "Per-class accuracy"
    ax.set_title(f"{name}: {ctx.study} on {dataset}; error bars: t interval over seeds, "
                 "or exact binomial over the class's test videos with one seed", fontsize=8)
    ax.set_xlabel("class (orange: motion, blue: context, black: both)" if any(classes["group"].isin(GROUP_COLOURS))
                  else "class")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, ctx.path(f"fig4_per_class_{dataset}"))


def long_run(ctx: FigureContext, dataset: str) -> str:
    return next(r.run_id for r in ctx.runs.trials if ctx.artifacts.frame(r.run_id, f"eval/{dataset}/per_class.csv")
                is not None)


def order_by_group(classes: pd.DataFrame) -> pd.DataFrame:
    """Classes with a group only (the paper's typical classes), motion / context / both; else all."""
    grouped = classes[classes["group"].isin(GROUP_COLOURS)]
    if grouped.empty:
        return classes.sort_values("class_index").reset_index(drop=True)
    rank = {g: i for i, g in enumerate(GROUP_COLOURS)}
    return grouped.assign(rank=grouped["group"].map(rank)).sort_values(["rank", "class_index"]).drop(
        columns="rank").reset_index(drop=True)


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
    """Optimisation history (optuna's own plot) and parameter importances (bar chart); Optuna studies only:
    in a grid, trial order means nothing."""
    study, target = rebuild_optuna(ctx)
    if study is None:
        return skip(f"no finished trials with {target}: no Optuna figures")
    with warnings.catch_warnings(), matplotlib.rc_context():  # optuna's plot sets the ggplot style globally
        warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is marked experimental
        ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=target)
        ax.set_title(f"Optuna optimisation history: {ctx.study} ({len(study.trials)} trials, one seed each)")
        paths = save(ax.figure, ctx.path("optuna_history"))
    return paths + importance_bars(ctx, study, target)


def importances_over_seeds(study: optuna.Study) -> pd.DataFrame:
    """fANOVA importances refitted with IMPORTANCE_SEEDS random forests: one row per seed, a column per param."""
    rows = []
    for seed in range(IMPORTANCE_SEEDS):
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        rows.append(optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True))
    return pd.DataFrame(rows)


def importance_bars(ctx: FigureContext, study: optuna.Study, target: str) -> list[Path]:
    """Mean fANOVA importance with the min-max range over forest seeds; a caveat below MIN_TRIALS trials."""
    try:
        frame = importances_over_seeds(study)
    except (ValueError, RuntimeError) as err:
        return skip(f"no parameter importances ({err})")
    if frame.empty or frame.isna().any().any():
        return skip("no parameter importances (too few distinct trials)")
    names = list(frame.mean().sort_values().index)
    mean = frame[names].mean()
    err = np.vstack([mean - frame[names].min(), frame[names].max() - mean])
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(names) + 2.0))
    ax.barh(names, mean, xerr=err, capsize=3)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"fANOVA importance for {target}; bars: range over {IMPORTANCE_SEEDS} forest seeds")
    n = len(study.trials)
    few = n < MIN_TRIALS
    caveat = (f"\ncaveat: {n} single-seed trials (< {MIN_TRIALS}); importances from this few points are not "
              "reliable, and they ignore seed noise") if few else "\n(single-seed trials: seed noise not included)"
    ax.set_title(f"Parameter importances: {ctx.study}{caveat}", fontsize=8, color="darkred" if few else "black")
    return save(fig, ctx.path("optuna_importances"))


# ---------------------------------------------------------------------------------------------
# API and CLI

FIGURES: dict[str, tuple[Callable[[FigureContext], list[Path]], ...]] = {
    "sigma_grid": (sigma_heatmap, per_class_bars),
    "feature_source": (per_class_bars,),
    "pretext_correlation": (pretext_scatter,),
}


def figure_makers(study: str, runs: StudyRuns) -> tuple[Callable[[FigureContext], list[Path]], ...]:
    """FIGURES[study], per-class bars for every other study (they skip without per_class.csv), and the
    Optuna figures for studies whose parent run is tagged csvr.search=optuna."""
    makers = FIGURES.get(study, (per_class_bars,) if study in SPECS else ())
    searched = runs.parent is not None and runs.parent.tags.get(OPTUNA_TAG) == "optuna"
    return makers + ((optuna_figures,) if searched else ())


def write_figures(study: str, tracking_uri: str | None, out_dir: str | Path, dataset: str | None = None,
                  experiment: str | None = None, log: bool = True) -> list[Path]:
    """Write the study's PNGs to out_dir and (log=True) log them to the parent run under figures/."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_study(study, tracking_uri, experiment)
    client = client_for(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = FigureContext(study, runs, client, out, dataset, Artifacts(client, Path(tmp)))
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
    for path in write_figures(args.study, default_uri(args.mlflow_uri), args.out or Path("."), args.dataset,
                              args.experiment, log=not args.no_log):
        print(path)


if __name__ == "__main__":
    main()
