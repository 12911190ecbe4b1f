# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: throughput benchmark
# > Engineering around the course: how many augmented views per second a training run processes — our trainer against a loop built like the official CC code, augmentation alone, the model alone, MFU, and the hours a paper-length run would take.

# %%
#| default_exp bench

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail, test_is

# %%
#| export
from __future__ import annotations
import os, time, math, statistics, warnings
from dataclasses import dataclass, asdict, replace
from typing import Callable
import numpy as np
import torch
from deepcluster_nb.augment import AugmentConfig, BatchAugment
from deepcluster_nb.augment_kernels import cc_pil_transform, PILViews
from deepcluster_nb.data import ImageData, ClusterData
from deepcluster_nb.models import Batch, get_method, make_backbone
from deepcluster_nb.train import Trainer, TrainConfig, seed_everything, resolve_config, make_optimizer

# %% [markdown]
# This appendix measures the course's code rather than teaching a method: it answers "how long will the paper's run
# take on my machine, and is the time spent in the model or in the data path?" It drives the trainer only through
# its public pieces — `batches`, `train_step`, the method's hooks and `make_optimizer` — so what it times is what a
# training run executes. From a shell:
#
# ```bash
# python ci/bench_throughput.py --config small --device cpu --threads 1    # seconds; the test suite runs it
# python ci/bench_throughput.py --config paper --device cuda               # CC's paper setting: ResNet-34 at 224 px
# ```
#
# A contrastive clustering run processes two augmented views of every image for hundreds of epochs, so its cost is
# counted in **views per second**. Two loops compute the same thing:
#
# * **The reference loop**, written the way the official CC code trains: the dataset holds the images, every
#   `__getitem__` turns one image into a PIL image and runs torchvision's PIL transforms on it twice
#   (RandomResizedCrop, flip, ColorJitter with p = 0.8, Grayscale with p = 0.2, ToTensor), DataLoader worker
#   processes do this in parallel, the model runs in FP32 with one forward pass per view, and the loss is read with
#   `.item()` after every step.
# * **Our pipeline** (the `Trainer`): uint8 images on the device, one permutation per epoch, both views augmented
#   for the whole batch at once with per-image parameters (see `augment`), bf16 autocast, channels-last memory,
#   a fused optimiser, and no host synchronisation inside an epoch.
#
# **One statistic for every loop.** A rate is the mean over the timed steps, warm-up excluded: the views of the
# timed steps divided by their wall time, from the end of the last warm-up step to the end of the last timed step,
# with the device synchronised at both boundaries. Stalls (a slow batch from the loader, the allocator growing, a
# pause of the operating system) belong to the cost of training, and the mean counts them where a median of step
# times would hide them. Every derived figure — pipeline efficiency, MFU, projected hours and the speed-up over the
# reference — is computed from these means, for both loops alike. The median step rate of each loop is printed
# beside its mean (`*_median`), to show how uneven its steps are, and enters no other figure. (Augmentation alone is
# measured in whole passes, views over wall time, and both pipelines report the median of a few passes.)
#
# The benchmark reports, per method and configuration:
#
# | figure | meaning |
# |---|---|
# | `train_views_per_s` (`_median`) | our end-to-end training throughput (the median step rate beside it) |
# | `model_views_per_s` (`_median`) | the same loop with the augmentation replaced by ready-made views: the model's own speed |
# | `pipeline_efficiency` | `train_views_per_s / model_views_per_s`: the share of the model's speed the data path keeps |
# | `mfu` | model FLOPs utilisation: counted training FLOPs per view × `train_views_per_s` ÷ the device's peak |
# | `ref_views_per_s` (`_median`), `speedup_vs_reference` | the reference loop, in the same process on the same machine, and `train_views_per_s / ref_views_per_s` |
# | `projected_hours`, `ref_projected_hours` | hours for the paper's number of epochs at `train_views_per_s`, and at `ref_views_per_s` |
# | `train_timed_s`, `model_timed_s`, `ref_timed_s` | the wall time each rate is measured over |
# | `aug_views_per_s_batched`, `aug_views_per_s_pil`, `aug_ratio_vs_pil` | augmentation alone at 32 px: the batched module against the per-image PIL pipeline |
#
# The images are random uint8 tensors: no operation of either pipeline costs more or less on real pictures, and the
# benchmark then needs no dataset on disk.

# %% [markdown]
# The cells of this chapter time things on one CPU thread, the setting of the script's CI configuration; PyTorch's
# intra-op threads slow down badly when other programs share the cores.

# %%
torch.set_num_threads(1)

# %% [markdown]
# ## Configurations
# `small` is sized to finish in seconds on a CPU, so the tests run it; `paper` is the papers' setting (the method's
# defaults on CIFAR-10: for CC, ResNet-34 with the ImageNet stem, 32 px images cropped and resized to 224 px,
# batch 256); `native` keeps CIFAR's 32 px and uses the small-image stem. Fields left at `"auto"` take the method's
# defaults for `dataset`. The trainer's speed options — bf16 autocast, channels-last memory, the fused optimiser —
# are on with CUDA and off elsewhere unless a configuration sets them; setting them on the CPU lets a test run the
# GPU's code paths.

