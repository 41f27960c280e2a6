"""The ``scbignn`` command line."""

from __future__ import annotations

import argparse
import os
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
        extra = [c for c in adata.obs["scbignn"].cat.categories if c not in order]  # "Unknown"
        adata.obs["scbignn"] = adata.obs["scbignn"].cat.reorder_categories(order + extra)
        if "bulk_labels_colors" in adata.uns:
            truth_colors = adata.uns["bulk_labels_colors"]
            colors = dict(zip(adata.obs["bulk_labels"].cat.categories, truth_colors, strict=True))
            adata.uns["scbignn_colors"] = [colors[c] for c in order] + ["lightgrey"] * len(extra)
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


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_h5ad(path: str) -> None:
    """Refuse a path that is not a readable h5ad file, before any work."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if not file.is_file():
        raise ValueError(f"{path} is a folder, not an .h5ad file.")
    with open(file, "rb") as handle:
        if handle.read(8) != HDF5_SIGNATURE:
            raise ValueError(
                f"{path} is not an .h5ad file (not HDF5). Write it with adata.write_h5ad(...)."
            )


def _check_writable(path: str, what: str) -> None:
    """Refuse an output path whose folder cannot be written, before any work."""
    parent = Path(path).resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ValueError(f"Cannot write the {what} {path}: {parent} is not writable.")


def _check_range(args, name: str, low: float | None = None, high: float | None = None) -> None:
    value = getattr(args, name)
    if value is None:
        return
    flag = "--" + name.replace("_", "-")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{flag} must be {bounds}, not {value}.")


def _read(path: str):
    import anndata as ad

    _check_h5ad(path)
    return ad.read_h5ad(path)


def check_train(args: argparse.Namespace) -> None:
    """Every argument of ``scbignn train`` that can be checked before reading the data."""
    _check_h5ad(args.reference)
    for name, low in (("n_top_genes", 1), ("em_iterations", 1), ("pretrain_epochs", 0)):
        _check_range(args, name, low)
    _check_range(args, "class_balance", 0.0)
    _check_range(args, "batch_size", 1)
    _check_range(args, "max_epochs", 1)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder to save the model to.")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(
            f"--out {args.out} already exists and is not empty; pass --overwrite to replace the "
            "model in it, or choose another folder."
        )
    _check_writable(args.out, "model folder")


def check_annotate(args: argparse.Namespace):
    """Every argument of ``scbignn annotate`` that can be checked before reading the data.

    Returns the reference model, opened once (a safe model folder, or a clear error).
    """
    from scbignn_tools.model import SCBiGNN

    _check_h5ad(args.query)
    _check_range(args, "unknown_threshold", None, 1.0)
    _check_range(args, "novelty_threshold", None, 1.0)
    _check_range(args, "em_iterations", 1)
    if Path(args.out).suffix != ".h5ad":
        raise ValueError(f"--out {args.out} must end in .h5ad.")
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give the .h5ad file to write.")
    _check_writable(args.out, "output")
    if args.csv is not None:
        _check_writable(args.csv, "CSV")
    return SCBiGNN.load(args.model, accelerator=args.accelerator, device=args.devices)


def train(args: argparse.Namespace) -> int:
    """Train a model on a labelled reference and save it."""
    from scbignn_tools.model import SCBiGNN

    check_train(args)
    adata = _read(args.reference)
    SCBiGNN.setup_anndata(
        adata,
        labels_key=args.labels_key,
        unlabeled_category=args.unlabeled_category,
        layer=args.layer,
        data_format=args.data_format,
    )
    model = SCBiGNN(adata, n_top_genes=args.n_top_genes, seed=args.seed)
    print(model)
    extra = {} if args.class_balance is None else {"class_balance": args.class_balance}
    model.train(
        n_em_iterations=args.em_iterations,
        pretrain_epochs=args.pretrain_epochs,
        max_epochs=args.max_epochs,
        early_stopping=not args.no_early_stopping,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        **extra,
    )
    model.save(args.out, overwrite=args.overwrite)
    cal = model.calibration_
    if cal.ece_p_after is not None:
        print(
            f"calibration on {cal.n_cells} held-out cells: "
            f"ECE {cal.ece_p_before:.3f} -> {cal.ece_p_after:.3f}"
        )
    print(f"saved model to {args.out}")
    return 0


def annotate(args: argparse.Namespace) -> int:
    """Annotate a query with a saved model, inductively or by further EM (transductive)."""
    from scbignn_tools.model import SCBiGNN

    reference = check_annotate(args)
    query = _read(args.query)
    model = SCBiGNN.load_query_data(query, reference, args.accelerator, args.devices)
    if args.mode == "transductive":
        model.train(
            n_em_iterations=args.em_iterations, accelerator=args.accelerator, devices=args.devices
        )
    result = model.get_annotation(
        unknown_threshold=None if args.unknown_threshold < 0 else args.unknown_threshold,
        novelty_threshold=None if args.novelty_threshold < 0 else args.novelty_threshold,
        gene_importance=not args.no_importance,
    )
    result.to_adata(query, key_added=args.key_added)  # the same writer as model.annotate
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    query.write_h5ad(args.out)
    csv = args.csv or str(Path(args.out).with_suffix(".csv"))
    result.to_df().to_csv(csv)
    print(query.obs[args.key_added].value_counts().to_string())
    print(f"wrote {args.out} and {csv}")
    return 0


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _threads(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"--threads must be a whole number >= 1, not {value!r}")
    return int(value)


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accelerator", default="auto", help="'auto', 'cpu', 'gpu'..., as in scvi-tools"
    )
    p.add_argument("--devices", type=_devices, default="auto", help="device index or 'auto'")
    p.add_argument(
        "--threads",
        type=_threads,
        default=None,
        help="CPU threads of torch (scvi.settings.num_threads; None: one per core). On a machine "
        "shared with other jobs, give it only the cores that are free (docs/benchmarks.md)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scbignn``."""
    from importlib.metadata import version

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="scbignn", description="scBiGNN cell type annotation.", formatter_class=fmt
    )
    parser.add_argument("--version", action="version", version=version("scbignn-tools"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo", help="train on scanpy's pbmc68k_reduced and report accuracy", formatter_class=fmt
    )
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--hidden", type=float, default=0.2, help="share of labels hidden")
    p.add_argument("--quick", action="store_true", help="a few epochs only (for tests)")
    p.add_argument("--no-figure", action="store_true", help="skip the UMAP figure")
    p.set_defaults(func=demo)

    p = sub.add_parser(
        "train", help="train a model on a labelled reference .h5ad and save it", formatter_class=fmt
    )
    p.add_argument("reference", help="reference .h5ad")
    p.add_argument("--labels-key", required=True, help="obs column with the cell types")
    p.add_argument("--unlabeled-category", default="Unknown", help="label of cells without a type")
    p.add_argument("--layer", default=None, help="layer with the counts (None: X)")
    p.add_argument(
        "--data-format",
        choices=["counts", "log1p"],
        default="counts",
        help="raw counts, or normalize_total + log1p values",
    )
    p.add_argument("--n-top-genes", type=int, default=2000, help="number of model genes")
    p.add_argument("--em-iterations", type=int, default=3, help="EM iterations")
    p.add_argument(
        "--pretrain-epochs",
        type=int,
        default=None,
        help="q_phi epochs before EM (None: 30 for a new model)",
    )
    p.add_argument(
        "--class-balance",
        type=float,
        default=None,
        help="exponent of the class weights (None: the model's, 0.5); 0 for a reference "
        "that will annotate strongly shifted queries inductively (docs/method.md)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="cells per q_phi minibatch")
    p.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="most epochs of any q_phi phase (None: the phases' own lengths)",
    )
    p.add_argument(
        "--no-early-stopping",
        action="store_true",
        help="run every phase its full length instead of stopping when the held-out loss "
        "stops falling",
    )
    p.add_argument(
        "--strategy",
        default="auto",
        help="Lightning strategy, e.g. 'ddp' with --devices 2 (the command runs once per device)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of all randomness")
    p.add_argument("--out", required=True, help="folder to save the model to")
    p.add_argument("--overwrite", action="store_true", help="replace a model in --out")
    _add_device_options(p)
    p.set_defaults(func=train)

    p = sub.add_parser(
        "annotate", help="annotate a query .h5ad with a saved model", formatter_class=fmt
    )
    p.add_argument("query", help="query .h5ad (same kind of values as the reference)")
    p.add_argument("--model", required=True, help="folder of a model saved by `scbignn train`")
    p.add_argument("--out", required=True, help="annotated .h5ad to write")
    p.add_argument(
        "--csv", default=None, help="CSV of labels and probabilities (None: next to --out)"
    )
    p.add_argument(
        "--mode",
        choices=["inductive", "transductive"],
        default="inductive",
        help="inductive: link query cells to the stored reference (fast); "
        "transductive: run EM further with the query cells unlabelled (slower)",
    )
    p.add_argument(
        "--em-iterations", type=int, default=1, help="EM iterations in transductive mode"
    )
    p.add_argument(
        "--unknown-threshold",
        type=float,
        default=0.5,
        help="confidence below which a cell is 'Unknown', at most 1 (negative: never)",
    )
    p.add_argument(
        "--novelty-threshold",
        type=float,
        default=0.999,
        help="novelty (distance to the reference, 0 to 1) above which a cell is 'Unknown', "
        "at most 1 (negative: never)",
    )
    p.add_argument("--key-added", default="scbignn", help="prefix of the keys written")
    p.add_argument("--no-importance", action="store_true", help="skip the gene importances")
    _add_device_options(p)
    p.set_defaults(func=annotate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scbignn`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        import scvi

        scvi.settings.num_threads = args.threads
    try:
        return args.func(args)
    except (KeyError, ValueError, OSError) as err:
        print(f"scbignn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
