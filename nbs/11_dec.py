# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Deep Embedded Clustering: soft assignment and target distribution
# > DEC's Student's t soft assignment to learnable centres, its sharpened and frequency-normalised target distribution, the KL clustering loss with its closed-form gradients, and CADEC's anchor loss.

# %%
#| default_exp dec

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import torch
from deepcluster_nb.infonce import float32_loss

# %%
import math
import numpy as np
import matplotlib.pyplot as plt

# %%
torch.manual_seed(0);

# %% [markdown]
# Deep Embedded Clustering (DEC; Xie, Girshick and Farhadi, 2016) clusters in the feature space of a network by
# keeping $K$ centres $\mu_1,\dots,\mu_K$ next to the network and alternating nothing: a single loss moves both.
# Each embedding $h_i$ is assigned *softly* to every centre with a kernel that decays with distance; from those
# soft assignments $Q$ a *sharper* distribution $P$ is built, and the network and the centres are trained to make $Q$
# look like $P$. The model is thus taught by its own most confident guesses (self-training), with a correction that
# keeps big clusters from winning by size alone.
#
# CADEC (Sundareswaran et al., 2021) puts this clustering loss on top of CC's instance contrast; its method chapter
# comes next. This chapter holds the mathematics, which is DEC's: four functions, each checked against a loop over
# the printed equation, and the derivations DEC states only briefly.

# %% [markdown]
# ## 1. The soft assignment: Student's t kernel
# With $h_i$ the embedding of image $i$ and $\mu_j$ the centre of cluster $j$, the probability of assigning $i$ to
# $j$ is a Student's t kernel with $\alpha$ degrees of freedom, normalised over the clusters:
#
# $$q_{ij} = \frac{\left(1 + \|h_i - \mu_j\|^2/\alpha\right)^{-\frac{\alpha+1}{2}}}{\sum_{j'}\left(1 + \|h_i - \mu_{j'}\|^2/\alpha\right)^{-\frac{\alpha+1}{2}}}.$$
#
# First the equation as printed, one entry at a time:

# %%
def student_t_loop(h, mu, alpha=1.0):
    "q_ij one entry at a time, as printed."
    N, K = h.shape[0], mu.shape[0]
    q = torch.zeros(N, K, dtype=h.dtype)
    for i in range(N):
        kern = [(1 + ((h[i] - mu[j]) ** 2).sum() / alpha) ** (-(alpha + 1) / 2) for j in range(K)]
        for j in range(K): q[i, j] = kern[j] / sum(kern)
    return q

# %% [markdown]
# The vectorised version writes the kernel as $\exp\big(-\tfrac{\alpha+1}{2}\log(1+\|h_i-\mu_j\|^2/\alpha)\big)$, so the
# normalisation over $j$ is a softmax of $-\tfrac{\alpha+1}{2}\,\mathrm{log1p}(\|h_i-\mu_j\|^2/\alpha)$: no power of a
# large number is ever formed, and the division is done by the numerically careful softmax. The distances are
# computed as differences (not by expanding $\|h\|^2 - 2h^\top\mu + \|\mu\|^2$), in at least float32, so that mixed
# precision training does not round away small distances: like the other functions of this chapter, it carries
# `float32_loss`, which turns autocast off and computes half-precision inputs in float32 (InfoNCE chapter, §10).

# %%
#| export
@float32_loss
def student_t_assignment(h:torch.Tensor, # (N, D) embeddings h_i
                         centers:torch.Tensor, # (K, D) cluster centres μ_j
                         alpha:float=1.0, # degrees of freedom α of the Student's t kernel
                        ) -> torch.Tensor: # (N, K) soft assignments q_ij, rows sum to 1
    "DEC's soft assignment: a Student's t kernel on ‖h_i − μ_j‖², normalised over the K centres."
    d2 = (h[:, None, :] - centers[None]).pow(2).sum(-1)                    # ‖h_i − μ_j‖²
    return torch.softmax(-(alpha + 1) / 2 * torch.log1p(d2 / alpha), dim=1)  # kernel / Σ_j' kernel

# %%
show_doc(student_t_assignment)

