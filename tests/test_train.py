"Training through the papermill entry point and the Trainer: trimmed runs of every method, bad input, exact resume after a kill, and the run-folder rules."
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from conftest import ROOT, BIN, run
from deepcluster_nb.models import available_methods
from deepcluster_nb.train import Trainer, TrainConfig, NonFiniteLoss, ConfigError, Collapsed, parameters_cell
from deepcluster_nb.runs import RunFolderExists, UnsafeCheckpoint, load_checkpoint

QUICK = dict(subset=256, batch_size=64, eval_every=0, progress=False)

def papermill(out_nb, *params, check=True, timeout=600):
    args = [str(BIN / "papermill"), "nbs/train.ipynb", str(out_nb), "-k", "python3"]
    for k, v in params: args += ["-p", k, str(v)]
    if check: return run(args, timeout=timeout)
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

@pytest.mark.parametrize("method", available_methods())
def test_trimmed_papermill_run(method, tmp_path):
    "`papermill nbs/train.ipynb out.ipynb -p method <m>`, trimmed to a few steps, writes every artefact of a run."
    out = tmp_path / "run"
    papermill(tmp_path / "out.ipynb", ("method", method), ("max_steps", 3), ("eval_every", 0), ("out_dir", out),
              ("progress", "false"), ("compile", "false"), ("resume", "false"))
    for f in ("config.json", "history.json", "history.csv", "checkpoint.pt", "metrics.json", "confusion.png", "training_curves.png"):
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == method and m["steps"] == 3 and 0 <= m["acc"] <= 1 and -1 <= m["ari"] <= 1
    assert sum(m["cluster_sizes"]) == 1797 and isinstance(m["collapsed"], bool)
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["method"] == method and cfg["backbone"] is not None and cfg["batch_size"] is not None
    assert (cfg["resume"], cfg["compile"], cfg["progress"]) == (False, False, False)   # "false" is false
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert f"{method} on digits after" in text and "ACC" in text

@pytest.mark.parametrize("params,message", [
    ((("method", "kmeans"),), "Unknown method 'kmeans'. Valid: "),
    ((("dataset", "cifar11"),), "Unknown dataset 'cifar11'. Valid names: digits"),
    ((("backbone", "vgg16"),), "Unknown backbone 'vgg16'. Valid: small_cnn"),
    ((("batch_size", 4),), "batch_size (4) must be at least n_clusters (10)"),
    ((("epoch", 1),), "'epoch' (did you mean 'epochs'?)"),                  # papermill itself only warns
    ((("hparams", "{tau_i: 0.5"),), '-y "hparams: {tau_i: 0.5}"'),
    ((("lr", "1e6"),), "lr must be in (0, 10]"),
    ((("image_size", 1),), "4 to 1024 pixels"),
    ((("resume", "maybe"),), "resume must be true or false"),
])
def test_papermill_bad_input_says_what_is_valid(params, message, tmp_path):
    r = papermill(tmp_path / "o.ipynb", *params, ("out_dir", tmp_path / "run"), check=False, timeout=300)
    assert r.returncode != 0 and message in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()             # stopped before training

def test_help_notebook_types_every_parameter():
    r = run([str(BIN / "papermill"), "nbs/train.ipynb", "--help-notebook"])
    lines = [l for l in r.stdout.splitlines() if l.startswith("  ") and ": " in l and "(default" in l]
    names = [l.split(":")[0].strip() for l in lines]
    assert "Unknown type" not in r.stdout and {"amp", "momentum", "overwrite", "stop_on_collapse"} <= set(names)
    assert names == [l.split(":")[0] for l in parameters_cell().splitlines()]

def test_papermill_yaml_hparams_and_bool_strings(tmp_path):
    out = tmp_path / "run"
    papermill(tmp_path / "o.ipynb", ("hparams", "{tau_i: 0.7}"), ("max_steps", 2), ("eval_every", 0), ("out_dir", out),
              ("progress", "No"))
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["hparams"]["tau_i"] == 0.7 and cfg["progress"] is False

