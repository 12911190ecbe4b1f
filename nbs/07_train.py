# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The trainer
# > One training loop for every method: configuration with the papers' defaults, data on the device, batched augmentation, mixed precision, evaluation, history, atomic checkpoints and exact resume.

# %%
#| default_exp train

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import os, json, time, math, random, inspect, csv, warnings, threading, queue
from dataclasses import dataclass, field, asdict, fields
from pathlib import Path
import numpy as np
import torch
from deepcluster_nb.data import load_dataset, ClusterData, ImageData, DATASETS, NATIVE_SIZE
from deepcluster_nb.augment import BatchAugment, AugmentConfig, cc_recipe
from deepcluster_nb.models import make_backbone, get_method, available_methods, Batch, BACKBONES
from deepcluster_nb.metrics import evaluate, cluster_sizes
from deepcluster_nb.distributed import init_distributed, gather_with_grad, rank_slice, wrap_ddp

# %% [markdown]
# ## Configuration
# A run is described by one flat dataclass. Any field left at `"auto"` is filled from the method's defaults for
# the dataset (the paper's settings on the paper's benchmarks), so `TrainConfig(method="cc", dataset="cifar10")` is
# the paper's run and every number can still be overridden. Method-specific hyperparameters go in `hparams`.

# %%
#| export
@dataclass
class TrainConfig:
    "Everything that defines a training run; fields left at 'auto' take the method's defaults for the dataset."
    method: str = "cc"               # clustering method (see `available_methods()`)
    dataset: str = "digits"          # benchmark name, a path to an .npz file or ImageFolder, or NAME of data_root/NAME.npz
    data_root: str | None = None     # data folder (default $DEEPCLUSTER_DATA or data/)
    protocol: str = "auto"           # "paper" splits, "train-test" (train on train, evaluate on test), or the method's choice
    backbone: str = "auto"           # small_cnn, resnet18, resnet34, resnet50 (optionally sobel_...)
    stem: str = "auto"               # "imagenet" (7×7, stride 2, max-pool) or "small" (3×3, stride 1) for ResNets
    image_size: int | str = "auto"   # training resolution; "native" keeps the dataset's
    n_clusters: int | str = "auto"   # K (default: the number of classes)
    epochs: int | str = "auto"       # passes over the data
    batch_size: int | str = "auto"   # images per step (each gives n_views views)
    optimizer: str = "auto"          # "adam" or "sgd"
    lr: float | str = "auto"         # learning rate
    weight_decay: float | str = "auto"  # weight decay
    momentum: float = 0.9            # SGD momentum
    seed: int = 0                    # seeds Python, NumPy and torch; each epoch reseeds from (seed, epoch)
    device: str = "auto"             # "auto" (cuda if available), "cuda", "cpu"
    amp: bool | str = "auto"         # bf16 autocast (auto: on for cuda)
    compile: bool = False            # torch.compile the backbone (falls back to eager, with a warning, if compiling fails)
    data_on_device: bool | str = "auto"  # keep the uint8 training set on the device; False: gather batches on the host ("auto": if it fits)
    out_dir: str = "runs/{method}_{dataset}_s{seed}"  # run folder: config, history, checkpoint, metrics, figures
    resume: bool = False             # continue from out_dir/checkpoint.pt if present
    eval_every: int = 10             # evaluate every N epochs (0: only at the end)
    max_steps: int = 0               # stop after this many optimiser steps (0: no limit) — for trimmed runs
    subset: int = 0                  # train on a random subset of this many images (0: all)
    progress: bool = True            # show a progress bar
    hparams: dict = field(default_factory=dict)  # method hyperparameters, e.g. {"tau_i": 0.5}

# %% [markdown]
# Resolution turns the "auto" fields into numbers and catches bad input early, with messages that list the valid
# choices.

# %%
#| export
def dataset_key(name:str) -> str:
    "The key under which methods look up their per-dataset defaults: the benchmark name, or 'custom'."
    return name if name in DATASETS else "custom"

