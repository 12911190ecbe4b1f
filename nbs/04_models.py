# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Models and the method interface
# > Backbones (ResNet-18/34/50 with an ImageNet or small-image stem, a small CNN for CPU runs), the two heads of contrastive clustering, the small interface every method implements, and `predict`, which runs a method over a dataset.

# %%
#| default_exp models

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import copy, importlib, importlib.util, inspect, math, re
from dataclasses import dataclass
from pathlib import Path
import torch
import torch.nn as nn
import torch.nn.functional as F
from deepcluster_nb.data import ImageData

# %% [markdown]
# ## Backbones
# The papers use torchvision's ResNets. At 224 px the ImageNet stem (7×7 convolution with stride 2, then max-pool)
# is right; at native CIFAR resolution (32 px) it would shrink the image to 8×8 before the first residual block, so
# the "small-image" stem replaces it with a 3×3 stride-1 convolution and no max-pool. Grey images get a
# one-channel first convolution.

# %%
#| export
RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
BACKBONES = ("small_cnn",) + tuple(RESNETS)

def resnet(name:str="resnet34", # "resnet18", "resnet34" or "resnet50"
           small_stem:bool=False, # 3×3 stride-1 first convolution and no max-pool (for 32–96 px images)
           in_channels:int=3, # image channels
          ) -> tuple[nn.Module, int]: # (backbone returning features, feature dimension)
    "A randomly initialised torchvision ResNet without its classifier."
    import torchvision
    if name not in RESNETS: raise ValueError(f"Unknown ResNet {name!r}; valid: {', '.join(RESNETS)}")
    m = getattr(torchvision.models, name)(weights=None)
    if small_stem:
        m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False); m.maxpool = nn.Identity()
    elif in_channels != 3:
        m.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    m.fc = nn.Identity()
    return m, RESNETS[name]

# %%
_m, _d = resnet("resnet18", small_stem=True)
test_eq(_m(torch.randn(2, 3, 32, 32)).shape, (2, 512))
test_eq(resnet("resnet18", in_channels=1)[0](torch.randn(2, 1, 64, 64)).shape, (2, 512))
test_fail(lambda: resnet("resnet19"), contains="valid: resnet18")

# %% [markdown]
# For CPU runs on digits a ResNet is overkill: a small CNN of four 3×3 convolution blocks with batch norm, one
# 2×2 pooling and a global average pool learns the 8×8 digits in seconds. Its cost grows with the image area, so for
# larger images (USPS at 16 px, MNIST at 28 px) it starts with cheap stages — a 3×3 convolution to half the width
# and a 2×2 max-pool — until the image is at most 8 px wide: the expensive blocks then always run at digit size,
# and a step on MNIST costs about what it costs on the 8×8 digits.

# %%
#| export
class SmallCNN(nn.Module):
    "A small convolutional backbone for small grey images (digits, MNIST, USPS) on CPU."
    def __init__(self, in_channels:int=1, # image channels
                 width:int=64, # channels of the first blocks (the later ones have twice as many)
                 out_dim:int=256, # feature dimension
                 image_size:int|None=None, # input side; above 8 px, stride-2 stages bring it down to at most 8 px first
                ):
        super().__init__()
        block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        stem, c = [], in_channels
        for _ in range(0 if not image_size else max(0, math.ceil(math.log2(image_size / 8)))):
            stem += [*block(c, width // 2), nn.MaxPool2d(2)]; c = width // 2
        self.net = nn.Sequential(*stem, *block(c, width), *block(width, width), nn.MaxPool2d(2),
                                 *block(width, 2 * width), *block(2 * width, 2 * width),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, out_dim), nn.BatchNorm1d(out_dim),
                                 nn.ReLU(inplace=True))
        self.out_dim = out_dim
    def forward(self, x): return self.net(x)

# %%
test_eq(SmallCNN()(torch.randn(4, 1, 8, 8)).shape, (4, 256))
test_eq(len(SmallCNN(image_size=8).net), len(SmallCNN().net))                          # 8 px: no extra stage
for _s, _n in [(16, 1), (28, 2), (32, 2), (96, 4)]:
    _m = SmallCNN(image_size=_s)
    test_eq(sum(isinstance(l, nn.MaxPool2d) for l in _m.net) - 1, _n); test_eq(_m(torch.randn(2, 1, _s, _s)).shape, (2, 256))

# %%
#| export
class SobelFilter(nn.Module):
    "A frozen Sobel layer: grayscale, then horizontal and vertical gradients (2 channels), as in DCDC's official backbone."
    def __init__(self):
        super().__init__()
        k = torch.tensor([[1., 0, -1], [2, 0, -2], [1, 0, -1]])
        self.register_buffer("weight", torch.stack([k, k.t()])[:, None])
    def forward(self, x):
        if x.shape[1] == 3: x = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]
        return F.conv2d(x, self.weight, padding=1)

