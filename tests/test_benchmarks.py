"""The papers' runs, trimmed: every method on every benchmark with the paper's configuration unchanged (backbone, stem,
resolution, heads, protocol, splits), but one optimiser step of a small batch on a tiny fixture written in the
benchmark's real on-disk format and read through the real parsing code; the resolved configuration is checked
against the method's settings table."""
import json
import numpy as np
import pytest
from test_data import write_cifar10, write_cifar100, write_stl10, write_folder_tree, write_tiny_imagenet
from deepcluster_nb.data import load_dataset
from deepcluster_nb.readers import IMAGENET10_WNIDS, IMAGENET_DOGS_WNIDS
from deepcluster_nb.models import available_methods, get_method
from deepcluster_nb.train import Trainer, TrainConfig, dataset_key

BENCHMARKS = ("cifar10", "cifar100", "stl10", "imagenet10", "imagenet_dogs", "tiny_imagenet")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    "One data root holding a tiny copy of every benchmark in its own format."
    r = tmp_path_factory.mktemp("benchmarks")
    write_cifar10(r, n=2); write_cifar100(r, fine_train=(0, 1, 2, 3, 4, 19, 58, 98, 99) * 3); write_stl10(r, n_train=10, n_test=6, n_unlabeled=12)
    write_folder_tree(r / "imagenet10", IMAGENET10_WNIDS, per_class=1, size=(300, 260))
    write_folder_tree(r / "imagenet_dogs", IMAGENET_DOGS_WNIDS, per_class=1, size=(260, 300))
    write_tiny_imagenet(r)
    return r


@pytest.fixture(scope="module")
def data(root):
    "The loaded fixtures, shared by all methods (the loaders' own tests are in test_data.py)."
    import warnings
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                        # "the folder does not hold the benchmark's 1300 images"
        for b in BENCHMARKS:
            for protocol in ("paper", "train-test"):
                for unl in ((False, True) if b == "stl10" else (False,)):
                    out[b, protocol, unl] = load_dataset(b, root, protocol, download=False, stl10_unlabeled=unl)
    return out


@pytest.mark.parametrize("benchmark", BENCHMARKS)
@pytest.mark.parametrize("method", available_methods())
def test_trimmed_paper_run(method, benchmark, data, root, tmp_path):
    cls = get_method(method)
    table = cls.settings.resolve(dataset_key(benchmark))
    protocol, unl = table.get("protocol", "paper"), table.get("unlabeled", False)
    d = data[benchmark, protocol, unl]
    K = d.n_clusters
    # the only changes: one step of a batch that the fixture can fill (at least K for a column contrast), on at
    # least K images (fewer images than clusters is refused). On Tiny-ImageNet's 200 classes that would be 200
    # images at full resolution: there K drops to 10 instead.
    n_clusters = 10 if K > 20 else None
    batch = (n_clusters or K) if cls.column_contrast else 4
    small = dict(max_steps=1, subset=max(batch, n_clusters or K), eval_every=0, progress=False, data_root=str(root),
                 out_dir=str(tmp_path / "run"), data_on_device=True)
    tr = Trainer(TrainConfig(method=method, dataset=benchmark, batch_size=batch, n_clusters=n_clusters, **small), d)
    c = tr.cfg
    for field in ("backbone", "stem", "optimizer", "lr", "weight_decay", "epochs", "protocol", "schedule", "unlabeled"):
        if field in table: assert getattr(c, field) == table[field], field
    want_size = table.get("image_size", "native")
    assert c.image_size == (d.train.x.shape[-1] if want_size == "native" else want_size)
    for k, v in table.get("hparams", {}).items(): assert c.hparams[k] == v, k
    assert tr.aug_cfg.size == c.image_size
    m = tr.fit()
    assert m["steps"] == 1 and 0 <= m["acc"] <= 1 and sum(m["cluster_sizes"]) == len(tr.eval_data)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["config"]["backbone"] == c.backbone and cfg["config"]["image_size"] == c.image_size
    if unl: assert [h for h, _ in tr.passes][0] in cls.unlabeled_heads and tr.x_unlabeled is not None


def test_paper_tables_cover_every_benchmark():
    "Every method's table sets the paper's backbone, optimiser, learning rate, batch and epochs for every benchmark, with a source."
    for method in available_methods():
        s = get_method(method).settings
        for b in BENCHMARKS:
            src = s.sourced(b)
            for field in ("backbone", "optimizer", "lr", "batch_size", "epochs"):
                assert field in src and src[field][1], (method, b, field)