GLOBAL_DEFAULTS = dict(backbone="resnet18", stem="small", image_size="native", epochs=100, batch_size=256,
                       optimizer="adam", lr=3e-4, weight_decay=0.0)

def resolve_config(cfg:TrainConfig, data:ClusterData) -> tuple[TrainConfig, AugmentConfig]:
    "Fill the 'auto' fields of `cfg` from the method's defaults for `data`; validate; return it with the augmentation."
    cls = get_method(cfg.method)
    key = dataset_key(cfg.dataset)
    md = cls.defaults(key)
    c = TrainConfig(**asdict(cfg))
    for f in GLOBAL_DEFAULTS:
        if getattr(c, f) == "auto": setattr(c, f, md.get(f, GLOBAL_DEFAULTS[f]))
    if c.image_size == "native": c.image_size = data.train.x.shape[-1]
    if c.n_clusters == "auto": c.n_clusters = data.n_clusters
    c.hparams = {**md.get("hparams", {}), **(cfg.hparams or {})}
    base = c.backbone[6:] if c.backbone.startswith("sobel_") else c.backbone
    if base not in BACKBONES: raise ValueError(f"Unknown backbone {c.backbone!r}. Valid: {', '.join(BACKBONES)} (optionally 'sobel_' + name)")
    if c.stem not in ("imagenet", "small"): raise ValueError(f"stem must be 'imagenet' or 'small', got {c.stem!r}")
    if c.optimizer not in ("adam", "sgd"): raise ValueError(f"optimizer must be 'adam' or 'sgd', got {c.optimizer!r}")
    for f in ("image_size", "n_clusters", "epochs", "batch_size"):
        v = getattr(c, f)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1: raise ValueError(f"{f} must be a positive integer, got {v!r}")
    if c.n_clusters < 2: raise ValueError(f"n_clusters must be at least 2, got {c.n_clusters}")
    if c.batch_size < c.n_clusters:
        raise ValueError(f"batch_size ({c.batch_size}) must be at least n_clusters ({c.n_clusters}): the cluster-level "
                         f"losses contrast the K columns of a batch's soft-label matrix")
    sig = inspect.signature(cls.__init__).parameters
    bad = [k for k in c.hparams if k not in sig]
    if bad: raise ValueError(f"Unknown hyperparameter(s) {bad} for method {c.method!r}. Valid: "
                             f"{', '.join(k for k in sig if k not in ('self', 'backbone', 'feat_dim', 'n_clusters'))}")
    aug = md.get("augment", cc_recipe)
    aug = aug(key, c.image_size) if callable(aug) else AugmentConfig(**{**asdict(aug), "size": c.image_size})
    return c, aug

# %%
_data = load_dataset("digits")
_c, _a = resolve_config(TrainConfig(), _data)
test_eq((_c.backbone, _c.image_size, _c.n_clusters, _c.optimizer), ("small_cnn", 8, 10, "adam")); test_eq(_a.kind, "digits")
test_fail(lambda: resolve_config(TrainConfig(method="kmeans"), _data), contains="Valid: cc")
test_fail(lambda: resolve_config(TrainConfig(backbone="vgg16"), _data), contains="Valid: small_cnn")
test_fail(lambda: resolve_config(TrainConfig(batch_size=8), _data), contains="at least n_clusters")
test_fail(lambda: resolve_config(TrainConfig(hparams={"tau": 1}), _data), contains="Valid: tau_i, tau_c")

# %% [markdown]
# ## Seeds
# Every epoch reseeds all generators from `(seed, epoch, pass)`. Two runs with the same seed see the same
# permutations and the same augmentations, and a run resumed from the checkpoint of epoch $e$ replays epoch $e+1$
# exactly as the uninterrupted run did — no generator state has to survive a kill.

# %%
#| export
def seed_everything(seed:int, *salt:int):
    "Seed Python, NumPy and torch (all devices) from `seed` and optional salts (e.g. the epoch)."
    s = int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0])
    random.seed(s); np.random.seed(s); torch.manual_seed(s)
    return s

