"""A study's results in the paper's table layout, with their uncertainty, the paper's value and the delta.

    python -m analysis.tables feature_source --mlflow-uri sqlite:///mlflow.db
    python -m analysis.tables sigma_grid --format latex --dataset ucf101 --out reports/
    python -m analysis.tables backbones --format csv      # Tables VI and VIII
    python -m analysis.tables sigma_grid --seeds-needed   # seeds that would resolve each difference

    from analysis.tables import build_table
    print(build_table("sigma_grid", "sqlite:///mlflow.db", "md"))

A cell is the mean over seeds (param `train.seed`; a later run with the same cell and seed replaces an
earlier one) with its 95 % confidence interval and n: a t interval over seeds, or with one seed a
bootstrap over the test videos from the run's eval/<dataset>/per_video.csv (analysis/stats.py). Tables
with a reference (the paper's setting, scratch for Table I: specs.TableSpec.reference) add a "vs ref"
column: the difference to the reference, paired by seed, marked * when its interval excludes 0. The
notes give each dataset's test-set size and chance level. Accuracies and R@k, logged as fractions, are
shown in % like the paper (specs.LOGGED_AS_FRACTION). A cell without runs prints "—" (md), "--" (latex)
or empty fields (csv), never 0. When a study ran on a dataset the paper did not report, the paper's
values are shown with the dataset they belong to. Which params and metrics make a table: analysis/specs.py.
"""
from __future__ import annotations

import argparse
import csv
import io
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pandas as pd
from scipy import stats

from analysis.paper import PAPER_DATASETS
from analysis.runs import (SEED_KEY, Artifacts, RunRecord, StudyRuns, TestSet, client_for, dataset_rank,
                           datasets_in, default_uri, load_study)
from analysis.specs import TableSpec, in_percent, shown, specs_for
from analysis.stats import (ALPHA, MAX_SEEDS, POWER, Interval, bootstrap_accuracy, paired_bootstrap,
                            paired_difference, seeds_needed, t_interval)

Label = tuple  # a row or column label: the values of its keys, e.g. ("r3d", "kinetics400")
FORMATS = {"md": "md", "latex": "tex", "csv": "csv"}  # --format -> file extension
TOP1 = re.compile(r"^eval/([^/]+)/(top1|retrieval_r\d+)$")  # metrics with per-video values behind them


@dataclass(frozen=True)
class Cell:
    by_seed: Mapping[Any, float] = field(default_factory=dict)  # seed (or run id) -> value
    videos: Mapping[Any, pd.Series] = field(default_factory=dict)  # seed -> 1/0 per test video (top-1 cells)

    @property
    def values(self) -> tuple[float, ...]:
        return tuple(self.by_seed.values())

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def interval(self) -> Interval | None:
        """95 % t interval over seeds; one seed: a bootstrap over its test videos when they were logged."""
        if not self.n:
            return None
        if self.n == 1 and self.videos:
            return bootstrap_accuracy(next(iter(self.videos.values())).to_numpy())
        return t_interval(self.values)


