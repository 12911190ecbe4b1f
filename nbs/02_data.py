# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data
# > Every benchmark of the course as one in-memory `uint8` tensor (digits, MNIST, USPS, CIFAR-10, CIFAR-100-20, STL-10 and its unlabelled split, ImageNet-10, ImageNet-Dogs, Tiny-ImageNet, any ImageFolder or `.npz`), read by small parsers of the real file formats that name any missing or broken file in one line.

# %%
#| default_exp data

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import os, re, io, bz2, gzip, pickle, zipfile, tarfile, shutil, hashlib, warnings, contextlib
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch

# %%
import tempfile, struct
from urllib.error import URLError
from PIL import Image as _Image
import matplotlib.pyplot as plt

# %% [markdown]
# Deep-clustering benchmarks are small enough to live in memory as decoded `uint8` tensors (even on a GPU: ImageNet-Dogs
# at 256 px, the largest, is 3.8 GB). Keeping them as one tensor `x` of shape `(N, C, H, W)` lets an epoch be a
# permutation of indices and lets augmentation run batched on the same device (see `augment`). One small dataclass
# carries the images, the labels and the class names.

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
# ## Where data lives
# The data root is, in order: the `data_root` argument, the environment variable `DEEPCLUSTER_DATA`, or the
# project's `data/` folder. torchvision downloads into it; every benchmark is looked up in it.

# %%
#| export
DATA_ENV = "DEEPCLUSTER_DATA"

def data_root(root=None) -> Path:
    "The data root: `root` if given, else `$DEEPCLUSTER_DATA`, else the project's `data/` folder."
    if root: return Path(root).expanduser()
    if os.environ.get(DATA_ENV): return Path(os.environ[DATA_ENV]).expanduser()
    start = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    for p in (start, *start.parents):  # the project's data/ when run from a checkout
        if (p / "settings.ini").exists() and (p / "deepcluster_nb").is_dir(): return p / "data"
    return Path.cwd() / "data"

# %%
test_eq(data_root("/tmp/x"), Path("/tmp/x"))
test_eq(data_root("~/d"), Path.home() / "d")

# %% [markdown]
# Two things can go wrong with a dataset: it is not there (`DatasetNotFound`, a `FileNotFoundError`), or it is there
# but broken or of the wrong shape (`BadDataset`, a `ValueError`). Either way the message is **one line** that names
# the file and what to do, and it is raised `from None`: the low-level error (a `BadZipFile`, a `URLError`) is quoted
# in the sentence, not chained below it as a second traceback.

# %%
#| export
class DatasetNotFound(FileNotFoundError):
    "Raised when a dataset is neither on disk nor downloadable; the one-line message says which files to put where."

class BadDataset(ValueError):
    "Raised when a dataset's file is there but unreadable or malformed; the one-line message names the file and the fault."

def _one_line(err) -> str:
    "An exception as `Type: message` on one short line."
    return " ".join(f"{type(err).__name__}: {err}".split())[:300]

# %%
test_eq(_one_line(OSError("a\nb")), "OSError: a b")
assert issubclass(DatasetNotFound, FileNotFoundError) and issubclass(BadDataset, ValueError)

# %% [markdown]
# What a user must put where, benchmark by benchmark: the folder under the data root, the files our readers open in
# it, and the archive that extracts to that folder (dropping the archive itself in the data root is enough: it is
# unpacked on first use, members confined to the data root).

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

# %% [markdown]
# In short, for every benchmark (the data root written `<data root>`):

# %%
for _n in DATASETS[1:]: print(f"{_n:>13}: {_expect(_n, '<data root>')}")

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
# Any `.npz` with `x` (uint8, NHWC or NHW), `y` and optionally `classes` is a dataset; a file `NAME.npz` in the data
# root is also reachable by its `NAME`. Everything about the arrays is checked before a tensor is made, and each
# fault is reported with the file's name: not a zip archive (or a truncated one), a missing array, a wrong dtype or
# shape, as many labels as images.

# %%
#| export
def _read_npz(path) -> dict:
    "Every array of an `.npz` file; a `BadDataset` naming the file when it is not a readable `.npz`."
    path = Path(path)
    if not path.exists(): raise DatasetNotFound(f"No such .npz file: {path}")
    with open(path, "rb") as f: head = f.read(6)
    if head == b"\x93NUMPY": err = "a single .npy array (np.save), not an .npz archive (np.savez)"
    elif not zipfile.is_zipfile(path): err = "not a zip archive, or one cut short"
    else:
        try:
            with np.load(path, allow_pickle=False) as d: return {k: d[k] for k in d.files}
        except Exception as e: err = _one_line(e)   # a damaged member (BadZipFile: Bad CRC-32, zlib.error), object arrays, ...
    raise BadDataset(f"{path} is not a readable .npz file ({err}); write one with np.savez(path, x=..., y=...)") from None

def _npz_arrays(path, a) -> tuple:
    "Check an `.npz` dataset's arrays: `x` uint8 NHW or NHWC (C = 1 or 3), `y` integers, one per image, covered by `classes`."
    for k in ("x", "y"):
        if k not in a: raise BadDataset(f"{path} has no array {k!r} (it has {sorted(a)}); a dataset .npz holds x "
                                        f"(uint8 images, NHWC or NHW) and y (integer labels)")
    x, y = a["x"], a["y"]
    if x.dtype != np.uint8:
        raise BadDataset(f"{path}: x must be uint8 (0–255), got {x.dtype}; for floats in [0, 1] save np.round(x * 255).astype(np.uint8)")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)) or len(x) == 0:
        hint = " (channels first? save x.transpose(0, 2, 3, 1))" if x.ndim == 4 and x.shape[1] in (1, 3) else ""
        raise BadDataset(f"{path}: x must be a non-empty NHW (grey) or NHWC (C = 1 or 3) array, got shape {x.shape}{hint}")
    if y.ndim != 1 or y.dtype.kind not in "iu": raise BadDataset(f"{path}: y must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) != len(x): raise BadDataset(f"{path}: {len(x)} images in x but {len(y)} labels in y")
    if (y < -1).any(): raise BadDataset(f"{path}: labels in y must be ≥ 0 (or -1 for unknown), found {int(y.min())}")
    k = int(y.max()) + 1
    classes = [str(c) for c in a["classes"]] if "classes" in a else [str(i) for i in range(k)]
    if len(classes) < k: raise BadDataset(f"{path}: y has labels up to {k - 1} but classes names only {len(classes)}")
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), y.astype(np.int64), classes

