# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Results: every method, several seeds, one table
# > The results notebook: `papermill nbs/results.ipynb out.ipynb` trains every method on every dataset for several seeds through the one `Trainer`, writes a CSV row per run, summarises them (mean ± std, worst seed, k-means on the raw pixels, wall time) and regenerates the README's results section.
#
# A number in the README is a number in this notebook's CSV. The grid is safe to interrupt: a run that has finished is
# not run again (its row is in the CSV), and a run that was stopped resumes from its checkpoint. Runs go to worker
# processes (`workers`, each on `threads` CPU threads), so on a 2-core machine two single-threaded runs share it.
#
# ```
# DEEPCLUSTER_DATA=/path/to/npz papermill nbs/results.ipynb runs/results.ipynb            # the committed CPU grid
# papermill nbs/results.ipynb out.ipynb -y "methods: [cc]" -y "datasets: [digits]" -y "dataset_seeds: {digits: [5, 6]}"
# ```

# %%
from typing import Optional
import json, os, platform, subprocess, sys, time, datetime
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display
from tqdm.auto import tqdm
from deepcluster_nb.data import load_dataset, DatasetNotFound
from deepcluster_nb.metrics import pixel_kmeans_scores
from deepcluster_nb.models import available_methods, get_method

# %% tags=["parameters"]
methods: list = ["cc", "dcdc", "crlc", "tcc", "cadec"]  # methods to train
datasets: list = ["digits", "usps", "mnist_test"]  # datasets (usps and mnist_test need usps.npz and mnist_test.npz in the data root)
seeds: list = [0, 1, 2]  # seeds of every (method, dataset)
dataset_seeds: dict = {"digits": [0, 1, 2, 3, 4]}  # dataset -> its own seeds, in place of `seeds`
epochs: dict = {}  # dataset -> epochs for every method (empty: each method's setting)
overrides: dict = {}  # extra training parameters for every run, e.g. {max_steps: 3}
workers: int = 2  # runs trained at the same time
threads: int = 1  # CPU threads of each run
runs_dir: str = "runs/results"  # where the run folders go
csv: str = "nbs/results/cpu_grid.csv"  # one row per finished run (appended; existing rows are kept)
update_readme: bool = False  # rewrite the README's results section from this CSV
kmeans_seeds: int = 3  # seeds of the k-means baseline on raw pixels
kmeans_csv: str = "nbs/results/kmeans_pixels.csv"  # where the baseline's scores go ("" : nowhere)
train: bool = True  # train the runs missing from the CSV (false: only summarise the rows already there)

# %% [markdown]
# ## The grid
# Datasets that are not in the data root are left out with a message. A run's identity is (method, dataset, seed,
# epochs, overrides): a row with the same identity in the CSV means the run is done.

# %%
csv_path = Path(csv); runs_root = Path(runs_dir)
available = {}
for d in datasets:
    try: available[d] = load_dataset(d, download=False)
    except (DatasetNotFound, FileNotFoundError) as e: print(f"skipping {d}: {str(e).splitlines()[0]}")
unknown = sorted(set(methods) - set(available_methods()))
if unknown: raise ValueError(f"unknown method(s) {unknown}; valid: {available_methods()}")

def settings_hash(m, d) -> str:
    "A short hash of the method's settings for the dataset: a re-tuned table makes its runs new runs."
    import hashlib
    from deepcluster_nb.train import dataset_key
    from dataclasses import asdict
    from deepcluster_nb.augment import cc_recipe
    key = dataset_key(d); table = get_method(m).settings.resolve(key)
    table = {**table, "augment": asdict(table.get("augment", cc_recipe)(key, 0))}   # the recipe's values, not its name
    return hashlib.sha1(json.dumps(table, sort_keys=True, default=lambda o: getattr(o, "__name__", str(o))).encode()).hexdigest()[:8]