# %%
seed_everything(3, 1); _r1 = torch.rand(3); seed_everything(3, 1); test_eq(torch.rand(3), _r1)
seed_everything(3, 2); assert not torch.equal(torch.rand(3), _r1)

# %% [markdown]
# ## Evaluation
# The cluster head's prediction on un-augmented images (resized to the training size and normalised).

# %%
#| export
@torch.no_grad()
def predict(method, data:ImageData, aug:BatchAugment, batch_size:int=512, device="cpu", amp:bool=False) -> dict:
    "Soft assignments `probs` (N, K) and backbone `features` (N, D) of every image, without augmentation, as NumPy."
    was = method.training; method.eval()
    outs = {"probs": [], "features": []}
    for i in range(0, len(data), batch_size):
        x = aug.eval_view(data.x[i:i + batch_size].to(device, non_blocking=True))
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            o = method(x)
        for k in outs: outs[k].append(o[k].float().cpu())
    method.train(was)
    return {k: torch.cat(v).numpy() for k, v in outs.items()}

def evaluate_clustering(y_true, probs:np.ndarray) -> dict:
    "ACC/NMI/ARI of argmax assignments plus cluster-usage diagnostics (empty clusters, largest cluster's share)."
    pred = probs.argmax(1)
    sizes = cluster_sizes(pred, probs.shape[1])
    m = evaluate(y_true, pred) if (np.asarray(y_true) >= 0).all() else {}
    return {**m, "empty_clusters": int((sizes == 0).sum()), "largest_cluster": float(sizes.max() / sizes.sum()),
            "cluster_sizes": sizes.tolist()}

# %% [markdown]
# ## Checkpoints and history
# A checkpoint is written after every epoch to a temporary file and moved into place with `os.replace`, which is
# atomic: a kill at any moment leaves either the previous checkpoint or the new one, never a torn file.

# %%
#| export
def atomic_save(obj, path):
    "torch.save to a temporary file, then atomically replace `path`."
    path = Path(path); tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp); os.replace(tmp, path)

def write_json(obj, path):
    "Write JSON atomically."
    path = Path(path); tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))); os.replace(tmp, path)

