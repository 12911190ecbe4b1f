# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data
# > Every benchmark of the course as one in-memory `uint8` tensor (digits, MNIST, USPS, CIFAR-10, CIFAR-100-20, STL-10 and its unlabelled split, ImageNet-10, ImageNet-Dogs, Tiny-ImageNet, any ImageFolder or `.npz`), loaded by name, with one-line errors that say which files to put where.

# %%
#| default_exp data

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import os, re, zipfile, difflib, warnings
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch
from deepcluster_nb.readers import (DatasetNotFound, BadDataset, _one_line, DATA_ENV, data_root, _gz, _extract,
                                    read_mnist, read_usps, read_cifar, read_stl10, CIFAR10_CLASSES, CIFAR100_SUPERCLASSES,
                                    STL10_CLASSES, IMAGENET_SUBSETS, image_folder_files, read_image_files, tiny_imagenet_files)

# %%
import tempfile, tarfile, tracemalloc
from urllib.error import URLError
from PIL import Image as _Image
import matplotlib.pyplot as plt

# %% [markdown]
# Deep-clustering benchmarks are small enough to live in memory as decoded `uint8` tensors (even on a GPU: ImageNet-Dogs
# at 256 px, the largest, is 3.8 GB). Keeping them as one tensor `x` of shape `(N, C, H, W)` lets an epoch be a
# permutation of indices and lets augmentation run batched on the same device (see `augment`). One small dataclass
# carries the images, the labels and the class names. A label of **−1 means unknown**, everywhere: such images are
# trained on but left out of ACC, NMI, ARI and the confusion matrix (chapter `01_metrics`).
#
# The benchmarks' file formats (MNIST's IDX files, USPS's LIBSVM text, CIFAR's pickled batches, STL-10's binaries,
# image folders) are parsed by small readers of our own, and ImageNet-10 and ImageNet-Dogs are built from ILSVRC-2012
# by `build_imagenet_subset`: both are in the appendix *The file readers* (`A7_readers`, module `readers`). This
# chapter only wraps what they return.

# %%
#| export
@dataclass
class ImageData:
    "Images as a uint8 tensor `x` (N, C, H, W), integer labels `y` (N,) (-1 where unknown) and class names."
    x: torch.Tensor
    y: np.ndarray
    classes: list
    name: str = ""

    def __post_init__(self):
        if self.x.dtype != torch.uint8 or self.x.ndim != 4:
            raise ValueError(f"ImageData.x must be a uint8 tensor (N, C, H, W), got {self.x.dtype} {tuple(self.x.shape)}")
        self.y = np.asarray(self.y, dtype=np.int64)
        if len(self.y) != len(self.x): raise ValueError(f"{len(self.x)} images but {len(self.y)} labels")
        if len(self.y) and self.y.min() < -1: raise ValueError(f"labels must be ≥ 0, or -1 for unknown; found {self.y.min()}")
    def __len__(self): return len(self.x)
    @property
    def n_classes(self): return len(self.classes)
    def subset(self, idx): return ImageData(self.x[torch.as_tensor(idx)], self.y[np.asarray(idx)], self.classes, self.name)
    def __repr__(self): return f"ImageData({self.name!r}, x={tuple(self.x.shape)}, classes={self.n_classes})"

# %%
_im = ImageData(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), [0, 1, -1], ["a", "b"], "toy")
test_eq((len(_im), _im.n_classes, _im.subset([2]).y.tolist()), (3, 2, [-1]))
test_fail(lambda: ImageData(torch.zeros(3, 1, 2, 2), [0, 1, 1], ["a"]), contains="uint8 tensor")
test_fail(lambda: ImageData(_im.x, [0, 1], ["a"]), contains="3 images but 2 labels")
test_fail(lambda: ImageData(_im.x, [0, 1, -2], ["a", "b"]), contains="or -1 for unknown; found -2")

# %% [markdown]
# A clustering benchmark has a split to train on and a split to evaluate on; for most papers of the course they are
# the same images (CIFAR and STL-10 merge train and test, the ImageNet subsets use train), which `ClusterData`
# records without copying. STL-10's 100,000 unlabelled images may be added as `extra`, for the instance-level
# losses only.

# %%
#| export
@dataclass
class ClusterData:
    "The training images, the evaluation images (often the same object), an optional unlabelled extra set, and K."
    train: ImageData
    eval: ImageData
    n_clusters: int
    name: str = ""
    extra: ImageData | None = None
    @property
    def image_shape(self): return tuple(self.train.x.shape[1:])
    def __repr__(self):
        same = " (same images)" if self.eval is self.train else f", eval={len(self.eval)}"
        return f"ClusterData({self.name!r}, K={self.n_clusters}, train={len(self.train)}{same}, image={self.image_shape})"

# %%
test_eq(repr(ClusterData(_im, _im, 2, "toy")), "ClusterData('toy', K=2, train=3 (same images), image=(1, 2, 2))")
test_eq(ClusterData(_im, _im, 2).extra, None)

