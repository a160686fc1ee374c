"""Per-class accuracy of two runs side by side: B - A for every class, as a table and a bar figure.

    python -m analysis.compare RUN_A RUN_B --dataset ucf101 --mlflow-uri sqlite:///mlflow.db --out reports/

    from analysis.compare import compare_runs
    frame = compare_runs(run_a, run_b, "sqlite:///mlflow.db", "ucf101")

Reads each run's `eval/<dataset>/per_class.csv` artifact (class_index, class_name, group, accuracy,
support); diff_low/diff_high: the 95 % CI of each class's difference (two proportions over its videos).
Without --dataset, the first dataset both runs have a per_class.csv for is used. Classes are
matched on class_index; a class only one run has gets an empty accuracy and no difference. Accuracies
stay as logged (fractions in [0, 1]).
Prints the table as markdown; --out also writes compare_<A>_<B>_<dataset>.csv and .png.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from analysis.runs import client_for, dataset_rank, download  # noqa: E402

COLUMNS = ["class_index", "class_name", "group", "accuracy_a", "accuracy_b", "diff", "diff_low", "diff_high"]


def diff_interval(acc_a: float, n_a: float, acc_b: float, n_b: float) -> tuple[float, float]:
    """95 % CI of accuracy_b - accuracy_a for one class (two independent proportions over its test videos,
    statsmodels' Newcombe score interval); NaN without the counts."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    if any(pd.isna(v) for v in (acc_a, n_a, acc_b, n_b)) or not n_a or not n_b:
        return float("nan"), float("nan")
    low, high = confint_proportions_2indep(round(acc_b * n_b), n_b, round(acc_a * n_a), n_a, method="newcomb")
    return float(low), float(high)


def per_class_datasets(client: MlflowClient, run_id: str) -> set[str]:
    """Datasets for which the run has eval/<dataset>/per_class.csv."""
    folders = [a.path for a in client.list_artifacts(run_id, "eval") if a.is_dir]
    return {Path(f).name for f in folders
            if any(Path(a.path).name == "per_class.csv" for a in client.list_artifacts(run_id, f))}


def pick_dataset(client: MlflowClient, run_a: str, run_b: str) -> str:
    shared = per_class_datasets(client, run_a) & per_class_datasets(client, run_b)
    if not shared:
        raise SystemExit(f"runs {run_a} and {run_b} have no eval/<dataset>/per_class.csv in common")
    return sorted(shared, key=dataset_rank)[0]


def read_per_class(client: MlflowClient, run_id: str, dataset: str, tmp: Path) -> pd.DataFrame:
    path = download(client, run_id, f"eval/{dataset}/per_class.csv", tmp / run_id)
    if path is None:
        raise SystemExit(f"run {run_id} has no eval/{dataset}/per_class.csv")
    frame = pd.read_csv(path)
    if "group" not in frame.columns:
        frame["group"] = None
    if "support" not in frame.columns:
        frame["support"] = float("nan")
    return frame[["class_index", "class_name", "group", "accuracy", "support"]]


def compare_runs(run_a: str, run_b: str, tracking_uri: str | None = None,
                 dataset: str | None = None) -> pd.DataFrame:
    """One row per class: accuracy_a, accuracy_b and diff = accuracy_b - accuracy_a, by class_index."""
    client = client_for(tracking_uri)
    dataset = dataset or pick_dataset(client, run_a, run_b)
    with tempfile.TemporaryDirectory() as tmp:
        a = read_per_class(client, run_a, dataset, Path(tmp))
        b = read_per_class(client, run_b, dataset, Path(tmp))
    merged = a.merge(b, on="class_index", how="outer", suffixes=("_a", "_b"))
    merged["class_name"] = merged["class_name_a"].fillna(merged["class_name_b"])
    merged["group"] = merged["group_a"].fillna(merged["group_b"])
    merged["diff"] = merged["accuracy_b"] - merged["accuracy_a"]
    merged[["diff_low", "diff_high"]] = [diff_interval(*r) for r in merged[
        ["accuracy_a", "support_a", "accuracy_b", "support_b"]].itertuples(index=False)]
    frame = merged[COLUMNS].sort_values("class_index").reset_index(drop=True)
    frame.attrs.update(run_a=run_a, run_b=run_b, dataset=dataset)
    return frame


def render_md(frame: pd.DataFrame) -> str:
    fmt = lambda v: "—" if pd.isna(v) else f"{v:.4g}"
    a, b = frame.attrs.get("run_a", "A"), frame.attrs.get("run_b", "B")
    lines = [f"### Per-class accuracy on {frame.attrs.get('dataset')}: B ({b}) - A ({a})", "",
             "| class_index | class_name | group | A | B | B - A | 95 % CI |", "|---|---|---|---|---|---|---|"]
    for row in frame.itertuples(index=False):
        group = "" if pd.isna(row.group) else row.group
        lines.append(f"| {row.class_index} | {row.class_name} | {group} | {fmt(row.accuracy_a)} | "
                     f"{fmt(row.accuracy_b)} | {fmt(row.diff)} | [{fmt(row.diff_low)}, {fmt(row.diff_high)}] |")
    mean = frame["diff"].mean()
    lines += ["", f"_Mean difference over {frame['diff'].notna().sum()} classes: {fmt(mean)}_"]
    return "\n".join(lines) + "\n"


def plot(frame: pd.DataFrame, path: Path) -> Path:
    """Bars of B - A per class, sorted by the difference; green where B is better."""
    data = frame.dropna(subset=["diff"]).sort_values("diff")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(data) + 2), 4))
    err = np.vstack([data["diff"] - data["diff_low"], data["diff_high"] - data["diff"]])
    ax.bar(data["class_name"].astype(str), data["diff"], yerr=err, capsize=2,
           color=["tab:green" if d > 0 else "tab:red" for d in data["diff"]])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("accuracy B - A (95 % CI over the class's test videos)")
    ax.set_xlabel("class")
    ax.set_title(f"{frame.attrs.get('dataset')}: {frame.attrs.get('run_b')} - {frame.attrs.get('run_a')}")
    ax.tick_params(axis="x", rotation=75, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_compare(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"compare_{frame.attrs['run_a'][:8]}_{frame.attrs['run_b'][:8]}_{frame.attrs['dataset']}"
    csv_path = out_dir / f"{stem}.csv"
    frame.to_csv(csv_path, index=False)
    return [csv_path, plot(frame, out_dir / f"{stem}.png")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__.split("\n")[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--dataset", default=None, help="dataset kind (default: the first both runs have)")
    parser.add_argument("--mlflow-uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--out", type=Path, default=None, help="also write the CSV and the bar figure here")
    args = parser.parse_args(argv)
    frame = compare_runs(args.run_a, args.run_b, args.mlflow_uri, args.dataset)
    print(render_md(frame))
    if args.out:
        for path in write_compare(frame, args.out):
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
