# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Doubly Contrastive Deep Clustering (DCDC)
# > Dang, Deng, Yang, Huang, "Doubly Contrastive Deep Clustering": contrast the rows (sample view) and the columns (class view) of the soft-label matrices of a batch and its augmentations, with nothing but a softmax head on the backbone.

# %%
#| default_exp dcdc

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import math
import torch
import torch.nn as nn
import torch.nn.functional as F
from deepcluster_nb.infonce import float32_loss, info_nce, marginal_entropy_penalty
from deepcluster_nb.augment import AugmentConfig, cc_recipe
from deepcluster_nb.models import ClusterMethod, Batch, Paper, Settings, setting, register_method, make_backbone
from deepcluster_nb.data import PAPER_BENCHMARKS, DIGIT_DATASETS

# %%
import time, tempfile
import numpy as np
import matplotlib.pyplot as plt

# %% [markdown]
# ## Two views of one probability matrix, again
# A network ending in a softmax over $C$ clusters maps a batch of $B$ images to $U\in[0,1]^{B\times C}$ and an
# augmented copy of the batch to $U'$. As in the CC chapter, a **row** $u_i$ is image $i$'s soft label (the *sample
# view*) and a **column** $v_k\in\mathbb R^B$ says which images cluster $k$ claims (the *class view*). DCDC asks both
# readings to survive augmentation: $u_i$ should be closer to $u'_i$ than to any other $u'_j$, and $v_k$ closer to $v'_k$
# than to any other $v'_l$.
#
# That is CC's idea too. What differs:
#
# | | CC | DCDC |
# |---|---|---|
# | rows contrasted | a separate 128-d projection $z_i$ (instance head) | the probability rows $u_i$ themselves: no instance projector |
# | the two views | two strong augmentations, treated symmetrically | a lightly transformed "original" $x$ and strong augmentations $x'$; loss from original to augmented only |
# | candidates of a query | the $2N-1$ other rows of *both* views (NT-Xent) | the $B$ rows of the *other* view, the positive among them (plain InfoNCE) |
# | temperature | $\tau_I=0.5$, $\tau_C=1$ | one $\tau$ for both terms, set per dataset |
# | head | two-layer MLP → softmax | one linear layer → softmax, plus an over-clustering head |
# | batch | 256 | proportional to the number of classes (50 on CIFAR-10) |
#
# Both terms are the InfoNCE loss of the InfoNCE chapter with the cosine critic $f(u,u')=\exp(\cos(u,u')/\tau)$
# (Eq. 7), and both put the positive inside the denominator.
#
# **A bounded critic.** Probability vectors are non-negative, so $\cos(u,u')\in[0,1]$: a positive scores at most
# $e^{1/\tau}$ and a negative at least $e^0=1$. The loss of a query with $B-1$ negatives can therefore never go below
# $\log\big(1+(B-1)e^{-1/\tau}\big)$, reached when the rows are one-hot and pairwise different (possible only if
# $B\le C$). With $\tau=0.5$ and $B=50$ that floor is 2.03 nats; the temperature decides how strongly a negative that is
# already orthogonal keeps contributing.

# %% [markdown]
# ## Sample-wise contrastive loss (Eq. 8)
# For the sample view, image $i$'s original row $u_i$ has one positive, its augmented row $u'_i$, and $B-1$ negatives
# $u'_j$, $j\neq i$:
#
# $$\mathcal L_{sample} = -\frac1B\sum_{i=1}^{B}\log\frac{\exp(\cos(u_i,u'_i)/\tau)}{\sum_{j=1}^{B}\exp(\cos(u_i,u'_j)/\tau)},\qquad
# \cos(u,u')=\frac{u^\top u'}{\|u\|_2\|u'\|_2}\quad\text{(Eq. 6, 8)}$$
#
# First the equation one query at a time:

# %%
def cos(a, b): return (a @ b) / (a.norm() * b.norm()).clamp(min=1e-12)

def sample_loss_loop(u_a, u_b, tau):
    "Eq. 8 literally: for each original row u_i, −log of its positive's share among all B augmented rows."
    B, total = u_a.shape[0], 0.
    for i in range(B):
        num = torch.exp(cos(u_a[i], u_b[i]) / tau)
        den = sum(torch.exp(cos(u_a[i], u_b[j]) / tau) for j in range(B))
        total += -torch.log(num / den)
    return total / B

# %% [markdown]
# The vectorised form: L2-normalise the rows, one matrix product gives all $B^2$ cosines, and Eq. 8 is the
# InfoNCE cross-entropy whose positive for row $i$ sits in column $i$. That product runs in float32 under the
# trainer's bf16 autocast too: the losses of this chapter carry `float32_loss` (InfoNCE chapter, §10, says why).

# %%
#| export
@float32_loss
def sample_loss(u_a:torch.Tensor, # (B, C) rows u_i: the original view's cluster probabilities
                u_b:torch.Tensor, # (B, C) rows u'_i: the augmented view's, row i the positive of u_i
                temperature:float=0.5, # τ
               ) -> torch.Tensor: # scalar L_sample
    "DCDC's sample-wise contrastive loss (Eq. 8): InfoNCE over rows with the cosine critic, one direction (a → b)."
    if u_a.shape != u_b.shape: raise ValueError(f"u_a and u_b must have the same shape, got {tuple(u_a.shape)} and {tuple(u_b.shape)}")
    # $\cos(u_i, u'_j)$ for all pairs
    s = F.normalize(u_a, dim=1) @ F.normalize(u_b, dim=1).t()
    # $-\frac1B\sum_i \log \mathrm{softmax}_j(s_{ij}/\tau)_{j=i}$
    return info_nce(s / temperature, torch.arange(len(s), device=s.device))

# %%
show_doc(sample_loss)

# %%
for _B, _C, _t in [(6, 3, 0.5), (16, 10, 0.3), (5, 20, 1.0)]:
    _ua, _ub = torch.softmax(torch.randn(_B, _C) * 2, 1), torch.softmax(torch.randn(_B, _C) * 2, 1)
    test_close(sample_loss(_ua, _ub, _t), sample_loss_loop(_ua, _ub, _t), eps=1e-5)
