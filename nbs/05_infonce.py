# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # InfoNCE
# > The contrastive objective behind every method of the course: a cross-entropy that picks the positive among M candidates, why it is a lower bound on mutual information, its optimal critic, and its SimCLR form NT-Xent.

# %%
#| default_exp infonce

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import contextlib, functools, math
import torch
import torch.nn.functional as F

# %%
import itertools
import numpy as np
import matplotlib.pyplot as plt
import torch.nn as nn


# %% [markdown]
# Every method in this course trains its network by *contrasting*: a query is shown $M$ candidates, one of which,
# the *positive*, was generated together with it (two augmentations of one image), while the other $M-1$, the
# *negatives*, were drawn independently. A critic $f$ scores every (candidate, query) pair and the network is asked
# to pick the positive. In the notation of CRLC (Eq. 2, 5), with query $y$, candidates $x_1,\dots,x_M$ and $x_1$ the
# positive, the loss is the cross-entropy of that choice:
#
# $$\mathcal L_{\text{InfoNCE}} = -\,\mathbb E\left[\log \frac{e^{f(x_1, y)}}{\sum_{i=1}^{M} e^{f(x_i, y)}}\right].$$
#
# This chapter first writes the loss down and then spends most of its length on *why* it is the right thing to
# minimise: it is (up to $\log M$) a lower bound on the mutual information between the two views.
#
# In code a score matrix holds one query per row, `scores[b, m]` $= f(x_m, y_b)$, and `positive_index[b]` says which
# column holds row $b$'s positive.
#
# One remark applies to every loss of the course. On a GPU the trainer runs each step under bf16 autocast, which
# computes matrix products in bfloat16 — inside a loss too, and even after a `.float()`, because autocast casts the
# inputs of `matmul`, `mm`, `bmm` and `linear` again. With 8 significant bits, a logit near 10 is then rounded to a
# multiple of 0.0625. So each exported loss is decorated with `float32_loss`: it runs with autocast switched off and its
# lower-precision tensor arguments in float32, while the gradient flows back to those arguments in their own dtype.
# Section 10 derives the error this avoids and measures it on NT-Xent.

# %%
#| export
def _autocast_off(device_type:str):
    "`torch.autocast(device_type, enabled=False)`, or no context for a device without autocast (e.g. meta tensors)."
    try: return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError: return contextlib.nullcontext()

def float32_loss(loss_fn): # a function of tensors (and other arguments) that returns a loss
    "Decorator: run `loss_fn` with autocast off on its tensors' devices and its bf16/fp16 tensor arguments in float32."
    up = lambda a: a.to(torch.promote_types(a.dtype, torch.float32)) if torch.is_tensor(a) and a.is_floating_point() else a
    @functools.wraps(loss_fn)
    def wrapper(*args, **kwargs):
        args, kwargs = [up(a) for a in args], {k: up(v) for k, v in kwargs.items()}   # float64 stays float64
        devices = sorted({a.device.type for a in (*args, *kwargs.values()) if torch.is_tensor(a)})
        with contextlib.ExitStack() as stack:
            for d in devices: stack.enter_context(_autocast_off(d))
            return loss_fn(*args, **kwargs)
    return wrapper

# %%
show_doc(float32_loss)

# %% [markdown]
# On a matrix product under CPU bf16 autocast: undecorated it returns bf16, decorated it returns the float32 product
# exactly; bf16 arguments are computed in float32 and receive their gradient in bf16; float64 arguments and
# non-tensor arguments pass unchanged; the undecorated function stays reachable as `__wrapped__`.

# %%
_mm = lambda a, b, scale=1.: a @ b.t() * scale
_mm32 = float32_loss(_mm)
_a, _b = torch.randn(6, 5), torch.randn(4, 5)
_ref = _a @ _b.t() * 2.
with torch.autocast("cpu", dtype=torch.bfloat16): _bf, _f32 = _mm(_a, _b, 2.), _mm32(_a, _b, scale=2.)
test_eq(_bf.dtype, torch.bfloat16); test_eq(_f32, _ref)             # undecorated bf16, decorated the float32 product
assert (_bf.float() - _ref).abs().max() > 1e-3                      # which the bf16 one is not
_a16 = _a.bfloat16().requires_grad_()
with torch.autocast("cpu", dtype=torch.bfloat16): _out = _mm32(_a16, _b.bfloat16())
test_eq(_out.detach(), _a16.detach().float() @ _b.bfloat16().float().t())  # bf16 arguments, float32 arithmetic
_out.sum().backward(); test_eq(_a16.grad.dtype, torch.bfloat16)   # the gradient comes back in the argument's dtype
test_eq(_mm32(_a.double(), _b.double()).dtype, torch.float64)
test_eq(_mm32.__wrapped__, _mm)                                     # the undecorated function stays reachable

# %%
#| export
@float32_loss
def info_nce(scores:torch.Tensor, # (B, M) critic values: row b = query y_b, column m = candidate x_m
             positive_index:torch.Tensor, # (B,) column of each row's positive
            ) -> torch.Tensor: # scalar: mean over rows of −log softmax(scores)[positive]
    "InfoNCE: the cross-entropy of picking each row's positive among its M candidates."
    return F.cross_entropy(scores, positive_index)


# %%
show_doc(info_nce)


# %%
def info_nce_loop(scores, positive_index):
    "Reference: one row at a time, as the equation is printed."
    total = 0.
    for i in range(scores.shape[0]):
        total += -(scores[i, positive_index[i]] - torch.log(sum(torch.exp(s) for s in scores[i])))
    return total / scores.shape[0]

_s, _pos = torch.randn(6, 9), torch.randint(0, 9, (6,))
test_close(info_nce(_s, _pos), info_nce_loop(_s, _pos), eps=1e-5)
test_close(info_nce(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long)), math.log(8))  # uninformative critic: log M
test_close(info_nce(_s + torch.randn(6, 1), _pos), info_nce(_s, _pos), eps=1e-5)      # a per-row shift cancels


# %% [markdown]
# ## 1. Mutual information, and why samples are not enough
# The mutual information between two random variables is the KL divergence between their joint distribution and the
# product of their marginals,
#
# $$I(X;Y) = \mathbb E_{p(x,y)}\left[\log\frac{p(x,y)}{p(x)\,p(y)}\right] = \mathbb E_{p(x,y)}\left[\log\frac{p(y\mid x)}{p(y)}\right] \;\geq 0,$$
#
# zero exactly when $X$ and $Y$ are independent (DCDC Eq. 1 writes the second form). For the two views of an image it
# measures how much seeing one view tells us about the other, which is what a view-invariant representation
# should keep.
#
# **A distribution with known MI.** Take $d$ independent coordinate pairs $(x_k, y_k)$, each a standard bivariate
# Gaussian with correlation $\rho$, so $y = \rho x + \sqrt{1-\rho^2}\,\varepsilon$. Then $p(y\mid x) = \mathcal N(\rho x, (1-\rho^2)I)$ and
# $p(y) = \mathcal N(0, I)$; expanding the two quadratics, the log density ratio is
#
# $$\log\frac{p(x,y)}{p(x)p(y)} = \frac{\rho\,x^\top y - \tfrac{\rho^2}{2}\left(\|x\|^2 + \|y\|^2\right)}{1-\rho^2} - \frac d2\log(1-\rho^2),$$
#
# symmetric in $x$ and $y$. Its expectation uses $\mathbb E[x^\top y] = d\rho$ and $\mathbb E\|x\|^2=\mathbb E\|y\|^2 = d$: the first fraction
# averages to $d(\rho^2 - \rho^2)/(1-\rho^2) = 0$, leaving
#
# $$I(X;Y) = -\frac d2 \log(1-\rho^2).$$

# %%
def gaussian_mi(rho, d):
    "True MI of d independent pairs with correlation rho."
    return -d / 2 * math.log(1 - rho ** 2)

def gaussian_pairs(n, d, rho, g, dtype=torch.float64):
    "n samples of (x, y): y = rho x + sqrt(1 - rho^2) eps, coordinate by coordinate."
    x = torch.randn(n, d, generator=g, dtype=dtype)
    return x, rho * x + math.sqrt(1 - rho ** 2) * torch.randn(n, d, generator=g, dtype=dtype)

def gaussian_log_ratio(u, v, rho):
    "Matrix [..., i, m] = log p(u_i, v_m) / (p(u_i) p(v_m)) for the correlated Gaussian (symmetric in u and v)."
    s, d = 1 - rho ** 2, u.shape[-1]
    sq = (u * u).sum(-1)[..., :, None] + (v * v).sum(-1)[..., None, :]
    return (rho * u @ v.transpose(-1, -2) - rho ** 2 / 2 * sq) / s - d / 2 * math.log(s)