# %%
#| export
@dataclass
class BenchConfig:
    "One benchmark setting: the training run to time and how long to time it."
    dataset: str = "cifar10"        # benchmark whose method defaults (and paper epoch count) apply
    backbone: str = "auto"          # overrides of the method's defaults ...
    stem: str = "auto"
    image_size: int | str = "auto"
    batch_size: int | str = "auto"
    n_clusters: int | None = None   # clusters K (None: the data's 10 classes)
    source_px: int = 32             # side of the stored uint8 images (CIFAR's 32 px)
    n_paper_images: int = 60000     # images per epoch of the paper run (CIFAR-10 train + test) for `projected_hours`
    steps: int = 200                # timed steps of our pipeline (and of the model alone)
    warmup: int = 20                # untimed steps before them
    ref_steps: int = 50             # timed steps of the reference loop
    ref_warmup: int = 20            # untimed reference steps (worker start-up, the prefetched batches)
    aug_images: int = 4096          # images per augmentation-only measurement
    aug_batch: int = 256            # images per call of the batched module in that measurement
    aug_reps: int = 3               # augmentation-only measurements (the median is reported)
    amp: bool | None = None         # bf16 autocast (None: the trainer's choice, on with CUDA)
    channels_last: bool | None = None  # channels-last model and views (None: the trainer's choice, on with CUDA)
    fused: bool | None = None       # fused optimiser kernels (None: the trainer's choice, on with CUDA)

BENCH_CONFIGS = {
    "small": BenchConfig(backbone="small_cnn", stem="small", image_size=16, batch_size=16, steps=8, warmup=2,
                         ref_steps=4, ref_warmup=2, aug_images=1024, aug_reps=3),
    "paper": BenchConfig(),
    "native": BenchConfig(stem="small", image_size=32),
}

# %%
test_eq(BENCH_CONFIGS["paper"].image_size, "auto"); assert BENCH_CONFIGS["small"].steps < BENCH_CONFIGS["paper"].steps
test_eq((BENCH_CONFIGS["paper"].amp, BENCH_CONFIGS["paper"].channels_last, BENCH_CONFIGS["paper"].fused), (None, None, None))

# %% [markdown]
# A paper-sized configuration takes minutes even on a GPU. `shrink` keeps everything that decides which code runs —
# the method, backbone, stem, options, and whether the crop is resized up — and makes the images, the batch, the
# number of clusters and the step counts tiny, so its code paths run on a CPU in seconds (bf16 convolutions are
# slow on most CPUs, so a small batch counts). A fixed training side shrinks with the stored images
# (`native`'s 32 px of 32 px becomes 8 px of 8 px, the smallest side the small stem takes); an `"auto"` side becomes
# four times the stored one, so the crop is still resized up, as the paper's 32 px → 224 px is (8 px → 32 px, the
# smallest side the ImageNet stem takes).

# %%
#| export
def shrink(bench:BenchConfig, # the configuration to rehearse
           source_px:int=8, # side of the stored images
           batch_size:int=2, # images per step
           n_clusters:int=2, # clusters K (CC's loss contrasts the K cluster columns of a batch: K ≤ batch_size)
           steps:int=1, # timed steps of each loop (ours and the model alone without warm-up, the reference after one untimed step)
          ) -> BenchConfig:
    "`bench` with tiny images, batch and step counts, its backbone, stem and options kept: its code paths in seconds."
    size = (max(8, bench.image_size * source_px // bench.source_px) if isinstance(bench.image_size, int)
            else 4 * source_px)
    return replace(bench, source_px=source_px, image_size=size, batch_size=batch_size, n_clusters=n_clusters,
                   steps=steps, warmup=0, ref_steps=steps, ref_warmup=1, aug_images=4 * batch_size, aug_batch=batch_size,
                   aug_reps=1)

# %%
_tiny = shrink(replace(BENCH_CONFIGS["paper"], amp=True))
test_eq((_tiny.backbone, _tiny.stem, _tiny.image_size, _tiny.source_px, _tiny.batch_size, _tiny.n_clusters, _tiny.amp),
        ("auto", "auto", 32, 8, 2, 2, True))
test_eq((shrink(BENCH_CONFIGS["native"]).stem, shrink(BENCH_CONFIGS["native"]).image_size), ("small", 8))
test_eq((_tiny.steps, _tiny.warmup, _tiny.ref_steps, _tiny.ref_warmup, _tiny.aug_images, _tiny.aug_batch), (1, 0, 1, 1, 8, 2))

# %% [markdown]
# ## Data and a trainer to time
# `synthetic_data` makes a CIFAR-shaped data set of random pixels. `make_trainer` builds the `Trainer` for a method
# and configuration on it, exactly as a training run would, without starting `fit`.

# %%
#| export
def synthetic_data(n:int, # number of images
                   px:int=32, # image side
                   channels:int=3, # image channels
                   n_classes:int=10, # labels drawn uniformly
                   seed:int=0,
                  ) -> ClusterData:
    "A data set of random uint8 images with random labels (for timing only)."
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, px, px), dtype=torch.uint8, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g).numpy()
    d = ImageData(x, y, [str(i) for i in range(n_classes)], "synthetic")
    return ClusterData(d, d, n_classes, "synthetic")

