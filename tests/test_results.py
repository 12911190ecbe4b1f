"The results notebook, trimmed: every run becomes a CSV row through the one Trainer, the summary is drawn, and a second execution trains nothing again; a dataset's own seeds replace the common ones."
import csv, json
from conftest import ROOT, BIN, run

def test_results_notebook_trimmed_and_resumable(tmp_path):
    y = (f"methods: [cc, crlc]\ndatasets: [digits]\nseeds: [7]\ndataset_seeds: {{digits: [0, 1]}}\noverrides: {{max_steps: 2, eval_every: 0}}\n"
         f"runs_dir: {tmp_path}/runs\ncsv: {tmp_path}/grid.csv\nkmeans_seeds: 1\nkmeans_csv: {tmp_path}/kmeans.csv\n")
    cmd = [str(BIN / "papermill"), "nbs/results.ipynb", str(tmp_path / "o.ipynb"), "-k", "python3", "-y", y]
    run(cmd, timeout=600)
    rows = list(csv.DictReader(open(tmp_path / "grid.csv")))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("cc", "0"), ("cc", "1"), ("crlc", "0"), ("crlc", "1")]
    assert all(r["steps"] == "2" and 0 <= float(r["acc"]) <= 1 and r["machine"] and r["torch"] for r in rows)
    assert [r["dataset"] for r in csv.DictReader(open(tmp_path / "kmeans.csv"))] == ["digits"]
    nb = json.loads((tmp_path / "o.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) + json.dumps(o.get("data", {})) for c in nb["cells"] for o in c.get("outputs", []))
    assert "0 rows already" in text and "k-means on pixels (ACC)" in text and "image/png" in text
    run(cmd, timeout=600)
    assert len(list(csv.DictReader(open(tmp_path / "grid.csv")))) == 4        # nothing trained twice
    nb = json.loads((tmp_path / "o.ipynb").read_text())
    assert "0 runs to train" in "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    # a new seed with train false: reported as missing, nothing trained, the summary still drawn from the 4 rows
    run(cmd[:-1] + [y.replace("digits: [0, 1]", "digits: [0, 1, 2]") + "train: false\n"], timeout=600)
    assert len(list(csv.DictReader(open(tmp_path / "grid.csv")))) == 4
    nb = json.loads((tmp_path / "o.ipynb").read_text())
    assert "2 runs missing (not trained" in "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
