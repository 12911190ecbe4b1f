"The GPU campaign command, rehearsed on the CPU with tiny settings: every stage writes its result, and a second run skips them."
import json, sys
import numpy as np
from conftest import ROOT, run

def test_campaign_rehearsal_is_complete_and_resumable(tmp_path):
    r = np.random.default_rng(0)
    np.savez(tmp_path / "cifar10_test.npz", x=r.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), y=np.arange(64) % 10)
    cmd = [sys.executable, "ci/gpu_campaign.py", "--tiny", "--device", "cpu", "--out", str(tmp_path / "out"),
           "--data-root", str(tmp_path), "--methods", "cc,dcdc"]
    run(cmd, timeout=600)
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(res["stages"]) == {"bench_paper", "bench_native", "run_cc", "run_dcdc"}
    assert res["stages"]["run_dcdc"]["config"]["backbone"] == "resnet18" and res["stages"]["run_cc"]["result"]["steps"] >= 1
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| cc |" in md and "views/s" in md and res["commit"] in md
    again = run(cmd, timeout=600).stdout
    assert again.count("done, skipped") == 4

def test_campaign_says_where_the_data_goes(tmp_path):
    import subprocess
    r = subprocess.run([sys.executable, "ci/gpu_campaign.py", "--data-root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "cifar10_test.npz" in r.stderr