# %% [markdown]
# ## The benchmarks by name
# Six benchmarks are the papers' (`PAPER_BENCHMARKS`); three small grey digit sets (`DIGIT_DATASETS`) let the whole
# course run on a CPU. Five come through torchvision's downloader (`TV_DATASETS`); the other three are image folders
# (`FOLDER_DATASETS`: the sub-folder of the data root and K). `NATIVE_SIZE` is the side of the square images kept in
# memory. For the ImageNet subsets we keep **256 px**: the papers that train them at 224 px (CC, Sec. 4.1.2) then
# crop real pixels, the way ImageNet models are usually fed (shorter side 256, 224 crop), instead of blowing up a
# 96 px thumbnail; the cost is memory (2.6 GB for ImageNet-10, 3.8 GB for ImageNet-Dogs). A method whose paper trains
# these subsets at 96 px (DCDC, TCC) asks for `image_size=96` and the images are downsampled from the 256 px squares
# (`image_size="native"` means 256 here). `FOLDER_PER_CLASS` is the number of training images in each class
# of the full benchmarks (13,000 = 10 × 1,300; 19,500 = 15 × 1,300; 100,000 = 200 × 500).

# %%
#| export
TV_DATASETS = ("mnist", "usps", "cifar10", "cifar100", "stl10")
FOLDER_DATASETS = {"imagenet10": ("imagenet10", 10), "imagenet_dogs": ("imagenet_dogs", 15),
                   "tiny_imagenet": ("tiny-imagenet-200/train", 200)}
DATASETS = ("digits",) + TV_DATASETS + tuple(FOLDER_DATASETS)
PAPER_BENCHMARKS = ("cifar10", "cifar100", "stl10", "imagenet10", "imagenet_dogs", "tiny_imagenet")  # the papers' six
DIGIT_DATASETS = ("digits", "mnist", "usps")  # small grey digits: CPU-sized models and the digits augmentation
NATIVE_SIZE = {"digits": 8, "mnist": 28, "usps": 16, "cifar10": 32, "cifar100": 32, "stl10": 96,
               "imagenet10": 256, "imagenet_dogs": 256, "tiny_imagenet": 64}
FOLDER_PER_CLASS = {"imagenet10": 1300, "imagenet_dogs": 1300, "tiny_imagenet": 500}

# %%
test_eq(set(NATIVE_SIZE), set(DATASETS)); test_eq(set(PAPER_BENCHMARKS) | set(DIGIT_DATASETS), set(DATASETS))
test_eq({k: FOLDER_PER_CLASS[k] * v[1] for k, v in FOLDER_DATASETS.items()},
        {"imagenet10": 13_000, "imagenet_dogs": 19_500, "tiny_imagenet": 100_000})

# %% [markdown]
# ## Where data lives, and what goes wrong
# The data root is, in order: the `data_root` argument, the environment variable `DEEPCLUSTER_DATA`, or the
# project's `data/` folder (`data_root`, defined in the readers' appendix, whose ImageNet builder writes into it too).
# torchvision downloads into it; every benchmark is looked up in it. A root that was **given** (argument or variable)
# must already be a folder: a mistyped path is refused at once, before anything is created in it or downloaded to it.
#
# Two things can go wrong with a dataset: it is not there (`DatasetNotFound`, a `FileNotFoundError`), or it is there
# but broken or of the wrong shape (`BadDataset`, a `ValueError`). Either way the message is one line that names the
# file and what to do. Here is what a user must put where, benchmark by benchmark: the folder under the data root, the
# files the readers open in it, and the archive that extracts to that folder (dropping the archive itself in the data
# root is enough: it is unpacked on first use).

# %%
show_doc(data_root)

