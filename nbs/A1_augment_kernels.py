# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: batched augmentation kernels
# > The engineering under `augment`: crop and flip as two matrix products, colour jitter with its own order per image, hue without HSV, per-image blur and affine warps, each one checked against torchvision image by image, and what the batching buys.

# %%
#| default_exp augment_kernels

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail, test_is

# %%
#| export
from __future__ import annotations
import math
import torch
import torch.nn.functional as F

# %% [markdown]
# The augmentation chapter (`03_augment`) says *what* the two views are; this appendix says how they are computed.
# Every image of a batch needs its own crop, flip, jitter factors, jitter order, grayscale coin and blur σ. A
# per-image PIL pipeline in DataLoader workers does this, slowly; `torchvision.transforms.v2` applied to a batch
# draws **one** parameter set for the whole batch, which would give every image the same crop. So we write the
# SimCLR family of transforms as batched tensor operations whose parameters are tensors with one row per image.
#
# Each kernel below is checked against torchvision's functional op applied image by image with the same parameters;
# `augment.replay_per_image` repeats that check for the whole recipe. The kernels take float images in $[0, 1]$;
# the random parameters are small tensors drawn on the host.

# %%
import colorsys, time
from dataclasses import replace
from PIL import Image
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF

# %% [markdown]
# ## Host and device
# Images arrive as `uint8` tensors `(B, C, H, W)` (see `data`); the kernels work on floats in $[0, 1]$:

# %%
#| export
def to_float(x:torch.Tensor) -> torch.Tensor:
    "uint8 images in [0, 255] → float images in [0, 1]."
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()

# %%
test_close(to_float(torch.tensor([0, 51, 255], dtype=torch.uint8)), torch.tensor([0., 0.2, 1.]))
_t = torch.rand(3)
test_is(to_float(_t).dtype, torch.float32); test_eq(to_float(_t), _t)          # floats pass through
test_eq(to_float(torch.tensor([2], dtype=torch.float64)).dtype, torch.float32)

# %% [markdown]
# The random parameters are drawn on the host. `to_device` sends them to the GPU asynchronously, through pinned
# memory, so the host never waits for the GPU while it prepares the next batch:

# %%
#| export
def to_device(t:torch.Tensor, device) -> torch.Tensor:
    "Copy a small host tensor to `device` without blocking the host (through pinned memory on CUDA)."
    device = torch.device(device)
    if t.device == device: return t
    if device.type == "cuda" and t.device.type == "cpu": t = t.pin_memory()
    return t.to(device, non_blocking=device.type == "cuda")

# %%
_t = torch.arange(3)
test_is(to_device(_t, "cpu"), _t)                        # already there: no copy
test_eq(to_device(_t, "meta").device.type, "meta"); test_eq(to_device(_t, "meta").shape, _t.shape)

# %% [markdown]
# Parameters are drawn on the generator's device (the CPU unless the caller passes a CUDA generator):

# %%
#| export
def _draw_device(generator): return generator.device if generator is not None else torch.device("cpu")

# %%
test_eq(_draw_device(None), torch.device("cpu")); test_eq(_draw_device(torch.Generator()), torch.device("cpu"))

# %% [markdown]
# ## RandomResizedCrop and flip as two matrix products
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
# `antialias=False` path): output pixel $j$ reads the crop at $y_j=\max\big(0,\ (j+\tfrac12)\,h/S-\tfrac12\big)$, that
# is pixels $i_j=\lfloor y_j\rfloor$ and $\min(i_j+1,\ h-1)$ with weights $1-\lambda_j$ and $\lambda_j=y_j-i_j$. Along
# one axis this is a matrix $A\in\mathbb R^{S\times H}$ with two non-zeros per row, and resizing the crop of image $X$
# is the product
#
# $$Y = A_y\,X\,A_x^\top .$$
#
# We build $A_y$ and $A_x$ for every image (a flip reverses the rows of $A_x$), and two batched matrix products
# resample the whole batch. The weights are computed with the same float32 operations as PyTorch's own bilinear
# resize; on random 32 px and 96 px images the result stayed within $2\cdot10^{-6}$ of torchvision's in our runs.
# (Resampling with `grid_sample` would be a single call too, but it takes positions normalised to $[-1, 1]$; the
# float32 rounding of those positions moved samples enough to differ by $9\cdot10^{-6}$ on 96 px images.)
#
# First the matrices, one per image and axis:

# %%
#| export
def _axis_weights(start, length, size, full):
    "Bilinear resize matrices (B, size, full): row j holds the weights with which output pixel j reads the axis."
    j = torch.arange(size, device=start.device, dtype=torch.float32)
    pos = ((j[None] + 0.5) * (length[:, None] / size) - 0.5).clamp_(min=0)   # y_j, in crop coordinates
    i0 = pos.floor()
    lam = pos - i0                                                            # λ_j
    i1 = torch.minimum(i0 + 1, length[:, None] - 1)
    A = torch.zeros(start.shape[0], size, full, device=start.device)
    A.scatter_add_(2, (i0 + start[:, None]).long()[..., None], (1 - lam)[..., None])
    return A.scatter_add_(2, (i1 + start[:, None]).long()[..., None], lam[..., None])

# %% [markdown]
# Each row holds at most two weights, which sum to one, and nothing outside the crop is read:

# %%
_A = _axis_weights(torch.tensor([0., 3.]), torch.tensor([5., 4.]), 7, 8)
test_close(_A.sum(-1), torch.ones(2, 7)); assert (_A > 0).sum(-1).max() <= 2 and _A[1, :, :3].abs().sum() == 0
test_eq(_axis_weights(torch.tensor([0.]), torch.tensor([6.]), 6, 6)[0], torch.eye(6))   # the full axis at full size

# %% [markdown]
# Then the crop, resize and flip of the whole batch:

# %%
#| export
def resized_crop(x:torch.Tensor, # float images (B, C, H, W)
                 boxes:torch.Tensor, # (B, 4) integer-valued (top, left, h, w)
                 size:int, # output side S
                 flip:torch.Tensor|None=None, # (B,) bool: mirror horizontally
                ) -> torch.Tensor: # (B, C, S, S)
    "Crop each image to its own box, resize it to `size`×`size` bilinearly and optionally flip it: Y = A_y X A_x^T per image."
    B, C, H, W = x.shape
    boxes = to_device(boxes.float(), x.device)
    A_y = _axis_weights(boxes[:, 0], boxes[:, 2], size, H)
    A_x = _axis_weights(boxes[:, 1], boxes[:, 3], size, W)
    if flip is not None: A_x = torch.where(to_device(flip, x.device)[:, None, None], A_x.flip(1), A_x)
    return A_y[:, None].to(x.dtype) @ (x @ A_x.transpose(1, 2)[:, None].to(x.dtype))

# %%
show_doc(resized_crop)

# %% [markdown]
# The check against torchvision's functional ops with the same parameters, image by image:

# %%
for _h, _w, _S in [(20, 24, 16), (32, 32, 224), (96, 96, 64)]:
    _x = torch.rand(6, 3, _h, _w)
    _boxes = random_resized_crop_params(6, _h, _w)
    _flip = torch.tensor([True, False] * 3)
    _ours = resized_crop(_x, _boxes, _S, _flip)
    for i in range(6):
        t, l, h, w = _boxes[i].int().tolist()
        ref = TF.resized_crop(_x[i], t, l, h, w, [_S, _S], antialias=False)
        ref = TF.horizontal_flip(ref) if _flip[i] else ref
        test_close(_ours[i], ref, eps=1e-5)
test_close(resized_crop(_x, torch.tensor([[0., 0, 96, 96]] * 6), 96), _x, eps=1e-6)   # the full box at full size is the identity
test_close(resized_crop(_x, torch.tensor([[0., 0, 96, 96]] * 6), 96, torch.ones(6, dtype=torch.bool)), _x.flip(-1), eps=1e-6)

# %% [markdown]
# ## Colour: ColorJitter and Grayscale
# `ColorJitter(b, c, s, h)` draws a brightness factor in $[1-b, 1+b]$, a contrast factor in $[1-c, 1+c]$, a
# saturation factor in $[1-s, 1+s]$ and a hue shift in $[-h, h]$, and applies the four in a random order. The first
# three are blends with a reference image $R$, clamped to $[0,1]$:
#
# $$x' = \operatorname{clamp}\big(f\,x + (1-f)\,R,\ 0,\ 1\big),$$
#
# with $R=0$ (black) for brightness, $R=\bar G$ (the mean grey level of the image) for contrast and $R=G$ (the grey
# image, $G = 0.2989\,r + 0.587\,g + 0.114\,b$) for saturation. We write the blend as one fused multiply-add,
# `addcmul((1 - f) R, x, f)`, one pass over the pixels.
#
# The grey image $G$ first:

# %%
#| export
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)   # ITU-R 601 luma weights of r, g, b, as torchvision uses

def _gray(x):
    "Grey image (B, 1, H, W) of RGB images; one-channel images are returned as they are."
    if x.shape[1] != 3: return x
    r, g, b = x.unbind(1)
    return (r * GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)

# %%
_x = torch.rand(4, 3, 5, 5)
for _i in range(4): test_close(_gray(_x)[_i], TF.rgb_to_grayscale(_x[_i]), eps=1e-6)
test_eq(_gray(_x[:, :1]), _x[:, :1]); test_eq(tuple(_gray(_x).shape), (4, 1, 5, 5))

# %% [markdown]
# Brightness, with the factors as a column that broadcasts over each image:

# %%
#| export
def _col(f, x): return f.to(x.device, x.dtype).view(-1, 1, 1, 1)

def adjust_brightness(x, f): "Per-image brightness; `f` (B,)."; return (x * _col(f, x)).clamp_(0, 1)

# %% [markdown]
# Each colour operation is checked against torchvision's functional op, image by image, with a different factor per
# image:

# %%
_x = torch.rand(6, 3, 9, 9)
_f = torch.tensor([0.2, 0.6, 1.0, 1.3, 1.8, 0.9])
def check_per_image(ours, tv, x, f, eps=1e-5):
    "`ours` on the batch equals torchvision's `tv` applied image by image with each image's factor."
    y = ours(x, f)
    for i in range(len(x)): test_close(y[i], tv(x[i], float(f[i])), eps=eps)
test_eq(tuple(_col(_f, _x).shape), (6, 1, 1, 1))
check_per_image(adjust_brightness, TF.adjust_brightness, _x, _f)

# %%
#| export
def adjust_contrast(x, f):
    "Per-image contrast; `f` (B,)."
    f = _col(f, x)
    return torch.addcmul(_gray(x).mean((1, 2, 3), keepdim=True) * (1 - f), x, f).clamp_(0, 1)

# %%
check_per_image(adjust_contrast, TF.adjust_contrast, _x, _f)
test_close(adjust_contrast(_x, torch.zeros(6)), _gray(_x).mean((1, 2, 3), keepdim=True).expand_as(_x))   # f = 0: the mean grey

