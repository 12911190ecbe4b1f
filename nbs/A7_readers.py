# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: the file readers
# > Engineering under the data chapter: small parsers of the benchmarks' real file formats (MNIST's IDX files, USPS's LIBSVM text, CIFAR's pickled batches behind a safe unpickler, STL-10's binaries, ImageFolder trees and Tiny-ImageNet's layout), the builder of ImageNet-10 and ImageNet-Dogs from ILSVRC-2012, and the two errors they raise, each naming the file at fault in one line.

# %%
#| default_exp readers

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import os, io, bz2, gzip, pickle, zipfile, tarfile, shutil, hashlib, warnings, contextlib
from pathlib import Path
import numpy as np

# %%
import re, tempfile, struct
from PIL import Image as _Image

# %% [markdown]
# The data chapter (`02_data`) holds every benchmark in memory as one `uint8` tensor and loads it by name. This
# appendix is what it stands on: the code that turns the files on disk into arrays. Nothing here knows about
# `ImageData`, `ClusterData` or the benchmarks' names; each reader takes a path and returns NumPy arrays (images as
# `uint8` of shape (N, C, H, W), labels as `int64`), and the data chapter wraps them. The layers point one way:
# `deepcluster_nb.data` imports this module, never the reverse.
#
# torchvision's dataset classes both **fetch** a benchmark (download, MD5 check, extraction) and **parse** it. The
# data chapter keeps the first and these readers replace the second, for three reasons:
#
# - *Tests.* torchvision's classes check every file's MD5 before they read it, so they refuse any file a test can
#   write. Our readers parse the very same on-disk formats (IDX, LIBSVM, CIFAR's pickled batches, STL-10's binaries),
#   so `tests/test_data.py` writes tiny files in those formats and runs the real reading code on them.
# - *Only what is used.* torchvision's STL-10 refuses to load the 13,000 labelled images offline unless the 2.6 GB
#   `unlabeled_X.bin` is there too; our reader opens only the files of the split it reads.
# - *One clear error.* Each reader checks sizes and counts and names the file at fault.

# %% [markdown]
# ## Two errors, one line each
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
test_eq(len(_one_line(ValueError("x" * 1000))), 300)
assert issubclass(DatasetNotFound, FileNotFoundError) and issubclass(BadDataset, ValueError)

# %% [markdown]
# ## The data root
# Every benchmark is looked up in one folder, the data root: the `data_root` argument, else the environment variable
# `DEEPCLUSTER_DATA`, else the project's `data/` folder. It is defined here, below the data chapter, because the
# builder of the ImageNet subsets at the end of this appendix writes into it too.

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
_env = os.environ.pop(DATA_ENV, None)
os.environ[DATA_ENV] = "/tmp/from_env"; test_eq(data_root(), Path("/tmp/from_env")); test_eq(data_root("/a"), Path("/a"))
del os.environ[DATA_ENV]; test_eq(data_root().name, "data")
if _env is not None: os.environ[DATA_ENV] = _env

# %% [markdown]
# ## Archives
# The benchmarks come as archives (`cifar-10-python.tar.gz`, `stl10_binary.tar.gz`, `tiny-imagenet-200.zip`) that
# extract into the data root; MNIST's files may stay gzipped. Extraction refuses members that would land outside the
# folder (tar's `data` filter), and a damaged archive is named with the advice to fetch it again.

# %%
#| export
def _gz(p: Path) -> Path:
    "`p`, or `p.gz` when only the compressed file is there."
    return p if p.exists() or not p.with_name(p.name + ".gz").exists() else p.with_name(p.name + ".gz")

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

# %%
with tempfile.TemporaryDirectory() as _t:
    _r = Path(_t)
    (_r / "f.gz").write_bytes(b""); test_eq(_gz(_r / "f"), _r / "f.gz"); test_eq(_gz(_r / "g"), _r / "g")
    (_r / "pack").mkdir(); (_r / "pack" / "a.txt").write_text("hi")
    with tarfile.open(_r / "p.tar.gz", "w:gz") as _tf: _tf.add(_r / "pack", "pack")
    _extract(_r / "p.tar.gz", _r / "out"); test_eq((_r / "out" / "pack" / "a.txt").read_text(), "hi")
    (_r / "bad.tar.gz").write_bytes(b"\x1f\x8b cut")
    test_fail(lambda: _extract(_r / "bad.tar.gz", _r / "out"), contains="bad.tar.gz cannot be extracted")

