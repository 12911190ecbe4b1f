# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: the run report
# > Engineering around the course: evaluate any checkpoint — ACC/NMI/ARI of the cluster head and of k-means on the features, the matched confusion matrix, cluster sizes and collapse, t-SNE, galleries, training curves — and set the run beside the numbers its paper reports.

# %%
#| default_exp report

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import os, json, textwrap
from dataclasses import dataclass, asdict, fields
from pathlib import Path
import numpy as np
import torch
from deepcluster_nb.data import ImageData
from deepcluster_nb.metrics import (clustering_scores, cluster_sizes, match_clusters, matched_confusion, collapse_warnings,
                                    COLLAPSE_SHARE, kmeans_labels, sklearn_threads)
from deepcluster_nb.models import get_method, available_methods, predict
from deepcluster_nb.data import PAPER_BENCHMARKS
from deepcluster_nb.train import Trainer, TrainConfig, plot_history, plot_confusion, pick_device
from deepcluster_nb.runs import read_marker, update_marker, write_json, load_checkpoint

# %% [markdown]
# This appendix is tooling around the course, not part of its argument: the method chapters score their runs with
# `score_assignments` of the metrics chapter, and nothing there depends on what follows. A finished training run
# leaves a folder with `checkpoint.pt`, `history.json` and `metrics.json`. That answers "what was the accuracy?", but
# not the questions that come right after it: *which* checkpoint was scored, did the model put everything into a few
# clusters, what do the clusters look like, where does it go wrong, and how far is the number from the one in the
# paper — and is the comparison even fair? Each question gets a function here. They are used in two ways, both of
# which write the figures and `report.json` into the run folder:
#
# ```bash
# papermill nbs/report.ipynb out.ipynb -p run_dir runs/cc_digits_s0     # a notebook with every table and figure
# python -m deepcluster_nb report runs/cc_digits_s0 --device cpu          # the same files, a summary on the terminal
# ```
#
# The shared pieces come from the chapters that own them: the Hungarian matching, k-means and the collapse rule
# from the metrics chapter, `predict` from the models chapter, the trainer to rebuild a run, the checkpoint loader
# from the appendix on run folders, and the papers' numbers from each method's own module. Everything below runs on a run we train here: three epochs of CC on the 8×8 digits.

# %%
import tempfile
import matplotlib.pyplot as plt
from deepcluster_nb.train import TrainConfig, Trainer

# %%
_tmp = tempfile.TemporaryDirectory()
_run_dir = Path(_tmp.name) / "cc_digits"
_fit = Trainer(TrainConfig(epochs=3, out_dir=str(_run_dir), progress=False)).fit()
print({k: round(_fit[k], 3) for k in ("acc", "nmi", "ari")}, sorted(p.name for p in _run_dir.iterdir()))

# %% [markdown]
# ## The papers' numbers
# Each method's module declares its paper (`Paper`, in the models chapter): the citation, the training length the
# paper used, what to keep in mind when comparing, and the numbers it reports. Each paper prints its own table, in
# its own column order and names the datasets its own way; the modules store every number once as a fraction, in
# ACC, NMI, ARI order, under the dataset names of `deepcluster_nb.data`, with the table it came from, the evaluation
# ("head": the argmax of the cluster head; "kmeans": k-means on the learned representation, which CADEC reports
# beside its head) and the protocol (the papers' own splits, "paper", or a held-out test split, "train-test"). The
# report asks the method for them; there is no central table to keep in step.

# %%
#| export
EVALUATIONS = {"head": "cluster head", "kmeans": "k-means on features"}

def paper_results(method:str, # method name, e.g. "cc"
                  dataset:str, # dataset name, e.g. "cifar10"
                  protocol:str|None=None, # only the rows of this evaluation protocol ("paper" or "train-test"; None: all)
                 ) -> list: # one dict per reported evaluation (empty when the paper does not report this pair)
    "The reported ACC/NMI/ARI for `method` on `dataset`, read from the method's `Paper`, with the source table."
    paper = get_method(method).paper
    if paper is None: return []
    return [dict(method=method, **r, epochs=paper.epochs, source=f"{paper.short}, {r['table']}")
            for r in paper.rows(str(dataset), protocol)]

def paper_info(method:str) -> dict|None:
    "The method's paper without its numbers (cite, short, epochs, epochs_from, note); None when it names no paper."
    p = get_method(method).paper
    return None if p is None else {k: getattr(p, k) for k in ("cite", "short", "epochs", "epochs_from", "note")}

# %% [markdown]
# Checks on the numbers of every method that declares its paper: every dataset is a benchmark of ours, every number
# a fraction, and no (dataset, evaluation, protocol) appears twice. The CADEC and TCC papers both reprint CC's CIFAR-10
# row as their baseline (NMI 0.705, ACC 0.790, ARI 0.637 and 70.5, 79.0, 63.7), which checks the transposition
# into ACC, NMI, ARI order on one row against a second source.

# %%
from deepcluster_nb.data import PAPER_BENCHMARKS
from deepcluster_nb.models import available_methods

# %%
for _m in [m for m in available_methods() if get_method(m).paper is not None]:
    _p = get_method(_m).paper
    assert _p.epochs > 0 and _p.cite and _p.short, _m
    _rows = [r for d in PAPER_BENCHMARKS for r in _p.rows(d)]
    test_eq(len(_rows), len(_p.results))                               # no row names a dataset we do not know
    for _r in _rows: assert _r["evaluation"] in EVALUATIONS and all(0 < _r[k] < 1 for k in ("acc", "nmi", "ari")), (_m, _r)
    test_eq(len({(r["dataset"], r["evaluation"], r["protocol"]) for r in _rows}), len(_rows))
_cc10 = paper_results("cc", "cifar10")[0]
test_eq((_cc10["nmi"], _cc10["acc"], _cc10["ari"], _cc10["source"]), (0.705, 0.790, 0.637, "Li et al. 2021 (CC), Table 2"))
test_eq([r["evaluation"] for r in paper_results("cadec", "imagenet10")], ["head", "kmeans"])
test_eq(paper_results("cc", "digits"), []); test_eq(paper_results("cc", "cifar10", "train-test"), [])
test_eq((paper_info("cc")["epochs"], paper_info("cc")["epochs_from"]), (1000, "Sec. 4.1.2"))

# %%
show_doc(paper_results)

# %% [markdown]
# ## The papers' settings, every method on every benchmark
# The numbers above are worth comparing only with runs made the way the papers made theirs. Each method's settings
# table (its module) says how: one table per method, each value with the paper section or official-code line it
# comes from. Here they are side by side, as the trainer resolves them — the same lookup a run does, so this table
# cannot drift from what runs. (A test trains every method on every benchmark for one step with exactly these
# settings, on tiny copies of the benchmarks in their real file formats.)

# %%
#| export
SETTINGS_FIELDS = ("backbone", "stem", "image_size", "batch_size", "optimizer", "lr", "weight_decay", "epochs", "protocol",
                   "unlabeled", "augment")

