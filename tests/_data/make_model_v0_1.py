"""Write a model folder with scbignn-tools 0.1 (commit fa3adf7, the pickled format) for tests.

Run with that commit on the path: PYTHONPATH=<0.1 checkout>/src python make_model_v0_1.py model_v0_1
"""

import sys

import anndata as ad
import numpy as np

from scbignn_tools.model import SCBiGNN

baron = ad.read_h5ad("/work/shared/data/baron_mouse.h5ad")
keep = ["beta", "alpha", "ductal", "endothelial"]
rng = np.random.default_rng(0)
cells = np.concatenate(
    [rng.choice(np.flatnonzero(baron.obs.cell_type == t), 30, replace=False) for t in keep]
)
sub = baron[cells].copy()
expressed = np.asarray((sub.X > 0).sum(0)).ravel()
sub = sub[:, np.argsort(-expressed, kind="stable")[:300]].copy()
sub.obs["labels"] = sub.obs["cell_type"].astype(str)
SCBiGNN.setup_anndata(sub, labels_key="labels", unlabeled_category="Unknown")
m = SCBiGNN(sub, n_top_genes=50, n_features=8, n_hidden=8, gene_layers=1, n_neighbors=5)
m.train(
    n_em_iterations=1,
    pretrain_epochs=3,
    q_epochs=1,
    p_epochs=10,
    progress_bar=False,
    validation_size=0.2,
)
m.save(sys.argv[1], overwrite=True)
np.save(sys.argv[1] + "/../model_v0_1_probabilities.npy", m.predict(soft=True).to_numpy())
print(m.calibration_)