# %%
#| export
BENCHMARK_FILES = {  # name: (folder under the data root, the files read from it, the archive that extracts to it)
    "mnist": ("MNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                            "t10k-labels-idx1-ubyte"), None),
    "usps": (".", ("usps.bz2", "usps.t.bz2"), None),
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",), "cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", ("train", "test"), "cifar-100-python.tar.gz"),
    "stl10": ("stl10_binary", ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"), "stl10_binary.tar.gz"),
    "tiny_imagenet": ("tiny-imagenet-200", ("wnids.txt", "train"), "tiny-imagenet-200.zip"),
}

def _expect(name, root, files=None) -> str:
    "Where benchmark `name`'s files go, in a few words."
    if name == "mnist": return f"the four IDX files {{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte (or the same .gz) in {root}/MNIST/raw/"
    if name == "usps": return f"usps.bz2 and usps.t.bz2 (USPS in LIBSVM format) in {root}/"
    if name in ("imagenet10", "imagenet_dogs"):
        return (f"{root}/{name}/<wnid>/<images>, one folder per WordNet id of {name.upper()}_WNIDS "
                f"(build_imagenet_subset({name!r}, <ILSVRC-2012 train>) makes it)")
    if name not in BENCHMARK_FILES: return f"{name}.npz (arrays x: uint8 images NHWC or NHW, y: integer labels) in {root}/"
    folder, need, archive = BENCHMARK_FILES[name]
    inside = "wnids.txt and train/<wnid>/images/*.JPEG" if name == "tiny_imagenet" else ", ".join(files or need)
    return f"{archive}, or the folder it extracts to ({folder}/ with {inside}), in {root}/"

def _missing(name, root, expect, err=None):
    "A one-line `DatasetNotFound`: which dataset, why it is missing (a reason or the download's error) and what to put where."
    why = "download=False" if err is None else err if isinstance(err, str) else f"the download failed: {_one_line(err)}"
    npz = f", or a compact copy {Path(root) / name}.npz" if name in DATASETS[1:] else ""
    return DatasetNotFound(f"Dataset {name!r} is not in {root} ({why}). Put {expect}{npz}; "
                           f"or point data_root=... or ${DATA_ENV} at a folder that has it.")

# %%
_e = _missing("cifar10", "/d", _expect("cifar10", "/d"))
print(_e)
assert "cifar-10-python.tar.gz" in str(_e) and "cifar-10-batches-py/" in str(_e) and "/d/cifar10.npz" in str(_e)
assert "\n" not in str(_e) and "(download=False)" in str(_e)
assert "(the download failed: URLError: <urlopen error no route>)" in str(_missing("usps", "/d", _expect("usps", "/d"), URLError("no route")))
test_eq(_expect("mnist_test", "/d"), "mnist_test.npz (arrays x: uint8 images NHWC or NHW, y: integer labels) in /d/")

# %% [markdown]
# In short, for every benchmark (the data root written `<data root>`):

# %%
for _n in DATASETS[1:]: print(f"{_n:>13}: {_expect(_n, '<data root>')}")

# %% [markdown]
# The check on a given root comes first in every load that reads from the data root:

# %%
#| export
def _given_root(root, # the data root, or None
                name:str, # the dataset about to be read from it
               ) -> Path:
    "The data root; a `DatasetNotFound` when a root given by argument or by `$DEEPCLUSTER_DATA` is not a folder."
    path, how = data_root(root), "data_root=..." if root else f"${DATA_ENV}" if os.environ.get(DATA_ENV) else None
    if how and not path.is_dir():
        a = path.absolute()
        npz = f", or a compact copy {a}/{name}.npz" if name in DATASETS[1:] else ""
        raise DatasetNotFound(f"The data root {a} (from {how}) {'is not a folder' if path.exists() else 'does not exist'}; "
                              f"nothing was created or downloaded. Create it and put {_expect(name, a)}{npz}; or correct the path.")
    return path

# %%
with tempfile.TemporaryDirectory() as _t:
    test_eq(_given_root(_t, "usps"), Path(_t))
    test_fail(lambda: _given_root(f"{_t}/typo", "usps"), contains=f"{_t}/typo (from data_root=...) does not exist; nothing was created")
    test_fail(lambda: _given_root(f"{_t}/typo", "usps"), contains=f"usps.bz2 and usps.t.bz2 (USPS in LIBSVM format) in {_t}/typo/")
    assert not Path(f"{_t}/typo").exists()

# %% [markdown]
# ## The offline default: scikit-learn's digits
# 1,797 grey 8×8 images of handwritten digits with 17 grey levels (0–16), shipped inside scikit-learn, so the whole
# course runs with no download. We rescale the levels to 0–255.

# %%
#| export
DIGIT_CLASSES = [str(i) for i in range(10)]

def load_digits_data() -> ImageData:
    "scikit-learn's 1,797 handwritten 8×8 digits as uint8 (N, 1, 8, 8)."
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    return ImageData(torch.from_numpy(x), d.target, DIGIT_CLASSES, "digits")

# %%
_d = load_digits_data()
test_eq(tuple(_d.x.shape), (1797, 1, 8, 8)); test_eq(_d.n_classes, 10); test_eq(int(_d.x.max()), 255)

# %% [markdown]
# ## `.npz` files
# Any `.npz` with `x` (uint8, NHWC or NHW), `y` and optionally `classes` and `split` is a dataset; a file `NAME.npz` in
# the data root is also reachable by its `NAME`. Only those four members are ever decompressed (an `.npz` is a zip
# archive, and `np.load` reads a member only when it is asked for), so a file may carry other, large arrays at no cost.
# Everything is checked before a tensor is made, and each fault is reported with the file's name: not a zip archive
# (or a truncated one), a missing array, a wrong dtype or shape, as many labels as images, and the labels themselves:
# integers from 0, or −1 for unknown, numbering at most as many classes as there are images (one stray label of
# 10⁹ would otherwise make a billion class names).
#
# **Images must be square.** Every augmentation and backbone of the course works on square images; an 8 × 16 image
# would be stretched to 16 × 16 by the first resize, distorting every stroke, and cropping or padding it instead
# changes what is learned. Which of the three is right depends on the data, so the loader refuses and says so, rather
# than pick one silently. (Image folders are different: photographs of any shape are cut to their centre square, the
# benchmarks' convention.)

# %%
#| export
NPZ_MEMBERS = ("x", "y", "classes", "split")   # the only members of a dataset .npz that are ever read

def _read_npz(path) -> tuple:
    "The members `NPZ_MEMBERS` that an `.npz` holds, and the names of all its members; a `BadDataset` when it is unreadable."
    path = Path(path)
    if not path.exists(): raise DatasetNotFound(f"No such .npz file: {path}")
    with open(path, "rb") as f: head = f.read(6)
    if head == b"\x93NUMPY": err = "a single .npy array (np.save), not an .npz archive (np.savez)"
    elif not zipfile.is_zipfile(path): err = "not a zip archive, or one cut short"
    else:
        try:
            with np.load(path, allow_pickle=False) as d: return {k: d[k] for k in NPZ_MEMBERS if k in d.files}, list(d.files)
        except Exception as e: err = _one_line(e)   # a damaged member (BadZipFile: Bad CRC-32, zlib.error), object arrays, ...
    raise BadDataset(f"{path} is not a readable .npz file ({err}); write one with np.savez(path, x=..., y=...)") from None

def _npz_classes(path, y, n, classes) -> list:
    "The class names of an `.npz` dataset: its `classes`, or 0 … max(y); labels checked against them and against the `n` images."
    if (y < -1).any(): raise BadDataset(f"{path}: labels in y must be ≥ 0 (or -1 for unknown), found {int(y.min())}")
    k = int(y.max()) + 1
    if classes is None:
        if k > n: raise BadDataset(f"{path}: y has labels up to {k - 1:,} but x holds only {n:,} images; number the classes "
                                   f"0, 1, ... (e.g. np.unique(y, return_inverse=True)[1]) or save their names as classes")
        if k == 0: raise BadDataset(f"{path}: every label in y is -1 (unknown); save the class names as classes=[...] so that K is known")
        return [str(i) for i in range(k)]
    if classes.ndim != 1: raise BadDataset(f"{path}: classes must be a 1-D array of names, got shape {classes.shape}")
    if len(classes) < k: raise BadDataset(f"{path}: y has labels up to {k - 1:,} but classes names only {len(classes)}")
    if len(classes) > n: raise BadDataset(f"{path}: classes names {len(classes):,} classes but x holds only {n:,} images")
    return [str(c) for c in classes]

def _npz_arrays(path, a, names) -> tuple:
    "Check an `.npz` dataset's arrays: `x` uint8 NHW or NHWC (C = 1 or 3) of square images, `y` integers, one per image."
    for k in ("x", "y"):
        if k not in a: raise BadDataset(f"{path} has no array {k!r} (it has {sorted(names)}); a dataset .npz holds x "
                                        f"(uint8 images, NHWC or NHW) and y (integer labels)")
    x, y = a["x"], a["y"]
    if x.dtype != np.uint8:
        raise BadDataset(f"{path}: x must be uint8 (0–255), got {x.dtype}; for floats in [0, 1] save np.round(x * 255).astype(np.uint8)")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)) or len(x) == 0:
        hint = " (channels first? save x.transpose(0, 2, 3, 1))" if x.ndim == 4 and x.shape[1] in (1, 3) else ""
        raise BadDataset(f"{path}: x must be a non-empty NHW (grey) or NHWC (C = 1 or 3) array, got shape {x.shape}{hint}")
    if x.shape[1] != x.shape[2]:
        raise BadDataset(f"{path}: x holds {x.shape[1]}×{x.shape[2]} images (height × width), but the course's models and "
                         f"augmentations take square images: crop or pad them to squares before saving (resizing would distort them)")
    if y.ndim != 1 or y.dtype.kind not in "iu": raise BadDataset(f"{path}: y must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) != len(x): raise BadDataset(f"{path}: {len(x)} images in x but {len(y)} labels in y")
    classes = _npz_classes(path, y, len(x), a.get("classes"))
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), y.astype(np.int64), classes