# %%
for _n, _k, _d, _a in [(6, 3, 4, 1.0), (5, 10, 16, 1.0), (7, 4, 2, 3.0), (4, 5, 8, 0.5)]:
    _h, _mu = torch.randn(_n, _d, dtype=torch.float64), torch.randn(_k, _d, dtype=torch.float64)
    test_close(student_t_assignment(_h, _mu, _a), student_t_loop(_h, _mu, _a), eps=1e-10)
test_close(student_t_assignment(_h, _mu).sum(1), torch.ones(4, dtype=torch.float64), eps=1e-12)
test_close(student_t_assignment(_h + 5, _mu + 5), student_t_assignment(_h, _mu), eps=1e-10)   # only distances matter
test_eq(student_t_assignment(_h.half(), _mu.half()).dtype, torch.float32)                  # half inputs: float32 output

# %% [markdown]
# ### Why a heavy-tailed kernel
# A Gaussian kernel $e^{-\|h-\mu\|^2/2}$ makes the ratio of two assignments depend on the *difference* of squared
# distances: for a point at distances $d$ and $d+1$ from two centres it is $e^{-(2d+1)/2}$, which vanishes as the
# point moves away. A point far from everything is then assigned with certainty to whichever centre is marginally
# closer, and its assignment no longer changes with small moves (the gradient dies). The Student's t kernel decays
# polynomially, like $d^{-(\alpha+1)}$; the same ratio tends to 1, so distant points stay undecided and keep
# receiving gradient until the network brings them near a centre. With $\alpha = 1$ the kernel is the Cauchy kernel
# $1/(1+d^2)$ that t-SNE uses in its low-dimensional map for the same reason; DEC (and CADEC) fix $\alpha = 1$ rather
# than learn it. As $\alpha\to\infty$ the t kernel becomes the Gaussian, which gives a check:

# %%
_h, _mu = torch.randn(6, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
_gauss = torch.softmax(-torch.cdist(_h, _mu) ** 2 / 2, dim=1)
test_close(student_t_assignment(_h, _mu, alpha=1e7), _gauss, eps=1e-5)
assert (student_t_assignment(_h, _mu, alpha=1.0) - _gauss).abs().max() > 0.05

# %% [markdown]
# A point on the line through two centres at 0 and 1, moved away to the left: the Gaussian hands it to the nearer
# centre completely, the t kernel with $\alpha=1$ keeps it close to 50/50.

# %%
_mu2 = torch.tensor([[0.], [1.]], dtype=torch.float64)
_x = -torch.linspace(0, 10, 101, dtype=torch.float64)[:, None]
_qt = student_t_assignment(_x, _mu2)[:, 0]
_qg = torch.softmax(-torch.cdist(_x, _mu2) ** 2 / 2, dim=1)[:, 0]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(-_x[:, 0], _qt, label="Student's t, α = 1"); ax.plot(-_x[:, 0], _qg, label="Gaussian")
ax.set_xlabel("distance to the nearer centre"); ax.set_ylabel("assignment to the nearer centre"); ax.legend(); plt.show()
print(f"at distance 10: t kernel {_qt[-1]:.3f}, Gaussian {_qg[-1]:.6f}")
assert _qt[-1] < 0.6 and _qg[-1] > 0.9999

# %% [markdown]
# ## 2. The target distribution
# DEC derives a target from $Q$ by squaring and normalising by the soft cluster frequency $f_j = \sum_i q_{ij}$ (in
# CADEC the sum runs over the mini-batch):
#
# $$p_{ij} = \frac{q_{ij}^2 / f_j}{\sum_{j'} q_{ij'}^2 / f_{j'}}.$$
#
# The official CADEC code adds $10^{-9}$ to $f_j$, which only matters for an empty cluster. As a loop:

# %%
def target_loop(q):
    "p_ij one entry at a time, as printed."
    N, K = q.shape
    f = [sum(q[i, j] for i in range(N)) for j in range(K)]
    p = torch.zeros_like(q)
    for i in range(N):
        den = sum(q[i, j] ** 2 / f[j] for j in range(K))
        for j in range(K): p[i, j] = q[i, j] ** 2 / f[j] / den
    return p

# %%
#| export
@float32_loss
def target_distribution(q:torch.Tensor, # (N, K) soft assignments q_ij
                       ) -> torch.Tensor: # (N, K) targets p_ij, rows sum to 1
    "DEC's auxiliary target: square q, divide by the soft cluster frequency f_j = Σ_i q_ij (+1e-9), renormalise rows."
    w = q.pow(2) / (q.sum(0) + 1e-9)       # q_ij² / f_j
    return w / w.sum(1, keepdim=True)     # / Σ_j' q_ij'² / f_j'

# %%
show_doc(target_distribution)

# %%
for _n, _k in [(8, 3), (20, 10), (5, 5)]:
    _q = torch.softmax(torch.randn(_n, _k, dtype=torch.float64) * 2, 1)
    test_close(target_distribution(_q), target_loop(_q), eps=1e-8)
    test_close(target_distribution(_q).sum(1), torch.ones(_n, dtype=torch.float64), eps=1e-12)
    _perm = torch.randperm(_k)
    test_close(target_distribution(_q[:, _perm]), target_distribution(_q)[:, _perm], eps=1e-12)  # clusters are exchangeable
test_close(target_distribution(torch.full((6, 4), 0.25)), torch.full((6, 4), 0.25))         # uniform q is a fixed point
test_close(target_distribution(torch.eye(4).repeat(2, 1)), torch.eye(4).repeat(2, 1), eps=1e-6)  # so is a hard q

# %% [markdown]
# ### Why squaring sharpens
# Leave $f$ aside for a moment. For two clusters of one row, $p_{ij}/p_{ik} = (q_{ij}/q_{ik})^2$: squaring doubles
# every log-ratio, so the largest entry of a row gains mass from all the others. A row at $(0.6, 0.4)$ becomes
# $(0.69, 0.31)$; a confident row at $(0.9, 0.1)$ becomes $(0.988, 0.012)$. Rows move towards one-hot, and fastest
# where they were already confident: the points the model is surest about teach it the most, which is the
# self-training idea. Entries equal within a row stay equal, so a completely undecided point gets an undecided target
# (and, by the gradient below, no push).
#
# ### Why divide by $f_j$
# Squaring alone favours whatever cluster already holds the most mass: a point slightly closer to a big cluster is
# pushed into it, which makes that cluster bigger, and so on; iterated, one cluster absorbs everything. Dividing by
# $f_j$ before renormalising lowers the target of every point for a cluster in proportion to its current size, so a
# point torn between a big and a small cluster is nudged towards the small one. In the two-cluster case the target
# odds become $(q_{ij}/q_{ik})^2 \cdot f_k/f_j$: the boundary where $p$ is 50/50 moves into the big cluster.
#
# Both effects on a toy $Q$: 200 points, 5 clusters, with cluster 0 favoured (a logit bias of 1.5):

# %%
def _entropy(q): return -(q * q.clamp(min=1e-12).log()).sum(1).mean()
def _square_only(q): return q ** 2 / (q ** 2).sum(1, keepdim=True)
_g = torch.Generator().manual_seed(0)
_q = torch.softmax(torch.randn(200, 5, generator=_g, dtype=torch.float64) + torch.tensor([1.5, 0, 0, 0, 0], dtype=torch.float64), 1)
_p, _p2 = target_distribution(_q), _square_only(_q)
print(f"mean row entropy:  Q {_entropy(_q):.3f}   squared only {_entropy(_p2):.3f}   P {_entropy(_p):.3f}")
print(f"share of cluster 0: Q {_q.mean(0)[0]:.3f}   squared only {_p2.mean(0)[0]:.3f}   P {_p.mean(0)[0]:.3f}")
assert _entropy(_p) < _entropy(_q) and _entropy(_p2) < _entropy(_q)  # both sharpen
assert _p2.mean(0)[0] > _q.mean(0)[0]                                # squaring alone feeds the big cluster
assert _p.mean(0)[0] < _q.mean(0)[0]                                 # dividing by f_j takes mass away from it

# %% [markdown]
# Applying the map again and again (each target becomes the next $Q$) shows where each map leads. Squaring alone
# converges to the hard partition by the argmax, in which cluster 0 keeps every point it was leaning towards; the
# frequency-normalised map keeps moving borderline points out of cluster 0 into the smaller clusters:

# %%
_qa, _qb, _sa, _sb = _q.clone(), _q.clone(), [], []
for _ in range(8):
    _qa, _qb = _square_only(_qa), target_distribution(_qb)
    _sa.append(_qa.mean(0).numpy()); _sb.append(_qb.mean(0).numpy())
fig, axs = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
for ax, s, t in zip(axs, [_sa, _sb], ["q² renormalised", "q²/f renormalised (DEC)"]):
    ax.stackplot(range(1, 9), np.array(s).T, labels=[f"cluster {j}" for j in range(5)]); ax.set_title(t); ax.set_xlabel("iteration")
axs[0].set_ylabel("share of the points"); axs[1].legend(fontsize=7, loc="lower right"); plt.tight_layout(); plt.show()
_argmax_share = (_q.argmax(1) == 0).double().mean().item()
print(f"cluster 0 holds the argmax of {_argmax_share:.3f} of the points; after 8 iterations its share is "
      f"{_sa[-1][0]:.3f} (squared only) and {_sb[-1][0]:.3f} (DEC)")
test_close(_sa[-1][0], _argmax_share, eps=0.01)
assert _sb[-1][0] < 0.75 * _q.mean(0)[0]

# %% [markdown]
# The division by $f_j$ is therefore a bias towards clusters of equal size, and like any prior it can be wrong. A
# small experiment makes both sides visible: 300 points in the plane from three Gaussian blobs of sizes
# 200/50/50, the embeddings $h_i$ themselves and the centres (started at the blob means) trained by Adam on the
# clustering loss, once with the squared-only target and once with DEC's:

# %%
def _self_train(target, steps=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0., 0], [2.5, 0], [0, 2.5]], dtype=torch.float64)
    X = torch.cat([means[k] + torch.randn(n, 2, generator=g, dtype=torch.float64) for k, n in enumerate([200, 50, 50])])
    y = torch.tensor([0] * 200 + [1] * 50 + [2] * 50)
    h, mu = X.clone().requires_grad_(), means.clone().requires_grad_()
    opt = torch.optim.Adam([h, mu], lr=0.02)
    for _ in range(steps):
        q = student_t_assignment(h, mu)
        p = target(q).detach()
        loss = (p * (p.log() - q.log())).sum(1).mean()   # KL(p_i ‖ q_i), P fixed
        opt.zero_grad(); loss.backward(); opt.step()
    pred = student_t_assignment(h, mu).argmax(1)
    return torch.bincount(pred, minlength=3).tolist(), (pred == y).double().mean().item()