def load_npz(path) -> ImageData:
    "A dataset from an `.npz` holding `x` (uint8 NHWC or NHW), `y` and optionally `classes`."
    x, y, classes = _npz_arrays(path, _read_npz(path))
    return ImageData(torch.from_numpy(x), y, classes, Path(path).stem)

# %%
with tempfile.TemporaryDirectory() as _t:
    _p = Path(_t) / "toy.npz"
    np.savez(_p, x=np.zeros((4, 5, 6, 3), np.uint8), y=np.array([0, 1, 1, 0]), classes=np.array(["a", "b"]))
    _toy = load_npz(_p)
    test_eq(tuple(_toy.x.shape), (4, 3, 5, 6)); test_eq(_toy.classes, ["a", "b"])
    _p.write_bytes(_p.read_bytes()[:100])                                       # cut short
    test_fail(lambda: load_npz(_p), contains=f"{_p} is not a readable .npz file (not a zip archive, or one cut short)")
    np.savez(_p, x=np.zeros((4, 5, 6), np.float32), y=np.zeros(4, int))
    test_fail(lambda: load_npz(_p), contains="x must be uint8 (0–255), got float32")
    np.savez(_p, x=np.zeros((4, 3, 5, 6), np.uint8), y=np.zeros(3, int))
    test_fail(lambda: load_npz(_p), contains="channels first? save x.transpose(0, 2, 3, 1)")
    np.savez(_p, x=np.zeros((4, 5, 6), np.uint8), y=np.zeros(3, int))
    test_fail(lambda: load_npz(_p), contains="4 images in x but 3 labels in y")
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
    a = _read_npz(path)
    x, y, classes = _npz_arrays(path, a)
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
    np.savez(_p, x=np.zeros((3, 2, 2), np.uint8), y=np.array([0, 1, 1]))
    with warnings.catch_warnings(record=True) as _w:
        warnings.simplefilter("always"); _nosplit = load_npz_dataset(_p, protocol="train-test")
    assert _nosplit.eval is _nosplit.train and "no 'split'" in str(_w[0].message)
    np.savez(_p, x=np.zeros((3, 2, 2), np.uint8), y=np.array([0, 1, 1]), split=np.array([0, 2, 1]))
    test_fail(lambda: load_npz_dataset(_p, protocol="train-test"), contains="'split' must hold 0 (train) or 1 (test)")

# %% [markdown]
# ## The benchmark files, read by our own code
# torchvision's dataset classes both **fetch** a benchmark (download, MD5 check, extraction) and **parse** it. We keep
# the first and replace the second with the small readers below, for three reasons:
#
# - *Tests.* torchvision's classes check every file's MD5 before they read it, so they refuse any file a test can
#   write. Our readers parse the very same on-disk formats (IDX, LIBSVM, CIFAR's pickled batches, STL-10's binaries),
#   so `tests/test_data.py` writes tiny files in those formats and runs the real reading code on them.
# - *Only what is used.* torchvision's STL-10 refuses to load the 13,000 labelled images offline unless the 2.6 GB
#   `unlabeled_X.bin` is there too; our reader opens only the files of the split it reads.
# - *One clear error.* Each reader checks sizes and counts and names the file at fault.
#
# So with network access the first use of `cifar10` calls torchvision's downloader once (it verifies the archive's
# checksum and extracts it into the data root) and our reader does the rest; offline, the files (or just the archive)
# in the data root are enough.

# %%
#| export
def _extract(archive, dest):
    "Unpack a `.tar(.gz)` or `.zip` archive into `dest`, refusing members that would land outside it."
    try:
        if archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as z: z.extractall(dest)
        else:
            with tarfile.open(archive) as t:
                t.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        return
    except Exception as e: err = e
    raise BadDataset(f"{archive} cannot be extracted ({_one_line(err)}); delete it and download it again") from None

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

def _gz(p: Path) -> Path:
    "`p`, or `p.gz` when only the compressed file is there."
    return p if p.exists() or not p.with_name(p.name + ".gz").exists() else p.with_name(p.name + ".gz")

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
    try: _locate("cifar100", _r, download=False)
    except DatasetNotFound as e: _err = e
    print(_err)
    assert "cifar-100-python.tar.gz" in str(_err) and _err.__cause__ is None and _err.__suppress_context__
    (_r / "pack" / "cifar-100-python").mkdir(parents=True)
    for _f in ("train", "test"): (_r / "pack" / "cifar-100-python" / _f).write_bytes(b"")
    with tarfile.open(_r / "cifar-100-python.tar.gz", "w:gz") as _tf: _tf.add(_r / "pack" / "cifar-100-python", "cifar-100-python")
    test_eq(_locate("cifar100", _r, download=False), _r / "cifar-100-python")    # the archive alone is enough
    test_fail(lambda: _locate("tiny_imagenet", _r), contains="(torchvision cannot download it)")

# %% [markdown]
# ### MNIST: IDX files
# An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian
# 32-bit size per dimension, then the values. MNIST's images are `uint8` (N, 28, 28), its labels `uint8` (N,).

# %%
#| export
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

def read_idx(path) -> np.ndarray:
    "The array stored in an IDX file (MNIST's format; a `.gz` file is decompressed on the fly)."
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f: raw = f.read()
    except (OSError, EOFError) as e: err = e
    else: err = None
    if err is not None: raise BadDataset(f"{path} cannot be read ({_one_line(err)})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise BadDataset(f"{path} is not an IDX file (its first bytes are {raw[:4].hex() or 'missing'})")
    nd, dt = raw[3], np.dtype(IDX_TYPES[raw[2]])
    dims = tuple(int(d) for d in np.frombuffer(raw[4:4 + 4 * nd], ">u4")) if len(raw) >= 4 + 4 * nd else None
    need = 4 + 4 * nd + int(np.prod(dims or (0,))) * dt.itemsize
    if dims is None or len(raw) != need:
        raise BadDataset(f"{path}: {len(raw)} bytes, but its header {dims} needs {need} (truncated or corrupt)")
    return np.frombuffer(raw, dt, offset=4 + 4 * nd).reshape(dims).astype(dt.newbyteorder("="))

# %%
with tempfile.TemporaryDirectory() as _t:
    _p = Path(_t) / "toy-idx3-ubyte.gz"
    _a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    with gzip.open(_p, "wb") as _f: _f.write(struct.pack(">BBBB3I", 0, 0, 8, 3, 2, 3, 4) + _a.tobytes())
    test_eq(read_idx(_p), _a)
    _q = Path(_t) / "cut-idx1-ubyte"; _q.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + bytes(7))
    test_fail(lambda: read_idx(_q), contains="cut-idx1-ubyte: 15 bytes, but its header (10,) needs 18")