@dataclass
class Table:
    spec: TableSpec
    study: str
    dataset: str | None  # the one dataset of a datasets="one" table
    rows: list[Label]
    columns: list[Label]
    cells: dict[tuple[Label, Label], Cell]
    notes: list[str] = field(default_factory=list)
    test_sets: dict[str, TestSet] = field(default_factory=dict)  # dataset -> test videos, classes
    key_notes: dict[str, str] = field(default_factory=dict)  # spec.key_notes filled from the runs

    def cell(self, row: Label, col: Label) -> Cell:
        return self.cells.get((row, col), Cell())

    def paper(self, row: Label, col: Label) -> float | None:
        if not paper_applies(self.spec, self.dataset):
            return None
        return self.spec.paper.get(_key(row), {}).get(_key(col))

    def paper_elsewhere(self, row: Label, col: Label) -> float | None:
        """The paper's value on its own dataset, when this table ran on another one (shown, never compared)."""
        if paper_applies(self.spec, self.dataset):
            return None
        return self.spec.paper.get(_key(row), {}).get(_key(col))

    def delta(self, row: Label, col: Label) -> float | None:
        mean, reported = self.cell(row, col).mean, self.paper(row, col)
        return None if mean is None or reported is None else mean - reported

    def reference_of(self, row: Label, col: Label) -> tuple[Label, Label] | None:
        """The (row, column) this cell is compared with: its labels with the spec's reference values."""
        ref = self.spec.reference
        if not ref:
            return None
        swap = lambda label, axis: tuple(ref.get(k, v) for k, v in zip(label_keys(self.spec, axis), label))
        return swap(row, "rows"), swap(col, "columns")

    def is_reference(self, row: Label, col: Label) -> bool:
        return self.reference_of(row, col) == (row, col)

    def comparison(self, row: Label, col: Label) -> Interval | None:
        """This cell minus its reference: paired by seed (t interval), or with one shared seed paired by
        test video (bootstrap); None for the reference itself or without a shared seed."""
        ref = self.reference_of(row, col)
        if ref is None or ref == (row, col):
            return None
        a, b = self.cell(row, col), self.cell(*ref)
        shared = [s for s in a.by_seed if s in b.by_seed]
        if len(shared) == 1 and shared[0] in a.videos and shared[0] in b.videos:
            va, vb = a.videos[shared[0]], b.videos[shared[0]]
            common = va.index.intersection(vb.index)
            if len(common) and len(common) == len(va) == len(vb):
                return paired_bootstrap(va[common].to_numpy(), vb[common].to_numpy())
        return paired_difference(a.by_seed, b.by_seed)

    def paired_differences(self, row: Label, col: Label) -> list[float]:
        """This cell minus its reference, one value per shared seed."""
        ref = self.reference_of(row, col)
        a, b = self.cell(row, col).by_seed, self.cell(*ref).by_seed if ref else {}
        return [a[s] - b[s] for s in a if s in b]

    def reference_text(self) -> str:
        return ", ".join(f"{k} = {v}" for k, v in self.spec.reference.items())


def _key(label: Label) -> Any:
    """How `spec.paper` keys a label: a 1-tuple by its element."""
    return label[0] if len(label) == 1 else label


def paper_applies(spec: TableSpec, dataset: str | None) -> bool:
    return spec.paper_dataset is None or dataset == spec.paper_dataset


# ---------------------------------------------------------------------------------------------
# runs -> cells


def metric_label(spec: TableSpec, metric: str, ds: str | None) -> str:
    """`eval/{ds}/top1` -> "eval/ucf101/top1" in a one-dataset table, else "top1" (ds has its own column)."""
    return metric.format(ds=ds) if spec.datasets == "one" else metric.rsplit("/", 1)[-1]


def several_metrics(spec: TableSpec) -> bool:
    return len(spec.metrics) > 1


def run_cells(spec: TableSpec, run: RunRecord, datasets: list[str | None]) -> Iterator[tuple[Label, Label, str, float]]:
    """(row, column, metric name, value) for every metric of `spec` this run logged."""
    row_base = tuple(run.param(k) for k in spec.rows)
    col_base = tuple(run.param(k) for k in spec.columns)
    for ds in datasets:
        for metric in spec.metrics:
            name = metric.format(ds=ds)
            if name not in run.metrics:
                continue
            label = (metric_label(spec, metric, ds),) if several_metrics(spec) else ()
            row = row_base + (label if spec.metric_axis == "rows" else ())
            col = col_base + ((ds,) if spec.datasets == "columns" else ())
            col += label if spec.metric_axis == "columns" else ()
            yield row, col, name, shown(name, run.metrics[name])


def choose_datasets(spec: TableSpec, runs: list[RunRecord], dataset: str | None) -> list[str | None]:
    if dataset:
        return [dataset]
    found = datasets_in(runs)
    if spec.datasets == "one":
        return found[:1] or [None]
    return found


