"""Replace rows of a cross-validation table by those of another run of the harness.

    python benchmarks/merge_cv.py --from /tmp/kangcw --datasets kang2018_ifnb_pbmc \
        --methods "scBiGNN p_theta,scBiGNN q_phi" [--into benchmarks/results/cv] [--header FILE]

The rows of the given datasets and methods in ``--into`` are replaced by those of ``--from``
(its ``cv_raw.jsonl`` while it runs, else its ``cv_folds.csv``); the tables are rewritten with
``cross_validation.save_tables``, keeping the header unless ``--header`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from cross_validation import read_raw, save_tables


def read_rows(run: Path) -> pd.DataFrame:
    """Fold rows of a running (``cv_raw.jsonl``) or finished (``cv_folds.csv``) harness output."""
    raw = run / "cv_raw.jsonl"
    if raw.exists():
        return read_raw(raw)
    return pd.read_csv(run / "cv_folds.csv", float_precision="round_trip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="src", required=True)
    parser.add_argument("--into", default="benchmarks/results/cv")
    parser.add_argument("--datasets", required=True)
    parser.add_argument("--methods", required=True, help="method names as in the table")
    parser.add_argument("--header", default=None, help="file with a new header text")
    args = parser.parse_args()
    into = Path(args.into)
    base = pd.read_csv(into / "cv_folds.csv", float_precision="round_trip")
    new = read_rows(Path(args.src))
    datasets, methods = args.datasets.split(","), args.methods.split(",")

    def chosen(t: pd.DataFrame) -> pd.Series:
        return t["dataset"].isin(datasets) & t["method"].isin(methods)

    folds = pd.concat([base[~chosen(base)], new[chosen(new)]], ignore_index=True)
    old = (into / "cv_summary.md").read_text()
    header = Path(args.header).read_text() if args.header else old[: old.index("\n### ")]
    save_tables(folds, into, header.strip())
    print(f"{int(chosen(new).sum())} rows merged into {into}")


if __name__ == "__main__":
    main()