_init = _self_train(_square_only, steps=0)
_sq, _dec = _self_train(_square_only), _self_train(target_distribution)
for _name, (_sizes, _acc) in [("at the start", _init), ("squared only", _sq), ("DEC target", _dec)]:
    print(f"{_name:13s} cluster sizes {_sizes}  accuracy {_acc:.3f}")
assert _dec[0][0] < _sq[0][0] - 15 and _dec[1] < _sq[1]

# %% [markdown]
# On this imbalanced toy DEC's target shrinks the big cluster below its true size (200) and loses accuracy; on
# balanced data such as the digit and CIFAR benchmarks, where every class holds the same number of images, the same
# prior protects the small clusters from being swallowed during training.

# %% [markdown]
# The same on a line: embeddings $h\in\mathbb R$ between centres $\mu_0=-1$ and $\mu_1=1$, with extra points
# crowding around $\mu_1$ so that cluster 1 is the big one. By symmetry $q$ is 50/50 at $h=0$; the target is
# steeper and its 50/50 point moves to the right, into the big cluster:

# %%
_h = torch.cat([torch.linspace(-3, 3, 121), 1 + 0.3 * torch.randn(300, generator=_g)]).double()[:, None]
_mu = torch.tensor([[-1.], [1.]], dtype=torch.float64)
_q = student_t_assignment(_h, _mu); _p = target_distribution(_q)
_line = slice(0, 121)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(_h[_line, 0], _q[_line, 1], label="q (assignment to the big cluster)"); ax.plot(_h[_line, 0], _p[_line, 1], label="p (target)")
ax.axhline(0.5, c="gray", lw=0.5); ax.set_xlabel("h"); ax.legend(fontsize=8); plt.show()
_cross = lambda v: _h[_line, 0][(v[_line, 1] >= 0.5).nonzero()[0, 0]].item()
print(f"f = {_q.sum(0).numpy().round(1)};  q is 50/50 at h = {_cross(_q):.2f},  p at h = {_cross(_p):.2f}")
assert abs(_cross(_q)) <= 0.06 and _cross(_p) > 0.2