# %%
#| export
def read_mnist(folder, # the folder with MNIST's four IDX files (`.gz` or not)
               split:str="train", # "train" (60,000 images) or "test" (10,000)
              ) -> ImageData:
    "One split of MNIST from its IDX files."
    pre = {"train": "train", "test": "t10k"}[split]
    xf, yf = (_gz(Path(folder) / f"{pre}-{k}-ubyte") for k in ("images-idx3", "labels-idx1"))
    x, y = read_idx(xf), read_idx(yf)
    if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or not np.isin(y, range(10)).all():
        raise BadDataset(f"{xf} and {yf} do not hold N uint8 images and N digit labels: {x.dtype} {x.shape}, {y.dtype} {y.shape}")
    return ImageData(torch.from_numpy(np.ascontiguousarray(x[:, None])), y.astype(np.int64), DIGIT_CLASSES, "mnist")

# %%
with tempfile.TemporaryDirectory() as _t:
    for _k, _a in (("images-idx3", np.full((3, 28, 28), 7, np.uint8)), ("labels-idx1", np.array([4, 0, 9], np.uint8))):
        (Path(_t) / f"t10k-{_k}-ubyte").write_bytes(struct.pack(">BBBB", 0, 0, 8, _a.ndim) + struct.pack(f">{_a.ndim}I", *_a.shape) + _a.tobytes())
    _m = read_mnist(_t, "test")
test_eq((tuple(_m.x.shape), _m.y.tolist(), int(_m.x[2, 0, 5, 5])), ((3, 1, 28, 28), [4, 0, 9], 7))

# %% [markdown]
# ### USPS: LIBSVM text
# torchvision's USPS files are bzip2-compressed LIBSVM text: one line per image, the label (1–10 for the digits 0–9),
# then `index:value` pairs for the 256 pixels of a 16×16 image, values in [−1, 1]. An omitted index means 0, as in any
# LIBSVM file. We map a value `v` to `round((v + 1) / 2 · 255)` (the compact `usps.npz` copy uses the same rounding).

# %%
#| export
def read_usps(path) -> ImageData:
    "USPS from a LIBSVM file (`usps.bz2`: the 7,291 training images, `usps.t.bz2`: the 2,007 test images)."
    path = Path(path)
    try:
        with bz2.open(path, "rt") as f: lines = [l.split() for l in f if l.strip()]
    except (OSError, EOFError, ValueError) as e: err = e
    else: err = None
    if err is not None: raise BadDataset(f"{path} is not a readable bzip2 LIBSVM file ({_one_line(err)})") from None
    x, y = np.zeros((len(lines), 256), np.float32), np.empty(len(lines), np.int64)
    for i, toks in enumerate(lines):
        try:
            y[i] = int(float(toks[0])) - 1
            idx, val = zip(*(t.split(":") for t in toks[1:])) if len(toks) > 1 else ((), ())
            idx = np.array(idx, int) - 1
            if not (0 <= y[i] <= 9 and ((0 <= idx) & (idx < 256)).all()): raise ValueError
            x[i, idx] = np.array(val, np.float32)
        except ValueError:
            raise BadDataset(f"{path}, line {i + 1}: not a USPS line (a label 1–10, then index:value pairs, indices 1–256)") from None
    x = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8).reshape(-1, 1, 16, 16)
    return ImageData(torch.from_numpy(x), y, DIGIT_CLASSES, "usps")

# %%
with tempfile.TemporaryDirectory() as _t:
    _p = Path(_t) / "usps.t.bz2"
    _p.write_bytes(bz2.compress(("1 " + " ".join(f"{j + 1}:-1" for j in range(256)) + "\n10 1:1 256:0.5\n").encode()))
    _u = read_usps(_p)
    test_eq((_u.y.tolist(), int(_u.x[0].max()), int(_u.x[1, 0, 0, 0]), int(_u.x[1, 0, 0, 1]), int(_u.x[1, 0, 15, 15])), ([0, 9], 0, 255, 128, 191))
    _p.write_bytes(bz2.compress(b"3 0:1\n"))
    test_fail(lambda: read_usps(_p), contains="usps.t.bz2, line 1: not a USPS line")

# %% [markdown]
# ### CIFAR-10 and CIFAR-100: pickled batches
# The "python version" of CIFAR is a set of pickled dictionaries: `data` (N, 3072) `uint8` (the red, green and blue
# 32×32 planes one after the other) and the labels (`labels` for CIFAR-10; `fine_labels` and `coarse_labels` for
# CIFAR-100). A pickle can run arbitrary code when loaded, so ours accepts only what these files hold (containers,
# strings and NumPy arrays) and refuses anything else.

# %%
#| export
class _ArrayUnpickler(pickle.Unpickler):
    "An unpickler for CIFAR's batches: dicts, lists, strings and NumPy arrays; any other global is refused."
    ALLOWED = {"numpy": {"ndarray", "dtype"}, "numpy.core.multiarray": {"_reconstruct", "scalar"},
               "numpy._core.multiarray": {"_reconstruct", "scalar"}, "numpy.core.numeric": {"_frombuffer"},
               "numpy._core.numeric": {"_frombuffer"}, "_codecs": {"encode"}}
    def find_class(self, module, name):
        if name not in self.ALLOWED.get(module, ()): raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"): module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)

def _unpickle(path) -> dict:
    "A CIFAR batch file as a dict (Python 2 strings read as latin-1, as the files were written)."
    try:
        with open(path, "rb") as f: d = _ArrayUnpickler(f, encoding="latin1").load()
        if not isinstance(d, dict): raise TypeError(f"it holds a {type(d).__name__}, not a dict")
        return d
    except Exception as e: err = e
    raise BadDataset(f"{path} is not a CIFAR python batch ({_one_line(err)})") from None

# %%
class _Evil:
    def __reduce__(self): return (os.system, ("echo pwned",))
with tempfile.TemporaryDirectory() as _t:
    _p = Path(_t) / "batch"
    _p.write_bytes(pickle.dumps({"data": np.arange(6, dtype=np.uint8), "labels": [1, 2]}, protocol=2))
    test_eq(_unpickle(_p)["labels"], [1, 2]); test_eq(_unpickle(_p)["data"], np.arange(6, dtype=np.uint8))
    _p.write_bytes(pickle.dumps({"data": _Evil()}))
    test_fail(lambda: _unpickle(_p), contains="UnpicklingError: refusing to load posix.system")

# %% [markdown]
# Clustering papers evaluate CIFAR-100 on its 20 coarse classes (superclasses). The coarse label is a fixed function
# of the fine label (the files carry both; our reader checks that they agree with this table), indexed by fine label:

