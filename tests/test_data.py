"""The data layer on miniature copies of every benchmark, written here in each benchmark's real on-disk format (CIFAR's
pickled batches, STL-10's binaries, MNIST's IDX files, USPS's LIBSVM text, ImageFolder trees named by the real
WordNet ids, Tiny-ImageNet's layout), loaded through `load_dataset(name, root, download=False)`; plus one test per
bad input and per missing benchmark (a one-line message, nothing chained), and the real `.npz` copies of the data root
when it has them (skipped otherwise)."""
import bz2, gzip, io, pickle, struct, tarfile, tracemalloc
from pathlib import Path
from urllib.error import URLError
import numpy as np
import pytest
from PIL import Image
from conftest import shared_npz
import deepcluster_nb.data as D
from deepcluster_nb.data import load_dataset, load_npz, load_image_folder, DatasetNotFound, BadDataset
from deepcluster_nb.readers import (build_imagenet_subset, IMAGENET10_WNIDS, IMAGENET_DOGS_WNIDS, CIFAR100_SUPERCLASSES,
                                    STL10_CLASSES)

# Facts from the CIFAR-100 documentation, written out here independently of CIFAR100_COARSE:
# fine label (alphabetical) -> coarse label (alphabetical superclass)
FINE_TO_COARSE = {0: 4, 1: 1, 2: 14, 3: 8, 4: 0, 19: 11, 58: 18, 98: 14, 99: 13}  # apple, aquarium fish, baby, bear,
                                                                                   # beaver, cattle, pickup truck, woman, worm

def rng(seed=0): return np.random.default_rng(seed)

def raised(excinfo, *needles):
    "The exception of `pytest.raises`: one line, holding every needle, with no chained cause or context shown."
    e, msg = excinfo.value, str(excinfo.value)
    assert "\n" not in msg, msg
    for n in needles: assert n in msg, (n, msg)
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__), "a chained exception would be printed"
    return msg

