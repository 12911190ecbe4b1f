# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Augmentation
# > Two views of every image, with parameters drawn independently per image, computed for the whole batch at once in plain PyTorch (CPU or GPU).

# %%
#| default_exp augment

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import math
from dataclasses import dataclass, asdict, replace
import torch
import torch.nn.functional as F

# %% [markdown]
# Contrastive clustering learns what stays the same when an image is cropped, flipped, recoloured and blurred. The two
# views of an image must be drawn with *different* random parameters, and every image of the batch with its own.
# A per-image PIL pipeline in DataLoader workers does this, slowly; `torchvision.transforms.v2` applied to a batch
# draws **one** parameter set for the whole batch, which would give every image the same crop. So we write the
# SimCLR family of transforms as batched tensor operations whose parameters are tensors with one row per image.
#
# Images enter as `uint8` tensors `(B, C, H, W)` (see `data`) and leave as normalised `float32` views `(B, C, S, S)`.

# %%
#| export
def to_float(x:torch.Tensor) -> torch.Tensor:
    "uint8 images in [0, 255] → float images in [0, 1]."
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()

# %% [markdown]
# ## RandomResizedCrop and flip as one sampling grid
# torchvision's `RandomResizedCrop(scale, ratio)` picks an area fraction $s\sim U(\text{scale})$ and a log-uniform
# aspect ratio $r$, giving a box $w=\sqrt{sAr}$, $h=\sqrt{sA/r}$ at a uniform position; it tries 10 times to fit the
# box in the image and falls back to a centre crop. We draw the 10 tries for all images at once and keep each
# image's first valid one.

# %%
#| export
def random_resized_crop_params(n:int, # number of images
                               height:int, width:int, # image size
                               scale=(0.08, 1.0), # range of the crop's area fraction
                               ratio=(3 / 4, 4 / 3), # range of the crop's aspect ratio (log-uniform)
                               device=None, generator=None,
                              ) -> torch.Tensor: # boxes (n, 4) as integer (top, left, h, w)
    "torchvision's RandomResizedCrop box sampling, vectorised over `n` images."
    area = height * width
    s = torch.empty(n, 10, device=device).uniform_(*scale, generator=generator) * area
    logr = torch.empty(n, 10, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = logr.exp()
    w, h = (s * r).sqrt().round(), (s / r).sqrt().round()
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1, device=device))
    # fallback: the central crop at the clamped aspect ratio, as torchvision does
    in_ratio = width / height
    fw, fh = (width, height) if ratio[0] <= in_ratio <= ratio[1] else \
             ((width, round(width / min(ratio))) if in_ratio < min(ratio) else (round(height * max(ratio)), height))
    idx = first.clamp(min=0)[:, None]
    w = torch.where(first >= 0, w.gather(1, idx)[:, 0], torch.full((n,), float(fw), device=device))
    h = torch.where(first >= 0, h.gather(1, idx)[:, 0], torch.full((n,), float(fh), device=device))
    top = (torch.rand(n, device=device, generator=generator) * (height - h + 1)).floor()
    left = (torch.rand(n, device=device, generator=generator) * (width - w + 1)).floor()
    top = torch.where(first >= 0, top, ((height - h) / 2).round()); left = torch.where(first >= 0, left, ((width - w) / 2).round())
    return torch.stack([top, left, h, w], 1)

# %%
_b = random_resized_crop_params(1000, 32, 40)
assert ((_b[:, 2] >= 1) & (_b[:, 3] >= 1)).all() and (_b[:, 0] + _b[:, 2] <= 32).all() and (_b[:, 1] + _b[:, 3] <= 40).all()
_frac = (_b[:, 2] * _b[:, 3] / (32 * 40))
assert 0.3 < _frac.mean() < 0.7 and _frac.min() < 0.15   # spread over the (0.08, 1) range
test_eq(random_resized_crop_params(5, 10, 10, scale=(1, 1), ratio=(1, 1)), torch.tensor([[0., 0, 10, 10]] * 5))

# %% [markdown]
# torchvision resizes a crop with bilinear interpolation (`align_corners=False`, no antialiasing on the
# `antialias=False` path): output pixel $j$ reads the crop at $y=(j+\tfrac12)\,h/S-\tfrac12$, clamped to the crop. We
# build exactly these sampling positions per image (a flip reverses the column positions) and let one
# `grid_sample` call resample the whole batch.