def make_backbone(name:str, # one of `BACKBONES`, optionally prefixed "sobel_" (e.g. "sobel_resnet34")
                  in_channels:int=3, # image channels
                  small_stem:bool=False, # small-image stem for ResNets
                  image_size:int|None=None, # input side (the small CNN adds down-sampling stages above 8 px)
                 ) -> tuple[nn.Module, int]: # (backbone, feature dimension)
    "Build a backbone by name."
    if name.startswith("sobel_"):
        body, d = make_backbone(name[6:], 2, small_stem, image_size)
        return nn.Sequential(SobelFilter(), body), d
    if name == "small_cnn": m = SmallCNN(in_channels, image_size=image_size); return m, m.out_dim
    if name in RESNETS: return resnet(name, small_stem, in_channels)
    raise ValueError(f"Unknown backbone {name!r}. Valid: {', '.join(BACKBONES)} (each optionally prefixed 'sobel_')")

# %%
test_eq(make_backbone("sobel_small_cnn", 3)[0](torch.randn(2, 3, 8, 8)).shape, (2, 256))
test_fail(lambda: make_backbone("vgg"), contains="Valid: small_cnn, resnet18")

# %% [markdown]
# ## Heads
# Contrastive clustering puts two heads on the backbone's feature $h$: the **instance projector** $g_I$ (a two-layer
# MLP to a 128-d vector $z$ that is compared after L2 normalisation) and the **cluster head** $g_C$ (a two-layer MLP
# to $K$ logits, then a softmax: the soft assignment of an image to the $K$ clusters).

# %%
#| export
def mlp(in_dim:int, hidden:int, out_dim:int, batch_norm:bool=False) -> nn.Sequential:
    "Linear → (BatchNorm) → ReLU → Linear."
    return nn.Sequential(nn.Linear(in_dim, hidden), *([nn.BatchNorm1d(hidden)] if batch_norm else []), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))

def instance_projector(feat_dim:int, out_dim:int=128) -> nn.Module:
    "CC's instance head g_I: a two-layer MLP feat_dim → feat_dim → out_dim."
    return mlp(feat_dim, feat_dim, out_dim)

def cluster_head(feat_dim:int, n_clusters:int) -> nn.Module:
    "CC's cluster head g_C: a two-layer MLP feat_dim → feat_dim → K followed by a softmax over clusters."
    return nn.Sequential(mlp(feat_dim, feat_dim, n_clusters), nn.Softmax(dim=1))

# %%
_p = cluster_head(16, 5)(torch.randn(3, 16))
test_close(_p.sum(1), torch.ones(3)); test_eq(instance_projector(16)(torch.randn(3, 16)).shape, (3, 128))

# %% [markdown]
# ## Momentum encoders and queues
# MoCo-style methods (TCC) keep a slowly moving copy of the network, $\hat\theta \leftarrow m\hat\theta + (1-m)\theta$,
# and a FIFO queue of its past outputs. The update is done with `torch._foreach` ops (one kernel launch per group on
# a GPU), and the queue is a ring buffer on the same device.