# the floor log(1 + (B−1)e^{−1/τ}) for distinct one-hot rows, and log B for a collapsed batch
test_close(sample_loss(torch.eye(10)[:6], torch.eye(10)[:6], 0.5), math.log(1 + 5 * math.exp(-2)), eps=1e-6)
test_close(sample_loss(torch.eye(10)[[0] * 6], torch.eye(10)[[0] * 6], 0.5), math.log(6), eps=1e-6)
test_fail(lambda: sample_loss(torch.rand(4, 3), torch.rand(5, 3)), contains="same shape")

# %% [markdown]
# Unlike NT-Xent, Eq. 8 is not symmetric in its two arguments: each query is an original row, and the candidates are
# augmented rows only.

# %%
_ua, _ub = torch.softmax(torch.randn(8, 4), 1), torch.softmax(torch.randn(8, 4), 1)
assert not torch.isclose(sample_loss(_ua, _ub), sample_loss(_ub, _ua))

# %% [markdown]
# ## Class-wise contrastive loss (Eq. 10)
# For the class view, cluster $i$'s column over the original batch, $v_i\in\mathbb R^B$, should match its column over the
# augmented batch, $v'_i$, better than any other cluster's column: one positive class and $C-1$ negative classes,
#
# $$\mathcal L_{class} = -\frac1C\sum_{i=1}^{C}\log\frac{\exp(\cos(v_i,v'_i)/\tau)}{\sum_{j=1}^{C}\exp(\cos(v_i,v'_j)/\tau)}\quad\text{(Eq. 10)},
# \qquad \mathcal L = \mathcal L_{sample} + \mathcal L_{class}\quad\text{(Eq. 11)}.$$
#
# The columns are normalised along the batch, so a cluster's column measures *which* images it claims, not how many.

# %%
def class_loss_loop(u_a, u_b, tau):
    "Eq. 10 literally: one cluster column v_i at a time against all C augmented columns v'_j."
    C, total = u_a.shape[1], 0.
    for i in range(C):
        v_i = u_a[:, i]
        num = torch.exp(cos(v_i, u_b[:, i]) / tau)
        den = sum(torch.exp(cos(v_i, u_b[:, j]) / tau) for j in range(C))
        total += -torch.log(num / den)
    return total / C

# %%
#| export
@float32_loss
def class_loss(u_a:torch.Tensor, # (B, C) original view's probabilities; column v_i is cluster i over the batch
               u_b:torch.Tensor, # (B, C) augmented view's; column v'_i is the positive of v_i
               temperature:float=0.5, # τ
              ) -> torch.Tensor: # scalar L_class
    "DCDC's class-wise contrastive loss (Eq. 10): the sample-wise loss of the transposed matrices (columns as queries)."
    return sample_loss(u_a.t(), u_b.t(), temperature)

# %%
show_doc(class_loss)

# %%
for _B, _C, _t in [(6, 3, 0.5), (16, 10, 0.3), (50, 10, 0.5)]:
    _ua, _ub = torch.softmax(torch.randn(_B, _C) * 2, 1), torch.softmax(torch.randn(_B, _C) * 2, 1)
    test_close(class_loss(_ua, _ub, _t), class_loss_loop(_ua, _ub, _t), eps=1e-5)
# columns are compared by direction only: scaling one cluster's column leaves the loss unchanged
test_close(class_loss(_ua * torch.tensor([3.] + [1.] * 9), _ub), class_loss(_ua, _ub), eps=1e-5)
# identical soft rows make all columns parallel: the class view cannot tell clusters apart, loss log C
test_close(class_loss(torch.full((8, 5), 0.2), torch.full((8, 5), 0.2)), math.log(5), eps=1e-6)

# %% [markdown]
# ## What each view rewards
# Before any training, evaluate both terms on hand-made batches of $B=20$ images and $C=5$ clusters with a perfectly
# invariant network ($U'=U$), $\tau=0.5$, together with the balance penalty $\log C - H(p)$ of the InfoNCE chapter
# (§9, `marginal_entropy_penalty`; $p$ the batch-mean assignment):

# %%
_B, _C = 20, 5
_toy = {"uniform soft rows": torch.full((_B, _C), 1 / _C),
        "all in one cluster": torch.eye(_C)[[0] * _B],
        "balanced one-hot": torch.eye(_C)[[i % _C for i in range(_B)]],
        "imbalanced one-hot (16/1/1/1/1)": torch.eye(_C)[[0] * 16 + [1, 2, 3, 4]],
        "balanced over 4 clusters, 1 empty": torch.eye(_C)[[i % 4 for i in range(_B)]]}
_tab = {k: (sample_loss(U, U).item(), class_loss(U, U).item(), marginal_entropy_penalty(U).item()) for k, U in _toy.items()}
print(f"{'batch':36s} {'L_sample':>9s} {'L_class':>9s} {'log C − H(p)':>13s}")
for k, (s, c, b) in _tab.items(): print(f"{k:36s} {s:9.3f} {c:9.3f} {b:13.3f}")

# %% [markdown]
# Read down the columns:
# - The **sample view** is lowest for the balanced one-hot batch. Every other row of the same cluster is a negative
#   with cosine 1, as strong as the positive, so the term counts collisions: it prefers confident rows spread evenly
#   over the clusters, and a collapsed batch costs $\log B$.
# - The **class view** cannot tell the balanced batch from the imbalanced one: one-hot rows make all columns
#   orthogonal whatever the cluster sizes. What it punishes is an *empty* cluster (a zero column has no direction and
#   scores $\log C$) and soft rows (parallel columns).
# - The **balance term** looks only at the mean assignment: zero for the uniform soft rows and the balanced one-hot
#   batch alike, 0.22 with one cluster empty, 0.83 for the 16/1/1/1/1 batch, $\log C$ when collapsed. It pushes
#   towards equal cluster sizes, which the class view ignores, and says nothing about confidence.

# %%
test_eq(min(_tab, key=lambda k: _tab[k][0]), "balanced one-hot")
test_close(_tab["balanced one-hot"][1], _tab["imbalanced one-hot (16/1/1/1/1)"][1], eps=1e-6)
assert _tab["balanced over 4 clusters, 1 empty"][1] > _tab["imbalanced one-hot (16/1/1/1/1)"][1]

