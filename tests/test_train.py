"Training through the papermill entry point and the Trainer: trimmed runs of every method, bad input, a real-learning run, exact resume after a kill."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from conftest import ROOT, BIN, run
from deepcluster_nb.models import available_methods
from deepcluster_nb.train import Trainer, TrainConfig, NonFiniteLoss

def papermill(out_nb, *params, timeout=600):
    args = [str(BIN / "papermill"), "nbs/train.ipynb", str(out_nb), "-k", "python3"]
    for k, v in params: args += ["-p", k, str(v)]
    return run(args, timeout=timeout)

@pytest.mark.parametrize("method", available_methods())
def test_trimmed_papermill_run(method, tmp_path):
    "`papermill nbs/train.ipynb out.ipynb -p method <m>`, trimmed to a few steps, writes every artefact of a run."
    out = tmp_path / "run"
    papermill(tmp_path / "out.ipynb", ("method", method), ("max_steps", 3), ("eval_every", 0), ("out_dir", out),
              ("progress", False))
    for f in ("config.json", "history.json", "history.csv", "checkpoint.pt", "metrics.json", "confusion.png", "training_curves.png"):
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == method and m["steps"] == 3 and 0 <= m["acc"] <= 1 and -1 <= m["ari"] <= 1
    assert sum(m["cluster_sizes"]) == 1797
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["method"] == method and cfg["backbone"] != "auto" and cfg["batch_size"] != "auto"
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert f"{method} on digits after" in text and "ACC" in text

@pytest.mark.parametrize("params,message", [
    ((("method", "kmeans"),), "Unknown method 'kmeans'. Valid: cc"),
    ((("dataset", "cifar11"),), "Unknown dataset 'cifar11'. Valid names: digits"),
    ((("backbone", "vgg16"),), "Unknown backbone 'vgg16'. Valid: small_cnn"),
    ((("batch_size", 4),), "batch_size (4) must be at least n_clusters (10)"),
])
def test_papermill_bad_input_says_what_is_valid(params, message, tmp_path):
    args = [str(BIN / "papermill"), "nbs/train.ipynb", str(tmp_path / "o.ipynb"), "-k", "python3"]
    for k, v in params: args += ["-p", k, str(v)]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and message in r.stdout + r.stderr

def test_missing_dataset_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        Trainer(TrainConfig(dataset="cifar10", data_root=str(tmp_path), out_dir=str(tmp_path / "r")))

def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path):
    base = dict(out_dir=str(tmp_path), progress=False, subset=256, eval_every=0)
    Trainer(TrainConfig(epochs=1, **base)).fit()
    with pytest.raises(NonFiniteLoss, match="last good checkpoint"):
        Trainer(TrainConfig(epochs=2, resume=True, hparams={"tau_i": 0.0}, **base)).fit()
    import torch
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1

def test_same_seed_same_result(tmp_path):
    cfg = dict(progress=False, subset=384, epochs=2, eval_every=0)
    a = Trainer(TrainConfig(out_dir=str(tmp_path / "a"), **cfg)).fit()
    b = Trainer(TrainConfig(out_dir=str(tmp_path / "b"), **cfg)).fit()
    assert (a["acc"], a["nmi"], a["ari"], a["cluster_sizes"]) == (b["acc"], b["nmi"], b["ari"], b["cluster_sizes"])

def assert_same_run(a:dict, a_dir, b:dict, b_dir):
    "Two runs agree exactly: final metrics and every epoch's loss in history.json."
    for k in ("acc", "nmi", "ari", "cluster_sizes"): assert a[k] == b[k], k
    h_a, h_b = (json.loads((Path(d) / "history.json").read_text()) for d in (a_dir, b_dir))
    assert [h["loss"] for h in h_a] == [h["loss"] for h in h_b]

RESUME_CFG = dict(method="cc", dataset="digits", subset=512, batch_size=128, epochs=12, eval_every=0, progress=False, seed=3)