# %% [markdown]
# ## MNIST: IDX files
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
              ) -> tuple: # (x: uint8 (N, 1, 28, 28), y: int64 (N,), the digits 0–9)
    "One split of MNIST from its IDX files."
    pre = {"train": "train", "test": "t10k"}[split]
    xf, yf = (_gz(Path(folder) / f"{pre}-{k}-ubyte") for k in ("images-idx3", "labels-idx1"))
    x, y = read_idx(xf), read_idx(yf)
    if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or not np.isin(y, range(10)).all():
        raise BadDataset(f"{xf} and {yf} do not hold N uint8 images and N digit labels: {x.dtype} {x.shape}, {y.dtype} {y.shape}")
    return np.ascontiguousarray(x[:, None]), y.astype(np.int64)

# %%
with tempfile.TemporaryDirectory() as _t:
    for _k, _a in (("images-idx3", np.full((3, 28, 28), 7, np.uint8)), ("labels-idx1", np.array([4, 0, 9], np.uint8))):
        (Path(_t) / f"t10k-{_k}-ubyte").write_bytes(struct.pack(">BBBB", 0, 0, 8, _a.ndim) + struct.pack(f">{_a.ndim}I", *_a.shape) + _a.tobytes())
    _mx, _my = read_mnist(_t, "test")
    test_fail(lambda: read_mnist(_t, "train"), contains="train-images-idx3-ubyte cannot be read")
test_eq((_mx.shape, _my.tolist(), int(_mx[2, 0, 5, 5]), _my.dtype), ((3, 1, 28, 28), [4, 0, 9], 7, np.int64))

# %% [markdown]
# ## USPS: LIBSVM text
# torchvision's USPS files are bzip2-compressed LIBSVM text: one line per image, the label (1–10 for the digits 0–9),
# then `index:value` pairs for the 256 pixels of a 16×16 image, values in [−1, 1]. An omitted index means 0, as in any
# LIBSVM file. We map a value `v` to `round((v + 1) / 2 · 255)` (the compact `usps.npz` copy uses the same rounding).

# %%
#| export
def read_usps(path, # usps.bz2 (the 7,291 training images) or usps.t.bz2 (the 2,007 test images)
             ) -> tuple: # (x: uint8 (N, 1, 16, 16), y: int64 (N,), the digits 0–9)
    "USPS from a bzip2-compressed LIBSVM file."
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
    return np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8).reshape(-1, 1, 16, 16), y

# %%
with tempfile.TemporaryDirectory() as _t:
    _p = Path(_t) / "usps.t.bz2"
    _p.write_bytes(bz2.compress(("1 " + " ".join(f"{j + 1}:-1" for j in range(256)) + "\n10 1:1 256:0.5\n").encode()))
    _ux, _uy = read_usps(_p)
    test_eq((_uy.tolist(), int(_ux[0].max()), int(_ux[1, 0, 0, 0]), int(_ux[1, 0, 0, 1]), int(_ux[1, 0, 15, 15])), ([0, 9], 0, 255, 128, 191))
    _p.write_bytes(bz2.compress(b"3 0:1\n"))
    test_fail(lambda: read_usps(_p), contains="usps.t.bz2, line 1: not a USPS line")

# %% [markdown]
# ## CIFAR-10 and CIFAR-100: pickled batches
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
    _p.write_bytes(pickle.dumps([1, 2]))
    test_fail(lambda: _unpickle(_p), contains="it holds a list, not a dict")

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
              ) -> tuple: # (x: uint8 (N, 3, 32, 32), y: int64 (N,), CIFAR-10's classes or CIFAR-100's superclasses)
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
    return np.concatenate(xs), np.concatenate(ys)

