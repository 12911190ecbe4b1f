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
from __future__ import annotations
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
# A label of **−1 means unknown** (an unlabelled image, such as STL-10's extra split, or a dataset labelled only in
# part): it is trained on but cannot be scored. Every figure below, ACC, NMI, ARI and the confusion matrix, is computed
# on the labelled images only, and `labelled` is the one place that drops the others.

# %%
#| export
def labelled(y_true, # true class labels, ints of shape (N,), -1 where unknown
             y_pred, # cluster indices, ints of shape (N,)
            ) -> tuple: # (y_true, y_pred) as int64, only where the label is known
    "The (label, cluster) pairs whose label is known (not -1); any other negative label or cluster index is refused."
    y_true, y_pred = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape: raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    if y_true.size == 0: raise ValueError("cannot score an empty clustering")
    if y_true.min() < -1 or y_pred.min() < 0: raise ValueError("labels must be non-negative (or -1 for unknown), cluster indices non-negative")
    known = y_true >= 0
    if not known.any(): raise ValueError(f"no image has a known label (all {y_true.size} are -1): nothing to score")
    return y_true[known], y_pred[known]

# %%
test_eq(labelled([0, -1, 2], [1, 1, 0]), (np.array([0, 2]), np.array([1, 0])))
test_fail(lambda: labelled([0, 1], [0]), contains="labels")
test_fail(lambda: labelled([0, -2], [0, 0]), contains="-1 for unknown")
test_fail(lambda: labelled([-1, -1], [0, 1]), contains="all 2 are -1")

# %% [markdown]
# We first build the contingency table: `counts[k, c]` is the number of labelled samples put in cluster `k` whose true
# class is `c`.

# %%
#| export
def contingency(y_true, # true class labels, ints of shape (N,), -1 where unknown (left out)
                y_pred, # cluster indices, ints of shape (N,)
               ) -> np.ndarray: # counts of shape (n_clusters, n_classes)
    "Contingency table `counts[k, c]` = number of samples in cluster `k` with class `c`."
    y_true, y_pred = labelled(y_true, y_pred)
    counts = np.zeros((y_pred.max() + 1, y_true.max() + 1), dtype=np.int64)
    np.add.at(counts, (y_pred, y_true), 1)
    return counts

# %%
test_eq(contingency([0, 0, 1, 1], [1, 1, 0, 0]), np.array([[0, 2], [2, 0]]))
test_eq(contingency([0, 1, 2], [0, 0, 0]).shape, (1, 3))
test_eq(contingency([0, -1, 1, -1], [1, 0, 0, 2]), np.array([[0, 1], [1, 0]]))   # the unknown images are not counted
test_fail(lambda: contingency([0, 1], [0]), contains="labels")

# %% [markdown]
# The Hungarian algorithm minimises a cost, so we hand it the negated counts. With more clusters than classes
# (over-clustering) each class still receives at most one cluster and the samples of the unmatched clusters count
# as errors. A second, more lenient figure is sometimes quoted for over-clustering: map every cluster to its
# majority class (many-to-one). We report it under its own name, `majority_accuracy`, never as ACC.

# %%
#| export
def match_clusters(y_true, # true class labels, ints of shape (N,)
                   y_pred, # cluster indices, ints of shape (N,)
                   n_clusters:int|None=None, # K (default: the largest cluster index + 1)
                  ) -> tuple: # (order (K,): matched clusters by class, then the unmatched; cls (K,): matched class or -1)
    "The one-to-one Hungarian matching of clusters to classes: the one matching every ACC, table and plot uses."
    counts = contingency(y_true, y_pred)
    K = max(n_clusters or 0, counts.shape[0])
    counts = np.pad(counts, ((0, K - counts.shape[0]), (0, 0)))
    rows, cols = linear_sum_assignment(-counts)          # rows: clusters, cols: classes
    cls = np.full(K, -1, dtype=np.int64); cls[rows] = cols
    matched = rows[np.argsort(cols, kind="stable")]
    order = np.concatenate([matched, np.setdiff1d(np.arange(K), rows)]).astype(np.int64)
    return order, cls