def load_npz(path) -> ImageData:
    "A dataset from an `.npz` holding `x` (uint8 NHWC or NHW), `y` and optionally `classes`."
    x, y, classes = _npz_arrays(path, *_read_npz(path))
    return ImageData(torch.from_numpy(x), y, classes, Path(path).stem)

# %%
with tempfile.TemporaryDirectory() as _t:
    _p = Path(_t) / "toy.npz"
    np.savez(_p, x=np.zeros((4, 5, 5, 3), np.uint8), y=np.array([0, 1, 1, -1]), classes=np.array(["a", "b"]))
    _toy = load_npz(_p)
    test_eq((tuple(_toy.x.shape), _toy.classes, _toy.y.tolist()), ((4, 3, 5, 5), ["a", "b"], [0, 1, 1, -1]))
    _p.write_bytes(_p.read_bytes()[:100])                                       # cut short
    test_fail(lambda: load_npz(_p), contains=f"{_p} is not a readable .npz file (not a zip archive, or one cut short)")
    np.savez(_p, x=np.zeros((4, 3, 6, 6), np.uint8), y=np.zeros(3, int))
    test_fail(lambda: load_npz(_p), contains="channels first? save x.transpose(0, 2, 3, 1)")
    np.savez(_p, x=np.zeros((4, 8, 16), np.uint8), y=np.zeros(4, int))
    test_fail(lambda: load_npz(_p), contains="x holds 8×16 images (height × width), but the course's models")
    np.savez(_p, x=np.zeros((4, 6, 6), np.uint8), y=np.array([0, 1, 1, 10**9]))
    test_fail(lambda: load_npz(_p), contains="y has labels up to 1,000,000,000 but x holds only 4 images")
    np.savez(_p, x=np.zeros((4, 6, 6), np.uint8), y=np.zeros(4, int), notes=np.zeros(10**6), meta=np.array([{}]))
    test_eq(len(load_npz(_p)), 4)                 # unused members, even an object array np.load would refuse, are never read
    tracemalloc.start(); load_npz(_p); _peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    assert _peak < 10**6, _peak                   # the 8 MB `notes` member stayed compressed on disk
test_fail(lambda: load_npz("/nonexistent/file.npz"), contains="No such .npz")

# %% [markdown]
# An `.npz` may also carry a `split` array (0 = original training image, 1 = original test image), as the compact USPS
# copy does; then the train-test protocol can train on one part and evaluate on the other. A file named after a
# benchmark (`usps.npz`, `cifar10.npz`, `imagenet10.npz`, ...) in the data root stands in for that benchmark's files,
# and the run keeps the benchmark's name, so the methods' settings for it apply.