# %% [markdown]
# ## The official loss: sample repeat, one direction, a balance term
# The official implementation (a fork of PICA's code) differs from Eq. 8–11 in three ways, and we follow it:
#
# 1. **Sample repeat.** Each of the $B$ images of a batch is augmented $r=3$ times. The augmented probabilities are
#    stacked as $U'\in\mathbb R^{rB\times C}$ with rows $i, i+B, i+2B$ the three augmentations of image $i$, and the
#    original rows are tiled to match, $\tilde U = [U; U; U]\in\mathbb R^{rB\times C}$. Eq. 8 and Eq. 10 are then applied
#    to $(\tilde U, U')$: $rB$ row queries, each with $rB$ candidates, and $C$ column queries of length $rB$.
# 2. **False negatives.** For the query $\tilde u_{i+mB}$ the positive is $u'_{i+mB}$; the other two augmentations of the
#    *same* image, $u'_{i+m'B}$ with $m'\neq m$, sit in the denominator as negatives. The loss asks the network to tell
#    an image's own augmentations apart — which a clustering head cannot and should not do. (This is a special case of
#    the collisions above: any image of the same cluster is a negative of the sample view.)
# 3. **Balance.** $\log C - H(p)$ with $p=\frac1B\sum_i u_i$ the mean assignment of the *original* view only is added,
#    as in CC's official code; it is not in the printed Eq. 11.
#
# $$\mathcal L_{DCDC} = \mathcal L_{sample}(\tilde U, U') + \mathcal L_{class}(\tilde U, U') + \log C + \sum_{k=1}^{C} p_k\log p_k .$$
#
# The computation exactly as the official code does it, written as loops (the tiled rows are indexed
# $a \bmod B$):

# %%
def official_dcdc_loop(u_orig, u_aug, tau, r):
    "The official DCDC loss, loop by loop: one-directional row and column cross-entropies on the tiled batch + balance."
    B, C = u_orig.shape
    rows = [u_orig[a % B] for a in range(r * B)]                     # the tiled originals ũ_a
    l_s = sum(-torch.log(torch.exp(cos(rows[a], u_aug[a]) / tau) /
                         sum(torch.exp(cos(rows[a], u_aug[b]) / tau) for b in range(r * B))) for a in range(r * B)) / (r * B)
    cols = [torch.stack([rows[a][k] for a in range(r * B)]) for k in range(C)]  # ṽ_k, length rB
    l_c = sum(-torch.log(torch.exp(cos(cols[k], u_aug[:, k]) / tau) /
                         sum(torch.exp(cos(cols[k], u_aug[:, l]) / tau) for l in range(C))) for k in range(C)) / C
    p = [sum(u_orig[i, k] for i in range(B)) for k in range(C)]
    p = [pk / sum(p) for pk in p]
    return l_s + l_c + math.log(C) + sum(pk * torch.log(pk) for pk in p)

# %%
#| export
@float32_loss
def dcdc_loss(u_orig:torch.Tensor, # (B, C) cluster probabilities of the original (lightly transformed) images
              u_aug:torch.Tensor, # (n_repeat·B, C) of their augmentations; rows i, i+B, i+2B… belong to image i
              temperature:float=0.5, # τ, shared by both terms
              n_repeat:int=3, # r, augmentations per image
              return_terms:bool=False, # also return the dict of the three terms (sample, class, balance)
             ):
    "The official DCDC objective: Eq. 8 + Eq. 10 on the originals tiled r times against their r augmentations, plus log C − H(p)."
    B, C = u_orig.shape
    if tuple(u_aug.shape) != (n_repeat * B, C):
        raise ValueError(f"u_aug must be (n_repeat·B, C) = ({n_repeat * B}, {C}), got {tuple(u_aug.shape)}")
    # $\tilde U = [U; U; \dots]$, row $a$ is original $a \bmod B$
    u = u_orig.repeat(n_repeat, 1)
    terms = {"sample": sample_loss(u, u_aug, temperature), "class": class_loss(u, u_aug, temperature),
             "balance": marginal_entropy_penalty(u_orig)}   # $\log C - H(p)$, originals only
    loss = terms["sample"] + terms["class"] + terms["balance"]
    return (loss, terms) if return_terms else loss

# %%
show_doc(dcdc_loss)

# %% [markdown]
# Value and gradient against the loops, with gradients taken by autograd through both computations down to the
# logits of both views:

# %%
for _B, _C, _t, _r in [(4, 3, 0.5, 3), (6, 5, 0.3, 2), (5, 4, 1.0, 1)]:
    _lo, _la = torch.randn(_B, _C, requires_grad=True), torch.randn(_r * _B, _C, requires_grad=True)
    _ref = official_dcdc_loop(torch.softmax(_lo, 1), torch.softmax(_la, 1), _t, _r)
    _g_ref = torch.autograd.grad(_ref, [_lo, _la])
    _val = dcdc_loss(torch.softmax(_lo, 1), torch.softmax(_la, 1), _t, _r)
    _g = torch.autograd.grad(_val, [_lo, _la])
    test_close(_val, _ref, eps=1e-5)
    for _a, _b in zip(_g, _g_ref): test_close(_a, _b, eps=1e-6)
# with r = 1 it is the printed Eq. 11 plus the balance term
_uo, _ua = torch.softmax(torch.randn(7, 4), 1), torch.softmax(torch.randn(7, 4), 1)
test_close(dcdc_loss(_uo, _ua, 0.5, 1), sample_loss(_uo, _ua) + class_loss(_uo, _ua) + marginal_entropy_penalty(_uo), eps=1e-6)
test_fail(lambda: dcdc_loss(_uo, _ua, 0.5, 3), contains="must be (n_repeat·B, C) = (21, 4)")

# %% [markdown]
# The false negatives have a price that can be computed. Take a perfect network: one-hot, balanced, and exactly
# invariant, so all $r$ augmentations of image $i$ equal $u_i$. Without repeat ($r=1$) the sample term sits at its
# collision floor; with $r=3$ each query sees its own image's two other copies as negatives with cosine 1 and pays more:

# %%
_U = torch.eye(10)[torch.arange(50) % 10]                         # B = 50, 5 images per cluster, one-hot
_, _t1 = dcdc_loss(_U, _U, 0.5, 1, return_terms=True)
_, _t3 = dcdc_loss(_U, _U.repeat(3, 1), 0.5, 3, return_terms=True)
print(f"sample term of a perfect model: r=1 {_t1['sample']:.3f}, r=3 {_t3['sample']:.3f}")
# r = 1: each query has 5 rows at cosine 1 (its own + 4 same-cluster); r = 3: 15 of 150
test_close(_t1["sample"], math.log(5 * math.e**2 + 45) - 2, eps=1e-5)
test_close(_t3["sample"], math.log(15 * math.e**2 + 135) - 2, eps=1e-5)