# %%
with tempfile.TemporaryDirectory() as _t:
    _x = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    (Path(_t) / "test").write_bytes(pickle.dumps({"data": _x, "fine_labels": [0, 58], "coarse_labels": [4, 18]}, protocol=2))
    _cx, _cy = read_cifar(_t, "test", "cifar100")
    test_eq((_cy.tolist(), CIFAR100_SUPERCLASSES[_cy[1]]), ([4, 18], "vehicles 1"))
    test_eq(_cx[1, 2, 0, :4].tolist(), _x[1, 2048:2052].tolist())                 # blue plane, first row
    (Path(_t) / "test").write_bytes(pickle.dumps({"data": _x, "fine_labels": [0, 58], "coarse_labels": [4, 17]}, protocol=2))
    test_fail(lambda: read_cifar(_t, "test", "cifar100"), contains="coarse_labels disagree")

# %% [markdown]
# ## STL-10: raw binaries
# STL-10's `*_X.bin` files are raw `uint8` images of 3 × 96 × 96, each colour plane stored **column by column**
# (MATLAB's order), so a plane read row-major must be transposed; `*_y.bin` holds one byte per image, the labels 1–10.
# `unlabeled_X.bin` holds the 100,000 unlabelled images (2.6 GB): it is read only when asked for, plane by plane into
# one preallocated array, so memory peaks at the size of the result.

# %%
#| export
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]

def read_stl10(folder, # the extracted stl10_binary/ folder
               split:str="train", # "train" (5,000 images), "test" (8,000) or "unlabeled" (100,000, labels -1)
              ) -> tuple: # (x: uint8 (N, 3, 96, 96), y: int64 (N,), 0–9, or -1 for the unlabelled split)
    "One split of STL-10 from its binaries."
    xf, per = Path(folder) / f"{split}_X.bin", 3 * 96 * 96
    n, rest = divmod(xf.stat().st_size, per)
    if rest or not n: raise BadDataset(f"{xf}: {xf.stat().st_size} bytes is not a whole number of 3×96×96 images (truncated?)")
    raw, x = np.memmap(xf, np.uint8, "r", shape=(n, 3, 96, 96)), np.empty((n, 3, 96, 96), np.uint8)
    for i in range(0, n, 4096): x[i:i + 4096] = raw[i:i + 4096].transpose(0, 1, 3, 2)
    del raw
    if split == "unlabeled": return x, np.full(n, -1, np.int64)
    yf = Path(folder) / f"{split}_y.bin"
    y = np.fromfile(yf, np.uint8).astype(np.int64) - 1
    if len(y) != n or not np.isin(y, range(10)).all():
        raise BadDataset(f"{yf}: expected {n} labels in 1–10 (one per image of {xf.name}), got {len(y)}"
                         + (f" in {y.min() + 1}–{y.max() + 1}" if len(y) else ""))
    return x, y

# %%
with tempfile.TemporaryDirectory() as _t:
    _x = np.random.default_rng(0).integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)   # (N, C, row, column)
    (Path(_t) / "test_X.bin").write_bytes(_x.transpose(0, 1, 3, 2).tobytes())       # column-major planes on disk
    (Path(_t) / "test_y.bin").write_bytes(bytes([10, 1]))
    _sx, _sy = read_stl10(_t, "test")
    test_eq(_sx, _x); test_eq(_sy.tolist(), [9, 0])
    (Path(_t) / "test_y.bin").write_bytes(bytes([10]))
    test_fail(lambda: read_stl10(_t, "test"), contains="test_y.bin: expected 2 labels in 1–10")

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
# ## ImageFolder trees, decoded once
# ImageNet-10, ImageNet-Dogs, Tiny-ImageNet and any custom folder `root/<class>/<images>` are listed, then decoded once
# with PIL, resized (shorter side to `size`, antialiased, then the centre square) and cached as `.npz` in a cache
# folder (the data chapter uses `<data root>/cache/`), so later runs start in seconds; when the cache folder cannot be
# written the cache is skipped with a warning. A class folder without images, or a file PIL cannot decode, stops the
# load with the folder's or the file's name: a silently missing class would shift every label after it.

