# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data
# > Every benchmark of the course as one in-memory `uint8` tensor: digits (offline default), MNIST, USPS, CIFAR-10/100-20, STL-10, the ImageNet subsets, any ImageFolder and any `.npz`.

# %%
#| default_exp data

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import os, json, hashlib, warnings
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import torch

# %% [markdown]
# Deep-clustering benchmarks are small enough to live in memory as decoded `uint8` tensors (even on a GPU: the
# largest, Tiny-ImageNet, is 1.2 GB at 64 px). Keeping them as one tensor `x` of shape `(N, C, H, W)` lets an epoch be
# a permutation of indices and lets augmentation run batched on the same device (see `augment`). One small
# dataclass carries the images, the labels and the class names.

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

# %% [markdown]
# ## Where data lives
# The data root is, in order: the `data_root` argument, the environment variable `DEEPCLUSTER_DATA`, or the
# project's `data/` folder. torchvision datasets download into it; ImageFolder datasets are looked up in it.

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

# %%
#| export
class DatasetNotFound(FileNotFoundError):
    "Raised when a dataset is neither on disk nor downloadable; the message says which files to put where."

def _missing(name, root, expect, err=None):
    msg = (f"Dataset {name!r} was not found under {root} and could not be downloaded"
           + (f" ({type(err).__name__}: {err})" if err else "") + ".\n"
           f"Put the files here:\n  {expect}\n"
           + (f"or a compact copy {root}/{name}.npz (arrays x, y, optional classes and split)\n" if name in TV_DATASETS else "")
           + f"or point the data root elsewhere with data_root=... or the environment variable {DATA_ENV}.")
    return DatasetNotFound(msg)

# %% [markdown]
# ## The offline default: scikit-learn's digits
# 1,797 grey 8×8 images of handwritten digits with 17 grey levels (0–16), shipped inside scikit-learn, so the whole
# course runs with no download. We rescale the levels to 0–255.

# %%
#| export
def load_digits_data() -> ImageData:
    "scikit-learn's 1,797 handwritten 8×8 digits as uint8 (N, 1, 8, 8)."
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    return ImageData(torch.from_numpy(x), d.target, [str(i) for i in range(10)], "digits")

# %%
_d = load_digits_data()
test_eq(tuple(_d.x.shape), (1797, 1, 8, 8)); test_eq(_d.n_classes, 10); test_eq(int(_d.x.max()), 255)

# %% [markdown]
# ## `.npz` files
# Any `.npz` with `x` (uint8, NHWC or NHW), `y` and optionally `classes` is a dataset; a file `NAME.npz` in the data
# root is also reachable by its `NAME`.

# %%
#| export
def load_npz(path) -> ImageData:
    "A dataset from an `.npz` holding `x` (uint8 NHWC or NHW), `y` and optionally `classes`."
    path = Path(path)
    if not path.exists(): raise DatasetNotFound(f"No such .npz file: {path}")
    with np.load(path, allow_pickle=False) as d:
        if "x" not in d or "y" not in d: raise ValueError(f"{path} must contain arrays 'x' and 'y', has {list(d.keys())}")
        x, y = d["x"], d["y"]
        classes = [str(c) for c in d["classes"]] if "classes" in d else [str(i) for i in range(int(y.max()) + 1)]
    if x.dtype != np.uint8: raise ValueError(f"{path}: 'x' must be uint8, got {x.dtype}")
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return ImageData(torch.from_numpy(np.ascontiguousarray(x)), y, classes, path.stem)

# %%
import tempfile
with tempfile.TemporaryDirectory() as _t:
    _p = Path(_t) / "toy.npz"
    np.savez(_p, x=np.zeros((4, 5, 6, 3), np.uint8), y=np.array([0, 1, 1, 0]), classes=np.array(["a", "b"]))
    _toy = load_npz(_p)
test_eq(tuple(_toy.x.shape), (4, 3, 5, 6)); test_eq(_toy.classes, ["a", "b"])
test_fail(lambda: load_npz("/nonexistent/file.npz"), contains="No such .npz")