# %% [markdown]
# Two checks: the expanded formula equals the log densities it came from (computed with `torch.distributions`), and
# the sample average of the log ratio over many pairs recovers $I$ — *if* we knew the density ratio, estimating MI
# would be a plain average.

# %%
from torch.distributions import MultivariateNormal, Normal

# %%
_g = torch.Generator().manual_seed(0)
_x, _y = gaussian_pairs(5, 3, 0.7, _g)
_cov = torch.eye(6, dtype=torch.float64); _cov[:3, 3:] = _cov[3:, :3] = 0.7 * torch.eye(3, dtype=torch.float64)
_ref = torch.stack([torch.stack([MultivariateNormal(torch.zeros(6, dtype=torch.float64), _cov).log_prob(torch.cat([_x[i], _y[m]]))
                                 - Normal(0., 1.).log_prob(_x[i]).sum() - Normal(0., 1.).log_prob(_y[m]).sum()
                                 for m in range(5)]) for i in range(5)])
test_close(gaussian_log_ratio(_x, _y, 0.7), _ref, eps=1e-8)
for _d, _rho in [(4, 0.8), (5, 0.9)]:
    _x, _y = gaussian_pairs(100_000, _d, _rho, _g)
    _lr = (gaussian_log_ratio(_x[:, None], _y[:, None], _rho)).flatten()
    print(f"d={_d} rho={_rho}: true I = {gaussian_mi(_rho, _d):.4f}, mean log ratio = {_lr.mean():.4f} ± {_lr.std() / 100_000 ** .5:.4f}")
    assert abs(_lr.mean() - gaussian_mi(_rho, _d)) < 4 * _lr.std() / 100_000 ** .5


# %% [markdown]
# **Why samples are not enough.** In practice the density ratio is exactly what we do not have: we see pairs, not
# densities. The obvious fix is to estimate the densities first, e.g. with a histogram, and plug them in. Even for
# one pair ($d=1$, $\rho=0.9$, $I = 0.830$ nats) the answer depends on the bin count as much as on the data: few
# samples in many bins look more dependent than they are (most cells hold zero or one sample), while coarse bins
# blur the dependence away and underestimate. In $d$ dimensions a grid with $b$ bins per axis has $b^{2d}$ cells, so
# this route is closed for images. What remains possible from samples alone is a *bound* with a learned critic.

# %%
def plugin_mi(x, y, bins):
    "Histogram plug-in estimate of I(X;Y) for scalar samples."
    h, _, _ = np.histogram2d(x, y, bins=bins)
    p = h / h.sum(); pp = p.sum(1, keepdims=True) @ p.sum(0, keepdims=True)
    m = p > 0
    return float((p[m] * np.log(p[m] / pp[m])).sum())

_rng, _rho = np.random.default_rng(0), 0.9
_tab = {}
for _n in [50, 1_000, 100_000]:
    _x = _rng.standard_normal(_n); _y = _rho * _x + math.sqrt(1 - _rho ** 2) * _rng.standard_normal(_n)
    _tab[_n] = {b: plugin_mi(_x, _y, b) for b in (5, 20, 40)}
    print(f"n={_n:>7}: " + "  ".join(f"{b:>2} bins {v:.3f}" for b, v in _tab[_n].items()) + f"   (true {gaussian_mi(_rho, 1):.3f})")
assert _tab[50][40] > gaussian_mi(_rho, 1) + 1       # few samples, many bins: far too high
assert _tab[100_000][5] < gaussian_mi(_rho, 1) - 0.3  # many samples, coarse bins: too low

# %% [markdown]
# ## 2. The variational lower bound (CRLC App. A.3)
# **Step 1: an energy-based guess of the joint.** For any distribution $q_\theta(x,y)$, adding and subtracting
# $\log q_\theta$ inside the expectation splits the MI into a bound and a KL divergence:
#
# $$I(X;Y) = \mathbb E_{p(x,y)}\left[\log\frac{q_\theta(x,y)}{p(x)p(y)}\right] + D_{KL}\big(p(x,y)\,\|\,q_\theta(x,y)\big) \;\geq\; \mathbb E_{p(x,y)}\left[\log\frac{q_\theta(x,y)}{p(x)p(y)}\right].$$
#
# Choose $q_\theta$ as the product of marginals re-weighted by a critic, $q_\theta(x,y) = p(x)p(y)\,e^{f_\theta(x,y)}/Z_\theta$ with
# $Z_\theta = \mathbb E_{p(x)p(y)}[e^{f_\theta(x,y)}]$. The unknown marginals cancel inside the log and
#
# $$I(X;Y) \;\geq\; \mathbb E_{p(x,y)}[f_\theta(x,y)] - \log Z_\theta. \qquad (\text{CRLC Eq. 20})$$
#
# The bound is tight when $q_\theta = p$, i.e. $f_\theta = \log\frac{p(x,y)}{p(x)p(y)} + \text{const}$ (the constant is absorbed by $Z_\theta$).
#
# A small discrete joint lets us compute every expectation exactly, with no Monte-Carlo error:

# %%
_g = torch.Generator().manual_seed(3)
p_xy = torch.rand(4, 4, generator=_g, dtype=torch.float64) + 2 * torch.eye(4, dtype=torch.float64)
p_xy = p_xy / p_xy.sum()
p_x, p_y = p_xy.sum(1), p_xy.sum(0)
log_r = torch.log(p_xy / (p_x[:, None] * p_y[None, :]))     # log p(x,y)/(p(x)p(y)), indexed [x, y]
I_exact = (p_xy * log_r).sum()

def energy_bound(f):
    "E_p[f] − log Z with Z = E_{p(x)p(y)}[e^f], all sums exact."
    return (p_xy * f).sum() - torch.log((p_x[:, None] * p_y[None, :] * f.exp()).sum())

f_rand = torch.randn(4, 4, generator=_g, dtype=torch.float64)
print(f"I = {I_exact:.4f}; bound with a random critic {energy_bound(f_rand):.4f}; with the log ratio {energy_bound(log_r):.4f}")
assert energy_bound(f_rand) < I_exact
test_close(energy_bound(log_r), I_exact, eps=1e-12)        # optimal critic: Z = 1, tight
test_close(energy_bound(log_r + 3.), I_exact, eps=1e-12)   # a constant shift is absorbed by log Z

# %% [markdown]
# **Step 2: the partition function.** $Z_\theta$ is an expectation under $p(x)p(y)$ and sits inside a log, so a sample
# average of it does not give an unbiased estimate of the bound. Since $\log$ is concave it lies below each of its tangent lines;
# the tangent at $a>0$ gives, for every $z>0$,
#
# $$\log z \;\leq\; \frac{z}{a} + \log a - 1, \qquad\text{with equality iff } z = a \qquad (\text{CRLC Eq. 21}).$$
#
# (Proof: $g(z) = z/a + \log a - 1 - \log z$ has $g'(z) = 1/a - 1/z$, so its only minimum is at $z=a$, where $g(a)=0$.) On a
# grid of $z$ and $a$ over six orders of magnitude:

# %%
_z = torch.logspace(-3, 3, 61, dtype=torch.float64)
_gap = _z[:, None] / _z[None, :] + torch.log(_z[None, :]) - 1 - torch.log(_z[:, None])   # [z, a]
assert (_gap >= -1e-12).all()
test_close(_gap.diagonal(), torch.zeros(61, dtype=torch.float64), eps=1e-12)
assert (_gap + torch.eye(61, dtype=torch.float64) > 0).all()   # strictly positive off the diagonal
fig, ax = plt.subplots(figsize=(4.5, 3))
_zz = torch.linspace(0.05, 6, 200)
ax.plot(_zz, torch.log(_zz), "k", lw=2, label=r"$\log z$")
for _a in [0.5, 1, 2, 4]:
    ax.plot(_zz, _zz / _a + math.log(_a) - 1, "--", label=f"tangent at a={_a}")
ax.set_ylim(-3, 3); ax.set_xlabel("z"); ax.legend(fontsize=7); plt.tight_layout(); plt.show()


