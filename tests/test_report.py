"The run report: nbs/report.ipynb executed with papermill on short digits runs, and its bad-input errors."
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NB = REPO / "nbs" / "report.ipynb"
FIGURES = {"confusion", "cluster_sizes", "tsne", "gallery_confident", "gallery_mistakes", "history"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Two 2-epoch CC runs on digits (seeds 0 and 1)."
    from deepcluster_nb.data import load_dataset
    from deepcluster_nb.train import Trainer, TrainConfig
    root, data = tmp_path_factory.mktemp("runs"), load_dataset("digits")
    out = []
    for seed in (0, 1):
        d = root / f"cc_digits_s{seed}"
        Trainer(TrainConfig(epochs=2, seed=seed, out_dir=str(d), progress=False), data).fit()
        out.append(d)
    return out


def execute(tmp_path, **params):
    import papermill as pm
    return pm.execute_notebook(str(NB), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3",
                               cwd=str(REPO), progress_bar=False)


def test_report_files_and_contents(runs, tmp_path):
    run, other = runs
    execute(tmp_path, run_dir=str(run), tsne_samples=300, gallery_size=4, runs=[str(run), str(other)])
    rep = json.loads((run / "report.json").read_text())
    assert set(rep["figures"]) == FIGURES
    for name in rep["figures"].values():
        assert (run / name).read_bytes()[:8] == PNG, name
        assert (run / name).stat().st_size > 5000, name
    assert (rep["method"], rep["dataset"], rep["epoch"], rep["finished"]) == ("cc", "digits", 2, True)
    assert Path(rep["checkpoint"]) == (run / "checkpoint.pt").resolve()
    assert rep["n_eval"] == 1797 and sum(rep["cluster_sizes"]) == 1797 and len(rep["cluster_sizes"]) == 10
    assert rep["class_sizes"] == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # the head's scores are exactly what the trainer measured at the end of training
    saved = [json.loads((d / "metrics.json").read_text()) for d in runs]
    for k in ("acc", "nmi", "ari"):
        assert rep["metrics"]["head"][k] == pytest.approx(saved[0][k], abs=1e-6)
        assert 0 <= rep["metrics"]["kmeans"][k] <= 1
    sizes = rep["cluster_sizes"]
    assert rep["largest_cluster"] == pytest.approx(max(sizes) / 1797)
    from deepcluster_nb.metrics import collapse_warnings
    assert rep["collapse"] == collapse_warnings(sizes) and rep["collapsed"] == bool(rep["collapse"])
    assert [r["source"] for r in rep["comparison"]] == ["this run", "this run"]
    assert "does not report cc on digits" in rep["comparison"][0]["note"]
    assert rep["paper"]["epochs"] == 1000 and rep["config"]["data_root"] == json.loads((run / "config.json").read_text())["config"]["data_root"]
    # the two seeds summarised as mean ± sample std
    head = next(r for r in rep["summary"] if r["evaluation"] == "cluster head")
    assert head["runs"] == 2 and head["epochs"] == "2"
    a, b = saved[0]["acc"], saved[1]["acc"]
    assert head["acc_mean"] == pytest.approx((a + b) / 2, abs=1e-6)
    assert head["acc_std"] == pytest.approx(abs(a - b) / 2 ** 0.5, abs=1e-6)
    assert not (other / "report.json").exists()   # the other run is evaluated, not written to


def test_missing_run_dir(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="does not exist"):
        execute(tmp_path, run_dir=str(tmp_path / "no_such_run"))


def test_wrong_method(runs, tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="checkpoint of method 'cc', but method 'dcdc' was requested"):
        execute(tmp_path, run_dir=str(runs[0]), method="dcdc")


def test_load_run_errors(runs, tmp_path):
    from deepcluster_nb.report import load_run
    with pytest.raises(FileNotFoundError, match="holds no checkpoint.pt"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="dataset 'digits', but dataset 'cifar10' was requested"):
        load_run(runs[0], dataset="cifar10")


def test_comparison_uses_the_runs_protocol():
    "A train-test run is compared with the paper's train-test rows only; without such rows the note says so."
    from deepcluster_nb.report import comparison_rows, paper_results
    from deepcluster_nb.models import available_methods
    m = {"head": dict(acc=0.5, nmi=0.4, ari=0.3)}
    for method in available_methods():
        for dataset in ("cifar10", "cifar100", "stl10", "imagenet10"):
            for protocol in ("paper", "train-test"):
                rows = comparison_rows(m, method, dataset, 10, protocol)
                assert all(r["protocol"] == protocol for r in rows), (method, dataset, protocol)
                assert len(rows) == 1 + len(paper_results(method, dataset, protocol))
                if len(rows) == 1 and paper_results(method, dataset):
                    assert f"not {protocol!r}: no row to compare with" in rows[0]["note"]


def test_checkpoint_with_code_is_refused(tmp_path):
    import os, torch
    from deepcluster_nb.runs import UnsafeCheckpoint
    from deepcluster_nb.report import load_run
    marker = tmp_path / "ran"
    class Payload:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    torch.save({"method": "cc", "model": Payload()}, tmp_path / "checkpoint.pt")
    with pytest.raises(UnsafeCheckpoint):
        load_run(tmp_path)
    assert not marker.exists()