# %%
#| export
def adjust_saturation(x, f):
    "Per-image saturation; `f` (B,)."
    if x.shape[1] != 3: return x
    f = _col(f, x)
    return torch.addcmul(_gray(x).mul_(1 - f), x, f).clamp_(0, 1)

# %%
check_per_image(adjust_saturation, TF.adjust_saturation, _x, _f)
test_eq(adjust_saturation(_x[:, :1], _f), _x[:, :1])   # grey images have no saturation to change

# %% [markdown]
# ### Hue
# Hue needs RGB → HSV → RGB. With $M=\max(r,g,b)$, $m=\min$, $\Delta=M-m$: $V=M$, $S=\Delta/M$, and $H$ is the
# position on the colour hexagon, $\tfrac16\cdot\big((g-b)/\Delta \bmod 6\big)$ when red is the maximum,
# $\tfrac16\big((b-r)/\Delta+2\big)$ for green, $\tfrac16\big((r-g)/\Delta+4\big)$ for blue. Back to RGB, each channel
# $n\in\{5,3,1\}$ is $V - VS\max(0,\min(k,4-k,1))$ with $k=(n+6H) \bmod 6$. First the readable version, one
# function per direction, each checked against Python's `colorsys` pixel by pixel:

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

# %%
_px = torch.rand(1, 3, 5, 8)
_hsv = rgb_to_hsv(_px)
for _i in range(5):
    for _j in range(8): test_close(_hsv[0, :, _i, _j], torch.tensor(colorsys.rgb_to_hsv(*_px[0, :, _i, _j].tolist())), eps=1e-5)
_prim = torch.tensor([[1., 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]]).view(4, 3, 1, 1)   # red, green, blue, grey
test_close(rgb_to_hsv(_prim).flatten(1), torch.tensor([[0., 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1], [0, 0, 0.5]]))

# %%
#| export
def hsv_to_rgb(x:torch.Tensor) -> torch.Tensor:
    "HSV in [0,1] (B, 3, H, W) → RGB in [0,1]."
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    k = (torch.arange(5, 0, -2, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) + 6 * h) % 6
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)

# %%
_rgb = hsv_to_rgb(_hsv)
for _i in range(5):
    for _j in range(8): test_close(_rgb[0, :, _i, _j], torch.tensor(colorsys.hsv_to_rgb(*_hsv[0, :, _i, _j].tolist())), eps=1e-5)
_x = torch.rand(4, 3, 9, 9)
test_close(hsv_to_rgb(rgb_to_hsv(_x)), _x, eps=1e-5)

# %% [markdown]
# The hue shift turns $H$ by $f$ and wraps it:

# %%
#| export
def adjust_hue_hsv(x, f):
    "Hue shift by `f` (B,) turns through the HSV round trip (readable, slow)."
    hsv = rgb_to_hsv(x)
    return hsv_to_rgb(torch.cat([(hsv[:, :1] + f.view(-1, 1, 1, 1)) % 1.0, hsv[:, 1:]], 1))

# %%
_f = torch.tensor([0.3, -0.2, 0.0, 0.5])
check_per_image(adjust_hue_hsv, TF.adjust_hue, _x, _f)
test_close(adjust_hue_hsv(_prim[:3], torch.full((3,), 1 / 3)), _prim[[1, 2, 0]], eps=1e-6)   # a third of a turn: red → green, green → blue, blue → red

# %% [markdown]
# That is some thirty passes over the pixels, several of them through `torch.where`, which is slow on CPU. Two
# observations shorten it. The hue shift keeps $V=M$ and $VS=\Delta$, so neither $S$ nor the HSV tensor is needed:
# the output channel $n$ is $M - \Delta\,T(k_n)$ with the trapezoid $T(k)=\operatorname{clamp}(\min(k, 4-k), 0, 1)$.
# And the three cases of the hexagon can be blended with 0/1 masks instead of nested `where`s (the masks give red
# priority over green over blue at ties, as the `where` chain does). Writing $u = (H' + (n+1)/6) \bmod 1$ for the
# shifted hue $H'$ in turns, $T(k_n) = \operatorname{clamp}(2 - 6\,|u - \tfrac12|, 0, 1)$: the trapezoid is a clamped
# triangle centred half a turn away.

# %%
#| export
def adjust_hue(x:torch.Tensor, # RGB images (B, 3, H, W) in [0, 1]
               f:torch.Tensor, # (B,) hue shifts in turns of the colour wheel, in [-0.5, 0.5]
              ) -> torch.Tensor:
    "Per-image hue shift, computed without forming the HSV image."
    if x.shape[1] != 3: return x
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    delta = maxc - torch.minimum(torch.minimum(r, g), b)                      # Δ = V·S
    m_r = (r == maxc).to(x.dtype); m_g = (g == maxc).to(x.dtype).mul_(1 - m_r); m_b = 1 - m_r - m_g
    # 6H·Δ, one hexagon case per pixel
    num = m_r * (g - b) + m_g * (b - r + 2 * delta) + m_b * (r - g + 4 * delta)
    h = num.div_(delta.clamp(min=1e-12)).add_(6 * f.to(x.device, x.dtype).view(-1, 1, 1)).div_(6)   # H' in turns, not yet wrapped
    out = torch.empty_like(x)
    for c, n in enumerate((5, 3, 1)):
        u = h + (n + 1) / 6
        u = u.sub_(u.floor()).sub_(0.5).abs_()                               # |u − 1/2| with u wrapped to [0, 1)
        torch.addcmul(maxc, delta, torch.rsub(u, 2, alpha=6).clamp_(0, 1), value=-1, out=out[:, c])
    return out