# %% [markdown]
# **Step 3: let the samples estimate $Z_\theta$.** CRLC picks $a_\theta = \frac1M\sum_{i=1}^M e^{f_\theta(x_i,y)}$, a Monte-Carlo estimate of
# $Z_\theta$ from $M$ candidates $x_1,\dots,x_M$ of which $x_1$ is paired with $y$ and $x_{2:M}\sim p(x)$ are independent, and argues
# $Z_\theta/a_\theta\approx1$. Because $a_\theta$ depends on the samples, that step is an approximation as written; an exact
# argument gives the same result:
#
# 1. Since $x_{2:M}$ are independent of $(x_1, y)$, adding them changes nothing: $I(X_1;Y) = I(X_{1:M};Y)$.
# 2. Apply Steps 1–2 to the pair $(X_{1:M}, Y)$ with the critic $g(x_{1:M}, y) = f_\theta(x_1, y) - \log a_\theta(x_{1:M}, y)$ and the
#    tangent point $a = 1$: $\;I \geq \mathbb E_{p(x_{1:M},y)}[g] - Z_g + 1$, where $Z_g = \mathbb E_{p(x_{1:M})p(y)}\big[e^{f_\theta(x_1,y)}/a_\theta\big]$.
# 3. Under $p(x_{1:M})p(y)$ all $M$ candidates are exchangeable, so $x_1$ may be replaced by any $x_j$; averaging the $M$ copies,
#    $Z_g = \mathbb E\big[\frac1M\sum_j e^{f_\theta(x_j,y)}/a_\theta\big] = 1$. The sample-dependent $a_\theta$ is exactly what makes the new
#    critic self-normalised, and then the tangent at $1$ is tight.
#
# What is left is CRLC Eq. 24–26:
#
# $$I(X;Y) \;\geq\; \mathbb E\left[f_\theta(x_1,y) - \log\frac1M\sum_{i=1}^M e^{f_\theta(x_i,y)}\right]
# = \log M + \mathbb E\left[\log\frac{e^{f_\theta(x_1,y)}}{\sum_{i=1}^M e^{f_\theta(x_i,y)}}\right] = \log M - \mathcal L_{\text{InfoNCE}} \;\triangleq\; I_{\text{InfoNCE}}.$$
#
# On the discrete joint every tuple $(y, x_1, \dots, x_M)$ can be enumerated, so $I_{\text{InfoNCE}}$ and $Z_g$ are exact numbers:

# %%
def infonce_exact(f, M):
    "Exact E over p(x_1, y) p(x_2)...p(x_M) of f(x_1,y) − log (1/M) Σ_i e^{f(x_i,y)}, by enumeration."
    total = 0.
    for rest in itertools.product(range(4), repeat=M - 1):
        w = math.prod(p_x[j].item() for j in rest)
        for x1, y in itertools.product(range(4), range(4)):
            a = sum(torch.exp(f[j, y]) for j in (x1,) + rest) / M
            total += w * p_xy[x1, y] * (f[x1, y] - torch.log(a))
    return total

def multi_sample_partition(f, M):
    "Exact Z_g = E over p(x_1)...p(x_M) p(y) of e^{f(x_1,y)} / a."
    total = 0.
    for xs in itertools.product(range(4), repeat=M):
        w = math.prod(p_x[j].item() for j in xs)
        for y in range(4):
            total += w * p_y[y] * torch.exp(f[xs[0], y]) / (sum(torch.exp(f[j, y]) for j in xs) / M)
    return total

_opt = [infonce_exact(log_r, M).item() for M in range(1, 6)]
_rnd = [infonce_exact(f_rand, M).item() for M in range(1, 6)]
print(f"I = {I_exact:.4f}")
print("M:                  " + "  ".join(f"{M:>6}" for M in range(1, 6)))
print("log M:              " + "  ".join(f"{math.log(M):6.3f}" for M in range(1, 6)))
print("I_InfoNCE, log p/pp:" + "  ".join(f"{v:6.3f}" for v in _opt))
print("I_InfoNCE, random f:" + "  ".join(f"{v:6.3f}" for v in _rnd))
for M in (2, 3):
    test_close(multi_sample_partition(f_rand, M), 1.0, eps=1e-12)   # the self-normalised critic has Z_g = 1
test_close(_opt[0], 0.0, eps=1e-12)                                 # one candidate: nothing to choose
assert all(v <= min(I_exact, math.log(M)) + 1e-12 for M, v in zip(range(1, 6), _opt + _rnd))
assert all(b > a for a, b in zip(_opt, _opt[1:]))                   # tighter as M grows


# %% [markdown]
# Two consequences can be read off the last line without any distribution:
#
# * **It can never exceed $\log M$.** The softmax of the positive is at most 1, so each term $\log\frac{e^{f_1}}{\sum e^{f_i}}\le0$ and
#   $I_{\text{InfoNCE}}\le\log M$, however good the critic. To certify $I$ nats one needs $M \ge e^{I}$ candidates.
# * **It gets tighter as $M$ grows**, because $a_\theta$ becomes a better estimate of $Z_\theta$; with the optimal critic it
#   tends to $I$ as $M\to\infty$ (the enumeration above climbs with $M$ and stays below $\min(I,\log M)$).
#
# `infonce_bound` returns this estimate for a score matrix. Rows may carry masked candidates ($-\infty$, as NT-Xent masks
# a view's similarity with itself); $M$ then counts each row's finite scores.

# %%
#| export
@float32_loss
def infonce_bound(scores:torch.Tensor, # (B, M) critic values, −inf for masked candidates
                  positive_index:torch.Tensor, # (B,) column of each row's positive
                 ) -> torch.Tensor: # scalar: mean over rows of log M_b + log softmax(scores)[positive]
    "The MI lower-bound estimate I_InfoNCE = log M − L_InfoNCE, M counting each row's finite scores."
    log_m = torch.isfinite(scores).sum(1).float().log()
    return log_m.mean() - info_nce(scores, positive_index)


# %%
show_doc(infonce_bound)


# %%
def infonce_bound_loop(scores, positive_index):
    "Reference: log M_b + log(e^{f_pos} / Σ e^{f_m}) row by row, skipping masked entries."
    total = 0.
    for b in range(scores.shape[0]):
        row = [s for s in scores[b] if torch.isfinite(s)]
        total += math.log(len(row)) + scores[b, positive_index[b]] - torch.log(sum(torch.exp(s) for s in row))
    return total / scores.shape[0]

_s, _pos = 3 * torch.randn(8, 16), torch.randint(0, 16, (8,))
test_close(infonce_bound(_s, _pos), infonce_bound_loop(_s, _pos), eps=1e-5)
_sm = _s.masked_fill(torch.rand(8, 16) < 0.3, float("-inf")); _sm[torch.arange(8), _pos] = 1.
test_close(infonce_bound(_sm, _pos), infonce_bound_loop(_sm, _pos), eps=1e-5)
test_close(infonce_bound(torch.zeros(5, 32), torch.zeros(5, dtype=torch.long)), 0.0)         # constant critic: 0
test_close(infonce_bound(50 * torch.eye(32), torch.arange(32)), math.log(32), eps=1e-4)      # perfect critic: log M
assert infonce_bound(1e3 * torch.randn(64, 10), torch.randint(0, 10, (64,))) <= math.log(10)  # never above log M


# %% [markdown]
# ## 3. The bound against M on correlated Gaussians
# With the analytic critic $f^* = \log\frac{p(x,y)}{p(x)p(y)}$ (the best one, Section 4) we estimate $I_{\text{InfoNCE}}$ for
# $M = 2, 4, \dots, 1024$ on two problems: $d=4, \rho=0.8$ ($I = 2.04$ nats) and $d=5, \rho=0.9$ ($I = 4.15$ nats). For each $M$
# we draw $R$ independent batches of $M$ pairs, $R\cdot M = 2^{14}$, and use every pair of a batch as a query whose negatives are the
# other $M-1$ candidates of its batch; the standard error comes from the spread of the $R$ batch means.