def make_trainer(method:str, # a registered method
                 bench:BenchConfig, # what to time
                 device:str="auto", # "auto", "cuda" or "cpu"
                 n_images:int|None=None, # size of the synthetic set (default: enough for the timed steps)
                 **overrides, # further TrainConfig fields (compile, data_on_device, hparams, amp, ...)
                ) -> Trainer:
    "The Trainer of `method` for the configuration `bench`, on synthetic data, ready to step."
    options = {k: v for k, v in dict(channels_last=bench.channels_last, fused=bench.fused).items() if v is not None}
    params = dict(amp=bench.amp, **options); params.update(overrides)   # the trainer rejects an option it does not know
    cfg = TrainConfig.parse(method=method, dataset=bench.dataset, backbone=bench.backbone, stem=bench.stem,
                            image_size=bench.image_size, batch_size=bench.batch_size, n_clusters=bench.n_clusters,
                            device=device, progress=False, eval_every=0, **params)
    if n_images is None:   # the resolved batch size, before building anything
        B = resolve_config(cfg, synthetic_data(8, bench.source_px))[0].batch_size
        n_images = B * (max(bench.steps + bench.warmup, bench.ref_steps + bench.ref_warmup) + 1)
    return Trainer(cfg, synthetic_data(n_images, bench.source_px))

# %%
_tr = make_trainer("cc", BENCH_CONFIGS["small"], device="cpu")
test_eq((_tr.cfg.backbone, _tr.cfg.image_size, _tr.cfg.batch_size, _tr.device.type), ("small_cnn", 16, 16, "cpu"))
assert _tr.steps_per_epoch >= BENCH_CONFIGS["small"].steps + BENCH_CONFIGS["small"].warmup
test_eq(_tr.x.dtype, torch.uint8); test_eq(_tr.amp, False)
test_eq(make_trainer("cc", replace(BENCH_CONFIGS["small"], amp=True), device="cpu", n_images=32).amp, True)

# %% [markdown]
# ## Timing steps
# A `StepClock` measures one loop's timed steps. It starts at the end of the warm-up and stops after the last timed
# step; at both boundaries it waits for the device to finish its queued work and reads the wall clock, so the total
# is the wall time the timed steps took. In between it timestamps the end of each step, for the median: on a GPU
# with CUDA events recorded into the stream (the host does not wait, and the loop runs exactly as in training), on
# the CPU with the wall clock. It has the interface of a progress bar, so it can also be handed to
# `trainer.train_epoch(bar=...)`, which reports each finished step with `bar.update(1)`. What it returns is a
# `StepTimes`: the total and the step durations, and the two rates made from them.

# %%
#| export
@dataclass
class StepTimes:
    "The timed steps of one loop: their wall time in all (device synchronised at both ends) and each step's duration."
    total_s: float   # wall time from the end of the warm-up to the end of the last timed step
    step_s: list     # duration of each timed step, in seconds

    def rate(self, per_step:float) -> float:
        "The headline rate: `per_step` × timed steps ÷ their total wall time (the mean over the timed steps)."
        return per_step * len(self.step_s) / self.total_s

    def median_rate(self, per_step:float) -> float:
        "`per_step` ÷ the median step duration (printed beside the headline, used in no other figure)."
        return per_step / statistics.median(self.step_s)

# %% [markdown]
# Nine steps of 10 ms and one stall of a second: the mean counts the stall, the median does not see it.

# %%
_st = StepTimes(total_s=1.09, step_s=[0.01] * 9 + [1.0])
test_close(_st.rate(32), 32 * 10 / 1.09); test_close(_st.median_rate(32), 32 / 0.01)
assert _st.rate(32) < _st.median_rate(32) / 10