# %%
show_doc(adjust_hue)

# %%
_x = torch.rand(64, 3, 9, 9); _x[:4] = _x[:4].mean(1, keepdim=True)   # a few grey images: no hue to turn
_x[4, 0] = _x[4, 1]; _x[5, 1] = _x[5, 2]                             # ties for the maximum
_f = torch.rand(64) - 0.5; _f[:2] = torch.tensor([0.5, -0.5])
test_close(adjust_hue(_x, _f), adjust_hue_hsv(_x, _f), eps=1e-5)
check_per_image(adjust_hue, TF.adjust_hue, _x, _f)
test_close(adjust_hue(_x[:4], _f[:4]), _x[:4], eps=1e-6)
test_eq(adjust_hue(_x[:, :1], _f), _x[:, :1])                        # one-channel images have no hue

# %% [markdown]
# A rough timing of the two on 256 CIFAR-sized images, on one CPU thread (one measurement, so only the order of
# magnitude counts):

# %%
def _ms(f, *a, n=3):
    "Milliseconds per call of `f(*a)` on one CPU thread, after one warm-up call."
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        f(*a); t = time.perf_counter()
        for _ in range(n): f(*a)
        return (time.perf_counter() - t) / n * 1e3
    finally: torch.set_num_threads(threads)
_x, _f = torch.rand(256, 3, 32, 32), torch.rand(256) - 0.5
print(f"HSV round trip {_ms(adjust_hue_hsv, _x, _f):.1f} ms   fused {_ms(adjust_hue, _x, _f):.1f} ms")

# %% [markdown]
# ### The jitter, with a random order per image
# Every image gets its own factors *and its own order* of the four operations. The four operations, indexed
# 0–3 in ColorJitter's order, and the factor with which each leaves an image unchanged:

# %%
#| export
JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
JITTER_IDENTITY = (1.0, 1.0, 1.0, 0.0)   # the factor that leaves an image unchanged, per operation

# %%
_x = torch.rand(3, 3, 6, 6)
for _op, _id in zip(JITTER_OPS, JITTER_IDENTITY): test_close(_op(_x, torch.full((3,), _id)), _x, eps=1e-5)
test_eq(len(JITTER_OPS), len(JITTER_IDENTITY))

# %% [markdown]
# The parameters are drawn on the host, not on the device. Which images form a group (below) is then known without
# asking the GPU (a `.nonzero()` or `.any()` on a GPU tensor would stall the host until the GPU catches up). A random
# permutation per image is the `argsort` of a row of uniform numbers:

# %%
#| export
def color_jitter_params(n:int, # number of images
                        brightness:float, contrast:float, saturation:float, hue:float, # jitter strengths, as in torchvision
                        p:float=1.0, # probability that an image is jittered at all
                        generator=None, # torch.Generator (CPU by default)
                       ) -> dict: # host tensors: factors (n, 4), order (n, 4), apply (n,)
    "Draw ColorJitter parameters for `n` images: four factors, a random order of the four operations, and whether to jitter."
    dev = _draw_device(generator)
    u = lambda lo, hi: torch.empty(n, device=dev).uniform_(lo, hi, generator=generator)
    apply = torch.rand(n, device=dev, generator=generator) < p
    factors = torch.stack([u(max(0, 1 - brightness), 1 + brightness), u(max(0, 1 - contrast), 1 + contrast),
                           u(max(0, 1 - saturation), 1 + saturation), u(-hue, hue)], 1)
    order = torch.rand(n, 4, device=dev, generator=generator).argsort(1)   # a random permutation per image
    return dict(factors=factors.cpu(), order=order.cpu(), apply=apply.cpu())

# %%
_p = color_jitter_params(1000, 0.4, 0.3, 0.2, 0.1, p=0.8, generator=torch.Generator().manual_seed(0))
test_eq({k: tuple(v.shape) for k, v in _p.items()}, {"factors": (1000, 4), "order": (1000, 4), "apply": (1000,)})
test_eq(_p["order"].sort(1).values, torch.arange(4).expand(1000, 4))             # each row is a permutation of 0..3
assert ((_p["factors"] >= torch.tensor([0.6, 0.7, 0.8, -0.1])) & (_p["factors"] <= torch.tensor([1.4, 1.3, 1.2, 0.1]))).all()
assert 0.75 < _p["apply"].float().mean() < 0.85
assert color_jitter_params(500, 1.5, 0, 0, 0)["factors"][:, 0].min() >= 0       # strengths over 1 never give a negative factor
test_eq(color_jitter_params(5, 0, 0, 0, 0)["factors"], torch.tensor([JITTER_IDENTITY] * 5))

# %% [markdown]
# Applying all four operations to the whole batch at each of the four steps (identity factor for the images that do
# something else at that step) is simple but does 16 passes of work for 4. Instead, at step $t$ the images whose
# order names operation $k$ there are gathered, transformed and scattered back (`index_select` / `index_copy_`), so
# each image pays for each operation once. The group indices travel to the device in one asynchronous copy from
# pinned memory. Images that are not jittered, or whose factor is the identity, are left out of the groups.