# %%
def gaussian_infonce_curve(d, rho, Ms, g, rows=2 ** 14, chunk=2 ** 22):
    "I_InfoNCE with the analytic critic for each M: (mean, standard error) over rows/M batches."
    out = []
    for M in Ms:
        R = rows // M
        x, y = gaussian_pairs(R * M, d, rho, g)
        x, y = x.view(R, M, d), y.view(R, M, d)
        per_batch = []
        per = max(1, chunk // (M * M))                                   # batches per chunk: bounds the (R, M, M) tensor
        for c in range(0, R, per):
            sc = gaussian_log_ratio(y[c:c + per], x[c:c + per], rho)  # [r, query y_b, candidate x_m]
            per_batch.append(math.log(M) + torch.log_softmax(sc, -1).diagonal(dim1=-2, dim2=-1).mean(-1))
        pb = torch.cat(per_batch)
        out.append((pb.mean().item(), (pb.std() / math.sqrt(R)).item()))
    return out

Ms = [2 ** k for k in range(1, 11)]
_g = torch.Generator().manual_seed(0)
curves = {(d, rho): gaussian_infonce_curve(d, rho, Ms, _g) for d, rho in [(4, 0.8), (5, 0.9)]}
for (d, rho), cur in curves.items():
    print(f"d={d} rho={rho} I={gaussian_mi(rho, d):.3f}: " + ", ".join(f"M={M}: {m:.3f}±{se:.3f}" for M, (m, se) in zip(Ms, cur)))

# %%
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(Ms, [math.log(M) for M in Ms], "k:", label="log M")
for (d, rho), cur in curves.items():
    I = gaussian_mi(rho, d)
    l = ax.errorbar(Ms, [m for m, _ in cur], yerr=[2 * se for _, se in cur], marker="o", ms=3, label=f"$I_{{InfoNCE}}$, d={d}, ρ={rho}")
    ax.axhline(I, color=l[0].get_color(), ls="--", lw=1, label=f"true I = {I:.2f}")
ax.set_xscale("log", base=2); ax.set_xlabel("M (candidates per query)"); ax.set_ylabel("nats"); ax.legend(fontsize=7)
ax.set_title("optimal-critic InfoNCE: below min(I, log M), closing in as M grows", fontsize=9); plt.tight_layout(); plt.show()

# %% [markdown]
# The checks: every estimate stays below both $I$ and $\log M$ (allowing three standard errors of Monte-Carlo noise), the
# curve does not decrease with $M$, for $I = 2.04$ the estimate at $M = 1024$ is within a few hundredths of a nat of $I$, and for
# $I = 4.15$ the gap to $\min(I,\log M)$, largest where $\log M\approx I$, has shrunk to less than a third by $M=1024$. For small $M$ the curve hugs $\log M$: the critic identifies the positive
# almost always and the bound is limited by the number of candidates, not by the information.

# %%
for (d, rho), cur in curves.items():
    I = gaussian_mi(rho, d)
    gaps = [min(I, math.log(M)) - m for M, (m, _) in zip(Ms, cur)]
    for M, (m, se) in zip(Ms, cur):
        assert m <= min(I, math.log(M)) + 3 * se, (d, rho, M, m, se)
    for (m0, s0), (m1, s1) in zip(cur, cur[1:]):
        assert m1 >= m0 - 3 * math.hypot(s0, s1)
    print(f"I={I:.3f}: largest gap {max(gaps):.3f} at M={Ms[int(np.argmax(gaps))]}, gap at M=1024 {gaps[-1]:.3f}")
    assert gaps[-1] < max(gaps) / 3
assert abs(curves[(4, 0.8)][-1][0] - gaussian_mi(0.8, 4)) < 3 * curves[(4, 0.8)][-1][1] + 0.02
test_close(curves[(5, 0.9)][0][0], math.log(2), eps=0.05)   # M = 2, I ≫ log 2: pinned to log M

# %% [markdown]
# ## 4. The optimal critic
# **Which critic maximises the bound?** Step 1 is tight when $q_\theta = p$, i.e. (CRLC Eq. 19)
#
# $$f^*(x,y) = \log\frac{p(x,y)}{p(x)p(y)} + \log Z^*_\theta = \log\frac{p(y\mid x)}{p(y)} + \text{const}.$$
#
# In InfoNCE the softmax runs over the candidates $x_i$ of one query $y$, so any term that depends on $y$ alone cancels
# between numerator and denominator: $\log p(y)$ drops out and $f^*(x,y) = \log p(y\mid x) + c(y)$, which is CRLC's
# "$f^*\propto\log p(y\mid x)$". The shift invariance was checked under `info_nce` above. On the Gaussians, scaling the
# optimal critic by $\alpha$ in either direction lowers the bound; the same samples are used for every $\alpha$, so the
# comparison is not blurred by sampling noise:

# %%
_g = torch.Generator().manual_seed(1)
_x, _y = gaussian_pairs(64 * 256, 4, 0.8, _g)
_sc = gaussian_log_ratio(_y.view(64, 256, 4), _x.view(64, 256, 4), 0.8)          # 64 batches, M = 256
_pos = torch.arange(256).repeat(64)
alphas = [0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0]
_ab = [infonce_bound((a * _sc).reshape(-1, 256), _pos).item() for a in alphas]
print("alpha: " + ", ".join(f"{a}: {b:.3f}" for a, b in zip(alphas, _ab)))
test_eq(alphas[int(np.argmax(_ab))], 1.0)

# %% [markdown]
# **Why the scaled cosine (CRLC App. A.4).** Contrastive learning does not see $x, y$ but unit-norm features $z = g(x)$,
# $\tilde z = g(y)$, and uses $f = \tilde z^\top z/\tau$. Suppose the features of two views of one image differ by isotropic
# Gaussian noise of variance $\tau$, $p(\tilde z\mid z)\propto\exp\!\big(-\tfrac{1}{2\tau}\|\tilde z - z\|^2\big)$. On the unit sphere
# $\|\tilde z\|^2 = \|z\|^2 = 1$, so
#
# $$\log p(\tilde z\mid z) = -\frac{1}{2\tau}\left(\|\tilde z\|^2 - 2\tilde z^\top z + \|z\|^2\right) + c = \frac{\tilde z^\top z}{\tau} - \frac1\tau + c \;\propto\; \frac{\tilde z^\top z}{\tau}.$$
#
# Restricted to the sphere, that density is the von Mises–Fisher distribution with concentration $\kappa = 1/\tau$,
# $p(\tilde z\mid z) = C_d(\kappa)\,e^{\kappa\tilde z^\top z}$. If the features are spread uniformly over the sphere, $p(\tilde z)$ is a constant
# and the log density ratio is *exactly* $\tilde z^\top z/\tau$ plus a constant: the scaled cosine is the optimal critic, and the
# temperature is the inverse concentration of the positives around their queries. First the algebra:

# %%
_z, _zt = F.normalize(torch.randn(10, 7, dtype=torch.float64), dim=1), F.normalize(torch.randn(10, 7, dtype=torch.float64), dim=1)
_tau = 0.3
test_close(-torch.cdist(_zt, _z) ** 2 / (2 * _tau), _zt @ _z.t() / _tau - 1 / _tau, eps=1e-10)
test_close(info_nce(-torch.cdist(_zt, _z) ** 2 / (2 * _tau), torch.arange(10)), info_nce(_zt @ _z.t() / _tau, torch.arange(10)), eps=1e-5)


# %% [markdown]
# Then a case with a known answer. On the sphere in $d=3$, $C_3(\kappa) = \kappa/(4\pi\sinh\kappa)$, $p(\tilde z) = 1/(4\pi)$ and
# $\mathbb E[\tilde z^\top z] = \coth\kappa - 1/\kappa$, so
#
# $$I(Z;\tilde Z) = \log\frac{\kappa}{\sinh\kappa} + \kappa\coth\kappa - 1.$$
#
# We sample $z$ uniformly, $\tilde z\sim\mathrm{vMF}(z,\kappa)$ with $\kappa=10$ (so the matched temperature is $\tau = 0.1$), and scan $\tau$:
# the bound peaks at $\tau = 1/\kappa$ and there comes within a few hundredths of a nat of the true MI. (For $d=3$ the vMF cosine
# $w = \tilde z^\top z$ has the closed-form inverse CDF $w = 1 + \log(u + (1-u)e^{-2\kappa})/\kappa$, $u$ uniform; the direction orthogonal
# to $z$ is uniform.)

# %%
def vmf3_mi(kappa):
    "MI between a uniform point on the 2-sphere and a von Mises–Fisher sample around it."
    return math.log(kappa / math.sinh(kappa)) + kappa / math.tanh(kappa) - 1

def sample_vmf3(mu, kappa, g):
    "One vMF(mu_n, kappa) sample per row of mu (unit vectors in R^3)."
    u = torch.rand(mu.shape[0], generator=g, dtype=mu.dtype)
    w = 1 + torch.log(u + (1 - u) * math.exp(-2 * kappa)) / kappa
    v = torch.randn(mu.shape, generator=g, dtype=mu.dtype)
    v = F.normalize(v - (v * mu).sum(1, keepdim=True) * mu, dim=1)
    return w[:, None] * mu + torch.sqrt((1 - w ** 2).clamp(min=0))[:, None] * v

_g, kappa, _M, _R = torch.Generator().manual_seed(0), 10.0, 512, 32
_z = F.normalize(torch.randn(_R * _M, 3, generator=_g, dtype=torch.float64), dim=1)
_zt = sample_vmf3(_z, kappa, _g)
test_close((_z * _zt).sum(1).mean(), 1 / math.tanh(kappa) - 1 / kappa, eps=3e-3)      # the sampler's mean cosine
_cos = _zt.view(_R, _M, 3) @ _z.view(_R, _M, 3).transpose(1, 2)                      # [r, query z̃_b, candidate z_m]
taus = [0.03, 0.05, 0.07, 0.085, 0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 1.0]
_tb = [infonce_bound((_cos / t).reshape(-1, _M), torch.arange(_M).repeat(_R)).item() for t in taus]
print(f"true I = {vmf3_mi(kappa):.4f}, log M = {math.log(_M):.3f}; " + ", ".join(f"τ={t}: {b:.3f}" for t, b in zip(taus, _tb)))
test_eq(taus[int(np.argmax(_tb))], 1 / kappa)
assert max(_tb) < vmf3_mi(kappa) + 0.02 and max(_tb) > vmf3_mi(kappa) - 0.05
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(taus, _tb, "o-", label=r"$I_{InfoNCE}$ with $\tilde z^\top z/\tau$"); ax.axhline(vmf3_mi(kappa), color="k", ls="--", label="true I")
ax.axvline(1 / kappa, color="gray", ls=":", label=r"$\tau = 1/\kappa$")
ax.set_xscale("log"); ax.set_xlabel("τ"); ax.set_ylabel("nats"); ax.legend(fontsize=7, loc="lower center"); plt.tight_layout(); plt.show()


# %% [markdown]
# ## 5. The density-ratio view (DCDC Eq. 1–5)
# The same result follows from asking what the loss is a classifier *of*. A query $y$ comes with $M$ candidates, one drawn from
# $p(x\mid y)$ and the rest from $p(x)$, in random order. The posterior probability that candidate $j$ is the positive is the
# likelihood of "$j$ from the conditional, the others from the marginal", normalised over $j$ (DCDC Eq. 4):
#
# $$P(\text{pos}=j\mid y, x_{1:M}) = \frac{p(x_j\mid y)\prod_{m\neq j}p(x_m)}{\sum_{k=1}^M p(x_k\mid y)\prod_{m\neq k}p(x_m)}
# = \frac{p(x_j\mid y)/p(x_j)}{\sum_{k=1}^M p(x_k\mid y)/p(x_k)},$$
#
# after dividing numerator and denominator by $\prod_m p(x_m)$. InfoNCE is the cross-entropy between this true posterior and
# the model's $\mathrm{softmax}_j f(x_j, y)$; a cross-entropy is minimised by matching the target, so the optimum is reached when
# $e^{f(x,y)}\propto p(x\mid y)/p(x)$, the density ratio, up to a factor per query (DCDC Eq. 2). The check below builds the
# posterior the long way, from the likelihoods of all $M$ hypotheses, and compares it with the softmax of the analytic critic:

# %%
def posterior_loop(y, xs, rho):
    "P(pos = j | y, x_1..x_M) from the likelihoods of the M hypotheses 'x_j ~ p(x|y), others ~ p(x)'."
    cond = Normal(rho * y, math.sqrt(1 - rho ** 2)); marg = Normal(0., 1.)
    loglik = torch.stack([cond.log_prob(xs[j]).sum() + sum(marg.log_prob(xs[m]).sum() for m in range(len(xs)) if m != j)
                          for j in range(len(xs))])
    return torch.softmax(loglik, 0)

_g = torch.Generator().manual_seed(2)
_x, _y = gaussian_pairs(6, 3, 0.7, _g)
_post = torch.stack([posterior_loop(_y[b], _x, 0.7) for b in range(6)])
test_close(_post, torch.softmax(gaussian_log_ratio(_y, _x, 0.7), 1), eps=1e-10)
test_close(_post.sum(1), torch.ones(6, dtype=torch.float64), eps=1e-12)


# %% [markdown]
# **Learning the critic.** In practice $f$ is a network and the density ratio is never written down. A separable critic
# $f(x,y) = h(y)^\top g(x)$ with two small MLPs (the shape contrastive learning uses: one encoder per view, a dot product on top) is
# trained with Adam on InfoNCE with $M = 128$ for 400 steps on fresh samples of the $d=4, \rho=0.8$ problem. On a fixed evaluation set
# its bound climbs towards that of the analytic critic, which it cannot exceed beyond sampling noise, and its scores, centred per
# query, line up with the log density ratio.

# %%
def mlp_critic_branch(d, hidden=64, out=32):
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))