# %%
#| export
def _axis_positions(start, length, size, full):
    "Normalised (align_corners=True) sampling positions of `size` output pixels over [start, start+length) of an axis of `full` pixels."
    j = torch.arange(size, device=start.device, dtype=torch.float32)
    pos = ((j[None] + 0.5) * (length[:, None] / size) - 0.5).clamp(min=0)
    pos = torch.minimum(pos, length[:, None] - 1) + start[:, None]
    return pos * (2 / max(full - 1, 1)) - 1

def resized_crop(x:torch.Tensor, # float images (B, C, H, W)
                 boxes:torch.Tensor, # (B, 4) integer-valued (top, left, h, w)
                 size:int, # output side S
                 flip:torch.Tensor|None=None, # (B,) bool: mirror horizontally
                ) -> torch.Tensor: # (B, C, S, S)
    "Crop each image to its own box, resize it to `size`×`size` bilinearly and optionally flip it; one `grid_sample` call."
    B, C, H, W = x.shape
    gy = _axis_positions(boxes[:, 0], boxes[:, 2], size, H)
    gx = _axis_positions(boxes[:, 1], boxes[:, 3], size, W)
    if flip is not None: gx = torch.where(flip[:, None], gx.flip(1), gx)
    grid = torch.stack([gx[:, None, :].expand(B, size, size), gy[:, :, None].expand(B, size, size)], -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)

# %% [markdown]
# Check against torchvision's functional ops with the same parameters, image by image:

# %%
import torchvision.transforms.v2.functional as TF
_x = torch.rand(6, 3, 20, 24)
_boxes = random_resized_crop_params(6, 20, 24)
_flip = torch.tensor([True, False] * 3)
_ours = resized_crop(_x, _boxes, 16, _flip)
for i in range(6):
    t, l, h, w = _boxes[i].int().tolist()
    ref = TF.resized_crop(_x[i], t, l, h, w, [16, 16], antialias=False)
    ref = TF.horizontal_flip(ref) if _flip[i] else ref
    test_close(_ours[i], ref, eps=1e-5)

# %% [markdown]
# ## Colour: ColorJitter and Grayscale
# `ColorJitter(b, c, s, h)` draws a brightness factor in $[1-b, 1+b]$, a contrast factor in $[1-c, 1+c]$, a
# saturation factor in $[1-s, 1+s]$ and a hue shift in $[-h, h]$, and applies the four in a random order. Each is a
# blend with a reference image, clamped to $[0,1]$: black for brightness, the mean grey level for contrast, the
# grey image for saturation; hue rotates the H channel in HSV. Here every image gets its own factors *and its own
# order*: at each of the four steps, an image applies the operation its order names there and the identity
# factor for the other three.

# %%
#| export
def _gray(x): return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if x.shape[1] == 3 else x

def _blend(x, ref, f): return (f * x + (1 - f) * ref).clamp_(0, 1)

def adjust_brightness(x, f): "Per-image brightness; `f` (B,)."; return _blend(x, torch.zeros_like(x), f.view(-1, 1, 1, 1))
def adjust_contrast(x, f): "Per-image contrast; `f` (B,)."; return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), f.view(-1, 1, 1, 1))
def adjust_saturation(x, f):
    "Per-image saturation; `f` (B,)."
    return x if x.shape[1] == 1 else _blend(x, _gray(x), f.view(-1, 1, 1, 1))

# %% [markdown]
# Hue needs RGB → HSV → RGB. With $M=\max(r,g,b)$, $m=\min$, $\Delta=M-m$: $V=M$, $S=\Delta/M$, and $H$ is the
# position on the colour hexagon, $\tfrac16\cdot\big((g-b)/\Delta \bmod 6\big)$ when red is the maximum,
# $\tfrac16\big((b-r)/\Delta+2\big)$ for green, $\tfrac16\big((r-g)/\Delta+4\big)$ for blue. Back to RGB, each channel
# $n\in\{5,3,1\}$ is $V - VS\max(0,\min(k,4-k,1))$ with $k=(n+6H) \bmod 6$.

# %%
#| export
def rgb_to_hsv(x:torch.Tensor) -> torch.Tensor:
    "RGB in [0,1] (B, 3, H, W) → HSV with every channel in [0,1]."
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1); minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / d) % 6, torch.where(maxc == g, (b - r) / d + 2, (r - g) / d + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h)) % 1.0
    return torch.stack([h, s, maxc], 1)

def hsv_to_rgb(x:torch.Tensor) -> torch.Tensor:
    "HSV in [0,1] (B, 3, H, W) → RGB in [0,1]."
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + 6 * h) % 6
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)