# %%
#| export
def apply_color_jitter(x:torch.Tensor, # float images (B, C, H, W) in [0, 1]
                       factors:torch.Tensor, # (B, 4) brightness, contrast, saturation factors and hue shift
                       order:torch.Tensor, # (B, 4) each row a permutation of 0..3: the operations in the order applied
                       apply:torch.Tensor, # (B,) bool: jitter this image at all
                       inplace:bool=False, # overwrite `x`
                      ) -> torch.Tensor:
    "Apply per-image ColorJitter parameters: each image its factors, in its order; one gather/op/scatter per (step, operation)."
    factors, order, apply = factors.cpu(), order.cpu(), apply.cpu().bool()
    groups = [(k, apply & (order[:, t] == k) & (factors[:, k] != JITTER_IDENTITY[k])) for t in range(4) for k in range(4)]
    idx = [m.nonzero().flatten() for _, m in groups]
    if sum(len(i) for i in idx) == 0: return x
    ends = torch.tensor([len(i) for i in idx]).cumsum(0).tolist()
    idx_all = torch.cat(idx)
    fac_all = torch.cat([factors[i, k] for (k, _), i in zip(groups, idx)])
    idx_d, fac_d = to_device(idx_all, x.device), to_device(fac_all, x.device)
    if not inplace: x = x.clone()
    start = 0
    for (k, _), end in zip(groups, ends):
        if end > start:
            if end - start == len(x): x = JITTER_OPS[k](x, fac_d[start:end])   # the whole batch: no gather
            else:
                i = idx_d[start:end]
                x.index_copy_(0, i, JITTER_OPS[k](x.index_select(0, i), fac_d[start:end]))
        start = end
    return x

# %%
show_doc(apply_color_jitter)

# %% [markdown]
# The reference is a loop over images that applies torchvision's functional ops in each image's order; the batched
# version must agree image by image. A single operation agrees to about $10^{-6}$ (checked above at $10^{-5}$); along
# a chain of four, later factors of up to 1.8 magnify the earlier float32 rounding differences, so chains are compared
# at $2\cdot10^{-5}$.

# %%
_x = torch.rand(32, 3, 10, 10); _x0 = _x.clone()
_p = color_jitter_params(32, 0.8, 0.8, 0.8, 0.2, p=0.8, generator=torch.Generator().manual_seed(0))
_tv_ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
def jitter_loop(x, factors, order, apply):
    "Per-image reference: torchvision's ops in each image's own order."
    out = []
    for i in range(len(x)):
        y = x[i]
        if apply[i]:
            for k in order[i].tolist(): y = _tv_ops[k](y, float(factors[i, k]))
        out.append(y)
    return torch.stack(out)
test_close(apply_color_jitter(_x, **_p), jitter_loop(_x, **_p), eps=2e-5)
assert len(set(map(tuple, _p["order"].tolist()))) > 5, "orders differ between images"
test_eq(_x, _x0)                                                    # the input is not modified
test_close(apply_color_jitter(_x.clone(), **_p, inplace=True), jitter_loop(_x, **_p), eps=2e-5)

# %% [markdown]
# Drawing and applying in one call, for use outside the module:

# %%
#| export
def color_jitter(x:torch.Tensor, # float images (B, C, H, W) in [0, 1]
                 brightness:float, contrast:float, saturation:float, hue:float, # jitter strengths, as in torchvision
                 p:float=1.0, # probability that an image is jittered at all
                 generator=None,
                ) -> torch.Tensor:
    "ColorJitter with per-image factors and a per-image random order of the four operations, applied with probability `p`."
    return apply_color_jitter(x, **color_jitter_params(x.shape[0], brightness, contrast, saturation, hue, p, generator))

# %% [markdown]
# Identity factors leave an image untouched, `p=0` switches the jitter off, and the input is not modified:

# %%
_x = torch.rand(5, 3, 8, 8); _x0 = _x.clone()
test_eq(color_jitter(_x, 0.4, 0.4, 0.4, 0.1, p=0.0), _x)
test_eq(color_jitter(_x, 0.0, 0.0, 0.0, 0.0), _x)
assert not torch.allclose(color_jitter(_x, 0.8, 0.8, 0.8, 0.2), _x); test_eq(_x, _x0)
test_eq(color_jitter(_x, 0.8, 0.8, 0.8, 0.2, generator=torch.Generator().manual_seed(3)),
        apply_color_jitter(_x, **color_jitter_params(5, 0.8, 0.8, 0.8, 0.2, generator=torch.Generator().manual_seed(3))))

# %% [markdown]
# ### Grayscale
# Grayscale replaces an RGB image by its grey image repeated three times, again only for the chosen images:

# %%
#| export
def apply_grayscale(x:torch.Tensor, # float images (B, C, H, W)
                    on:torch.Tensor, # (B,) bool, on the host: which images turn grey
                    inplace:bool=False, # overwrite `x`
                   ) -> torch.Tensor:
    "Turn the chosen RGB images grey (kept as 3 channels)."
    on = on.cpu().bool()
    if x.shape[1] == 1 or not on.any(): return x
    if not inplace: x = x.clone()
    i = to_device(on.nonzero().flatten(), x.device)
    return x.index_copy_(0, i, _gray(x.index_select(0, i)).expand(-1, x.shape[1], -1, -1))

# %%
_x = torch.rand(6, 3, 8, 8); _x0 = _x.clone()
_on = torch.tensor([True, False, True, False, False, True])
_y = apply_grayscale(_x, _on)
for _i in range(6): test_close(_y[_i], TF.rgb_to_grayscale(_x[_i], 3) if _on[_i] else _x[_i], eps=1e-6)
test_eq(_x, _x0); test_is(apply_grayscale(_x, torch.zeros(6, dtype=torch.bool)), _x)