torch.manual_seed(0)
d, rho, B, steps = 4, 0.8, 128, 400
g_x, h_y = mlp_critic_branch(d), mlp_critic_branch(d)
opt = torch.optim.Adam([*g_x.parameters(), *h_y.parameters()], lr=3e-3)
_g = torch.Generator().manual_seed(1)
_xe, _ye = (t.float().view(64, B, d) for t in gaussian_pairs(64 * B, d, rho, _g))    # evaluation: 64 batches of M = 128
_pe = torch.arange(B).repeat(64)
_sa = gaussian_log_ratio(_ye, _xe, rho)
analytic = infonce_bound(_sa.reshape(-1, B), _pe).item()
_pb = math.log(B) + torch.log_softmax(_sa, -1).diagonal(dim1=-2, dim2=-1).mean(-1)
analytic_se = (_pb.std() / 8).item()

def critic_scores(y, x): return h_y(y) @ g_x(x).transpose(-1, -2)

hist, _threads = [], torch.get_num_threads()
torch.set_num_threads(1)                      # matrices this small train faster on one thread
for step in range(steps + 1):
    if step % 20 == 0:
        with torch.no_grad(): hist.append((step, infonce_bound(critic_scores(_ye, _xe).reshape(-1, B), _pe).item()))
    if step == steps: break
    x, y = (t.float() for t in gaussian_pairs(B, d, rho, _g))
    loss = info_nce(critic_scores(y, x), torch.arange(B))
    opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad():
    _st = critic_scores(_ye, _xe)
    _c1, _c2 = _st - _st.mean(-1, keepdim=True), _sa - _sa.mean(-1, keepdim=True)
    corr = ((_c1 * _c2).sum() / (_c1.norm() * _c2.norm())).item()
torch.set_num_threads(_threads)
print(f"analytic critic {analytic:.3f} ± {analytic_se:.3f}; trained critic {hist[0][1]:.3f} at step 0 → {hist[-1][1]:.3f} "
      f"at step {steps}; per-query centred score correlation {corr:.3f}")

# %%
fig, axs = plt.subplots(1, 2, figsize=(9, 3.2))
axs[0].plot(*zip(*hist), "o-", ms=3, label="trained critic"); axs[0].axhline(analytic, color="k", ls="--", label="analytic critic")
axs[0].axhline(gaussian_mi(rho, d), color="gray", ls=":", label="true I"); axs[0].set_xlabel("Adam step"); axs[0].set_ylabel("$I_{InfoNCE}$ (nats), M=128")
axs[0].legend(fontsize=7)
_i = torch.randint(0, 64 * B, (2000,), generator=_g)
axs[1].scatter(_c2.flatten()[_i], _c1.flatten()[_i], s=3, alpha=.4)
axs[1].set_xlabel("log density ratio (centred per query)"); axs[1].set_ylabel("trained critic (centred per query)")
plt.tight_layout(); plt.show()

# %%
assert hist[-1][1] <= analytic + 3 * analytic_se          # cannot beat the optimal critic
assert hist[-1][1] > analytic - 0.15 and hist[-1][1] > hist[0][1] + 1
assert corr > 0.95

# %% [markdown]
# ## 6. NT-Xent
# SimCLR's *normalised temperature-scaled cross-entropy* is InfoNCE over the $2N$ views of a batch of $N$ images:
# the critic is the cosine similarity over a temperature, $f(z_i, z_j) = s_{ij}/\tau$ with $s_{ij} = z_i^\top z_j/(\|z_i\|\|z_j\|)$ (the
# optimal critic of Section 4), each view's positive is the other view of its image, and its $2N-2$ negatives are both views
# of the other $N-1$ images. A view is never compared with itself (its similarity would be 1 and tell nothing): we mask the
# diagonal with $-\infty$ rather than gathering the off-diagonal entries. Each row thus has $M = 2N-1$ candidates. The layout for $N=4$:

# %%
_n = 4
_lay = torch.full((2 * _n, 2 * _n), 1.)                                  # negative
_lay[torch.arange(2 * _n), torch.arange(2 * _n)] = 0.                   # self, masked
_lay[torch.arange(2 * _n), (torch.arange(2 * _n) + _n) % (2 * _n)] = 2. # positive
fig, ax = plt.subplots(figsize=(3.4, 3.4))
ax.imshow(_lay, cmap=plt.matplotlib.colors.ListedColormap(["lightgray", "white", "tab:green"]))
ax.set_xticks(range(2 * _n), [f"{v}{i}" for v in "ab" for i in range(_n)]); ax.set_yticks(range(2 * _n), [f"{v}{i}" for v in "ab" for i in range(_n)])
ax.set_xticks(np.arange(-.5, 2 * _n), minor=True); ax.set_yticks(np.arange(-.5, 2 * _n), minor=True); ax.grid(which="minor", color="k", lw=.5)
ax.set_title("gray: self (masked), green: positive,\nwhite: the 2N−2 negatives", fontsize=8); plt.tight_layout(); plt.show()
test_eq((_lay == 1).sum(1), torch.full((2 * _n,), 2 * _n - 2))
test_eq((_lay == 2).sum(1), torch.ones(2 * _n))