def write_history(history:list, out_dir):
    "The per-epoch history as history.json and history.csv (scalar columns)."
    out_dir = Path(out_dir); write_json(history, out_dir / "history.json")
    cols = []
    for h in history: cols += [k for k, v in h.items() if k not in cols and not isinstance(v, (list, dict))]
    with open(out_dir / "history.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, cols); w.writeheader()
        for h in history: w.writerow({k: h.get(k, "") for k in cols})
    os.replace(out_dir / "history.csv.tmp", out_dir / "history.csv")

# %% [markdown]
# ## The trainer
# The loop keeps the data where the model is (`uint8` on the device), draws a permutation per epoch, augments each
# batch on the device, and accumulates the step's scalars on the device: nothing in the hot loop waits for the GPU.
# A method may train several heads one after the other per epoch (`train_heads`). A non-finite loss stops the run
# at the end of the epoch with a clear message; the checkpoint of the last good epoch stays in place.

# %%
#| export
class NonFiniteLoss(RuntimeError):
    "Raised when a training loss becomes NaN or infinite."

def _device(name):
    if name == "auto": return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available(): raise ValueError("device='cuda' but no CUDA device is available")
    return torch.device(name)

def channel_stats(x:torch.Tensor, n:int=5000, seed:int=0):
    "Per-channel mean and std of uint8 images in [0, 1] units, from up to `n` random images."
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    xf = x[idx].float().div_(255)
    return xf.mean((0, 2, 3)).tolist(), xf.std((0, 2, 3)).clamp(min=1e-3).tolist()

# %% [markdown]
# ## Two speed switches
# **Where the images live.** With `data_on_device=True` the whole uint8 training set sits in device memory; an epoch
# is a permutation of indices and a batch is a slice of it, gathered on the device. At native size CIFAR-10 (60,000
# images) takes 184 MB and the largest of the papers' sets, STL-10 with its unlabelled split (113,000 images of
# 96 px), 3.1 GB, so they fit on one GPU. For a dataset that does not, `data_on_device=False` keeps the
# images in host memory and works like a DataLoader: a background thread gathers the uint8 images of the next
# batches on the host and pins them, and the main thread copies each batch with `non_blocking=True`, so the copy
# overlaps the GPU's work on the previous step. `"auto"` keeps the data on the device when it takes at most half of
# the free device memory. On the CPU both paths see the same permutation and give identical runs.

# %%
#| export
def use_data_on_device(setting:bool|str, # TrainConfig.data_on_device: True, False or "auto"
                       x:torch.Tensor, # the uint8 training images
                       device:torch.device, # the training device
                      ) -> bool:
    "Resolve `data_on_device`: 'auto' keeps the images on the device if they take at most half of its free memory."
    if isinstance(setting, str) and setting.lower() in ("true", "false"): setting = setting.lower() == "true"
    if isinstance(setting, (bool, np.bool_)): return bool(setting)
    if setting != "auto": raise ValueError(f"data_on_device must be True, False or 'auto', got {setting!r}")
    if device.type != "cuda": return True
    free, _ = torch.cuda.mem_get_info(device)
    return x.numel() * x.element_size() <= free // 2

def host_batches(x:torch.Tensor, # uint8 images (N, C, H, W) in host memory
                 perm:torch.Tensor, # host permutation of the N indices
                 batch_size:int, # images per batch
                 n_batches:int, # batches to yield
                 device:torch.device, # where the batches go
                 prefetch:int=2, # batches prepared ahead by the background thread
                ):
    "Yield (indices, images) on `device`, gathered from host memory in a background thread, pinned and copied asynchronously."
    pin = torch.device(device).type == "cuda"
    q, stop = queue.Queue(maxsize=prefetch), threading.Event()
    def put(item):
        while not stop.is_set():
            try: q.put(item, timeout=0.1); return True
            except queue.Full: pass
        return False
    def work():
        try:
            for s in range(n_batches):
                idx = perm[s * batch_size:(s + 1) * batch_size]
                xb = x.index_select(0, idx)
                if not put((idx.pin_memory(), xb.pin_memory()) if pin else (idx, xb)): return
        except Exception as e: put(e)
    t = threading.Thread(target=work, daemon=True, name="host_batches"); t.start()
    try:
        for _ in range(n_batches):
            item = q.get()
            if isinstance(item, Exception): raise item
            yield tuple(v.to(device, non_blocking=True) for v in item)
    finally:
        stop.set(); t.join()

# %%
_xh = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
_perm = torch.randperm(10)
_got = list(host_batches(_xh, _perm, 3, 3, torch.device("cpu")))
test_eq([i.tolist() for i, _ in _got], [_perm[s * 3:(s + 1) * 3].tolist() for s in range(3)])
test_eq(torch.cat([b[:, 0, 0, 0] for _, b in _got]).tolist(), _perm[:9].tolist())
_g = host_batches(_xh, _perm, 2, 5, torch.device("cpu")); next(_g); _g.close()   # stopping early ends the thread
assert not any(t.name == "host_batches" for t in threading.enumerate())
test_eq(use_data_on_device("auto", _xh, torch.device("cpu")), True); test_eq(use_data_on_device("false", _xh, torch.device("cpu")), False)
test_fail(lambda: use_data_on_device("sometimes", _xh, torch.device("cpu")), contains="True, False or 'auto'")

# %% [markdown]
# **Compiling.** `torch.compile` fuses the backbone's operations into fewer, larger kernels. Compiling can fail
# (no compiler available, an unsupported operation), and it fails at the first call, not when `torch.compile` is
# called. `compile_module` therefore swaps in a forward that calls the compiled code and, if that raises, warns
# once and runs the original forward from then on. It changes only the module's class, so the parameter names in
# the checkpoint stay the same, and a deep copy (a momentum encoder) stays compiled and stays correct.

# %%
#| export
def compile_module(module:torch.nn.Module, # compiled in place
                   backend:str|object="inductor", # a torch.compile backend
                  ) -> torch.nn.Module:
    "torch.compile `module`'s forward in place, keeping its state-dict names; fall back to eager, with a warning, if compiling fails."
    cls = type(module)
    compiled = torch.compile(cls.forward, backend=backend)
    failed = []
    def forward(self, *args, **kwargs):
        if not failed:
            try: return compiled(self, *args, **kwargs)
            except Exception as e:
                failed.append(e)
                warnings.warn(f"torch.compile of {cls.__name__} failed ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); "
                              f"running it eagerly")
        return cls.forward(self, *args, **kwargs)
    module.__class__ = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__, "_compiled_from": cls})
    return module

