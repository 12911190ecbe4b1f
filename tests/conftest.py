import os, sys, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def run(cmd, timeout=900, **kw):
    "Run a command in the repository root; fail the test with its output if it fails."
    r = subprocess.run(cmd, cwd=kw.pop("cwd", ROOT), capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {r.returncode}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-6000:]}")
    return r

@pytest.fixture(scope="session")
def root(): return ROOT

def shared_npz(name):
    "Path of a real-data .npz in the data root, or skip the test when it is not there."
    from deepcluster_nb.data import data_root
    p = data_root() / name
    if not p.exists(): pytest.skip(f"{name} not found in the data root ({data_root()}); set DEEPCLUSTER_DATA")
    return p
