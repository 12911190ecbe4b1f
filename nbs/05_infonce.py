# %% [markdown]
# # InfoNCE
# > The contrastive objective behind every method of the course: a cross-entropy that picks the positive among M candidates, and its SimCLR form NT-Xent.

# %%
#| default_exp infonce

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import math
import torch
import torch.nn.functional as F

# %% [markdown]
# Given a query and $M$ candidates of which one, the *positive*, was generated together with the query, a critic
# $f$ scores every pair. InfoNCE is the cross-entropy of picking the positive:
#
# $$\mathcal L_{\text{InfoNCE}} = -\,\mathbb E\left[\log \frac{e^{f(x, y^+)}}{\sum_{m=1}^{M} e^{f(x, y_m)}}\right].$$
#
# With a score matrix `scores[i, m]` $= f(x_i, y_m)$ and the positive's column for each row:

# %%
#| export
def info_nce(scores:torch.Tensor, # (B, M) critic values f(x_i, y_m)
             positive_index:torch.Tensor, # (B,) column of each row's positive
            ) -> torch.Tensor: # scalar: mean over rows of −log softmax(scores)[positive]
    "InfoNCE: the cross-entropy of picking each row's positive among its M candidates."
    return F.cross_entropy(scores.float(), positive_index)

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

# %% [markdown]
# ## NT-Xent
# SimCLR's *normalised temperature-scaled cross-entropy* is InfoNCE over the $2N$ views of a batch of $N$ images:
# the critic is the cosine similarity over a temperature, $f(z_i, z_j) = z_i^\top z_j/(\|z_i\|\|z_j\|\tau)$, each view's
# positive is the other view of its image, and its $2N-2$ negatives are the views of the other images. A view is
# never compared with itself: we mask the diagonal with $-\infty$ rather than gathering the off-diagonal entries.

# %%
#| export
def nt_xent(z_a:torch.Tensor, # (N, D) first views (normalised inside)
            z_b:torch.Tensor, # (N, D) second views
            temperature:float=0.5, # τ
           ) -> torch.Tensor: # scalar, mean over the 2N views
    "NT-Xent (SimCLR): InfoNCE with the cosine critic over 2N views, positives i ↔ i+N, self-pairs excluded."
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    sim = (z @ z.t()) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return info_nce(sim, pos)

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

# %%
#| hide
import nbdev; nbdev.nbdev_export()