# %%
#| export
class StepClock:
    "A stand-in progress bar: wall time between device-synchronised start and stop, and a timestamp at each `update()`."
    def __init__(self, device, # where the steps run: CUDA events on a GPU, the wall clock elsewhere
                 now:Callable=time.perf_counter, # the wall clock (tests pass a fake one)
                ):
        self.cuda, self.now = torch.device(device).type == "cuda", now
        self._sync(); self.t0 = now()
        self.marks = [self._mark() if self.cuda else self.t0]

    def _sync(self):
        if self.cuda: torch.cuda.synchronize()

    def _mark(self):
        if not self.cuda: return self.now()
        e = torch.cuda.Event(enable_timing=True); e.record(); return e

    def update(self, n:int=1): self.marks.append(self._mark())
    def set_postfix(self, *a, **k): pass
    def close(self): pass

    def stop(self) -> StepTimes:
        "Wait for the device; the wall time since the start and the durations between consecutive marks."
        self._sync(); total = self.now() - self.t0
        if self.cuda: steps = [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        else: steps = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return StepTimes(total, steps)

# %% [markdown]
# A fake clock that jumps ahead when told shows what is measured: three steps, of 10 ms, 1 s and 10 ms.

# %%
class _FakeClock:
    "A wall clock that moves only when `advance` is called."
    def __init__(self): self.t = 0.0
    def __call__(self): return self.t
    def advance(self, dt): self.t += dt

_fake = _FakeClock(); _fake.advance(5.0)
_clock = StepClock("cpu", now=_fake)
for _dt in (0.01, 1.0, 0.01): _fake.advance(_dt); _clock.update(1)
_times = _clock.stop()
test_close(_times.total_s, 1.02); test_close(_times.step_s, [0.01, 1.0, 0.01])
test_close(_times.rate(2), 6 / 1.02); test_close(_times.median_rate(2), 200)

# %% [markdown]
# `time_steps` runs what the trainer's epochs run — a permutation, its `batches` (slices of the images on the device,
# or the host loader), and `train_step` (views, the method's loss, backward, optimiser step, the method's
# `after_step`) for each training pass — for `warmup + steps` optimiser steps, and times the last `steps` of them.
# It stops after exactly that many steps, wherever they fall in an epoch; epochs follow one another as in training.
# A new run first gets the method's `on_train_start`, as `fit` gives it.

# %%
#| export
def time_steps(trainer:Trainer, # a trainer, e.g. from `make_trainer`
               steps:int, # timed steps (at least one)
               warmup:int, # untimed steps first (compilation, cuDNN autotuning, allocator growth)
               now:Callable=time.perf_counter, # the wall clock (tests pass a fake one)
              ) -> StepTimes:
    "Run the trainer's batches and training steps, epoch after epoch, and time the steps after the warm-up."
    if steps < 1: raise ValueError(f"steps must be at least 1, got {steps}")
    c, m = trainer.cfg, trainer.method
    if trainer.global_step == 0: seed_everything(c.seed, 10**6); m.on_train_start(trainer.x, trainer.aug, c.seed)
    start, target = trainer.global_step + warmup, trainer.global_step + warmup + steps
    clock = StepClock(trainer.device, now) if warmup == 0 else None
    m.train()
    while trainer.global_step < target:
        for head in m.train_heads:
            batches = trainer.batches(torch.randperm(len(trainer.x), device=trainer.x.device))
            for idx, xb in batches:
                trainer.train_step(idx, xb, head)
                if clock is not None: clock.update()
                elif trainer.global_step == start: clock = StepClock(trainer.device, now)
                if trainer.global_step >= target: break
            batches.close()
            if trainer.global_step >= target: break
        trainer.epoch += 1
    return clock.stop()

def views_per_step(trainer:Trainer) -> int:
    "Augmented views one optimiser step processes."
    return trainer.cfg.batch_size * trainer.method.n_views

# %%
_sec = time_steps(_tr, steps=3, warmup=1)
test_eq(len(_sec.step_s), 3); assert all(s > 0 for s in _sec.step_s) and _sec.total_s >= sum(_sec.step_s) * 0.999
test_eq(views_per_step(_tr), 32)
test_fail(lambda: time_steps(_tr, steps=0, warmup=1), contains="at least 1")

# %% [markdown]
# ## The model alone
# To time the model without the data path, the trainer's augmentation is swapped for `FixedViews`, which hands out
# views computed once beforehand (already in the memory format the loop uses). The loop, the model, the loss and the
# optimiser are untouched, so `train_views_per_s / model_views_per_s` is the share of the model's speed that the
# data path (indexing, augmentation, normalisation) leaves.

# %%
#| export
class FixedViews(torch.nn.Module):
    "Stands in for `BatchAugment`: returns the same ready-made views (and raw view) on every call."
    def __init__(self, views:list, raw:torch.Tensor):
        super().__init__()
        self.views, self.raw, self.calls = views, raw, 0
    def forward(self, x, generator=None):
        v = self.views[self.calls % len(self.views)]; self.calls += 1; return v
    def eval_view(self, x): return self.raw

def memory_format_of(module:torch.nn.Module) -> torch.memory_format:
    "`torch.channels_last` if the module's convolution weights are stored channels-last, else `torch.contiguous_format`."
    cl = any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
             for p in module.parameters())
    return torch.channels_last if cl else torch.contiguous_format

def fixed_views_like(trainer:Trainer) -> FixedViews:
    "Augment one real batch once and wrap the views, in the model's memory format, in `FixedViews`."
    xb = trainer.x[:trainer.cfg.batch_size].to(trainer.device)
    fmt = memory_format_of(trainer.method)
    views = [trainer.aug(xb).contiguous(memory_format=fmt) for _ in range(trainer.method.n_views)]
    return FixedViews(views, trainer.aug.eval_view(xb))

def model_only_steps(trainer:Trainer, steps:int, warmup:int, now:Callable=time.perf_counter) -> StepTimes:
    "Like `time_steps`, with the augmentation replaced by fixed views."
    aug = trainer.aug
    trainer.aug = fixed_views_like(trainer)
    try: return time_steps(trainer, steps, warmup, now)
    finally: trainer.aug = aug

# %%
test_is(memory_format_of(_tr.method), torch.contiguous_format); test_is(memory_format_of(torch.nn.Linear(2, 2)), torch.contiguous_format)
_conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
test_is(memory_format_of(_conv), torch.channels_last)
_fv = fixed_views_like(_tr)
test_eq(len(_fv.views), 2); assert _fv(None) is _fv.views[0] and _fv(None) is _fv.views[1]
_sec_m = model_only_steps(_tr, steps=2, warmup=1)
test_eq(len(_sec_m.step_s), 2); assert isinstance(_tr.aug, BatchAugment)