# %%
#| export
def load_npz_dataset(path, # an .npz file: x, y, optionally classes and split (0 = train, 1 = test)
                     name:str|None=None, # the dataset's name (default: the file's stem)
                     protocol:str="paper", # "paper": every image; "train-test": split 0 trains, split 1 evaluates
                    ) -> ClusterData:
    "An `.npz` file as a clustering dataset, using its optional `split` array for the train-test protocol."
    a, names = _read_npz(path)
    x, y, classes = _npz_arrays(path, a, names)
    d = ImageData(torch.from_numpy(x), y, classes, name or Path(path).stem)
    if protocol != "train-test": return ClusterData(d, d, d.n_classes, d.name)
    split = a.get("split")
    if split is None:
        warnings.warn(f"{path} has no 'split' array (0 = train, 1 = test): training and evaluating on all images")
        return ClusterData(d, d, d.n_classes, d.name)
    if split.shape != d.y.shape or not np.isin(split, (0, 1)).all():
        raise BadDataset(f"{path}: 'split' must hold 0 (train) or 1 (test) per image, got {split.dtype} {split.shape}")
    tr, te = (ImageData(d.x[torch.from_numpy(split == s)], d.y[split == s], d.classes, d.name) for s in (0, 1))
    return ClusterData(tr, te, d.n_classes, d.name)

# %%
show_doc(load_npz_dataset)

# %%
with tempfile.TemporaryDirectory() as _t:
    _p = Path(_t) / "toy.npz"
    np.savez(_p, x=np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2), y=np.array([0, 1, 1, 0, 1]), split=np.array([0, 0, 1, 0, 1]))
    _all, _tt = load_npz_dataset(_p, "usps"), load_npz_dataset(_p, "usps", "train-test")
    test_eq((len(_all.train), _all.eval is _all.train, _all.name), (5, True, "usps"))
    test_eq((_tt.train.y.tolist(), _tt.eval.y.tolist()), ([0, 1, 0], [1, 1]))
    test_eq(_tt.eval.x[0, 0].flatten().tolist(), [8, 9, 10, 11])                   # image 2 is the first test image
    np.savez(_p, x=np.zeros((3, 2, 2), np.uint8), y=np.array([0, 1, 1]), split=np.array([0, 2, 1]))
    test_fail(lambda: load_npz_dataset(_p, protocol="train-test"), contains="'split' must hold 0 (train) or 1 (test)")

# %% [markdown]
# ## The benchmarks' files
# With network access, a benchmark's first use calls torchvision's downloader once (it verifies the archive's checksum
# and extracts it into the data root); offline, the files (or just the archive) in the data root are enough. Either
# way the readers of the appendix parse the files, not torchvision's dataset classes (the appendix says why).

# %%
#| export
def _download(name, root):
    "Fetch benchmark `name` into `root` with torchvision's downloader (MD5-checked, then extracted)."
    import torchvision.datasets as tvd
    r = str(root)
    if name == "mnist": tvd.MNIST(r, download=True)
    elif name == "usps":
        for train in (True, False): tvd.USPS(r, train=train, download=True)
    elif name == "cifar10": tvd.CIFAR10(r, download=True)
    elif name == "cifar100": tvd.CIFAR100(r, download=True)
    elif name == "stl10": tvd.STL10(r, split="test", download=True)
    else: raise KeyError(name)

def _locate(name, root, download=True, files=None) -> Path:
    "The folder of `name`'s files in `root`: already there, extracted from its archive, or downloaded; else one clear error."
    sub, need, archive = BENCHMARK_FILES[name]
    folder, need = root / sub, files or need
    have = lambda: all(_gz(folder / f).exists() for f in need)
    if have(): return folder
    if archive and (root / archive).exists():
        _extract(root / archive, root)
        if have(): return folder
        raise BadDataset(f"{root / archive} was extracted but {folder} still lacks {', '.join(f for f in need if not _gz(folder / f).exists())}")
    err = None if download else "download=False"
    if name not in TV_DATASETS: err = "torchvision cannot download it"
    elif download:
        try: _download(name, root)
        except Exception as e: err = e
        if err is None and have(): return folder
        err = err or f"downloaded, but {folder} still lacks some of {', '.join(need)}"
    raise _missing(name, root, _expect(name, root, files), err) from None

# %%
with tempfile.TemporaryDirectory() as _t:
    _r = Path(_t)
    test_fail(lambda: _locate("cifar100", _r, download=False), contains="cifar-100-python.tar.gz, or the folder it extracts to")
    (_r / "pack" / "cifar-100-python").mkdir(parents=True)
    for _f in ("train", "test"): (_r / "pack" / "cifar-100-python" / _f).write_bytes(b"")
    with tarfile.open(_r / "cifar-100-python.tar.gz", "w:gz") as _tf: _tf.add(_r / "pack" / "cifar-100-python", "cifar-100-python")
    test_eq(_locate("cifar100", _r, download=False), _r / "cifar-100-python")    # the archive alone is enough
    test_fail(lambda: _locate("tiny_imagenet", _r), contains="(torchvision cannot download it)")

# %% [markdown]
# One split of a torchvision benchmark, by name: locate (or fetch) the files, read them, and name the classes.