# %%
#| export
class MomentumEncoder(nn.Module):
    "A frozen copy of `module` updated as an exponential moving average of it."
    def __init__(self, module:nn.Module, momentum:float=0.999):
        super().__init__()
        self.ema, self.momentum = copy.deepcopy(module), momentum
        for p in self.ema.parameters(): p.requires_grad_(False)
    @torch.no_grad()
    def update(self, module:nn.Module):
        "θ̂ ← m θ̂ + (1 − m) θ for parameters; buffers (BatchNorm statistics) are copied."
        ema_p, p = list(self.ema.parameters()), list(module.parameters())
        torch._foreach_mul_(ema_p, self.momentum); torch._foreach_add_(ema_p, p, alpha=1 - self.momentum)
        for b_ema, b in zip(self.ema.buffers(), module.buffers()): b_ema.copy_(b)
    def forward(self, *args, **kw): return self.ema(*args, **kw)

class FeatureQueue(nn.Module):
    "A FIFO ring buffer of `size` feature vectors of dimension `dim`, kept on the model's device."
    def __init__(self, size:int, dim:int, init:str="randn"):
        super().__init__()
        q = F.normalize(torch.randn(size, dim), dim=1) if init == "randn" else torch.zeros(size, dim)
        self.register_buffer("queue", q); self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
    @torch.no_grad()
    def push(self, x:torch.Tensor):
        "Overwrite the oldest rows with `x` (wrapping around), without a host synchronisation."
        n, size = x.shape[0], self.queue.shape[0]
        idx = (self.ptr + torch.arange(n, device=x.device)) % size
        self.queue.index_copy_(0, idx, x.detach().to(self.queue.dtype)); self.ptr.copy_((self.ptr + n) % size)

# %%
_net = nn.Linear(3, 2); _me = MomentumEncoder(_net, 0.5)
with torch.no_grad(): _net.weight.add_(1.0)
_old = _me.ema.weight.clone(); _me.update(_net)
test_close(_me.ema.weight, 0.5 * _old + 0.5 * _net.weight)
_q = FeatureQueue(5, 2, init="zeros"); _q.push(torch.ones(3, 2)); _q.push(2 * torch.ones(3, 2))
test_eq(_q.queue[:, 0].tolist(), [2., 1., 1., 2., 2.]); test_eq(int(_q.ptr), 1)

# %% [markdown]
# ## The method interface
# One trainer runs every method. A method is an `nn.Module` that owns its backbone and heads. It is the only place
# that knows its loss; the trainer knows nothing about any method. The contract, in the manner of Lightning's
# `LightningModule`:
# - `training_step(batch, head)`: given a `Batch` (the augmented views, the raw view when the method asks for it,
#   the images' indices) return a dict of scalar tensors, one of them `"loss"`;
# - `forward(x)`: given normalised evaluation images, return `{"probs": (N, K) soft assignments, "features": (N, D)}`;
# - optional hooks that receive exactly what they need as arguments, never the trainer:
#   `on_train_start(images, augment, seed)` (e.g. initialise cluster centres from the training images),
#   `on_resume(images, augment)` (re-attach what a checkpoint does not hold, such as the training images) and
#   `after_step(step)` (e.g. a momentum update).
#
# Losses that need the whole batch (every contrastive loss does) receive it through `self.gather`, which is the
# identity on one process and an autograd-aware all-gather when training runs data-parallel (last chapter).

# %%
#| export
@dataclass
class Batch:
    "What a training step receives."
    views: list            # augmented views, each (B, C, S, S) normalised
    index: torch.Tensor    # (B,) indices of the images in the training set
    raw: torch.Tensor | None = None  # (B, C, S, S) the un-augmented images (resized, normalised), when `needs_raw`

# %% [markdown]
# Besides its code, a method carries two pieces of data: its **paper** (the citation, the training length, and the
# numbers it reports, which the run report puts beside a run) and its **settings table**, the one place where the
# method's settings for each dataset are written down, each with the paper section or official-code line it comes
# from. A table is a list of rows; a row gives some settings for some datasets and cites its source, and later rows
# override earlier ones. `"*"` stands for every dataset, `"custom"` for a dataset the table does not name.

# %%
#| export
@dataclass(frozen=True)
class Setting:
    "One row of a settings table: `values` for the `datasets` it names, and the `source` they come from."
    datasets: tuple  # dataset keys, or ("*",) for every dataset
    values: dict     # trainer fields (backbone, lr, ...), "augment" (a recipe) and "hparams" (the method's own)
    source: str      # paper section/table or official-code line; "ours: ..." for settings the papers do not give