# %% [markdown]
# ## FLOPs and MFU
# Model FLOPs utilisation compares the arithmetic the model needs with what the device could do in the same time:
#
# $$\text{MFU} = \frac{F_{\text{view}} \cdot \text{views/s}}{P_{\text{peak}}}.$$
#
# $F_{\text{view}}$ is counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` adds up the FLOPs of every
# matrix multiplication and convolution of one training step (forward and backward, the loss included), which we
# divide by the views in the step. The count runs on the `meta` device, where tensors have shapes but no data, so
# a ResNet-34 step at 224 px is counted in a second on any machine; a method whose step cannot run on `meta` is
# counted on the training device instead.

# %%
#| export
def count_train_flops(trainer:Trainer, # supplies the method, backbone and batch shape
                      device:str|torch.device="meta", # where to run the counted step
                     ) -> int: # FLOPs of one training step (forward + backward)
    "Count the FLOPs of one training step of a fresh copy of the trainer's method with FlopCounterMode."
    from torch.utils.flop_counter import FlopCounterMode
    c, C = trainer.cfg, trainer.train_data.x.shape[1]
    backbone, feat_dim = make_backbone(c.backbone, C, c.stem == "small", c.image_size)
    method = get_method(c.method)(backbone, feat_dim, c.n_clusters, **c.hparams).to(device)
    B, S = c.batch_size, c.image_size
    views = [torch.randn(B, C, S, S, device=device) for _ in range(method.n_views)]
    raw = torch.randn(B, C, S, S, device=device) if method.needs_raw else None
    with FlopCounterMode(display=False) as counter:
        out = method.training_step(Batch(views, torch.arange(B, device=device), raw), method.train_heads[0])
        out["loss"].backward()
    return counter.get_total_flops()

def train_flops_per_view(trainer:Trainer) -> float:
    "Counted training FLOPs per augmented view (on `meta`, else on the training device)."
    try: flops = count_train_flops(trainer, "meta")
    except Exception: flops = count_train_flops(trainer, trainer.device)
    return flops / views_per_step(trainer)

# %% [markdown]
# The count on `meta` equals the count on real tensors, and a training step costs between two and three forward
# passes (the backward pass computes gradients for the weights and, except at the input, for the activations):

# %%
from torch.utils.flop_counter import FlopCounterMode

# %%
_f_meta, _f_cpu = count_train_flops(_tr, "meta"), count_train_flops(_tr, "cpu")
test_eq(_f_meta, _f_cpu)
with FlopCounterMode(display=False) as _fc:
    _bb, _ = make_backbone("small_cnn", 3, True, 16); _bb(torch.randn(2, 3, 16, 16))
_fwd = _fc.get_total_flops() / 2
assert 2 * _fwd < train_flops_per_view(_tr) < 3.2 * _fwd, (train_flops_per_view(_tr), _fwd)

# %% [markdown]
# The peak $P_{\text{peak}}$ of a known GPU is its datasheet figure for dense arithmetic in the precision the run
# uses: bf16 with autocast, TF32 in FP32 (cuDNN runs FP32 convolutions in TF32 by default on these GPUs). On
# another device we measure the peak: the best speed of a large matrix multiplication, so the CPU's MFU says how
# close the model comes to the machine's own matmul speed.