# %% [markdown]
# ## The "original" view
# The official code feeds the original images through a reduced transform: resize to a slightly larger side (40 px
# for 32-px CIFAR, 112 for 96-px images, 80 for 64-px Tiny-ImageNet) and take a random crop of the native size, then
# normalise — a small random zoom and shift, nothing else. Our trainer hands the method the resized, normalised,
# un-augmented batch (`Batch.raw`); `reduced_view` applies the zoom-and-crop to it on the device, each image with its
# own offset. The zoom factor $s$ (`resize_ratio`) scales sampling coordinates by $1/s$, and the offset is drawn
# uniformly in $\pm(1-1/s)$ (normalised coordinates), which keeps the crop inside the enlarged image. The official
# *test* transform is the same resize followed by a centre crop (`random=False`), and DCDC's `forward` applies it, so
# the main head is evaluated on images framed like the originals it was trained on.

# %%
#| export
def reduced_view(x:torch.Tensor, # (B, C, S, S) normalised images
                 resize_ratio:float=1.25, # s: enlarge by s, then crop S × S at a random position (1: unchanged)
                 random:bool=True, # random crop position per image; False: the centre crop (the official test transform)
                 generator:torch.Generator|None=None, # random generator for the offsets
                ) -> torch.Tensor: # (B, C, S, S)
    "DCDC's transform of the original images: a resize by `resize_ratio` and a random (or centre) crop back to the input size."
    B, s = x.shape[0], float(resize_ratio)
    if s < 1: raise ValueError(f"resize_ratio must be at least 1, got {resize_ratio}")
    t = (torch.rand(B, 2, device=x.device, generator=generator) * 2 - 1) * (1 - 1 / s) if random else torch.zeros(B, 2, device=x.device)
    theta = torch.zeros(B, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)

# %%
_x = torch.randn(4, 3, 16, 16)
test_close(reduced_view(_x, 1.0), _x, eps=1e-5)                         # no zoom, no shift: the identity
_ramp = torch.arange(32.).expand(6, 1, 32, 32).contiguous()              # value = column index
_y = reduced_view(_ramp, 2.0)
test_close(_y[:, 0, :, 9:23].diff(dim=-1), torch.full((6, 32, 13), 0.5), eps=1e-4)   # zoom ×2: half a pixel per pixel
_centre = _y[:, 0, 16, 15:17].mean(1)                                    # the crop's centre, in input columns
assert ((_centre - 15.5).abs() <= 8 + 1e-4).all() and _centre.std() > 0  # shifted per image, by at most (1 − 1/s)·S/2
test_close(reduced_view(_ramp, 2.0, random=False)[:, 0, 16, 15:17].mean(1), torch.full((6,), 15.5), eps=1e-4)  # centre crop
test_fail(lambda: reduced_view(_x, 0.5), contains="at least 1")

# %% [markdown]
# ## Augmentation and the paper's settings
# The strong augmentation of the official configuration: a random resized crop of 20–100% of the area, horizontal
# flip, colour jitter 0.4 on brightness, contrast, saturation and hue, and grayscale with probability 0.2. On the grey
# digit datasets we use the digits recipe of the augmentation chapter.
#
# The paper's Table III sets $\tau$ and the batch size per dataset; all runs use Adam at a fixed learning rate of
# $10^{-3}$ for 200 epochs, sample repeat $r=3$, and an over-clustering head of 70 clusters (700 on Tiny-ImageNet).
# The backbone is a ResNet-34 with a 3×3 first convolution behind a frozen Sobel layer (`sobel_resnet34` with the
# small stem) at native resolution; the official network also max-pools after its first convolution, ours does not.
#
# On the digit datasets the settings are ours: the small CNN at native size and Adam at 2e-3. An epoch of DCDC is two
# passes over the data (over-clustering head, then main head), and each step pushes $B + 3B$ images through the
# backbone, so one DCDC epoch costs as much as four CC epochs; the epoch budgets are short for that reason. Digits
# trains with batch 64 for 12 epochs; USPS and the MNIST test digits with batch 128 at a constant learning rate over
# the few epochs the results grid affords on a CPU (the settings table below is what runs). What these settings reach
# over seeds is the grid's summary after the digits run below, not a number typed here.
#
# Three of these choices were made by label ACC, on data and seeds the grid reports: batch 64 on the digits (against
# 32 and 128, on seeds 0 and 1, with the first edition's trainer); the parts of the digits augmentation (the
# augmentation chapter's probe: digits, USPS and the MNIST test digits, seeds 0–2; its strengths were never varied);
# and the constant learning rate on USPS and the MNIST test digits, which replaced a cosine decay after CC's USPS
# runs with the decay, on the grid's seeds 0–2, stayed below k-means on the raw pixels.

# %%
#| export
def dcdc_recipe(dataset:str, # benchmark key (see `dataset_key`)
                size:int, # output side
               ) -> AugmentConfig:
    "DCDC's strong augmentation (the official configuration); the digits recipe on the digit datasets."
    if dataset in DIGIT_DATASETS: return cc_recipe(dataset, size)
    return AugmentConfig(size=size, crop_scale=(0.2, 1.0), hflip=True, jitter=(0.4, 0.4, 0.4, 0.4), jitter_p=1.0, gray_p=0.2)

# %%
test_eq(dcdc_recipe("cifar10", 32).crop_scale, (0.2, 1.0)); test_eq(dcdc_recipe("digits", 8).kind, "digits")
test_eq(dcdc_recipe("stl10", 96).size, 96)

# %% [markdown]
# The paper, its training length and the numbers it reports (Table I, evaluated with the cluster head), which the run
# report puts beside a run:

# %%
#| export
DCDC_PAPER = Paper(
    cite="Dang, Deng, Yang, Huang: Doubly Contrastive Deep Clustering", short="Dang et al. (DCDC)",
    epochs=200, epochs_from="Sec. IV-C",
    note="over-clustering head (70 clusters; 700 on Tiny-ImageNet); labels assigned by the dominating class",
    results=(("cifar10", "head", 0.699, 0.585, 0.506, "Table I"), ("cifar100", "head", 0.349, 0.310, 0.179, "Table I"),
             ("stl10", "head", 0.734, 0.621, 0.547, "Table I"), ("imagenet10", "head", 0.879, 0.817, 0.787, "Table I"),
             ("imagenet_dogs", "head", 0.365, 0.360, 0.207, "Table I"),
             ("tiny_imagenet", "head", 0.164, 0.323, 0.073, "Table I")))