def seeds_of(d) -> list: return list(dataset_seeds.get(d, seeds))
def run_id(m, d, s): return f"{m}|{d}|{s}|{epochs.get(d, '')}|{json.dumps(overrides, sort_keys=True)}|{settings_hash(m, d)}"
done = pd.read_csv(csv_path) if csv_path.exists() else pd.DataFrame(columns=["run_id"])
jobs = [(m, d, s) for d in available for m in methods for s in seeds_of(d) if run_id(m, d, s) not in set(done["run_id"])]
print(f"{len(jobs)} runs {'to train' if train else 'missing (not trained: train is false)'}, {len(done)} rows already in {csv_path}")
if not train: jobs = []

# %%
MACHINE = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.system()}"
CODE = ("import json, sys; from deepcluster_nb.train import Trainer, TrainConfig; "
        "Trainer(TrainConfig.parse(**json.loads(sys.argv[1]))).fit()")

def commit() -> str:
    try: return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError: return ""

def train_one(m, d, s):
    "Train (or resume) one run in a worker process; return its CSV row."
    out = runs_root / f"{m}_{d}_s{s}"
    params = dict(method=m, dataset=d, seed=s, threads=threads, progress=False, out_dir=str(out), resume=True, **overrides)
    if d in epochs: params["epochs"] = epochs[d]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", CODE, json.dumps(params)], capture_output=True, text=True, env=env)
    if r.returncode != 0: raise RuntimeError(f"{m} on {d}, seed {s} failed:\n{r.stderr[-2000:]}")
    met, saved = json.loads((out / "metrics.json").read_text()), json.loads((out / "config.json").read_text())
    cfg = saved["config"]
    return dict(run_id=run_id(m, d, s), method=m, dataset=d, seed=s, epochs=met["epochs"], steps=met["steps"],
                acc=met["acc"], nmi=met["nmi"], ari=met["ari"], collapsed=met["collapsed"], largest_cluster=met["largest_cluster"],
                train_seconds=met["train_seconds"], wall_seconds=round(time.time() - t0, 1), batch_size=cfg["batch_size"],
                lr=cfg["lr"], threads=threads, workers=workers, machine=MACHINE, torch=saved.get("torch", ""), commit=commit(),
                date=datetime.date.today().isoformat())

# %%
csv_path.parent.mkdir(parents=True, exist_ok=True)
with ThreadPoolExecutor(max(1, workers)) as pool:
    futures = {pool.submit(train_one, *j): j for j in jobs}
    for f in tqdm(as_completed(futures), total=len(futures), desc="runs"):
        row = f.result()
        pd.DataFrame([row]).to_csv(csv_path, mode="a", header=not csv_path.exists(), index=False)
        print(f"{row['method']:>6} {row['dataset']:>7} seed {row['seed']}: ACC {row['acc']:.3f} NMI {row['nmi']:.3f} "
              f"({row['wall_seconds']:.0f} s)")

# %% [markdown]
# ## The baseline: k-means on the raw pixels
# scikit-learn's k-means (10 restarts) on the pixels scaled to [0, 1], for a few seeds: the number a deep method
# has to beat on each dataset.

# %%
base = pd.DataFrame([{"dataset": d, "seed": s, **pixel_kmeans_scores(available[d].eval.x, available[d].eval.y, seed=s)}
                     for d in available for s in range(kmeans_seeds)])
kmeans = base.groupby("dataset")[["acc", "nmi", "ari"]].mean()
if kmeans_csv: base.to_csv(kmeans_csv, index=False)
kmeans

# %% [markdown]
# ## Summary
# Mean ± standard deviation over the seeds, the worst seed's ACC, and the k-means baseline beside it.

# %%
rows = pd.read_csv(csv_path)
rows = rows[rows["method"].isin(methods) & rows["dataset"].isin(list(available))
            & np.array([s in seeds_of(d) for d, s in zip(rows["dataset"], rows["seed"])], dtype=bool)
            & (rows["run_id"] == [run_id(m, d, s) for m, d, s in zip(rows["method"], rows["dataset"], rows["seed"])])]
def torch_of(r) -> str:
    "The torch version a run recorded: its CSV cell, else its run folder's config.json (rows of older grids lack the cell)."
    if isinstance(r["torch"], str) and r["torch"]: return r["torch"]
    f = runs_root / f"{r['method']}_{r['dataset']}_s{r['seed']}" / "config.json"
    return json.loads(f.read_text()).get("torch", "") if f.exists() else ""