# %%
#| export
def random_grayscale(x, p:float, generator=None):
    "Turn each RGB image grey (kept as 3 channels) with probability `p`."
    if x.shape[1] == 1 or p <= 0: return x
    return apply_grayscale(x, torch.rand(x.shape[0], device=_draw_device(generator), generator=generator) < p)

# %%
test_eq(random_grayscale(_x, 0.0), _x)
test_close(random_grayscale(_x, 1.0), _gray(_x).expand(-1, 3, -1, -1))
test_eq(random_grayscale(_x[:, :1], 1.0), _x[:, :1])

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
    ker = ker[:, None].expand(B, C, k).reshape(B * C, k).to(x.dtype)   # (B*C, k)
    y = F.pad(x.reshape(1, B * C, H, W), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, ker.view(B * C, 1, k, 1), groups=B * C)
    y = F.conv2d(y, ker.view(B * C, 1, 1, k), groups=B * C)
    return y.view(B, C, H, W)

# %%
show_doc(gaussian_blur)

# %%
_x = torch.rand(3, 3, 30, 30)
_sig = torch.tensor([0.5, 1.7, 0.0])
_y = gaussian_blur(_x, 23, _sig)
for _i in range(2): test_close(_y[_i], TF.gaussian_blur(_x[_i], [23, 23], [float(_sig[_i])] * 2), eps=1e-5)
test_close(_y[2], _x[2])
test_close(_y.mean((2, 3)), _x.mean((2, 3)), eps=2e-2)                # a blur moves grey levels around, it does not add any
test_eq(tuple(gaussian_blur(torch.rand(2, 1, 6, 6), 23, torch.tensor([1., 2.])).shape), (2, 1, 6, 6))   # kernel shrunk to fit

# %% [markdown]
# ## Small affine warps for digits
# The digits recipe replaces crop, flip and colour by a small random rotation, scaling and translation per image.
# `F.affine_grid` turns one $2\times3$ matrix per image into sampling positions and `F.grid_sample` reads the image
# there bilinearly (zeros outside). The matrix maps output positions to input positions, so it holds the *inverse*
# scaling $1/s$; translations are in the normalised coordinates $[-1, 1]$, hence the factor 2 on a fraction of the
# side.

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
# With no rotation, scaling or translation the warp is the identity; a seeded generator reproduces the warps; and
# copies of one image get different warps:

# %%
_x = torch.rand(5, 1, 12, 12)
test_close(random_affine(_x, degrees=0., scale=(1, 1), translate=0.), _x, eps=1e-5)
test_eq(random_affine(_x, generator=torch.Generator().manual_seed(0)), random_affine(_x, generator=torch.Generator().manual_seed(0)))
_y = random_affine(_x[:1].expand(5, -1, -1, -1), generator=torch.Generator().manual_seed(0))
assert all(not torch.allclose(_y[i], _y[j]) for i in range(5) for j in range(i + 1, 5)), "each image its own warp"
test_eq(_y.shape, _x.shape)

# %% [markdown]
# ## Stroke thickness and elastic strokes
# A warp moves a digit but keeps its pen: every view of one image has the same stroke width. Width is not a class
# (a bold 1 and a thin 1 are both ones), yet it is the easiest thing for an instance contrast to key on, and a
# network that has learnt "this is the thick one" has learnt little about digits. Two more kernels take it away.
#
# **Thickness.** A grey-scale dilation $\oplus$ (the maximum over each pixel's $3\times3$ neighbourhood) thickens
# strokes by about a pixel on each side; the erosion $\ominus$ (the minimum) thins them. One weight
# $w \sim \mathcal{U}(-s, s)$ per image blends the image towards one or the other:
#
# $$\tilde x = x + w^+ (x \oplus B - x) + w^- (x \ominus B - x), \qquad w^+ = \max(w, 0),\; w^- = \max(-w, 0),$$
#
# so $w = 0$ keeps the image, $w = 1$ is the full dilation and $w = -1$ the full erosion, and values in between
# give the widths in between. Both operators are max-pools: $x \oplus B$ = `max_pool2d(x, 3, 1, 1)` and
# $x \ominus B$ = `-max_pool2d(-x, 3, 1, 1)`.

# %%
#| export
def random_thickness(x:torch.Tensor, # (B, C, H, W) float images in [0, 1], strokes bright on a dark ground
                     strength:float=0.7, # s: each image's weight w is drawn from U(-s, s)
                     generator=None, # torch.Generator on x's device
                    ) -> torch.Tensor:
    "Per-image random stroke width: blend towards the 3×3 grey dilation (w > 0) or erosion (w < 0)."
    if strength <= 0: return x
    w = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(-strength, strength, generator=generator)
    dil, ero = F.max_pool2d(x, 3, 1, 1), -F.max_pool2d(-x, 3, 1, 1)
    return x + w.clamp(min=0) * (dil - x) + (-w).clamp(min=0) * (ero - x)

# %%
show_doc(random_thickness)

# %% [markdown]
# The checks: the weight's end points are the dilation and the erosion written as loops over neighbourhoods; zero
# strength is the identity; a thickened view never has less ink than the image and a thinned one never more; values
# stay in $[0, 1]$.