# %% [markdown]
# ## 3. The clustering loss
# The loss is the KL divergence from the target to the assignment, averaged over the $N$ images of the batch, with
# $P$ treated as a constant (no gradient flows through it):
#
# $$\mathcal L_{cluster} = \frac1N\sum_{i=1}^N \mathrm{KL}(p_i\,\|\,q_i) = \frac1N\sum_i\sum_j p_{ij}\log\frac{p_{ij}}{q_{ij}}.$$
#
# DEC recomputes $P$ only every few iterations over the whole data set; CADEC's code recomputes it from the current
# mini-batch at every step and detaches it, which is what we do. Following that code the logarithms are taken of
# $q + 10^{-8}$ (and of $p + 10^{-8}$, which changes nothing measurable) so that a vanishing assignment cannot give
# $-\infty$. A small row-wise KL first, since the anchor loss below needs it too.
#
# The loss is exported as `target_kl_loss`, a name that says what it computes: CC's chapter has a `cluster_loss` of
# its own (a contrast of columns), and two losses under one name are one too many.

# %%
#| export
@float32_loss
def kl_rows(p:torch.Tensor, # (N, K) the reference distributions (rows)
            q:torch.Tensor, # (N, K) the approximating distributions
            eps:float=1e-8, # added inside both logarithms, as CADEC's code does
           ) -> torch.Tensor: # (N,) KL(p_i ‖ q_i)
    "Row-wise KL divergence Σ_j p_ij (log(p_ij + ε) − log(q_ij + ε))."
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(1)

# %%
_a, _b = torch.softmax(torch.randn(5, 4, dtype=torch.float64), 1), torch.softmax(torch.randn(5, 4, dtype=torch.float64), 1)
test_close(kl_rows(_a, _b), torch.stack([sum(_a[i, j] * math.log(_a[i, j] / _b[i, j]) for j in range(4)) for i in range(5)]), eps=1e-6)
test_close(kl_rows(_a, _a), torch.zeros(5, dtype=torch.float64), eps=1e-12)
assert (kl_rows(_a, _b) > 0).all() and not torch.allclose(kl_rows(_a, _b), kl_rows(_b, _a))  # not symmetric

# %%
def target_kl_loop(q):
    "(1/N) Σ_i Σ_j p_ij log(p_ij / q_ij) with P computed by the loop above and held fixed."
    p = target_loop(q.detach())
    N, K = q.shape
    return sum(p[i, j] * torch.log(p[i, j] / q[i, j]) for i in range(N) for j in range(K)) / N

# %%
#| export
@float32_loss
def target_kl_loss(q:torch.Tensor, # (N, K) soft assignments of the (raw) images of a batch
                  ) -> torch.Tensor: # scalar (1/N) Σ_i KL(p_i ‖ q_i)
    "DEC's clustering loss: KL from the target P (computed from q and detached) to q, averaged over the batch."
    p = target_distribution(q).detach()   # $p_{ij}$, a constant
    return kl_rows(p, q).mean()           # $\frac1N\sum_i \mathrm{KL}(p_i\|q_i)$

# %%
show_doc(target_kl_loss)

# %%
for _n, _k in [(8, 3), (30, 10), (6, 6)]:
    _q = torch.softmax(torch.randn(_n, _k, dtype=torch.float64) * 2, 1)
    test_close(target_kl_loss(_q), target_kl_loop(_q), eps=1e-6)
    assert target_kl_loss(_q) > 0