def settings_matrix(methods=None, # methods (default: every registered one)
                    datasets=PAPER_BENCHMARKS, # dataset keys
                    fields=SETTINGS_FIELDS, # settings to show
                    sources:bool=True, # each cell "value (source)"; False: the value only
                   ) -> list: # one dict per (method, dataset)
    "Every method's settings for every dataset, from the methods' settings tables."
    show = lambda v: getattr(v, "__name__", str(v))
    rows = []
    for m in methods or available_methods():
        for d in datasets:
            src = get_method(m).settings.sourced(d)
            rows.append({"method": m, "dataset": d, **{f: (f"{show(src[f][0])} ({src[f][1]})" if sources else src[f][0])
                                                      if f in src else "" for f in fields}})
    return rows

# %%
import pandas as pd

# %%
_sm = pd.DataFrame(settings_matrix(sources=False)).set_index(["method", "dataset"])
test_eq(_sm.loc[("cc", "cifar10"), "batch_size"], 256); test_eq(_sm.loc[("crlc", "stl10"), "unlabeled"], True)
test_eq(_sm.loc[("dcdc", "tiny_imagenet"), "batch_size"], 300)
_sm.drop(columns="augment")

# %% [markdown]
# With the sources, for one benchmark:

# %%
pd.DataFrame(settings_matrix(datasets=["cifar10"])).set_index("method").drop(columns="dataset").T

# %% [markdown]
# ## The results grid, per method
# The results notebook (`nbs/results.ipynb`) trains every method on the CPU datasets for several seeds and keeps a
# CSV row per run, with the k-means baseline on raw pixels in a second CSV. The method chapters quote their numbers
# from there, through this summary, rather than from a run of their own on one seed.
#
# Which rows count is decided once, here, for the chapters and for the results notebook (which writes the README's
# table) alike. A row counts when it is a run of the grid's methods, datasets and seeds, and when its `run_id` is the
# one the code at hand gives that run: the id ends with a hash of the method's settings for the dataset (the values
# of its settings table, the augmentation recipe's values included), so a row trained under a table that has since
# changed no longer counts. Each new row also records the torch version, the commit checked out when its worker
# started and the settings hash that worker computed (rows of older grids have an empty torch cell, no settings hash
# of their own, and the commit checked out when the row was written); the summary lists the commits of its rows. What
# the summary shows is therefore the committed data: runs recorded at the commits it names, which the code at hand
# only selects.

# %%
#| export
GRID_METHODS = ("cc", "dcdc", "crlc", "tcc", "cadec")   # the results notebook's default methods
GRID_DATASETS = ("digits", "usps", "mnist_test")       # ... its CPU datasets
GRID_SEEDS = {"digits": (0, 1, 2, 3, 4), "usps": (0, 1, 2), "mnist_test": (0, 1, 2)}   # ... and each one's seeds

def settings_hash(method:str, # a registered method
                  dataset:str, # a dataset name (its settings key is looked up)
                 ) -> str: # 8 hex digits
    "A short hash of the method's settings for the dataset: a re-tuned table makes its runs new runs."
    import hashlib
    from deepcluster_nb.train import dataset_key
    from deepcluster_nb.augment import cc_recipe
    key = dataset_key(dataset); table = get_method(method).settings.resolve(key)
    table = {**table, "augment": asdict(table.get("augment", cc_recipe)(key, 0))}   # the recipe's values, not its name
    return hashlib.sha1(json.dumps(table, sort_keys=True, default=lambda o: getattr(o, "__name__", str(o))).encode()).hexdigest()[:8]

def grid_run_id(method:str, dataset:str, seed:int,
                epochs="", # the grid's epoch override for this dataset ("": the settings table's)
                overrides:dict|None=None, # extra training parameters of every run
                settings:str|None=None, # the settings hash, when already computed (None: `settings_hash`)
               ) -> str:
    "The identity of a run of the results grid: method, dataset, seed, epochs, overrides and the settings hash."
    settings = settings or settings_hash(method, dataset)
    return f"{method}|{dataset}|{seed}|{epochs}|{json.dumps(overrides or {}, sort_keys=True)}|{settings}"

def grid_rows(rows, # the results CSV as a DataFrame
              methods=GRID_METHODS, # methods to keep
              datasets=GRID_DATASETS, # datasets to keep
              seeds:dict=GRID_SEEDS, # dataset -> its seeds
              epochs:dict|None=None, # dataset -> the grid's epoch override (none: the settings tables')
              overrides:dict|None=None, # the grid's extra training parameters
             ):
    "The rows that count: runs of these methods, datasets and seeds whose run_id is the one the code at hand gives them."
    epochs, hashes = epochs or {}, {}
    def current(m, d, s):
        if (m, d) not in hashes: hashes[m, d] = settings_hash(m, d)
        return grid_run_id(m, d, s, epochs.get(d, ""), overrides, hashes[m, d])
    keep = [m in set(methods) and d in set(datasets) and int(s) in set(seeds.get(d, ())) and rid == current(m, d, int(s))
            for m, d, s, rid in zip(rows["method"], rows["dataset"], rows["seed"], rows["run_id"])]
    return rows[np.array(keep, dtype=bool)]

# %%
#| export
def _in_order(values) -> str:
    "The distinct non-empty values, in the order they first appear, joined by commas."
    return ", ".join(dict.fromkeys(str(v) for v in values if isinstance(v, str) and v))

def summarise_grid(rows, # rows of the results CSV (already filtered by `grid_rows`)
                   kmeans_acc=None, # dataset -> ACC of k-means on the raw pixels (a Series or dict), or None
                  ):
    "Per (dataset, method): runs, epochs, ACC mean/std/worst/best, NMI and ARI means, collapsed runs, minutes, commits."
    import pandas as pd
    g = rows.groupby(["dataset", "method"], sort=False)
    out = pd.DataFrame({"runs": g.size(), "epochs": g["epochs"].max(), "acc_mean": g["acc"].mean(),
                        "acc_std": g["acc"].std(ddof=1).fillna(0), "acc_worst": g["acc"].min(), "acc_best": g["acc"].max(),
                        "nmi_mean": g["nmi"].mean(), "ari_mean": g["ari"].mean(), "collapsed_runs": g["collapsed"].sum(),
                        "minutes_per_run": g["wall_seconds"].mean() / 60,
                        "commits": g["commit"].agg(_in_order) if "commit" in rows else ""}).reset_index()
    if kmeans_acc is not None: out["kmeans_pixels_acc"] = out["dataset"].map(kmeans_acc)
    return out

def grid_summary(method:str|None=None, # one method, or None for all
                 grid="results/cpu_grid.csv", # the results notebook's CSV (path relative to nbs/, where chapters run)
                 kmeans="results/kmeans_pixels.csv", # its k-means-on-pixels CSV
                 **select, # `grid_rows` arguments (default: the results notebook's methods, datasets and seeds)
                ):
    "The results grid's summary (`summarise_grid`) of the rows that count (`grid_rows`), beside k-means on raw pixels."
    import pandas as pd
    rows = grid_rows(pd.read_csv(grid, dtype={"commit": str, "torch": str}), **select)
    if method: rows = rows[rows["method"] == method]
    km = pd.read_csv(kmeans).groupby("dataset")["acc"].mean() if Path(kmeans).exists() else None
    return summarise_grid(rows, km)