# %%
test_eq({r[0] for r in DCDC_PAPER.results}, set(PAPER_BENCHMARKS))
test_eq([(r["acc"], r["nmi"], r["ari"], r["table"]) for r in DCDC_PAPER.rows("stl10")], [(0.734, 0.621, 0.547, "Table I")])
test_eq(DCDC_PAPER.rows("digits"), [])

# %% [markdown]
# The settings table. Rows apply in order, later rows overriding earlier ones, and each cites its source: the paper
# where it says something, the official code's configuration files where only they do, "ours" for the rest. Two
# values differ from the official code: the batch size of ImageNet-Dogs follows the paper's Table III (30; the
# official configuration has 60), and the ImageNet subsets train at the size we store them (256 px; the official code
# trains on 96 px).

# %%
#| export
DCDC_SETTINGS = Settings(
    setting("*", "ours: ResNet-18 at native size, the paper's optimiser, batch 128, 200 epochs, for data the paper does not use",
            backbone="resnet18", stem="small", image_size="native", optimizer="adam", lr=1e-3, weight_decay=0.0,
            batch_size=128, epochs=200, augment=dcdc_recipe),
    setting(PAPER_BENCHMARKS, "official code: configs/base.yaml (ResNet-34 behind a Sobel layer), dc/networks.py "
            "(3×3 stride-1 first convolution)", backbone="sobel_resnet34", stem="small"),
    setting(PAPER_BENCHMARKS, "official code: configs/<dataset>.yaml tfm_size, each data set at its own size (Table II)",
            image_size="native"),
    setting(("imagenet10", "imagenet_dogs"), "official code: configs/imagenet10.yaml, imagenetdog.yaml tfm_size 96 "
            "(our stored subsets hold 256 px and are resized)", image_size=96),
    setting(PAPER_BENCHMARKS, "Sec. III-C, official code: configs/base.yaml: crop scale 0.2–1, flip, colour jitter 0.4, "
            "grayscale p 0.2", augment=dcdc_recipe),
    setting(PAPER_BENCHMARKS, "Sec. IV-C: Adam at a fixed learning rate of 1e-3", optimizer="adam", lr=1e-3, schedule="constant"),
    setting(PAPER_BENCHMARKS, "official code: configs/base.yaml optim_weight_decay 0 (the paper names none)", weight_decay=0.0),
    setting(PAPER_BENCHMARKS, "Sec. IV-C: 200 epochs", epochs=200),
    setting(PAPER_BENCHMARKS, "Sec. IV-A: training and test images together", protocol="paper"),
    setting(PAPER_BENCHMARKS, "Sec. IV-C: each in-batch sample repeated r = 3 times; 70 over-clusters",
            hparams=dict(n_repeat=3, over_clusters=70)),
    setting("tiny_imagenet", "Sec. IV-C: 700 over-clusters on Tiny-ImageNet", hparams=dict(over_clusters=700)),
    setting(("cifar10", "cifar100", "tiny_imagenet"), "official code: configs/<dataset>.yaml tfm_resize 40 for 32 px, "
            "80 for 64 px", hparams=dict(orig_resize=1.25)),
    setting(("stl10", "imagenet10", "imagenet_dogs"), "official code: configs/<dataset>.yaml tfm_resize 112 for 96 px",
            hparams=dict(orig_resize=112 / 96)),
    setting("cifar10", "Table III: τ = 0.5, B = 50", batch_size=50, hparams=dict(temperature=0.5)),
    setting("cifar100", "Table III: τ = 0.3, B = 200", batch_size=200, hparams=dict(temperature=0.3)),
    setting("stl10", "Table III: τ = 0.3, B = 100", batch_size=100, hparams=dict(temperature=0.3)),
    setting("imagenet10", "Table III: τ = 0.5, B = 50", batch_size=50, hparams=dict(temperature=0.5)),
    setting("imagenet_dogs", "Table III: τ = 0.5, B = 30 (official configs/imagenetdog.yaml: 60)", batch_size=30,
            hparams=dict(temperature=0.5)),
    setting("tiny_imagenet", "Table III: τ = 0.5, B = 300", batch_size=300, hparams=dict(temperature=0.5)),
    setting(DIGIT_DATASETS, "ours: the small CNN at native size on CPU, Adam 2e-3, batch 128, 20 epochs (a CPU-sized "
            "starting point; the rows below set each data set's budget); the digits augmentation, its parts chosen by "
            "label ACC on digits, USPS and MNIST-test, seeds 0–2 (augmentation chapter)", backbone="small_cnn", stem="small", image_size="native", optimizer="adam", lr=2e-3,
            weight_decay=0.0, batch_size=128, epochs=20, augment=dcdc_recipe),
    setting("digits", "ours: batch 64 for 12 epochs (batch 64 chosen by label ACC on digits against 32 and 128, seeds 0–1, "
            "first edition's trainer; its results over seeds: the grid summary after the digits run)", batch_size=64, epochs=12),
    setting("usps", "ours: 5 epochs of 72 steps, the budget of the results grid (a CPU run of a few minutes), at a constant "
            "learning rate (chosen by label ACC: with a cosine decay CC's USPS runs, seeds 0–2, stayed below k-means on "
            "the raw pixels)", epochs=5),
    setting("mnist", "ours: 3 epochs of 78 steps on the 10,000 test digits, the budget of the results grid, at a constant "
            "learning rate (as on USPS)", epochs=3),
)

# %% [markdown]
# The table as the trainer reads it, each value with its source; `DCDC_SETTINGS.resolve(dataset)` gives the values
# alone:

# %%
import pandas as pd

# %%
pd.DataFrame(DCDC_SETTINGS.table(["cifar10", "cifar100", "stl10", "imagenet_dogs", "tiny_imagenet", "digits", "custom"],
                                 ["backbone", "batch_size", "epochs", "lr", "hparams.temperature", "hparams.over_clusters",
                                  "hparams.orig_resize"])).set_index("dataset")