# %%
def _dilate_loop(img, sign=1):
    "Grey dilation (sign 1) or erosion (sign -1) over the 3×3 neighbourhood inside the image, one pixel at a time."
    H, W = img.shape[-2:]; out = torch.empty_like(img)
    for i in range(H):
        for j in range(W):
            nb = img[..., max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].flatten(-2)
            out[..., i, j] = nb.amax(-1) if sign > 0 else nb.amin(-1)
    return out

_x = torch.rand(2, 1, 7, 9)
_full = lambda x, w: x + max(w, 0) * (_dilate_loop(x) - x) + max(-w, 0) * (_dilate_loop(x, -1) - x)
test_close(F.max_pool2d(_x, 3, 1, 1), _dilate_loop(_x)); test_close(-F.max_pool2d(-_x, 3, 1, 1), _dilate_loop(_x, -1))
test_eq(random_thickness(_x, 0.), _x)
_g = torch.Generator().manual_seed(0)
_y = random_thickness(_x[:1].expand(64, 1, 7, 9), 1.0, _g)
_w = torch.empty(64, 1, 1, 1).uniform_(-1., 1., generator=torch.Generator().manual_seed(0))   # the same draws
for _i in (0, 1, 2, 3): test_close(_y[_i], _full(_x[0], float(_w[_i])), eps=1e-6)
_thick, _thin = _w.flatten() > 0, _w.flatten() < 0
assert (_y[_thick].sum((1, 2, 3)) >= _x[0].sum() - 1e-5).all() and (_y[_thin].sum((1, 2, 3)) <= _x[0].sum() + 1e-5).all()
assert _y.min() >= 0 and _y.max() <= 1

# %% [markdown]
# **Elastic strokes.** Handwriting also bends: a loop opens, a stem leans. A smooth random displacement field does
# that: draw a displacement $d \sim \mathcal{N}(0, \sigma^2)$ per image, axis and node of a coarse $g\times g$ grid
# (normalised coordinates, so $\sigma = 0.08$ is 4 % of the side), upsample it bicubically to the image, add it to the
# identity sampling grid and read the image there with `grid_sample`. Close pixels move together, so strokes stay
# connected.