# %%
#| export
def print_grid_summary(summary):
    "One line per row of `grid_summary`: seeds, ACC mean ± std, the worst seed, whether it beats k-means on pixels, commits."
    for r in summary.itertuples():
        km = getattr(r, "kmeans_pixels_acc", float("nan"))
        verdict = "above" if r.acc_worst > km else "not above" if km == km else "no baseline for"
        print(f"{r.method} on {r.dataset}: {r.runs} seeds, ACC {r.acc_mean:.3f} ± {r.acc_std:.3f}, worst seed {r.acc_worst:.3f} "
              f"({verdict} k-means on raw pixels, {km:.3f}); {r.collapsed_runs} collapsed; {r.minutes_per_run:.1f} min per run"
              + (f"; rows from commit{'s' if ',' in r.commits else ''} {r.commits}" if r.commits else ""))

# %% [markdown]
# A check on a CSV made up here: of five rows, one has a seed outside the grid's and one a settings hash that is not
# the current table's; the summary is of the three that count.

# %%
with tempfile.TemporaryDirectory() as _t:
    Path(_t, "g.csv").write_text(
        "run_id,method,dataset,seed,epochs,acc,nmi,ari,collapsed,wall_seconds,commit\n"
        f"{grid_run_id('cc', 'digits', 0)},cc,digits,0,80,0.9,0.8,0.7,False,60,aaaaaaa\n"
        f"{grid_run_id('cc', 'digits', 1)},cc,digits,1,80,0.8,0.7,0.6,False,120,bbbbbbb\n"
        f"{grid_run_id('cc', 'digits', 9)},cc,digits,9,80,0.1,0.1,0.1,True,60,bbbbbbb\n"
        "cc|digits|2||{}|00000000,cc,digits,2,80,0.1,0.1,0.1,True,60,ccccccc\n"
        f"{grid_run_id('tcc', 'digits', 0)},tcc,digits,0,80,0.5,0.4,0.3,True,60,aaaaaaa\n")
    Path(_t, "k.csv").write_text("dataset,seed,acc,nmi,ari\ndigits,0,0.78,0.7,0.6\ndigits,1,0.8,0.7,0.6\n")
    _gs = grid_summary("cc", Path(_t, "g.csv"), Path(_t, "k.csv"))
    test_eq(len(grid_summary(None, Path(_t, "g.csv"), Path(_t, "k.csv"), seeds={"digits": (0, 1, 2, 9)})), 2)   # cc, tcc
test_eq((len(_gs), _gs.loc[0, "runs"], _gs.loc[0, "acc_worst"], _gs.loc[0, "minutes_per_run"]), (1, 2, 0.8, 1.5))
test_close(_gs.loc[0, "kmeans_pixels_acc"], 0.79); test_close(_gs.loc[0, "acc_std"], 0.0707, eps=1e-4)
test_eq(_gs.loc[0, "commits"], "aaaaaaa, bbbbbbb")
test_eq(grid_run_id("cc", "digits", 3, 5, {"max_steps": 2}), f"cc|digits|3|5|{{\"max_steps\": 2}}|{settings_hash('cc', 'digits')}")

# %%
from contextlib import redirect_stdout
import io

# %%
with redirect_stdout(io.StringIO()) as _o: print_grid_summary(_gs)
test_eq(_o.getvalue().strip(), "cc on digits: 2 seeds, ACC 0.850 ± 0.071, worst seed 0.800 (above k-means on raw pixels, 0.790); "
        "0 collapsed; 1.5 min per run; rows from commits aaaaaaa, bbbbbbb")

# %% [markdown]
# ## Loading a run
# A checkpoint stores its configuration (every setting already resolved from the method's table, the data folder
# included), so the trainer can be rebuilt exactly as it was and the weights loaded into it. The evaluation then uses
# `predict` (models chapter) with the run's augmentation: the same resizing and the same normalisation as in training,
# no augmentation. The checkpoint is read with `load_checkpoint` (appendix *Run folders*), PyTorch's safe loader,
# which refuses a file that carries code instead of running it. Two things may be overridden: the device (a run
# trained on a GPU can be inspected on a laptop) and the data folder (by default the one the run recorded; if that
# folder does not exist where the report runs, the default one). Before anything is built we check that the path exists and holds a checkpoint, and — when
# the caller says which method or dataset it expects — that the checkpoint is of that kind, so a mixed-up folder
# fails with a message instead of a shape error deep in `load_state_dict`.

# %%
#| export
def find_checkpoint(run:str|Path, # a run directory holding checkpoint.pt, or a checkpoint file
                   ) -> Path: # the checkpoint file
    "The checkpoint file of a run, with a clear message when the directory or the file is missing."
    if run is None or str(run).strip() == "":
        raise ValueError("no run given: pass a run directory (holding checkpoint.pt) or a checkpoint file")
    p = Path(run).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"run directory or checkpoint {str(p)!r} does not exist (working directory: {Path.cwd()})")
    if p.is_dir():
        if not (p / "checkpoint.pt").exists():
            have = sorted(f.name for f in p.iterdir())
            raise FileNotFoundError(f"{p} holds no checkpoint.pt (it holds: {', '.join(have[:10]) or 'nothing'}); "
                                    "train a run there first, or pass the checkpoint file itself")
        return p / "checkpoint.pt"
    return p

# %%
test_eq(find_checkpoint(_run_dir), _run_dir / "checkpoint.pt")
test_eq(find_checkpoint(_run_dir / "checkpoint.pt"), _run_dir / "checkpoint.pt")
test_fail(lambda: find_checkpoint(_run_dir / "nope"), contains="does not exist")
test_fail(lambda: find_checkpoint(Path(_tmp.name)), contains="holds no checkpoint.pt (it holds: cc_digits)")
test_fail(lambda: find_checkpoint(""), contains="no run given")

# %%
#| export
CHECKPOINT_KEYS = ("method", "dataset", "config", "epoch", "model", "history", "norm")

class RunMismatch(ValueError):
    "The checkpoint is not a training checkpoint, or not of the method or dataset the caller expects."

class EvalTrainer(Trainer):
    "A trainer rebuilt to evaluate a run: it takes no training step and writes nothing, so neither the training-memory check nor the run-folder rules apply."
    checks_run_folder = False
    def memory_estimate(self): return None

@dataclass
class Run:
    "A trained run ready for evaluation: the rebuilt trainer holding the checkpoint's weights, and where they came from."
    trainer: Trainer   # rebuilt from the checkpoint's configuration, weights loaded
    checkpoint: Path   # the checkpoint file
    epoch: int         # epochs trained
    finished: bool     # whether training reached its last epoch
    history: list      # the per-epoch records
    @property
    def run_dir(self) -> Path: return self.checkpoint.parent
    @property
    def cfg(self) -> TrainConfig: return self.trainer.cfg
    @property
    def eval_data(self) -> ImageData: return self.trainer.eval_data

