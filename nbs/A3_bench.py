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
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import os, time, math, statistics, warnings
from dataclasses import dataclass, asdict, replace
import numpy as np
import torch
from deepcluster_nb.augment import AugmentConfig, BatchAugment
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
# The benchmark reports, per method and configuration:
#
# | figure | meaning |
# |---|---|
# | `train_views_per_s` | our end-to-end training throughput: median over the timed steps, warm-up excluded |
# | `model_views_per_s` | the same loop with the augmentation replaced by ready-made views: the model's own speed |
# | `pipeline_efficiency` | `train_views_per_s / model_views_per_s`: the share of the model's speed the data path keeps |
# | `mfu` | model FLOPs utilisation: counted training FLOPs per view × views/s ÷ the device's peak |
# | `ref_views_per_s`, `speedup_vs_reference` | the reference loop, in the same process on the same machine, and our ratio to it |
# | `projected_hours` | hours for the paper's number of epochs at `train_views_per_s` |
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
# defaults for `dataset`.

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
    source_px: int = 32             # side of the stored uint8 images (CIFAR's 32 px)
    n_paper_images: int = 60000     # images per epoch of the paper run (CIFAR-10 train + test) for `projected_hours`
    steps: int = 200                # timed steps of our pipeline (and of the model alone)
    warmup: int = 20                # untimed steps before them
    ref_steps: int = 50             # timed steps of the reference loop
    ref_warmup: int = 20            # untimed reference steps (worker start-up, the prefetched batches)
    aug_images: int = 4096          # images per augmentation-only measurement
    aug_reps: int = 3               # augmentation-only measurements (the median is reported)

BENCH_CONFIGS = {
    "small": BenchConfig(backbone="small_cnn", stem="small", image_size=16, batch_size=16, steps=8, warmup=2,
                         ref_steps=4, ref_warmup=2, aug_images=1024, aug_reps=3),
    "paper": BenchConfig(),
    "native": BenchConfig(stem="small", image_size=32),
}

# %%
test_eq(BENCH_CONFIGS["paper"].image_size, "auto"); assert BENCH_CONFIGS["small"].steps < BENCH_CONFIGS["paper"].steps

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
    cfg = TrainConfig.parse(method=method, dataset=bench.dataset, backbone=bench.backbone, stem=bench.stem,
                            image_size=bench.image_size, batch_size=bench.batch_size, device=device, progress=False,
                            eval_every=0, **overrides)
    if n_images is None:   # the resolved batch size, before building anything
        B = resolve_config(cfg, synthetic_data(8, bench.source_px))[0].batch_size
        n_images = B * (max(bench.steps + bench.warmup, bench.ref_steps + bench.ref_warmup) + 1)
    return Trainer(cfg, synthetic_data(n_images, bench.source_px))

# %%
_tr = make_trainer("cc", BENCH_CONFIGS["small"], device="cpu")
test_eq((_tr.cfg.backbone, _tr.cfg.image_size, _tr.cfg.batch_size, _tr.device.type), ("small_cnn", 16, 16, "cpu"))
assert _tr.steps_per_epoch >= BENCH_CONFIGS["small"].steps + BENCH_CONFIGS["small"].warmup
test_eq(_tr.x.dtype, torch.uint8)

# %% [markdown]
# ## Timing steps
# A `StepClock` timestamps the end of each step. It has the interface of a progress bar, so it can also be handed to
# `trainer.train_epoch(bar=...)`, which reports each finished step with `bar.update(1)`. On a GPU the timestamps are
# CUDA events recorded into the stream: the host does not wait, the loop runs exactly as in training, and the events
# measure the GPU's timeline, which is what limits throughput. On the CPU they are wall-clock readings.

# %%
#| export
class StepClock:
    "A stand-in progress bar that timestamps each `update()`: CUDA events on a GPU, wall clock on the CPU."
    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.marks = []
        self.mark()

    def _now(self):
        if not self.cuda: return time.perf_counter()
        e = torch.cuda.Event(enable_timing=True); e.record(); return e

    def mark(self): self.marks.append(self._now())
    def update(self, n:int=1): self.mark()
    def set_postfix(self, *a, **k): pass
    def close(self): pass

    def step_seconds(self) -> list:
        "Durations between consecutive marks, in seconds."
        if not self.cuda: return [b - a for a, b in zip(self.marks, self.marks[1:])]
        torch.cuda.synchronize()
        return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]

# %%
_clock = StepClock("cpu")
for _ in range(3): time.sleep(0.02); _clock.update(1)
_d = _clock.step_seconds()
test_eq(len(_d), 3); assert all(0.015 < d < 0.5 for d in _d), _d