# %%
#| export
def _tv_split(name, root, split, download=True) -> ImageData:
    "Split `split` of torchvision benchmark `name` from the data root `root`."
    folder = _locate(name, Path(root), download, ("unlabeled_X.bin",) if split == "unlabeled" else None)
    if name == "mnist": (x, y), classes, tag = read_mnist(folder, split), DIGIT_CLASSES, name
    elif name == "usps": (x, y), classes, tag = read_usps(folder / ("usps.bz2" if split == "train" else "usps.t.bz2")), DIGIT_CLASSES, name
    elif name == "cifar10": (x, y), classes, tag = read_cifar(folder, split, name), CIFAR10_CLASSES, name
    elif name == "cifar100": (x, y), classes, tag = read_cifar(folder, split, name), CIFAR100_SUPERCLASSES, "cifar100-20"
    elif name == "stl10": (x, y), classes, tag = read_stl10(folder, split), STL10_CLASSES, "stl10-unlabeled" if split == "unlabeled" else name
    else: raise KeyError(name)
    return ImageData(torch.from_numpy(x), y, list(classes), tag)

# %%
with tempfile.TemporaryDirectory() as _t:
    test_fail(lambda: _tv_split("stl10", _t, "unlabeled", download=False), contains="stl10_binary/ with unlabeled_X.bin")
    test_fail(lambda: _tv_split("mnist", _t, "train", download=False), contains=f"{_t}/MNIST/raw/")

# %% [markdown]
# ## Image folders
# ImageNet-10, ImageNet-Dogs, Tiny-ImageNet and any custom folder `root/<class>/<images>` are decoded once into squares
# of `size` pixels and cached in `<data root>/cache/` (the appendix's `read_image_files`). A folder benchmark whose
# classes do not hold the full benchmark's images loads, with a warning: its scores are not the papers'.

# %%
#| export
def _decoded(pairs, classes, size, cache_dir=None, progress=True, name="") -> ImageData:
    "The images of `(file, label)` pairs, decoded into `size`×`size` RGB squares (through the cache when given)."
    x = read_image_files(pairs, classes, size, cache_dir, progress, name)
    return ImageData(torch.from_numpy(x), [c for _, c in pairs], list(classes), name)

def load_image_folder(path, # folder with one sub-folder of images per class (searched recursively)
                      size:int=96, # side of the square images kept in memory
                      cache_dir=None, # where to cache the decoded tensor; None = no cache
                      progress:bool=True, # show a progress bar while decoding
                      classes=None, # the class folders it must hold, exactly (default: every sub-folder)
                     ) -> ImageData:
    "Decode an ImageFolder-style directory into a uint8 tensor of `size`×`size` RGB images (cached)."
    classes, pairs = image_folder_files(path, classes)
    return _decoded(pairs, classes, size, cache_dir, progress, Path(path).name)

def _check_counts(name, folder, classes, pairs):
    "Warn when a folder benchmark's classes do not hold the full benchmark's number of images."
    n = np.bincount([c for _, c in pairs], minlength=len(classes))
    off = np.flatnonzero(n != FOLDER_PER_CLASS[name])
    if len(off): warnings.warn(f"{folder}: {len(off)} of its {len(classes)} classes do not hold the benchmark's {FOLDER_PER_CLASS[name]} "
                               f"images (e.g. {classes[off[0]]}: {n[off[0]]}); {len(pairs)} images in all instead of "
                               f"{len(classes) * FOLDER_PER_CLASS[name]:,}: scores are not comparable with the papers'")

def _folder_benchmark(name, root, size, protocol, progress=True) -> ClusterData:
    "ImageNet-10, ImageNet-Dogs or Tiny-ImageNet from the data root."
    if name == "tiny_imagenet":
        folder = _locate(name, root, download=False)
        classes, pairs = tiny_imagenet_files(folder)
    else:
        folder = root / FOLDER_DATASETS[name][0]
        if not folder.is_dir(): raise _missing(name, root, _expect(name, root), "it cannot be downloaded") from None
        classes, pairs = image_folder_files(folder, IMAGENET_SUBSETS[name])
    _check_counts(name, folder / "train" if name == "tiny_imagenet" else folder, classes, pairs)
    d = _decoded(pairs, classes, size, root / "cache", progress, name)
    if protocol != "train-test": return ClusterData(d, d, len(classes), name)
    if name != "tiny_imagenet":   # the ImageNet subsets have no test split
        warnings.warn(f"{name} has no test split: training and evaluating on the same images"); return ClusterData(d, d, len(classes), name)
    val = _decoded(tiny_imagenet_files(folder, "val")[1], classes, size, root / "cache", progress, "tiny_imagenet_val")
    return ClusterData(d, val, len(classes), name)

# %%
with tempfile.TemporaryDirectory() as _t:
    for _c, _col in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
        (Path(_t) / "imgs" / _c).mkdir(parents=True)
        for _i in range(2): _Image.new("RGB", (40, 30), _col).save(Path(_t) / "imgs" / _c / f"{_i}.png")
    _f = load_image_folder(Path(_t) / "imgs", size=16, progress=False)
    test_fail(lambda: _folder_benchmark("imagenet10", Path(_t), 16, "paper"), contains="build_imagenet_subset('imagenet10'")
test_eq((tuple(_f.x.shape), _f.classes, _f.y.tolist(), _f.x[0, :, 0, 0].tolist()), ((4, 3, 16, 16), ["blue", "red"], [0, 0, 1, 1], [0, 0, 255]))