def load_run(run:str|Path, # a run directory holding checkpoint.pt, or a checkpoint file
             device:str="cpu", # where to evaluate: "cpu", "cuda" or "auto"
             data_root:str|None=None, # data folder (default: the one the run recorded)
             method:str|None=None, # expected method: error if the checkpoint is of another one
             dataset:str|None=None, # expected dataset: error if the checkpoint is of another one
             data=None, # an already loaded `ClusterData` (skips loading the dataset)
            ) -> Run:
    "Rebuild a run's trainer from its checkpoint (no augmentation is applied in evaluation) and load the weights."
    ck, ck_path = load_checkpoint(find_checkpoint(run))
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing: raise RunMismatch(f"{ck_path} is not a training checkpoint of this package (missing {missing})")
    for what, want in (("method", method), ("dataset", dataset)):
        if want and str(ck[what]) != str(want):
            raise RunMismatch(f"{ck_path} is a checkpoint of {what} {ck[what]!r}, but {what} {want!r} was requested")
    known = {f.name for f in fields(TrainConfig)}
    cfg = {k: v for k, v in ck["config"].items() if k in known}
    root = data_root or cfg.get("data_root")
    if not data_root and root and not Path(root).exists():
        print(f"the run's data folder {root} does not exist here: using the default data folder"); root = None
    cfg.update(progress=False, resume=False, overwrite=False, device=device, data_root=str(root) if root else None)
    tr = EvalTrainer(TrainConfig.parse(cfg), data)
    tr.load_state(ck)
    for k in ("mean", "std"): getattr(tr.aug, k).copy_(torch.as_tensor(ck["norm"][k]).view_as(getattr(tr.aug, k)))
    if tr.device.type != "cuda": tr.amp = False
    print(f"loaded {ck_path.resolve()}: {ck['method']} on {ck['dataset']}, epoch {ck['epoch']}"
          f"{'' if ck.get('finished') else ' (training unfinished)'}, evaluating on {tr.device}")
    return Run(tr, ck_path.resolve(), ck["epoch"], bool(ck.get("finished")), ck["history"])

# %%
show_doc(load_run)

# %%
from deepcluster_nb.data import data_root as _default_root

# %%
_run = load_run(_run_dir)
test_eq((_run.epoch, _run.finished, _run.cfg.method, len(_run.history)), (3, True, "cc", 3))
test_eq(_run.run_dir, _run_dir.resolve())
test_fail(lambda: load_run(_run_dir, method="dcdc"), contains="checkpoint of method 'cc', but method 'dcdc' was requested")
test_fail(lambda: load_run(_run_dir, dataset="cifar10"), contains="dataset 'digits', but dataset 'cifar10'")
torch.save({"model": {}}, Path(_tmp.name) / "weights.pt")
test_fail(lambda: load_run(Path(_tmp.name) / "weights.pt"), contains="not a training checkpoint")
test_eq(_run.cfg.data_root, json.loads((_run_dir / "config.json").read_text())["config"]["data_root"])   # the recorded folder
_ck, _ = load_checkpoint(_run_dir / "checkpoint.pt")
_ck["config"]["data_root"] = "/no/such/folder"; (Path(_tmp.name) / "moved").mkdir()
torch.save(_ck, Path(_tmp.name) / "moved" / "checkpoint.pt")
test_eq(load_run(Path(_tmp.name) / "moved").cfg.data_root, str(_default_root()))   # a run copied from another machine

# %% [markdown]
# ## Scoring the run two ways
# The cluster head's argmax is what the method predicts. The backbone's features can also be clustered with
# k-means, which is how CADEC reports its "representation" row and tells us whether a weak head sits on good features.
# The metrics chapter's `kmeans_labels` L2-normalises the features first (the contrastive losses compare directions,
# not lengths, and k-means on raw features mostly follows the norms) and caps scikit-learn's threads while it runs
# (`sklearn_threads`: PyTorch and scikit-learn each bring an OpenMP runtime, and on a machine with few cores the two
# thread pools compete). CADEC clusters the output of its instance head; here we use the backbone features that
# every method returns.

# %%
#| export
def run_outputs(run:Run, # a loaded run
                kmeans:bool=True, # also cluster the features with k-means
                seed:int=0, # k-means seed
                batch_size:int=512, # images per forward pass
               ) -> dict: # probs, features, y, pred, confidence, kmeans (labels or None)
    "Everything the report needs from the model, on the evaluation split, without augmentation."
    tr = run.trainer
    out = predict(tr.method, run.eval_data, tr.aug, batch_size, tr.device, tr.amp)
    y = run.eval_data.y
    if (y < 0).any(): raise ValueError("the evaluation split has unlabelled images (y = -1): ACC/NMI/ARI need labels")
    out.update(y=y, pred=out["probs"].argmax(1), confidence=out["probs"].max(1))
    out["kmeans"] = kmeans_labels(out["features"], tr.cfg.n_clusters, seed) if kmeans else None
    return out

def clustering_metrics(outs:dict, # from `run_outputs`
                      ) -> dict: # {"head": {acc, nmi, ari}, "kmeans": {...}}
    "ACC/NMI/ARI of the cluster head's argmax and, when computed, of k-means on the features."
    m = {"head": clustering_scores(outs["y"], outs["pred"])}
    if outs.get("kmeans") is not None: m["kmeans"] = clustering_scores(outs["y"], outs["kmeans"])
    return m

# %% [markdown]
# The head's scores must be exactly those the trainer wrote to `metrics.json` at the end of training: same weights,
# same images, same preprocessing. That is the check that the run was rebuilt faithfully.

# %%
_outs = run_outputs(_run)
_met = clustering_metrics(_outs)
_saved = json.loads((_run_dir / "metrics.json").read_text())
for _k in ("acc", "nmi", "ari"): test_close(_met["head"][_k], _saved[_k], eps=1e-6)
test_eq(_outs["features"].shape[0], 1797); test_eq(set(_met), {"head", "kmeans"})
test_close(_outs["confidence"], _outs["probs"][np.arange(1797), _outs["pred"]])
print({e: {k: round(v, 3) for k, v in m.items()} for e, m in _met.items()})

# %% [markdown]
# Is normalising first the better choice? On this run, the two variants of k-means on the same features:

# %%
for _l2 in (False, True):
    print(f"l2={_l2}:", {k: round(v, 3) for k, v in clustering_scores(_outs["y"], kmeans_labels(_outs["features"], 10, l2=_l2)).items()})

# %% [markdown]
# ## Matching clusters to classes, and collapse
# Every figure below lines clusters up with classes the way ACC does: the one-to-one Hungarian matching of the metrics
# chapter, `match_clusters`, which returns the clusters in matched order (the column order of `matched_confusion`)
# and each cluster's matched class, so sizes, colours and galleries agree with the confusion matrix and with ACC.
# With more clusters than classes some clusters stay unmatched (class −1) and count as errors.

# %%
_ord, _cls = match_clusters(_outs["y"], _outs["pred"], 10)
_cm = np.zeros((10, 10), dtype=np.int64); np.add.at(_cm, (_outs["y"], _outs["pred"]), 1)
test_eq(matched_confusion(_outs["y"], _outs["pred"], 10), _cm[:, _ord])
test_close((_cls[_outs["pred"]] == _outs["y"]).mean(), _met["head"]["acc"])

# %% [markdown]
# The failure every clustering loss guards against is collapse: most images in a few clusters, the rest empty. The
# report shouts about it rather than leave it to be read off a bar chart, with the trainer's rule
# (`collapse_warnings`): one cluster holding more than `COLLAPSE_SHARE` (half) of the images, or more than that share
# of the clusters empty.

# %%
test_eq(COLLAPSE_SHARE, 0.5)
test_eq(collapse_warnings([60, 20, 20]), ["cluster 0 holds 60% of the images (over 50%)"])
print("this run:", collapse_warnings(cluster_sizes(_outs["pred"], 10)) or "no collapse")

# %% [markdown]
# ## Figures
# Each figure function returns a Matplotlib figure; `save_figure` writes it as a PNG and closes it.
#
# **Cluster sizes.** A bar per cluster in matched order, beside the size of the class it was matched to, and the
# uniform size $N/K$ as a dashed line. A healthy run has blue bars close to the grey ones; collapse shows as a few
# tall bars and missing ones, and the title turns red with the warning.