Sources = dict[tuple[Label, Label], dict[Any, tuple[str, str]]]  # cell -> seed -> (run id, metric name)


def seed_values(spec: TableSpec, runs: list[RunRecord], datasets: list[str | None]) -> tuple[dict, Sources, list[str]]:
    """{(row, col): {seed: value}} over runs in start order, where each value came from, and notes."""
    values: dict[tuple[Label, Label], dict[Any, float]] = {}
    sources: Sources = {}
    replaced = incomplete = 0
    for run in runs:
        if any(run.param(k) is None for k in spec.rows + spec.columns):
            incomplete += 1
            continue
        seed = run.param(SEED_KEY)
        for row, col, name, value in run_cells(spec, run, datasets):
            seeds = values.setdefault((row, col), {})
            key = run.run_id if seed is None else seed
            replaced += key in seeds
            seeds[key] = value
            sources.setdefault((row, col), {})[key] = (run.run_id, name)
    notes = [f"{replaced} value(s) replaced by a later run with the same cell and seed."] if replaced else []
    if incomplete:
        notes.append(f"{incomplete} run(s) without the params {', '.join(spec.rows + spec.columns)} ignored.")
    return values, sources, notes


def cell_videos(sources: Mapping[Any, tuple[str, str]], artifacts: Artifacts | None) -> dict[Any, pd.Series]:
    """Per-video correctness of a top-1 cell's runs (seed -> series), when they logged per_video.csv."""
    out = {}
    for seed, (run_id, name) in sources.items():
        match = TOP1.match(name)
        column = "correct" if match and match.group(2) == "top1" else (match.group(2) if match else "")
        correct = artifacts.correct(run_id, match.group(1), column) if match and artifacts else None
        if correct is not None:
            out[seed] = correct
    return out


def test_sets(runs: list[RunRecord], datasets: list[str | None], artifacts: Artifacts | None) -> dict[str, TestSet]:
    """Test videos and classes per dataset, read off the first run that logged eval/<ds>/per_class.csv."""
    found = {}
    for ds in filter(None, datasets):
        for run in (r for r in runs if f"eval/{ds}/top1" in r.metrics):
            size = artifacts.test_set(run.run_id, ds) if artifacts else None
            if size is not None:
                found[ds] = size
                break
    return found


# ---------------------------------------------------------------------------------------------
# label order


def label_keys(spec: TableSpec, axis: str) -> tuple[str, ...]:
    """The key of each component of a row ("rows") or column ("columns") label."""
    metric = ("metric",) if several_metrics(spec) and spec.metric_axis == axis else ()
    if axis == "rows":
        return spec.rows + metric
    return spec.columns + (("dataset",) if spec.datasets == "columns" else ()) + metric


def _rank(value: Any, order: tuple) -> tuple:
    if value in order:
        return (0, order.index(value), "")
    if isinstance(value, (int, float)):
        return (1, value, "")
    return (2, 0, str(value))


def ordered(labels: set[Label], keys: tuple[str, ...], orders: dict[str, tuple]) -> list[Label]:
    return sorted(labels, key=lambda label: tuple(_rank(v, orders.get(k, ())) for k, v in zip(keys, label)))


def paper_labels(spec: TableSpec, dataset: str | None, only: list[str | None] | None) -> tuple[set, set]:
    """The paper's rows and columns as labels; `only`: keep the columns of these datasets (--dataset)."""
    if not spec.show_paper_labels or not paper_applies(spec, dataset):
        return set(), set()
    as_label = lambda k: k if isinstance(k, tuple) else (k,)
    rows = {as_label(k) for k in spec.paper}
    cols = {as_label(c) for cells in spec.paper.values() for c in cells}
    if spec.datasets == "columns" and only:
        cols = {c for c in cols if c[len(spec.columns)] in only}
    return rows, cols


def label_orders(spec: TableSpec, datasets: list[str | None]) -> dict[str, tuple]:
    metrics = tuple(metric_label(spec, m, ds) for ds in datasets for m in spec.metrics)
    return {"dataset": PAPER_DATASETS, "metric": metrics, **spec.order}