# %%
import copy
_bb, _ = make_backbone("small_cnn", 1); _bb.eval()
_xc = torch.randn(4, 1, 8, 8); _ref = _bb(_xc); _keys = list(_bb.state_dict())
compile_module(_bb, backend="eager")
test_close(_bb(_xc), _ref, eps=1e-6); test_eq(list(_bb.state_dict()), _keys); test_close(copy.deepcopy(_bb)(_xc), _ref, eps=1e-6)
def _no_compiler(gm, example_inputs): raise RuntimeError("no compiler")
_bb2, _ = make_backbone("small_cnn", 1); _bb2.eval(); _ref2 = _bb2(_xc)
compile_module(_bb2, backend=_no_compiler)
with warnings.catch_warnings(record=True) as _w:
    warnings.simplefilter("always"); _out2 = _bb2(_xc)
test_close(_out2, _ref2, eps=1e-6); assert any("running it eagerly" in str(w.message) for w in _w)

# %%
#| export
class Trainer:
    "Train any registered method on any dataset; `fit()` returns the final metrics."
    def __init__(self, cfg:TrainConfig, data:ClusterData|None=None):
        if cfg.protocol == "auto": cfg = TrainConfig(**{**asdict(cfg), "protocol": get_method(cfg.method).defaults(dataset_key(cfg.dataset)).get("protocol", "paper")})
        self.data = data if data is not None else load_dataset(cfg.dataset, cfg.data_root, cfg.protocol)
        self.cfg, self.aug_cfg = resolve_config(cfg, self.data)
        c = self.cfg
        self.out_dir = Path(c.out_dir.format(method=c.method, dataset=Path(str(c.dataset)).stem, seed=c.seed))
        self.device = _device(c.device)
        self.dist = init_distributed(self.device.type)   # a no-op unless started by torchrun
        if self.dist.enabled and self.device.type == "cuda": self.device = torch.device("cuda", self.dist.local_rank)
        if self.dist.enabled: rank_slice(c.batch_size, self.dist)   # the global batch must split evenly
        self.amp = (self.device.type == "cuda") if c.amp == "auto" else bool(c.amp)
        seed_everything(c.seed)
        train = self.data.train
        if c.subset and c.subset < len(train):
            train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(c.seed))[:c.subset].sort().values)
        self.train_data = train
        self.eval_data = train if self.data.eval is self.data.train else self.data.eval
        if len(train) < c.batch_size:
            raise ValueError(f"batch_size ({c.batch_size}) is larger than the training set ({len(train)} images)")
        self.data_on_device = use_data_on_device(c.data_on_device, train.x, self.device)
        mean, std = channel_stats(train.x)
        self.aug = BatchAugment(self.aug_cfg, mean, std).to(self.device)
        backbone, feat_dim = make_backbone(c.backbone, train.x.shape[1], c.stem == "small")
        self.method = get_method(c.method)(backbone, feat_dim, c.n_clusters, **c.hparams).to(self.device)
        if self.device.type == "cuda": self.method = self.method.to(memory_format=torch.channels_last)
        self.step_fn = self.method.training_step
        if self.dist.enabled:   # DDP: each process takes its slice of the batch; batch-wide losses gather all slices
            if self.device.type == "cuda": self.method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
            self.method.gather = gather_with_grad
            self.step_fn = wrap_ddp(self.method, self.dist, self.device)
        if c.compile: compile_module(self.method.backbone)
        groups = self.method.param_groups(c.weight_decay)
        fused = self.device.type == "cuda"
        self.opt = (torch.optim.Adam(groups, lr=c.lr, fused=fused) if c.optimizer == "adam"
                    else torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, fused=fused))
        self.x = train.x.to(self.device) if self.data_on_device else train.x
        self.epoch, self.global_step, self.history = 0, 0, []

    @property
    def steps_per_epoch(self): return len(self.train_data) // self.cfg.batch_size

    def batches(self, perm):
        "(indices, uint8 images) of each step of an epoch on the device: slices of the resident data, or gathered on the host."
        B = self.cfg.batch_size
        if not self.data_on_device:
            yield from host_batches(self.x, perm, B, self.steps_per_epoch, self.device); return
        for s in range(self.steps_per_epoch):
            idx = perm[s * B:(s + 1) * B]
            yield idx, self.x[idx]

    def state(self, finished=False) -> dict:
        return {"method": self.cfg.method, "dataset": self.cfg.dataset, "config": asdict(self.cfg), "augment": asdict(self.aug_cfg),
                "epoch": self.epoch, "global_step": self.global_step, "finished": finished,
                "model": self.method.state_dict(), "optimizer": self.opt.state_dict(), "history": self.history,
                "norm": {"mean": self.aug.mean.flatten().tolist(), "std": self.aug.std.flatten().tolist()}}

    def load_state(self, ck:dict):
        if ck["method"] != self.cfg.method or ck["dataset"] != self.cfg.dataset:
            raise ValueError(f"checkpoint is for method={ck['method']!r}, dataset={ck['dataset']!r}, "
                             f"not {self.cfg.method!r}/{self.cfg.dataset!r}")
        self.method.load_state_dict(ck["model"]); self.opt.load_state_dict(ck["optimizer"])
        self.epoch, self.global_step, self.history = ck["epoch"], ck["global_step"], ck["history"]

    def evaluate(self) -> dict:
        out = predict(self.method, self.eval_data, self.aug, device=self.device, amp=self.amp)
        return evaluate_clustering(self.eval_data.y, out["probs"])

    def _epoch(self, bar) -> dict:
        c, B, N = self.cfg, self.cfg.batch_size, len(self.x)
        sums, n = {}, 0
        self.method.train()
        for hi, head in enumerate(self.method.train_heads):
            seed_everything(c.seed, self.epoch, hi)
            perm = torch.randperm(N, device=self.x.device)   # the same on every process
            if self.dist.enabled: seed_everything(c.seed, self.epoch, hi, 1 + self.dist.rank)  # own augmentations per process
            batches = self.batches(perm)
            for idx, xb in batches:
                if self.dist.enabled: sl = rank_slice(len(idx), self.dist); idx, xb = idx[sl], xb[sl]
                views = [self.aug(xb) for _ in range(self.method.n_views)]
                if self.device.type == "cuda": views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                raw = self.aug.eval_view(xb) if self.method.needs_raw else None
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.amp):
                    out = self.step_fn(Batch(views, idx, raw), head)
                self.opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                self.opt.step()
                self.method.after_step()
                for k, v in out.items():
                    key = k if head == "main" else f"{head}/{k}"
                    sums[key] = sums.get(key, 0) + v.detach().float()
                n += head == "main"; self.global_step += 1
                if bar is not None: bar.update(1)
                if c.max_steps and self.global_step >= c.max_steps: break
            batches.close()
            if c.max_steps and self.global_step >= c.max_steps: break
        stats = {k: float(v) / max(n, 1) for k, v in sums.items()}
        bad = [k for k, v in stats.items() if not math.isfinite(v)]
        if bad: raise NonFiniteLoss(f"non-finite {bad} in epoch {self.epoch + 1} (step {self.global_step}); the last good "
                                    f"checkpoint is kept at {self.out_dir / 'checkpoint.pt'}. Try a lower lr or another seed.")
        return stats

    def fit(self) -> dict:
        "Train (or resume) to the configured number of epochs; write history, checkpoint and metrics; return the final metrics."
        from tqdm import tqdm
        c, main = self.cfg, self.dist.is_main   # under DDP only process 0 evaluates and writes the run folder
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ck_path = self.out_dir / "checkpoint.pt"
        if c.resume and ck_path.exists():
            self.load_state(torch.load(ck_path, map_location=self.device, weights_only=False))
            self.method.on_resume(self)
            print(f"resumed from {ck_path} at epoch {self.epoch}")
        else:
            seed_everything(c.seed, 10**6); self.method.on_train_start(self)
        if main: write_json({"config": asdict(c), "augment": asdict(self.aug_cfg), "n_train": len(self.train_data),
                             "n_eval": len(self.eval_data), "device": str(self.device), "world_size": self.dist.world_size,
                             "torch": torch.__version__}, self.out_dir / "config.json")
        total = c.epochs * self.steps_per_epoch * len(self.method.train_heads)
        if c.max_steps: total = min(total, c.max_steps)
        bar = tqdm(total=total, initial=min(self.global_step, total), desc=f"{c.method} on {Path(str(c.dataset)).stem}",
                   disable=not (c.progress and main), mininterval=2, dynamic_ncols=True)
        t0 = time.time()
        while self.epoch < c.epochs and not (c.max_steps and self.global_step >= c.max_steps):
            stats = self._epoch(bar)
            self.epoch += 1
            rec = {"epoch": self.epoch, "step": self.global_step, **stats, "time_s": round(time.time() - t0, 2)}
            last = self.epoch == c.epochs or (c.max_steps and self.global_step >= c.max_steps)
            if main and ((c.eval_every and self.epoch % c.eval_every == 0) or last):
                rec.update({k: v for k, v in self.evaluate().items() if k != "cluster_sizes"})
                bar.set_postfix(loss=f"{stats.get('loss', float('nan')):.3f}", acc=f"{rec.get('acc', float('nan')):.3f}")
            self.history.append(rec)
            if main:
                atomic_save(self.state(finished=bool(last)), ck_path)
                write_history(self.history, self.out_dir)
        bar.close()
        metrics = {"method": c.method, "dataset": str(c.dataset), "epochs": self.epoch, "steps": self.global_step,
                   "checkpoint": str(ck_path), "train_seconds": round(time.time() - t0, 1), "world_size": self.dist.world_size}
        if main:
            metrics = {**self.evaluate(), **metrics}
            write_json(metrics, self.out_dir / "metrics.json")
        return metrics

