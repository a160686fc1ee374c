"""A study's results in the paper's table layout: mean ± std (n seeds), the paper's value and the delta.

    python -m analysis.tables feature_source --mlflow-uri sqlite:///mlflow.db
    python -m analysis.tables sigma_grid --format latex --dataset ucf101 --out reports/
    python -m analysis.tables backbones --format csv      # Tables VI and VIII

    from analysis.tables import build_table
    print(build_table("sigma_grid", "sqlite:///mlflow.db", "md"))

Cells average over seeds (param `train.seed`; a later run with the same cell and seed replaces an earlier
one). Accuracies and R@k, logged as fractions, are shown in % like the paper (specs.LOGGED_AS_FRACTION).
The std is the sample std (ddof=1); one seed prints no ±. A cell without runs prints "—" (md), "--" (latex)
or empty fields (csv), never 0. Which params and metrics make a table: analysis/specs.py.
"""
from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from analysis.paper import PAPER_DATASETS
from analysis.runs import SEED_KEY, RunRecord, StudyRuns, datasets_in, load_study
from analysis.specs import TableSpec, in_percent, shown, specs_for

Label = tuple  # a row or column label: the values of its keys, e.g. ("r3d", "kinetics400")
FORMATS = {"md": "md", "latex": "tex", "csv": "csv"}  # --format -> file extension


@dataclass(frozen=True)
class Cell:
    values: tuple[float, ...] = ()  # one per seed

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None


@dataclass
class Table:
    spec: TableSpec
    study: str
    dataset: str | None  # the one dataset of a datasets="one" table
    rows: list[Label]
    columns: list[Label]
    cells: dict[tuple[Label, Label], Cell]
    notes: list[str] = field(default_factory=list)

    def cell(self, row: Label, col: Label) -> Cell:
        return self.cells.get((row, col), Cell())

    def paper(self, row: Label, col: Label) -> float | None:
        if not paper_applies(self.spec, self.dataset):
            return None
        return self.spec.paper.get(_key(row), {}).get(_key(col))

    def delta(self, row: Label, col: Label) -> float | None:
        mean, reported = self.cell(row, col).mean, self.paper(row, col)
        return None if mean is None or reported is None else mean - reported


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


def run_cells(spec: TableSpec, run: RunRecord, datasets: list[str | None]) -> Iterator[tuple[Label, Label, float]]:
    """(row, column, value) for every metric of `spec` this run logged."""
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
            yield row, col, shown(name, run.metrics[name])


def choose_datasets(spec: TableSpec, runs: list[RunRecord], dataset: str | None) -> list[str | None]:
    if dataset:
        return [dataset]
    found = datasets_in(runs)
    if spec.datasets == "one":
        return found[:1] or [None]
    return found


def seed_values(spec: TableSpec, runs: list[RunRecord], datasets: list[str | None]) -> tuple[dict, list[str]]:
    """{(row, col): {seed: value}} over runs in start order, and notes on what was left out."""
    values: dict[tuple[Label, Label], dict[Any, float]] = {}
    replaced = incomplete = 0
    for run in runs:
        if any(run.param(k) is None for k in spec.rows + spec.columns):
            incomplete += 1
            continue
        seed = run.param(SEED_KEY)
        for row, col, value in run_cells(spec, run, datasets):
            seeds = values.setdefault((row, col), {})
            key = run.run_id if seed is None else seed
            replaced += key in seeds
            seeds[key] = value
    notes = [f"{replaced} value(s) replaced by a later run with the same cell and seed."] if replaced else []
    if incomplete:
        notes.append(f"{incomplete} run(s) without the params {', '.join(spec.rows + spec.columns)} ignored.")
    return values, notes


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


def collect(spec: TableSpec, runs: StudyRuns, dataset: str | None = None) -> Table:
    """The cells, rows and columns of one table from a study's finished trials."""
    datasets = choose_datasets(spec, runs.trials, dataset)
    values, notes = seed_values(spec, runs.trials, datasets)
    cells = {key: Cell(tuple(seeds.values())) for key, seeds in values.items()}
    one = datasets[0] if spec.datasets == "one" else None
    paper_rows, paper_cols = paper_labels(spec, one, datasets if dataset else None)
    orders = label_orders(spec, datasets)
    rows = ordered({r for r, _ in cells} | paper_rows, label_keys(spec, "rows"), orders)
    cols = ordered({c for _, c in cells} | paper_cols, label_keys(spec, "columns"), orders)
    table = Table(spec, runs.study, one, rows, cols, cells)
    table.notes = study_notes(table, runs) + notes
    return table