# %%
_table3 = {"cifar10": (0.5, 50), "cifar100": (0.3, 200), "stl10": (0.3, 100), "imagenet10": (0.5, 50),
           "imagenet_dogs": (0.5, 30), "tiny_imagenet": (0.5, 300)}   # the paper's Table III: dataset -> (τ, B)
_s = {d: DCDC_SETTINGS.resolve(d) for d in (*PAPER_BENCHMARKS, *DIGIT_DATASETS, "custom")}   # dataset -> its settings
test_eq({d: (_s[d]["hparams"]["temperature"], _s[d]["batch_size"]) for d in PAPER_BENCHMARKS}, _table3)
test_eq({d: _s[d]["hparams"]["over_clusters"] for d in ("cifar10", "tiny_imagenet")}, {"cifar10": 70, "tiny_imagenet": 700})
test_eq((_s["stl10"]["hparams"]["orig_resize"], _s["cifar100"]["hparams"]["orig_resize"]), (112 / 96, 1.25))
test_eq({k: _s["digits"][k] for k in ("backbone", "lr", "batch_size", "epochs")},
        dict(backbone="small_cnn", lr=2e-3, batch_size=64, epochs=12))
test_eq((_s["usps"]["batch_size"], _s["custom"]["backbone"], _s["digits"]["hparams"]), (128, "resnet18", {}))
test_eq(DCDC_SETTINGS.sourced("imagenet_dogs")["batch_size"][1].split(":")[0], "Table III")

# %%
from deepcluster_nb.train import GLOBAL_DEFAULTS

# %%
# USPS and MNIST: no row sets a schedule, so they run at the trainer's default, a constant learning rate (as the prose says)
test_eq([_s[d].get("schedule", GLOBAL_DEFAULTS["schedule"]) for d in ("usps", "mnist")], ["constant", "constant"])

# %% [markdown]
# ## The model
# One backbone, a main head (linear → softmax over the $K$ clusters) and, unless `over_clusters=0`, an over-clustering
# head (linear → softmax over 70 clusters). The trainer runs one pass over the data per entry of `train_heads` each
# epoch: first the over-clustering head, then the main head, each with the same loss and the same optimiser (the
# backbone is updated in both passes). Evaluation and prediction use the main head. (On STL-10 the official code
# trains the over-clustering head on the 100,000 unlabelled images too; our trainer gives both heads the same images.) `n_repeat` sets how many
# augmented views the trainer draws per image ($r$; 1 switches sample repeat off), and the original view is
# `reduced_view(Batch.raw)` (`orig_resize=1` uses the raw batch as it is).
#
# As in the official code the original and the augmented images go through the backbone in two separate forward
# passes, so BatchNorm normalises each with its own statistics. Under data parallelism each of the $r$ augmented
# blocks is gathered separately, so that rows $i, i+B, i+2B$ of the gathered $U'$ still belong to one image.

# %%
#| export
def probability_head(feat_dim:int, n_clusters:int) -> nn.Module:
    "DCDC's cluster head: one linear layer and a softmax."
    return nn.Sequential(nn.Linear(feat_dim, n_clusters), nn.Softmax(dim=1))

@register_method
class DCDC(ClusterMethod):
    "Doubly Contrastive Deep Clustering: sample- and class-wise InfoNCE on the softmax outputs of original vs augmented images."
    name, paper, settings = "dcdc", DCDC_PAPER, DCDC_SETTINGS
    needs_raw = True
    column_contrast = True
    def __init__(self, backbone, feat_dim, n_clusters,
                 temperature:float=0.5, # τ for both terms
                 n_repeat:int=3, # r, augmentations per image (1: no sample repeat)
                 over_clusters:int=70, # clusters of the over-clustering head (0: no over-clustering head)
                 orig_resize:float=1.25, # zoom of the original view's random crop (1: the raw image)
                ):
        if n_repeat < 1: raise ValueError(f"n_repeat must be at least 1, got {n_repeat}")
        super().__init__(backbone, feat_dim, n_clusters, temperature=temperature, n_repeat=n_repeat,
                         over_clusters=over_clusters, orig_resize=orig_resize)
        self.n_views = n_repeat
        self.train_heads = ("over", "main") if over_clusters else ("main",)
        self.cluster_heads = nn.ModuleDict({h: probability_head(feat_dim, over_clusters if h == "over" else n_clusters)
                                            for h in self.train_heads})

    def training_step(self, batch:Batch, head:str="main") -> dict:
        hp, g = self.hparams, self.cluster_heads[head]
        x_orig = reduced_view(batch.raw, hp["orig_resize"]) if hp["orig_resize"] != 1 else batch.raw
        if batch.raw.is_contiguous(memory_format=torch.channels_last) and batch.raw.shape[1] > 1:   # keep the run's layout
            x_orig = x_orig.contiguous(memory_format=torch.channels_last)
        u_orig = self.gather(g(self.backbone(x_orig)))
        u_aug = g(self.backbone(torch.cat(batch.views)))
        u_aug = torch.cat([self.gather(u) for u in u_aug.chunk(hp["n_repeat"])])
        loss, terms = dcdc_loss(u_orig, u_aug, hp["temperature"], hp["n_repeat"], return_terms=True)
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def forward(self, x):
        "Main-head probabilities of the centre-cropped zoom of `x` (the official test transform) and the backbone features."
        if self.hparams["orig_resize"] != 1: x = reduced_view(x, self.hparams["orig_resize"], random=False)
        h = self.backbone(x)
        return {"probs": self.cluster_heads["main"](h), "features": h}

# %%
show_doc(DCDC)

# %% [markdown]
# A smoke check of the step: 20 Adam steps on one fixed batch lower the loss; a pass of the over-clustering head
# leaves the main head untouched; the options change what the trainer is asked for.

# %%
torch.manual_seed(0)
_bb, _fd = make_backbone("small_cnn", 1)
_m = DCDC(_bb, _fd, n_clusters=10)
test_eq((_m.n_views, _m.train_heads, _m.needs_raw), (3, ("over", "main"), True))
_opt = torch.optim.Adam(_m.parameters(), 1e-3)
_x = torch.randn(32, 1, 8, 8)
_batch = Batch(views=[_x + 0.1 * torch.randn_like(_x) for _ in range(3)], index=torch.arange(32), raw=_x)
_losses = []
for _ in range(20):
    _out = _m.training_step(_batch, "main"); _opt.zero_grad(); _out["loss"].backward(); _opt.step(); _losses.append(_out["loss"].item())