def adjust_hue(x, f):
    "Per-image hue shift by `f` (B,) in [-0.5, 0.5] turns of the colour wheel."
    if x.shape[1] == 1: return x
    hsv = rgb_to_hsv(x)
    hsv = torch.cat([(hsv[:, :1] + f.view(-1, 1, 1, 1)) % 1.0, hsv[:, 1:]], 1)
    return hsv_to_rgb(hsv)

# %%
_x = torch.rand(4, 3, 9, 9)
test_close(hsv_to_rgb(rgb_to_hsv(_x)), _x, eps=1e-5)
for _i, _f in enumerate(torch.tensor([0.3, -0.2, 0.0, 0.5])):
    test_close(adjust_hue(_x[_i:_i+1], _f.view(1)), TF.adjust_hue(_x[_i:_i+1], float(_f)), eps=1e-5)
    test_close(adjust_saturation(_x[_i:_i+1], _f.view(1) + 1), TF.adjust_saturation(_x[_i:_i+1], float(_f) + 1), eps=1e-5)
    test_close(adjust_contrast(_x[_i:_i+1], _f.view(1) + 1), TF.adjust_contrast(_x[_i:_i+1], float(_f) + 1), eps=1e-5)
    test_close(adjust_brightness(_x[_i:_i+1], _f.view(1) + 1), TF.adjust_brightness(_x[_i:_i+1], float(_f) + 1), eps=1e-5)

# %%
#| export
def color_jitter(x:torch.Tensor, # float images (B, C, H, W) in [0, 1]
                 brightness:float, contrast:float, saturation:float, hue:float, # jitter strengths, as in torchvision
                 p:float=1.0, # probability that an image is jittered at all
                 generator=None,
                ) -> torch.Tensor:
    "ColorJitter with per-image factors and a per-image random order of the four operations, applied with probability `p`."
    B, dev = x.shape[0], x.device
    u = lambda lo, hi: torch.empty(B, device=dev).uniform_(lo, hi, generator=generator)
    apply = torch.rand(B, device=dev, generator=generator) < p
    fac = [u(max(0, 1 - brightness), 1 + brightness), u(max(0, 1 - contrast), 1 + contrast),
           u(max(0, 1 - saturation), 1 + saturation), u(-hue, hue)]
    ident = [1.0, 1.0, 1.0, 0.0]
    order = torch.rand(B, 4, device=dev, generator=generator).argsort(1)   # a random permutation per image
    ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    strength = [brightness, contrast, saturation, hue]
    for step in range(4):
        for k in range(4):
            if strength[k] == 0: continue
            on = apply & (order[:, step] == k)
            if on.any(): x = ops[k](x, torch.where(on, fac[k], torch.full_like(fac[k], ident[k])))
    return x

def random_grayscale(x, p:float, generator=None):
    "Turn each RGB image grey (kept as 3 channels) with probability `p`."
    if x.shape[1] == 1 or p <= 0: return x
    on = (torch.rand(x.shape[0], device=x.device, generator=generator) < p).view(-1, 1, 1, 1)
    return torch.where(on, _gray(x).expand_as(x), x)

# %% [markdown]
# Identity factors leave an image untouched, and `p=0` switches the jitter off:

# %%
_x = torch.rand(5, 3, 8, 8)
test_close(color_jitter(_x.clone(), 0.4, 0.4, 0.4, 0.1, p=0.0), _x)
test_close(color_jitter(_x.clone(), 0.0, 0.0, 0.0, 0.0), _x)
assert not torch.allclose(color_jitter(_x.clone(), 0.8, 0.8, 0.8, 0.2), _x)

# %% [markdown]
# ## Gaussian blur with a per-image σ
# A separable blur is two 1-D convolutions. Giving every image its own kernel is a grouped convolution with one
# group per (image, channel). torchvision pads by reflection, and so do we; an image that is not blurred gets the
# delta kernel.