# %%
_order, _cls = match_clusters([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1])
test_eq(_cls, np.array([1, 2, 0])); test_eq(_order, np.array([2, 0, 1]))   # cluster 2 holds class 0, so it comes first
_order, _cls = match_clusters([0, 0, 1, 1], [0, 1, 2, 3])                 # over-clustering: two clusters stay unmatched
test_eq((_cls >= 0).sum(), 2); test_eq(len(_order), 4); test_eq(sorted(_order), [0, 1, 2, 3])
test_eq((match_clusters([0, 1], [0, 0], n_clusters=3)[1] >= 0).sum(), 2)    # K = 3 clusters, two classes: two matched

# %% [markdown]
# ACC counts the samples that the matched cluster of their class holds:

# %%
#| export
def cluster_accuracy(y_true, # true class labels, ints of shape (N,)
                     y_pred, # cluster indices, ints of shape (N,)
                    ) -> float: # accuracy in [0, 1] under the best one-to-one cluster→class map
    "Clustering accuracy (ACC) with the one-to-one Hungarian matching of clusters to classes."
    counts = contingency(y_true, y_pred)
    _, cls = match_clusters(y_true, y_pred)
    k = np.flatnonzero(cls >= 0)
    return float(counts[k, cls[k]].sum() / counts.sum())

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
def clustering_scores(y_true, # true class labels, ints of shape (N,), -1 where unknown (left out)
                      y_pred, # cluster indices, ints of shape (N,)
                     ) -> dict: # {"acc", "nmi", "ari"}, plus "majority_acc" when there are more clusters than classes
    "ACC (Hungarian), NMI and ARI of a clustering, on the images whose label is known."
    y_true, y_pred = labelled(y_true, y_pred)
    res = {"acc": cluster_accuracy(y_true, y_pred),
           "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
           "ari": float(adjusted_rand_score(y_true, y_pred))}
    if y_pred.max() + 1 > y_true.max() + 1: res["majority_acc"] = majority_accuracy(y_true, y_pred)
    return res

# %%
show_doc(clustering_scores)

# %%
_r = clustering_scores([0, 0, 1, 1, 2, 2], [1, 1, 2, 2, 0, 0])
test_close([_r["acc"], _r["nmi"], _r["ari"]], [1.0, 1.0, 1.0])
_r = clustering_scores([0, 0, 1, 1, 2, 2], [0] * 6)             # the degenerate all-one-cluster case
test_close([_r["acc"], _r["nmi"], _r["ari"]], [1 / 3, 0.0, 0.0])
assert "majority_acc" in clustering_scores([0, 1], [0, 2]) and "majority_acc" not in _r
test_eq(clustering_scores([0, 0, -1, 1, 1, -1], [1, 1, 0, 0, 0, 1]), clustering_scores([0, 0, 1, 1], [1, 1, 0, 0]))  # -1 left out

# %% [markdown]
# Invariance under relabelling, checked on a random clustering:

# %%
_rng = np.random.default_rng(0)
_yt, _yp = _rng.integers(0, 5, 300), _rng.integers(0, 5, 300)
_perm = _rng.permutation(5)
test_eq(clustering_scores(_yt, _yp), clustering_scores(_yt, _perm[_yp]))

# %%
#| export
def cluster_sizes(y_pred, # cluster indices, ints of shape (N,)
                  n_clusters:int, # number of clusters K
                 ) -> np.ndarray: # counts of shape (K,), zeros for empty clusters
    "How many samples each of the `n_clusters` clusters holds."
    return np.bincount(np.asarray(y_pred, dtype=np.int64).ravel(), minlength=n_clusters)

# %%
test_eq(cluster_sizes([0, 0, 2], 4), np.array([2, 0, 1, 0]))

# %% [markdown]
# ## Collapse
# The failure every clustering objective has to fight is **collapse**: one cluster takes most of the images, or most
# clusters end up empty. ACC alone hides it badly on balanced data — a model that puts everything into one
# cluster still scores 1/C. We flag it explicitly whenever a clustering is scored: a cluster holding more than half
# of the images, or more than half of the clusters empty.