# %% [markdown]
# ## ImageFolder datasets, decoded once
# ImageNet-10, ImageNet-Dogs, Tiny-ImageNet and any custom folder `root/<class>/<images>` are decoded once with PIL,
# resized (shorter side, then centre crop) to a square of `size` pixels, and cached as `.npz` in
# `<data root>/cache/` so later runs start in seconds.

# %%
#| export
IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

def load_image_folder(path, # folder with one sub-folder of images per class (searched recursively)
                      size:int=96, # side of the square images kept in memory
                      cache_dir=None, # where to cache the decoded tensor; None = no cache
                      progress:bool=True, # show a progress bar while decoding
                     ) -> ImageData:
    "Decode an ImageFolder-style directory into a uint8 tensor of `size`×`size` RGB images (cached)."
    from PIL import Image
    path = Path(path)
    if not path.is_dir(): raise DatasetNotFound(f"No such image folder: {path}")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes: raise DatasetNotFound(f"{path} has no class sub-folders (expected {path}/<class>/<image files>)")
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((path / name).rglob("*")) if f.suffix.lower() in IMG_EXT]
    if not files: raise DatasetNotFound(f"{path} has class folders but no images with extensions {IMG_EXT}")
    key = hashlib.md5(f"{path.resolve()}|{size}|{len(files)}".encode()).hexdigest()[:10]
    cache = Path(cache_dir) / f"{path.name}_{size}px_{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        d = load_npz(cache); d.name = path.name; return d
    from tqdm.auto import tqdm
    x = np.empty((len(files), size, size, 3), np.uint8)
    for i, (f, _) in enumerate(tqdm(files, desc=f"decoding {path.name}", disable=not progress, mininterval=2)):
        im = Image.open(f).convert("RGB")
        s = size / min(im.size)
        im = im.resize((max(size, round(im.size[0] * s)), max(size, round(im.size[1] * s))), Image.BILINEAR)
        l, t = (im.size[0] - size) // 2, (im.size[1] - size) // 2
        x[i] = np.asarray(im.crop((l, t, l + size, t + size)))
    y = np.array([c for _, c in files])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz"); np.savez(tmp, x=x, y=y, classes=np.array(classes)); os.replace(tmp, cache)
    return ImageData(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), y, classes, path.name)

# %%
from PIL import Image as _Image
with tempfile.TemporaryDirectory() as _t:
    for _c, _col in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
        (Path(_t) / "imgs" / _c).mkdir(parents=True)
        for _i in range(3): _Image.new("RGB", (40, 30), _col).save(Path(_t) / "imgs" / _c / f"{_i}.png")
    _f = load_image_folder(Path(_t) / "imgs", size=16, cache_dir=Path(_t) / "cache", progress=False)
    _g = load_image_folder(Path(_t) / "imgs", size=16, cache_dir=Path(_t) / "cache", progress=False)  # from cache
test_eq(tuple(_f.x.shape), (6, 3, 16, 16)); test_eq(_f.classes, ["blue", "red"]); test_eq(_f.x, _g.x)
test_eq(_f.x[0, :, 0, 0].tolist(), [0, 0, 255])

# %% [markdown]
# ## CIFAR-100's 20 superclasses
# Clustering papers evaluate CIFAR-100 on its 20 coarse classes. torchvision exposes only the fine labels; the
# coarse label of each fine class (the dataset's own `coarse_labels` field, which is a fixed function of the fine
# label) is this table, indexed by fine label:

# %%
#| export
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

# %% [markdown]
# ## The benchmarks by name
# Each loader returns an `ImageData` per split. torchvision loaders try to download when `download=True`; when that
# fails (no network) the error names the files and layout expected.

# %%
#| export
def _tv(name, root, download, make, expect):
    try: return make(download=False)
    except Exception as e0:
        if not download: raise _missing(name, root, expect) from e0
        try: return make(download=True)
        except Exception as e: raise _missing(name, root, expect, e) from e