# %%
#| export
IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

def image_folder_files(path, # a folder with one sub-folder of images per class (searched recursively)
                       classes=None, # the class folders it must hold, exactly (default: every sub-folder)
                      ) -> tuple: # (class names, sorted; [(file, label), ...])
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

# %% [markdown]
# The cache file is named after the dataset, the size and a hash of every file's path, size and modification time, so
# an edited folder is decoded again; it holds `x` (N, size, size, 3), `y` and `classes`, and one that cannot be read
# back is decoded again with a warning.

# %%
#| export
def _cached_x(cache:Path, n:int, size:int):
    "The images of a decode cache, or None (with a warning) when it is unreadable or does not match."
    try:
        with np.load(cache, allow_pickle=False) as d: x = d["x"]
        if x.dtype != np.uint8 or x.shape != (n, size, size, 3): raise ValueError(f"it holds {x.dtype} {x.shape}")
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    except Exception as e: warnings.warn(f"decoding again: {cache} is not a usable cache ({_one_line(e)})")

def read_image_files(pairs, # [(image file, label), ...], as `image_folder_files` lists them
                     classes, # the class names (stored in the cache beside the images)
                     size:int, # side of the square images
                     cache_dir=None, # folder of the decode cache; None = no cache
                     progress:bool=True, # show a progress bar while decoding
                     name:str="", # the dataset's name, the first part of the cache file's name
                    ) -> np.ndarray: # uint8 (N, 3, size, size)
    "Decode image files into `size`×`size` RGB squares, through an `.npz` cache in `cache_dir` when given."
    files, y = [f for f, _ in pairs], np.array([c for _, c in pairs], np.int64)
    cache = None
    if cache_dir is not None:
        h = hashlib.md5(f"v2|{size}".encode())
        for f in files: st = f.stat(); h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        cache = Path(cache_dir) / f"{name}_{size}px_{h.hexdigest()[:10]}.npz"
        x = _cached_x(cache, len(files), size) if cache.exists() else None
        if x is not None: return x
    from tqdm.auto import tqdm
    x = np.empty((len(files), 3, size, size), np.uint8)
    for i, f in enumerate(tqdm(files, desc=f"decoding {name}", disable=not progress, mininterval=2)):
        x[i] = np.asarray(_square(_open_rgb(f, size), size)).transpose(2, 0, 1)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.stem + ".tmp.npz")
            np.savez(tmp, x=x.transpose(0, 2, 3, 1), y=y, classes=np.array(classes)); os.replace(tmp, cache)
        except OSError as e: warnings.warn(f"decoded images not cached in {cache.parent} ({_one_line(e)}); they will be decoded again next time")
    return x

# %%
with tempfile.TemporaryDirectory() as _t:
    for _c, _col in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
        (Path(_t) / "imgs" / _c).mkdir(parents=True)
        for _i in range(3): _Image.new("RGB", (40, 30), _col).save(Path(_t) / "imgs" / _c / f"{_i}.png")
    _cl, _pairs = image_folder_files(Path(_t) / "imgs")
    _f = read_image_files(_pairs, _cl, 16, Path(_t) / "cache", progress=False, name="imgs")
    _cache = next((Path(_t) / "cache").glob("imgs_16px_*.npz"))
    _g = read_image_files(_pairs, _cl, 16, Path(_t) / "cache", progress=False, name="imgs")  # from the cache
    _cache.write_bytes(b"damaged")
    with warnings.catch_warnings(record=True) as _w:
        warnings.simplefilter("always"); _h = read_image_files(_pairs, _cl, 16, Path(_t) / "cache", progress=False, name="imgs")
    assert "decoding again" in str(_w[0].message)
test_eq((_f.shape, _cl, _f[0, :, 0, 0].tolist()), ((6, 3, 16, 16), ["blue", "red"], [0, 0, 255])); test_eq(_f, _g); test_eq(_f, _h)

