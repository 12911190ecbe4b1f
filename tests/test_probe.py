"The augmentation probe's script: one CSV row per (dataset, recipe, seed), resumable, and clear about bad input."
import csv, subprocess, sys
from conftest import ROOT, BIN


def probe(*args):
    return subprocess.run([str(BIN / "python"), "ci/augment_probe.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=600)


def test_probe_writes_one_row_per_recipe_and_resumes(tmp_path):
    out = tmp_path / "probe.csv"
    r = probe("--datasets", "digits", "--seeds", "0", "--epochs", "1", "--jobs", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(out)))
    from deepcluster_nb.augment import PROBE_VARIANTS
    assert [x["variant"] for x in rows] == list(PROBE_VARIANTS) and all(0 < float(x["acc"]) <= 1 for x in rows)
    assert all(x["epochs"] == "1" and x["machine"] for x in rows)
    r = probe("--datasets", "digits", "--seeds", "0", "--epochs", "1", "--jobs", "1", "--out", str(out))
    assert r.returncode == 0 and "0 probes to run (3 already" in r.stdout, r.stdout
    assert len(list(csv.DictReader(open(out)))) == 3


def test_probe_refuses_an_unknown_dataset(tmp_path):
    r = probe("--datasets", "cifar10", "--out", str(tmp_path / "p.csv"))
    assert r.returncode == 2 and "unknown dataset(s) ['cifar10']" in r.stderr