# %% [markdown]
# A short run on digits, small enough for the tests (two epochs):

# %%
import tempfile
with tempfile.TemporaryDirectory() as _t:
    _tr = Trainer(TrainConfig(epochs=2, out_dir=_t, progress=False, eval_every=1), _data)
    _m = _tr.fit()
    assert {"acc", "nmi", "ari", "cluster_sizes"} <= set(_m) and len(_tr.history) == 2
    assert (Path(_t) / "checkpoint.pt").exists() and (Path(_t) / "history.csv").exists()
    _ck = torch.load(Path(_t) / "checkpoint.pt", weights_only=False)
    test_eq(_ck["epoch"], 2); test_eq(_ck["finished"], True)
print({k: _m[k] for k in ("acc", "nmi", "ari")})

# %% [markdown]
# The host path gives the same run as the resident data (on the CPU both draw the same permutation):

# %%
def _short_run(**kw):
    with tempfile.TemporaryDirectory() as t:
        tr = Trainer(TrainConfig(epochs=2, subset=384, out_dir=t, progress=False, **kw), _data)   # 2 × 3 steps
        return tr.fit(), tr
(_m_dev, _t_dev), (_m_host, _t_host) = _short_run(), _short_run(data_on_device=False)
test_eq((_t_dev.data_on_device, _t_host.data_on_device), (True, False))
test_eq([h["loss"] for h in _t_host.history], [h["loss"] for h in _t_dev.history]); test_eq(_m_host["acc"], _m_dev["acc"])
for _k, _v in _t_dev.method.state_dict().items(): test_eq(_t_host.method.state_dict()[_k], _v)