# %%
#| export
def gaussian_blur(x:torch.Tensor, # float images (B, C, H, W)
                  kernel_size:int, # odd kernel side
                  sigma:torch.Tensor, # (B,) standard deviations; 0 means no blur
                 ) -> torch.Tensor:
    "Gaussian blur with one σ per image, as a grouped separable convolution with reflection padding."
    B, C, H, W = x.shape
    k = min(kernel_size, 2 * ((min(H, W) - 1) // 2) + 1)   # reflection padding needs the kernel to fit the image
    half = (k - 1) / 2
    t = torch.linspace(-half, half, k, device=x.device)
    s = sigma.clamp(min=1e-6).view(B, 1)
    ker = torch.exp(-0.5 * (t[None] / s) ** 2); ker = ker / ker.sum(1, keepdim=True)
    ker = torch.where((sigma > 0).view(B, 1), ker, (t[None] == 0).float())
    ker = ker.repeat_interleave(C, 0).to(x.dtype)                      # (B*C, k)
    y = F.pad(x.reshape(1, B * C, H, W), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, ker.view(B * C, 1, k, 1), groups=B * C)
    y = F.conv2d(y, ker.view(B * C, 1, 1, k), groups=B * C)
    return y.view(B, C, H, W)

# %%
_x = torch.rand(3, 3, 30, 30)
_sig = torch.tensor([0.5, 1.7, 0.0])
_y = gaussian_blur(_x, 23, _sig)
for _i in range(2): test_close(_y[_i], TF.gaussian_blur(_x[_i], [23, 23], [float(_sig[_i])] * 2), eps=1e-5)
test_close(_y[2], _x[2])

# %% [markdown]
# ## Small affine warps for digits
# Crops and colour mean little for 8×8 grey digits. Their variant is a small random rotation, scaling and
# translation (one affine grid per image) plus Gaussian pixel noise.

# %%
#| export
def random_affine(x:torch.Tensor, degrees:float=20., scale=(0.8, 1.2), translate:float=0.15, generator=None):
    "Per-image random rotation (±`degrees`), isotropic scaling and translation (fraction of the side)."
    B, dev = x.shape[0], x.device
    u = lambda lo, hi: torch.empty(B, device=dev).uniform_(lo, hi, generator=generator)
    a, s = u(-degrees, degrees) * math.pi / 180, u(*scale)
    tx, ty = u(-translate, translate) * 2, u(-translate, translate) * 2
    cos, sin = a.cos() / s, a.sin() / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)

# %% [markdown]
# ## The recipes
# A recipe is a small dataclass; `CC_RECIPE` gives CC's (Li et al.): RandomResizedCrop(scale 0.08–1), flip,
# ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with p = 0.8, Grayscale p = 0.2, with s = 0.5 on CIFAR and Tiny-ImageNet and
# s = 1.0 on STL-10 and the ImageNet subsets, plus GaussianBlur (kernel 23, σ ∈ [0.1, 2], p = 0.5) on
# ImageNet-10/Dogs. Other methods state their own.

# %%
#| export
@dataclass
class AugmentConfig:
    "One augmentation recipe (the SimCLR family, or the digits variant)."
    kind: str = "simclr"          # "simclr" or "digits"
    size: int = 32                # output side S
    crop_scale: tuple = (0.08, 1.0)  # RandomResizedCrop area range
    hflip: bool = True            # random horizontal flip, p = 0.5
    jitter: tuple = (0.4, 0.4, 0.4, 0.1)  # ColorJitter (brightness, contrast, saturation, hue)
    jitter_p: float = 0.8         # probability of colour jitter
    gray_p: float = 0.2           # probability of grayscale
    blur_p: float = 0.0           # probability of Gaussian blur
    blur_kernel: int = 23         # blur kernel side
    blur_sigma: tuple = (0.1, 2.0)  # blur σ range
    degrees: float = 20.0         # digits: rotation range
    affine_scale: tuple = (0.8, 1.2)  # digits: scale range
    translate: float = 0.15       # digits: translation, fraction of the side
    noise: float = 0.05           # digits: std of additive Gaussian noise

def cc_recipe(dataset:str, size:int) -> AugmentConfig:
    "CC's augmentation for a benchmark (the digits variant for the small grey digit datasets)."
    if dataset in ("digits", "mnist", "usps"): return AugmentConfig(kind="digits", size=size)
    s = 1.0 if dataset in ("stl10", "imagenet10", "imagenet_dogs") else 0.5
    blur = 0.5 if dataset in ("imagenet10", "imagenet_dogs") else 0.0
    return AugmentConfig(size=size, jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), blur_p=blur)

# %%
test_eq(cc_recipe("stl10", 224).jitter, (0.8, 0.8, 0.8, 0.2))
test_eq(cc_recipe("cifar10", 224).jitter, (0.4, 0.4, 0.4, 0.1)); test_eq(cc_recipe("imagenet10", 224).blur_p, 0.5)

# %% [markdown]
# ## The module
# `BatchAugment` turns a uint8 batch into normalised float views. `eval_view` is the deterministic counterpart used
# for evaluation and for the "raw" view some methods need: resize to `S` and normalise.