# ---------------------------------------------------------------- writers of the real formats
class Py2Pickler(pickle._Pickler):
    """Pickles the way CIFAR's python version was written (Python 2, protocol 2): `bytes` become Python 2 strings
    (SHORT_BINSTRING/BINSTRING) and NumPy's globals are named `numpy.core.multiarray`, as NumPy 1 named them."""
    dispatch = dict(pickle._Pickler.dispatch)
    def save_py2_str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)
    dispatch[bytes] = save_py2_str
    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None) or pickle.whichmodule(obj, name)
        self.write(pickle.GLOBAL + f"{module.replace('numpy._core', 'numpy.core')}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)
    dispatch[type(len)] = save_global

def py2_pickle(obj) -> bytes:
    f = io.BytesIO(); Py2Pickler(f, protocol=2).dump(obj); return f.getvalue()

def write_cifar10(root, n=3):
    "cifar-10-batches-py/: data_batch_1..5 and test_batch (pickled dicts, as the python version), batches.meta."
    d = Path(root) / "cifar-10-batches-py"; d.mkdir(parents=True)
    out = {}
    for i, f in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        x, y = rng(i).integers(0, 256, (n, 3072), dtype=np.uint8), rng(i).integers(0, 10, n).tolist()
        (d / f).write_bytes(py2_pickle({b"batch_label": f"batch {i}".encode(), b"labels": y, b"data": x,
                                        b"filenames": [f"{f}_{j}.png".encode() for j in range(n)]}))
        out[f] = (x, y)
    (d / "batches.meta").write_bytes(py2_pickle({b"num_cases_per_batch": n, b"label_names": [b"airplane"] * 10, b"num_vis": 3072}))
    return out

def write_cifar100(root, fine_train=(0, 1, 2, 58, 99), fine_test=(3, 4, 19, 98), wrong_coarse=False):
    "cifar-100-python/: train, test (data, fine_labels, coarse_labels) and meta."
    d = Path(root) / "cifar-100-python"; d.mkdir(parents=True)
    for split, fine in (("train", fine_train), ("test", fine_test)):
        x = rng(len(fine)).integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        coarse = [FINE_TO_COARSE[f] for f in fine]
        if wrong_coarse and split == "test": coarse[0] = 7
        (d / split).write_bytes(py2_pickle({b"filenames": [f"{j}.png".encode() for j in range(len(fine))], b"batch_label": split.encode(),
                                            b"fine_labels": list(fine), b"coarse_labels": coarse, b"data": x}))
    (d / "meta").write_bytes(py2_pickle({b"fine_label_names": [b"x"] * 100, b"coarse_label_names": [b"y"] * 20}))

def write_stl10(root, n_train=3, n_test=2, n_unlabeled=4):
    "stl10_binary/: {train,test,unlabeled}_X.bin (planes stored column by column), {train,test}_y.bin (labels 1-10)."
    d = Path(root) / "stl10_binary"; d.mkdir(parents=True)
    labels = {}
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        planes = np.zeros((n, 3, 96 * 96), np.uint8)
        planes[:, 0, 96] = 255       # column-major: byte 96 of the red plane is row 0, column 1
        planes[:, 2, 1] = 200        # and byte 1 of the blue plane is row 1, column 0
        planes[:, 1, :] += np.arange(n, dtype=np.uint8)[:, None]          # green tells the images apart
        (d / f"{split}_X.bin").write_bytes(planes.tobytes())
        if split != "unlabeled":
            labels[split] = [(i % 10) + 1 for i in range(n)]
            (d / f"{split}_y.bin").write_bytes(bytes(labels[split]))
    (d / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return labels

def idx_bytes(a):
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()

def write_mnist(root, n_train=4, n_test=3):
    "MNIST/raw/: the training files gzipped (as downloaded), the test files uncompressed (as extracted)."
    d = Path(root) / "MNIST" / "raw"; d.mkdir(parents=True)
    out = {}
    for pre, n, gz in (("train", n_train, True), ("t10k", n_test, False)):
        x, y = rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            f = d / f"{pre}-{kind}-ubyte"
            if gz:
                with gzip.open(f.with_name(f.name + ".gz"), "wb") as g: g.write(idx_bytes(a))
            else: f.write_bytes(idx_bytes(a))
        out[pre] = (x, y)
    return out

def write_usps(root):
    "usps.bz2 and usps.t.bz2: LIBSVM lines 'label index:value ...', labels 1-10, values in [-1, 1]."
    lines = {"usps.bz2": ["1 " + " ".join(f"{j}:-1" for j in range(1, 257)), "10 1:1 17:0"],
             "usps.t.bz2": ["5 " + " ".join(f"{j}:1" for j in range(1, 257))]}
    for f, ls in lines.items(): (Path(root) / f).write_bytes(bz2.compress(("\n".join(ls) + "\n").encode()))

def write_folder_tree(folder, classes, per_class=2, size=(40, 30), sub=""):
    "folder/<class>/<sub>/<class>_<j>.JPEG, class i painted (17 i, 100, 200 - 10 i)."
    for i, c in enumerate(classes):
        (Path(folder) / c / sub).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            Image.new("RGB", size, (17 * i, 100, 200 - 10 * i)).save(Path(folder) / c / sub / f"{c}_{j}.JPEG", quality=95)

TINY_WNIDS = [f"n{i:08d}" for i in range(1, 201)]

def write_tiny_imagenet(root, per_class=1, val_per_class=1):
    "tiny-imagenet-200/: wnids.txt, train/<wnid>/images/*.JPEG (+ boxes), val/images/*.JPEG and val_annotations.txt."
    t = Path(root) / "tiny-imagenet-200"
    write_folder_tree(t / "train", TINY_WNIDS, per_class, (64, 64), sub="images")
    for w in TINY_WNIDS: (t / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t63\t63\n")
    (t / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (t / "val" / "images").mkdir(parents=True)
    ann = []
    for i, w in enumerate(TINY_WNIDS[:10] * val_per_class):
        Image.new("RGB", (64, 64), (0, 0, 0)).save(t / "val" / "images" / f"val_{i}.JPEG")
        ann.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (t / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return t

# ---------------------------------------------------------------- each benchmark in its real format
def test_cifar10(tmp_path):
    b = write_cifar10(tmp_path)
    d = load_dataset("cifar10", tmp_path, download=False)
    assert d.train is d.eval and (d.n_clusters, tuple(d.train.x.shape), d.train.x.dtype) == (10, (18, 3, 32, 32), D.torch.uint8)
    want_y = sum((b[f][1] for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]), [])
    assert d.train.y.tolist() == want_y and d.train.classes[0] == "airplane"
    x0 = b["data_batch_1"][0][0]
    assert int(d.train.x[0, 1, 5, 7]) == x0[1024 + 5 * 32 + 7]        # green plane, row 5, column 7
    assert (d.train.x[-1].numpy().ravel() == b["test_batch"][0][-1]).all()
    tt = load_dataset("cifar10", tmp_path, protocol="train-test", download=False)
    assert (len(tt.train), len(tt.eval), tt.eval.y.tolist()) == (15, 3, b["test_batch"][1])

def test_cifar_batch_written_by_python3(tmp_path):
    "A batch re-saved from Python 3 (protocol 2: bytes through _codecs.encode; protocol 5: out-of-band buffers) reads the same."
    d = tmp_path / "cifar-10-batches-py"; d.mkdir()
    x = rng().integers(0, 256, (2, 3072), dtype=np.uint8)
    for i, f in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        (d / f).write_bytes(pickle.dumps({"data": x, "labels": [i, 9 - i]}, protocol=2 if i % 2 else 5))
    c = load_dataset("cifar10", tmp_path, download=False)
    assert c.train.y.tolist()[:4] == [0, 9, 1, 8] and (c.train.x[5].numpy().ravel() == x[1]).all()

def test_cifar10_from_its_archive_alone(tmp_path):
    write_cifar10(tmp_path / "stage")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as t:
        t.add(tmp_path / "stage" / "cifar-10-batches-py", "cifar-10-batches-py")
    d = load_dataset("cifar10", tmp_path, download=False)
    assert len(d.train) == 18 and (tmp_path / "cifar-10-batches-py" / "test_batch").exists()

def test_cifar100_twenty_superclasses(tmp_path):
    write_cifar100(tmp_path)
    d = load_dataset("cifar100", tmp_path, download=False)
    assert (d.n_clusters, len(d.train), d.train.classes) == (20, 9, CIFAR100_SUPERCLASSES)
    assert d.train.y.tolist() == [FINE_TO_COARSE[f] for f in (0, 1, 2, 58, 99, 3, 4, 19, 98)]
    assert d.train.classes[d.train.y[3]] == "vehicles 1"                # pickup truck
    tt = load_dataset("cifar100", tmp_path, protocol="train-test", download=False)
    assert (len(tt.train), tt.eval.y.tolist()) == (5, [8, 0, 11, 14])

def test_stl10_labelled_splits_need_no_unlabelled_file(tmp_path):
    labels = write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").unlink()
    d = load_dataset("stl10", tmp_path, download=False)
    assert (tuple(d.train.x.shape), d.n_clusters, d.extra) == ((5, 3, 96, 96), 10, None)
    assert d.train.y.tolist() == [l - 1 for l in labels["train"] + labels["test"]]
    x = d.train.x
    assert (x[:, 0, 0, 1] == 255).all() and (x[:, 0, 1, 0] == 0).all()   # the column-major planes, transposed
    assert (x[:, 2, 1, 0] == 200).all() and (x[:, 2, 0, 1] == 0).all()
    assert x[:, 1, 50, 50].tolist() == [0, 1, 2, 0, 1]
    tt = load_dataset("stl10", tmp_path, protocol="train-test", download=False)
    assert (len(tt.train), len(tt.eval)) == (3, 2)
    with pytest.raises(DatasetNotFound) as e:
        load_dataset("stl10", tmp_path, download=False, stl10_unlabeled=True)
    raised(e, "unlabeled_X.bin", "stl10_binary.tar.gz")

def test_stl10_unlabelled_split_as_extra(tmp_path):
    write_stl10(tmp_path)
    d = load_dataset("stl10", tmp_path, download=False, stl10_unlabeled=True)
    assert tuple(d.extra.x.shape) == (4, 3, 96, 96) and (d.extra.y == -1).all() and len(d.train) == 5
    assert (d.extra.x[:, 0, 0, 1] == 255).all() and d.extra.x[:, 1, 9, 9].tolist() == [0, 1, 2, 3]
    np.savez(tmp_path / "stl10.npz", x=np.zeros((2, 96, 96, 3), np.uint8), y=np.array([0, 1]))   # a compact stand-in
    d = load_dataset("stl10", tmp_path, download=False, stl10_unlabeled=True)
    assert (len(d.train), len(d.extra), d.name) == (2, 4, "stl10")
    with pytest.raises(ValueError, match="for 'stl10' only"):
        load_dataset("cifar10", tmp_path, stl10_unlabeled=True)

def test_mnist_idx_files(tmp_path):
    m = write_mnist(tmp_path)
    d = load_dataset("mnist", tmp_path, download=False)
    assert (tuple(d.train.x.shape), d.n_clusters) == ((7, 1, 28, 28), 10)
    assert (d.train.x[:4, 0].numpy() == m["train"][0]).all() and (d.train.x[4:, 0].numpy() == m["t10k"][0]).all()
    assert d.train.y.tolist() == [0, 1, 2, 3, 0, 1, 2]
    tt = load_dataset("mnist", tmp_path, protocol="train-test", download=False)
    assert (len(tt.train), len(tt.eval)) == (4, 3)

def test_usps_libsvm_files(tmp_path):
    write_usps(tmp_path)
    d = load_dataset("usps", tmp_path, protocol="train-test", download=False)
    assert (tuple(d.train.x.shape), d.train.y.tolist(), d.eval.y.tolist()) == ((2, 1, 16, 16), [0, 9], [4])
    assert int(d.train.x[0].max()) == 0 and int(d.eval.x.min()) == 255
    assert (int(d.train.x[1, 0, 0, 0]), int(d.train.x[1, 0, 1, 0]), int(d.train.x[1, 0, 0, 1])) == (255, 128, 128)  # 17:0 and omitted = 0

def test_imagenet10_and_dogs_folders(tmp_path):
    for name, wnids in (("imagenet10", IMAGENET10_WNIDS), ("imagenet_dogs", IMAGENET_DOGS_WNIDS)):
        write_folder_tree(tmp_path / name, wnids)
        with pytest.warns(UserWarning, match="do not hold the benchmark's 1300 images"):
            d = load_dataset(name, tmp_path, download=False, folder_size=16)
        k = len(wnids)
        assert (d.n_clusters, tuple(d.train.x.shape), d.train.classes) == (k, (2 * k, 3, 16, 16), sorted(wnids))
        assert d.train.y.tolist() == [i // 2 for i in range(2 * k)]
        assert abs(int(d.train.x[2 * (k - 1), 0, 8, 8]) - 17 * (k - 1)) <= 3      # the colour of the last class
    with pytest.warns(UserWarning):
        d = load_dataset("imagenet10", tmp_path, download=False)                 # the default: 256 px squares
    assert tuple(d.train.x.shape) == (20, 3, 256, 256) and any((tmp_path / "cache").glob("imagenet10_256px_*.npz"))

def test_tiny_imagenet_layout(tmp_path):
    write_tiny_imagenet(tmp_path)
    with pytest.warns(UserWarning, match="do not hold the benchmark's 500 images"):
        d = load_dataset("tiny_imagenet", tmp_path, download=False)
    assert (d.n_clusters, tuple(d.train.x.shape), d.train.y[:3].tolist(), d.train is d.eval) == (200, (200, 3, 64, 64), [0, 1, 2], True)
    with pytest.warns(UserWarning):
        tt = load_dataset("tiny_imagenet", tmp_path, protocol="train-test", download=False)
    assert (len(tt.train), len(tt.eval), tt.eval.y.tolist()) == (200, 10, list(range(10)))

def test_tiny_imagenet_checks(tmp_path):
    t = write_tiny_imagenet(tmp_path)
    stray = t / "train" / TINY_WNIDS[5] / "loose.JPEG"
    stray.write_bytes((t / "train" / TINY_WNIDS[5] / "images" / f"{TINY_WNIDS[5]}_0.JPEG").read_bytes())
    with pytest.raises(BadDataset) as e: load_dataset("tiny_imagenet", tmp_path, download=False)
    raised(e, "loose.JPEG", "train/<wnid>/images/*.JPEG")
    stray.unlink()
    for f in (t / "train" / TINY_WNIDS[7]).rglob("*"): f.unlink() if f.is_file() else None
    for f in sorted((t / "train" / TINY_WNIDS[7]).rglob("*"), reverse=True): f.rmdir()
    (t / "train" / TINY_WNIDS[7]).rmdir()
    with pytest.raises(DatasetNotFound, match=f"must hold exactly 200 class folders: missing {TINY_WNIDS[7]}"):
        load_dataset("tiny_imagenet", tmp_path, download=False)

def test_tiny_imagenet_from_its_zip(tmp_path):
    import zipfile, shutil
    write_tiny_imagenet(tmp_path / "stage")
    shutil.make_archive(str(tmp_path / "tiny-imagenet-200"), "zip", tmp_path / "stage")
    assert zipfile.is_zipfile(tmp_path / "tiny-imagenet-200.zip")
    with pytest.warns(UserWarning):
        assert len(load_dataset("tiny_imagenet", tmp_path, download=False, folder_size=8).train) == 200

# ---------------------------------------------------------------- the ImageNet subsets' builder
def ilsvrc_train(folder, wnids, per_class=2, extra_class="n01440764"):
    "A miniature ILSVRC-2012 train folder: <wnid>/<wnid>_<j>.JPEG, 300 x 200 px, plus a class of neither subset."
    write_folder_tree(folder, list(wnids) + [extra_class], per_class, (300, 200))
    return folder

@pytest.mark.parametrize("shape", ["folders", "class_tars", "train_tar"])
def test_build_imagenet10_from_each_shape(tmp_path, shape):
    src = ilsvrc_train(tmp_path / "train", IMAGENET10_WNIDS)
    if shape != "folders":
        (tmp_path / "tars").mkdir()
        for c in sorted(p.name for p in src.iterdir()):
            with tarfile.open(tmp_path / "tars" / f"{c}.tar", "w") as t:
                for f in sorted((src / c).iterdir()): t.add(f, f.name)
        src = tmp_path / "tars"
        if shape == "train_tar":
            with tarfile.open(tmp_path / "ILSVRC2012_img_train.tar", "w") as t:
                for f in sorted(src.iterdir()): t.add(f, f.name)
            src = tmp_path / "ILSVRC2012_img_train.tar"
    out = build_imagenet_subset("imagenet10", src, tmp_path / "root", size=64, per_class=2, progress=False)
    assert out == tmp_path / "root" / "imagenet10" and sorted(p.name for p in out.iterdir()) == sorted(IMAGENET10_WNIDS)
    assert Image.open(out / IMAGENET10_WNIDS[0] / f"{IMAGENET10_WNIDS[0]}_1.JPEG").size == (96, 64)   # shorter side 64
    with pytest.warns(UserWarning, match="20 images in all instead of 13,000"):
        d = load_dataset("imagenet10", tmp_path / "root", download=False, folder_size=32)
    assert (d.n_clusters, tuple(d.train.x.shape)) == (10, (20, 3, 32, 32))

def test_build_imagenet_dogs_copies_files_unchanged(tmp_path):
    src = ilsvrc_train(tmp_path / "train", IMAGENET_DOGS_WNIDS, per_class=1)
    out = build_imagenet_subset("imagenet_dogs", src, tmp_path, size=None, per_class=1, progress=False)
    w = IMAGENET_DOGS_WNIDS[3]
    assert (out / w / f"{w}_0.JPEG").read_bytes() == (src / w / f"{w}_0.JPEG").read_bytes()
    assert len(list(out.rglob("*.JPEG"))) == 15

def test_build_names_missing_and_short_classes(tmp_path):
    src = ilsvrc_train(tmp_path / "train", IMAGENET_DOGS_WNIDS)
    for f in (src / "n02110958").iterdir(): f.unlink()
    (src / "n02110958").rmdir()                                                    # pug missing
    (src / "n02099601" / "n02099601_0.JPEG").unlink()                            # golden retriever short
    with pytest.raises(BadDataset) as e:
        build_imagenet_subset("imagenet_dogs", src, tmp_path / "root", per_class=2, progress=False)
    raised(e, "needs 15 classes × 2 images", "missing n02110958 (pug)", "n02099601 (golden retriever) has 1")
    assert not (tmp_path / "root").exists()
    with pytest.raises(BadDataset, match="needs 15 classes × 1,300 images"):
        build_imagenet_subset("imagenet_dogs", src, tmp_path / "root", progress=False)
    with pytest.raises(ValueError, match="name must be one of imagenet10, imagenet_dogs"):
        build_imagenet_subset("imagenet100", src, tmp_path)
    with pytest.raises(DatasetNotFound, match="No ILSVRC-2012 training set at"):
        build_imagenet_subset("imagenet10", tmp_path / "nowhere", tmp_path)

def test_build_refuses_to_overwrite_unless_asked(tmp_path):
    src = ilsvrc_train(tmp_path / "train", IMAGENET10_WNIDS, per_class=1)
    build_imagenet_subset("imagenet10", src, tmp_path, size=16, per_class=1, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_imagenet_subset("imagenet10", src, tmp_path, per_class=1, progress=False)
    build_imagenet_subset("imagenet10", src, tmp_path, size=16, per_class=1, overwrite=True, progress=False)
    assert len(list((tmp_path / "imagenet10").rglob("*.JPEG"))) == 10 and not (tmp_path / ".imagenet10.partial").exists()

def test_build_names_an_undecodable_image(tmp_path):
    src = ilsvrc_train(tmp_path / "train", IMAGENET10_WNIDS, per_class=1)
    w = IMAGENET10_WNIDS[4]
    (src / w / f"{w}_0.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(BadDataset) as e:
        build_imagenet_subset("imagenet10", src, tmp_path / "root", per_class=1, progress=False)
    raised(e, f"{w}/{w}_0.JPEG cannot be decoded")

# ---------------------------------------------------------------- offline: one line naming the right files
OFFLINE = [("cifar10", ["cifar-10-python.tar.gz", "cifar-10-batches-py/", "cifar10.npz"]),
           ("cifar100", ["cifar-100-python.tar.gz", "cifar-100-python/", "cifar100.npz"]),
           ("stl10", ["stl10_binary.tar.gz", "stl10_binary/", "train_X.bin", "stl10.npz"]),
           ("mnist", ["{train,t10k}-{images-idx3,labels-idx1}-ubyte", "MNIST/raw/", "mnist.npz"]),
           ("usps", ["usps.bz2", "usps.t.bz2", "usps.npz"]),
           ("imagenet10", ["imagenet10/<wnid>/<images>", "build_imagenet_subset('imagenet10'", "imagenet10.npz"]),
           ("imagenet_dogs", ["imagenet_dogs/<wnid>/<images>", "IMAGENET_DOGS_WNIDS"]),
           ("tiny_imagenet", ["tiny-imagenet-200.zip", "train/<wnid>/images/*.JPEG", "tiny_imagenet.npz"])]

@pytest.mark.parametrize("name,needles", OFFLINE, ids=[n for n, _ in OFFLINE])
def test_offline_message(tmp_path, name, needles):
    with pytest.raises(DatasetNotFound) as e:
        load_dataset(name, tmp_path, download=False)
    raised(e, f"Dataset {name!r} is not in {tmp_path}", *needles)
    if name not in ("imagenet10", "imagenet_dogs", "tiny_imagenet"): assert "(download=False)" in str(e.value)

@pytest.mark.parametrize("name,needles", OFFLINE[:5], ids=[n for n, _ in OFFLINE[:5]])
def test_unreachable_network_message(tmp_path, monkeypatch, name, needles):
    calls = []
    def no_network(n, root):
        calls.append((n, root)); raise URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(D, "_download", no_network)
    with pytest.raises(DatasetNotFound) as e:
        load_dataset(name, tmp_path)
    raised(e, "the download failed: URLError: <urlopen error [Errno -2] Name or service not known>", *needles)
    assert calls == [(name, tmp_path)]

def test_download_then_our_reader(tmp_path, monkeypatch):
    "With network, torchvision's downloader fetches the files once; our reader parses them."
    monkeypatch.setattr(D, "_download", lambda name, root: write_usps(root))
    assert len(load_dataset("usps", tmp_path).train) == 3

# ---------------------------------------------------------------- bad inputs name the file and the fault
def npz_fault(tmp_path, **arrays):
    p = tmp_path / "bad.npz"; np.savez(p, **arrays); return p

@pytest.mark.parametrize("arrays,needle", [
    (dict(x=np.zeros((4, 8, 8), np.uint8)), "has no array 'y' (it has ['x'])"),
    (dict(y=np.zeros(4, int)), "has no array 'x'"),
    (dict(x=np.zeros((4, 8, 8), np.float32), y=np.zeros(4, int)), "x must be uint8 (0–255), got float32"),
    (dict(x=np.zeros((4, 64), np.uint8), y=np.zeros(4, int)), "got shape (4, 64)"),
    (dict(x=np.zeros((4, 3, 8, 8), np.uint8), y=np.zeros(4, int)), "channels first? save x.transpose(0, 2, 3, 1)"),
    (dict(x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(5, int)), "4 images in x but 5 labels in y"),
    (dict(x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(4, np.float32)), "y must be a 1-D integer array, got float32"),
    (dict(x=np.zeros((2, 8, 8), np.uint8), y=np.array([0, 2]), classes=np.array(["a", "b"])), "labels up to 2 but classes names only 2"),
], ids=["no-y", "no-x", "dtype", "shape", "nchw", "count", "float-labels", "classes"])
def test_bad_npz_arrays(tmp_path, arrays, needle):
    p = npz_fault(tmp_path, **arrays)
    with pytest.raises(BadDataset) as e: load_dataset(str(p))
    raised(e, str(p), needle)

def test_npz_that_is_not_a_zip(tmp_path):
    p = tmp_path / "text.npz"; p.write_text("x,y\n1,2\n")
    with pytest.raises(BadDataset) as e: load_npz(p)
    raised(e, f"{p} is not a readable .npz file (not a zip archive, or one cut short)")

def test_truncated_npz(tmp_path):
    p = npz_fault(tmp_path, x=np.zeros((50, 8, 8), np.uint8), y=np.zeros(50, int))
    p.write_bytes(p.read_bytes()[:-300])
    with pytest.raises(BadDataset) as e: load_dataset("bad", tmp_path)            # NAME of NAME.npz in the data root
    raised(e, f"{p} is not a readable .npz file (not a zip archive, or one cut short)")

def test_npz_with_a_damaged_member(tmp_path):
    p = npz_fault(tmp_path, x=np.arange(4 * 64, dtype=np.uint8).reshape(4, 8, 8), y=np.zeros(4, int))
    raw = bytearray(p.read_bytes()); i = raw.index(bytes(range(64, 96))); raw[i] ^= 0xFF      # flip a pixel of x
    p.write_bytes(bytes(raw))
    with pytest.raises(BadDataset) as e: load_npz(p)
    raised(e, f"{p} is not a readable .npz file (BadZipFile: Bad CRC-32")

def test_npy_saved_as_npz(tmp_path):
    p = tmp_path / "arr.npz"
    with open(p, "wb") as f: np.save(f, np.zeros(3))
    with pytest.raises(BadDataset) as e: load_npz(p)
    raised(e, str(p), "a single .npy array (np.save), not an .npz archive (np.savez)")

def test_undecodable_and_truncated_images(tmp_path):
    write_folder_tree(tmp_path / "imgs", ["a", "b"])
    good = (tmp_path / "imgs" / "a" / "a_0.JPEG").read_bytes()
    (tmp_path / "imgs" / "b" / "b_1.JPEG").write_bytes(good[: len(good) // 2])
    with pytest.raises(BadDataset) as e: load_image_folder(tmp_path / "imgs", 8, progress=False)
    raised(e, "b/b_1.JPEG cannot be decoded as an image")
    (tmp_path / "imgs" / "b" / "b_1.JPEG").write_bytes(b"GIF89a? no")
    with pytest.raises(BadDataset) as e: load_dataset(str(tmp_path / "imgs"), tmp_path)
    raised(e, "b/b_1.JPEG cannot be decoded as an image", "UnidentifiedImageError")

def test_empty_class_folder(tmp_path):
    write_folder_tree(tmp_path / "imgs", ["a", "c"])
    (tmp_path / "imgs" / "b" / "nested").mkdir(parents=True)
    (tmp_path / "imgs" / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(BadDataset) as e: load_image_folder(tmp_path / "imgs", 8, progress=False)
    raised(e, f"{tmp_path / 'imgs' / 'b'} is an empty class folder")

def test_imagenet10_folder_with_a_missing_class(tmp_path):
    write_folder_tree(tmp_path / "imagenet10", [w for w in IMAGENET10_WNIDS if w != "n04254680"] + ["soccer"], per_class=1)
    with pytest.raises(DatasetNotFound) as e: load_dataset("imagenet10", tmp_path, download=False, folder_size=8)
    raised(e, "must hold exactly 10 class folders", "missing n04254680 (soccer ball)", "unexpected soccer")

def test_broken_benchmark_files(tmp_path):
    write_cifar10(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(BadDataset) as e: load_dataset("cifar10", tmp_path, download=False)
    raised(e, f"{f} is not a CIFAR python batch")
    class Payload:
        def __reduce__(self): return (print, ("ran",))
    f.write_bytes(pickle.dumps({"data": Payload(), "labels": []}))
    with pytest.raises(BadDataset) as e: load_dataset("cifar10", tmp_path, download=False)
    raised(e, "refusing to load builtins.print")

def test_cifar100_coarse_labels_must_agree(tmp_path):
    write_cifar100(tmp_path, wrong_coarse=True)
    f = tmp_path / "cifar-100-python" / "test"
    with pytest.raises(BadDataset) as e: load_dataset("cifar100", tmp_path, download=False)
    raised(e, f"{f}: its coarse_labels disagree with CIFAR100_COARSE")

def test_truncated_stl10_and_mnist(tmp_path):
    write_stl10(tmp_path)
    f = tmp_path / "stl10_binary" / "test_X.bin"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(BadDataset) as e: load_dataset("stl10", tmp_path, download=False)
    raised(e, f"{f}: 55286 bytes is not a whole number of 3×96×96 images")
    write_mnist(tmp_path)
    f = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(BadDataset) as e: load_dataset("mnist", tmp_path, download=False)
    raised(e, f"{f}: 10 bytes, but its header (3,) needs 11")
    f.write_bytes(b"\x00\x00\x00")
    with pytest.raises(BadDataset, match="is not an IDX file"): load_dataset("mnist", tmp_path, download=False)

def test_stl10_label_count_mismatch(tmp_path):
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(BadDataset) as e: load_dataset("stl10", tmp_path, download=False)
    raised(e, "train_y.bin: expected 3 labels in 1–10 (one per image of train_X.bin), got 2")

def test_usps_garbage_and_corrupt_archive(tmp_path):
    (tmp_path / "usps.bz2").write_bytes(b"plain text, not bzip2")
    (tmp_path / "usps.t.bz2").write_bytes(b"")
    with pytest.raises(BadDataset) as e: load_dataset("usps", tmp_path, download=False)
    raised(e, f"{tmp_path / 'usps.bz2'} is not a readable bzip2 LIBSVM file")
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"\x1f\x8b truncated download")
    with pytest.raises(BadDataset) as e: load_dataset("cifar100", tmp_path, download=False)
    raised(e, "cifar-100-python.tar.gz cannot be extracted", "download it again")

# ---------------------------------------------------------------- every bad value refused before work starts
def test_npz_reads_only_the_members_it_uses(tmp_path, monkeypatch):
    "An .npz's other members stay compressed: neither a 64 MiB block nor an object array (which np.load refuses) is read."
    p = tmp_path / "extra.npz"
    np.savez_compressed(p, x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4) % 2, features=np.zeros(2**26, np.uint8),
                        meta=np.array([{"note": "pickled"}], dtype=object))
    assert p.stat().st_size < 2**20
    read, getitem = [], np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, k: read.append(k) or getitem(self, k))
    tracemalloc.start()
    try: d = load_dataset(str(p), protocol="train-test")
    finally: peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    assert len(d.train) == 4 and set(read) <= {"x", "y", "classes", "split"}, read
    assert peak < 2**24, f"peak {peak:,} bytes: the 64 MiB member was decompressed"

def test_npz_labels_are_checked_before_anything_is_built_from_them(tmp_path):
    x2 = np.zeros((2, 8, 8), np.uint8)
    for arrays, needle in [(dict(y=np.array([0, 10**9])), "y has labels up to 1,000,000,000 but x holds only 2 images"),
                           (dict(y=np.array([0, 1]), classes=np.array(list("abcde"))), "classes names 5 classes but x holds only 2 images"),
                           (dict(y=np.array([0, -3])), "labels in y must be ≥ 0 (or -1 for unknown), found -3"),
                           (dict(y=np.array([0.0, 1.0])), "y must be a 1-D integer array, got float64"),
                           (dict(y=np.array([-1, -1])), "every label in y is -1 (unknown); save the class names"),
                           (dict(y=np.array([0, 1]), classes=np.array([["a", "b"]])), "classes must be a 1-D array of names")]:
        p = npz_fault(tmp_path, x=x2, **arrays)
        tracemalloc.start()
        try:
            with pytest.raises(BadDataset) as e: load_dataset(str(p))
        finally: peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
        raised(e, str(p), needle)
        assert peak < 2**20, (needle, peak)                        # refused at once: no 10**9 class names were made
    np.savez(tmp_path / "named.npz", x=x2, y=np.array([-1, -1]), classes=np.array(["a", "b"]))
    assert load_dataset(str(tmp_path / "named.npz")).n_clusters == 2       # unlabelled, but K is known

def test_unknown_labels_train_and_score(tmp_path):
    "Labels of -1 are trained on and left out of ACC/NMI/ARI and the confusion matrix (figures included)."
    import json
    from deepcluster_nb.metrics import clustering_scores, matched_confusion
    from deepcluster_nb.train import Trainer, TrainConfig
    digits = D.load_digits_data()
    y = digits.y[:256].copy(); y[::3] = -1
    np.savez(tmp_path / "partly.npz", x=digits.x[:256, 0].numpy(), y=y)
    out = tmp_path / "run"
    tr = Trainer(TrainConfig(dataset=str(tmp_path / "partly.npz"), n_clusters=10, out_dir=str(out), max_steps=2,
                             batch_size=64, eval_every=0, progress=False))
    tr.fit()
    m = json.loads((out / "metrics.json").read_text())
    pred, known = tr.predictions["probs"].argmax(1), y >= 0
    assert m["acc"] == pytest.approx(clustering_scores(y[known], pred[known])["acc"]) and -1 <= m["ari"] <= 1
    assert sum(m["cluster_sizes"]) == 256 and (out / "confusion.png").stat().st_size > 0
    cm = matched_confusion(y, pred, 10)
    assert cm.shape == (10, 10) and cm.sum() == known.sum() and np.trace(cm) == round(m["acc"] * known.sum())

def test_non_square_npz_images_are_refused(tmp_path):
    for x in (np.zeros((4, 8, 16), np.uint8), np.zeros((4, 8, 16, 3), np.uint8)):
        p = npz_fault(tmp_path, x=x, y=np.arange(4) % 2)
        with pytest.raises(BadDataset) as e: load_dataset(str(p))
        raised(e, str(p), "x holds 8×16 images (height × width)", "crop or pad them to squares")

def test_npy_file_gets_its_own_hint(tmp_path):
    p = tmp_path / "images.npy"; np.save(p, np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(BadDataset) as e: load_dataset(str(p))
    raised(e, f"{p} is a .npy file, which holds one array", f"np.savez('{tmp_path / 'images.npz'}', x=images, y=labels)")
    with pytest.raises(DatasetNotFound) as e: load_dataset(str(tmp_path / "absent.npy"))
    raised(e, "absent.npy is a .npy file")

def test_mistyped_data_root_is_neither_created_nor_downloaded_into(tmp_path, monkeypatch):
    from deepcluster_nb.train import Trainer, TrainConfig
    monkeypatch.chdir(tmp_path); monkeypatch.delenv("DEEPCLUSTER_DATA", raising=False)
    calls = []
    monkeypatch.setattr(D, "_download", lambda name, root: calls.append(name))
    with pytest.raises(DatasetNotFound) as e: load_dataset("usps", "no_such_folder")
    raised(e, f"The data root {tmp_path / 'no_such_folder'} (from data_root=...) does not exist; nothing was created or downloaded",
           f"usps.bz2 and usps.t.bz2 (USPS in LIBSVM format) in {tmp_path / 'no_such_folder'}/", f"{tmp_path / 'no_such_folder'}/usps.npz")
    with pytest.raises(DatasetNotFound) as e: Trainer(TrainConfig(dataset="usps", data_root="no_such_folder", out_dir=str(tmp_path / "run")))
    raised(e, "no_such_folder (from data_root=...) does not exist")
    with pytest.raises(DatasetNotFound) as e: load_dataset("mnist_test", "no_such_folder")
    raised(e, "does not exist", f"mnist_test.npz (arrays x: uint8 images NHWC or NHW, y: integer labels) in {tmp_path / 'no_such_folder'}/")
    monkeypatch.setenv("DEEPCLUSTER_DATA", str(tmp_path / "typo"))
    with pytest.raises(DatasetNotFound) as e: load_dataset("cifar10")
    raised(e, f"The data root {tmp_path / 'typo'} (from $DEEPCLUSTER_DATA) does not exist", "cifar-10-python.tar.gz")
    assert calls == [] and not (tmp_path / "no_such_folder").exists() and not (tmp_path / "typo").exists()
    assert not (tmp_path / "run").exists()

@pytest.mark.parametrize("name,needles", [
    ("mnist_test", ["Dataset 'mnist_test' (the test split of mnist) is not in", "put mnist_test.npz (arrays x: uint8 images NHWC or NHW, y: integer labels)"]),
    ("cifar10_test", ["the test split of cifar10", "cifar10_test.npz"]),
    ("usps_train", ["the train split of usps", "usps_train.npz"]),
    ("my_scans", ["Unknown dataset 'my_scans'. Valid names: digits", "my_scans.npz is not there"]),
    ("cifar11", ["Unknown dataset 'cifar11'", "did you mean 'cifar10'?"]),
])
def test_missing_npz_names_raise_dataset_not_found(tmp_path, name, needles):
    "A name that could be <data root>/NAME.npz is a DatasetNotFound (chapters catch it) naming the file to put there."
    with pytest.raises(DatasetNotFound) as e: load_dataset(name, tmp_path)
    raised(e, *needles, str(tmp_path))

# ---------------------------------------------------------------- the real copies in the data root (skipped without them)
def test_real_mnist_test_copy():
    p = shared_npz("mnist_test.npz")
    d = load_dataset("mnist_test", p.parent)
    assert (tuple(d.train.x.shape), d.n_clusters, d.train.y[:10].tolist()) == ((10000, 1, 28, 28), 10, [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])

def test_real_usps_copy_keeps_its_splits():
    p = shared_npz("usps.npz")
    d = load_dataset("usps", p.parent, protocol="train-test", download=False)
    assert (len(d.train), len(d.eval), d.name, tuple(d.image_shape)) == (7291, 2007, "usps", (1, 16, 16))

def test_real_cifar10_test_copy():
    p = shared_npz("cifar10_test.npz")
    d = load_dataset(str(p))
    assert (tuple(d.train.x.shape), d.n_clusters) == ((10000, 3, 32, 32), 10) and np.bincount(d.train.y).tolist() == [1000] * 10
