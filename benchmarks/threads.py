"""torch threads against a competing process: the measurement behind the ``--threads`` advice.

A fixed workload (80 q_phi training steps on Kang batches of 64 cells, then q_phi inference of
2,048 cells) is timed with 1 and 2 torch threads, alone and beside one busy process (a Python
loop that keeps one core busy, standing in for another user's job). Run it on an otherwise
idle machine:

    .venv/bin/python benchmarks/threads.py

Prints a row per setting: wall seconds of the workload and its CPU seconds.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared/data/kang2018_ifnb_pbmc.h5ad"


def spin(stop) -> None:
    """Keep one core busy until ``stop`` is set."""
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def workload(threads: int, data: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the fixed workload with ``threads`` torch threads."""
    from scbignn_tools.data import GeneSets
    from scbignn_tools.model import SCBiGNN
    from scbignn_tools.model._inference import standardize
    from scbignn_tools.module import q_inference

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    adata = ad.read_h5ad(data)
    SCBiGNN.setup_anndata(adata, labels_key="cell_type", unlabeled_category="Unknown")
    model = SCBiGNN(adata)
    cells = model._training_cells()
    sets, x = GeneSets(cells.x), standardize(model.module, cells.x)
    rng = np.random.default_rng(0)
    parts = list(sets.batches(np.arange(len(sets)), 64, rng))[:80]
    batches = [(*sets.batch(p, "cpu", 256, rng), x.rows(p)) for p in parts]
    q = model.module.q.train()
    opt = torch.optim.AdamW(q.parameters(), lr=1e-3)
    targets = torch.as_tensor(cells.labels)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for part, (genes, values, mask, xb) in zip(parts, batches, strict=True):
        logits, _ = q(genes, values, mask, xb)
        loss = torch.nn.functional.cross_entropy(logits, targets[part])
        opt.zero_grad()
        loss.backward()
        opt.step()
    q_inference(model.module, sets, x, np.arange(2048))
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return wall, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def run(threads: int, competing: bool, data: Path, out) -> None:
    out.put(workload(threads, data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    print("| torch threads | competing busy process | wall s | CPU s |")
    print("|---|---|---|---|")
    for competing in (False, True):
        for threads in (1, 2):
            stop = ctx.Event()
            spinner = ctx.Process(target=spin, args=(stop,)) if competing else None
            if spinner is not None:
                spinner.start()
            queue = ctx.Queue()
            worker = ctx.Process(target=run, args=(threads, competing, args.data, queue))
            worker.start()
            wall, cpu = queue.get()
            worker.join()
            if spinner is not None:
                stop.set()
                spinner.join()
            print(f"| {threads} | {'yes' if competing else 'no'} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