# ---------------------------------------------------------------------------------------------
# the table


def collect(spec: TableSpec, runs: StudyRuns, dataset: str | None = None, artifacts: Artifacts | None = None) -> Table:
    """The cells, rows and columns of one table from a study's finished trials; `artifacts` (optional)
    reads per-video predictions (intervals for one-seed cells) and the test-set size."""
    datasets = choose_datasets(spec, runs.trials, dataset)
    values, sources, notes = seed_values(spec, runs.trials, datasets)
    cells = {key: Cell(seeds, cell_videos(sources[key], artifacts)) for key, seeds in values.items()}
    one = datasets[0] if spec.datasets == "one" else None
    paper_rows, paper_cols = paper_labels(spec, one, datasets if dataset else None)
    orders = label_orders(spec, datasets)
    rows = ordered({r for r, _ in cells} | paper_rows, label_keys(spec, "rows"), orders)
    cols = ordered({c for _, c in cells} | paper_cols, label_keys(spec, "columns"), orders)
    table = Table(spec, runs.study, one, rows, cols, cells, test_sets=test_sets(runs.trials, datasets, artifacts),
                  key_notes={k: fill_params(t, runs.trials) for k, t in spec.key_notes.items()})
    table.notes = study_notes(table, runs, datasets) + notes
    return table


PLACEHOLDER = re.compile(r"\{([a-z_0-9]+\.[a-z_0-9]+)\}")


def fill_params(template: str, runs: list[RunRecord]) -> str:
    """"{train.pose_epochs} pose" -> "20 pose": each `{key}` becomes the runs' values of that param (several
    joined by "/", "?" when no run logged it)."""
    def values(match: re.Match) -> str:
        found = sorted({str(v) for r in runs if (v := r.param(match.group(1))) is not None})
        return "/".join(found) or "?"
    return PLACEHOLDER.sub(values, template)


def study_notes(table: Table, runs: StudyRuns, datasets: list[str | None]) -> list[str]:
    spec = table.spec
    cells = [(r, c) for r in table.rows for c in table.columns]
    notes = [fill_params(spec.note, runs.trials)] if spec.note and any(
        table.paper(r, c) is not None or table.paper_elsewhere(r, c) is not None for r, c in cells) else []
    notes += test_set_notes(table) + interval_notes(table) + paper_dataset_notes(table, datasets)
    if not runs.trials:
        notes.append("No finished trials.")
    if runs.skipped:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(runs.skipped.items()))
        notes.append(f"Ignored runs that did not finish: {counts}.")
    if any(in_percent(m) for m in spec.metrics):
        notes.append("Accuracies and R@k are logged as fractions and shown in % (x100).")
        if any(v > 100.0 for cell in table.cells.values() for v in cell.values):
            notes.append("Some values exceed 100%: was a metric logged in % instead of as a fraction?")
        elif any(iv is not None and iv.method == "t" and (iv.low < 0.0 or iv.high > 100.0)
                 for iv in (cell.interval for cell in table.cells.values())):
            notes.append("Some t intervals reach past 0 or 100 %: few seeds with a large spread; they are shown "
                         "as computed, not clipped (more seeds narrow them: --seeds-needed).")
    return notes


def test_set_notes(table: Table) -> list[str]:
    notes = []
    for ds, size in table.test_sets.items():
        step = f"; one video = {100.0 / size.videos:.1f} points of top-1" if size.videos else ""
        notes.append(f"Test set {ds}: {size.videos} videos, {size.classes} classes, chance top-1 "
                     f"{size.chance:.1f} %{step}.")
    return notes