# %% [markdown]
# With `compile=True` the backbone runs through `torch.compile` (slow to compile on the CPU, so this cell is
# skipped in the tests):

# %%
#| slow
_m_c, _t_c = _short_run(compile=True)
assert hasattr(type(_t_c.method.backbone), "_compiled_from")
test_close(_t_c.history[0]["loss"], _t_dev.history[0]["loss"], eps=1e-3)

# %% [markdown]
# ## Plots
# Training curves and the confusion matrix after Hungarian matching.

# %%
#| export
def plot_history(history:list, title:str=""):
    "Losses per epoch (left) and ACC/NMI/ARI at each evaluation (right)."
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    ep = [h["epoch"] for h in history]
    for k in [k for k in history[0] if k not in ("epoch", "step", "time_s") and not k.startswith(("acc", "nmi", "ari", "empty", "largest", "majority"))]:
        a.plot(ep, [h.get(k, np.nan) for h in history], label=k)
    a.set_xlabel("epoch"); a.set_ylabel("loss"); a.legend(fontsize=8, loc="best"); a.set_title("training losses")
    for k in ("acc", "nmi", "ari"):
        pts = [(h["epoch"], h[k]) for h in history if k in h]
        if pts: b.plot(*zip(*pts), marker="o", label=k.upper())
    b.set_xlabel("epoch"); b.set_ylim(0, 1); b.legend(fontsize=8, loc="best"); b.set_title("evaluation")
    from matplotlib.ticker import MaxNLocator
    for ax in (a, b): ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title: fig.suptitle(title)
    fig.tight_layout(); return fig