if len(rows): rows = rows.assign(torch=[torch_of(r) for _, r in rows.iterrows()])
g = rows.groupby(["dataset", "method"], sort=False)
summary = pd.DataFrame({
    "runs": g.size(), "epochs": g["epochs"].max(),
    "acc_mean": g["acc"].mean(), "acc_std": g["acc"].std(ddof=1).fillna(0), "acc_worst": g["acc"].min(),
    "nmi_mean": g["nmi"].mean(), "ari_mean": g["ari"].mean(), "collapsed": g["collapsed"].sum(),
    "minutes_per_run": g["wall_seconds"].mean() / 60}).reset_index()
summary["kmeans_acc"] = summary["dataset"].map(kmeans["acc"])
summary

# %%
def results_markdown(summary:pd.DataFrame, rows:pd.DataFrame) -> str:
    "The README's results section: one table, and the command and machine that produced it."
    lines = ["| dataset | method | runs | epochs | ACC mean ± std | worst ACC | NMI | ARI | k-means on pixels (ACC) | min/run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {r.runs} | {r.epochs} | {r.acc_mean:.3f} ± {r.acc_std:.3f} | {r.acc_worst:.3f} | "
                     f"{r.nmi_mean:.3f} | {r.ari_mean:.3f} | {r.kmeans_acc:.3f} | {r.minutes_per_run:.1f} |")
    m = rows.iloc[-1] if len(rows) else None
    seeds_txt = "; ".join(f"{d} {sorted(set(rows[rows['dataset'] == d]['seed']))}" for d in dict.fromkeys(rows["dataset"]))
    foot = (f"\n\n{len(rows)} runs (seeds: {seeds_txt}), each on {m['threads']} CPU thread(s) with {m['workers']} "
            f"runs at a time on {m['machine']} (torch {m['torch']}, commit {m['commit']}, {m['date']}). Produced by "
            f"`papermill nbs/results.ipynb runs/results.ipynb` (data root with usps.npz and mnist_test.npz); every row is in "
            f"`{csv}`.") if m is not None else ""
    return "\n".join(lines) + foot

md = results_markdown(summary, rows)
display(Markdown(md))

# %% [markdown]
# ## A picture
# Each seed's ACC as a dot, the mean as a bar, the k-means baseline as a dashed line.

# %%
fig, axs = plt.subplots(1, len(available), figsize=(4.2 * max(1, len(available)), 3.6), squeeze=False)
for ax, d in zip(axs[0], available):
    sub = rows[rows["dataset"] == d]
    ms = [m for m in methods if m in set(sub["method"])]
    ax.bar(range(len(ms)), [sub[sub["method"] == m]["acc"].mean() for m in ms], color="tab:blue", alpha=0.35)
    for i, m in enumerate(ms):
        v = sub[sub["method"] == m]["acc"].values
        ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), v, color="tab:blue", s=14, zorder=3)
    if d in kmeans.index: ax.axhline(kmeans.loc[d, "acc"], ls="--", color="k", lw=1, label="k-means on pixels")
    ax.set_xticks(range(len(ms)), ms); ax.set_ylim(0, 1); ax.set_title(d); ax.set_ylabel("ACC"); ax.legend(fontsize=8, loc="lower right")
fig.tight_layout(); fig.savefig(csv_path.with_suffix(".png"), dpi=110); plt.close(fig)
display(Image(filename=str(csv_path.with_suffix(".png"))))   # the saved file: shown under any matplotlib backend

# %% [markdown]
# ## The README
# With `update_readme=True` the part of the front page (`nbs/index.ipynb`) between the results markers is rewritten
# from this CSV, and `README.md` is generated again from it (`ci/readme.py`).

# %%
if update_readme:
    root = Path.cwd() if (Path.cwd() / "settings.ini").exists() else Path.cwd().parent
    (root / "build").mkdir(exist_ok=True)
    (root / "build" / "results.md").write_text(md)
    subprocess.run([sys.executable, str(root / "ci" / "readme.py"), "--set-block", "results", str(root / "build" / "results.md")],
                   check=True, cwd=root)
    print("updated nbs/index.ipynb and README.md")
