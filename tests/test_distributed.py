"""Data-parallel training with torchrun on CPU (gloo): exact gradients through the gather, a 2-process training run
through the command line, and TCC's momentum network and queues identical across processes."""
import json, sys
import torch
from conftest import ROOT, BIN, run

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

def test_gather_gives_the_single_process_gradient(tmp_path):
    out = tmp_path / "ddp.json"
    run(TORCHRUN + ["ci/ddp_check.py", str(out)], timeout=300)
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and res["max_abs_grad_error"] < 1e-6, res

def test_two_process_training_run(tmp_path):
    "`torchrun ... -m deepcluster_nb train ...`: the DistributedTrainer, the global batch split over two processes."
    r = run(TORCHRUN + ["-m", "deepcluster_nb", "train", "--method", "cc", "--dataset", "digits", "--epochs", "2",
                        "--eval_every", "1", "--progress", "false", "--out_dir", str(tmp_path), "--batch_size", "128",
                        "--device", "cpu"], timeout=600)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["epochs"] == 2 and m["steps"] == 2 * (1797 // 128)
    assert json.loads((tmp_path / "config.json").read_text())["world_size"] == 2
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and len(ck["history"]) == 2 and "acc" in ck["history"][-1]
    assert "2 processes" in r.stdout and r.stdout.count("metrics in ") == 1      # only process 0 reports

def test_tcc_queues_stay_identical_across_processes(tmp_path):
    "TCC under DDP: after a few steps both processes hold the same momentum network, cluster queue P and instance queue Q."
    out = tmp_path / "tcc.json"
    run(TORCHRUN + ["ci/ddp_tcc_check.py", str(out), str(tmp_path / "run")], timeout=300)
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and res["Q_ptr"] == 3 * 64 and res["P_ptr"] == 3 * 10 and res["queue_nonzero"], res
    assert res["max_diff"] == 0.0, res