assert _losses[-1] < _losses[0], _losses
_opt.zero_grad(); _m.training_step(_batch, "over")["loss"].backward()
assert _m.cluster_heads["main"][0].weight.grad is None and _m.cluster_heads["over"][0].weight.grad is not None
test_eq(_m(_x)["probs"].shape, (32, 10))
_m1 = DCDC(*make_backbone("small_cnn", 1), n_clusters=10, n_repeat=1, over_clusters=0)
test_eq((_m1.n_views, _m1.train_heads, list(_m1.cluster_heads)), (1, ("main",), ["main"]))
test_fail(lambda: DCDC(_bb, _fd, 10, n_repeat=0), contains="at least 1")

# %% [markdown]
# `TrainConfig(method="dcdc", dataset="cifar10")` resolves to the paper's run: every field left unset is read from
# `DCDC_SETTINGS`. (The check needs no CIFAR images: a stand-in of the right shape is enough for the resolution.)

# %%
from deepcluster_nb.data import ImageData, ClusterData
from deepcluster_nb.train import Trainer, TrainConfig, resolve_config, plot_history

# %%
_fake = ImageData(torch.zeros(60, 3, 32, 32, dtype=torch.uint8), np.arange(60) % 10, [str(i) for i in range(10)])
_c, _a = resolve_config(TrainConfig(method="dcdc", dataset="cifar10"), ClusterData(_fake, _fake, 10, "cifar10"))
test_eq((_c.backbone, _c.stem, _c.image_size, _c.optimizer, _c.lr, _c.batch_size, _c.epochs),
        ("sobel_resnet34", "small", 32, "adam", 1e-3, 50, 200))
test_eq(_c.hparams, dict(temperature=0.5, n_repeat=3, over_clusters=70, orig_resize=1.25))
test_eq((_a.crop_scale, _a.jitter, _a.gray_p), ((0.2, 1.0), (0.4, 0.4, 0.4, 0.4), 0.2))
# the class view contrasts the K columns of a batch: fewer images than clusters is refused
test_fail(lambda: resolve_config(TrainConfig(method="dcdc", dataset="cifar10", batch_size=8), ClusterData(_fake, _fake, 10, "cifar10")),
          contains="at least n_clusters")
print(_c)

# %% [markdown]
# ## Each view alone (Table IV, on digits)
# The paper's ablation trains with one term at a time (CIFAR-10 ACC: sample view alone 0.606, class view alone
# 0.458, both 0.699). A miniature on digits: a two-layer MLP on raw pixels, 200 Adam steps of batch 128 with $r=3$, the
# digits augmentation, and no balance term, so that each view acts alone. Besides ACC we count the clusters in use,
# the share of the largest cluster and the mean confidence (the largest probability of each image).

# %%
from deepcluster_nb.data import load_dataset
from dataclasses import replace
from deepcluster_nb.augment import BatchAugment
from deepcluster_nb.metrics import clustering_scores

# %%
_data = load_dataset("digits")
_X, _yd = _data.train.x, _data.train.y
_xf = _X.float() / 255
# the miniature keeps the digits recipe's warp and noise but a fixed pen (no stroke width, no elastic bend): a pixel
# MLP has no convolution with which to learn width invariance in 200 steps, and the losses, not the views, are the topic
_aug = BatchAugment(replace(dcdc_recipe("digits", 8), thickness=0., elastic=0.), [_xf.mean().item()], [_xf.std().item()])

def toy_ablation(terms, steps=200, B=128, r=3, tau=0.5, seed=0):
    "Train a pixel MLP with the chosen terms of Eq. 11 (no balance term); return ACC, clusters used, largest share, confidence."
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 10), nn.Softmax(1))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(steps):
        xb = _X[torch.randint(0, len(_X), (B,))]
        u = net(reduced_view(_aug.eval_view(xb))).repeat(r, 1)
        u_aug = net(torch.cat([_aug(xb) for _ in range(r)]))
        loss = sum(f(u, u_aug, tau) for f in terms)
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): p = net.eval()(_aug.eval_view(_X))
    pred = p.argmax(1).numpy(); sizes = np.bincount(pred, minlength=10)
    return dict(acc=clustering_scores(_yd, pred)["acc"], used=int((sizes > 0).sum()), largest=sizes.max() / len(pred),
                confidence=p.max(1).values.mean().item())

_variants = {"sample view only": [sample_loss], "class view only": [class_loss], "both (Eq. 11)": [sample_loss, class_loss]}
_abl = {(k, seed): toy_ablation(terms, seed=seed) for seed in (0, 1, 2) for k, terms in _variants.items()}
print(f"{'terms':18s} {'seed':>4s} {'ACC':>6s} {'used':>5s} {'largest':>8s} {'confidence':>11s}")
for (k, seed), v in sorted(_abl.items()):
    print(f"{k:18s} {seed:4d} {v['acc']:6.3f} {v['used']:5d} {v['largest']:8.3f} {v['confidence']:11.3f}")
def _over_seeds(k, f): return [_abl[k, seed][f] for seed in (0, 1, 2)]
for k in _variants:
    print(f"{k}: clusters used {sorted(set(_over_seeds(k, 'used')))}, largest cluster {min(_over_seeds(k, 'largest')):.0%}–"
          f"{max(_over_seeds(k, 'largest')):.0%}, ACC {min(_over_seeds(k, 'acc')):.2f}–{max(_over_seeds(k, 'acc')):.2f}")
# the class view punishes an empty cluster: alone or with the sample view, every seed uses all ten
test_eq(_over_seeds("class view only", "used") + _over_seeds("both (Eq. 11)", "used"), [10] * 6)

# %% [markdown]
# The runs behave as the hand-made batches predicted, and the summary lines under the table say how, seed by seed. The
# class view, alone or together with the sample view, keeps all ten clusters in use (an empty cluster is what it
# punishes; the cell checks it on every seed) but does nothing against one large cluster. The sample view alone
# counts collisions, which holds the largest cluster down, yet it has no term that sees an empty cluster. ACC at
# this scale varies with the seed about as much as between the variants, so the miniature shows the mechanisms, not
# the paper's ranking; in the full method the balance term adds the push towards equal sizes that the class view
# lacks.

