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

# The package's layers, lowest first. A module may import only modules listed before it: the method chapters build on
# the models, the data and the losses, the trainer on the methods' interface, the tools around the course (data
# parallelism, the report, the benchmarks, the command line) on the trainer. The methods reach the trainer only through
# the registry, by name (`models.available_methods`), never by an import.
LAYERS = ("__init__", "metrics", "readers", "data", "models", "memory", "infonce", "augment_kernels", "augment", "runs",
          "cc", "dcdc", "crlc", "tcc", "dec", "cadec",
          "train", "distributed", "report", "bench", "cli", "__main__")

def _package_imports(path):
    "Every module of the package that `path` imports, at the top or inside a function, absolutely or relatively."
    import ast
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0 and not (mod == "deepcluster_nb" or mod.startswith("deepcluster_nb.")): continue
            mod = mod.removeprefix("deepcluster_nb").lstrip(".") if node.level == 0 else mod
            found |= {mod.split(".")[0]} if mod else {a.name for a in node.names}    # `from . import x` imports x
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("deepcluster_nb.")}
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("deepcluster_nb.")):
            found.add(node.args[0].value.split(".")[1])
    return found

def test_layers_only_point_down():
    "No module of the package imports one of a layer above it, at load time or inside a function."
    mods = {p.stem: p for p in (ROOT / "deepcluster_nb").glob("*.py") if p.stem != "_modidx"}
    assert not set(mods) - set(LAYERS), f"place these modules in LAYERS (tests/test_repo.py): {sorted(set(mods) - set(LAYERS))}"
    rank = {m: i for i, m in enumerate(LAYERS)}
    up = {m: sorted(d for d in _package_imports(p) if rank.get(d, -1) >= rank[m]) for m, p in sorted(mods.items())}
    up = {m: ds for m, ds in up.items() if ds}
    assert not up, f"modules that import their own layer or one above it: {up}"