def interval_notes(table: Table) -> list[str]:
    notes = ["Cells: mean [95 % CI] (n seeds); the CI is a t interval over seeds."]
    if any(c.n == 1 and c.videos for c in table.cells.values()):
        notes.append("(n=1, videos): one seed, so the CI is a percentile bootstrap over the test videos: test-set "
                     "noise only, not seed-to-seed noise.")
    if any(c.n == 1 and not c.videos for c in table.cells.values()):
        notes.append("(n=1) without an interval: one seed and no per-video predictions for that metric; run "
                     "--seeds 3 (or more) for intervals.")
    if table.spec.reference:
        where = "cell" if set(table.spec.reference) >= set(table.spec.rows + table.spec.columns) else \
            "row, in the same column"
        notes.append(f"vs ref: difference to the reference {where} ({table.reference_text()}), "
                     "paired by seed (t interval; with one shared seed, a paired bootstrap over test videos); "
                     "* = the 95 % CI excludes 0.")
    return notes


def paper_dataset_notes(table: Table, datasets: list[str | None]) -> list[str]:
    spec = table.spec
    if spec.paper_dataset and not paper_applies(spec, table.dataset):
        return [f"This study ran on {table.dataset}; the paper reports this table on {spec.paper_dataset} only: "
                f"[paper {spec.paper_dataset} x] values are the paper's, not comparable numbers (no Δ)."]
    if spec.datasets == "columns" and spec.paper:
        reported = sorted({c[len(spec.columns)] for c in table.columns
                           if any(table.paper(r, c) is not None for r in table.rows)}, key=dataset_rank)
        unreported = [ds for ds in datasets if ds and ds not in reported]
        if unreported and reported:
            return [f"The paper did not report {', '.join(unreported)}: its values are in the "
                    f"{', '.join(reported)} column(s)."]
    return []


# ---------------------------------------------------------------------------------------------
# rendering


@dataclass(frozen=True)
class Style:
    missing: str
    delta: str
    escape: Callable[[str], str]


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


MARKDOWN = Style(missing="—", delta="Δ", escape=lambda s: s.replace("|", "\\|"))
LATEX = Style(missing="--", delta=r"$\Delta$", escape=_latex_escape)


def _fmt(value: float, signed: bool, decimals: int = 1) -> str:
    text = format(value, f"{'+' if signed else ''}.{decimals}f")
    return format(0.0, f".{decimals}f") if float(text) == 0 else text


def interval_text(iv: Interval, signed: bool = False, decimals: int = 1) -> str:
    if iv.low is None:
        return _fmt(iv.mean, signed, decimals)
    return (f"{_fmt(iv.mean, signed, decimals)} [{_fmt(iv.low, signed, decimals)}, "
            f"{_fmt(iv.high, signed, decimals)}]")


def cell_text(cell: Cell, style: Style, decimals: int = 1) -> str:
    if cell.n == 0:
        return style.missing
    iv = cell.interval
    return f"{interval_text(iv, decimals=decimals)} (n={cell.n}{', videos' if iv.method == 'bootstrap' else ''})"


def comparison_text(table: Table, row: Label, col: Label, style: Style) -> str:
    if table.is_reference(row, col):
        return "ref" if table.cell(row, col).n else style.missing
    iv = table.comparison(row, col)
    if iv is None:
        return style.missing
    return interval_text(iv, signed=True, decimals=table.spec.decimals) + (" *" if iv.excludes_zero else "")


def _num(value: float | None, fmt: str, style: Style) -> str:
    return style.missing if value is None else format(value, fmt)


def label_text(label: Label, sep: str = " ") -> str:
    return sep.join(str(v) for v in label)


def corner_text(table: Table) -> str:
    """"rows \\ columns" of the header; a key with a note (spec.key_notes) is followed by it in parentheses."""
    named = lambda key: f"{key} ({table.key_notes[key]})" if key in table.key_notes else key  # noqa: E731
    rows = " / ".join(named(k) for k in label_keys(table.spec, "rows"))
    return f"{rows} \\ {' / '.join(named(k) for k in table.spec.columns)}" if table.spec.columns else rows