# %% [markdown]
# ## Loading a benchmark
# The splits follow the papers: CIFAR-10, CIFAR-100-20 and STL-10 cluster the union of train and test (13,000 images
# for STL-10), MNIST and USPS likewise; the ImageNet subsets and Tiny-ImageNet use their training images.
# `protocol="train-test"` trains on the train split and evaluates on the test split (CRLC's protocol; Tiny-ImageNet's
# validation images serve as its test split; the ImageNet subsets have none, so there a warning says that training and
# evaluation share the images).
#
# `stl10_unlabeled=True` also reads STL-10's 100,000 unlabelled images into `ClusterData.extra` (labels -1). CC trains
# its instance-level head on them as well (Sec. 4.1.1; its code runs, each epoch, a pass of the instance loss alone over
# the unlabelled images, then a pass of both losses over the 13,000 labelled ones); they are never evaluated. They
# come from `stl10_binary/unlabeled_X.bin`, even when a compact `stl10.npz` stands in for the labelled images.
#
# A name that is not a benchmark is looked up as `<data root>/NAME.npz`; when that file is missing the error is a
# `DatasetNotFound` too (chapters that skip absent data catch it), and a benchmark's split such as `mnist_test` says
# which file makes it. A path is an `.npz` file or an image folder; a `.npy` file gets its own hint.

# %%
#| export
def _benchmark(name, root, protocol, download, folder_size, stl10_unlabeled) -> ClusterData:
    "Benchmark `name` from the data root: its compact `.npz` copy when there is one, else its own files."
    extra = _tv_split("stl10", root, "unlabeled", download) if stl10_unlabeled else None
    if (root / f"{name}.npz").exists():   # a compact copy stands in for the benchmark's files
        cd = load_npz_dataset(root / f"{name}.npz", name, protocol); cd.extra = extra; return cd
    if name in FOLDER_DATASETS: return _folder_benchmark(name, root, folder_size or NATIVE_SIZE[name], protocol)
    tr, te = _tv_split(name, root, "train", download), _tv_split(name, root, "test", download)
    if protocol == "train-test": return ClusterData(tr, te, te.n_classes, tr.name, extra)
    d = _concat(tr, te); return ClusterData(d, d, d.n_classes, d.name, extra)

def _concat(a: ImageData, b: ImageData) -> ImageData:
    return ImageData(torch.cat([a.x, b.x]), np.concatenate([a.y, b.y]), a.classes, a.name)

def _not_a_dataset(name, p:Path, root:Path) -> Exception:
    "The error for a name or path that is no dataset: `DatasetNotFound` when it could be one that is missing."
    if p.suffix == ".npy":
        return (BadDataset if p.exists() else DatasetNotFound)(f"{p} is a .npy file, which holds one array; a dataset is an .npz "
            f"archive with the images and the labels: np.savez({str(p.with_suffix('.npz'))!r}, x=images, y=labels)")
    if len(p.parts) > 1 or p.suffix:
        if p.exists(): return BadDataset(f"{p} is neither an .npz file nor a folder of class sub-folders of images")
        return DatasetNotFound(f"No such file or folder: {p} (a dataset given by path is an .npz file or an ImageFolder directory)")
    m = re.fullmatch(r"(.+)_(train|test)", name)
    if m and m[1] in DATASETS:
        return DatasetNotFound(f"Dataset {name!r} (the {m[2]} split of {m[1]}) is not in {root}: put {_expect(name, root)}, "
                               f"e.g. written with np.savez; or point data_root=... or ${DATA_ENV} at a folder that has it.")
    near = difflib.get_close_matches(name, list(DATASETS) + sorted(f.stem for f in root.glob("*.npz")), 1)
    return DatasetNotFound(f"Unknown dataset {name!r}. Valid names: {', '.join(DATASETS)}; or a path to an .npz file or an "
                           f"ImageFolder directory; or NAME for a file NAME.npz in the data root ({root / name}.npz is not there)"
                           + (f"; did you mean {near[0]!r}?" if near else "."))

def load_dataset(name:str="digits", # a name in `DATASETS`, a path to an `.npz` file or an ImageFolder, or NAME of NAME.npz in the data root
                 root=None, # data root (default `$DEEPCLUSTER_DATA` or `data/`); one that is given must exist
                 protocol:str="paper", # "paper": train and evaluate on the paper's split(s); "train-test": train on train, evaluate on test
                 download:bool=True, # let torchvision download missing files
                 folder_size:int|None=None, # pixels kept for ImageFolder datasets (default `NATIVE_SIZE`, 96 for other folders)
                 stl10_unlabeled:bool=False, # STL-10 only: also load its 100,000 unlabelled images as `extra`
                ) -> ClusterData:
    "Load a clustering benchmark by name (or path) into memory."
    if protocol not in ("paper", "train-test"): raise ValueError(f"protocol must be 'paper' or 'train-test', got {protocol!r}")
    if stl10_unlabeled and name != "stl10": raise ValueError(f"stl10_unlabeled=True is for 'stl10' only, not {name!r}")
    if name == "digits": d = load_digits_data(); return ClusterData(d, d, 10, "digits")
    if name in DATASETS: return _benchmark(name, _given_root(root, name), protocol, download, folder_size, stl10_unlabeled)
    p, r = Path(str(name)).expanduser(), data_root(root)
    bare = len(p.parts) == 1 and not p.suffix
    if p.suffix == ".npz": return load_npz_dataset(p, None, protocol)
    if bare and (r / f"{name}.npz").exists(): return load_npz_dataset(r / f"{name}.npz", None, protocol)
    if p.is_dir():
        cache = r / "cache" if r.is_dir() or not (root or os.environ.get(DATA_ENV)) else None   # never create a mistyped root
        d = load_image_folder(p, folder_size or 96, cache); return ClusterData(d, d, d.n_classes, d.name)
    if bare: _given_root(root, name)
    raise _not_a_dataset(name, p, r) from None