def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    "Kill a CPU run with SIGKILL mid-training, resume it, and get exactly the metrics of an uninterrupted run."
    killed = tmp_path / "killed"
    code = ("import sys; from deepcluster_nb.train import Trainer, TrainConfig; "
            f"Trainer(TrainConfig(out_dir=sys.argv[1], resume=True, **{RESUME_CFG!r})).fit()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(killed)], cwd=ROOT)
    hist, t0 = killed / "history.json", time.time()
    while time.time() - t0 < 300:
        if hist.exists():
            try: n = len(json.loads(hist.read_text()))
            except ValueError: n = 0
            if n >= 3: break
        if proc.poll() is not None: break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    done = len(json.loads(hist.read_text()))
    assert 3 <= done < RESUME_CFG["epochs"] and not (killed / "metrics.json").exists()
    resumed = subprocess.run([sys.executable, "-c", code, str(killed)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    whole = Trainer(TrainConfig(out_dir=str(tmp_path / "whole"), **RESUME_CFG)).fit()
    after = json.loads((killed / "metrics.json").read_text())
    assert after["epochs"] == whole["epochs"] == RESUME_CFG["epochs"]
    assert_same_run(after, killed, whole, tmp_path / "whole")

def test_cc_learns_digits_with_the_readme_defaults(tmp_path):
    "The README's quick start: CC on digits with default settings beats k-means on raw pixels (ACC 0.79, NMI 0.74)."
    t0 = time.time()
    m = Trainer(TrainConfig(method="cc", dataset="digits", out_dir=str(tmp_path), progress=False)).fit()
    elapsed = time.time() - t0
    print(f"CC on digits: ACC {m['acc']:.4f} NMI {m['nmi']:.4f} ARI {m['ari']:.4f} in {elapsed:.0f} s")
    assert m["acc"] >= 0.85 and m["nmi"] >= 0.80, m
    assert elapsed < 300, f"took {elapsed:.0f} s; the quick start promises under 5 minutes on 2 cores"

def test_real_data_npz_run(tmp_path):
    "A trimmed CC run on the real USPS digits from the data root (skipped when the data root does not hold it)."
    from conftest import shared_npz
    p = shared_npz("usps.npz")
    m = Trainer(TrainConfig(dataset=str(p), out_dir=str(tmp_path), progress=False, max_steps=5, eval_every=0,
                            backbone="small_cnn", epochs=1, batch_size=256)).fit()
    assert sum(m["cluster_sizes"]) == 9298 and 0 <= m["acc"] <= 1

def test_benchmark_name_loads_the_npz_copy_with_its_splits(tmp_path):
    "`dataset=usps` finds usps.npz in the data root; CRLC's train-test protocol trains on 7,291 and evaluates on 2,007."
    from conftest import shared_npz
    shared_npz("usps.npz")
    tr = Trainer(TrainConfig(method="crlc", dataset="usps", out_dir=str(tmp_path), progress=False, max_steps=3, eval_every=0))
    m = tr.fit()
    assert (tr.cfg.protocol, tr.cfg.backbone, len(tr.train_data)) == ("train-test", "small_cnn", 7291)
    assert sum(m["cluster_sizes"]) == 2007 and 0 <= m["acc"] <= 1

def test_tcc_resume_restores_queues_and_momentum_network(tmp_path):
    "TCC's state beyond the weights — momentum network, cluster queue P, capped instance queue Q — survives a resume exactly."
    cfg = dict(method="tcc", dataset="digits", subset=256, batch_size=64, eval_every=0, progress=False, seed=5,
               hparams={"queue_size": 4096})
    Trainer(TrainConfig(out_dir=str(tmp_path / "split"), epochs=2, **cfg)).fit()
    tr = Trainer(TrainConfig(out_dir=str(tmp_path / "split"), epochs=4, resume=True, **cfg))
    resumed = tr.fit()
    assert tr.method.Q.queue.shape[0] == 256                # J capped at the training-set size, kept on resume
    whole = Trainer(TrainConfig(out_dir=str(tmp_path / "whole"), epochs=4, **cfg)).fit()
    assert_same_run(resumed, tmp_path / "split", whole, tmp_path / "whole")

def test_two_stage_crlc_resumes_exactly(tmp_path):
    "Stage two of CRLC (neighbour positives, frozen backbone) resumes from its checkpoint to the uninterrupted result."
    base = dict(method="crlc", dataset="digits", subset=256, batch_size=64, eval_every=0, progress=False, seed=2)
    Trainer(TrainConfig(out_dir=str(tmp_path / "stage1"), epochs=1, **base)).fit()
    hp = dict(two_stage=True, freeze_backbone=True, n_neighbors=10, pretrained=str(tmp_path / "stage1" / "checkpoint.pt"))
    Trainer(TrainConfig(out_dir=str(tmp_path / "split"), epochs=2, hparams=hp, **base)).fit()
    resumed = Trainer(TrainConfig(out_dir=str(tmp_path / "split"), epochs=3, resume=True, hparams=hp, **base)).fit()
    whole = Trainer(TrainConfig(out_dir=str(tmp_path / "whole"), epochs=3, hparams=hp, **base)).fit()
    assert resumed["epochs"] == 3
    assert_same_run(resumed, tmp_path / "split", whole, tmp_path / "whole")