def test_run_folder_is_never_overwritten_silently(tmp_path):
    "A second run into the same folder is refused (papermill too, with resume 'false'); overwrite=True replaces it."
    d = tmp_path / "run"
    Trainer(TrainConfig(out_dir=str(d), epochs=1, **QUICK)).fit()
    before = (d / "checkpoint.pt").read_bytes()
    with pytest.raises(RunFolderExists, match="resume=True to continue it, overwrite=True to replace it"):
        Trainer(TrainConfig(out_dir=str(d), epochs=1, **QUICK)).fit()
    r = papermill(tmp_path / "o.ipynb", ("out_dir", d), ("resume", "false"), ("max_steps", 2), check=False)
    assert r.returncode != 0 and "already holds a run" in r.stdout + r.stderr
    assert (d / "checkpoint.pt").read_bytes() == before
    Trainer(TrainConfig(out_dir=str(d), epochs=1, seed=1, overwrite=True, **QUICK)).fit()
    assert json.loads((d / "config.json").read_text())["config"]["seed"] == 1

@pytest.mark.parametrize("change,message", [
    (dict(lr=1e-2), "lr 0.002 → 0.01"), (dict(batch_size=32), "batch_size 64 → 32"), (dict(seed=4), "seed 0 → 4"),
    (dict(backbone="resnet18"), "backbone 'small_cnn' → 'resnet18'"), (dict(n_clusters=12), "n_clusters 10 → 12"),
])
def test_resume_refuses_another_configuration(change, message, tmp_path):
    d = str(tmp_path / "run")
    Trainer(TrainConfig(out_dir=d, epochs=1, **QUICK)).fit()
    with pytest.raises(ConfigError, match=re.escape(message)):
        Trainer(TrainConfig(**{**dict(out_dir=d, epochs=2, resume=True, **QUICK), **change})).fit()

def test_resume_without_checkpoint_says_so(tmp_path):
    from deepcluster_nb.runs import RunFolderError
    with pytest.raises(RunFolderError, match="typo does not exist: there is nothing to resume"):
        Trainer(TrainConfig(out_dir=str(tmp_path / "typo"), epochs=1, resume=True, **QUICK))
    assert not (tmp_path / "typo").exists()