# %%
show_doc(load_dataset)

# %%
_cd = load_dataset("digits")
print(_cd)
assert _cd.eval is _cd.train
test_fail(lambda: load_dataset("cifar11"), contains="Valid names: digits, mnist")
test_fail(lambda: load_dataset("cifar11"), contains="did you mean 'cifar10'?")
test_fail(lambda: load_dataset("cifar10", stl10_unlabeled=True), contains="for 'stl10' only")
with tempfile.TemporaryDirectory() as _t:
    try: load_dataset("mnist_test", _t)
    except DatasetNotFound as e: _err = e
    print(_err); assert f"put mnist_test.npz (arrays x: uint8 images NHWC or NHW, y: integer labels) in {_t}/" in str(_err)
    np.save(Path(_t) / "x.npy", np.zeros(3))
    test_fail(lambda: load_dataset(f"{_t}/x.npy"), contains="is a .npy file, which holds one array; a dataset is an .npz")
    test_fail(lambda: load_dataset("usps", f"{_t}/typo"), contains="does not exist; nothing was created")
    assert not Path(f"{_t}/typo").exists()

# %% [markdown]
# Offline, a missing benchmark fails at once with one line that names the archive (or files) and where they go:

# %%
with tempfile.TemporaryDirectory() as _t:
    for _n, _file in [("cifar10", "cifar-10-python.tar.gz"), ("cifar100", "cifar-100-python.tar.gz"), ("stl10", "stl10_binary.tar.gz"),
                      ("mnist", "t10k}-{images-idx3,labels-idx1}-ubyte"), ("usps", "usps.bz2 and usps.t.bz2"),
                      ("imagenet10", "build_imagenet_subset('imagenet10'"), ("tiny_imagenet", "tiny-imagenet-200.zip")]:
        try: load_dataset(_n, root=_t, download=False)
        except DatasetNotFound as e: _err = e
        else: raise AssertionError(f"{_n}: expected DatasetNotFound")
        assert _file in str(_err) and "\n" not in str(_err), _n
        assert _err.__cause__ is None and (_err.__context__ is None or _err.__suppress_context__), _n
    print(_err)

# %% [markdown]
# A miniature STL-10 in its real layout (two labelled images per split, three unlabelled ones): the 13,000-image
# "paper" split is train + test; the unlabelled file is needed only when asked for.

# %%
with tempfile.TemporaryDirectory() as _t:
    _b = Path(_t) / "stl10_binary"; _b.mkdir()
    for _s, _n in (("train", 2), ("test", 2), ("unlabeled", 3)):
        (_b / f"{_s}_X.bin").write_bytes(np.full((_n, 3, 96, 96), len(_s), np.uint8).tobytes())
        if _s != "unlabeled": (_b / f"{_s}_y.bin").write_bytes(bytes([1, 10]))
    _st = load_dataset("stl10", _t, download=False, stl10_unlabeled=True)
    test_eq((len(_st.train), len(_st.extra), _st.extra.y.tolist(), _st.train.y.tolist()), (4, 3, [-1] * 3, [0, 9, 0, 9]))
    test_eq((_st.name, _st.extra.name, _st.train.classes[2]), ("stl10", "stl10-unlabeled", "car"))
    (_b / "unlabeled_X.bin").unlink()
    test_eq(len(load_dataset("stl10", _t, download=False).train), 4)                  # no unlabelled file needed
    test_fail(lambda: load_dataset("stl10", _t, download=False, stl10_unlabeled=True), contains="unlabeled_X.bin")

# %% [markdown]
# The real-data `.npz` copies (CIFAR-10 test, MNIST test, USPS) are loaded when the data root holds them:

# %%
if (data_root() / "usps.npz").exists():
    _u = load_dataset(str(data_root() / "usps.npz"))
    test_eq(len(_u.train), 9298); test_eq(_u.n_clusters, 10)
    _u = load_dataset("usps", protocol="train-test")            # by the benchmark's name, original splits
    test_eq((len(_u.train), len(_u.eval), _u.name), (7291, 2007, "usps"))
if (data_root() / "mnist_test.npz").exists():
    _mn = load_dataset("mnist_test")
    test_eq((tuple(_mn.train.x.shape), _mn.train.y[:10].tolist()), ((10000, 1, 28, 28), [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]))

# %% [markdown]
# A look at the default dataset:

# %%
fig, axs = plt.subplots(2, 10, figsize=(10, 2.2))
for c in range(10):
    for r, i in enumerate(np.flatnonzero(_cd.train.y == c)[:2]):
        axs[r, c].imshow(_cd.train.x[i, 0], cmap="gray_r"); axs[r, c].axis("off")
    axs[0, c].set_title(_cd.train.classes[c])
plt.suptitle("scikit-learn digits (8×8)"); plt.tight_layout(); plt.show()

# %%
#| hide
import nbdev; nbdev.nbdev_export()
