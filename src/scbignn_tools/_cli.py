"""The ``scbignn`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def demo(args: argparse.Namespace) -> int:
    """Train on scanpy's pbmc68k_reduced with part of the labels hidden and report accuracy."""
    import numpy as np
    import scanpy as sc
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    from scbignn_tools.model import SCBiGNN

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # pbmc68k_reduced's X is scaled; .raw holds the log-normalised values the model can read.
    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    truth = adata.obs["bulk_labels"].astype(str).to_numpy()
    _, hidden = train_test_split(
        np.arange(adata.n_obs), test_size=args.hidden, stratify=truth, random_state=0
    )
    labels = truth.copy()
    labels[hidden] = "Unknown"
    adata.obs["train_labels"] = labels
    print(
        f"pbmc68k_reduced: {adata.n_obs} cells x {adata.n_vars} genes, "
        f"{len(set(truth))} types; labels hidden for {len(hidden)} cells"
    )

    SCBiGNN.setup_anndata(
        adata, labels_key="train_labels", unlabeled_category="Unknown", data_format="log1p"
    )
    model = SCBiGNN(adata)
    print(model)
    kwargs = (
        {"pretrain_epochs": 2, "q_epochs": 1, "n_em_iterations": 1, "p_epochs": 20}
        if args.quick
        else {}
    )
    t0 = time.perf_counter()
    model.train(**kwargs)
    print(f"train(): {time.perf_counter() - t0:.1f} s")

    model.annotate(adata)
    for name, key in (("q_phi", "scbignn_q"), ("p_theta", "scbignn")):
        pred = adata.obs[key].astype(str).to_numpy()[hidden]
        print(
            f"{name:8s} accuracy on hidden cells: {accuracy_score(truth[hidden], pred):.3f}   "
            f"macro-F1: {f1_score(truth[hidden], pred, average='macro'):.3f}"
        )
    top = adata.var["scbignn_importance"].nlargest(10).index.tolist()
    print("top genes by attention:", ", ".join(top))
    path = out / "pbmc68k_annotated.h5ad"
    adata.obs["hidden"] = np.isin(np.arange(adata.n_obs), hidden)
    adata.write_h5ad(path)
    print(f"wrote {path}")
    if not args.no_figure:
        import matplotlib

        matplotlib.use("Agg")
        # same order and colours for truth and prediction
        order = [
            c
            for c in adata.obs["bulk_labels"].cat.categories
            if c in adata.obs["scbignn"].cat.categories
        ]
        adata.obs["scbignn"] = adata.obs["scbignn"].cat.reorder_categories(order)
        if "bulk_labels_colors" in adata.uns:
            truth_colors = adata.uns["bulk_labels_colors"]
            colors = dict(zip(adata.obs["bulk_labels"].cat.categories, truth_colors, strict=True))
            adata.uns["scbignn_colors"] = [colors[c] for c in order]
        sc.pp.neighbors(adata, use_rep="X_scbignn")
        sc.tl.umap(adata, random_state=0)
        fig = sc.pl.umap(
            adata,
            color=["bulk_labels", "scbignn", "scbignn_confidence"],
            wspace=0.6,
            show=False,
            return_fig=True,
        )
        fig.savefig(out / "pbmc68k_umap.png", dpi=120, bbox_inches="tight")
        print(f"wrote {out / 'pbmc68k_umap.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scbignn``."""
    parser = argparse.ArgumentParser(prog="scbignn", description="scBiGNN cell type annotation.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train on scanpy's pbmc68k_reduced and report accuracy")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--hidden", type=float, default=0.2, help="share of labels hidden")
    p.add_argument("--quick", action="store_true", help="a few epochs only (for tests)")
    p.add_argument("--no-figure", action="store_true", help="skip the UMAP figure")
    p.set_defaults(func=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scbignn`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as err:
        print(f"scbignn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