# %%
#| export
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_COARSE = [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
                   0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
                   10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
                   18, 1, 2, 15, 6, 0, 17, 8, 14, 13]
CIFAR100_SUPERCLASSES = ["aquatic mammals", "fish", "flowers", "food containers", "fruit and vegetables",
    "household electrical devices", "household furniture", "insects", "large carnivores",
    "large man-made outdoor things", "large natural outdoor scenes", "large omnivores and herbivores",
    "medium-sized mammals", "non-insect invertebrates", "people", "reptiles", "small mammals", "trees",
    "vehicles 1", "vehicles 2"]

# %%
test_eq(len(CIFAR100_COARSE), 100); test_eq(np.bincount(CIFAR100_COARSE).tolist(), [5] * 20)
test_eq(CIFAR100_COARSE[0], 4)   # apple → fruit and vegetables
test_eq(CIFAR100_COARSE[19], 11) # cattle → large omnivores and herbivores
test_eq(CIFAR100_COARSE[58], 18) # pickup truck → vehicles 1

# %%
#| export
def read_cifar(folder, # the extracted python version: cifar-10-batches-py/ or cifar-100-python/
               split:str="train", # "train" (50,000 images) or "test" (10,000)
               name:str="cifar10", # "cifar10", or "cifar100" (labelled with its 20 superclasses)
              ) -> ImageData:
    "One split of CIFAR-10, or of CIFAR-100 with its 20 superclasses, from the pickled batches."
    folder, c10 = Path(folder), name == "cifar10"
    files = ([f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]) if c10 else [split]
    key, k = ("labels", 10) if c10 else ("fine_labels", 100)
    xs, ys = [], []
    for f in files:
        p, d = folder / f, _unpickle(folder / f)
        if "data" not in d or key not in d: raise BadDataset(f"{p} has no 'data' and {key!r} entries (it has {sorted(d)})")
        x, y = np.asarray(d["data"]), np.asarray(d[key])
        if x.dtype != np.uint8 or x.shape[1:] != (3072,) or y.shape != (len(x),) or not np.isin(y, range(k)).all():
            raise BadDataset(f"{p}: expected uint8 data (N, 3072) and N labels in 0–{k - 1}, got {x.dtype} {x.shape} and {y.shape} labels")
        if not c10:
            fine, y = y, np.asarray(CIFAR100_COARSE)[y]
            if "coarse_labels" in d and not np.array_equal(np.asarray(d["coarse_labels"]), y):
                raise BadDataset(f"{p}: its coarse_labels disagree with CIFAR100_COARSE[fine_labels]")
        xs.append(x.reshape(-1, 3, 32, 32)); ys.append(y.astype(np.int64))
    classes = CIFAR10_CLASSES if c10 else CIFAR100_SUPERCLASSES
    return ImageData(torch.from_numpy(np.concatenate(xs)), np.concatenate(ys), list(classes), "cifar10" if c10 else "cifar100-20")

# %%
with tempfile.TemporaryDirectory() as _t:
    _x = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    (Path(_t) / "test").write_bytes(pickle.dumps({"data": _x, "fine_labels": [0, 58], "coarse_labels": [4, 18]}, protocol=2))
    _c = read_cifar(_t, "test", "cifar100")
    test_eq((_c.y.tolist(), _c.classes[18], _c.name), ([4, 18], "vehicles 1", "cifar100-20"))
    test_eq(_c.x[1, 2, 0, :4].tolist(), _x[1, 2048:2052].tolist())                 # blue plane, first row
    (Path(_t) / "test").write_bytes(pickle.dumps({"data": _x, "fine_labels": [0, 58], "coarse_labels": [4, 17]}, protocol=2))
    test_fail(lambda: read_cifar(_t, "test", "cifar100"), contains="coarse_labels disagree")

# %% [markdown]
# ### STL-10: raw binaries
# STL-10's `*_X.bin` files are raw `uint8` images of 3 × 96 × 96, each colour plane stored **column by column**
# (MATLAB's order), so a plane read row-major must be transposed; `*_y.bin` holds one byte per image, the labels 1–10.
# `unlabeled_X.bin` holds the 100,000 unlabelled images (2.6 GB): it is read only when asked for, plane by plane into
# one preallocated tensor, so memory peaks at the size of the result.

# %%
#| export
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]

def read_stl10(folder, # the extracted stl10_binary/ folder
               split:str="train", # "train" (5,000 images), "test" (8,000) or "unlabeled" (100,000, labels -1)
              ) -> ImageData:
    "One split of STL-10 from its binaries (96×96 colour images, labels 0–9)."
    xf, per = Path(folder) / f"{split}_X.bin", 3 * 96 * 96
    n, rest = divmod(xf.stat().st_size, per)
    if rest or not n: raise BadDataset(f"{xf}: {xf.stat().st_size} bytes is not a whole number of 3×96×96 images (truncated?)")
    raw, x = np.memmap(xf, np.uint8, "r", shape=(n, 3, 96, 96)), torch.empty((n, 3, 96, 96), dtype=torch.uint8)
    for i in range(0, n, 4096): x[i:i + 4096] = torch.from_numpy(np.array(raw[i:i + 4096])).transpose(2, 3)
    del raw
    if split == "unlabeled": return ImageData(x, np.full(n, -1), list(STL10_CLASSES), "stl10-unlabeled")
    yf = Path(folder) / f"{split}_y.bin"
    y = np.fromfile(yf, np.uint8).astype(np.int64) - 1
    if len(y) != n or not np.isin(y, range(10)).all():
        raise BadDataset(f"{yf}: expected {n} labels in 1–10 (one per image of {xf.name}), got {len(y)}"
                         + (f" in {y.min() + 1}–{y.max() + 1}" if len(y) else ""))
    return ImageData(x, y, list(STL10_CLASSES), "stl10")

# %%
with tempfile.TemporaryDirectory() as _t:
    _x = np.random.default_rng(0).integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)   # (N, C, row, column)
    (Path(_t) / "test_X.bin").write_bytes(_x.transpose(0, 1, 3, 2).tobytes())       # column-major planes on disk
    (Path(_t) / "test_y.bin").write_bytes(bytes([10, 1]))
    _s = read_stl10(_t, "test")
    test_eq(_s.x.numpy(), _x); test_eq(_s.y.tolist(), [9, 0])
    (Path(_t) / "test_y.bin").write_bytes(bytes([10]))
    test_fail(lambda: read_stl10(_t, "test"), contains="test_y.bin: expected 2 labels in 1–10")

# %% [markdown]
# One split of a torchvision benchmark, by name: locate (or fetch) the files, then read them.