# %% [markdown]
# ## Tiny-ImageNet's layout
# Tiny-ImageNet (`tiny-imagenet-200.zip`, from the Stanford CS231n course page; not in torchvision) extracts to
# `tiny-imagenet-200/` with `wnids.txt` (the 200 WordNet ids), `train/<wnid>/images/<wnid>_<i>.JPEG` (500 per class,
# 64 × 64) and `val/images/*.JPEG` labelled by `val/val_annotations.txt` (50 per class). The layout is checked: the
# class folders must be exactly those of `wnids.txt`, each with its images in `images/`.

# %%
#| export
def tiny_imagenet_files(folder, # the extracted tiny-imagenet-200/ folder
                        split:str="train", # "train" (100,000 images) or "val" (10,000, labelled by val_annotations.txt)
                       ) -> tuple: # (the 200 WordNet ids, sorted; [(file, label), ...])
    "The classes and the `(file, label)` pairs of one split of Tiny-ImageNet."
    folder = Path(folder)
    classes, pairs = image_folder_files(folder / "train", (folder / "wnids.txt").read_text().split())
    off = next((f for f, _ in pairs if f.parent.name != "images" or f.parent.parent.parent != folder / "train"), None)
    if off is not None: raise BadDataset(f"{off} is not where Tiny-ImageNet keeps its images (train/<wnid>/images/*.JPEG)")
    if split == "train": return classes, pairs
    ann, index, val = folder / "val" / "val_annotations.txt", {c: i for i, c in enumerate(classes)}, []
    if not ann.exists(): raise DatasetNotFound(f"{ann} is missing: it labels Tiny-ImageNet's validation images")
    for i, line in enumerate(ann.read_text().splitlines()):
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index: raise BadDataset(f"{ann}, line {i + 1}: expected '<file>\\t<wnid of wnids.txt>\\t...'")
        val.append((folder / "val" / "images" / parts[0], index[parts[1]]))
    return classes, val

# %%
with tempfile.TemporaryDirectory() as _t:
    _r = Path(_t) / "tiny-imagenet-200"; _tw = [f"n{i:08d}" for i in (2, 0, 1)]
    (_r / "val" / "images").mkdir(parents=True); (_r / "wnids.txt").write_text("\n".join(_tw))
    for _w in _tw: (_r / "train" / _w / "images").mkdir(parents=True); (_r / "train" / _w / "images" / f"{_w}_0.JPEG").write_bytes(b"")
    test_fail(lambda: tiny_imagenet_files(_r, "val"), contains="val_annotations.txt is missing")
    (_r / "val" / "val_annotations.txt").write_text("".join(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63\n" for i, w in enumerate(_tw)))
    _cl, _tr = tiny_imagenet_files(_r); _, _va = tiny_imagenet_files(_r, "val")
    test_eq((_cl, [y for _, y in _tr], [(f.name, y) for f, y in _va]), (sorted(_tw), [0, 1, 2], [("val_0.JPEG", 2), ("val_1.JPEG", 0), ("val_2.JPEG", 1)]))
    (_r / "train" / _tw[0] / "loose.JPEG").write_bytes(b"")
    test_fail(lambda: tiny_imagenet_files(_r), contains="loose.JPEG is not where Tiny-ImageNet keeps its images")

# %% [markdown]
# ## Building ImageNet-10 and ImageNet-Dogs from ILSVRC-2012
# These subsets cannot be downloaded. `build_imagenet_subset` reads the training images of the subset's classes from
# any of the three shapes ILSVRC-2012's training set comes in: the extracted `train/<wnid>/*.JPEG` folders, the 1,000
# per-class `<wnid>.tar` files, or the single `ILSVRC2012_img_train.tar` (a tar of those tars, read in place, nothing
# else extracted). Before writing anything it checks that every class is there with its 1,300 images, and names the
# missing or short classes. It then writes `<dest>/<name>/<wnid>/<file>.JPEG`, shrinking each image so that its
# shorter side is `size` (256 by default, enough for 224 px crops; JPEG quality 95; `size=None` copies the original
# files untouched), into a temporary folder that is renamed only once all images are in. The data chapter's loader
# then takes the centre 256 × 256 square of each.

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

# %%
#| hide
import nbdev; nbdev.nbdev_export()
