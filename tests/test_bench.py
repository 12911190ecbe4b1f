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
    t = time_steps(tr, steps=5, warmup=1)                                     # crosses an epoch boundary
    assert len(t.step_s) == 5 and all(s > 0 for s in t.step_s) and tr.global_step == 6 and tr.cfg.max_steps == 0
    assert t.total_s >= sum(t.step_s) * 0.999
    before = {k: v.clone() for k, v in tr.method.state_dict().items()}
    assert len(model_only_steps(tr, steps=2, warmup=0).step_s) == 2 and isinstance(tr.aug, BatchAugment)
    assert any(not torch.equal(before[k], v) for k, v in tr.method.state_dict().items()), "the model-only steps train"


class SteppedClock:
    """A fake wall clock that moves only when a method takes a training step: `fast` seconds a step for the first
    method instance it sees (our trainer's), `slow` for the others (the reference loop's copy), and a stall of
    `stall` seconds on every third step of each instance, so any six consecutive steps hold exactly two stalls."""
    def __init__(self, fast=0.01, slow=0.03, stall=1.0):
        self.t, self.fast, self.slow, self.stall, self.calls, self.first = 0.0, fast, slow, stall, {}, None
    def __call__(self): return self.t
    def step(self, method):
        if next(method.parameters()).device.type == "meta": return    # the trainer's memory estimate, not a timed step
        self.first = self.first or id(method)
        n = self.calls[id(method)] = self.calls.get(id(method), 0) + 1
        self.t += (self.fast if id(method) == self.first else self.slow) + (self.stall if n % 3 == 0 else 0.0)


def test_every_figure_uses_the_mean_over_the_timed_steps(monkeypatch):
    "One stall in three steps on both sides: the headline rates are the means, the medians are apart, and every derived figure uses the means."
    from deepcluster_nb.bench import run_benchmark, format_results, projected_hours
    from deepcluster_nb.models import get_method
    clock, cls = SteppedClock(), get_method("cc")
    original = cls.training_step
    def training_step(self, batch, head="main"):
        clock.step(self); return original(self, batch, head)
    monkeypatch.setattr(cls, "training_step", training_step)
    n, V = 6, 16 * 2                                                            # timed steps; views per step of `small`
    res = run_benchmark("cc", "cpu", "small", steps=n, warmup=1, ref_steps=n, workers=0, augment_only=False, now=clock)
    ours_s, ref_s = n * 0.01 + 2 * 1.0, n * 0.03 + 2 * 1.0                      # two stalls in every window of six steps
    for k in ("train", "model"):
        assert res[f"{k}_timed_s"] == pytest.approx(ours_s)
        assert res[f"{k}_views_per_s"] == pytest.approx(V * n / ours_s)
        assert res[f"{k}_views_per_s_median"] == pytest.approx(V / 0.01)
    assert res["ref_timed_s"] == pytest.approx(ref_s)
    assert res["ref_views_per_s"] == pytest.approx(V * n / ref_s) and res["ref_views_per_s_median"] == pytest.approx(V / 0.03)
    assert res["speedup_vs_reference"] == pytest.approx(ref_s / ours_s)          # 1.06 from the means; the medians would say 3
    assert res["pipeline_efficiency"] == pytest.approx(1.0)
    assert res["mfu"] == pytest.approx(res["train_gflops_per_view"] * V * n / ours_s / res["peak_tflops"] / 1e3)
    hours = lambda v: projected_hours(v, res["epochs"], 60000, 16, 2, 1)
    assert res["projected_hours"] == pytest.approx(hours(V * n / ours_s))
    assert res["ref_projected_hours"] == pytest.approx(hours(V * n / ref_s))
    printed = parse(format_results(res))
    for k in ("train_views_per_s", "model_views_per_s", "ref_views_per_s"):
        assert float(printed[k]) == pytest.approx(res[k], rel=1e-3) and float(printed[f"{k}_median"]) == pytest.approx(res[f"{k}_median"], rel=1e-3)


def _trainer_has(*names):
    from dataclasses import fields
    from deepcluster_nb.train import TrainConfig
    return set(names) <= {f.name for f in fields(TrainConfig)}


def _rehearse(config, **options):
    "The configuration's code paths at tiny sizes on the CPU, with the given speed options forced on, one PIL worker."
    from dataclasses import replace
    from deepcluster_nb.bench import BENCH_CONFIGS, run_benchmark
    res = run_benchmark("cc", "cpu", replace(BENCH_CONFIGS[config], **options), tiny=True, workers=1)
    assert res["config"] == "custom (tiny)" and res["backbone"] == "resnet34"
    assert (res["stem"], res["image_size"]) == {"paper": ("imagenet", 32), "native": ("small", 8)}[config]
    assert (res["batch_size"], res["n_clusters"]) == (2, 2)
    for k in FIGURES + ("train_views_per_s_median", "model_views_per_s_median", "ref_views_per_s_median"):
        assert math.isfinite(res[k]) and res[k] > 0, (k, res[k])
    for k, v in options.items(): assert res[k] is v, (k, res[k])
    return res


@pytest.mark.parametrize("config", ["paper", "native"])
def test_paper_and_native_code_paths_run_on_the_cpu_with_bf16(config):
    "ResNet-34 with the ImageNet stem, the crop resized up (paper) or the small stem (native), under bf16 autocast."
    res = _rehearse(config, amp=True)
    assert res["peak_source"].startswith("measured") and res["ref_workers"] == 1


@pytest.mark.skipif(not _trainer_has("channels_last", "fused"),
                    reason="TrainConfig has no channels_last / fused settings to force the GPU's memory format and optimiser on the CPU")
@pytest.mark.parametrize("config", ["paper", "native"])
def test_paper_and_native_code_paths_run_on_the_cpu_with_every_gpu_option(config):
    "As on a GPU: bf16 autocast, channels-last model and views, fused optimiser."
    _rehearse(config, amp=True, channels_last=True, fused=True)