def setting(datasets, # a dataset key, a tuple of keys, or "*"
            source:str, # where the values come from
            **values) -> Setting:
    "A `Setting` row: `setting(PAPER_BENCHMARKS, 'Sec. 4.1', lr=3e-4, batch_size=256)`."
    return Setting((datasets,) if isinstance(datasets, str) else tuple(datasets), values, source)

class Settings:
    "A method's settings table: rows applied in order, later rows overriding earlier ones for the datasets they name."
    def __init__(self, *rows:Setting): self.rows = rows
    def __add__(self, other): return Settings(*self.rows, *other.rows)

    def sourced(self, dataset:str) -> dict:
        "name -> (value, source) for `dataset`; a method hyperparameter appears as 'hparams.<name>'."
        out = {}
        for r in self.rows:
            if "*" not in r.datasets and dataset not in r.datasets: continue
            for k, v in r.values.items():
                if k == "hparams": out.update({f"hparams.{h}": (hv, r.source) for h, hv in v.items()})
                else: out[k] = (v, r.source)
        return out

    def resolve(self, dataset:str) -> dict:
        "The settings for `dataset`: trainer fields, 'augment', and the 'hparams' dict."
        src = self.sourced(dataset)
        out = {k: v for k, (v, _) in src.items() if not k.startswith("hparams.")}
        out["hparams"] = {k[8:]: v for k, (v, _) in src.items() if k.startswith("hparams.")}
        return out

    def table(self, datasets, # dataset keys, one row each
              fields=None, # settings to show (default: every one any of the datasets sets)
             ) -> list: # one dict per dataset: field -> "value (source)"
        "The table as rows for display: each cell the value and its source."
        res = {d: self.sourced(d) for d in datasets}
        fields = fields or list(dict.fromkeys(k for r in res.values() for k in r))
        show = lambda v: getattr(v, "__name__", repr(v) if isinstance(v, str) else str(v))
        return [{"dataset": d, **{f: f"{show(res[d][f][0])} ({res[d][f][1]})" for f in fields if f in res[d]}} for d in datasets]

# %%
_t = Settings(setting("*", "ours", lr=1e-3, batch_size=64),
              setting(("cifar10", "stl10"), "Sec. 4", lr=3e-4, hparams={"tau": 0.5}),
              setting("stl10", "Table 3", hparams={"tau": 0.2}))
test_eq(_t.resolve("cifar10"), {"lr": 3e-4, "batch_size": 64, "hparams": {"tau": 0.5}})
test_eq(_t.resolve("stl10")["hparams"], {"tau": 0.2})                       # a later row overrides
test_eq(_t.resolve("custom"), {"lr": 1e-3, "batch_size": 64, "hparams": {}})
test_eq(_t.sourced("stl10")["hparams.tau"], (0.2, "Table 3"))
test_eq(_t.table(["cifar10"], ["lr"]), [{"dataset": "cifar10", "lr": "0.0003 (Sec. 4)"}])

# %%
#| export
@dataclass(frozen=True)
class Paper:
    "A method's paper: citation, training length, and the numbers it reports."
    cite: str               # full citation
    short: str              # short label for tables
    epochs: int             # training length on the benchmarks
    epochs_from: str        # where the paper says so
    note: str = ""          # what to keep in mind when comparing
    results: tuple = ()     # (dataset, evaluation, acc, nmi, ari, table, protocol): evaluation "head" or "kmeans"

    def rows(self, dataset:str, protocol:str|None=None) -> list:
        "The reported results on `dataset` (for the evaluation `protocol`, when given) as dicts."
        keys = ("dataset", "evaluation", "acc", "nmi", "ari", "table", "protocol")
        rows = [dict(zip(keys, r if len(r) == 7 else (*r, "paper"))) for r in self.results]
        return [r for r in rows if r["dataset"] == dataset and (protocol is None or r["protocol"] == protocol)]

# %%
_p = Paper("A. Author: A Method (2021)", "Author 2021", 100, "Sec. 4",
           results=(("cifar10", "head", 0.8, 0.7, 0.6, "Table 2"), ("cifar10", "head", 0.7, 0.6, 0.5, "Table 5", "train-test")))