# %% [markdown]
# ## Training on digits
# The trainer runs DCDC like any other method, here with the table's digits settings on scikit-learn's digits (1,797
# images of 8×8 pixels). Under the test runner the run is cut to 6 of its 12 epochs, to keep the suite short. Both
# heads are trained every epoch; the history logs the over-clustering pass's terms with an `over/` prefix. A single
# run's accuracy depends on the seed, and even with one seed on the float order of the machine, so the cell checks
# only what holds for every seed: ACC far above chance (0.1 for ten balanced classes), no empty cluster, and no
# cluster holding half of the images.

# %%
import os

# %%
_threads = torch.get_num_threads()
torch.set_num_threads(1)   # 8×8 images: a second thread gains little, and on a busy machine two threads stall each other
_t0 = time.time()
_epochs = 6 if os.environ.get("IN_TEST") else None   # None: the settings table's 12 epochs
with tempfile.TemporaryDirectory() as _tmp:   # a fresh run folder: the trainer never writes over an earlier run
    _tr = Trainer(TrainConfig(method="dcdc", dataset="digits", seed=0, epochs=_epochs, out_dir=f"{_tmp}/run", progress=False,
                              eval_every=4), _data)
    _metrics = _tr.fit()
torch.set_num_threads(_threads)
print({k: round(_metrics[k], 3) for k in ("acc", "nmi", "ari", "largest_cluster")}, f"{_metrics['epochs']} epochs",
      f"{time.time() - _t0:.0f} s")
assert _metrics["acc"] > 0.5, _metrics
test_eq(_metrics["empty_clusters"], 0)
assert _metrics["largest_cluster"] < 0.5, _metrics
_ = plot_history(_tr.history, "DCDC on digits")

# %% [markdown]
# How far above chance, over seeds, is the results notebook's business (`nbs/results.ipynb`): it trains DCDC with the
# table's settings on digits (seeds 0–4), USPS and the MNIST test digits (seeds 0–2). Its summary, beside k-means on the
# raw pixels, read from the committed CSV through the same row filter as the README's table (`grid_summary`); the
# checks under it are checks of the committed data — runs recorded at the commits each line names — not of this
# notebook's code, and the seeds include those the choices above were made on:

# %%
from deepcluster_nb.report import grid_summary, print_grid_summary

# %%
_grid = grid_summary("dcdc")
_grid

# %%
print_grid_summary(_grid)
# checks of the committed grid data (not of this commit's code): on every dataset every seed beats k-means on the raw
# pixels, and no run collapsed; on the digits every seed reaches 0.85 and the mean 0.90
assert (_grid["acc_worst"] > _grid["kmeans_pixels_acc"]).all() and (_grid["collapsed_runs"] == 0).all(), _grid
_d = _grid.set_index("dataset").loc["digits"]
assert _d.acc_worst >= 0.85 and _d.acc_mean >= 0.90, _d

# %% [markdown]
# ## Affinity matrices (Fig. 4–5)
# With $U$ the main head's output on the original images (centre crop) and $U'$ on one augmented copy, the paper's sample-wise
# affinity $M=\cos(UU'^\top)$ should be block-diagonal once the images are sorted by class, and the class-wise affinity
# $N=\cos(U^\top U')$ diagonal. We plot $M$ for 30 images per class and $N$ over all images, for the main head and the
# 70-cluster over-clustering head.

# %%
@torch.no_grad()
def affinities(method, aug, x, head="main", seed=0):
    "M = cos(U U'ᵀ) (images × images) and N = cos(Uᵀ U') (clusters × clusters) for the un-augmented and one augmented view."
    method.eval(); torch.manual_seed(seed)
    g, s = method.cluster_heads[head], method.hparams["orig_resize"]
    U = g(method.backbone(reduced_view(aug.eval_view(x), s, random=False)))   # the original view, as in `forward`
    U_aug = g(method.backbone(aug(x)))
    method.train()
    return (F.normalize(U, dim=1) @ F.normalize(U_aug, dim=1).t(), F.normalize(U, dim=0).t() @ F.normalize(U_aug, dim=0))

_idx = np.concatenate([np.flatnonzero(_yd == c)[:30] for c in range(10)])
_M, _ = affinities(_tr.method, _tr.aug, _X[_idx])
_, _N = affinities(_tr.method, _tr.aug, _X)
_, _N_over = affinities(_tr.method, _tr.aug, _X, "over")
fig, axs = plt.subplots(1, 3, figsize=(13, 4))
for ax, A, title in zip(axs, [_M, _N, _N_over], ["M = cos(U U'ᵀ), 30 images per class, sorted by class",
                                                  "N = cos(Uᵀ U'), main head", "N for the over-clustering head (70)"]):
    im = ax.imshow(A, vmin=0, vmax=1, cmap="viridis"); ax.set_title(title, fontsize=9)
plt.colorbar(im, ax=axs, fraction=0.02); plt.show()
_same = torch.as_tensor(_yd[_idx][:, None] == _yd[_idx][None])
print(f"M: mean within class {_M[_same].mean():.2f}, between classes {_M[~_same].mean():.2f}; "
      f"N: mean diagonal {_N.diag().mean():.2f}, off-diagonal {_N[~torch.eye(10, dtype=torch.bool)].mean():.2f}")
assert _M[_same].mean() > _M[~_same].mean() + 0.3 and _N.diag().mean() > _N[~torch.eye(10, dtype=torch.bool)].mean() + 0.3

# %% [markdown]
# ## Which model to report
# The official training script evaluates with the ground-truth labels after every epoch and keeps the checkpoint with
# the best accuracy. Choosing a model with the labels leaks them into an unsupervised result. We report the model at
# the end of training. The best evaluation of the history above is shown only for comparison, labelled as what it is:

# %%
_evals = [(h["epoch"], h["acc"]) for h in _tr.history if "acc" in h]
_best = max(_evals, key=lambda e: e[1])
print(f"final model (reported): ACC {_metrics['acc']:.3f} after {_metrics['epochs']} epochs; "
      f"oracle best (selected with labels, not a valid result): ACC {_best[1]:.3f} at epoch {_best[0]}")

# %% [markdown]
# A full run with the paper's settings is one papermill command:
# `papermill nbs/train.ipynb out.ipynb -p method dcdc -p dataset cifar10`.

# %%
#| hide
import nbdev; nbdev.nbdev_export()