def test_damaged_checkpoint_falls_back_and_stale_tmp_is_removed(tmp_path):
    d = tmp_path / "run"
    Trainer(TrainConfig(out_dir=str(d), epochs=2, **QUICK)).fit()
    raw = (d / "checkpoint.pt").read_bytes()
    (d / "checkpoint.pt").write_bytes(raw[: len(raw) // 2])               # truncated
    (d / "checkpoint.pt.tmp").write_bytes(b"partial write")
    with pytest.warns(UserWarning, match="trying the previous checkpoint"):
        m = Trainer(TrainConfig(out_dir=str(d), epochs=3, resume=True, **QUICK)).fit()
    assert m["epochs"] == 3 and not (d / "checkpoint.pt.tmp").exists()
    hist = json.loads((d / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]                         # epoch 2 replayed from epoch 1's checkpoint

def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    class Payload:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    d = tmp_path / "run"; d.mkdir()
    torch.save({"method": "cc", "dataset": "digits", "model": Payload()}, d / "checkpoint.pt")
    with pytest.raises(UnsafeCheckpoint, match="refusing to load"):
        load_checkpoint(d / "checkpoint.pt")
    from deepcluster_nb.runs import RunFolderError, update_marker
    with pytest.raises(RunFolderError, match="no run of this package wrote"):   # no marker: not ours, never read
        Trainer(TrainConfig(out_dir=str(d), resume=True, epochs=1, **QUICK))
    update_marker(d, ["checkpoint.pt"], status="finished")                   # a marked folder: read safely, refused
    with pytest.raises(UnsafeCheckpoint):
        Trainer(TrainConfig(out_dir=str(d), resume=True, epochs=1, **QUICK)).fit()
    from deepcluster_nb.report import load_run
    with pytest.raises(UnsafeCheckpoint):
        load_run(d)
    assert not marker.exists()

def test_checkpoints_load_with_weights_only(tmp_path):
    for method in available_methods():
        d = tmp_path / method
        Trainer(TrainConfig(method=method, out_dir=str(d), max_steps=2, **QUICK)).fit()
        ck = torch.load(d / "checkpoint.pt", weights_only=True)
        assert ck["method"] == method and ck["global_step"] == 2

@pytest.mark.parametrize("kw,message", [
    (dict(weight_decay=-1), "weight_decay must be at least 0"), (dict(subset=-5), "subset must be 0 or more"),
    (dict(max_steps=-1), "max_steps must be 0 or more"), (dict(hparams={"tau_c": 0}), "temperature and must be positive"),
    (dict(method="cadec", subset=8, batch_size=4), "smaller than n_clusters"), (dict(image_size=2000), "4 to 1024 pixels"), (dict(momentum=1.5), "momentum must be in [0, 1)"),
    (dict(image_size=1000, backbone="resnet50", stem="small", batch_size=256), "for a training step"),
])
def test_numeric_fields_are_checked_before_training(kw, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Trainer(TrainConfig(out_dir=str(tmp_path / "r"), **{**QUICK, **kw}))

def test_collapse_is_flagged_and_can_stop_the_run(tmp_path):
    "Identical images can only fall into one cluster: the run says so (metrics.json, history), and stop_on_collapse stops it."
    x = np.full((256, 8, 8), 128, np.uint8); y = np.arange(256) % 4
    np.savez(tmp_path / "same.npz", x=x, y=y)
    cfg = dict(dataset=str(tmp_path / "same.npz"), batch_size=64, progress=False, epochs=2, eval_every=1)
    m = Trainer(TrainConfig(out_dir=str(tmp_path / "a"), **cfg)).fit()
    assert m["collapsed"] and any("100% of the images" in w for w in m["collapse"]) and m["alarms"]
    assert json.loads((tmp_path / "a" / "history.json").read_text())[0]["collapsed"] is True
    with pytest.raises(Collapsed, match="stopped at epoch 1"):
        Trainer(TrainConfig(out_dir=str(tmp_path / "b"), stop_on_collapse=True, **cfg)).fit()
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")[0]["epoch"] == 1

def test_python_api_writes_the_same_artefacts(tmp_path):
    m = Trainer(TrainConfig(out_dir=str(tmp_path), max_steps=2, **QUICK)).fit()
    for f in ("training_curves.png", "confusion.png", "metrics.json", "history.csv", "config.json"):
        assert (tmp_path / f).stat().st_size > 0, f
    from deepcluster_nb.data import data_root
    assert json.loads((tmp_path / "config.json").read_text())["config"]["data_root"] == str(data_root())

def test_missing_dataset_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        Trainer(TrainConfig(dataset="cifar10", data_root=str(tmp_path), out_dir=str(tmp_path / "r")))

def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path):
    base = dict(out_dir=str(tmp_path), progress=False, subset=256, eval_every=0)
    Trainer(TrainConfig(epochs=1, **base)).fit()
    tr = Trainer(TrainConfig(epochs=2, resume=True, **base))
    tr.method.hparams["tau_i"] = 0.0                                      # sabotage the loss after the checks
    with pytest.raises(NonFiniteLoss, match="the checkpoint of epoch 1 is kept"):
        tr.fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")[0]["epoch"] == 1

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
            f"Trainer(TrainConfig(out_dir=sys.argv[1], resume=sys.argv[2] == 'resume', **{RESUME_CFG!r})).fit()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(killed), "start"], cwd=ROOT)
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
    resumed = subprocess.run([sys.executable, "-c", code, str(killed), "resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    whole = Trainer(TrainConfig(out_dir=str(tmp_path / "whole"), **RESUME_CFG)).fit()
    after = json.loads((killed / "metrics.json").read_text())
    assert after["epochs"] == whole["epochs"] == RESUME_CFG["epochs"]
    assert_same_run(after, killed, whole, tmp_path / "whole")

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

def test_cadec_resume_across_its_second_initialisation(tmp_path):
    "CADEC re-fits its centres at init_step; a run resumed before that step re-fits them exactly as the uninterrupted run."
    cfg = dict(method="cadec", dataset="digits", subset=256, batch_size=64, eval_every=0, progress=False, seed=4,
               hparams={"init_step": 6})                      # 4 steps per epoch: the second initialisation in epoch 2
    Trainer(TrainConfig(out_dir=str(tmp_path / "split"), epochs=1, **cfg)).fit()
    resumed = Trainer(TrainConfig(out_dir=str(tmp_path / "split"), epochs=3, resume=True, **cfg)).fit()
    whole = Trainer(TrainConfig(out_dir=str(tmp_path / "whole"), epochs=3, **cfg)).fit()
    assert_same_run(resumed, tmp_path / "split", whole, tmp_path / "whole")