test_eq([r["table"] for r in _p.rows("cifar10")], ["Table 2", "Table 5"])
test_eq([r["table"] for r in _p.rows("cifar10", "train-test")], ["Table 5"]); test_eq(_p.rows("stl10"), [])

# %% [markdown]
# The base class. Subclasses set `name`, `paper` and `settings`, build their heads in `__init__` (every keyword
# argument after `n_clusters` is a hyperparameter a user may set, e.g. `-y "hparams: {tau_i: 0.7}"`), and implement
# `training_step` and `forward`. Three class attributes tell the trainer what a step needs: `n_views` augmented views
# per image, the raw view (`needs_raw`), and the passes per epoch (`train_heads`: DCDC trains an over-clustering head
# before the main one); `unlabeled_heads` names heads that also train on a dataset's unlabelled images (STL-10's
# 100,000), over those images alone or over all images, in passes that come first in an epoch; `column_contrast` says
# that the loss contrasts the K columns of a batch's assignment matrix, so that a batch must hold at least K images.

# %%
#| export
class ClusterMethod(nn.Module):
    "Base class of a clustering method: backbone + heads + loss. Subclasses register with `@register_method`."
    name: str = ""                  # the name users select it by (`method=...`)
    paper: Paper | None = None      # the paper and its reported numbers
    settings: Settings = Settings() # the settings table (trainer fields, augmentation, hyperparameters per dataset)
    n_views: int = 2                # augmented views per image in a batch
    needs_raw: bool = False         # whether `Batch.raw` is needed
    train_heads: tuple = ("main",)  # passes over the data per epoch
    unlabeled_heads: dict = {}      # head -> "unlabeled" or "all": extra passes over unlabelled images (TrainConfig.unlabeled)
    column_contrast: bool = False   # the loss contrasts the K columns of a batch: batch_size >= K
    amp: bool = False               # the run's bf16 autocast (set by the trainer), for work outside the training step

    def __init__(self, backbone:nn.Module, feat_dim:int, n_clusters:int, **hparams):
        super().__init__()
        self.backbone, self.feat_dim, self.n_clusters, self.hparams = backbone, feat_dim, n_clusters, hparams
        self.gather = lambda t: t   # replaced by an all-gather under data parallelism

    @classmethod
    def hyperparameters(cls) -> dict:
        "The method's own hyperparameters and their defaults (the keyword arguments of `__init__` after `n_clusters`)."
        sig = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in sig.items() if k not in ("self", "backbone", "feat_dim", "n_clusters")
                and p.kind is p.POSITIONAL_OR_KEYWORD}

    def training_step(self, batch:Batch, head:str="main") -> dict: raise NotImplementedError
    def forward(self, x:torch.Tensor) -> dict: raise NotImplementedError
    def on_train_start(self, images:torch.Tensor, augment, seed:int):
        "Before the first step of a new run: `images` the uint8 training set (N, C, H, W), `augment` its `BatchAugment`."
    def on_resume(self, images:torch.Tensor, augment):
        "After a checkpoint has been loaded: re-attach what the checkpoint does not hold."
    def after_step(self, step:int):
        "After each optimiser step (`step` counts from 1)."
    def param_groups(self, weight_decay:float) -> list:
        "Parameter groups for the optimiser: all parameters with one weight decay (override to exclude some)."
        return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": weight_decay}]

# %%
show_doc(ClusterMethod.on_train_start)

# %% [markdown]
# The registry maps a name to its class, in the manner of timm's `@register_model`: a method registers itself where
# it is defined, and nothing else lists it. A method's module is found by looking, not by a list: any module of the
# package that registers a method is imported on first use. Adding a method therefore means adding one notebook
# that exports one module; the trainer, the command line and the run report pick it up.

# %%
#| export
METHODS: dict = {}

def register_method(cls):
    "Class decorator: make `cls` available to the trainer under `cls.name`."
    if not cls.name: raise ValueError("a method class needs a `name`")
    METHODS[cls.name] = cls
    return cls