# %%
#| export
COLLAPSE_SHARE = 0.5   # a cluster holding more than this share of the images flags collapse (so do > this share of empty clusters)

def collapse_warnings(sizes, # (K,) images per cluster
                      max_share:float=COLLAPSE_SHARE, # largest acceptable share of one cluster, and of empty clusters
                     ) -> list: # human-readable warnings; empty when the clustering looks healthy
    "Warnings for a cluster holding more than `max_share` of the images and for more than `max_share` of the clusters empty."
    sizes = np.asarray(sizes); n, out = sizes.sum(), []
    empty = np.flatnonzero(sizes == 0)
    if len(empty) > max_share * len(sizes):
        out.append(f"{len(empty)} of {len(sizes)} clusters are empty")
    big = int(sizes.argmax())
    if sizes[big] > max_share * n: out.append(f"cluster {big} holds {sizes[big] / n:.0%} of the images (over {max_share:.0%})")
    return out

# %%
test_eq(collapse_warnings([10, 10, 10]), [])
test_eq(collapse_warnings([0, 0, 30]), ["2 of 3 clusters are empty", "cluster 2 holds 100% of the images (over 50%)"])
test_eq(collapse_warnings([5, 0, 5, 5]), [])            # one empty cluster of four is not a collapse

# %% [markdown]
# What a trainer records at an evaluation: the scores of the argmax assignment and how the clusters are used.

# %%
#| export
def score_assignments(y_true, # (N,) class labels, -1 where unknown (left out of the scores; all -1: no scores)
                      probs:np.ndarray, # (N, K) soft assignments
                     ) -> dict: # acc, nmi, ari, empty_clusters, largest_cluster, cluster_sizes, collapsed, collapse
    "ACC/NMI/ARI of the argmax assignment (labelled images), cluster usage (all images), and whether the clustering has collapsed."
    pred = np.asarray(probs).argmax(1)
    sizes = cluster_sizes(pred, probs.shape[1])
    m = clustering_scores(y_true, pred) if (np.asarray(y_true) >= 0).any() else {}
    warn = collapse_warnings(sizes)
    return {**m, "empty_clusters": int((sizes == 0).sum()), "largest_cluster": float(sizes.max() / sizes.sum()),
            "cluster_sizes": sizes.tolist(), "collapsed": bool(warn), "collapse": warn}

# %%
_s = score_assignments(np.array([0, 0, 1, 1]), np.eye(2)[[0, 0, 1, 1]])
test_eq((_s["acc"], _s["collapsed"], _s["cluster_sizes"]), (1.0, False, [2, 2]))
_s = score_assignments(np.array([0, 0, 1, 1]), np.eye(3)[[2, 2, 2, 2]])
test_eq((_s["collapsed"], _s["largest_cluster"], _s["empty_clusters"]), (True, 1.0, 2))
_s = score_assignments(np.array([0, -1, 1, -1]), np.eye(2)[[0, 1, 1, 1]])           # scores on the two labelled images
test_eq((_s["acc"], _s["cluster_sizes"]), (1.0, [1, 3]))
test_eq(set(score_assignments(np.full(4, -1), np.eye(2)[[0, 1, 1, 1]])) & {"acc", "nmi", "ari"}, set())

# %% [markdown]
# ## Matched confusion matrix
# The contingency table with its columns put in the matched order — the picture of a clustering that every report
# shows. The diagonal holds the correctly clustered images.

# %%
#| export
def matched_confusion(y_true, # (N,) class labels, -1 where unknown (left out)
                      y_pred, # (N,) cluster indices
                      n_clusters:int, # K
                      return_order:bool=False, # also return the column order
                     ) -> np.ndarray: # (C, K) counts of the labelled images, classes × clusters in matched order
    "Confusion matrix (classes × clusters) with the clusters reordered by the Hungarian matching (matched ones first)."
    order, _ = match_clusters(y_true, y_pred, n_clusters)
    cm = contingency(y_true, y_pred)
    cm = np.pad(cm, ((0, len(order) - cm.shape[0]), (0, 0))).T[:, order]
    return (cm, order.tolist()) if return_order else cm