# %%
#| export
def save_figure(fig, # a Matplotlib figure
                path, # the PNG file to write
                dpi:int=110, # resolution
               ) -> Path:
    "Write `fig` as a PNG (tight bounding box) and close it."
    import matplotlib.pyplot as plt
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight"); plt.close(fig)
    return path

def _short(s, n:int=16) -> str: s = str(s); return s if len(s) <= n else s[:n - 1] + "…"

def plot_cluster_sizes(y_true, # (N,) class labels
                       y_pred, # (N,) cluster indices
                       n_clusters:int, # K
                       classes:list, # class names
                       title:str="", # figure title
                      ):
    "Bars of cluster sizes (matched order) beside their matched classes' sizes, with a collapse warning in the title."
    import matplotlib.pyplot as plt
    order, cls = match_clusters(y_true, y_pred, n_clusters)
    sizes, csz = cluster_sizes(y_pred, len(order)), np.bincount(y_true, minlength=len(classes))
    x = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(min(14, 4.5 + 0.42 * len(order)), 4.2))
    ax.bar(x - 0.2, sizes[order], 0.4, color="tab:blue", label="cluster")
    ax.bar(x + 0.2, [csz[cls[k]] if cls[k] >= 0 else 0 for k in order], 0.4, color="tab:gray", label="its matched class")
    ax.axhline(len(y_pred) / len(order), ls="--", lw=1, color="k", label="uniform N / K")
    if len(order) <= 40:
        names = [_short(classes[cls[k]]) if cls[k] >= 0 else "–" for k in order]
        long = max(map(len, names)) > 3
        ax.set_xticks(x, [f"{k} → {n}" if long else f"{k}\n{n}" for k, n in zip(order, names)], fontsize=8,
                      rotation=45 if long else 0, ha="right" if long else "center")
    ax.set_xlabel("cluster (matched order) and its matched class"); ax.set_ylabel("images")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    warn = collapse_warnings(sizes)
    head = title or "cluster sizes vs. true class sizes"
    if warn: ax.set_title(head + "\n" + textwrap.fill("COLLAPSE: " + "; ".join(warn), 90), color="firebrick", fontsize=10)
    else: ax.set_title(head)
    fig.tight_layout(); return fig

# %%
_f = plot_cluster_sizes(_outs["y"], _outs["pred"], 10, _run.eval_data.classes, "3 epochs of CC on digits")
test_eq(len(_f.axes[0].patches), 20); test_eq(_f.axes[0].title.get_color(), "black")
_fc = plot_cluster_sizes(np.arange(100) % 4, np.r_[np.zeros(70, int), np.ones(30, int)], 4, list("abcd"))
assert "COLLAPSE" in _fc.axes[0].get_title() and "cluster 0 holds 70% of the images" in _fc.axes[0].get_title()
plt.close(_fc)

# %% [markdown]
# **t-SNE.** A two-dimensional map of the features of a random sample (t-SNE's cost grows faster than linearly, so
# the sample is bounded), drawn twice: coloured by predicted cluster and by true class. A cluster gets the colour of
# the class it is matched to, so a perfect clustering gives two identical pictures and each disagreement is a spot
# of the wrong colour. The features are L2-normalised as for k-means, and reduced to 50 dimensions by PCA before
# t-SNE, the usual way to make its neighbour search cheaper and less noisy.

# %%
#| export
def tsne_embedding(features:np.ndarray, # (N, D) features
                   n_samples:int=2000, # at most this many images, drawn at random
                   seed:int=0, # seed of the sample and of t-SNE
                  ) -> tuple: # (indices of the sampled images, (n, 2) coordinates)
    "t-SNE (scikit-learn) of the L2-normalised features of a bounded random sample."
    from sklearn.manifold import TSNE
    from sklearn.decomposition import PCA
    x = np.asarray(features, dtype=np.float32)
    if n_samples < 5: raise ValueError(f"t-SNE needs at least 5 samples, got n_samples={n_samples}")
    idx = np.sort(np.random.default_rng(seed).choice(len(x), min(n_samples, len(x)), replace=False))
    x = x[idx] / np.linalg.norm(x[idx], axis=1, keepdims=True).clip(1e-12)
    with sklearn_threads():
        if x.shape[1] > 50 and len(x) > 50: x = PCA(50, random_state=seed).fit_transform(x)
        emb = TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", learning_rate="auto",
                   random_state=seed).fit_transform(x)
    return idx, emb

# %% [markdown]
# On four well-separated blobs, every point's nearest neighbour on the map should come from its own blob:

# %%
from sklearn.datasets import make_blobs

# %%
_xb, _yb = make_blobs(300, n_features=16, centers=4, cluster_std=0.5, random_state=0)
_xb = _xb + 20 * np.eye(16)[_yb]   # four well-separated directions
_ib, _eb = tsne_embedding(_xb, 200)
test_eq(len(_ib), 200); test_eq(_eb.shape, (200, 2)); test_eq(len(set(_ib.tolist())), 200)
_d = ((_eb[:, None] - _eb[None]) ** 2).sum(-1); np.fill_diagonal(_d, np.inf)
test_eq((_yb[_ib][_d.argmin(1)] == _yb[_ib]).mean(), 1.0)
test_eq(tsne_embedding(_xb, 10_000)[0], np.arange(300))   # the sample never exceeds the data
test_fail(lambda: tsne_embedding(_xb, 3), contains="at least 5")

# %%
#| export
def _palette(n:int) -> np.ndarray:
    import seaborn as sns
    return np.array(sns.color_palette("tab10" if n <= 10 else "tab20" if n <= 20 else "husl", n))

def cluster_colours(y_true, # (N,) class labels
                    y_pred, # (N,) cluster indices
                    n_clusters:int, # K
                    n_classes:int, # C
                   ) -> np.ndarray: # (K,) colour slot per cluster
    "Colour slot of each cluster: its matched class's slot, or a fresh slot after the classes when unmatched."
    _, cls = match_clusters(y_true, y_pred, n_clusters)
    slot, extra = cls.copy(), n_classes
    for k in np.flatnonzero(cls < 0): slot[k], extra = extra, extra + 1
    return slot

