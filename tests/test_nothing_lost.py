"""Nothing a user had is lost: run folders are touched only when it is safe, and every bad value is refused before any
work starts (one test per case: a folder of someone else's, resume without a checkpoint, overwrite over a report,
bad parameters from the command line and papermill, a failure inside training, bad report parameters)."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from conftest import ROOT, BIN
from deepcluster_nb.train import Trainer, TrainConfig, ConfigError, NonFiniteLoss
from deepcluster_nb.runs import RunFolderError, RunFolderExists, read_marker, RUN_MARKER
from deepcluster_nb.data import DatasetNotFound

QUICK = dict(subset=256, batch_size=64, eval_every=0, progress=False)
CLI = [sys.executable, "-m", "deepcluster_nb", "train", "--progress", "false", "--eval-every", "0", "--subset", "256",
       "--batch-size", "64"]

def cli(*args, timeout=300):
    return subprocess.run([*CLI, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)

def snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}

def test_resume_without_checkpoint_keeps_the_earlier_run(tmp_path):
    "A run whose checkpoints were deleted, plus a user's file: resume refuses, and nothing there changes."
    d = tmp_path / "x1"
    r = cli("--max-steps", 6, "--out-dir", d); assert r.returncode == 0, r.stderr
    for f in d.glob("checkpoint*.pt"): f.unlink()
    (d / "notes.tmp").write_text("mine")
    before = snapshot(d)
    r = cli("--max-steps", 2, "--resume", "true", "--out-dir", d)
    assert r.returncode != 0 and "has no checkpoint" in r.stderr and "nothing to resume" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) > 0 and "Traceback" not in r.stderr
    assert snapshot(d) == before

def test_a_folder_of_someone_else_is_never_touched(tmp_path):
    d = tmp_path / "theirs"; d.mkdir()
    (d / "draft.tmp").write_text("draft"); (d / "config.json").write_text('{"theirs": true}')
    before = snapshot(d)
    for extra in ((), ("--overwrite", "true"), ("--resume", "true")):
        r = cli("--max-steps", 2, "--out-dir", d, *extra)
        assert r.returncode != 0 and "no run of this package wrote (config.json, draft.tmp)" in r.stderr, r.stderr
        assert snapshot(d) == before
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(RunFolderError, match="no run of this package wrote"):
            Trainer(TrainConfig(out_dir=str(d), max_steps=2, **QUICK, **kw))
    assert snapshot(d) == before

def test_empty_out_dir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad in ("", "   ", "."):
        with pytest.raises((ConfigError, RunFolderError), match="out_dir must name a folder"):
            Trainer(TrainConfig(out_dir=bad, **QUICK))
    assert list(tmp_path.iterdir()) == []

def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(RunFolderError, match="contradict each other"):
        Trainer(TrainConfig(out_dir=str(tmp_path / "r"), resume=True, overwrite=True, **QUICK))

def test_overwrite_removes_the_old_report_and_nothing_else(tmp_path):
    from deepcluster_nb.report import load_run, write_report
    d = tmp_path / "run"
    Trainer(TrainConfig(out_dir=str(d), max_steps=3, **QUICK)).fit()
    rep = write_report(load_run(d), tsne_samples=50, kmeans=False)
    figures = set(rep["figures"].values())
    assert {"tsne.png", "gallery_confident.png", "cluster_sizes.png"} <= figures
    assert figures | {"report.json"} <= set(read_marker(d)["files"])
    (d / "my_notes.txt").write_text("keep me")
    Trainer(TrainConfig(out_dir=str(d), max_steps=2, overwrite=True, seed=1, **QUICK)).fit()
    left = {p.name for p in d.iterdir()}
    assert not left & {"tsne.png", "gallery_confident.png", "gallery_mistakes.png", "cluster_sizes.png", "report.json"}
    assert "my_notes.txt" in left and json.loads((d / "config.json").read_text())["config"]["seed"] == 1

@pytest.mark.parametrize("kw,needle", [
    (dict(seed=-1), "seed must be 0 or more"),
    (dict(threads=-1), "threads must be 0 (automatic) or a positive number"),
    (dict(out_dir="runs/{bogus}"), "is not a valid template"),
    (dict(device="meta"), "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'meta'"),
    (dict(hparams={"tau_i": "abc"}), "hparams.tau_i must be a number, got 'abc'"),
    (dict(hparams={"joint_forward": "maybe"}), "hparams.joint_forward must be true or false"),
    (dict(hparams={"z_dim": 1.5}), "hparams.z_dim must be int, got 1.5"),
    (dict(hparams={"z_dim": -3}), "hparams.z_dim is a count and must be 0 or more"),
    (dict(weight_decay=float("nan")), "weight_decay must be a finite number"),
    (dict(lr="inf"), "lr must be a finite number"),
])
def test_bad_values_are_refused_before_the_data_is_read(kw, needle, tmp_path, monkeypatch):
    "Each bad value stops the run with one line before any data is read (the data root does not exist) or any file is written."
    monkeypatch.chdir(tmp_path)
    cfg = {**QUICK, "dataset": "usps", "data_root": str(tmp_path / "no_data"), "out_dir": str(tmp_path / "run"), **kw}
    with pytest.raises(ConfigError) as e:
        Trainer(TrainConfig.parse(**cfg))
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert list(tmp_path.iterdir()) == []

def test_bad_values_from_papermill_and_the_command_line(tmp_path):
    "The same checks through both entry points: an error naming the value, no run folder left behind."
    out = tmp_path / "run"
    r = subprocess.run([str(BIN / "papermill"), "nbs/train.ipynb", str(tmp_path / "o.ipynb"), "-k", "python3",
                        "-p", "seed", "-1", "-p", "out_dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "seed must be 0 or more" in r.stdout + r.stderr
    r = cli("--hparams", "{tau_i: abc}", "--out-dir", out)
    assert r.returncode != 0 and "hparams.tau_i must be a number" in r.stderr and "Traceback" not in r.stderr
    f = tmp_path / "a_file"; f.write_text("x")
    r = cli("--out-dir", f)
    assert r.returncode != 0 and "is a file, not a folder" in r.stderr
    ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):      # (root may write anywhere)
            r = cli("--out-dir", ro / "run")
            assert r.returncode != 0 and "cannot be written" in r.stderr
    finally: ro.chmod(0o700)
    assert not out.exists()

def test_failure_inside_training_is_marked_and_says_how_to_go_on(tmp_path):
    "A loss that turns NaN in the first epoch: the message is true (no checkpoint), the folder says 'failed', a rerun says what to pass."
    d = tmp_path / "run"
    tr = Trainer(TrainConfig(out_dir=str(d), epochs=3, **QUICK))
    tr.method.hparams["tau_i"] = 0.0                                      # sabotage the loss after the checks
    with pytest.raises(NonFiniteLoss) as e: tr.fit()
    msg = str(e.value)
    assert "no checkpoint was written" in msg and "last good checkpoint" not in msg and "lr=0.002" in msg
    m = read_marker(d)
    assert m["status"] == "failed" and "NonFiniteLoss" in m["error"]
    with pytest.raises(RunFolderExists, match="status failed.*It has no checkpoint to resume from: pass overwrite=True"):
        Trainer(TrainConfig(out_dir=str(d), epochs=3, **QUICK))
    Trainer(TrainConfig(out_dir=str(d), max_steps=2, overwrite=True, **QUICK)).fit()
    assert read_marker(d)["status"] == "finished"

def test_nan_after_a_checkpoint_names_it(tmp_path):
    d = tmp_path / "run"
    Trainer(TrainConfig(out_dir=str(d), epochs=1, **QUICK)).fit()
    tr = Trainer(TrainConfig(out_dir=str(d), epochs=2, resume=True, **QUICK))
    tr.method.hparams["tau_i"] = 0.0
    with pytest.raises(NonFiniteLoss, match="the checkpoint of epoch 1 is kept in .*resume=True continues from it"): tr.fit()
    assert read_marker(d)["status"] == "failed"

def test_mistyped_data_root_is_not_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFound, match="does not exist; nothing was created or downloaded"):
        Trainer(TrainConfig(dataset="usps", data_root="no_such_folder", out_dir=str(tmp_path / "run"), **QUICK))
    assert sorted(p.name for p in tmp_path.iterdir()) == []

@pytest.mark.parametrize("param,value,needle", [("gallery_clusters", 0, "gallery_clusters must be at least 1"),
                                                ("tsne_samples", -5, "tsne_samples must be 0 (no t-SNE) or at least 5")])
def test_report_parameters_are_checked_before_evaluating(param, value, needle, tmp_path):
    d = tmp_path / "run"
    Trainer(TrainConfig(out_dir=str(d), max_steps=2, **QUICK)).fit()
    before = snapshot(d)
    r = subprocess.run([str(BIN / "papermill"), "nbs/report.ipynb", str(tmp_path / "r.ipynb"), "-k", "python3",
                        "-p", "run_dir", str(d), "-p", param, str(value)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and needle in r.stdout + r.stderr
    assert "loaded" not in r.stdout                                        # stopped before the run was loaded
    assert snapshot(d) == before

def test_unknown_labels_and_huge_labels_from_the_command_line(tmp_path):
    from deepcluster_nb.data import load_digits_data
    dg = load_digits_data()
    y = dg.y[:256].copy(); y[::4] = -1
    np.savez(tmp_path / "partly.npz", x=dg.x[:256, 0].numpy(), y=y)
    r = cli("--dataset", tmp_path / "partly.npz", "--n-clusters", 10, "--max-steps", 2, "--out-dir", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "confusion.png").stat().st_size > 0
    np.savez(tmp_path / "huge.npz", x=dg.x[:4, 0].numpy(), y=np.array([0, 1, 2, 10**9]))
    r = cli("--dataset", tmp_path / "huge.npz", "--out-dir", tmp_path / "b")
    assert r.returncode != 0 and "1,000,000,000" in r.stderr and not (tmp_path / "b").exists()

def test_without_progress_bar_one_line_per_epoch(tmp_path):
    r = cli("--epochs", 3, "--out-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("cc on digits: epoch ")]
    assert [l.split(",")[0] for l in lines] == [f"cc on digits: epoch {e}/3" for e in (1, 2, 3)], r.stdout

def test_small_cnn_on_the_cpu_defaults_to_one_thread(tmp_path):
    "The default (threads=0) for the small CNN on the CPU is one thread (measured by ci/bench_threads.py); an explicit value wins."
    code = ("import torch; from deepcluster_nb.train import Trainer, TrainConfig; import sys; "
            "Trainer(TrainConfig(out_dir=sys.argv[1], threads=int(sys.argv[2]), progress=False, device='cpu')); "
            "print(torch.get_num_threads())")
    for threads, want in (("0", "1"), ("2", "2")):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r"), threads], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0 and r.stdout.split()[-1] == want, r.stderr

def _chapters_that_read_the_data_root():
    "Notebooks with a (non-exported) cell that loads a dataset other than the digits, by name or variable, or a file of the data root."
    import re
    found = []
    for nb in sorted((ROOT / "nbs").glob("[0-9A]*.py")):
        cells = [c for c in nb.read_text().split("# %%") if "#| export" not in c]
        if any(re.search(r"""load_dataset\(\s*(["'](?!digits["'])|_\w+)|data_root\(\) /""", c) for c in cells):
            found.append(nb.stem)
    return found

def test_chapters_run_without_a_data_root(tmp_path):
    "The chapters that look for optional data (USPS, MNIST-test, CIFAR-10 copies) run to the end with an empty data root."
    chapters = _chapters_that_read_the_data_root()
    assert {"02_data", "06_cc"} <= set(chapters), chapters
    empty = tmp_path / "empty_data_root"; empty.mkdir()
    env = {**os.environ, "DEEPCLUSTER_DATA": str(empty), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    for nb in chapters:
        r = subprocess.run([str(BIN / "nbdev_test"), "--path", f"{nb}.ipynb"], cwd=ROOT / "nbs", env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0 and "Success" in r.stdout + r.stderr, f"{nb}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert list(empty.iterdir()) == []                                   # nothing was downloaded or created there
