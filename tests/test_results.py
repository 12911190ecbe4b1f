"""The results notebook, trimmed: every run becomes a CSV row through the one Trainer (with its torch version, commit and
settings hash), the summary is drawn, and a second execution trains nothing again; a dataset's own seeds replace the
common ones. The README's table and the chapters' grid summaries count the same rows of the committed CSV, and the
README's footer names every commit recorded with them."""
import csv, json, re
import pandas as pd
from conftest import ROOT, BIN, run

GRID, KMEANS = ROOT / "nbs/results/cpu_grid.csv", ROOT / "nbs/results/kmeans_pixels.csv"
OLD_HEADER = ("run_id,method,dataset,seed,epochs,steps,acc,nmi,ari,collapsed,largest_cluster,train_seconds,wall_seconds,"
              "batch_size,lr,threads,workers,machine,torch,commit,date")


def _outputs(nb_path):
    nb = json.loads(nb_path.read_text())
    return "".join("".join(o.get("text", "")) + json.dumps(o.get("data", {})) for c in nb["cells"] for o in c.get("outputs", []))


def test_results_notebook_trimmed_and_resumable(tmp_path):
    y = (f"methods: [cc, crlc]\ndatasets: [digits]\nseeds: [7]\ndataset_seeds: {{digits: [0, 1]}}\noverrides: {{max_steps: 2, eval_every: 0}}\n"
         f"runs_dir: {tmp_path}/runs\ncsv: {tmp_path}/grid.csv\nkmeans_seeds: 1\nkmeans_csv: {tmp_path}/kmeans.csv\n")
    # a CSV of an older grid: one row in the old columns (no settings_hash), of a seed this grid does not run
    old_row = "cc|digits|99||{}|00000000,cc,digits,99,1,1,0.5,0.5,0.5,False,0.2,1.0,1.0,128,0.002,1,2,\"x86_64, 2 cores, Linux\",,abc1234,2026-01-01"
    (tmp_path / "grid.csv").write_text(OLD_HEADER + "\n" + old_row + "\n")
    cmd = [str(BIN / "papermill"), "nbs/results.ipynb", str(tmp_path / "o.ipynb"), "-k", "python3", "-y", y]
    run(cmd, timeout=600)
    rows = list(csv.DictReader(open(tmp_path / "grid.csv")))
    old, rows = rows[0], rows[1:]
    assert sorted((r["method"], r["seed"]) for r in rows) == [("cc", "0"), ("cc", "1"), ("crlc", "0"), ("crlc", "1")]
    assert all(r["steps"] == "2" and 0 <= float(r["acc"]) <= 1 and r["machine"] and r["torch"] for r in rows)
    # provenance of every new row: the commit, and the settings hash its worker computed, which ends its run id
    assert all(r["commit"] and r["settings_hash"] and r["run_id"].endswith("|" + r["settings_hash"]) for r in rows)
    # the older row keeps its values; the new column is empty in it
    assert {k: old[k] for k in OLD_HEADER.split(",")} == next(csv.DictReader([OLD_HEADER, old_row]))
    assert old["settings_hash"] == ""
    assert [r["dataset"] for r in csv.DictReader(open(tmp_path / "kmeans.csv"))] == ["digits"]
    text = _outputs(tmp_path / "o.ipynb")
    assert "1 rows already" in text and "k-means on pixels (ACC)" in text and "image/png" in text
    assert "commits recorded with the rows" in text and "abc1234" not in text          # the old row is not shown
    run(cmd, timeout=600)
    assert len(list(csv.DictReader(open(tmp_path / "grid.csv")))) == 5        # nothing trained twice
    assert "0 runs to train" in _outputs(tmp_path / "o.ipynb")
    # a new seed with train false: reported as missing, nothing trained, the summary still drawn from the 4 rows
    run(cmd[:-1] + [y.replace("digits: [0, 1]", "digits: [0, 1, 2]") + "train: false\n"], timeout=600)
    assert len(list(csv.DictReader(open(tmp_path / "grid.csv")))) == 5
    assert "2 runs missing (not trained" in _outputs(tmp_path / "o.ipynb")


def _results_block():
    text = (ROOT / "README.md").read_text()
    return text.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]


def _readme_table():
    "The README's results table as {(dataset, method): (runs, ACC mean, std, worst, NMI, ARI, k-means)}."
    out = {}
    for line in _results_block().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 10 or cells[0] in ("dataset", "---"): continue
        mean, std = cells[4].split(" ± ")
        out[cells[0], cells[1]] = (int(cells[2]), mean, std, cells[5], cells[6], cells[7], cells[8])
    return out


def _parameters():
    "The defaults of the results notebook's parameters cell."
    cells = json.loads((ROOT / "nbs/results.ipynb").read_text())["cells"]
    src = "".join(next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))["source"])
    ns = {}
    exec(src, ns)
    return ns


def test_results_notebook_defaults_are_the_grid_of_the_chapters():
    "The chapters' `grid_summary` selects the methods, datasets and seeds that the results notebook runs by default."
    from deepcluster_nb.report import GRID_METHODS, GRID_DATASETS, GRID_SEEDS
    p = _parameters()
    assert tuple(p["methods"]) == GRID_METHODS and tuple(p["datasets"]) == GRID_DATASETS
    assert {d: tuple(p["dataset_seeds"].get(d, p["seeds"])) for d in p["datasets"]} == GRID_SEEDS
    assert p["epochs"] == {} and p["overrides"] == {}
    src = (ROOT / "nbs/results.py").read_text()          # one implementation: the notebook filters through the report's
    assert "grid_rows(" in src and "summarise_grid(" in src and "def settings_hash" not in src


def test_chapters_and_readme_use_the_same_rows():
    "The README's table is the chapters' summary of the committed CSV: the same rows, so the same numbers."
    from deepcluster_nb.report import grid_summary
    s = grid_summary(None, GRID, KMEANS)
    mine = {(r.dataset, r.method): (r.runs, f"{r.acc_mean:.3f}", f"{r.acc_std:.3f}", f"{r.acc_worst:.3f}", f"{r.nmi_mean:.3f}",
                                    f"{r.ari_mean:.3f}", f"{r.kmeans_pixels_acc:.3f}") for r in s.itertuples()}
    assert mine and _readme_table() == mine
    for m in s["method"].unique():                     # each chapter asks for its own method: the same rows again
        pd.testing.assert_frame_equal(grid_summary(m, GRID, KMEANS), s[s["method"] == m].reset_index(drop=True),
                                      check_exact=False, rtol=1e-12)


def test_readme_footer_lists_every_commit_of_the_rows_shown():
    from deepcluster_nb.report import grid_rows
    rows = grid_rows(pd.read_csv(GRID, dtype={"commit": str}))
    foot = _results_block().strip().splitlines()[-1]
    assert foot.startswith(f"{len(rows)} runs ")
    listed = re.search(r"commits recorded with the rows (.+?)\. Produced by", foot).group(1)
    counts = [(m.group(1), int(m.group(2))) for m in re.finditer(r"([0-9a-f]{7,40}(?:\+dirty)?) \((\d+) runs?\)", listed)]
    commits = list(rows["commit"])
    assert counts == [(c, commits.count(c)) for c in dict.fromkeys(commits)], (counts, listed)
    assert sum(n for _, n in counts) == len(rows) and set(c for c, _ in counts) == set(rows["commit"])
