# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Run report
# > The report notebook for one run folder: ACC/NMI/ARI of the cluster head and of k-means on the features, the collapse check, the papers' numbers for the same protocol, the matched confusion matrix, cluster sizes, t-SNE, galleries and training curves.
#
# ```
# papermill nbs/report.ipynb out.ipynb -p run_dir runs/cc_digits_s0
# papermill nbs/report.ipynb out.ipynb -p checkpoint runs/cc_cifar10_s0/checkpoint.pt -p method cc -p data_root /data
# papermill nbs/report.ipynb out.ipynb -p run_dir runs/cc_digits_s0 -y "runs: [runs/cc_digits_s1, runs/cc_digits_s2]"
# papermill nbs/report.ipynb --help-notebook
# ```
#
# The figures and `report.json` are written to the run folder (or `out_dir`); `python -m deepcluster_nb report
# RUN_DIR` writes the same files from a shell. The functions used here are explained in the appendix *The run
# report* (`deepcluster_nb.report`).

# %%
import os, shutil, tempfile
from pathlib import Path
from IPython.display import Image, Markdown, display
from deepcluster_nb.report import load_run, write_report, markdown_table, check_report_params
from deepcluster_nb.train import Trainer, TrainConfig

# %% tags=["parameters"]
run_dir: str = ""  # run folder holding checkpoint.pt
checkpoint: str = ""  # a checkpoint file (used instead of run_dir when given)
method: str = ""  # expected method: stop with an error if the checkpoint is of another one ("" accepts any)
dataset: str = ""  # expected dataset: stop with an error if the checkpoint is of another one ("" accepts any)
data_root: str = ""  # data folder ("" : the one the run recorded, else $DEEPCLUSTER_DATA or data/)
device: str = "auto"  # "auto" (cuda if available), "cuda" or "cpu"
out_dir: str = ""  # folder for the figures and report.json (default: the run folder)
kmeans: bool = True  # also score k-means on the learned features (10 restarts)
tsne_samples: int = 2000  # images in the t-SNE map, a random sample (0 skips the t-SNE)
gallery_size: int = 8  # images per cluster in the galleries
gallery_clusters: int = 20  # clusters (rows) shown in each gallery
runs: list = []  # more run folders (e.g. other seeds) summarised together with this run as mean ± std
seed: int = 0  # seed of k-means, of the t-SNE sample and of t-SNE

# %% [markdown]
# Without a run, a trimmed execution (the test suite sets `IN_TEST`) trains a two-epoch run on digits to report on.

# %%
_demo = None
if not (run_dir or checkpoint) and os.environ.get("IN_TEST"):
    _demo = tempfile.mkdtemp()
    run_dir = str(Path(_demo) / "cc_digits")
    Trainer(TrainConfig(epochs=2, out_dir=run_dir, progress=False)).fit()
    tsne_samples = min(tsne_samples, 300)
if isinstance(runs, str): runs = [r.strip() for r in runs.split(",") if r.strip()]
check_report_params(tsne_samples, gallery_size, gallery_clusters, seed, device, runs)   # before anything is evaluated

# %% [markdown]
# ## The run

# %%
run = load_run(checkpoint or run_dir, device=device, data_root=data_root or None, method=method or None,
               dataset=dataset or None)
print(f"configuration: {run.cfg}")

# %%
report = write_report(run, out_dir or None, tsne_samples=tsne_samples, gallery_size=gallery_size,
                      gallery_clusters=gallery_clusters, kmeans=kmeans, runs=runs, seed=seed)
folder = Path(out_dir or run.run_dir)
print(f"wrote report.json and {len(report['figures'])} figures to {folder}")
print("COLLAPSED: " + "; ".join(report["collapse"]) if report["collapsed"]
      else f"not collapsed: the largest cluster holds {report['largest_cluster']:.1%} of the images")

# %% [markdown]
# ## Scores beside the paper
# The cluster head's argmax, k-means on the L2-normalised backbone features, and the paper's numbers for the same
# method, dataset and evaluation protocol. The epochs column gives the run's share of the paper's training length.

# %%
display(Markdown(markdown_table(report["comparison"])))
if report["paper"]: print(f"paper: {report['paper']['cite']} (epochs: {report['paper']['epochs_from']}); {report['paper']['note']}")

# %% [markdown]
# ## Several runs

# %%
if "summary" in report:
    display(Markdown(markdown_table(report["summary"], ["method", "dataset", "evaluation", "runs", "epochs", "acc", "nmi", "ari"])))
else: print("one run only: pass runs=[...] to summarise several as mean ± std")

# %% [markdown]
# ## Cluster sizes and collapse

# %%
print(f"collapsed: {'yes' if report['collapsed'] else 'no'}")
for w in report["collapse"]: print("WARNING (collapse):", w)
if not report["collapsed"]: print(f"the largest cluster holds {report['largest_cluster']:.1%} of the images; "
                                  f"{sum(s == 0 for s in report['cluster_sizes'])} of {report['n_clusters']} clusters are empty")
display(Image(filename=str(folder / report["figures"]["cluster_sizes"])))

# %% [markdown]
# ## Confusion matrix after Hungarian matching

# %%
display(Image(filename=str(folder / report["figures"]["confusion"])))

# %% [markdown]
# ## t-SNE of the features

# %%
if "tsne" in report["figures"]: display(Image(filename=str(folder / report["figures"]["tsne"])))

# %% [markdown]
# ## Most confident images per cluster

# %%
display(Image(filename=str(folder / report["figures"]["gallery_confident"])))

# %% [markdown]
# ## Most confident mistakes per cluster

# %%
display(Image(filename=str(folder / report["figures"]["gallery_mistakes"])))

# %% [markdown]
# ## Training curves

# %%
if "history" in report["figures"]: display(Image(filename=str(folder / report["figures"]["history"])))

# %%
if _demo: shutil.rmtree(_demo)