# %%
#| export
def _tv_split(name, root, split, download=True) -> ImageData:
    "Split `split` of torchvision benchmark `name` from the data root `root`."
    folder = _locate(name, Path(root), download, ("unlabeled_X.bin",) if split == "unlabeled" else None)
    if name == "mnist": return read_mnist(folder, split)
    if name == "usps": return read_usps(folder / ("usps.bz2" if split == "train" else "usps.t.bz2"))
    if name in ("cifar10", "cifar100"): return read_cifar(folder, split, name)
    if name == "stl10": return read_stl10(folder, split)
    raise KeyError(name)

# %%
with tempfile.TemporaryDirectory() as _t:
    test_fail(lambda: _tv_split("stl10", _t, "unlabeled", download=False), contains="stl10_binary/ with unlabeled_X.bin")
    test_fail(lambda: _tv_split("mnist", _t, "train", download=False), contains=f"{_t}/MNIST/raw/")

# %% [markdown]
# ## ImageNet-10 and ImageNet-Dogs: the class lists
# Both are subsets of the ILSVRC-2012 training set, introduced by DAC (Chang et al., 2017) and used by every paper of
# the course with the same class lists (the lists published with CC's code): ImageNet-10 is 10 easy, distinct
# classes, ImageNet-Dogs 15 dog breeds; all 1,300 training images of each class are kept. A class is named by its
# WordNet id (`n` and 8 digits), which is also the folder name in ILSVRC-2012. `WNID_NAMES` gives each a readable name.

# %%
#| export
IMAGENET10_WNIDS = ("n02056570", "n02085936", "n02128757", "n02690373", "n02692877",
                    "n03095699", "n04254680", "n04285008", "n04467665", "n07747607")
IMAGENET_DOGS_WNIDS = ("n02085936", "n02086646", "n02088238", "n02091467", "n02097130", "n02099601", "n02101388", "n02101556",
                       "n02102177", "n02105056", "n02105412", "n02105855", "n02107142", "n02110958", "n02112137")
IMAGENET_SUBSETS = {"imagenet10": IMAGENET10_WNIDS, "imagenet_dogs": IMAGENET_DOGS_WNIDS}
WNID_NAMES = {
    "n02056570": "king penguin", "n02085936": "Maltese dog", "n02128757": "snow leopard", "n02690373": "airliner",
    "n02692877": "airship", "n03095699": "container ship", "n04254680": "soccer ball", "n04285008": "sports car",
    "n04467665": "trailer truck", "n07747607": "orange", "n02086646": "Blenheim spaniel", "n02088238": "basset",
    "n02091467": "Norwegian elkhound", "n02097130": "giant schnauzer", "n02099601": "golden retriever",
    "n02101388": "Brittany spaniel", "n02101556": "clumber", "n02102177": "Welsh springer spaniel",
    "n02105056": "groenendael", "n02105412": "kelpie", "n02105855": "Shetland sheepdog", "n02107142": "Doberman",
    "n02110958": "pug", "n02112137": "chow"}
ILSVRC_DOG_RANGE = ("n02085620", "n02113978")  # Chihuahua … Mexican hairless: ILSVRC-2012 classes 151–268, the 118 dogs

# %% [markdown]
# Checks: each id is a well-formed WordNet noun id, the lists have 10 and 15 distinct ids, every id has a name, and
# every ImageNet-Dogs id falls in the block of ILSVRC-2012's 118 dog breeds (the 1,000 classes are numbered in
# sorted-id order, and classes 151–268, from Chihuahua to Mexican hairless, are exactly the dogs). The Maltese dog
# is the one class the two subsets share.

# %%
assert all(re.fullmatch(r"n\d{8}", w) for w in IMAGENET10_WNIDS + IMAGENET_DOGS_WNIDS)
test_eq((len(set(IMAGENET10_WNIDS)), len(set(IMAGENET_DOGS_WNIDS))), (10, 15))
test_eq(set(WNID_NAMES), set(IMAGENET10_WNIDS) | set(IMAGENET_DOGS_WNIDS))
assert all(ILSVRC_DOG_RANGE[0] <= w <= ILSVRC_DOG_RANGE[1] for w in IMAGENET_DOGS_WNIDS)
test_eq(set(IMAGENET10_WNIDS) & set(IMAGENET_DOGS_WNIDS), {"n02085936"})
print(", ".join(WNID_NAMES[w] for w in IMAGENET10_WNIDS))

# %% [markdown]
# ## ImageFolder datasets, decoded once
# ImageNet-10, ImageNet-Dogs, Tiny-ImageNet and any custom folder `root/<class>/<images>` are decoded once with PIL,
# resized (shorter side to `size`, antialiased, then the centre square) and cached as `.npz` in `<data root>/cache/`,
# so later runs start in seconds (when the data root is read-only the cache is skipped with a warning). A class folder
# without images, or a file PIL cannot decode, stops the load with the folder's or the file's name: a silently
# missing class would shift every label after it.

# %%
#| export
IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

def image_folder_files(path, # a folder with one sub-folder of images per class (searched recursively)
                       classes=None, # the class folders it must hold, exactly (default: every sub-folder)
                      ) -> tuple:
    "The class names and the `(file, label)` pairs of an ImageFolder tree."
    path = Path(path)
    if not path.is_dir(): raise DatasetNotFound(f"No such image folder: {path}")
    found = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is not None:
        classes = sorted(classes)
        miss, extra = [c for c in classes if c not in found], [c for c in found if c not in classes]
        if miss or extra:
            say = lambda cs: ", ".join(f"{c} ({WNID_NAMES[c]})" if c in WNID_NAMES else c for c in cs[:5]) + (f" and {len(cs) - 5} more" if len(cs) > 5 else "")
            raise DatasetNotFound(f"{path} must hold exactly {len(classes)} class folders: "
                                  + "; ".join(s for s in (miss and f"missing {say(miss)}", extra and f"unexpected {say(extra)}") if s))
    classes = found if classes is None else classes
    if not classes: raise DatasetNotFound(f"{path} has no class sub-folders (expected {path}/<class>/<image files>)")
    pairs = []
    for c, name in enumerate(classes):
        fs = sorted(f for f in (path / name).rglob("*") if f.suffix.lower() in IMG_EXT and f.is_file())
        if not fs: raise BadDataset(f"{path / name} is an empty class folder (no files ending in {', '.join(IMG_EXT)})")
        pairs += [(f, c) for f in fs]
    return classes, pairs