# %%
#| export
def elastic_warp(x:torch.Tensor, # (B, C, H, W) float images
                 d:torch.Tensor, # (B, 2, g, g) displacements (x then y) at the coarse nodes, normalised coordinates
                ) -> torch.Tensor:
    "Warp each image by its coarse displacement field, upsampled bicubically and added to the identity sampling grid."
    B, C, H, W = x.shape
    d = F.interpolate(d, size=(H, W), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    eye = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(B, 2, 3)
    grid = F.affine_grid(eye, [B, C, H, W], align_corners=False) + d
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

# %%
#| export
def random_elastic(x:torch.Tensor, # (B, C, H, W) float images
                   sigma:float=0.08, # std of the displacement at each coarse node, in normalised coordinates [-1, 1]
                   nodes:int=4, # g: the coarse grid is g × g
                   generator=None, # torch.Generator on x's device
                  ) -> torch.Tensor:
    "Per-image smooth random displacement: a g × g Gaussian field per image, through `elastic_warp`."
    if sigma <= 0: return x
    d = torch.empty(x.shape[0], 2, nodes, nodes, device=x.device, dtype=x.dtype).normal_(0., sigma, generator=generator)
    return elastic_warp(x, d)

# %%
show_doc(elastic_warp)

# %%
show_doc(random_elastic)

# %% [markdown]
# Zero displacement is the identity; a constant displacement field is a translation, the same as the affine warp's;
# copies of one image bend differently; a seeded generator repeats the field.

# %%
_x = torch.rand(4, 1, 12, 12)
test_close(random_elastic(_x, 0.), _x)
test_close(elastic_warp(_x, torch.zeros(4, 2, 4, 4)), _x, eps=1e-5)
_t = torch.tensor([[1., 0, 0.25], [0, 1, -0.5]]).expand(4, 2, 3)   # a translation as an affine matrix
_d = torch.tensor([0.25, -0.5]).view(1, 2, 1, 1).expand(4, 2, 4, 4)  # the same translation as a constant field
test_close(elastic_warp(_x, _d), F.grid_sample(_x, F.affine_grid(_t, [4, 1, 12, 12], align_corners=False), mode="bilinear",
                                               padding_mode="zeros", align_corners=False), eps=1e-5)
_y = random_elastic(_x[:1].expand(5, -1, -1, -1), 0.1, generator=torch.Generator().manual_seed(0))
assert all(not torch.allclose(_y[i], _y[j]) for i in range(5) for j in range(i + 1, 5)), "each image its own field"
test_eq(random_elastic(_x, generator=torch.Generator().manual_seed(3)), random_elastic(_x, generator=torch.Generator().manual_seed(3)))

# %% [markdown]
# ## The per-image PIL pipeline
# The official code makes its views one image at a time: each image becomes a PIL image and goes through
# torchvision's PIL transforms in a DataLoader worker. `cc_pil_transform` is that pipeline for the SimCLR family of
# recipes (an `augment.AugmentConfig`): the yardstick the batched module is timed against, here and in the
# benchmark appendix (`bench`), whose official-style training loop uses it too. It draws its parameters from
# torch's global generator, as torchvision's transforms do, so it cannot replay the batched module's draws
# (`augment.replay_per_image` does that with the functional ops); the checks below compare the two pipelines where
# their results do not depend on the draws.

# %%
#| export
def cc_pil_transform(cfg, # an `augment.AugmentConfig` of the SimCLR family (`kind="simclr"`)
                    ):
    "The per-image PIL pipeline of a SimCLR-family recipe: crop, flip, jitter (p), grayscale (p), blur (p), ToTensor."
    import torchvision.transforms as T
    if cfg.kind != "simclr": raise ValueError(f"the PIL reference covers the SimCLR-family recipe, not {cfg.kind!r}")
    tf = [T.RandomResizedCrop(cfg.size, scale=cfg.crop_scale)]
    if cfg.hflip: tf.append(T.RandomHorizontalFlip())
    tf += [T.RandomApply([T.ColorJitter(*cfg.jitter)], p=cfg.jitter_p), T.RandomGrayscale(cfg.gray_p)]
    if cfg.blur_p > 0: tf.append(T.RandomApply([T.GaussianBlur(cfg.blur_kernel, cfg.blur_sigma)], p=cfg.blur_p))
    return T.Compose(tf + [T.ToTensor()])

# %% [markdown]
# With every random step switched off (the whole image as the crop, no flip, jitter, grayscale or blur) both
# pipelines return the image itself; with grayscale always on they agree to within $0.6/255$ (PIL rounds the grey
# level to an integer, half a grey step, and weighs red 0.299 where `GRAY_WEIGHTS` has 0.2989); with only the flip
# left on, every PIL view is the image or its mirror, and both occur. Images are square, so a crop of the whole area can only be the whole image.

# %%
from deepcluster_nb.augment import AugmentConfig, BatchAugment

# %%
_x = (torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
_imgs = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in _x]
_still = AugmentConfig(size=32, crop_scale=(1., 1.), hflip=False, jitter_p=0., gray_p=0.)
_ours = lambda cfg: BatchAugment(cfg, [0.] * 3, [1.] * 3)(_x)
test_eq(torch.stack([cc_pil_transform(_still)(im) for im in _imgs]), to_float(_x)); test_eq(_ours(_still), to_float(_x))
_grey = AugmentConfig(size=32, crop_scale=(1., 1.), hflip=False, jitter_p=0., gray_p=1.)
test_close(torch.stack([cc_pil_transform(_grey)(im) for im in _imgs]), _ours(_grey), eps=0.6 / 255)
torch.manual_seed(0); _flips = [cc_pil_transform(replace(_still, hflip=True))(_imgs[0]) for _ in range(16)]
assert all(torch.equal(v, to_float(_x[0])) or torch.equal(v, to_float(_x[0]).flip(-1)) for v in _flips)
assert 0 < sum(torch.equal(v, to_float(_x[0])) for v in _flips) < 16
test_fail(lambda: cc_pil_transform(AugmentConfig(kind="digits")), contains="SimCLR-family")

# %% [markdown]
# `PILViews` is the dataset of the official-style loop: it keeps the images as a NumPy array `(N, H, W, C)`, as
# torchvision's CIFAR class does, and each item builds a PIL image and draws its views, plus the resized raw image
# for methods that need it.

# %%
#| export
class PILViews(torch.utils.data.Dataset):
    "Images kept as a NumPy array; an item is `n_views` PIL-transformed views, the resized raw image if asked, and the index."
    def __init__(self, x:torch.Tensor, # (N, C, H, W) uint8 images
                 transform, # a per-image PIL pipeline, e.g. `cc_pil_transform(cfg)`
                 n_views:int=2, # views per item
                 raw_size:int|None=None, # also return the image resized to this side (None: an empty tensor)
                ):
        self.x = x.permute(0, 2, 3, 1).numpy()   # (N, H, W, C) uint8, like torchvision's CIFAR
        self.transform, self.n_views, self.raw_size = transform, n_views, raw_size
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        from PIL import Image
        import torchvision.transforms.functional as TVF
        a = self.x[i]
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
        views = [self.transform(img) for _ in range(self.n_views)]
        raw = TVF.to_tensor(TVF.resize(img, [self.raw_size] * 2)) if self.raw_size else torch.zeros(0)
        return (*views, raw, i)

# %%
_ds = PILViews(_x, cc_pil_transform(AugmentConfig(size=24)), n_views=2, raw_size=24)
_item = _ds[1]
test_eq(len(_ds), 6); test_eq(len(_item), 4); test_eq(tuple(_item[0].shape), (3, 24, 24)); test_eq(_item[3], 1)
assert not torch.equal(_item[0], _item[1]) and 0 <= _item[0].min() and _item[0].max() <= 1
test_eq(PILViews(_x, cc_pil_transform(_still), n_views=1)[2][0], to_float(_x[2])); test_eq(_ds[0][2].shape, (3, 24, 24))
test_eq(PILViews(_x[:, :1], T.ToTensor(), n_views=1)[0][0], to_float(_x[0, :1]))   # one-channel images

# %% [markdown]
# ## Speed
# The per-image PIL pipeline against the batched module of `augment`, both on one CPU thread, on 512 CIFAR-sized
# images (a single measurement; the benchmark appendix measures properly):

# %%
_cfg = AugmentConfig(size=32)
_pil = cc_pil_transform(_cfg)
_x = (torch.rand(512, 3, 32, 32) * 255).to(torch.uint8)
_imgs = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in _x]
_aug = BatchAugment(_cfg, [0.5] * 3, [0.25] * 3)
_t_pil = _ms(lambda: [_pil(im) for im in _imgs], n=1)
_t_batched = _ms(lambda: [_aug(_x[i:i + 256]) for i in (0, 256)], n=1)
print(f"PIL per image: {512 / _t_pil * 1e3:,.0f} views/s   batched: {512 / _t_batched * 1e3:,.0f} views/s")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