def text_grid(table: Table, style: Style) -> tuple[list[str], list[list[str]]]:
    """Header and body of the table as strings (labels escaped for the format)."""
    inline, ref = table.spec.paper_inline, bool(table.spec.reference)
    header = [style.escape(corner_text(table))]
    for col in table.columns:
        header += [style.escape(label_text(col))] + (["vs ref"] if ref else [])
        header += [] if inline else ["paper", style.delta]
    body = []
    for row in table.rows:
        line = [style.escape(label_text(row, " / "))]
        for col in table.columns:
            line += cell_texts(table, row, col, style)
        body.append(line)
    return header, body


def cell_texts(table: Table, row: Label, col: Label, style: Style) -> list[str]:
    text = cell_text(table.cell(row, col), style, table.spec.decimals)
    compared = [comparison_text(table, row, col, style)] if table.spec.reference else []
    reported, delta = table.paper(row, col), table.delta(row, col)
    if not table.spec.paper_inline:
        return [text] + compared + [_num(reported, ".1f", style), _num(delta, "+.1f", style)]
    if reported is not None:
        text += f" [paper {reported:.1f}" + (f", {style.delta} {delta:+.1f}]" if delta is not None else "]")
    elsewhere = table.paper_elsewhere(row, col)
    if elsewhere is not None:
        text += f" [paper {table.spec.paper_dataset} {elsewhere:.1f}]"
    return [text] + compared


def title_text(table: Table) -> str:
    where = f", dataset {table.dataset}" if table.dataset else ""
    return f"{table.spec.name}: {table.spec.title} (study {table.study}{where})"


def render_md(table: Table) -> str:
    header, body = text_grid(table, MARKDOWN)
    lines = [f"### {title_text(table)}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    lines += [""] + [f"_{note}_" for note in table.notes] if table.notes else []
    return "\n".join(lines) + "\n"


def render_latex(table: Table) -> str:
    header, body = text_grid(table, LATEX)
    caption = ". ".join([title_text(table)] + [n.rstrip(".") for n in table.notes]) + "."
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(caption)}}}",
             r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\hline",
             " & ".join(header) + r" \\", r"\hline"]
    lines += [" & ".join(line) + r" \\" for line in body]
    lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


CSV_PARTS = ("mean", "ci_low", "ci_high", "ci_method", "std", "n", "ref_diff", "ref_low", "ref_high", "paper",
             "delta")


def csv_fields(table: Table, row: Label, col: Label) -> list[Any]:
    blank = lambda v: "" if v is None else repr(round(v, 6))
    cell = table.cell(row, col)
    iv, cmp = cell.interval, table.comparison(row, col)
    return [blank(cell.mean), blank(iv and iv.low), blank(iv and iv.high), iv.method if iv else "",
            blank(cell.std), cell.n, blank(cmp and cmp.mean), blank(cmp and cmp.low), blank(cmp and cmp.high),
            blank(table.paper(row, col)), blank(table.delta(row, col))]