# %%
with tempfile.TemporaryDirectory() as _t:
    for _c in ("b", "a"): (Path(_t) / _c / "sub").mkdir(parents=True); (Path(_t) / _c / "sub" / "1.png").write_bytes(b"")
    _cl, _pairs = image_folder_files(_t)
    test_eq((_cl, [(p.parent.parent.name, y) for p, y in _pairs]), (["a", "b"], [("a", 0), ("b", 1)]))
    test_fail(lambda: image_folder_files(_t, ["a", "b", "c"]), contains="must hold exactly 3 class folders: missing c")
    (Path(_t) / "c").mkdir()
    test_fail(lambda: image_folder_files(_t), contains=f"{_t}/c is an empty class folder")

# %%
#| export
def _open_rgb(f, size:int, what=None):
    "An image file as RGB; JPEGs decode at the smallest built-in scale that keeps both sides ≥ `size` (a fast, clean downsample)."
    from PIL import Image
    try:
        with Image.open(f) as im:
            im.draft("RGB", (size, size))
            return im.convert("RGB")
    except Exception as e: err = e       # UnidentifiedImageError, a truncated file, ...
    raise BadDataset(f"{what or f} cannot be decoded as an image ({_one_line(err)}); replace or delete it") from None

def _square(im, size:int):
    "Shorter side to `size` (antialiased bilinear), then the centre `size`×`size` square."
    from PIL import Image
    s = size / min(im.size)
    im = im.resize((max(size, round(im.size[0] * s)), max(size, round(im.size[1] * s))), Image.BILINEAR)
    l, t = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    return im.crop((l, t, l + size, t + size))

# %%
with tempfile.TemporaryDirectory() as _t:
    _Image.new("RGB", (40, 20), (9, 9, 9)).save(Path(_t) / "a.jpg")
    test_eq(_square(_open_rgb(Path(_t) / "a.jpg", 8), 8).size, (8, 8))
    (Path(_t) / "b.jpg").write_bytes((Path(_t) / "a.jpg").read_bytes()[:200])      # cut short
    test_fail(lambda: _open_rgb(Path(_t) / "b.jpg", 8), contains="b.jpg cannot be decoded as an image (OSError")

# %%
#| export
def _load_files(pairs, classes, size, cache_dir=None, progress=True, name="") -> ImageData:
    "Decode `(file, label)` pairs into `size`×`size` RGB images, through an `.npz` cache in `cache_dir` when given."
    files, y = [f for f, _ in pairs], np.array([c for _, c in pairs], np.int64)
    cache = None
    if cache_dir is not None:
        h = hashlib.md5(f"v2|{size}".encode())
        for f in files: st = f.stat(); h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        cache = Path(cache_dir) / f"{name}_{size}px_{h.hexdigest()[:10]}.npz"
        if cache.exists():
            try: d = load_npz(cache)
            except BadDataset as e: warnings.warn(f"decoding again: {e}")
            else: d.name = name; return d
    from tqdm.auto import tqdm
    x = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    for i, f in enumerate(tqdm(files, desc=f"decoding {name}", disable=not progress, mininterval=2)):
        x[i] = torch.from_numpy(np.array(_square(_open_rgb(f, size), size))).permute(2, 0, 1)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.stem + ".tmp.npz")
            np.savez(tmp, x=x.numpy().transpose(0, 2, 3, 1), y=y, classes=np.array(classes)); os.replace(tmp, cache)
        except OSError as e: warnings.warn(f"decoded images not cached in {cache.parent} ({_one_line(e)}); they will be decoded again next time")
    return ImageData(x, y, list(classes), name)

def load_image_folder(path, # folder with one sub-folder of images per class (searched recursively)
                      size:int=96, # side of the square images kept in memory
                      cache_dir=None, # where to cache the decoded tensor; None = no cache
                      progress:bool=True, # show a progress bar while decoding
                      classes=None, # the class folders it must hold, exactly (default: every sub-folder)
                     ) -> ImageData:
    "Decode an ImageFolder-style directory into a uint8 tensor of `size`×`size` RGB images (cached)."
    classes, pairs = image_folder_files(path, classes)
    return _load_files(pairs, classes, size, cache_dir, progress, Path(path).name)

# %%
with tempfile.TemporaryDirectory() as _t:
    for _c, _col in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
        (Path(_t) / "imgs" / _c).mkdir(parents=True)
        for _i in range(3): _Image.new("RGB", (40, 30), _col).save(Path(_t) / "imgs" / _c / f"{_i}.png")
    _f = load_image_folder(Path(_t) / "imgs", size=16, cache_dir=Path(_t) / "cache", progress=False)
    _g = load_image_folder(Path(_t) / "imgs", size=16, cache_dir=Path(_t) / "cache", progress=False)  # from cache
    test_eq(len(list((Path(_t) / "cache").glob("imgs_16px_*.npz"))), 1)
    (Path(_t) / "imgs" / "red" / "3.png").write_bytes(b"not an image")
    test_fail(lambda: load_image_folder(Path(_t) / "imgs", 16, progress=False), contains="red/3.png cannot be decoded")
test_eq(tuple(_f.x.shape), (6, 3, 16, 16)); test_eq(_f.classes, ["blue", "red"]); test_eq(_f.x, _g.x)
test_eq(_f.x[0, :, 0, 0].tolist(), [0, 0, 255])

# %% [markdown]
# ## Building ImageNet-10 and ImageNet-Dogs from ILSVRC-2012
# `build_imagenet_subset` reads the training images of the subset's classes from any of the three shapes ILSVRC-2012's
# training set comes in: the extracted `train/<wnid>/*.JPEG` folders, the 1,000 per-class `<wnid>.tar` files, or the
# single `ILSVRC2012_img_train.tar` (a tar of those tars, read in place, nothing else extracted). Before writing
# anything it checks that every class is there with its 1,300 images, and names the missing or short classes. It then
# writes `<dest>/<name>/<wnid>/<file>.JPEG`, shrinking each image so that its shorter side is `size` (256 by default,
# enough for 224 px crops; JPEG quality 95; `size=None` copies the original files untouched), into a temporary folder
# that is renamed only once all images are in. The loader then takes the centre 256 × 256 square of each.

# %%
#| export
def _ilsvrc_images(source:Path, wnids, stack) -> dict:
    "For each WordNet id found in `source`, its training images as `(file name, read bytes)` pairs."
    outer = stack.enter_context(tarfile.open(source)) if source.is_file() else None
    members = {Path(m.name).name: m for m in outer.getmembers()} if outer is not None else {}
    out = {}
    for w in wnids:
        if outer is None and (source / w).is_dir():
            out[w] = [(f.name, f.read_bytes) for f in sorted((source / w).iterdir()) if f.suffix.lower() in IMG_EXT]
            continue
        if outer is not None and f"{w}.tar" in members: inner = tarfile.open(fileobj=outer.extractfile(members[f"{w}.tar"]))
        elif outer is None and (source / f"{w}.tar").is_file(): inner = tarfile.open(source / f"{w}.tar")
        else: continue
        stack.enter_context(inner)
        ms = sorted((m for m in inner.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMG_EXT), key=lambda m: m.name)
        out[w] = [(Path(m.name).name, lambda m=m, t=inner: t.extractfile(m).read()) for m in ms]
    return out