def _tv_split(name, root, split, download):
    import torchvision.datasets as tvd
    r = str(root)
    if name == "mnist":
        ds = _tv(name, root, download, lambda download: tvd.MNIST(r, train=split == "train", download=download),
                 f"{root}/MNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte(.gz)")
        return ImageData(ds.data[:, None].clone(), ds.targets.numpy(), [str(i) for i in range(10)], name)
    if name == "usps":
        ds = _tv(name, root, download, lambda download: tvd.USPS(r, train=split == "train", download=download),
                 f"{root}/usps.bz2 and {root}/usps.t.bz2 (the LIBSVM files)")
        return ImageData(torch.as_tensor(ds.data)[:, None].clone(), np.asarray(ds.targets), [str(i) for i in range(10)], name)
    if name in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        ds = _tv(name, root, download, lambda download: cls(r, train=split == "train", download=download),
                 f"{root}/{folder}/ (the extracted python version of {name}, e.g. from {folder.split('-py')[0]}-python.tar.gz)")
        x = torch.from_numpy(ds.data.transpose(0, 3, 1, 2).copy())
        if name == "cifar10": return ImageData(x, np.asarray(ds.targets), list(ds.classes), name)
        return ImageData(x, np.asarray(CIFAR100_COARSE)[np.asarray(ds.targets)], CIFAR100_SUPERCLASSES, "cifar100-20")
    if name == "stl10":
        ds = _tv(name, root, download, lambda download: tvd.STL10(r, split=split, download=download),
                 f"{root}/stl10_binary/{{train,test,unlabeled}}_X.bin and {{train,test}}_y.bin (from stl10_binary.tar.gz)")
        return ImageData(torch.from_numpy(ds.data.copy()), np.asarray(ds.labels), list(ds.classes), name)
    raise KeyError(name)

# %% [markdown]
# The splits follow the papers: CIFAR-10, CIFAR-100-20 and STL-10 cluster the union of train and test, MNIST and USPS
# likewise; the ImageNet subsets use their train folders. `split="train"`/`"test"` keeps one split for training and
# the other for evaluation (CRLC's protocol on CIFAR).

# %%
#| export
TV_DATASETS = ("mnist", "usps", "cifar10", "cifar100", "stl10")
FOLDER_DATASETS = {"imagenet10": ("imagenet10", 10), "imagenet_dogs": ("imagenet_dogs", 15),
                   "tiny_imagenet": ("tiny-imagenet-200/train", 200)}
DATASETS = ("digits",) + TV_DATASETS + tuple(FOLDER_DATASETS)
PAPER_BENCHMARKS = ("cifar10", "cifar100", "stl10", "imagenet10", "imagenet_dogs", "tiny_imagenet")  # the papers' six
DIGIT_DATASETS = ("digits", "mnist", "usps")  # small grey digits: CPU-sized models and the digits augmentation
NATIVE_SIZE = {"digits": 8, "mnist": 28, "usps": 16, "cifar10": 32, "cifar100": 32, "stl10": 96,
               "imagenet10": 96, "imagenet_dogs": 96, "tiny_imagenet": 64}

def _concat(a: ImageData, b: ImageData) -> ImageData:
    return ImageData(torch.cat([a.x, b.x]), np.concatenate([a.y, b.y]), a.classes, a.name)

# %% [markdown]
# An `.npz` may also carry a `split` array (0 = original training image, 1 = original test image), as the compact USPS
# copy does; then the train-test protocol can train on one part and evaluate on the other. A file named after a
# benchmark (`usps.npz`, `mnist.npz`, ...) in the data root stands in for the torchvision files of that benchmark, and
# the run keeps the benchmark's name, so the methods' settings for it apply.

# %%
#| export
def load_npz_dataset(path, # an .npz file: x, y, optionally classes and split (0 = train, 1 = test)
                     name:str|None=None, # the dataset's name (default: the file's stem)
                     protocol:str="paper", # "paper": every image; "train-test": split 0 trains, split 1 evaluates
                    ) -> ClusterData:
    "An `.npz` file as a clustering dataset, using its optional `split` array for the train-test protocol."
    d = load_npz(path); d.name = name or d.name
    if protocol != "train-test": return ClusterData(d, d, d.n_classes, d.name)
    with np.load(path, allow_pickle=False) as f: split = f["split"] if "split" in f else None
    if split is None:
        warnings.warn(f"{path} has no 'split' array (0 = train, 1 = test): training and evaluating on all images")
        return ClusterData(d, d, d.n_classes, d.name)
    if split.shape != d.y.shape or not np.isin(split, (0, 1)).all(): raise ValueError(f"{path}: 'split' must hold 0 or 1 per image")
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

