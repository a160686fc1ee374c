"""The claims a study tests (analysis.specs.CLAIMS), each as a difference paired by seed beside both cells'
own intervals: `python -m analysis.claims feature_source [--mlflow-uri URI] [--dataset KIND]`.

    | claim | metric | difference, paired by seed | better | than | resolved? | unpaired CIs |
    | f_s ahead of a random V-network on the context classes | ... | +12.2 [+9.1, +15.3] (n=5) | 88.9 [...] | ... |

"resolved" reads the paired interval: above 0, below 0 (the claim reversed), or not resolved (it holds 0). The
unpaired column says whether the two cells' own t intervals overlap: a stricter reading, which seed-to-seed
variation shared by both cells can keep from resolving what the paired test resolves. For the "(random init)"
claims the pairing is exact: `csvr.models.build.build_model` seeds each part by (train.seed, part), so a seed's
random-init cell evaluates the very network that seed's pretraining started from, and the paired difference is
what pretraining did to it; the unpaired intervals also hold how good each random initialisation happened to be.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from analysis.runs import RunRecord, datasets_in, default_uri, load_study
from analysis.specs import CLAIMS, Claim, shown
from analysis.stats import Interval, paired_difference, t_interval
from analysis.tables import interval_text


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    metric: str  # with the dataset filled in
    difference: Interval | None  # better - than, paired by seed
    better: Interval | None
    than: Interval | None

    @property
    def verdict(self) -> str:
        d = self.difference
        if self.better is None or self.than is None:
            return "not in these runs"
        if d is None or d.low is None:
            return "no shared seeds" if d is None else "one seed: no interval"
        return "yes (paired)" if d.low > 0 else "reversed (paired)" if d.high < 0 else "not resolved"

    @property
    def overlap(self) -> str:
        b, t = self.better, self.than
        if b is None or t is None or b.low is None or t.low is None:
            return "—"
        return "overlap" if b.low <= t.high and t.low <= b.high else "apart"


def per_seed(runs: list[RunRecord], key: str, value: str, metric: str) -> dict[int, float]:
    """seed -> the metric (as tables show it) of the runs whose `key` is `value`."""
    return {int(r.param("train.seed") or 0): shown(metric, r.metrics[metric]) for r in runs
            if r.param(key) == value and metric in r.metrics}


def evaluate(claims: tuple[Claim, ...], runs: list[RunRecord], dataset: str) -> list[ClaimResult]:
    out = []
    for claim in claims:
        metric = claim.metric.format(ds=dataset)
        better, than = (per_seed(runs, claim.key, v, metric) for v in (claim.better, claim.than))
        out.append(ClaimResult(claim, metric, paired_difference(better, than) if better and than else None,
                               t_interval(list(better.values())) if better else None,
                               t_interval(list(than.values())) if than else None))
    return out


def _cell(iv: Interval | None, signed: bool = False) -> str:
    return "—" if iv is None else f"{interval_text(iv, signed)} (n={iv.n})"


def render_md(study: str, dataset: str, results: list[ClaimResult]) -> str:
    lines = [f"### Claims of {study} ({dataset}): differences paired by seed, 95 % t intervals", "",
             "| claim | metric | difference, paired by seed | better | than | resolved? | unpaired CIs |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.claim
        lines.append(f"| {c.text} | {r.metric} | {_cell(r.difference, True)} | {c.better}: {_cell(r.better)} | "
                     f"{c.than}: {_cell(r.than)} | {r.verdict} | {r.overlap} |")
    lines += ["", "_resolved? reads the paired interval (above 0 = yes; below 0 = reversed); unpaired CIs: whether "
              "the two cells' own t intervals overlap, a stricter reading that variation shared by both cells "
              "(the seed) can keep from resolving._"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m analysis.claims", description=__doc__.split("\n")[0])
    parser.add_argument("study", choices=sorted(CLAIMS), help="study name (= MLflow experiment name)")
    parser.add_argument("--mlflow-uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI, else "
                        "sqlite:///mlflow.db in the current folder when it exists)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment name if not the study name")
    parser.add_argument("--dataset", default=None, help="dataset kind (default: the first found)")
    args = parser.parse_args(argv)
    runs = load_study(args.study, default_uri(args.mlflow_uri), args.experiment).trials
    dataset = args.dataset or next(iter(datasets_in(runs)), None)
    if dataset is None:
        raise SystemExit(f"study {args.study}: no finished trial with eval/<dataset>/ metrics in this MLflow store; "
                         "run the study first or pass --mlflow-uri")
    text = render_md(args.study, dataset, evaluate(CLAIMS[args.study], runs, dataset))
    print(text)
    return text


if __name__ == "__main__":
    main()
