"""The training history: one row per epoch, and the same in scvi-tools' form."""

from __future__ import annotations

import pandas as pd

_METRICS = ("train_loss", "validation_loss", "validation_accuracy")


def scvi_history(table: pd.DataFrame | None) -> dict[str, pd.DataFrame] | None:
    """The history in scvi-tools' form: one DataFrame per metric, indexed by epoch.

    Keys are ``{metric}_{model}`` (``train_loss_q``, ``validation_accuracy_p``...), each a
    one-column DataFrame whose index ``epoch`` counts that GNN's epochs over all phases (for
    p_theta, its full-graph steps); validation metrics only where they were measured. Two more
    keys hold the phases: ``epochs_q`` and ``epochs_p``, the epochs each phase ran, indexed by
    ``stage`` and ``em_iteration``.

    Parameters
    ----------
    table
        :attr:`~scbignn_tools.model.SCBiGNN.history_`, one row per epoch.

    Returns
    -------
    dict[str, pandas.DataFrame] or None
        ``None`` when ``table`` is (an untrained model).
    """
    if table is None:
        return None
    out = {}
    for model in ("q", "p"):
        rows = table[table["model"] == model].reset_index(drop=True)
        rows.index.name = "epoch"
        for metric in _METRICS:
            if metric not in rows:
                continue
            key = f"{metric}_{model}"
            out[key] = rows[[metric]].dropna().rename(columns={metric: key}).astype(float)
        phases = rows.groupby(["stage", "em_iteration"], sort=False).size()
        out[f"epochs_{model}"] = phases.rename(f"epochs_{model}").to_frame()
    return out
