"""The tutorials run from top to bottom, in a quick setting, so that they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def execute(name: str, cwd: Path) -> str:
    """Run a tutorial in ``cwd`` and return the text of all its outputs."""
    nb = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": cwd}}
    ).execute()
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.fixture
def quick(monkeypatch, data_dir):
    monkeypatch.setenv("SCBIGNN_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("SCBIGNN_DATA_DIR", str(data_dir))


def test_quickstart_runs_and_reloads_the_same_predictions(quick, tmp_path):
    text = execute("quickstart", tmp_path)
    accuracies = [float(a) for a in re.findall(r"^scbignn(?:_q)? (0\.\d+)", text, re.M)]
    assert len(accuracies) == 2 and min(accuracies) > 0.5  # 10 types: chance is far below
    assert text.rstrip().endswith("True")  # the saved and reloaded model predicts the same
    assert (tmp_path / "pbmc68k_model" / "model.json").exists()


def test_kang_query_tutorial_annotates_a_saved_reference(quick, tmp_path):
    text = execute("kang_query", tmp_path)
    for mode in ("inductive", "transductive"):
        found = re.search(rf"{mode} accuracy \(p_theta\): (0\.\d+)", text)
        assert found and float(found.group(1)) > 0.6, text[-2000:]
    assert (tmp_path / "kang_ctrl_model" / "weights.safetensors").exists()
