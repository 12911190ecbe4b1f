"The repository is consistent: notebooks are clean, the package is what nbdev_export makes of them, and every notebook's py:percent twin is in sync."
import shutil
from pathlib import Path
import pytest
from conftest import ROOT, BIN, run

def _snapshot(folder, pattern):
    return {p.relative_to(ROOT): p.read_bytes() for p in sorted((ROOT / folder).glob(pattern))}

def _changed(before, after): return sorted(str(k) for k in set(before) | set(after) if before.get(k) != after.get(k))

def test_export_is_in_sync(tmp_path):
    before = _snapshot("deepcluster_nb", "*.py")
    try:
        run([str(BIN / "nbdev_export")])
        after = _snapshot("deepcluster_nb", "*.py")
        assert not _changed(before, after), f"nbdev_export changed {_changed(before, after)}: run nbdev_export and commit"
    finally:
        for k, v in before.items(): (ROOT / k).write_bytes(v)

def test_notebooks_are_clean():
    before = _snapshot("nbs", "*.ipynb")
    try:
        run([str(BIN / "nbdev_clean")])
        after = _snapshot("nbs", "*.ipynb")
        assert not _changed(before, after), f"nbdev_clean changed {_changed(before, after)}: run nbdev_clean and commit"
    finally:
        for k, v in before.items(): (ROOT / k).write_bytes(v)

NBS = sorted((ROOT / "nbs").glob("*.ipynb"))

def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]

@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.name)
def test_jupytext_pair_in_sync(nb):
    "The .ipynb and its py:percent twin hold the same cells (sources, types, tags) and a kernelspec."
    import jupytext
    twin = nb.with_suffix(".py")
    assert twin.exists(), f"{nb.name} has no paired {twin.name} (run: jupytext --to py:percent {nb})"
    a, b = jupytext.read(nb), jupytext.read(twin)
    assert _cells(a) == _cells(b), f"{nb.name} and {twin.name} differ: edit the .py, then `jupytext --to ipynb {twin}`"
    assert a.metadata.get("kernelspec", {}).get("name") == "python3", "papermill needs a kernelspec"

def test_train_notebook_parameters_are_the_config_fields():
    "The papermill parameters cell of nbs/train.ipynb is exactly what TrainConfig's fields and comments generate."
    import json
    from deepcluster_nb.train import parameters_cell
    cells = json.loads((ROOT / "nbs/train.ipynb").read_text())["cells"]
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "nbs/train.ipynb needs exactly one cell tagged 'parameters'"
    assert "".join(params[0]["source"]).strip() == parameters_cell().strip(), (
        "the parameters cell of nbs/train.py differs from TrainConfig: replace it with the output of "
        "`.venv/bin/python -c 'from deepcluster_nb.train import parameters_cell; print(parameters_cell())'`, then bash ci/nbsync.sh nbs/train.py")