def plot_tsne(emb:np.ndarray, # (n, 2) t-SNE coordinates
              y_pred, # (n,) cluster of each point
              y_true, # (n,) class of each point
              classes:list, # class names
              n_clusters:int, # K
              title:str="", # figure title
             ):
    "The t-SNE map twice: coloured by predicted cluster (in its matched class's colour) and by true class."
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    slot = cluster_colours(y_true, y_pred, n_clusters, len(classes))
    pal = _palette(max(len(classes), int(slot.max()) + 1))
    order, cls = match_clusters(y_true, y_pred, n_clusters)
    fig, axs = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, col, what, keys, names in [
        (axs[0], slot[y_pred], "predicted cluster", [slot[k] for k in order],
         [f"{k} → {_short(classes[cls[k]]) if cls[k] >= 0 else 'unmatched'}" for k in order]),
        (axs[1], np.asarray(y_true), "true class", range(len(classes)), [_short(c) for c in classes])]:
        ax.scatter(emb[:, 0], emb[:, 1], c=pal[col], s=7, alpha=0.8, linewidths=0)
        ax.set_title(f"coloured by {what}"); ax.set_xlabel("t-SNE 1"); ax.set_ylabel("t-SNE 2")
        ax.set_xticks([]); ax.set_yticks([])
        if len(names) <= 20:
            ax.legend([Line2D([], [], ls="", marker="o", color=pal[s]) for s in keys], names, fontsize=7, title=what,
                      title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if title: fig.suptitle(title)
    fig.tight_layout(); return fig

# %%
test_eq(cluster_colours([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 3], 4, 3).tolist(), [1, 2, 0, 3])
_it, _et = tsne_embedding(_outs["features"], 600)
_f = plot_tsne(_et, _outs["pred"][_it], _outs["y"][_it], _run.eval_data.classes, 10, "t-SNE of 600 digits, CC after 3 epochs")
test_eq(len(_f.axes), 2); test_eq(len(_f.axes[0].get_legend().get_texts()), 10)

# %% [markdown]
# **Galleries.** The most useful look at a clustering is at its images. For each cluster (in matched order) we show
# the images it is most confident about (the highest $\max_k p(k\mid x)$), and separately its most confident
# *mistakes*: images whose true class is not the class the cluster was matched to. Confident mistakes are where the
# model learned a cue other than the class — stroke thickness, a background, a pose.

# %%
#| export
def gallery_indices(probs:np.ndarray, # (N, K) soft assignments
                    y_true, # (N,) class labels
                    n_per_cluster:int=8, # images per cluster
                    mistakes:bool=False, # only images whose class differs from the cluster's matched class
                    max_clusters:int=20, # clusters kept (the first ones in matched order)
                   ) -> dict: # cluster -> indices, most confident first
    "For each cluster: its most confident images, or its most confident mistakes after Hungarian matching."
    y_true, pred, conf = np.asarray(y_true), probs.argmax(1), probs.max(1)
    order, cls = match_clusters(y_true, pred, probs.shape[1])
    out = {}
    for k in order[:max_clusters]:
        idx = np.flatnonzero((pred == k) & ((y_true != cls[k]) if mistakes else True))
        out[int(k)] = idx[np.argsort(-conf[idx], kind="stable")][:n_per_cluster]
    return out

# %%
_p = np.array([[.9, .1], [.6, .4], [.8, .2], [.3, .7], [.1, .9], [.45, .55]])
_y = np.array([0, 0, 1, 1, 1, 0])
test_eq({k: v.tolist() for k, v in gallery_indices(_p, _y, 2).items()}, {0: [0, 2], 1: [4, 3]})
test_eq({k: v.tolist() for k, v in gallery_indices(_p, _y, mistakes=True).items()}, {0: [2], 1: [5]})
_g = gallery_indices(_outs["probs"], _outs["y"], 5, mistakes=True)
for _k, _ix in _g.items():
    assert (_outs["pred"][_ix] == _k).all() and (_outs["y"][_ix] != _cls[_k]).all()
    assert (np.diff(_outs["confidence"][_ix]) <= 0).all()

# %%
#| export
def _as_image(x:torch.Tensor) -> np.ndarray:
    x = x.cpu().numpy()
    return x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)

def plot_gallery(x:torch.Tensor, # (N, C, H, W) uint8 images
                 picks:dict, # row key -> image indices (a row per key)
                 row_labels:dict, # row key -> label on the left
                 captions:dict|None=None, # row key -> one caption per image (optional)
                 title:str="", # figure title
                ):
    "A grid of images, one labelled row per entry of `picks`."
    import matplotlib.pyplot as plt
    rows, cols = len(picks), max([len(v) for v in picks.values()] + [1])
    fig, axs = plt.subplots(rows, cols, figsize=(2.4 + 1.0 * cols, 0.6 + 1.15 * rows), squeeze=False)
    for r, (key, idx) in enumerate(picks.items()):
        for c, ax in enumerate(axs[r]):
            ax.set_xticks([]); ax.set_yticks([]); [s.set_visible(False) for s in ax.spines.values()]
            if c < len(idx):
                ax.imshow(_as_image(x[idx[c]]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                if captions: ax.set_title(captions[key][c], fontsize=7, pad=2)
            elif c == 0: ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=8, color="gray", transform=ax.transAxes)
        axs[r, 0].set_ylabel(row_labels[key], rotation=0, ha="right", va="center", fontsize=8)
    if title: fig.suptitle(title, fontsize=11)
    fig.tight_layout(); return fig

def cluster_gallery(data:ImageData, # the evaluation images
                    probs:np.ndarray, # (N, K) soft assignments
                    n_per_cluster:int=8, # images per cluster
                    mistakes:bool=False, # show the most confident mistakes instead
                    max_clusters:int=20, # clusters shown
                    title:str="", # figure title (a default says what is shown)
                   ):
    "Most confident images (or mistakes) of each cluster, a row per cluster labelled 'cluster → matched class'."
    y, pred = data.y, probs.argmax(1)
    picks = gallery_indices(probs, y, n_per_cluster, mistakes, max_clusters)
    _, cls = match_clusters(y, pred, probs.shape[1])
    sizes, wrong = cluster_sizes(pred, probs.shape[1]), lambda k: int(((pred == k) & (y != cls[k])).sum())
    labels = {k: f"cluster {k} → {_short(data.classes[cls[k]], 12) if cls[k] >= 0 else 'unmatched'}\n"
                 f"({sizes[k]} image{'' if sizes[k] == 1 else 's'}{f', {wrong(k)} wrong' if mistakes else ''})" for k in picks}
    caps = {k: [f"{_short(data.classes[y[i]], 9)} ({probs[i].max():.2f})" if mistakes else f"{probs[i].max():.2f}" for i in v]
            for k, v in picks.items()}
    shown = f" ({len(picks)} of {probs.shape[1]} clusters)" if len(picks) < probs.shape[1] else ""
    title = title or (f"most confident mistakes per cluster{shown}: true class (confidence)" if mistakes
                      else f"most confident images per cluster{shown}: confidence")
    return plot_gallery(data.x, picks, labels, caps, title)

# %%
_f = cluster_gallery(_run.eval_data, _outs["probs"], 6)
test_eq(len(_f.axes), 60)

# %%
cluster_gallery(_run.eval_data, _outs["probs"], 6, mistakes=True);

# %% [markdown]
# The remaining two figures come from the trainer chapter unchanged: `plot_confusion` (the Hungarian-matched confusion
# matrix as a heatmap, class names on the rows) and `plot_history` (losses per epoch, ACC/NMI/ARI per evaluation).

# %%
plot_confusion(_outs["y"], _outs["pred"], _run.eval_data.classes, 10, "CC on digits after 3 epochs: matched confusion");

# %% [markdown]
# ## Beside the paper
# "Why is my accuracy lower than the paper's?" is most often answered by the epochs column: the papers train for 200
# to 2,000 epochs, and a run of a few epochs shows whether the code runs, not what the method reaches. So the
# comparison table writes the run's epochs as a fraction of the paper's and says "not a reproduction" when it is
# short. It compares like with like: a run evaluated with the train-test protocol (trained on the training split,
# scored on the held-out test split) is set beside the paper's train-test rows only, and when the paper reports
# none the note says so instead of showing numbers measured another way. A training subset is flagged too.

# %%
#| export
def comparison_rows(metrics:dict, # {"head": {acc, nmi, ari}, "kmeans": {...}} of the run
                    method:str, # the run's method
                    dataset:str, # the run's dataset
                    epochs:int, # epochs the run trained
                    protocol:str="paper", # the run's evaluation protocol
                    subset:int=0, # the run's training subset size (0: all)
                   ) -> list: # rows: source, evaluation, protocol, acc, nmi, ari, epochs, note
    "The run's scores beside the paper's for the same method, dataset and protocol, with the run's share of the paper's epochs."
    paper, name = get_method(method).paper, Path(str(dataset)).stem
    rows, pe, notes = paper_results(method, dataset, protocol), paper.epochs if paper else None, []
    if not rows:
        other = sorted({r["protocol"] for r in paper_results(method, dataset)})
        notes.append(f"the paper reports {method} on {name} only with the {' and '.join(map(repr, other))} protocol, "
                     f"not {protocol!r}: no row to compare with" if other else f"the paper does not report {method} on {name}")
    elif epochs < pe: notes.append(f"short run ({epochs} of the paper's {pe} epochs): not a reproduction")
    if subset: notes.append(f"trained on a subset of {subset} images")
    mark = f"{epochs} of {pe} ({epochs / pe:.1%})" if rows else str(epochs)
    run = [dict(source="this run", evaluation=EVALUATIONS[e], protocol=protocol, **{k: m[k] for k in ("acc", "nmi", "ari")},
                epochs=mark, note="; ".join(notes)) for e, m in metrics.items()]
    return run + [dict(source=p["source"], evaluation=EVALUATIONS[p["evaluation"]], protocol=p["protocol"], acc=p["acc"],
                       nmi=p["nmi"], ari=p["ari"], epochs=str(pe), note="") for p in rows]

def markdown_table(rows:list, # dicts with the same keys
                   cols:list|None=None, # columns to show (default: all keys of the first row)
                   digits:int=3, # decimals of floats
                  ) -> str: # a Markdown table
    "Rows of dicts as a Markdown table."
    cols = cols or (list(rows[0]) if rows else [])
    fmt = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows])