# %%
#| export
DATASHEET_TFLOPS = {   # dense tensor-core peaks, TFLOP/s, by a substring of torch.cuda.get_device_name()
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 NVL": {"bf16": 835.0, "tf32": 417.5, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}

def datasheet_peak(name:str, precision:str) -> float | None:
    "Datasheet peak FLOP/s of a GPU by its name, or None if unknown (the first matching key wins)."
    for key, peaks in DATASHEET_TFLOPS.items():
        if key in name: return peaks[precision] * 1e12
    return None

def measured_matmul_peak(device, dtype=torch.float32, n:int|None=None, reps:int=3) -> float:
    "Best FLOP/s of an n×n matrix multiplication on `device`."
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(reps + 1):
        if device.type == "cuda": torch.cuda.synchronize()
        t = time.perf_counter(); a @ b
        if device.type == "cuda": torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best

def peak_flops(device, amp:bool) -> tuple:
    "(peak FLOP/s, source) for MFU: the datasheet for known GPUs, else a measured matmul."
    device = torch.device(device)
    if device.type == "cuda":
        precision = "bf16" if amp else ("tf32" if torch.backends.cudnn.allow_tf32 else "fp32")
        p = datasheet_peak(torch.cuda.get_device_name(device), precision)
        if p: return p, f"datasheet {precision}"
        dtype = torch.bfloat16 if amp else torch.float32
        return measured_matmul_peak(device, dtype), f"measured {dtype} matmul"
    return measured_matmul_peak(device), "measured float32 matmul"

# %%
test_eq(datasheet_peak("NVIDIA H100 80GB HBM3", "bf16"), 989.4e12); test_eq(datasheet_peak("NVIDIA H100 PCIe", "tf32"), 378e12)
test_eq(datasheet_peak("NVIDIA GeForce GTX 1080", "bf16"), None)
_peak, _src = peak_flops("cpu", amp=False)
assert _peak > 1e8 and _src.startswith("measured")

# %% [markdown]
# ## The reference loop
# The reference loop makes its views with the per-image PIL pipeline of the kernels appendix (`augment_kernels`):
# `cc_pil_transform` is the official per-image recipe for an `AugmentConfig` in torchvision's PIL transforms, checked
# there against the batched module, and `PILViews` is the loop's dataset (the images as a NumPy array, as
# torchvision's CIFAR class keeps them; each item a PIL image and its views).

# %%
_ds = PILViews(synthetic_data(4, 32).train.x, cc_pil_transform(AugmentConfig(size=24)), n_views=2, raw_size=24)
test_eq(len(_ds[1]), 4); test_eq(tuple(_ds[1][0].shape), (3, 24, 24))

# %% [markdown]
# The loop itself: a fresh copy of the trainer's method in FP32 and the default memory format, the same optimiser
# and learning rate without fusing, a shuffling DataLoader with `workers` processes, blocking copies to the device,
# one forward pass per view (CC's own `training_step` runs two unless `joint_forward` is set), and `loss.item()` after
# each step, which makes the host wait for the GPU every step. FP32 means PyTorch's defaults, under which cuDNN may
# run convolutions in TF32 on recent GPUs, as the official code would on such a GPU. It is timed by the same
# `StepClock` as our loop: each timed step from the end of the previous one, fetching its batch included, to the
# end of its `.item()`. When the loader is the bottleneck, batches arrive several at once and then none for a while,
# so the steps are uneven; the headline mean counts that, as it counts any stall of our loop.

# %%
#| export
def reference_steps(trainer:Trainer, # supplies the method, data, recipe and optimiser settings
                    steps:int, # timed steps
                    warmup:int, # untimed steps first (worker start-up and the batches they prefetch)
                    workers:int, # DataLoader worker processes (0: transform in the main process)
                    now:Callable=time.perf_counter, # the wall clock (tests pass a fake one)
                   ) -> StepTimes:
    "Train a copy of the trainer's method in the official loop's style and time its steps after the warm-up."
    c, dev = trainer.cfg, trainer.device
    C = trainer.train_data.x.shape[1]
    method = get_method(c.method)(*make_backbone(c.backbone, C, c.stem == "small", c.image_size), c.n_clusters,
                                  **c.hparams).to(dev)
    seed_everything(c.seed, 10**6); method.on_train_start(trainer.x, trainer.aug, c.seed)
    opt = make_optimizer(method, c.optimizer, c.lr, c.weight_decay, c.momentum, torch.device("cpu"))   # "cpu": not fused
    ds = PILViews(trainer.train_data.x, cc_pil_transform(trainer.aug_cfg), method.n_views,
                  c.image_size if method.needs_raw else None)
    loader = torch.utils.data.DataLoader(ds, batch_size=c.batch_size, shuffle=True, drop_last=True, num_workers=workers)
    if len(loader) < steps + warmup: raise ValueError(f"{len(loader)} batches, fewer than warmup + steps = {warmup + steps}")
    method.train()
    batches, clock = iter(loader), None
    for s in range(warmup + steps):
        if s == warmup: clock = StepClock(dev, now)
        *views, raw, idx = next(batches)
        views = [v.to(dev) for v in views]
        out = method.training_step(Batch(views, idx.to(dev), raw.to(dev) if method.needs_raw else None), method.train_heads[0])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_step(s + 1)
        out["loss"].item()
        if clock is not None: clock.update()
    return clock.stop()

# %%
_ref = reference_steps(_tr, steps=2, warmup=1, workers=0)
test_eq(len(_ref.step_s), 2); assert _ref.rate(32) > 0 and math.isfinite(_ref.rate(32))
test_fail(lambda: reference_steps(_tr, steps=10**4, warmup=1, workers=0), contains="fewer than warmup + steps")

# %% [markdown]
# ## Augmentation alone
# The per-image PIL pipeline and the batched module on the same 32 px images, producing one view per image. With
# `workers=0` both run in the main process (the batched module with PyTorch's threads); with `workers=n` on the CPU
# both run in $n$ DataLoader processes of one thread each, the PIL pipeline one image per call and the batched module
# one batch per call, so both get the same cores. Worker processes also keep the batched module's speed when other
# programs share the cores: PyTorch's intra-op threads must meet at the end of every operation, and a thread the
# system has parked makes all of them wait. On a GPU the batched module runs on the GPU and the PIL pipeline in
# `workers` processes, as in the reference loop. Each measurement is repeated `reps` times, alternating the two, and
# the medians are reported.

# %%
#| export
def _pil_views_per_s(x, tf, workers, batch_size):
    ds = PILViews(x, tf, n_views=1)
    if workers == 0:
        t = time.perf_counter()
        for i in range(len(ds)): ds[i]
        return len(ds) / (time.perf_counter() - t)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers)
    it = iter(loader); next(it)   # start-up and the first batch are not timed
    t, n = time.perf_counter(), 0
    for views, _, _ in it: n += len(views)
    return n / (time.perf_counter() - t)

