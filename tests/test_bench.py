"The throughput benchmark: the script's small CPU configuration end to end, and the pieces it is made of."
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "ci" / "bench_throughput.py"
FIGURES = ("aug_views_per_s_batched", "aug_views_per_s_pil", "aug_ratio_vs_pil", "train_views_per_s", "model_views_per_s",
           "pipeline_efficiency", "mfu", "ref_views_per_s", "speedup_vs_reference", "projected_hours")


def parse(text):
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep: out[name.strip()] = value.strip()
    return out


def test_script_small_cpu_config_prints_every_figure():
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", "small", "--device", "cpu", "--threads", "1"],
                       capture_output=True, text=True, timeout=180, cwd=REPO)
    elapsed = time.perf_counter() - t
    assert r.returncode == 0, r.stderr[-3000:]
    res = parse(r.stdout)
    for k in FIGURES:
        assert k in res, f"{k} missing from:\n{r.stdout}"
        v = float(res[k])
        assert math.isfinite(v) and v > 0, (k, v)
    assert res["device"].startswith("cpu") and res["method"] == "cc" and res["config"] == "small"
    assert elapsed < 60, f"the CI configuration took {elapsed:.0f} s"


def test_script_help_lists_configs():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0 and "--method" in r.stdout and "native,paper,small" in r.stdout


@pytest.fixture(autouse=True)
def one_thread():
    "Run the in-process timings on one CPU thread, as the script's CI configuration does."
    saved = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_projection_and_peaks():
    from deepcluster_nb.bench import projected_hours, datasheet_peak, format_results
    assert projected_hours(100.0, epochs=1000, n_images=60000, batch_size=256, n_views=2) == pytest.approx(
        1000 * 234 * 256 * 2 / 100 / 3600)
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert datasheet_peak("NVIDIA H200", "tf32") == pytest.approx(494.7e12)
    assert datasheet_peak("some other card", "bf16") is None
    assert format_results({"x_per_s": 1234.5678, "device": "cpu"}) == "x_per_s: 1235\ndevice: cpu"


def test_flops_counted_on_meta_match_real_tensors():
    from deepcluster_nb.bench import BENCH_CONFIGS, count_train_flops, make_trainer
    tr = make_trainer("cc", BENCH_CONFIGS["small"], device="cpu", n_images=64)
    assert count_train_flops(tr, "meta") == count_train_flops(tr, "cpu") > 0


def test_step_timing_uses_the_trainer_loop():
    from deepcluster_nb.bench import BENCH_CONFIGS, make_trainer, model_only_steps, time_steps
    from deepcluster_nb.augment import BatchAugment
    tr = make_trainer("cc", BENCH_CONFIGS["small"], device="cpu", n_images=64)   # 4 steps per epoch
    sec = time_steps(tr, steps=5, warmup=1)                                   # crosses an epoch boundary
    assert len(sec) == 5 and all(s > 0 for s in sec) and tr.global_step == 6 and tr.cfg.max_steps == 0
    before = {k: v.clone() for k, v in tr.method.state_dict().items()}
    assert len(model_only_steps(tr, steps=2, warmup=0)) == 2 and isinstance(tr.aug, BatchAugment)
    assert any(not torch.equal(before[k], v) for k, v in tr.method.state_dict().items()), "the model-only steps train"