def _method_modules() -> list:
    "Modules of the package whose source registers a method (found by reading the files, without importing them)."
    spec = importlib.util.find_spec("deepcluster_nb")
    if spec is None or not spec.submodule_search_locations: return []
    return sorted(f.stem for d in spec.submodule_search_locations for f in Path(d).glob("*.py")
                  if re.search(r"^@register_method\b", f.read_text(encoding="utf-8"), re.M))

def available_methods() -> list:
    "Names of the registered methods (importing every method module of the package)."
    for m in _method_modules(): importlib.import_module(f"deepcluster_nb.{m}")
    return list(METHODS)

def get_method(name:str) -> type:
    "The method class registered as `name`."
    if name not in METHODS: available_methods()
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}. Valid: {', '.join(available_methods())}")
    return METHODS[name]

# %%
test_fail(lambda: get_method("kmeans"), contains="Unknown method 'kmeans'. Valid: ")
test_eq(set(_method_modules()) >= {"cc"}, True)

# %% [markdown]
# ## Running a model over a dataset
# Every evaluation runs a method's `forward` over un-augmented images: resized to the training size and normalised
# by the run's augmentation (its `eval_view`), in eval mode, batch by batch. `predict` is the one function that does
# it; the trainer's evaluation, the run report and the methods that need features of the whole training set (CRLC's
# neighbour table, CADEC's k-means evaluation) all use it. It leaves the model in the mode it found it in.

# %%
#| export
@torch.no_grad()
def predict(method, # a `ClusterMethod`
            data:ImageData|torch.Tensor, # images (an `ImageData` or a uint8 tensor (N, C, H, W))
            aug, # a `BatchAugment`: its `eval_view` resizes and normalises
            batch_size:int=512, # images per forward pass
            device="cpu", # where the model is
            amp:bool=False, # bf16 autocast
            keys:tuple=("probs", "features"), # outputs of the method's `forward` to collect
           ) -> dict: # key -> NumPy array (N, ...)
    "Run the method in eval mode over every image without augmentation; collect `keys` of its outputs."
    x = data.x if isinstance(data, ImageData) else data
    device = torch.device(device)
    was = method.training; method.eval()
    outs = {k: [] for k in keys}
    for i in range(0, len(x), batch_size):
        v = aug.eval_view(x[i:i + batch_size].to(device, non_blocking=True))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            o = method(v)
        for k in keys: outs[k].append(o[k].float().cpu())
    method.train(was)
    return {k: torch.cat(v).numpy() for k, v in outs.items()}

# %%
show_doc(predict)

# %% [markdown]
# A check with a toy method (flatten, one linear layer, a softmax; not registered) and a stand-in for the
# augmentation whose `eval_view` only scales to $[0, 1]$: batches of 4 give what one pass over the ten images gives,
# and a batch-norm layer shows that the pass ran in eval mode and that training mode is restored.

# %%
class _Scale:
    "A stand-in for `BatchAugment`: `eval_view` scales uint8 images to [0, 1]."
    def eval_view(self, x): return x.float() / 255

class _Toy(ClusterMethod):
    def __init__(self):
        super().__init__(nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64)), 64, 3); self.head = nn.Linear(64, 3)
    def forward(self, x):
        h = self.backbone(x); return {"probs": self.head(h).softmax(1), "features": h}

torch.manual_seed(0)
_toy, _x = _Toy(), torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
_toy(_x.float() / 255)                                                        # one training-mode pass: running statistics move
_out = predict(_toy, ImageData(_x, [0] * 10, ["a", "b", "c"]), _Scale(), batch_size=4)
test_eq({k: v.shape for k, v in _out.items()}, {"probs": (10, 3), "features": (10, 64)})
_toy.eval()
with torch.no_grad(): _ref = _toy(_x.float() / 255)
_toy.train()
test_close(torch.from_numpy(_out["features"]), _ref["features"], eps=1e-6)
test_close(torch.from_numpy(_out["probs"]).sum(1), torch.ones(10), eps=1e-6)
assert _toy.training                                                          # the mode it was in
test_eq(set(predict(_toy, _x, _Scale(), keys=("features",))), {"features"})   # a bare tensor, one output

# %%
#| hide
import nbdev; nbdev.nbdev_export()