test_close(target_kl_loss(torch.full((6, 4), 0.25, dtype=torch.float64)), 0., eps=1e-9)  # P = Q: nothing to learn
# no gradient through P: autograd of the loss equals that of the KL with P passed in as a constant
_l = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
_g1, = torch.autograd.grad(target_kl_loss(torch.softmax(_l, 1)), _l)
_pc = target_distribution(torch.softmax(_l, 1)).detach().clone()
_g2, = torch.autograd.grad(kl_rows(_pc, torch.softmax(_l, 1)).mean(), _l)
test_close(_g1, _g2, eps=1e-12)

# %% [markdown]
# ## 4. The gradients, in closed form
# DEC states the gradients of $L = \sum_i \mathrm{KL}(p_i\|q_i)$ (the sum; our loss divides by $N$) with respect to
# an embedding and a centre. Write $d_{ij} = \|h_i - \mu_j\|^2$ and $u_{ij} = (1 + d_{ij}/\alpha)^{-1}$. With $P$ fixed,
# $L_i = -\sum_j p_{ij}\log q_{ij} + \text{const}$ and
#
# $$\log q_{ij} = -\tfrac{\alpha+1}{2}\log(1 + d_{ij}/\alpha) - \log\sum_{j'}(1 + d_{ij'}/\alpha)^{-\frac{\alpha+1}{2}}.$$
#
# Since $\partial \log(1+d/\alpha)/\partial d = u/\alpha$, differentiating with respect to one distance $d_{ik}$ gives
# $\partial\log q_{ij}/\partial d_{ik} = -\frac{\alpha+1}{2\alpha}u_{ik}(\delta_{jk} - q_{ik})$ (the second term is the
# derivative of the log-normaliser, a $q$-weighted average). Summing against $-p_{ij}$ and using $\sum_j p_{ij} = 1$:
#
# $$\frac{\partial L}{\partial d_{ik}} = \frac{\alpha+1}{2\alpha}\,u_{ik}\,(p_{ik} - q_{ik}).$$
#
# Finally $\partial d_{ik}/\partial h_i = 2(h_i - \mu_k)$ and $\partial d_{ik}/\partial\mu_k = -2(h_i - \mu_k)$, so
#
# $$\frac{\partial L}{\partial h_i} = \frac{\alpha+1}{\alpha}\sum_j u_{ij}(p_{ij} - q_{ij})(h_i - \mu_j),\qquad
# \frac{\partial L}{\partial \mu_j} = -\frac{\alpha+1}{\alpha}\sum_i u_{ij}(p_{ij} - q_{ij})(h_i - \mu_j).$$
#
# Reading them: a gradient step moves $h_i$ *towards* $\mu_j$ when the target asks for more of cluster $j$ than the
# assignment gives ($p_{ij} > q_{ij}$), and away from it otherwise; the centre moves symmetrically towards the points
# that should belong to it more. Each pull is damped by $u_{ij}$, so far-away pairs pull with a force that, times the
# distance $\|h_i - \mu_j\|$, stays bounded — the heavy tail again. A point whose target equals its assignment
# exerts no force at all.

# %%
def dec_gradients(h, mu, alpha=1.0):
    "DEC's closed-form ∂L/∂h_i and ∂L/∂μ_j for L = Σ_i KL(p_i ‖ q_i) with P fixed."
    q = student_t_assignment(h, mu, alpha)
    p = target_distribution(q)
    diff = h[:, None, :] - mu[None]                               # h_i − μ_j
    u = 1 / (1 + diff.pow(2).sum(-1) / alpha)                     # u_ij
    w = ((alpha + 1) / alpha * u * (p - q))[..., None] * diff     # (α+1)/α u_ij (p_ij − q_ij)(h_i − μ_j)
    return w.sum(1), -w.sum(0)

for _n, _k, _d, _a in [(12, 3, 5, 1.0), (30, 10, 16, 1.0), (10, 4, 3, 2.0), (9, 5, 7, 0.7)]:
    _h = torch.randn(_n, _d, dtype=torch.float64, requires_grad=True)
    _mu = torch.randn(_k, _d, dtype=torch.float64, requires_grad=True)
    _L = _n * target_kl_loss(student_t_assignment(_h, _mu, _a))          # the sum over i, as DEC writes it
    _gh, _gmu = torch.autograd.grad(_L, (_h, _mu))
    _ch, _cmu = dec_gradients(_h.detach(), _mu.detach(), _a)
    test_close(_gh, _ch, eps=1e-6); test_close(_gmu, _cmu, eps=1e-6)