def matched_confusion(y_true, y_pred, n_clusters:int, return_order:bool=False) -> np.ndarray:
    "Confusion matrix (classes × clusters) with clusters reordered by the Hungarian matching (matched ones first)."
    from scipy.optimize import linear_sum_assignment
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    C = int(y_true.max()) + 1
    cm = np.zeros((C, max(n_clusters, int(y_pred.max()) + 1)), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    r, k = linear_sum_assignment(-cm)
    order = [int(k[np.argsort(r)][i]) for i in range(len(r))] + [j for j in range(cm.shape[1]) if j not in set(k)]
    return (cm[:, order], order) if return_order else cm[:, order]

def plot_confusion(y_true, y_pred, classes:list, n_clusters:int, title:str=""):
    "Heatmap of the matched confusion matrix, class names on the rows."
    import matplotlib.pyplot as plt, seaborn as sns
    cm, order = matched_confusion(y_true, y_pred, n_clusters, return_order=True)
    side = min(12, 3 + 0.45 * cm.shape[1])
    fig, ax = plt.subplots(figsize=(side, min(12, 2.5 + 0.4 * cm.shape[0])))
    sns.heatmap(cm, annot=cm.shape[1] <= 20, fmt="d", cmap="Blues", cbar=False, ax=ax,
                yticklabels=classes if len(classes) <= 40 else False, xticklabels=order if len(order) <= 40 else False)
    ax.set_xlabel("cluster id (in matched order)"); ax.set_ylabel("true class"); ax.set_title(title or "confusion after Hungarian matching")
    fig.tight_layout(); return fig

# %%
_cm = matched_confusion([0, 0, 1, 1, 2], [2, 2, 0, 0, 1], 3)
test_eq(np.diag(_cm).tolist(), [2, 2, 1])
test_eq(matched_confusion([0, 0, 1, 1, 2], [2, 2, 0, 0, 1], 3, return_order=True)[1], [2, 0, 1])
_ = plot_history(_tr.history, "2 epochs of CC on digits")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