class _AugBatches(torch.utils.data.Dataset):
    "Item i: the batched module applied to the i-th batch of images (for DataLoader workers)."
    def __init__(self, x, aug, batch_size): self.x, self.aug, self.B = x, aug, batch_size
    def __len__(self): return len(self.x) // self.B
    def __getitem__(self, i): return self.aug(self.x[i * self.B:(i + 1) * self.B])

def _batched_views_per_s(x, aug, batch_size, workers=0):
    dev = aug.mean.device
    if workers and dev.type == "cpu":
        loader = torch.utils.data.DataLoader(_AugBatches(x, aug, batch_size), batch_size=None, num_workers=workers)
        it = iter(loader); next(it)   # start-up and the first batch are not timed
        t, n = time.perf_counter(), 0
        for v in it: n += len(v)
        return n / (time.perf_counter() - t)
    x = x.to(dev)
    aug(x[:batch_size])
    if dev.type == "cuda": torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(0, len(x) - batch_size + 1, batch_size): aug(x[i:i + batch_size])
    if dev.type == "cuda": torch.cuda.synchronize()
    return (len(x) // batch_size) * batch_size / (time.perf_counter() - t)

def augment_throughput(cfg:AugmentConfig, # the recipe (its `size` is the output side)
                       device="cpu", # where the batched module runs
                       n_images:int=4096, # images per measurement
                       batch_size:int=256, # images per batched call
                       workers:int=0, # DataLoader processes (0: the main process); on a GPU only the PIL pipeline uses them
                       reps:int=3, # measurements of each (median reported)
                       px:int=32, # side of the source images
                      ) -> dict:
    "Views/s of the batched module and of the per-image PIL pipeline on the same random images, and their ratio."
    x = synthetic_data(n_images, px).train.x
    aug = BatchAugment(cfg, [0.5] * 3, [0.25] * 3).to(device)
    tf = cc_pil_transform(cfg)
    batched, pil = [], []
    for _ in range(reps):
        batched.append(_batched_views_per_s(x, aug, batch_size, workers))
        pil.append(_pil_views_per_s(x, tf, workers, batch_size))
    b, p = statistics.median(batched), statistics.median(pil)
    return {"aug_views_per_s_batched": b, "aug_views_per_s_pil": p, "aug_ratio_vs_pil": b / p}

# %%
for _w in (0, 1):
    _a = augment_throughput(AugmentConfig(size=32), n_images=768, reps=1, workers=_w)
    assert all(v > 0 and math.isfinite(v) for v in _a.values())
    test_close(_a["aug_ratio_vs_pil"], _a["aug_views_per_s_batched"] / _a["aug_views_per_s_pil"])

# %% [markdown]
# ## The whole benchmark
# `run_benchmark` measures everything for one method and configuration in one process and returns the figures in
# the order they are printed. The projected time of a paper run is
#
# $$\text{hours} = \frac{E \cdot \lfloor N/B \rfloor \cdot B \cdot V \cdot h}{\text{views/s} \cdot 3600},$$
#
# with $E$ the method's epochs on the benchmark, $N$ the images per epoch, $B$ the batch size, $V$ views per image
# and $h$ the passes per epoch (methods that train several heads in turn).

# %%
#| export
def projected_hours(views_per_s:float, # training throughput
                    epochs:int, # E
                    n_images:int, # N, images per epoch
                    batch_size:int, # B
                    n_views:int=2, # V
                    passes:int=1, # h, passes over the data per epoch
                   ) -> float:
    "Hours that `epochs` epochs take at `views_per_s`."
    return epochs * (n_images // batch_size) * batch_size * n_views * passes / views_per_s / 3600

# %%
test_close(projected_hours(1000.0, epochs=10, n_images=1000, batch_size=100, n_views=2), 10 * 1000 * 2 / 1000 / 3600)
test_close(projected_hours(1.0, 1, 250, 100, 1), 200 / 3600)   # the last partial batch is dropped

# %%
#| export
def _device_name(device):
    device = torch.device(device)
    if device.type == "cuda": return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"

def run_benchmark(method:str="cc", # a registered method
                  device:str="auto", # "auto", "cuda" or "cpu"
                  config:str|BenchConfig="small", # a key of BENCH_CONFIGS or a BenchConfig
                  steps:int|None=None, warmup:int|None=None, # override the configuration's timed / untimed steps
                  ref_steps:int|None=None, # override the reference loop's timed steps
                  threads:int|None=None, # PyTorch CPU threads for the run (default: leave as set)
                  workers:int|None=None, # PIL worker processes (default: up to 8 on a GPU machine; on the CPU 0 with one thread, else one per thread)
                  reference:bool=True, # also time the reference loop
                  augment_only:bool=True, # also time augmentation alone
                  tiny:bool=False, # `shrink` the configuration: its code paths at tiny sizes, in seconds
                  now:Callable=time.perf_counter, # the wall clock of the step timings (tests pass a fake one)
                  **overrides, # TrainConfig fields for our pipeline (compile, data_on_device, hparams, ...)
                 ) -> dict:
    "Time our pipeline, the model alone, the reference loop and augmentation alone; return every figure."
    if threads is not None:
        saved = torch.get_num_threads(); torch.set_num_threads(threads)
        try: return run_benchmark(method, device, config, steps, warmup, ref_steps, None, workers, reference, augment_only,
                                  tiny, now, **overrides)
        finally: torch.set_num_threads(saved)
    bench = BENCH_CONFIGS[config] if isinstance(config, str) else config
    if tiny: bench = shrink(bench)
    bench = replace(bench, **{k: v for k, v in dict(steps=steps, warmup=warmup, ref_steps=ref_steps).items() if v is not None})
    tr = make_trainer(method, bench, device, **overrides)
    dev = tr.device
    if workers is None:
        workers = min(8, len(os.sched_getaffinity(0))) if dev.type == "cuda" else (0 if torch.get_num_threads() == 1 else torch.get_num_threads())
    name = config if isinstance(config, str) else "custom"
    res = {"device": _device_name(dev), "method": method, "config": f"{name} (tiny)" if tiny else name,
           "backbone": tr.cfg.backbone, "stem": tr.cfg.stem, "image_size": tr.cfg.image_size, "batch_size": tr.cfg.batch_size,
           "n_clusters": tr.cfg.n_clusters, "amp": tr.amp, "channels_last": memory_format_of(tr.method) == torch.channels_last,
           "fused": bool(tr.opt.defaults.get("fused")), "compile": tr.cfg.compile, "data_on_device": tr.data_on_device}
    if augment_only:
        res.update(augment_throughput(replace(tr.aug_cfg, size=32) if tr.aug_cfg.kind == "simclr" else AugmentConfig(size=32),
                                      dev, bench.aug_images, bench.aug_batch, workers, bench.aug_reps, 32))
    V = views_per_step(tr)
    ours, model = time_steps(tr, bench.steps, bench.warmup, now), model_only_steps(tr, bench.steps, bench.warmup, now)
    res["train_views_per_s"], res["train_views_per_s_median"] = ours.rate(V), ours.median_rate(V)
    res["model_views_per_s"], res["model_views_per_s_median"] = model.rate(V), model.median_rate(V)
    res["train_timed_s"], res["model_timed_s"] = ours.total_s, model.total_s
    res["pipeline_efficiency"] = res["train_views_per_s"] / res["model_views_per_s"]
    res["train_gflops_per_view"] = train_flops_per_view(tr) / 1e9
    peak, source = peak_flops(dev, tr.amp)
    res["peak_tflops"], res["peak_source"] = peak / 1e12, source
    res["mfu"] = res["train_gflops_per_view"] * 1e9 * res["train_views_per_s"] / peak
    hours = lambda v: projected_hours(v, tr.cfg.epochs, bench.n_paper_images, tr.cfg.batch_size, tr.method.n_views,
                                      len(tr.method.train_heads))
    res["epochs"] = tr.cfg.epochs
    res["projected_hours"] = hours(res["train_views_per_s"])
    if reference:
        del tr.opt
        if dev.type == "cuda": torch.cuda.empty_cache()
        res["ref_workers"] = workers
        ref = reference_steps(tr, bench.ref_steps, bench.ref_warmup, workers, now)
        res["ref_views_per_s"], res["ref_views_per_s_median"] = ref.rate(V), ref.median_rate(V)
        res["ref_timed_s"] = ref.total_s
        res["speedup_vs_reference"] = res["train_views_per_s"] / res["ref_views_per_s"]
        res["ref_projected_hours"] = hours(res["ref_views_per_s"])
    return res

def format_results(res:dict) -> str:
    "One `name: value` line per figure."
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    return "\n".join(f"{k}: {fmt(v)}" for k, v in res.items())

# %%
show_doc(run_benchmark)

# %% [markdown]
# The small configuration on one CPU thread, trimmed further here to keep the notebook quick (the script
# `ci/bench_throughput.py` prints the same figures from the command line). The numbers of so short a run only
# show that every figure is produced; the README records measured ones.

# %%
_res = run_benchmark("cc", "cpu", "small", steps=3, warmup=1, ref_steps=2, threads=1)
print(format_results(_res))
for _k in ("aug_views_per_s_batched", "aug_views_per_s_pil", "aug_ratio_vs_pil", "train_views_per_s", "model_views_per_s",
           "pipeline_efficiency", "mfu", "ref_views_per_s", "speedup_vs_reference", "projected_hours",
           "train_views_per_s_median", "model_views_per_s_median", "ref_views_per_s_median"):
    assert _res[_k] > 0 and math.isfinite(_res[_k]), _k
test_close(_res["speedup_vs_reference"], _res["train_views_per_s"] / _res["ref_views_per_s"])
test_close(_res["pipeline_efficiency"], _res["train_views_per_s"] / _res["model_views_per_s"])
test_close(_res["train_views_per_s"], 3 * 32 / _res["train_timed_s"])
test_eq(format_results({"a": 1.23456, "b": "x"}), "a: 1.235\nb: x")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
