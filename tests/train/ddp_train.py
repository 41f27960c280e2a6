"""Train on tiny real data with ``devices`` CPU processes; used by ``test_engine.py``.

``python tests/train/ddp_train.py OUT DEVICES``: with 2 devices Lightning's "ddp" strategy
starts a second process by running this script again (gloo backend on CPU). Process 0 writes
``OUT/predictions.csv`` and ``OUT/history.csv``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import read_shared, tiny_baron

from scbignn_tools.model import SCBiGNN


def main(out: str, devices: int) -> None:
    torch.set_num_threads(1)
    adata = tiny_baron(read_shared("baron_mouse.h5ad"), n_per_type=100, n_genes=300)
    SCBiGNN.setup_anndata(adata, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(adata, n_top_genes=200)
    model.train(
        n_em_iterations=1,
        pretrain_epochs=6,
        q_epochs=2,
        p_epochs=40,
        early_stopping=False,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        progress_bar=False,
    )
    if torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if torch.distributed.get_rank() != 0:
            return
    else:
        world = 1
    Path(out).mkdir(parents=True, exist_ok=True)
    pred = pd.DataFrame(
        {"predicted": model.predict(), "truth": adata.obs["cell_type"].to_numpy()},
        index=adata.obs_names,
    )
    pred.attrs["world"] = world
    pred.to_csv(os.path.join(out, "predictions.csv"))
    model.history_.assign(world=world).to_csv(os.path.join(out, "history.csv"), index=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