# %%
#| export
class BatchAugment(torch.nn.Module):
    "Batched, per-image random augmentation of uint8 images into normalised float views."
    def __init__(self, cfg:AugmentConfig, mean, std):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalize(self, x): return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def eval_view(self, x:torch.Tensor) -> torch.Tensor:
        "Resize to the training size (no randomness) and normalise."
        x = to_float(x)
        if x.shape[-1] != self.cfg.size or x.shape[-2] != self.cfg.size:
            x = F.interpolate(x, size=(self.cfg.size, self.cfg.size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.cfg.size)
        return self.normalize(x)

    @torch.no_grad()
    def forward(self, x:torch.Tensor, generator=None) -> torch.Tensor:
        c, B = self.cfg, x.shape[0]
        x = to_float(x)
        if c.kind == "digits":
            if x.shape[-1] != c.size: x = F.interpolate(x, size=(c.size, c.size), mode="bilinear", align_corners=False)
            x = random_affine(x, c.degrees, c.affine_scale, c.translate, generator)
            x = (x + c.noise * torch.randn(x.shape, device=x.device, generator=generator)).clamp_(0, 1)
            return self.normalize(x)
        boxes = random_resized_crop_params(B, x.shape[-2], x.shape[-1], c.crop_scale, device=x.device, generator=generator)
        flip = (torch.rand(B, device=x.device, generator=generator) < 0.5) if c.hflip else None
        x = resized_crop(x, boxes, c.size, flip)
        if c.jitter_p > 0: x = color_jitter(x, *c.jitter, p=c.jitter_p, generator=generator)
        if c.gray_p > 0: x = random_grayscale(x, c.gray_p, generator)
        if c.blur_p > 0:
            sig = torch.empty(B, device=x.device).uniform_(*c.blur_sigma, generator=generator)
            sig = torch.where(torch.rand(B, device=x.device, generator=generator) < c.blur_p, sig, torch.zeros_like(sig))
            x = gaussian_blur(x, c.blur_kernel, sig)
        return self.normalize(x)

# %%
show_doc(BatchAugment)

# %% [markdown]
# Every image gets its own parameters, and two calls give two different views:

# %%
_aug = BatchAugment(AugmentConfig(size=24), mean=[0.5] * 3, std=[0.25] * 3)
_x = (torch.rand(1, 3, 32, 32) * 255).to(torch.uint8).expand(8, 3, 32, 32)   # 8 copies of one image
_v1, _v2 = _aug(_x), _aug(_x)
test_eq(tuple(_v1.shape), (8, 3, 24, 24))
assert all(not torch.allclose(_v1[i], _v1[j]) for i in range(8) for j in range(i + 1, 8)), "images must get their own parameters"
assert all(not torch.allclose(_v1[i], _v2[i]) for i in range(8)), "the two views must differ"
test_eq(tuple(_aug.eval_view(_x).shape), (8, 3, 24, 24))

# %% [markdown]
# Seeding a generator reproduces the views exactly:

# %%
test_eq(_aug(_x, torch.Generator().manual_seed(1)), _aug(_x, torch.Generator().manual_seed(1)))

# %% [markdown]
# A grid of originals and two views each, for a few real images when the CIFAR-10 test copy is in the data root,
# otherwise for the digits:

# %%
import matplotlib.pyplot as plt, numpy as np
from deepcluster_nb.data import load_dataset, data_root
_p = data_root() / "cifar10_test.npz"
_d = load_dataset(str(_p) if _p.exists() else "digits").train
_name = "cifar10" if _p.exists() else "digits"
_ax = BatchAugment(cc_recipe(_name, 32 if _p.exists() else 8), mean=[0.] * _d.x.shape[1], std=[1.] * _d.x.shape[1])
_imgs = _d.x[:6]
_rows = [to_float(_imgs), _ax(_imgs), _ax(_imgs)]
fig, axs = plt.subplots(3, 6, figsize=(9, 4.8))
for r, title in enumerate(["original", "view a", "view b"]):
    for c in range(6):
        im = _rows[r][c].permute(1, 2, 0).clamp(0, 1).numpy()
        axs[r, c].imshow(im.squeeze(), cmap="gray_r" if im.shape[-1] == 1 else None); axs[r, c].axis("off")
    axs[r, 0].set_title(title, loc="left", fontsize=9)
plt.suptitle(f"{_name}: two independently augmented views per image"); plt.tight_layout(); plt.show()

# %%
#| hide
import nbdev; nbdev.nbdev_export()