def study_notes(table: Table, runs: StudyRuns) -> list[str]:
    notes = [table.spec.note] if table.spec.note and any(table.paper(r, c) is not None
                                                         for r in table.rows for c in table.columns) else []
    if table.spec.paper_dataset and not paper_applies(table.spec, table.dataset):
        notes.append(f"The paper reports this table on {table.spec.paper_dataset} only: no paper values.")
    if not runs.trials:
        notes.append("No finished trials.")
    if runs.skipped:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(runs.skipped.items()))
        notes.append(f"Ignored runs that did not finish: {counts}.")
    if any(in_percent(m) for m in table.spec.metrics):
        notes.append("Accuracies and R@k are logged as fractions and shown in % (x100).")
        if any(v > 100.0 for cell in table.cells.values() for v in cell.values):
            notes.append("Some values exceed 100%: was a metric logged in % instead of as a fraction?")
    return notes


# ---------------------------------------------------------------------------------------------
# rendering


@dataclass(frozen=True)
class Style:
    missing: str
    pm: str
    delta: str
    escape: Callable[[str], str]


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


MARKDOWN = Style(missing="—", pm="±", delta="Δ", escape=lambda s: s.replace("|", "\\|"))
LATEX = Style(missing="--", pm=r"$\pm$", delta=r"$\Delta$", escape=_latex_escape)


def cell_text(cell: Cell, style: Style) -> str:
    if cell.n == 0:
        return style.missing
    if cell.n == 1:
        return f"{cell.mean:.2f} (1)"
    return f"{cell.mean:.2f} {style.pm} {cell.std:.2f} ({cell.n})"


def _num(value: float | None, fmt: str, style: Style) -> str:
    return style.missing if value is None else format(value, fmt)


def label_text(label: Label, sep: str = " ") -> str:
    return sep.join(str(v) for v in label)


def corner_text(spec: TableSpec) -> str:
    rows = " / ".join(label_keys(spec, "rows"))
    return f"{rows} \\ {' / '.join(spec.columns)}" if spec.columns else rows


def text_grid(table: Table, style: Style) -> tuple[list[str], list[list[str]]]:
    """Header and body of the table as strings (labels escaped for the format)."""
    inline = table.spec.paper_inline
    header = [style.escape(corner_text(table.spec))]
    for col in table.columns:
        header += [style.escape(label_text(col))] + ([] if inline else ["paper", style.delta])
    body = []
    for row in table.rows:
        line = [style.escape(label_text(row, " / "))]
        for col in table.columns:
            line += cell_texts(table, row, col, style)
        body.append(line)
    return header, body


def cell_texts(table: Table, row: Label, col: Label, style: Style) -> list[str]:
    text = cell_text(table.cell(row, col), style)
    reported, delta = table.paper(row, col), table.delta(row, col)
    if not table.spec.paper_inline:
        return [text, _num(reported, ".1f", style), _num(delta, "+.2f", style)]
    if reported is not None:
        text += f" [paper {reported:.1f}" + (f", {style.delta} {delta:+.2f}]" if delta is not None else "]")
    return [text]


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


def render_csv(table: Table) -> str:
    """One line per row: the row's keys, then mean, std, n, paper, delta per column; missing = empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = list(label_keys(table.spec, "rows")) or ["row"]
    for col in table.columns:
        header += [f"{label_text(col)} {part}" for part in ("mean", "std", "n", "paper", "delta")]
    writer.writerow(header)
    blank = lambda v: "" if v is None else repr(round(v, 6))
    for row in table.rows:
        line = list(row) or [""]
        for col in table.columns:
            cell = table.cell(row, col)
            line += [blank(cell.mean), blank(cell.std), cell.n, blank(table.paper(row, col)),
                     blank(table.delta(row, col))]
        writer.writerow(line)
    return out.getvalue()


RENDERERS = {"md": render_md, "latex": render_latex, "csv": render_csv}


# ---------------------------------------------------------------------------------------------
# API and CLI


def build_tables(study: str, tracking_uri: str | None = None, dataset: str | None = None,
                 experiment: str | None = None) -> list[Table]:
    runs = load_study(study, tracking_uri, experiment)
    return [collect(spec, runs, dataset) for spec in specs_for(study)]


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
    parser.add_argument("--mlflow-uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment name if not the study name")
    parser.add_argument("--dataset", default=None, help="dataset kind (default: the first found)")
    parser.add_argument("--out", type=Path, default=None, help="also write files to this folder")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--format", choices=list(RENDERERS), default="md")
    args = parser.parse_args(argv)
    tables = build_tables(args.study, args.mlflow_uri, args.dataset, args.experiment)
    print("\n".join(RENDERERS[args.format](t) for t in tables))
    if args.out:
        for path in write_tables(tables, args.format, args.out):
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
