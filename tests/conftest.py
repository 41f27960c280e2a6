from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

DATA = Path(
    os.environ.get("SCBIGNN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


def read_shared(name: str) -> ad.AnnData:
    path = DATA / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: tests read ../shared/data (or $SCBIGNN_DATA).")
    return ad.read_h5ad(path)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of the shared real datasets."""
    return DATA


@pytest.fixture(scope="session")
def baron() -> ad.AnnData:
    return read_shared("baron_mouse.h5ad")


def tiny_baron(baron: ad.AnnData, n_per_type: int = 60, n_genes: int = 400) -> ad.AnnData:
    """Real BaronMouse cells of 4 types, the most detected genes; a quarter of the labels hidden.

    ``obs["cell_type"]`` holds every cell's type, ``obs["labels"]`` the training labels.
    """
    keep = ["beta", "alpha", "ductal", "endothelial"]
    rng = np.random.default_rng(0)
    cells = np.concatenate(
        [
            rng.choice(np.flatnonzero(baron.obs.cell_type == t), n_per_type, replace=False)
            for t in keep
        ]
    )
    sub = baron[cells].copy()
    expressed = np.asarray((sub.X > 0).sum(0)).ravel()
    sub = sub[:, np.argsort(-expressed, kind="stable")[:n_genes]].copy()
    sub = sub[np.asarray(sub.X.sum(1)).ravel() > 0].copy()
    sub.obs["cell_type"] = sub.obs["cell_type"].astype(str)
    labels = sub.obs["cell_type"].to_numpy().copy()
    labels[rng.random(sub.n_obs) < 0.25] = "Unknown"
    sub.obs["labels"] = labels
    return sub


@pytest.fixture
def tiny(baron) -> ad.AnnData:
    """240 real BaronMouse cells of 4 types, 400 genes; a quarter of the labels hidden."""
    return tiny_baron(baron)
