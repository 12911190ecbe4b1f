"""Every course notebook runs top to bottom as `nbdev_test` runs it (exported code, inline checks, plots; slow/GPU
cells skipped), and its executed copy is kept in build/executed/ for the site; every notebook passes nbdev's doc
processing (what `nbdev_proc_nbs` does before Quarto renders the docs); no notebook is committed with outputs."""
import json, os, re, shutil, subprocess
import pytest
from conftest import ROOT, BIN, run

NBS = ROOT / "nbs"
# chapters (01_...) and appendices (A...); the papermill entry points are run by tests/test_train.py
NOTEBOOKS = sorted(p.name for p in NBS.glob("*.ipynb") if p.name[:1].isdigit() or p.name.startswith("A"))
ALL = sorted(p.name for p in NBS.glob("*.ipynb") if not p.name.startswith(("_", ".")))


def test_there_are_notebooks(): assert len(NOTEBOOKS) >= 7, NOTEBOOKS


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebook(nb):
    "nbdev's test run of one notebook (ci/execute.py calls nbdev's test_nb), keeping the outputs for the site."
    r = run([str(BIN / "python"), "ci/execute.py", f"nbs/{nb}"], timeout=900)
    assert "Success." in r.stdout
    assert (ROOT / "build" / "executed" / nb).exists()


# nbdev's doc processing, as nbdev_proc_nbs runs it for each notebook (nbdev.serve_drv.main with the FilterDefaults
# processors), without the Quarto check that nbdev_proc_nbs makes first. All notebooks in one process (each gets its
# own shell, as in nbdev; torch is imported once); prints one JSON report per notebook.
_DOC_PROC = r'''
import json, sys, warnings
from pathlib import Path
from nbdev.serve_drv import main
from nbdev.processors import FilterDefaults
for name in sys.argv[1:]:
    src, dst = Path("nbs") / name, Path("_proc") / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    error = cell = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try: main((src, dst, FilterDefaults))
        except Exception as e:
            head, _, cell = str(e).partition(":\n")
            cause = e.__cause__ or e
            error = f"{type(cause).__name__}: {cause}"
    mixed = [str(w.message).split("---\n", 1)[1].rsplit("\n---", 1)[0] for w in caught
             if "containing imports and other code" in str(w.message)]
    print(json.dumps({"nb": name, "error": error, "cell": cell, "mixed": mixed}), flush=True)
'''


@pytest.fixture(scope="module")
def doc_reports(tmp_path_factory):
    "nbdev's doc processing of every notebook, in a copy of settings.ini and nbs/ (its _proc/ output lands there)."
    d = tmp_path_factory.mktemp("docs")
    shutil.copy2(ROOT / "settings.ini", d / "settings.ini")
    shutil.copytree(NBS, d / "nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_*"))
    (d / "proc.py").write_text(_DOC_PROC)
    r = subprocess.run([str(BIN / "python"), "proc.py", *ALL], cwd=d, capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "MPLBACKEND": "Agg"})
    reports = {}
    for line in r.stdout.splitlines():
        if line.startswith('{"nb"'): o = json.loads(line); reports[o["nb"]] = o
    return reports, r, d / "nbs"


def _cell_of(nb_path, source):
    "Index of the cell whose code (without its #| lines) is `source`."
    body = lambda s: "\n".join(l for l in (s or "").strip().splitlines() if not l.lstrip().startswith("#|")).strip()
    cells = json.loads(nb_path.read_text())["cells"]
    return next((i for i, c in enumerate(cells) if body("".join(c["source"])) == body(source)), None)


@pytest.mark.parametrize("nb", ALL)
def test_nbdev_doc_processing(nb, doc_reports):
    """nbdev's doc processing succeeds: import cells hold imports only (nbdev runs every cell with an import while
    it renders the docs, so other code there runs without the cells before it), and no cell it runs needs a cell it
    skips."""
    reports, r, copied = doc_reports  # cell numbers refer to the copy that was processed
    assert nb in reports, f"doc processing did not report on {nb}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    report, problems = reports[nb], []
    for src in report["mixed"]:
        imports = [l.strip() for l in src.splitlines() if re.match(r"^\s*(import |from \S+ import )", l)]
        problems.append(f"cell {_cell_of(copied / nb, src)} mixes imports with other code: move "
                        f"{'; '.join(imports) or 'its imports'} into a cell of imports only")
    if report["error"]:
        first = next((l for l in (report["cell"] or "").splitlines() if l.strip()), "")
        problems.append(f"cell {_cell_of(copied / nb, report['cell'])} fails when nbdev runs it for the docs "
                        f"({report['error'][:300]}); it starts {first[:100]!r}")
    assert not problems, f"{nb}: nbdev's doc processing (nbdev_proc_nbs):\n- " + "\n- ".join(problems)


def test_notebooks_are_committed_without_outputs():
    "The decision in the README (*Outputs stay out of git*): readers see outputs on the site."
    with_outputs = {}
    for p in sorted(NBS.glob("*.ipynb")):
        cells = json.loads(p.read_text())["cells"]
        idx = [i for i, c in enumerate(cells) if c.get("outputs")]
        if idx: with_outputs[p.name] = idx
    assert not with_outputs, f"notebooks with outputs (clear them, e.g. in JupyterLab or with jupytext): {with_outputs}"