print(f"max |autograd − closed form| for the centres: {(_gmu - _cmu).abs().max():.2e}")

# %% [markdown]
# With the centres and $P$ held, $L_i$ depends on $h_i$ alone, so a small step along the closed-form
# $-\partial L/\partial h_i$ must bring *every* point's assignment closer to its own target — a check of the sign as
# well as of the size:

# %%
_h = torch.randn(40, 2, dtype=torch.float64) * 2; _mu = torch.tensor([[-2., 0], [2, 0], [0, 2]], dtype=torch.float64)
_gh, _ = dec_gradients(_h, _mu)
_p = target_distribution(student_t_assignment(_h, _mu))
_kl = lambda h: (_p * (_p.log() - student_t_assignment(h, _mu).log())).sum(1)
assert (_kl(_h - 1e-3 * _gh) < _kl(_h)).all() and (_kl(_h + 1e-3 * _gh) > _kl(_h)).all()

# %% [markdown]
# ## 5. CADEC's anchor loss
# CADEC assigns the raw image ($q^0_i$) and its two augmentations ($q^1_i$, $q^2_i$) with the same centres and asks the
# augmented assignments to agree with the raw one:
#
# $$\mathcal L_{anchor} = \frac1N\sum_{i=1}^N\left[\mathrm{KL}(q^0_i\|q^1_i) + \mathrm{KL}(q^0_i\|q^2_i)\right].$$
#
# The official code detaches $q^0$: the raw assignment is a fixed anchor, and the gradient reaches the network and the
# centres only through the augmented views. (The raw view is trained by the clustering loss.) As a loop and vectorised:

# %%
def anchor_loop(q0, q1, q2):
    "(1/N) Σ_i [KL(q⁰_i ‖ q¹_i) + KL(q⁰_i ‖ q²_i)] one entry at a time."
    N, K = q0.shape
    return sum(q0[i, j] * (torch.log(q0[i, j] / q1[i, j]) + torch.log(q0[i, j] / q2[i, j]))
               for i in range(N) for j in range(K)) / N

# %%
#| export
@float32_loss
def anchor_loss(q0:torch.Tensor, # (N, K) assignments of the raw images (the anchor; detached inside)
                q1:torch.Tensor, # (N, K) assignments of the first augmented views
                q2:torch.Tensor, # (N, K) assignments of the second augmented views
               ) -> torch.Tensor: # scalar (1/N) Σ_i [KL(q⁰_i‖q¹_i) + KL(q⁰_i‖q²_i)]
    "CADEC's anchor loss: both augmented assignments are pulled towards the (fixed) raw-image assignment."
    q0 = q0.detach()
    return (kl_rows(q0, q1) + kl_rows(q0, q2)).mean()

# %%
show_doc(anchor_loss)

# %%
for _n, _k in [(8, 3), (16, 10)]:
    _q0, _q1, _q2 = (torch.softmax(torch.randn(_n, _k, dtype=torch.float64), 1) for _ in range(3))
    test_close(anchor_loss(_q0, _q1, _q2), anchor_loop(_q0, _q1, _q2), eps=1e-6)   # (the ε of the logs: ~1e-7 here)
    test_close(anchor_loss(_q0, _q1, _q2), anchor_loss(_q0, _q2, _q1), eps=1e-12)   # the two views play the same role
test_close(anchor_loss(_q0, _q0, _q0), 0., eps=1e-9)
assert anchor_loss(_q0, _q1, _q2) > 0

# %% [markdown]
# The detach, checked: the gradient reaches the logits of the augmented views but nothing reaches the raw view's.

# %%
_l0 = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
_l1 = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
_g0, _g1 = torch.autograd.grad(anchor_loss(torch.softmax(_l0, 1), torch.softmax(_l1, 1), torch.softmax(_l1, 1)), (_l0, _l1), allow_unused=True)
assert _g0 is None and _g1.abs().sum() > 0

# %%
#| hide
import nbdev; nbdev.nbdev_export()
