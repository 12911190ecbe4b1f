"Every course notebook runs top to bottom (nbdev_test: exported code, inline checks, plots), slow/GPU cells skipped."
from pathlib import Path
import pytest
from conftest import ROOT, BIN, run

NOTEBOOKS = sorted(p.name for p in (ROOT / "nbs").glob("[0-9]*.ipynb"))

def test_there_are_notebooks(): assert len(NOTEBOOKS) >= 7, NOTEBOOKS

@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebook(nb):
    r = run([str(BIN / "nbdev_test"), "--path", f"nbs/{nb}", "--do_print"], timeout=900)
    assert "Success" in r.stdout + r.stderr
