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
# not run again (its row is in the CSV), a run that was stopped resumes from its checkpoint, and one stopped before
# its first checkpoint starts again in its folder. Runs go to worker
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
from deepcluster_nb.report import grid_run_id, grid_rows, summarise_grid
from deepcluster_nb.runs import inspect_folder

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
# epochs, overrides, settings hash), built by `grid_run_id` of the report appendix: a row with the same identity in
# the CSV means the run is done. The same appendix decides which rows the summary below shows (`grid_rows`), and the
# method chapters read the CSV through it too, so the README and the chapters count the same rows.

# %%
csv_path = Path(csv); runs_root = Path(runs_dir)
available = {}
for d in datasets:
    try: available[d] = load_dataset(d, download=False)
    except (DatasetNotFound, FileNotFoundError) as e: print(f"skipping {d}: {str(e).splitlines()[0]}")
unknown = sorted(set(methods) - set(available_methods()))
if unknown: raise ValueError(f"unknown method(s) {unknown}; valid: {available_methods()}")

def seeds_of(d) -> list: return list(dataset_seeds.get(d, seeds))
def run_id(m, d, s): return grid_run_id(m, d, s, epochs.get(d, ""), overrides)
done = pd.read_csv(csv_path, dtype=str) if csv_path.exists() else pd.DataFrame(columns=["run_id"])
jobs = [(m, d, s) for d in available for m in methods for s in seeds_of(d) if run_id(m, d, s) not in set(done["run_id"])]
print(f"{len(jobs)} runs {'to train' if train else 'missing (not trained: train is false)'}, {len(done)} rows already in {csv_path}")
if not train: jobs = []

# %% [markdown]
# Each run is trained by a worker process, which imports the package as it is on disk when the run starts. What a
# row records about that code is therefore taken then and there: the commit checked out when the worker starts
# (marked `+dirty` when the package's files differ from it), and, from the worker itself, the torch version it ran
# with and the settings hash of the tables it imported. A worker whose settings hash is not the one in the run's id
# (a settings table edited while the grid runs) stops the grid instead of writing a row under the wrong id.

# %%
MACHINE = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.system()}"
CODE = ("import json, sys, torch; from deepcluster_nb.train import Trainer, TrainConfig; "
        "from deepcluster_nb.report import settings_hash; p = json.loads(sys.argv[1]); "
        "Trainer(TrainConfig.parse(**p)).fit(); "
        "print('WORKER ' + json.dumps(dict(torch=torch.__version__, settings_hash=settings_hash(p['method'], p['dataset']))))")

def commit() -> str:
    "The commit checked out now (short), with '+dirty' when the package's files differ from it; '' outside git."
    try:
        git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+dirty" if head and git("status", "--porcelain", "--untracked-files=no", "--", "deepcluster_nb") else "")
    except OSError: return ""

def train_one(m, d, s):
    "Train (or resume) one run in a worker process; return its CSV row."
    out = runs_root / f"{m}_{d}_s{s}"
    st = inspect_folder(out)   # resume from a checkpoint; replace an interrupted run that left none; else a new folder
    folder = dict(resume=True) if st.checkpoint else dict(overwrite=True) if st.ours else {}
    params = dict(method=m, dataset=d, seed=s, threads=threads, progress=False, out_dir=str(out), **folder, **overrides)
    if d in epochs: params["epochs"] = epochs[d]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    rid, code_commit, t0 = run_id(m, d, s), commit(), time.time()
    r = subprocess.run([sys.executable, "-c", CODE, json.dumps(params)], capture_output=True, text=True, env=env)
    if r.returncode != 0: raise RuntimeError(f"{m} on {d}, seed {s} failed:\n{r.stderr[-2000:]}")
    worker = json.loads([l for l in r.stdout.splitlines() if l.startswith("WORKER ")][-1][len("WORKER "):])
    if not rid.endswith("|" + worker["settings_hash"]):
        raise RuntimeError(f"{m} on {d}, seed {s}: the worker trained settings {worker['settings_hash']}, the grid expected "
                           f"{rid.rsplit('|', 1)[-1]} (a settings table changed while the grid ran): start the grid again")
    met, saved = json.loads((out / "metrics.json").read_text()), json.loads((out / "config.json").read_text())
    cfg = saved["config"]
    return dict(run_id=rid, method=m, dataset=d, seed=s, epochs=met["epochs"], steps=met["steps"],
                acc=met["acc"], nmi=met["nmi"], ari=met["ari"], collapsed=met["collapsed"], largest_cluster=met["largest_cluster"],
                train_seconds=met["train_seconds"], wall_seconds=round(time.time() - t0, 1), batch_size=cfg["batch_size"],
                lr=cfg["lr"], threads=threads, workers=workers, machine=MACHINE, torch=saved.get("torch") or worker["torch"],
                commit=code_commit, date=datetime.date.today().isoformat(), settings_hash=worker["settings_hash"])