# %%
#| export
def load_dataset(name:str="digits", # a name in `DATASETS`, a path to an `.npz` file or an ImageFolder, or NAME of NAME.npz in the data root
                 root=None, # data root (default `$DEEPCLUSTER_DATA` or `data/`)
                 protocol:str="paper", # "paper": train and evaluate on the paper's split(s); "train-test": train on train, evaluate on test
                 download:bool=True, # let torchvision download missing files
                 folder_size:int|None=None, # pixels kept for ImageFolder datasets (default `NATIVE_SIZE`)
                 stl10_unlabeled:bool=False, # also load STL-10's 100k unlabelled images as `extra`
                ) -> ClusterData:
    "Load a clustering benchmark by name (or path) into memory."
    root = data_root(root)
    if protocol not in ("paper", "train-test"): raise ValueError(f"protocol must be 'paper' or 'train-test', got {protocol!r}")
    p = Path(str(name)).expanduser()
    if name == "digits":
        d = load_digits_data(); return ClusterData(d, d, 10, "digits")
    if name in TV_DATASETS and (root / f"{name}.npz").exists():   # a compact copy stands in for the torchvision files
        return load_npz_dataset(root / f"{name}.npz", name, protocol)
    if name in TV_DATASETS:
        tr, te = _tv_split(name, root, "train", download), _tv_split(name, root, "test", download)
        extra = _tv_split(name, root, "unlabeled", download) if name == "stl10" and stl10_unlabeled else None
        if protocol == "train-test": return ClusterData(tr, te, te.n_classes, tr.name, extra)
        d = _concat(tr, te); return ClusterData(d, d, d.n_classes, d.name, extra)
    if name in FOLDER_DATASETS:
        sub, k = FOLDER_DATASETS[name]
        if not (root / sub).is_dir():
            raise _missing(name, root, f"{root / sub}/<class>/<images> ({k} class folders; these subsets are not downloadable "
                                       f"through torchvision: build them from ImageNet with the class lists of the papers)")
        d = load_image_folder(root / sub, folder_size or NATIVE_SIZE[name], root / "cache"); d.name = name
        return ClusterData(d, d, k, name)
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

# %% [markdown]
# Offline, a missing benchmark fails at once with the layout it expects:

# %%
with tempfile.TemporaryDirectory() as _t:
    try: load_dataset("cifar10", root=_t, download=False)
    except DatasetNotFound as e: print(e); assert "cifar-10-batches-py" in str(e)
    else: raise AssertionError("expected DatasetNotFound")
    test_fail(lambda: load_dataset("imagenet10", root=_t), contains="imagenet10/<class>/<images>")

# %% [markdown]
# The real-data `.npz` copies (CIFAR-10 test, MNIST test, USPS) are loaded when the data root holds them:

# %%
if (data_root() / "usps.npz").exists():
    _u = load_dataset(str(data_root() / "usps.npz"))
    test_eq(len(_u.train), 9298); test_eq(_u.n_clusters, 10)
    _u = load_dataset("usps", protocol="train-test")            # by the benchmark's name, original splits
    test_eq((len(_u.train), len(_u.eval), _u.name), (7291, 2007, "usps"))

# %% [markdown]
# A look at the default dataset:

# %%
import matplotlib.pyplot as plt
fig, axs = plt.subplots(2, 10, figsize=(10, 2.2))
for c in range(10):
    for r, i in enumerate(np.flatnonzero(_cd.train.y == c)[:2]):
        axs[r, c].imshow(_cd.train.x[i, 0], cmap="gray_r"); axs[r, c].axis("off")
    axs[0, c].set_title(_cd.train.classes[c])
plt.suptitle("scikit-learn digits (8×8)"); plt.tight_layout(); plt.show()

# %%
#| hide
import nbdev; nbdev.nbdev_export()
