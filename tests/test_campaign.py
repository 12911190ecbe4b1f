"""The GPU campaign command, rehearsed on the CPU with tiny settings: every stage in its own process writes its result,
a second run skips the finished stages, a stage that fails (an exception, a killed process, a hang) costs that stage
only and is retried on the next run, and a missing data file is named."""
import json, os, subprocess, sys
import numpy as np
import pytest
from conftest import ROOT, run

SCRIPT = "ci/gpu_campaign.py"
METHODS = ("cc", "dcdc", "crlc", "tcc", "cadec")
STAGES = {f"run_{m}" for m in METHODS} | {"bench_paper", "bench_native"}


def tiny_npz(folder):
    "64 random 32×32 colour images with ten labels, as cifar10_test.npz in `folder`."
    r = np.random.default_rng(0)
    np.savez(folder / "cifar10_test.npz", x=r.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), y=np.arange(64) % 10)
    return folder


def campaign(out, data, *args, fail=None):
    "The tiny campaign's command, and its environment (one CPU thread; `fail` injected into the stages it names)."
    env = {k: v for k, v in os.environ.items() if k != "DEEPCLUSTER_CAMPAIGN_FAIL"}
    env["OMP_NUM_THREADS"] = "1"
    if fail: env["DEEPCLUSTER_CAMPAIGN_FAIL"] = fail
    return [sys.executable, SCRIPT, "--tiny", "--device", "cpu", "--out", str(out), "--data-root", str(data), *args], env


def results(out): return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    "One complete tiny campaign (all five methods, both benchmark configurations), shared by the tests below."
    base = tmp_path_factory.mktemp("campaign")
    data, out = tiny_npz(base), base / "out"
    cmd, env = campaign(out, data)
    first = run(cmd, timeout=900, env=env)
    return cmd, env, out, first


def test_rehearsal_runs_every_stage(rehearsal):
    cmd, env, out, first = rehearsal
    res = results(out)
    assert set(res["stages"]) == STAGES
    for name, st in res["stages"].items():
        assert st["status"] == "ok" and "result" in st and "error" not in st, (name, st.get("error"))
        assert st["tiny"] and st["command"].startswith(f"python {SCRIPT} --stage {name}") and st["commit"] == res["commit"]
        assert st["environment"]["device"].startswith("cpu") and st["environment"]["torch"]
    assert res["commit"] and res["date"] and res["torch"] and res["device"].startswith("cpu")
    assert res["command"] == "python " + " ".join([SCRIPT, *cmd[2:]])
    for m in METHODS:
        r = res["stages"][f"run_{m}"]["result"]
        assert r["config"]["method"] == m and r["metrics"]["steps"] >= 1 and 0 <= r["metrics"]["acc"] <= 1
        assert len(r["curve"]) >= 2 and all("minutes" in p and "acc" in p for p in r["curve"])      # ACC at every epoch
        assert (out / m / "history.json").exists()
    assert res["stages"]["run_dcdc"]["result"]["config"]["backbone"] == "sobel_small_cnn"    # the Sobel path is kept
    for b in ("paper", "native"):
        r = res["stages"][f"bench_{b}"]["result"]
        assert r["config"] == f"{b} (tiny)" and r["backbone"] == "resnet34" and r["train_views_per_s"] > 0
    md = (out / "results.md").read_text()
    assert res["commit"] in md and "views/s" in md and "ACC against minutes" in md
    table = md.split("ACC against minutes")[1]
    for m in METHODS: assert f"| {m} |" in table
    assert (out / "acc_vs_minutes.png").stat().st_size > 0
    for s in STAGES: assert f"{s}: started" in first.stdout and (out / "logs" / f"{s}.log").exists()


def test_second_run_skips_finished_stages(rehearsal):
    cmd, env, out, _ = rehearsal
    before = results(out)["stages"]
    again = run(cmd, timeout=300, env=env).stdout
    assert again.count("skipped") == len(STAGES) and "started" not in again
    assert results(out)["stages"] == before


def test_failed_stage_is_recorded_and_retried(tmp_path):
    data = tiny_npz(tmp_path)
    out = tmp_path / "out"
    cmd, env = campaign(out, data, "--stages", "run_crlc,run_tcc", fail="run_crlc")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "run_crlc" in r.stderr
    st = results(out)["stages"]
    assert st["run_tcc"]["status"] == "ok" and st["run_tcc"]["result"]["metrics"]["steps"] >= 1   # the later stage ran
    err = st["run_crlc"]["error"]
    assert st["run_crlc"]["status"] == "failed" and "result" not in st["run_crlc"]
    assert err["type"] == "RuntimeError" and "injected" in err["message"]
    assert any("injected_failure" in line for line in err["traceback"]) and err["traceback"][-1].startswith("RuntimeError")
    assert "run_crlc" in (out / "results.md").read_text() and "RuntimeError" in (out / "results.md").read_text()
    cmd, env = campaign(out, data, "--stages", "run_crlc,run_tcc")
    again = run(cmd, timeout=600, env=env).stdout
    assert "run_tcc: finished" in again and "skipped" in again and "run_tcc: started" not in again
    assert "run_crlc: started" in again
    st2 = results(out)["stages"]
    assert st2["run_crlc"]["status"] == "ok" and "error" not in st2["run_crlc"]
    assert st2["run_tcc"] == st["run_tcc"]


def test_killed_and_timed_out_stages_are_recorded(tmp_path):
    data = tiny_npz(tmp_path)
    out = tmp_path / "out"
    cmd, env = campaign(out, data, "--stages", "run_cc,bench_native", "--stage-timeout", "25",
                        fail="run_cc:kill,bench_native:hang")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    st = results(out)["stages"]
    killed, hung = st["run_cc"]["error"], st["bench_native"]["error"]
    assert killed["type"] == "Killed" and killed["signal"] == "SIGKILL"
    assert any("failing stage run_cc (kill)" in line for line in killed["output_tail"])
    assert hung["type"] == "Timeout" and "25 s" in hung["message"]
    assert any("failing stage bench_native (hang)" in line for line in hung["output_tail"])


def test_missing_data_is_named(tmp_path):
    r = subprocess.run([sys.executable, SCRIPT, "--data-root", str(tmp_path), "--out", str(tmp_path / "out")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "cifar10_test.npz" in r.stderr and str(tmp_path) in r.stderr
    assert not (tmp_path / "out" / "results.json").exists()