# %% [markdown]
# `time_steps` runs what the trainer's epochs run — a permutation, its `batches` (slices of the images on the device,
# or the host loader), and `train_step` (views, the method's loss, backward, optimiser step, the method's
# `after_step`) for each training pass — for `warmup + steps` optimiser steps, and returns the durations of the timed
# ones. It stops after exactly that many steps, wherever they fall in an epoch; epochs follow one another as in
# training. A new run first gets the method's `on_train_start`, as `fit` gives it.

# %%
#| export
def time_steps(trainer:Trainer, # a trainer, e.g. from `make_trainer`
               steps:int, # timed steps
               warmup:int, # untimed steps first (compilation, cuDNN autotuning, allocator growth)
              ) -> list: # seconds per timed step
    "Run the trainer's batches and training steps, epoch after epoch, and time each step after the warm-up."
    c, m = trainer.cfg, trainer.method
    if trainer.global_step == 0: seed_everything(c.seed, 10**6); m.on_train_start(trainer.x, trainer.aug, c.seed)
    target, clock = trainer.global_step + warmup + steps, StepClock(trainer.device)
    m.train()
    while trainer.global_step < target:
        for head in m.train_heads:
            batches = trainer.batches(torch.randperm(len(trainer.x), device=trainer.x.device))
            for idx, xb in batches:
                trainer.train_step(idx, xb, head); clock.update()
                if trainer.global_step >= target: break
            batches.close()
            if trainer.global_step >= target: break
        trainer.epoch += 1
    return clock.step_seconds()[warmup:]

def views_per_step(trainer:Trainer) -> int:
    "Augmented views one optimiser step processes."
    return trainer.cfg.batch_size * trainer.method.n_views

# %%
_sec = time_steps(_tr, steps=3, warmup=1)
test_eq(len(_sec), 3); assert all(s > 0 for s in _sec)
test_eq(views_per_step(_tr), 32)

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

def fixed_views_like(trainer:Trainer) -> FixedViews:
    "Augment one real batch once and wrap the views in `FixedViews`."
    xb = trainer.x[:trainer.cfg.batch_size].to(trainer.device)
    fmt = torch.channels_last if trainer.device.type == "cuda" else torch.contiguous_format
    views = [trainer.aug(xb).contiguous(memory_format=fmt) for _ in range(trainer.method.n_views)]
    return FixedViews(views, trainer.aug.eval_view(xb))

def model_only_steps(trainer:Trainer, steps:int, warmup:int) -> list:
    "Like `time_steps`, with the augmentation replaced by fixed views."
    aug = trainer.aug
    trainer.aug = fixed_views_like(trainer)
    try: return time_steps(trainer, steps, warmup)
    finally: trainer.aug = aug

# %%
_fv = fixed_views_like(_tr)
test_eq(len(_fv.views), 2); assert _fv(None) is _fv.views[0] and _fv(None) is _fv.views[1]
_sec_m = model_only_steps(_tr, steps=2, warmup=1)
test_eq(len(_sec_m), 2); assert isinstance(_tr.aug, BatchAugment)

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
# `cc_pil_transform` is the official per-image recipe for an `AugmentConfig`, in torchvision's PIL transforms.
# `PILViews` is the dataset of that loop: it stores the images as a NumPy array (as torchvision's CIFAR class does),
# and each item builds a PIL image and draws its views.

# %%
#| export
def cc_pil_transform(cfg:AugmentConfig):
    "The per-image PIL pipeline of a SimCLR-family recipe: crop, flip, jitter (p), grayscale (p), blur (p), ToTensor."
    import torchvision.transforms as T
    if cfg.kind != "simclr": raise ValueError(f"the PIL reference covers the SimCLR-family recipe, not {cfg.kind!r}")
    tf = [T.RandomResizedCrop(cfg.size, scale=cfg.crop_scale)]
    if cfg.hflip: tf.append(T.RandomHorizontalFlip())
    tf += [T.RandomApply([T.ColorJitter(*cfg.jitter)], p=cfg.jitter_p), T.RandomGrayscale(cfg.gray_p)]
    if cfg.blur_p > 0: tf.append(T.RandomApply([T.GaussianBlur(cfg.blur_kernel, cfg.blur_sigma)], p=cfg.blur_p))
    return T.Compose(tf + [T.ToTensor()])

class PILViews(torch.utils.data.Dataset):
    "Images kept as a NumPy array; an item is `n_views` PIL-transformed views, the resized raw image if asked, and the index."
    def __init__(self, x:torch.Tensor, transform, n_views:int=2, raw_size:int|None=None):
        self.x = x.permute(0, 2, 3, 1).numpy()   # (N, H, W, C) uint8, like torchvision's CIFAR
        self.transform, self.n_views, self.raw_size = transform, n_views, raw_size
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        from PIL import Image
        import torchvision.transforms.functional as TF
        a = self.x[i]
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
        views = [self.transform(img) for _ in range(self.n_views)]
        raw = TF.to_tensor(TF.resize(img, [self.raw_size] * 2)) if self.raw_size else torch.zeros(0)
        return (*views, raw, i)