def render_csv(table: Table) -> str:
    """One line per row: the row's keys, then CSV_PARTS per column; missing = empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = list(label_keys(table.spec, "rows")) or ["row"]
    for col in table.columns:
        header += [f"{label_text(col)} {part}" for part in CSV_PARTS]
    writer.writerow(header)
    for row in table.rows:
        line = list(row) or [""]
        for col in table.columns:
            line += csv_fields(table, row, col)
        writer.writerow(line)
    return out.getvalue()


RENDERERS = {"md": render_md, "latex": render_latex, "csv": render_csv}


# ---------------------------------------------------------------------------------------------
# how many seeds would resolve each difference


@dataclass(frozen=True)
class SeedsNeeded:
    row: Label
    col: Label
    difference: float
    sd: float | None  # per-seed sd of the paired differences (or the test-set floor with one seed)
    seeds: int | None
    floor_only: bool  # one seed: only test-set noise is known, so the count is a lower bound


def seeds_needed_rows(table: Table) -> list[SeedsNeeded]:
    out = []
    for row in table.rows:
        for col in table.columns:
            cmp = table.comparison(row, col)
            if cmp is None:
                continue
            if cmp.method == "t" and cmp.n >= 2:
                sd = statistics.stdev(table.paired_differences(row, col))
            elif cmp.method == "bootstrap":  # the test-set noise of one difference: half width -> std error
                sd = cmp.half_width / float(stats.norm.ppf(0.975))
            else:
                sd = None
            out.append(SeedsNeeded(row, col, cmp.mean, sd, seeds_needed(cmp.mean, sd), cmp.method == "bootstrap"))
    return out


def seeds_text(r: SeedsNeeded) -> str:
    if not r.difference:
        return "— (no difference)"
    if r.seeds is None:
        return "— (needs 2 seeds to estimate noise)"
    if r.seeds > MAX_SEEDS:
        return f"> {MAX_SEEDS}"
    return f"{'>= ' if r.floor_only else ''}{r.seeds}"


def seeds_needed_text(table: Table) -> str:
    lines = [f"### {title_text(table)}: seeds needed (paired t-test, alpha {ALPHA}, power {POWER:.0%})", ""]
    rows = seeds_needed_rows(table)
    if not table.spec.reference:
        return "\n".join(lines + ["_No reference row: nothing to compare._"]) + "\n"
    lines += ["| cell | vs ref | sd of difference | seeds needed |", "|---|---|---|---|"]
    for r in rows:
        name = label_text(r.row, " / ") + (f" @ {label_text(r.col)}" if r.col else "")
        sd = "—" if r.sd is None else f"{r.sd:.2f}" + (" (test set only)" if r.floor_only else "")
        lines.append(f"| {name} | {r.difference:+.2f} | {sd} | {seeds_text(r)} |")
    lines += ["", f"_Reference: {table.reference_text()}. With one seed the noise is the test-set bootstrap only "
                  "(seed-to-seed noise adds to it), so the count is a lower bound._"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# API and CLI


def build_tables(study: str, tracking_uri: str | None = None, dataset: str | None = None,
                 experiment: str | None = None) -> list[Table]:
    runs = load_study(study, tracking_uri, experiment)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Artifacts(client_for(tracking_uri), Path(tmp))
        return [collect(spec, runs, dataset, artifacts) for spec in specs_for(study)]


def build_table(study: str, tracking_uri: str | None = None, fmt: str = "md", dataset: str | None = None,
                experiment: str | None = None) -> str:
    """Every table of the study rendered as `fmt` (md | latex | csv), separated by a blank line."""
    render = RENDERERS[fmt]
    return "\n".join(render(t) for t in build_tables(study, tracking_uri, dataset, experiment))


def file_stem(table: Table) -> str:
    return f"{table.study}_" + table.spec.name.lower().replace(".", "").replace(" ", "_")


def write_tables(tables: list[Table], fmt: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in tables:
        path = out_dir / f"{file_stem(table)}.{FORMATS[fmt]}"
        path.write_text(RENDERERS[fmt](table))
        paths.append(path)
    return paths


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by analysis.tables and analysis.figures."""
    parser.add_argument("study", help="study name (= MLflow experiment name)")
    parser.add_argument("--mlflow-uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI, else "
                        "sqlite:///mlflow.db in the current folder when it exists)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment name if not the study name")
    parser.add_argument("--dataset", default=None, help="dataset kind (default: the first found)")
    parser.add_argument("--out", type=Path, default=None, help="also write files to this folder")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--format", choices=list(RENDERERS), default="md", help="output format")
    parser.add_argument("--seeds-needed", action="store_true",
                        help="print how many seeds would resolve each difference to the reference at the "
                             "observed noise")
    args = parser.parse_args(argv)
    tables = build_tables(args.study, default_uri(args.mlflow_uri), args.dataset, args.experiment)
    if args.seeds_needed:
        print("\n".join(seeds_needed_text(t) for t in tables))
        return
    print("\n".join(RENDERERS[args.format](t) for t in tables))
    if args.out:
        for path in write_tables(tables, args.format, args.out):
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
