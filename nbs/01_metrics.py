# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Metrics
# > Clustering accuracy by Hungarian matching, NMI and ARI: the three numbers every paper in this course reports.

# %%
#| default_exp metrics

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

# %% [markdown]
# A clustering algorithm returns cluster indices, not class labels: cluster 3 may hold all the sevens. Before we can
# speak of *accuracy* we must decide which cluster stands for which class. All five papers of this course use the
# same rule: find the **one-to-one** mapping $m$ from clusters to classes that maximises the number of correctly
# labelled samples,
#
# $$\mathrm{ACC} = \max_{m} \frac{1}{N}\sum_{i=1}^{N} \mathbb{1}\{y_i = m(\hat y_i)\},$$
#
# a linear assignment problem on the $K\times C$ contingency table, solved exactly by the Hungarian algorithm
# (`scipy.optimize.linear_sum_assignment`).
#
# We first build the contingency table: `counts[k, c]` is the number of samples put in cluster `k` whose true class is `c`.

# %%
#| export
def contingency(y_true, # true class labels, ints of shape (N,)
                y_pred, # cluster indices, ints of shape (N,)
               ) -> np.ndarray: # counts of shape (n_clusters, n_classes)
    "Contingency table `counts[k, c]` = number of samples in cluster `k` with class `c`."
    y_true, y_pred = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape: raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    if y_true.size == 0: raise ValueError("cannot score an empty clustering")
    if y_true.min() < 0 or y_pred.min() < 0: raise ValueError("labels and cluster indices must be non-negative")
    counts = np.zeros((y_pred.max() + 1, y_true.max() + 1), dtype=np.int64)
    np.add.at(counts, (y_pred, y_true), 1)
    return counts

# %%
test_eq(contingency([0, 0, 1, 1], [1, 1, 0, 0]), np.array([[0, 2], [2, 0]]))
test_eq(contingency([0, 1, 2], [0, 0, 0]).shape, (1, 3))
test_fail(lambda: contingency([0, 1], [0]), contains="labels")

# %% [markdown]
# The Hungarian algorithm minimises a cost, so we hand it the negated counts. With more clusters than classes
# (over-clustering) each class still receives at most one cluster and the samples of the unmatched clusters count
# as errors. A second, more lenient figure is sometimes quoted for over-clustering: map every cluster to its
# majority class (many-to-one). We report it under its own name, `majority_accuracy`, never as ACC.

# %%
#| export
def cluster_accuracy(y_true, # true class labels, ints of shape (N,)
                     y_pred, # cluster indices, ints of shape (N,)
                    ) -> float: # accuracy in [0, 1] under the best one-to-one cluster→class map
    "Clustering accuracy (ACC) with the one-to-one Hungarian matching of clusters to classes."
    counts = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / counts.sum())

# %%
show_doc(cluster_accuracy)

# %%
test_eq(cluster_accuracy([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1]), 1.0)   # a pure relabelling
test_close(cluster_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]), 5 / 6)  # one sample in the wrong cluster
test_close(cluster_accuracy([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 0, 0]), 1 / 3)  # everything in one cluster
# over-clustering: 4 clusters, 2 classes; only two clusters can be matched, the other two samples are errors
test_close(cluster_accuracy([0, 0, 1, 1], [0, 1, 2, 3]), 2 / 4)

# %% [markdown]
# A hand-worked case that the matching must get right although a greedy rule would not: cluster 0 holds
# 3 samples of class 0 and 2 of class 1, cluster 1 holds 2 of class 0 and 0 of class 1. Greedy (cluster 0 → class 0)
# scores 3 + 0 = 3; the optimum maps cluster 0 → class 1 and cluster 1 → class 0 for 2 + 2 = 4 out of 7.

# %%
_yt = [0, 0, 0, 1, 1, 0, 0]
_yp = [0, 0, 0, 0, 0, 1, 1]
test_close(cluster_accuracy(_yt, _yp), 4 / 7)

# %%
#| export
def majority_accuracy(y_true, # true class labels, ints of shape (N,)
                      y_pred, # cluster indices, ints of shape (N,)
                     ) -> float: # accuracy when every cluster is mapped to its majority class (many-to-one)
    "Many-to-one accuracy: each cluster takes its most frequent class. Not comparable with ACC under over-clustering."
    counts = contingency(y_true, y_pred)
    return float(counts.max(axis=1).sum() / counts.sum())

# %%
test_close(majority_accuracy([0, 0, 1, 1], [0, 1, 2, 3]), 1.0)
test_close(majority_accuracy(_yt, _yp), 5 / 7)
test_close(majority_accuracy([0, 1, 2], [0, 0, 0]), 1 / 3)

# %% [markdown]
# **NMI** (normalised mutual information, arithmetic normalisation, scikit-learn's default) and **ARI** (adjusted
# Rand index) are invariant to relabelling by construction, so they need no matching. ARI is 0 in expectation for a
# random clustering and can be negative; NMI of a single cluster is 0.

# %%
#| export
def evaluate(y_true, # true class labels, ints of shape (N,)
             y_pred, # cluster indices, ints of shape (N,)
            ) -> dict: # {"acc", "nmi", "ari"}, plus "majority_acc" when there are more clusters than classes
    "ACC (Hungarian), NMI and ARI of a clustering."
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    res = {"acc": cluster_accuracy(y_true, y_pred),
           "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
           "ari": float(adjusted_rand_score(y_true, y_pred))}
    if y_pred.max() + 1 > y_true.max() + 1: res["majority_acc"] = majority_accuracy(y_true, y_pred)
    return res

# %%
show_doc(evaluate)

# %%
_r = evaluate([0, 0, 1, 1, 2, 2], [1, 1, 2, 2, 0, 0])
test_close([_r["acc"], _r["nmi"], _r["ari"]], [1.0, 1.0, 1.0])
_r = evaluate([0, 0, 1, 1, 2, 2], [0] * 6)             # the degenerate all-one-cluster case
test_close([_r["acc"], _r["nmi"], _r["ari"]], [1 / 3, 0.0, 0.0])
assert "majority_acc" in evaluate([0, 1], [0, 2]) and "majority_acc" not in _r

# %% [markdown]
# Invariance under relabelling, checked on a random clustering:

# %%
_rng = np.random.default_rng(0)
_yt, _yp = _rng.integers(0, 5, 300), _rng.integers(0, 5, 300)
_perm = _rng.permutation(5)
test_eq(evaluate(_yt, _yp), evaluate(_yt, _perm[_yp]))

# %%
#| export
def cluster_sizes(y_pred, # cluster indices, ints of shape (N,)
                  n_clusters:int, # number of clusters K
                 ) -> np.ndarray: # counts of shape (K,), zeros for empty clusters
    "How many samples each of the `n_clusters` clusters holds."
    return np.bincount(np.asarray(y_pred, dtype=np.int64).ravel(), minlength=n_clusters)

# %%
test_eq(cluster_sizes([0, 0, 2], 4), np.array([2, 0, 1, 0]))

# %%
#| hide
import nbdev; nbdev.nbdev_export()