def _store(data:bytes, dst:Path, size, what:str):
    "Write one image: the original bytes (`size=None`), or RGB JPEG with the shorter side shrunk to `size`."
    if size is None: dst.write_bytes(data); return
    from PIL import Image
    im = _open_rgb(io.BytesIO(data), size, what)
    s = size / min(im.size)
    if s < 1: im = im.resize((max(size, round(im.size[0] * s)), max(size, round(im.size[1] * s))), Image.BILINEAR)
    im.save(dst.with_suffix(".JPEG"), "JPEG", quality=95)

def build_imagenet_subset(name:str, # "imagenet10" or "imagenet_dogs"
                          source, # ILSVRC-2012 train: a folder of <wnid>/ folders or of <wnid>.tar files, or ILSVRC2012_img_train.tar
                          dest=None, # data root to write <dest>/<name>/ into (default: `data_root()`)
                          size:int|None=256, # shorter side of the stored images (only ever shrunk); None copies the files as they are
                          per_class:int=1300, # images each class must have (1,300 in ILSVRC-2012 for every class of both subsets)
                          overwrite:bool=False, # replace an existing <dest>/<name>/
                          progress:bool=True, # show a progress bar
                         ) -> Path: # the folder written, <dest>/<name>
    "Make ImageNet-10 or ImageNet-Dogs, `<dest>/<name>/<wnid>/*.JPEG`, from ILSVRC-2012's training set, checking every class."
    if name not in IMAGENET_SUBSETS: raise ValueError(f"name must be one of {', '.join(IMAGENET_SUBSETS)}, got {name!r}")
    source, wnids = Path(source).expanduser(), IMAGENET_SUBSETS[name]
    if not source.exists():
        raise DatasetNotFound(f"No ILSVRC-2012 training set at {source} (a train/ folder of <wnid>/ folders or <wnid>.tar files, or ILSVRC2012_img_train.tar)")
    out = data_root(dest) / name
    if out.exists() and not overwrite: raise FileExistsError(f"{out} already exists; pass overwrite=True to build it again")
    from tqdm.auto import tqdm
    with contextlib.ExitStack() as stack:
        images = _ilsvrc_images(source, wnids, stack)
        bad = [f"missing {w} ({WNID_NAMES[w]})" for w in wnids if w not in images]
        bad += [f"{w} ({WNID_NAMES[w]}) has {len(images[w])}" for w in wnids if w in images and len(images[w]) != per_class]
        if bad: raise BadDataset(f"{source} cannot make {name}, which needs {len(wnids)} classes × {per_class:,} images: {'; '.join(bad)}")
        tmp = out.with_name(f".{name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        for w in tqdm(wnids, desc=f"building {name}", disable=not progress):
            (tmp / w).mkdir(parents=True)
            for f, read in images[w]: _store(read(), tmp / w / f, size, f"{source}: {w}/{f}")
            if len(list((tmp / w).iterdir())) != per_class: raise BadDataset(f"{source}: {w} holds files with the same name; expected {per_class} distinct images")
    if out.exists(): shutil.rmtree(out)
    os.replace(tmp, out)
    return out

# %%
show_doc(build_imagenet_subset)

# %% [markdown]
# A check on a miniature ILSVRC-2012 training folder, two images per class (`per_class=2`), each 300 × 200 px: it
# becomes 24 × 16 with `size=16`, and a class with one image too few stops the build before anything is written.

# %%
with tempfile.TemporaryDirectory() as _t:
    _src = Path(_t) / "train"
    for _i, _w in enumerate(IMAGENET10_WNIDS + ("n01440764",)):                  # plus a class that is not ImageNet-10's
        (_src / _w).mkdir(parents=True)
        for _j in range(2): _Image.new("RGB", (300, 200), (_i * 20, 0, 0)).save(_src / _w / f"{_w}_{_j}.JPEG")
    _out = build_imagenet_subset("imagenet10", _src, Path(_t) / "root", size=16, per_class=2, progress=False)
    test_eq(sorted(p.name for p in _out.iterdir()), sorted(IMAGENET10_WNIDS))
    test_eq(_Image.open(_out / "n07747607" / "n07747607_1.JPEG").size, (24, 16))
    test_fail(lambda: build_imagenet_subset("imagenet10", _src, Path(_t) / "root", per_class=2), contains="pass overwrite=True")
    (_src / "n04285008" / "n04285008_1.JPEG").unlink()
    test_fail(lambda: build_imagenet_subset("imagenet10", _src, Path(_t) / "new", per_class=2, progress=False),
              contains="needs 10 classes × 2 images: n04285008 (sports car) has 1")
    assert not (Path(_t) / "new" / "imagenet10").exists()

# %% [markdown]
# ## Tiny-ImageNet
# Tiny-ImageNet (`tiny-imagenet-200.zip`, from the Stanford CS231n course page; not in torchvision) extracts to
# `tiny-imagenet-200/` with `wnids.txt` (the 200 WordNet ids), `train/<wnid>/images/<wnid>_<i>.JPEG` (500 per class,
# 64 × 64) and `val/images/*.JPEG` labelled by `val/val_annotations.txt` (50 per class). The papers cluster the
# 100,000 training images; the train-test protocol evaluates on the 10,000 validation images. The layout is checked on
# load: the class folders must be exactly those of `wnids.txt`, each with its images in `images/`.

# %%
#| export
def _tiny_imagenet(root:Path, size:int, protocol:str, progress:bool=True) -> ClusterData:
    "Tiny-ImageNet's training images (and, for the train-test protocol, its validation images) from the data root."
    folder = _locate("tiny_imagenet", root, download=False)
    wnids = (folder / "wnids.txt").read_text().split()
    classes, pairs = image_folder_files(folder / "train", wnids)
    off = next((f for f, _ in pairs if f.parent.name != "images" or f.parent.parent.parent != folder / "train"), None)
    if off is not None: raise BadDataset(f"{off} is not where Tiny-ImageNet keeps its images (train/<wnid>/images/*.JPEG)")
    _check_counts("tiny_imagenet", folder / "train", classes, pairs)
    tr = _load_files(pairs, classes, size, root / "cache", progress, "tiny_imagenet")
    if protocol != "train-test": return ClusterData(tr, tr, len(classes), "tiny_imagenet")
    ann, index, val = folder / "val" / "val_annotations.txt", {c: i for i, c in enumerate(classes)}, []
    if not ann.exists(): raise DatasetNotFound(f"{ann} is missing: the train-test protocol evaluates on Tiny-ImageNet's validation images")
    for i, line in enumerate(ann.read_text().splitlines()):
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index: raise BadDataset(f"{ann}, line {i + 1}: expected '<file>\\t<wnid of wnids.txt>\\t...'")
        val.append((folder / "val" / "images" / parts[0], index[parts[1]]))
    return ClusterData(tr, _load_files(val, classes, size, root / "cache", progress, "tiny_imagenet_val"), len(classes), "tiny_imagenet")

def _check_counts(name, folder, classes, pairs):
    "Warn when a folder benchmark's classes do not hold the full benchmark's number of images."
    n = np.bincount([c for _, c in pairs], minlength=len(classes))
    off = np.flatnonzero(n != FOLDER_PER_CLASS[name])
    if len(off): warnings.warn(f"{folder}: {len(off)} of its {len(classes)} classes do not hold the benchmark's {FOLDER_PER_CLASS[name]} "
                               f"images (e.g. {classes[off[0]]}: {n[off[0]]}); {len(pairs)} images in all instead of "
                               f"{len(classes) * FOLDER_PER_CLASS[name]:,}: scores are not comparable with the papers'")

# %%
with tempfile.TemporaryDirectory() as _t:
    _r = Path(_t); _tw = [f"n{i:08d}" for i in range(3)]
    (_r / "tiny-imagenet-200" / "val" / "images").mkdir(parents=True)
    (_r / "tiny-imagenet-200" / "wnids.txt").write_text("\n".join(_tw))
    for _i, _w in enumerate(_tw):
        (_r / "tiny-imagenet-200" / "train" / _w / "images").mkdir(parents=True)
        _Image.new("RGB", (64, 64), (0, _i * 100, 0)).save(_r / "tiny-imagenet-200" / "train" / _w / "images" / f"{_w}_0.JPEG")
        _Image.new("RGB", (64, 64), (0, _i * 100, 0)).save(_r / "tiny-imagenet-200" / "val" / "images" / f"val_{_i}.JPEG")
    (_r / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text("".join(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63\n" for i, w in enumerate(_tw)))
    with warnings.catch_warnings(record=True) as _w:
        warnings.simplefilter("always"); _ti = _tiny_imagenet(_r, 64, "train-test", progress=False)
    test_eq((len(_ti.train), len(_ti.eval), _ti.n_clusters, _ti.eval.y.tolist()), (3, 3, 3, [0, 1, 2]))
    assert "not hold the benchmark's 500 images" in str(_w[0].message)

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

# %%
#| export
def _folder_benchmark(name, root, size, protocol, progress=True) -> ClusterData:
    "ImageNet-10, ImageNet-Dogs or Tiny-ImageNet from the data root."
    if name == "tiny_imagenet": return _tiny_imagenet(root, size, protocol, progress)
    folder, k = root / FOLDER_DATASETS[name][0], FOLDER_DATASETS[name][1]
    if not folder.is_dir(): raise _missing(name, root, _expect(name, root), "it cannot be downloaded") from None
    classes, pairs = image_folder_files(folder, IMAGENET_SUBSETS[name])
    _check_counts(name, folder, classes, pairs)
    d = _load_files(pairs, classes, size, root / "cache", progress, name)
    if protocol == "train-test": warnings.warn(f"{name} has no test split: training and evaluating on the same images")
    return ClusterData(d, d, k, name)

def _concat(a: ImageData, b: ImageData) -> ImageData:
    return ImageData(torch.cat([a.x, b.x]), np.concatenate([a.y, b.y]), a.classes, a.name)

def load_dataset(name:str="digits", # a name in `DATASETS`, a path to an `.npz` file or an ImageFolder, or NAME of NAME.npz in the data root
                 root=None, # data root (default `$DEEPCLUSTER_DATA` or `data/`)
                 protocol:str="paper", # "paper": train and evaluate on the paper's split(s); "train-test": train on train, evaluate on test
                 download:bool=True, # let torchvision download missing files
                 folder_size:int|None=None, # pixels kept for ImageFolder datasets (default `NATIVE_SIZE`, 96 for other folders)
                 stl10_unlabeled:bool=False, # STL-10 only: also load its 100,000 unlabelled images as `extra`
                ) -> ClusterData:
    "Load a clustering benchmark by name (or path) into memory."
    root = data_root(root)
    if protocol not in ("paper", "train-test"): raise ValueError(f"protocol must be 'paper' or 'train-test', got {protocol!r}")
    if stl10_unlabeled and name != "stl10": raise ValueError(f"stl10_unlabeled=True is for 'stl10' only, not {name!r}")
    p = Path(str(name)).expanduser()
    if name == "digits":
        d = load_digits_data(); return ClusterData(d, d, 10, "digits")
    extra = _tv_split("stl10", root, "unlabeled", download) if stl10_unlabeled else None
    if name in DATASETS and (root / f"{name}.npz").exists():   # a compact copy stands in for the benchmark's files
        cd = load_npz_dataset(root / f"{name}.npz", name, protocol); cd.extra = extra; return cd
    if name in TV_DATASETS:
        tr, te = _tv_split(name, root, "train", download), _tv_split(name, root, "test", download)
        if protocol == "train-test": return ClusterData(tr, te, te.n_classes, tr.name, extra)
        d = _concat(tr, te); return ClusterData(d, d, d.n_classes, d.name, extra)
    if name in FOLDER_DATASETS: return _folder_benchmark(name, root, folder_size or NATIVE_SIZE[name], protocol)
    if p.suffix == ".npz" or (root / f"{name}.npz").exists():
        return load_npz_dataset(p if p.suffix == ".npz" else root / f"{name}.npz", None, protocol)
    if p.is_dir():
        d = load_image_folder(p, folder_size or 96, root / "cache")
        return ClusterData(d, d, d.n_classes, d.name)
    raise ValueError(f"Unknown dataset {name!r}. Valid names: {', '.join(DATASETS)}; or a path to an .npz file or an "
                     f"ImageFolder directory; or NAME for a file NAME.npz in the data root ({root}).")

# %%
show_doc(load_dataset)

# %%
_cd = load_dataset("digits")
print(_cd)
assert _cd.eval is _cd.train
test_fail(lambda: load_dataset("cifar11"), contains="Valid names: digits, mnist")
test_fail(lambda: load_dataset("cifar10", stl10_unlabeled=True), contains="for 'stl10' only")

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
