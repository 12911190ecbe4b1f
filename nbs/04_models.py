# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Models and the method interface
# > Backbones (ResNet-18/34/50 with an ImageNet or small-image stem, a small CNN for CPU runs), the two heads of contrastive clustering, and the small interface every method implements.

# %%
#| default_exp models

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import copy, importlib, importlib.util
import torch
import torch.nn as nn
import torch.nn.functional as F

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
# For CPU runs on digits a ResNet is overkill: a small CNN of three 3×3 convolution blocks with batch norm, one
# 2×2 pooling and a global average pool learns digits in seconds.

# %%
#| export
class SmallCNN(nn.Module):
    "A small convolutional backbone for small grey images (digits, MNIST, USPS) on CPU."
    def __init__(self, in_channels:int=1, width:int=64, out_dim:int=256):
        super().__init__()
        block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*block(in_channels, width), *block(width, width), nn.MaxPool2d(2),
                                 *block(width, 2 * width), *block(2 * width, 2 * width),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, out_dim), nn.BatchNorm1d(out_dim),
                                 nn.ReLU(inplace=True))
        self.out_dim = out_dim
    def forward(self, x): return self.net(x)

# %%
test_eq(SmallCNN()(torch.randn(4, 1, 8, 8)).shape, (4, 256))

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
                 ) -> tuple[nn.Module, int]: # (backbone, feature dimension)
    "Build a backbone by name."
    if name.startswith("sobel_"):
        body, d = make_backbone(name[6:], 2, small_stem)
        return nn.Sequential(SobelFilter(), body), d
    if name == "small_cnn": m = SmallCNN(in_channels); return m, m.out_dim
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
# One trainer runs every method. A method is an `nn.Module` that owns its backbone and heads and answers four
# questions:
# - `training_step(batch, head)`: given a `Batch` (the augmented views, the raw view when the method asks for it, the
#   images' indices) return a dict of scalar tensors, one of them `"loss"`;
# - `forward(x)`: given normalised evaluation images, return `{"probs": (N, K) soft assignments, "features": (N, D)}`;
# - `defaults(dataset)`: the paper's settings for a dataset (optimiser, learning rate, batch size, epochs,
#   backbone, image size, augmentation, and the method's own hyperparameters);
# - optionally `on_train_start(trainer)` (e.g. initialise cluster centres), `on_resume(trainer)` (re-attach what a
#   checkpoint does not hold, such as a reference to the training images) and `after_step()` (e.g. momentum updates).
#
# Losses that need the whole batch (every contrastive loss does) receive it through `self.gather`, which is the
# identity on one process and an autograd-aware all-gather when the trainer runs data-parallel.

# %%
#| export
from dataclasses import dataclass, field

@dataclass
class Batch:
    "What a training step receives."
    views: list            # augmented views, each (B, C, S, S) normalised
    index: torch.Tensor    # (B,) indices of the images in the training set
    raw: torch.Tensor | None = None  # (B, C, S, S) the un-augmented images (resized, normalised), when `needs_raw`

class ClusterMethod(nn.Module):
    "Base class of a clustering method: backbone + heads + loss. Subclasses register with `@register_method`."
    name: str = ""
    n_views: int = 2            # augmented views per image in a batch
    needs_raw: bool = False     # whether `Batch.raw` is needed
    train_heads: tuple = ("main",)  # passes over the data per epoch (DCDC trains an over-clustering head first)

    def __init__(self, backbone:nn.Module, feat_dim:int, n_clusters:int, **hparams):
        super().__init__()
        self.backbone, self.feat_dim, self.n_clusters, self.hparams = backbone, feat_dim, n_clusters, hparams
        self.gather = lambda t: t   # replaced by the trainer under data parallelism

    @classmethod
    def defaults(cls, dataset:str) -> dict: return {}
    def training_step(self, batch:Batch, head:str="main") -> dict: raise NotImplementedError
    def forward(self, x:torch.Tensor) -> dict: raise NotImplementedError
    def on_train_start(self, trainer): pass
    def on_resume(self, trainer): pass
    def after_step(self): pass
    def param_groups(self, weight_decay:float) -> list:
        "Parameter groups for the optimiser: all parameters with one weight decay (override to exclude some)."
        return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": weight_decay}]

# %% [markdown]
# The registry maps a name to its class. A method lives in the module `deepcluster_nb.<name>` and is imported on
# first use, so adding a method means adding a notebook, and nothing in the trainer changes.

# %%
#| export
METHODS: dict = {}
KNOWN_METHODS = ("cc", "dcdc", "crlc", "tcc", "cadec")

def register_method(cls):
    "Class decorator: make `cls` available to the trainer under `cls.name`."
    if not cls.name: raise ValueError("a method class needs a `name`")
    METHODS[cls.name] = cls
    return cls

def available_methods() -> list:
    "Names of the methods whose modules are present in the package."
    return [m for m in KNOWN_METHODS if m in METHODS or importlib.util.find_spec(f"deepcluster_nb.{m}") is not None] + \
           [m for m in METHODS if m not in KNOWN_METHODS]

def get_method(name:str) -> type:
    "The method class registered as `name` (importing `deepcluster_nb.<name>` if needed)."
    if name not in METHODS and name in available_methods():
        importlib.import_module(f"deepcluster_nb.{name}")
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}. Valid: {', '.join(available_methods())}")
    return METHODS[name]

# %%
test_fail(lambda: get_method("kmeans"), contains="Unknown method 'kmeans'. Valid: cc")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