def append_row(path:Path, row:dict):
    "Append one row; when the row has columns the file lacks (an older CSV), rewrite it with them, empty in old rows."
    if not path.exists(): pd.DataFrame([row]).to_csv(path, index=False); return
    header = list(pd.read_csv(path, nrows=0).columns)
    if set(row) <= set(header): pd.DataFrame([row])[header].to_csv(path, mode="a", header=False, index=False); return
    old = pd.read_csv(path, dtype=str, keep_default_na=False)
    new = pd.concat([old, pd.DataFrame([{k: str(v) for k, v in row.items()}])], ignore_index=True)
    tmp = path.with_suffix(".tmp"); new.fillna("").to_csv(tmp, index=False); os.replace(tmp, path)

# %%
csv_path.parent.mkdir(parents=True, exist_ok=True)
with ThreadPoolExecutor(max(1, workers)) as pool:
    futures = {pool.submit(train_one, *j): j for j in jobs}
    for f in tqdm(as_completed(futures), total=len(futures), desc="runs"):
        row = f.result()
        append_row(csv_path, row)
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
# Mean ± standard deviation over the seeds, the worst seed's ACC, and the k-means baseline beside it: the rows that
# `grid_rows` keeps for this notebook's methods, datasets, seeds, epochs and overrides, summarised by `summarise_grid`
# (with the default parameters, exactly what `grid_summary` gives the chapters). The table is only as current as the
# CSV: it shows runs recorded at the commits named under it, selected by the settings of the code at hand.

# %%
rows = grid_rows(pd.read_csv(csv_path, dtype={"commit": str, "torch": str}), methods, list(available),
                 {d: seeds_of(d) for d in available}, epochs, overrides)
summary = summarise_grid(rows, kmeans["acc"])
summary

# %% [markdown]
# Under the table, where the rows come from: how many runs on which seeds, the machine, and — counted over the rows
# shown — the torch versions and every commit recorded with them ("not recorded" where an older row has an empty
# cell). A new row's commit is the one checked out when its worker started; rows of older grids recorded the commit
# checked out when the row was written.

# %%
def tally(values, always_count:bool=False) -> str:
    "The distinct values in order of first appearance; with the number of runs of each when they differ (or always)."
    vals = ["not recorded" if v is None or v != v or str(v) == "" else str(v) for v in values]
    counts = {v: vals.count(v) for v in dict.fromkeys(vals)}
    if len(counts) == 1 and not always_count: return next(iter(counts))
    return ", ".join(f"{v} ({n} run{'s' if n > 1 else ''})" for v, n in counts.items())

def results_markdown(summary:pd.DataFrame, rows:pd.DataFrame) -> str:
    "The README's results section: one table, and the command, machine, torch versions and commits that produced it."
    lines = ["| dataset | method | runs | epochs | ACC mean ± std | worst ACC | NMI | ARI | k-means on pixels (ACC) | min/run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {r.runs} | {r.epochs} | {r.acc_mean:.3f} ± {r.acc_std:.3f} | {r.acc_worst:.3f} | "
                     f"{r.nmi_mean:.3f} | {r.ari_mean:.3f} | {r.kmeans_pixels_acc:.3f} | {r.minutes_per_run:.1f} |")
    if not len(rows): return "\n".join(lines)
    seeds_txt = "; ".join(f"{d} {sorted(set(rows[rows['dataset'] == d]['seed']))}" for d in dict.fromkeys(rows["dataset"]))
    dates = sorted(set(rows["date"].astype(str)))
    foot = (f"\n\n{len(rows)} runs (seeds: {seeds_txt}), each on {tally(rows['threads'])} CPU thread(s) with "
            f"{tally(rows['workers'])} runs at a time on {tally(rows['machine'])}, {dates[0]}"
            f"{' to ' + dates[-1] if len(dates) > 1 else ''}; torch {tally(rows['torch'])}; commits recorded with the rows "
            f"{tally(rows['commit'], always_count=True)}. Produced by `papermill nbs/results.ipynb runs/results.ipynb` "
            f"(data root with usps.npz and mnist_test.npz); every row is in `{csv}`.")
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