# %%
_cm = matched_confusion([0, 0, 1, 1, 2], [2, 2, 0, 1, 1], 4)
test_eq(_cm.shape, (3, 4)); test_eq(np.trace(_cm), 4)   # 2 + 1 + 1 correct after matching
test_eq(np.trace(matched_confusion(_yt, _yp, 5)), round(cluster_accuracy(_yt, _yp) * len(_yt)))
test_eq(matched_confusion([0, -1, 1, -1], [1, 0, 0, 2], 3), np.array([[1, 0, 0], [0, 1, 0]]))   # 2 labelled images; K = 3 columns

# %% [markdown]
# ## The k-means yardstick
# Every chapter measures a method against k-means: on the raw pixels (the baseline a deep method has to beat) and on
# the method's learned features (how much the representation knows beyond what its cluster head says).
# scikit-learn's k-means uses OpenMP threads; `sklearn_threads` caps them so they do not fight PyTorch's.

# %%
#| export
def sklearn_threads(n:int|None=None, # threads for scikit-learn (default: half the cores, at least 1)
                   ):
    "Context manager that caps the OpenMP/BLAS threads scikit-learn uses inside it."
    import os
    from threadpoolctl import threadpool_limits
    return threadpool_limits(n or max(1, (os.cpu_count() or 2) // 2))

def kmeans_fit(features, # (N, D) features (NumPy or torch)
               k:int, # number of clusters
               seed:int=0, # k-means seed
               n_init:int=10, # restarts; the lowest inertia wins
               l2:bool=True, # L2-normalise the features first
              ) -> tuple: # (labels (N,), centres (k, D) float32)
    "k-means (scikit-learn) on features: the labels and the centroids."
    from sklearn.cluster import KMeans
    x = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, dtype=np.float64)
    if l2: x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    if len(x) < k: raise ValueError(f"k-means into {k} clusters needs at least {k} points, got {len(x)}")
    with sklearn_threads():
        km = KMeans(k, n_init=n_init, random_state=seed).fit(x)
    return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32)

def kmeans_labels(features, k:int, seed:int=0, n_init:int=10, l2:bool=True) -> np.ndarray:
    "The labels of `kmeans_fit`."
    return kmeans_fit(features, k, seed, n_init, l2)[0]

def pixel_kmeans_scores(x, # (N, ...) uint8 images (NumPy or torch)
                        y_true, # (N,) class labels
                        k:int|None=None, # clusters (default: the number of classes)
                        seed:int=0, # k-means seed
                        n_init:int=10, # restarts
                       ) -> dict: # acc, nmi, ari
    "The baseline: k-means on the raw pixels scaled to [0, 1] (no normalisation), scored like any clustering."
    x = np.asarray(x.cpu() if hasattr(x, "cpu") else x, dtype=np.float64).reshape(len(x), -1) / 255
    y_true = np.asarray(y_true)
    return clustering_scores(y_true, kmeans_labels(x, k or int(y_true.max()) + 1, seed, n_init, l2=False))

# %%
_rng = np.random.default_rng(1)
_blobs = np.concatenate([_rng.normal(c, 0.1, (30, 2)) for c in ([0, 0], [3, 0], [0, 3])])
_lab, _cen = kmeans_fit(_blobs, 3, l2=False)
test_fail(lambda: kmeans_fit(_blobs[:2], 3), contains="needs at least 3 points")
test_eq(cluster_accuracy(np.repeat([0, 1, 2], 30), _lab), 1.0); test_eq(_cen.shape, (3, 2))
_pix = np.repeat(np.array([0, 255], dtype=np.uint8), 20)[:, None, None].repeat(4, 1)   # two kinds of 2×2 image
test_eq(pixel_kmeans_scores(_pix, np.repeat([0, 1], 20))["acc"], 1.0)

# %%
#| hide
import nbdev; nbdev.nbdev_export()