# %%
_rows = comparison_rows(_met, "cc", "cifar10", 3)
test_eq([r["source"] for r in _rows], ["this run", "this run", "Li et al. 2021 (CC), Table 2"])
test_eq(_rows[0]["epochs"], "3 of 1000 (0.3%)"); assert "not a reproduction" in _rows[0]["note"]
assert "not a reproduction" not in comparison_rows(_met, "cc", "cifar10", 1000)[0]["note"]
test_eq(len(comparison_rows(_met, "cadec", "imagenet10", 5)), 4)
assert "does not report" in comparison_rows(_met, "cc", "digits", 3)[0]["note"]
test_eq(len(comparison_rows(_met, "cc", "cifar10", 3, "train-test")), 2)    # CC reports no train-test numbers
assert "only with the 'paper' protocol, not 'train-test'" in comparison_rows(_met, "cc", "cifar10", 3, "train-test")[0]["note"]
test_eq(markdown_table([dict(a=1.23456, b="x")]), "| a | b |\n|---|---|\n| 1.235 | x |")

# %% [markdown]
# A paper that reports both protocols — here a made-up method registered for the check — is compared row for row:

# %%
from deepcluster_nb.models import ClusterMethod, Paper, register_method

# %%
@register_method
class _TwoProtocols(ClusterMethod):
    name = "_two_protocols"
    paper = Paper("A. Author: A Method (2021)", "Author 2021", 100, "Sec. 4",
                  results=(("cifar10", "head", 0.8, 0.7, 0.6, "Table 2"), ("cifar10", "head", 0.7, 0.6, 0.5, "Table 5", "train-test")))
test_eq([(r["source"], r["protocol"]) for r in comparison_rows({"head": _met["head"]}, "_two_protocols", "cifar10", 100, "train-test")],
        [("this run", "train-test"), ("Author 2021, Table 5", "train-test")])
test_eq(comparison_rows({"head": _met["head"]}, "_two_protocols", "cifar10", 100)[1]["source"], "Author 2021, Table 2")

# %% [markdown]
# What the table looks like for this run if it had been CIFAR-10 (it is not: on digits the table holds the run's rows
# only, with the note that no paper reports digits):

# %%
from IPython.display import Markdown, display

# %%
display(Markdown(markdown_table(_rows)))

# %% [markdown]
# ## Several runs: mean ± standard deviation
# One seed is one draw. With several runs of the same method and dataset (different seeds), the report gives the mean
# and the sample standard deviation ($n-1$ in the denominator) of each metric, one row per method, dataset and
# evaluation. A run enters the summary through a small record — method, dataset, epoch, metrics — read from its
# `report.json` when that is newer than its checkpoint, and otherwise computed by loading the run.

# %%
#| export
SUMMARY_KEYS = ("method", "dataset", "checkpoint", "epoch", "finished", "metrics")

def summarize_reports(reports:list, # records with method, dataset, epoch and metrics (e.g. report.json contents)
                     ) -> list: # one row per (method, dataset, evaluation)
    "Mean ± sample standard deviation of ACC/NMI/ARI over runs, grouped by method, dataset and evaluation."
    groups = {}
    for r in reports:
        for e, m in r["metrics"].items(): groups.setdefault((r["method"], str(r["dataset"]), e), []).append((r["epoch"], m))
    rows = []
    for (meth, ds, e), items in groups.items():
        row = dict(method=meth, dataset=ds, evaluation=EVALUATIONS.get(e, e), runs=len(items),
                   epochs=", ".join(map(str, sorted({ep for ep, _ in items}))))
        for k in ("acc", "nmi", "ari"):
            v = np.array([m[k] for _, m in items], dtype=float)
            mu, sd = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
            row.update({k: f"{mu:.3f} ± {sd:.3f}", f"{k}_mean": mu, f"{k}_std": sd})
        rows.append(row)
    return rows

# %%
_reps = [dict(method="cc", dataset="digits", epoch=3, metrics={"head": dict(acc=a, nmi=0.5, ari=0.4)}) for a in (0.6, 0.7, 0.8)]
_reps.append(dict(method="cc", dataset="usps", epoch=3, metrics={"head": dict(acc=0.9, nmi=0.8, ari=0.7)}))
_s = summarize_reports(_reps)
test_eq(len(_s), 2); test_eq(_s[0]["runs"], 3)
_v = [0.6, 0.7, 0.8]; _mu = sum(_v) / 3
test_close(_s[0]["acc_mean"], _mu); test_close(_s[0]["acc_std"], (sum((a - _mu) ** 2 for a in _v) / 2) ** 0.5)
test_eq(_s[0]["acc"], "0.700 ± 0.100"); test_eq(_s[1]["acc"], "0.900 ± 0.000")

# %%
#| export
def run_info(run:Run) -> dict:
    "Which run this is: method, dataset, checkpoint, epoch, finished."
    return dict(method=run.cfg.method, dataset=str(run.cfg.dataset), checkpoint=str(run.checkpoint),
                epoch=run.epoch, finished=run.finished)