# %%
_cfg = AugmentConfig(size=24)
_ds = PILViews(synthetic_data(4, 32).train.x, cc_pil_transform(_cfg), n_views=2, raw_size=24)
_item = _ds[1]
test_eq(len(_item), 4); test_eq(tuple(_item[0].shape), (3, 24, 24)); test_eq(_item[3], 1)
assert not torch.equal(_item[0], _item[1]) and 0 <= _item[0].min() and _item[0].max() <= 1
test_fail(lambda: cc_pil_transform(AugmentConfig(kind="digits")), contains="SimCLR-family")

# %% [markdown]
# The loop itself: a fresh copy of the trainer's method in FP32 and the default memory format, the same optimiser
# and learning rate without fusing, a shuffling DataLoader with `workers` processes, blocking copies to the device,
# one forward pass per view (CC's own `training_step` runs two unless `joint_forward` is set), and `loss.item()` after
# each step, which makes the host wait for the GPU every step. FP32 means PyTorch's defaults, under which cuDNN may
# run convolutions in TF32 on recent GPUs, as the official code would on such a GPU. Its throughput is the views of
# the timed steps over their wall-clock time: when the loader is the bottleneck, batches can arrive several at once and
# then none for a while, so the time per step is uneven and only the total is a fair measure. (Our loop's steps are
# even; `run_benchmark` reports both their median, as `train_views_per_s`, and their mean.)

# %%
#| export
def reference_throughput(trainer:Trainer, # supplies the method, data, recipe and optimiser settings
                         steps:int, # timed steps
                         warmup:int, # untimed steps first (worker start-up and the batches they prefetch)
                         workers:int, # DataLoader worker processes (0: transform in the main process)
                        ) -> float: # views per second
    "Train a copy of the trainer's method in the official loop's style and return its views/s."
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
    t0 = None
    for s, batch in enumerate(loader):
        if s == warmup: t0 = time.perf_counter()
        if s == warmup + steps: break
        *views, raw, idx = batch
        views = [v.to(dev) for v in views]
        out = method.training_step(Batch(views, idx.to(dev), raw.to(dev) if method.needs_raw else None), method.train_heads[0])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_step(s + 1)
        out["loss"].item()
    return steps * c.batch_size * method.n_views / (time.perf_counter() - t0)

# %%
_ref = reference_throughput(_tr, steps=2, warmup=1, workers=0)
assert _ref > 0 and math.isfinite(_ref)

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
                  **overrides, # TrainConfig fields for our pipeline (compile, data_on_device, hparams, ...)
                 ) -> dict:
    "Time our pipeline, the model alone, the reference loop and augmentation alone; return every figure."
    if threads is not None:
        saved = torch.get_num_threads(); torch.set_num_threads(threads)
        try: return run_benchmark(method, device, config, steps, warmup, ref_steps, None, workers, reference, augment_only, **overrides)
        finally: torch.set_num_threads(saved)
    bench = BENCH_CONFIGS[config] if isinstance(config, str) else config
    bench = replace(bench, **{k: v for k, v in dict(steps=steps, warmup=warmup, ref_steps=ref_steps).items() if v is not None})
    tr = make_trainer(method, bench, device, **overrides)
    dev = tr.device
    if workers is None:
        workers = min(8, len(os.sched_getaffinity(0))) if dev.type == "cuda" else (0 if torch.get_num_threads() == 1 else torch.get_num_threads())
    res = {"device": _device_name(dev), "method": method, "config": config if isinstance(config, str) else "custom",
           "backbone": tr.cfg.backbone, "stem": tr.cfg.stem, "image_size": tr.cfg.image_size, "batch_size": tr.cfg.batch_size,
           "amp": tr.amp, "compile": tr.cfg.compile, "data_on_device": tr.data_on_device}
    if augment_only:
        res.update(augment_throughput(replace(tr.aug_cfg, size=32) if tr.aug_cfg.kind == "simclr" else AugmentConfig(size=32),
                                      dev, bench.aug_images, 256, workers, bench.aug_reps, 32))
    V = views_per_step(tr)
    sec = time_steps(tr, bench.steps, bench.warmup)
    res["train_views_per_s"] = V / statistics.median(sec)
    res["train_views_per_s_mean"] = V * len(sec) / sum(sec)
    res["model_views_per_s"] = V / statistics.median(model_only_steps(tr, bench.steps, bench.warmup))
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
        res["ref_views_per_s"] = reference_throughput(tr, bench.ref_steps, bench.ref_warmup, workers)
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
           "pipeline_efficiency", "mfu", "ref_views_per_s", "speedup_vs_reference", "projected_hours"):
    assert _res[_k] > 0 and math.isfinite(_res[_k]), _k
test_eq(format_results({"a": 1.23456, "b": "x"}), "a: 1.235\nb: x")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