# %%
#| export
@float32_loss
def nt_xent(z_a:torch.Tensor, # (N, D) first views (normalised inside)
            z_b:torch.Tensor, # (N, D) second views
            temperature:float=0.5, # τ
           ) -> torch.Tensor: # scalar, mean over the 2N views
    "NT-Xent (SimCLR): InfoNCE with the cosine critic over 2N views, positives i ↔ i+N, self-pairs excluded."
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    sim = (z @ z.t()) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    pos = torch.arange(2 * n, device=z.device).add(n).remainder(2 * n)
    return info_nce(sim, pos)


# %%
show_doc(nt_xent)


# %%
def nt_xent_loop(z_a, z_b, temperature):
    "Reference: the per-view equation, −log e^{s(i,p(i))/τ} / Σ_{k≠i} e^{s(i,k)/τ}, averaged over 2N views."
    z = torch.cat([z_a, z_b]); n2 = z.shape[0]
    cos = lambda u, v: (u @ v) / (u.norm() * v.norm())
    total = 0.
    for i in range(n2):
        p = (i + n2 // 2) % n2
        den = sum(torch.exp(cos(z[i], z[k]) / temperature) for k in range(n2) if k != i)
        total += -torch.log(torch.exp(cos(z[i], z[p]) / temperature) / den)
    return total / n2

for _n, _d, _t in [(4, 3, 0.5), (7, 16, 0.1), (5, 8, 1.0)]:
    _a, _b = torch.randn(_n, _d), torch.randn(_n, _d)
    test_close(nt_xent(_a, _b, _t), nt_xent_loop(_a, _b, _t), eps=1e-4)
    test_close(nt_xent(_a, _b, _t), nt_xent(_b, _a, _t), eps=1e-5)   # symmetric in the two views
test_close(nt_xent(_a, _b, 0.5), nt_xent(3 * _a, 0.2 * _b, 0.5), eps=1e-5)  # scale-free: only directions matter


# %% [markdown]
# **The same loss, written per direction.** A common way to code this contrast — the "feature-contrastive" form — treats the two
# directions separately: for view $a$, each row holds the $N$ cross-view similarities $s(z^a_i, z^b_j)$ followed by the $N$ same-view
# ones $s(z^a_i, z^a_j)$ with $j=i$ masked, the label is $i$ (the other view of the same image), and the loss is the mean of the two
# directions' cross-entropies. Only the order of the candidates differs from `nt_xent`, and a softmax does not care about order;
# at $\tau = 0.1$ values and gradients agree:

# %%
def feature_contrastive_ref(z_a, z_b, tau):
    "Symmetric per-direction form: [cross-view | same-view, self masked] logits, label = own index, mean of both directions."
    za, zb = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    n, eye = za.shape[0], torch.eye(za.shape[0], dtype=torch.bool)
    losses = [F.cross_entropy(torch.cat([u @ v.t(), (u @ u.t()).masked_fill(eye, float("-inf"))], 1) / tau, torch.arange(n))
              for u, v in [(za, zb), (zb, za)]]
    return (losses[0] + losses[1]) / 2

for _n, _d in [(8, 16), (32, 128)]:
    _a1, _b1 = torch.randn(_n, _d, requires_grad=True), torch.randn(_n, _d, requires_grad=True)
    _a2, _b2 = (t.detach().clone().requires_grad_() for t in (_a1, _b1))
    _l1, _l2 = nt_xent(_a1, _b1, 0.1), feature_contrastive_ref(_a2, _b2, 0.1)
    _l1.backward(); _l2.backward()
    test_close(_l1, _l2, eps=1e-5)
    test_close(_a1.grad, _a2.grad, eps=1e-5); test_close(_b1.grad, _b2.grad, eps=1e-5)


# %% [markdown]
# ## 7. The gradient of NT-Xent
# For view $i$ with positive $p(i)$ and cosine similarities $s_{ik}$, write the softmax weights over its $2N-1$ candidates
# $P_{ik} = e^{s_{ik}/\tau}/\sum_{k'\neq i}e^{s_{ik'}/\tau}$ ($k\neq i$). The per-view loss and its derivatives are
#
# $$\ell_i = -\frac{s_{i,p(i)}}{\tau} + \log\sum_{k\neq i}e^{s_{ik}/\tau},\qquad
# \frac{\partial\ell_i}{\partial s_{i,p(i)}} = \frac{P_{i,p(i)} - 1}{\tau},\qquad
# \frac{\partial\ell_i}{\partial s_{ik}} = \frac{P_{ik}}{\tau}\;\;(k\text{ a negative}).$$
#
# The positive is pulled with strength $(1-P_{i,p(i)})/\tau$, which vanishes once it wins the softmax; each negative is pushed
# with strength $P_{ik}/\tau$, i.e. in proportion to how similar it already is — the loss concentrates on hard negatives by
# itself. The row sums to zero: the total push on the negatives equals the pull on the positive. `nt_xent_grad` returns the
# matrix $G_{ik} = \partial\ell_i/\partial s_{ik}$ (zero on the diagonal); the gradient of the batch mean `nt_xent` w.r.t. $s$ is $G/2N$.

# %%
#| export
@float32_loss
def nt_xent_grad(z_a:torch.Tensor, # (N, D) first views (normalised inside)
                 z_b:torch.Tensor, # (N, D) second views
                 temperature:float=0.5, # τ
                ) -> torch.Tensor: # (2N, 2N) G[i, k] = ∂ℓ_i/∂s_ik
    "Analytic gradient of each view's NT-Xent term w.r.t. its cosine similarities: (P − 1[k = positive]) / τ, 0 on the diagonal."
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    P = torch.softmax(((z @ z.t()) / temperature).masked_fill(eye, float("-inf")), 1)
    pos = torch.arange(2 * n, device=z.device).add(n).remainder(2 * n)
    return (P - F.one_hot(pos, 2 * n).to(P.dtype)) / temperature


# %%
show_doc(nt_xent_grad)


# %% [markdown]
# Three checks: a loop that applies the two formulas entry by entry; autograd on a leaf similarity matrix fed through the same
# masked InfoNCE that `nt_xent` computes; and the chain rule back to the raw features — with $\hat z = z/\|z\|$, $s = \hat z\hat z^\top$
# and $\bar G = G/2N$, $\;\partial L/\partial\hat z = (\bar G + \bar G^\top)\hat z$ and
# $\partial L/\partial z = (I - \hat z\hat z^\top)\,\partial L/\partial\hat z\,/\,\|z\|$ row by row — against autograd of `nt_xent` itself.

# %%
def nt_xent_grad_loop(z_a, z_b, temperature):
    "Reference: G[i, k] = (P_ik − 1[k = p(i)]) / τ entry by entry."
    z = F.normalize(torch.cat([z_a, z_b]), dim=1); n2 = z.shape[0]
    G = torch.zeros(n2, n2)
    for i in range(n2):
        den = sum(torch.exp(z[i] @ z[k] / temperature) for k in range(n2) if k != i)
        for k in range(n2):
            if k == i: continue
            G[i, k] = (torch.exp(z[i] @ z[k] / temperature) / den - float(k == (i + n2 // 2) % n2)) / temperature
    return G

def nt_xent_from_sim(s, temperature):
    "NT-Xent as a function of the (2N, 2N) cosine matrix, for autograd."
    n2 = s.shape[0]
    logits = (s / temperature).masked_fill(torch.eye(n2, dtype=torch.bool), float("-inf"))
    return info_nce(logits, (torch.arange(n2) + n2 // 2) % n2)

for _n, _d, _t in [(5, 8, 0.5), (16, 32, 0.1), (3, 4, 2.0)]:
    _a, _b = torch.randn(_n, _d), torch.randn(_n, _d)
    G = nt_xent_grad(_a, _b, _t)
    test_close(G, nt_xent_grad_loop(_a, _b, _t), eps=1e-4)
    _zh = F.normalize(torch.cat([_a, _b]), dim=1)
    _S = (_zh @ _zh.t()).requires_grad_()
    _L = nt_xent_from_sim(_S, _t)
    test_close(_L, nt_xent(_a, _b, _t), eps=1e-5)
    _L.backward()
    test_close(_S.grad * 2 * _n, G, eps=1e-4)                               # autograd w.r.t. s
    test_close(G.sum(1), torch.zeros(2 * _n), eps=1e-4)                     # pull on positive = total push on negatives
    _z = torch.cat([_a, _b]).requires_grad_(); nt_xent(_z[:_n], _z[_n:], _t).backward()
    _Gb = G / (2 * _n); _gzh = (_Gb + _Gb.t()) @ _zh
    _gz = (_gzh - _zh * (_zh * _gzh).sum(1, keepdim=True)) / torch.cat([_a, _b]).norm(dim=1, keepdim=True)
    test_close(_gz, _z.grad, eps=1e-5)                                      # chain rule to the raw features

# %% [markdown]
# ## 8. Temperature
# The weights that the gradient puts on the negatives of view $i$ are, normalised among the negatives,
# $w_{ik} = e^{s_{ik}/\tau}/\sum_{k'\in\text{neg}(i)}e^{s_{ik'}/\tau}$ — a softmax of the similarities at temperature $\tau$.
#
# * $\tau\to0$: the softmax becomes an argmax; all the push goes to the single hardest negative, and $\tau\,\ell_i\to\max\big(0,\;\max_{k\in\text{neg}}s_{ik} - s_{i,p(i)}\big)$,
#   a hinge on the margin between the positive and the closest negative.
# * $\tau\to\infty$: every weight tends to $1/(2N-2)$, the similarities stop mattering, $\ell_i\to\log(2N-1)$, and the gradient, of size
#   $1/\tau$, vanishes.
#
# Small temperatures are what make contrastive losses "hardness-aware"; too small, and one hard (possibly same-class)
# negative dominates each step. The plot uses one view of a batch of $N=128$ random 16-d features (254 negatives); the right
# panel shows the effective number of negatives $e^{H(w)}$, from 1 to $2N-2$.

# %%
_g = torch.Generator().manual_seed(0)
_n = 128
_za, _zb = torch.randn(_n, 16, generator=_g), torch.randn(_n, 16, generator=_g)
_z = F.normalize(torch.cat([_za, _zb]), dim=1)
_s0 = _z[0] @ _z.t()
_neg = torch.ones(2 * _n, dtype=torch.bool); _neg[0] = _neg[_n] = False     # view 0: self and positive excluded
neg_weights = lambda t: torch.softmax(_s0[_neg].double() / t, 0)
_plot_taus, _scan = [0.05, 0.1, 0.2, 0.5, 1.0, 5.0], torch.logspace(-3, 3, 61)
_enn = torch.stack([torch.special.entr(neg_weights(t)).sum().exp() for t in _scan])   # entr(w) = −w log w, 0 at w = 0
fig, axs = plt.subplots(1, 2, figsize=(9, 3.2))
for t in _plot_taus: axs[0].plot(neg_weights(t).sort(descending=True).values, label=f"τ={t}")
axs[0].axhline(1 / (2 * _n - 2), color="k", ls=":", lw=1, label="uniform 1/(2N−2)")
axs[0].set_yscale("log"); axs[0].set_ylim(1e-6, 1.1); axs[0].set_xlabel("negatives, hardest first"); axs[0].set_ylabel("weight $w_{ik}$"); axs[0].legend(fontsize=7, ncol=2, loc="upper right")
axs[1].plot(_scan, _enn); axs[1].set_xscale("log"); axs[1].set_xlabel("τ"); axs[1].set_ylabel("effective negatives $e^{H(w)}$")
plt.tight_layout(); plt.show()

# %%
test_close(neg_weights(1e-3).max(), 1.0, eps=1e-3)                             # τ → 0: only the hardest negative
test_eq(neg_weights(1e-3).argmax(), _s0[_neg].argmax())
test_close(neg_weights(1e3), torch.full((2 * _n - 2,), 1 / (2 * _n - 2), dtype=torch.float64), eps=1e-5)  # τ → ∞: uniform
assert (_enn[1:] >= _enn[:-1] - 1e-9).all() and _enn[0] < 1.01 and _enn[-1] > 2 * _n - 2 - 0.1
# the limits of the loss itself, on a small batch
_a, _b = torch.randn(6, 8, generator=_g), torch.randn(6, 8, generator=_g)
_zz = F.normalize(torch.cat([_a, _b]), dim=1); _S = _zz @ _zz.t()
_hinge = torch.stack([(torch.cat([_S[i, :i], _S[i, i + 1:]]).max() - _S[i, (i + 6) % 12]).clamp(min=0) for i in range(12)]).mean()
test_close(1e-3 * nt_xent(_a, _b, 1e-3), _hinge, eps=5e-3)
test_close(nt_xent(_a, _b, 1e4), math.log(11), eps=1e-3)

# %% [markdown]
# ## 9. The balance term: entropy of the cluster marginal
# A contrastive loss on cluster assignments has a trivial minimiser: if every image goes to the same cluster, every
# pair of views agrees perfectly. All five methods of the course add the same remedy in different clothes — they
# reward a batch for *using* the clusters evenly. Let $q_i\in\Delta^{K-1}$ be the soft assignment of image $i$ and
# $\bar p = \frac1B\sum_i q_i$ the batch's cluster marginal. Its entropy $H(\bar p) = -\sum_k \bar p_k\log\bar p_k$ is
# $\log K$ when the clusters are used equally and $0$ when one cluster takes everything, and
#
# $$\mathrm{KL}(\bar p\,\|\,U) = \sum_k \bar p_k \log\frac{\bar p_k}{1/K} = \log K - H(\bar p) \;\ge 0 .$$
#
# CC and DCDC add $\log K - H(\bar p)$ per view, CRLC subtracts $\lambda_1 H(\bar p)$ (the same gradient), and TCC writes
# $\mathrm{KL}(\cdot\,\|\,U)$ with a uniform prior. One implementation serves them all. Note the order of the
# operations: the entropy of the *mean* assignment, not the mean of the per-image entropies — the latter would push
# every single assignment towards uniform, which is the opposite of clustering (the TCC chapter measures this).

# %%
#| export
@float32_loss
def kl_to_uniform(p:torch.Tensor, # (..., K) distributions over K outcomes
                 ) -> torch.Tensor: # (...,) KL(p ‖ U) = log K − H(p)
    "KL divergence from each distribution `p` to the uniform distribution over its K entries (0 log 0 = 0)."
    return math.log(p.shape[-1]) + torch.special.xlogy(p, p).sum(-1)

@float32_loss
def marginal_entropy(q:torch.Tensor, # (..., B, K) assignment probabilities of one view
                    ) -> torch.Tensor: # (...) H(p̄), p̄ the batch-mean assignment
    "Entropy of the batch-mean assignment p̄ = (1/B) Σ_i q_i: log K at uniform cluster usage, 0 at collapse."
    p = q.mean(-2)
    return math.log(q.shape[-1]) - kl_to_uniform(p)

@float32_loss
def marginal_entropy_penalty(q:torch.Tensor, # (B, K) soft assignments of one view
                            ) -> torch.Tensor: # scalar log K − H(p̄)
    "log K − H(p̄) = KL(p̄ ‖ U) for the batch marginal p̄: zero at uniform cluster usage, log K at collapse."
    return kl_to_uniform(q.mean(-2))

# %%
show_doc(marginal_entropy_penalty)

# %%
def marginal_entropy_loop(q):
    "H(p̄) one cluster at a time, as printed."
    B, K = q.shape
    p = [sum(q[i, k] for i in range(B)) / B for k in range(K)]
    return -sum(pk * math.log(pk) for pk in p if pk > 0)

for _B, _K in [(16, 3), (64, 10), (5, 20)]:
    _q = torch.softmax(torch.randn(_B, _K, generator=_g) * 3, 1)
    test_close(marginal_entropy(_q), marginal_entropy_loop(_q.double()), eps=1e-5)
    test_close(marginal_entropy_penalty(_q), math.log(_K) - marginal_entropy_loop(_q.double()), eps=1e-5)
    test_close(kl_to_uniform(_q), F.kl_div(torch.full_like(_q, 1 / _K).log(), _q, reduction="none").sum(1), eps=1e-5)
_eye = torch.eye(4).repeat(3, 1)                                   # 12 images, 3 per cluster, one-hot: perfectly balanced
test_close(marginal_entropy_penalty(_eye), 0.0, eps=1e-6)
test_close(marginal_entropy_penalty(torch.eye(4)[[0] * 12]), math.log(4), eps=1e-6)   # collapsed: log K
test_eq(marginal_entropy(torch.randn(3, 8, 5).softmax(-1)).shape, torch.Size([3]))  # leading dimensions (CRLC's subheads)

# %% [markdown]
# ## 10. Losses in float32 under mixed precision
# On a GPU the trainer runs every step under bf16 autocast (`amp`): convolutions and matrix products in bfloat16,
# softmax, logarithms and sums in float32. A loss is a mix of both. NT-Xent's cosine matrix $\hat z\hat z^\top$ is a
# matrix product, so under autocast its inputs are rounded to bf16 and so is its result — even when the code called
# `.float()` first, since autocast re-casts the inputs of `matmul`, `mm`, `bmm` and `linear` — and the division by
# $\tau$ of a bf16 tensor stays in bf16. `float32_loss` (the first export of this chapter) switches autocast off for the
# whole loss; every exported loss of the course carries it. How large is the error it removes?
#
# **Rounding.** bf16 keeps 8 significant bits: the unit roundoff is $u = 2^{-8} \approx 3.9\cdot10^{-3}$ (float32:
# $2^{-24} \approx 6.0\cdot10^{-8}$). A number in $[2^E, 2^{E+1})$ is rounded to a multiple of $2^{E-7}$, so a logit
# $x = s/\tau$ between 8 and 16 — the positives of a network at $\tau = 0.1$ — is quantised in steps of 0.0625 and is
# off by up to $|x|\,u$, about $u|x|/2$ in root mean square. The rounding of the normalised features before the product
# adds a relative error of order $u$ on each cosine too.
#
# **The loss.** To first order the error $e_{ik}$ of the logits changes view $i$'s term by
# $d\ell_i = \sum_{k\neq i}(P_{ik} - \mathbb 1[k = p(i)])\,e_{ik}$. The weights sum in absolute value to
# $2(1-P_{i,p(i)}) \le 2$, so $|d\ell_i| \le 2\max_k|e_{ik}| \approx 2u/\tau$ — up to 0.078 at $\tau = 0.1$ and 0.016 at
# $\tau = 0.5$. The errors of different entries are independent and of mean about zero, so on the mean over the $2N$
# views they largely cancel: treating them as independent with standard deviation $u|x_{ik}|/2$, the error of the loss
# has standard deviation $\frac{u}{2}\cdot\frac{1}{2N}\big(\sum_{i,k}(P_{ik}-\mathbb 1[k=p(i)])^2 x_{ik}^2\big)^{1/2}$,
# which the cell below evaluates on the batch.
#
# **The gradient.** $\partial\ell_i/\partial x_{ik} = P_{ik} - \mathbb 1[k=p(i)]$ and $dP_{ik} = P_{ik}(e_{ik} - \sum_{k'}P_{ik'}e_{ik'})$:
# every weight of the gradient is off by a *relative* amount of the size of the logit errors. The weight sits on the
# positive and the hard negatives, the largest logits, so the gradient's relative error is about
# $\frac u2\,(1 + |x_{pos}|)$ — the 1 for the rounding of the features in the forward product and of the gradient in
# the backward product. For $N = 256$, $D = 128$ and views whose cosine is about 0.9 (a network that has started to
# learn), $|x_{pos}| \approx 0.9/\tau$: about $1.9\cdot10^{-2}$ at $\tau = 0.1$ and $5\cdot10^{-3}$ at $\tau = 0.5$. Averaging does
# not help here: each coordinate of the gradient is a different sum.
#
# **Float32, and the tolerance.** The same analysis with $u = 2^{-24}$ gives $3\cdot10^{-8}(1 + |x_{pos}|) \approx 3\cdot10^{-7}$ at
# $\tau = 0.1$, and the rounding of the length-$D$ sums of the cosines adds about $\sqrt D\,2^{-24} \approx 7\cdot10^{-7}$: a float32
# loss and its gradient are correct to about $10^{-6}$ relative. We take **tol = 1e-5** (relative to the loss, and to the norm
# of the gradient) as the float32 tolerance: float32 meets it with room to spare, and bf16 misses it on the gradient by
# two to three orders of magnitude. The agreements to $10^{-7}$ with the official code that the method chapters show
# hold in float32; under bf16 they would be $10^{-4}$–$10^{-2}$.
#
# The measurement, against the same loss in float64: float32 without autocast; the loss without its decorator
# (`nt_xent.__wrapped__`, what a loss without `float32_loss` computes) under CPU bf16 autocast; and the decorated
# loss under the same autocast, with float32 and with bf16 features.

# %%
def loss_and_grad(fn, z_a, z_b, tau, dtype=torch.float32, amp=False):
    "fn(z_a, z_b, tau) and its gradient w.r.t. both views (float64 copies), inputs in `dtype`, under CPU bf16 autocast if `amp`."
    a, b = (t.detach().to(dtype).requires_grad_() for t in (z_a, z_b))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp): l = fn(a, b, tau)
    l.backward()
    return l.detach().double(), torch.cat([a.grad, b.grad]).double()

def rel_err(x, ref):
    "‖x − ref‖ / ‖ref‖."
    return ((x - ref).norm() / ref.norm()).item()

TOL, U_BF16 = 1e-5, 2. ** -8
_g = torch.Generator().manual_seed(10)
_N, _D = 256, 128
_za = torch.randn(_N, _D, generator=_g); _zb = _za + 0.5 * torch.randn(_N, _D, generator=_g)   # positive cosine ≈ 0.9
_zh = F.normalize(torch.cat([_za, _zb]).double(), dim=1)
_cos_pos = (_zh[:_N] * _zh[_N:]).sum(1).mean().item()
prec = {}
for _t in (0.1, 0.5):
    _ref = loss_and_grad(nt_xent, _za, _zb, _t, torch.float64)
    _runs = {"float32": loss_and_grad(nt_xent, _za, _zb, _t),
             "bf16 (undecorated)": loss_and_grad(nt_xent.__wrapped__, _za, _zb, _t, amp=True),
             "float32_loss, float32 in": loss_and_grad(nt_xent, _za, _zb, _t, amp=True),
             "float32_loss, bf16 in": loss_and_grad(nt_xent, _za, _zb, _t, torch.bfloat16, amp=True)}
    _x = (_zh @ _zh.t() / _t).masked_fill(torch.eye(2 * _N, dtype=torch.bool), float("-inf"))
    _G = nt_xent_grad(_za.double(), _zb.double(), _t) * _t              # P − 1[k = p(i)]
    _pred_loss = U_BF16 / 2 * (_G ** 2 * _x.nan_to_num(neginf=0.) ** 2).sum().sqrt().item() / (2 * _N)
    prec[_t] = dict(ref=_ref, runs=_runs, pred_loss=_pred_loss, pred_grad=U_BF16 / 2 * (1 + _cos_pos / _t))
    print(f"τ = {_t}: loss {_ref[0].item():.4f}; bf16 predicted: loss error ~{_pred_loss:.1e}, gradient {prec[_t]['pred_grad']:.1e} relative")
    for _k, (_l, _gr) in _runs.items():
        print(f"   {_k:26s} loss error {abs(_l - _ref[0]).item():.1e} ({abs(_l - _ref[0]).item() / _ref[0].item():.1e} relative), "
              f"gradient {rel_err(_gr, _ref[1]):.1e} relative")

# %% [markdown]
# The checks: float32 meets the tolerance; the decorated loss under autocast gives the float32 values to the
# tolerance (with bf16 features, the float32 values of those features, and a bf16 gradient); the undecorated loss
# under autocast misses the tolerance on the gradient at both temperatures and on the loss at $\tau = 0.1$, by the
# amount the derivation predicts (within a factor of two for the gradient; the loss error, a sum of many signed
# roundings, within four of its predicted standard deviations).

# %%
for _t, _p in prec.items():
    (_l0, _g0), _r = _p["ref"], _p["runs"]
    _l32, _g32 = _r["float32"]
    assert abs(_l32 - _l0) <= TOL * abs(_l0) and rel_err(_g32, _g0) <= TOL                 # float32 meets the tolerance
    _lw, _gw = _r["float32_loss, float32 in"]
    assert abs(_lw - _l32) <= TOL * abs(_l32) and rel_err(_gw, _g32) <= TOL                # decorated under autocast = float32
    _lb, _gb = _r["bf16 (undecorated)"]
    assert rel_err(_gb, _g32) > 100 * TOL                                                  # bf16: the gradient misses it
    assert 0.5 < rel_err(_gb, _g0) / _p["pred_grad"] < 2                                   # by the predicted amount
    assert abs(_lb - _l0).item() < 4 * _p["pred_loss"]
_lb, _ = prec[0.1]["runs"]["bf16 (undecorated)"]; _l32, _ = prec[0.1]["runs"]["float32"]
assert abs(_lb - _l32) > TOL * abs(_l32)                                                   # τ = 0.1: the loss misses it too
# bf16 features: the decorated loss is the float32 loss of those features, and the gradient comes back in bf16
_a16, _b16 = _za.bfloat16().requires_grad_(), _zb.bfloat16()
with torch.autocast("cpu", dtype=torch.bfloat16): _l16 = nt_xent(_a16, _b16, 0.1)
test_eq(_l16.dtype, torch.float32)
test_close(_l16, nt_xent(_a16.detach().float(), _b16.float(), 0.1), eps=TOL * _l16.item())
_l16.backward(); test_eq(_a16.grad.dtype, torch.bfloat16)

# %%
#| hide
import nbdev; nbdev.nbdev_export()