def run_summary(run:str|Path, # a run directory or checkpoint file
                device:str="cpu", # where to evaluate when needed
                data_root:str|None=None, # data folder, if not the run's
                kmeans:bool=True, # include k-means on the features
                seed:int=0, # k-means seed
               ) -> dict: # method, dataset, checkpoint, epoch, finished, metrics
    "A run's record for `summarize_reports`: from its report.json when newer than its checkpoint, else computed."
    ck = find_checkpoint(run)
    rep = ck.parent / "report.json"
    if rep.exists() and rep.stat().st_mtime >= ck.stat().st_mtime:
        r = json.loads(rep.read_text())
        if all(k in r for k in SUMMARY_KEYS) and ("kmeans" in r["metrics"]) == kmeans: return {k: r[k] for k in SUMMARY_KEYS}
    lr = load_run(ck, device, data_root)
    return {**run_info(lr), "metrics": clustering_metrics(run_outputs(lr, kmeans, seed))}

# %%
_rs = run_summary(_run_dir, kmeans=False)
test_eq(_rs["epoch"], 3); test_close(_rs["metrics"]["head"]["acc"], _saved["acc"], eps=1e-6)

# %% [markdown]
# ## The whole report
# `write_report` computes everything above for a loaded run and writes it next to the checkpoint (or to `out_dir`):
# the PNG figures and `report.json` with the run's identity, both metric sets, cluster and class sizes, the collapse
# warnings, the comparison with the paper, the multi-run summary when other runs are given, and the configuration.

# %%
#| export
def report_figures(run:Run, # a loaded run
                   outs:dict, # from `run_outputs`
                   out_dir, # folder for the PNG files
                   tsne_samples:int=2000, # images in the t-SNE map (0: no t-SNE)
                   gallery_size:int=8, # images per cluster in the galleries
                   gallery_clusters:int=20, # clusters shown in the galleries
                   seed:int=0, # seed of the t-SNE sample and of t-SNE
                  ) -> dict: # figure name -> file name
    "Draw and save the report's figures (confusion, cluster sizes, t-SNE, galleries, training curves)."
    y, pred, K, classes = outs["y"], outs["pred"], run.cfg.n_clusters, run.eval_data.classes
    name = f"{run.cfg.method} on {Path(str(run.cfg.dataset)).stem}, epoch {run.epoch}"
    figs = {"confusion": lambda: plot_confusion(y, pred, classes, K, f"confusion after Hungarian matching: {name}"),
            "cluster_sizes": lambda: plot_cluster_sizes(y, pred, K, classes, f"cluster sizes vs. class sizes: {name}"),
            "gallery_confident": lambda: cluster_gallery(run.eval_data, outs["probs"], gallery_size, False, gallery_clusters),
            "gallery_mistakes": lambda: cluster_gallery(run.eval_data, outs["probs"], gallery_size, True, gallery_clusters)}
    if tsne_samples:
        idx, emb = tsne_embedding(outs["features"], tsne_samples, seed)
        figs["tsne"] = lambda: plot_tsne(emb, pred[idx], y[idx], classes, K, f"t-SNE of {len(idx)} images: {name}")
    if run.history: figs["history"] = lambda: plot_history(run.history, f"training: {name}")
    return {k: save_figure(draw(), Path(out_dir) / f"{k}.png").name for k, draw in figs.items()}

def check_report_params(tsne_samples:int=2000, gallery_size:int=8, gallery_clusters:int=20, seed:int=0, device:str="auto",
                        runs:list=()):
    "Refuse bad report parameters before anything is evaluated or written, with one line saying what to pass instead."
    def bad(name, value, want): raise ValueError(f"{name} must be {want}, got {value!r}")
    for name, v in (("tsne_samples", tsne_samples), ("gallery_size", gallery_size), ("gallery_clusters", gallery_clusters), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)): bad(name, v, "an integer")
    if tsne_samples != 0 and tsne_samples < 5: bad("tsne_samples", tsne_samples, "0 (no t-SNE) or at least 5")
    if gallery_size < 1: bad("gallery_size", gallery_size, "at least 1 (images per cluster)")
    if gallery_clusters < 1: bad("gallery_clusters", gallery_clusters, "at least 1 (clusters shown)")
    if seed < 0: bad("seed", seed, "0 or more")
    pick_device(device)
    for r in runs: find_checkpoint(r)

def write_report(run:Run, # a loaded run (`load_run`)
                 out_dir=None, # folder for figures and report.json (default: the run directory)
                 tsne_samples:int=2000, # images in the t-SNE map (0: no t-SNE)
                 gallery_size:int=8, # images per cluster in the galleries
                 gallery_clusters:int=20, # clusters shown in the galleries
                 kmeans:bool=True, # also score k-means on the features
                 runs:list=(), # other run directories (e.g. seeds) to summarise with this one as mean ± std
                 seed:int=0, # seed of k-means and t-SNE
                ) -> dict: # the report, also written to out_dir/report.json
    "Evaluate a run, save its figures and write report.json (each file added to the run folder's marker)."
    check_report_params(tsne_samples, gallery_size, gallery_clusters, seed, str(run.trainer.device), runs)
    out_dir = Path(out_dir or run.run_dir); out_dir.mkdir(parents=True, exist_ok=True)
    outs = run_outputs(run, kmeans, seed)
    metrics, sizes, c = clustering_metrics(outs), cluster_sizes(outs["pred"], run.cfg.n_clusters), run.cfg
    rep = {**run_info(run), "n_eval": len(outs["y"]), "n_clusters": c.n_clusters, "metrics": metrics,
           "cluster_sizes": sizes.tolist(), "class_sizes": np.bincount(outs["y"], minlength=len(run.eval_data.classes)).tolist(),
           "collapsed": bool(collapse_warnings(sizes)), "collapse": collapse_warnings(sizes),
           "largest_cluster": float(sizes.max() / sizes.sum()), "paper": paper_info(c.method), "comparison": comparison_rows(metrics, c.method, c.dataset, run.epoch, c.protocol, c.subset),
           "figures": report_figures(run, outs, out_dir, tsne_samples, gallery_size, gallery_clusters, seed)}
    others = [r for r in dict.fromkeys(find_checkpoint(r).resolve() for r in runs) if r != run.checkpoint]
    if runs: rep["summary"] = summarize_reports([rep] + [run_summary(r, str(run.trainer.device), c.data_root, kmeans, seed) for r in others])
    rep["config"] = asdict(c)
    write_json(rep, out_dir / "report.json")
    if read_marker(out_dir) is not None: update_marker(out_dir, ["report.json", *rep["figures"].values()])
    return rep

# %%
show_doc(write_report)

# %%
_rep = write_report(_run, tsne_samples=500, gallery_size=6, runs=[_run_dir])
test_eq(sorted(_rep["figures"]), ["cluster_sizes", "confusion", "gallery_confident", "gallery_mistakes", "history", "tsne"])
for _name in _rep["figures"].values(): assert (_run_dir / _name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", _name
_json = json.loads((_run_dir / "report.json").read_text())
test_eq((_json["method"], _json["epoch"], _json["summary"][0]["runs"]), ("cc", 3, 1))
test_close(_json["metrics"]["head"]["acc"], _saved["acc"], eps=1e-6)
test_eq(sum(_json["cluster_sizes"]), 1797)
test_eq(run_summary(_run_dir)["metrics"], _json["metrics"])   # the fresh report.json is reused
display(Markdown(markdown_table(_json["comparison"])))

# %% [markdown]
# The notebook `nbs/report.ipynb` is this last cell with parameters: it loads the run, calls `write_report`, and
# shows the tables and the saved figures.

# %%
_tmp.cleanup()

# %%
#| hide
import nbdev; nbdev.nbdev_export()
