"""Every GPU code path rehearsed on the CPU: a few optimiser steps of every method's paper configuration on each of the
six benchmarks (its backbone, stem, heads, number of clusters, hyperparameters, augmentation recipe, unlabelled passes
and evaluation protocol), with exactly the options a CUDA run takes by default — bf16 autocast (which runs on the CPU
too), channels-last model and views, fused optimiser kernels, uint8 data on the device — at a small image size and
batch; then torch.compile of a backbone, and the host-memory batches (`data_on_device=False`) once."""
import math, os, shutil, warnings
import pytest
import torch
from deepcluster_nb.data import (ImageData, ClusterData, PAPER_BENCHMARKS, FOLDER_DATASETS, CIFAR10_CLASSES,
                                 CIFAR100_SUPERCLASSES, STL10_CLASSES)
from deepcluster_nb.models import available_methods, get_method
from deepcluster_nb.train import Trainer, TrainConfig, MIN_IMAGE_SIZE
import deepcluster_nb.train as train_module

N_CLASSES = {"cifar10": len(CIFAR10_CLASSES), "cifar100": len(CIFAR100_SUPERCLASSES), "stl10": len(STL10_CLASSES),
             **{k: v[1] for k, v in FOLDER_DATASETS.items()}}
GPU_OPTIONS = dict(device="cpu", amp=True, channels_last=True, fused=True, data_on_device=True)
BATCH = 16                       # images per step (at least K for the methods whose loss contrasts the K columns)
CASES = [(m, d) for m in sorted(available_methods()) for d in PAPER_BENCHMARKS]



@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def synthetic(k:int, n:int, px:int=32, extra:int=0, separate_eval:bool=False, seed:int=0) -> ClusterData:
    "Random uint8 colour images with `k` classes; a separate evaluation set and unlabelled images where asked."
    g = torch.Generator().manual_seed(seed)
    def images(m, labelled=True):
        y = torch.randint(0, k, (m,), generator=g).numpy() if labelled else -torch.ones(m, dtype=torch.long).numpy()
        return ImageData(torch.randint(0, 256, (m, 3, px, px), dtype=torch.uint8, generator=g), y, [str(i) for i in range(k)], "synthetic")
    train = images(n)
    return ClusterData(train, images(n) if separate_eval else train, k, "synthetic", images(extra, False) if extra else None)


def paper_trainer(method:str, dataset:str, tmp_path, **overrides) -> Trainer:
    "The trainer of `method`'s paper row for `dataset` (given the benchmark's name) on synthetic data of its shape."
    cls = get_method(method)
    row = cls.settings.resolve(dataset)
    k = N_CLASSES[dataset]
    batch = max(BATCH, k) if cls.column_contrast else BATCH
    size = MIN_IMAGE_SIZE["small" if row.get("stem") == "small" else "imagenet"]   # 8 px (small stem), 32 px (ImageNet stem)
    data = synthetic(k, max(batch, k), extra=batch if row.get("unlabeled") else 0,
                     separate_eval=row.get("protocol") == "train-test")
    cfg = TrainConfig(method=method, dataset=dataset, image_size=size, batch_size=batch, eval_every=0, progress=False,
                      out_dir=str(tmp_path / "run"), **{**GPU_OPTIONS, **overrides})
    tr = Trainer(cfg, data)
    assert all(getattr(tr.cfg, f) == row[f] for f in ("backbone", "stem", "optimizer", "lr") if f not in overrides)
    assert tr.cfg.n_clusters == k and tr.cfg.hparams == {**row["hparams"], **overrides.get("hparams", {})}
    tr.cfg.max_steps = 2 * tr.epoch_steps if tr.epoch_steps <= 4 else 2   # every head twice (two steps of a long epoch)
    return tr


def train_a_few_steps(tr:Trainer) -> dict:
    "Run the trainer's own loop until `max_steps`; record each step's head, autocast state and the backbone's dtypes."
    seen = {"heads": [], "autocast": [], "out_dtypes": set(), "in_channels_last": set(), "views_channels_last": set(),
            "raw_channels_last": set()}
    step_fn = tr.step_fn
    cl = lambda t: t.is_contiguous(memory_format=torch.channels_last)
    def watched(batch, head):
        seen["heads"].append(head)
        seen["views_channels_last"].update(cl(v) for v in batch.views)
        if batch.raw is not None: seen["raw_channels_last"].add(cl(batch.raw))
        seen["autocast"].append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return step_fn(batch, head)
    def hook(mod, inp, out):
        if mod.training and torch.is_grad_enabled():
            seen["out_dtypes"].add(out.dtype); seen["in_channels_last"].add(cl(inp[0]))
    tr.step_fn = watched
    tr.start_run()
    h = tr.method.backbone.register_forward_hook(hook)   # after on_train_start (CADEC's k-means runs there)
    before = {n: p.detach().clone() for n, p in tr.method.named_parameters() if p.requires_grad}
    stats = []
    try:
        while not tr.out_of_budget(): stats.append(tr.train_epoch()); tr.epoch += 1
    finally: h.remove()
    seen["changed"] = {n for n, p in tr.method.named_parameters() if n in before and not torch.equal(p.detach(), before[n])}
    seen["stats"] = stats
    return seen


def check_gpu_options(tr:Trainer):
    assert tr.amp and tr.channels_last and tr.data_on_device and tr.x.device.type == "cpu"
    assert tr.opt.defaults.get("fused") is True, tr.opt.defaults
    convs = [(n, m.weight) for n, m in tr.method.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for _, w in convs), \
        [n for n, w in convs if not w.is_contiguous(memory_format=torch.channels_last)]


@pytest.mark.parametrize("method,dataset", [
    pytest.param(m, d, id=f"{m}-{d}") for m, d in CASES])
def test_paper_configuration_steps_with_gpu_options(method, dataset, tmp_path):
    tr = paper_trainer(method, dataset, tmp_path)
    check_gpu_options(tr)
    seen = train_a_few_steps(tr)
    assert tr.global_step == tr.cfg.max_steps
    heads = [h for h, _ in tr.passes]
    assert set(seen["heads"]) == set(heads), (seen["heads"], heads)                 # every head of an epoch stepped
    assert all(on and dt == torch.bfloat16 for on, dt in seen["autocast"]), seen["autocast"]
    assert seen["out_dtypes"] == {torch.bfloat16}, seen["out_dtypes"]              # the backbone ran in bf16
    assert seen["views_channels_last"] == {True}                                   # the trainer's views are channels-last
    if not get_method(method).needs_raw: assert seen["in_channels_last"] == {True}   # and all the backbone sees (see below)
    for s in seen["stats"]:
        assert s and all(math.isfinite(v) for v in s.values()), s
    backbone = {n for n, _ in tr.method.named_parameters() if n.startswith("backbone.")}
    assert seen["changed"] & backbone, "no backbone parameter changed"
    assert seen["changed"] - backbone, "no head parameter changed"
    check_gpu_options(tr)                                                          # still so after the steps
    ev = tr.evaluate()                                                             # the evaluation, under bf16 autocast too
    assert 0 <= ev["acc"] <= 1 and tr.predictions["probs"].shape == (len(tr.eval_data), tr.cfg.n_clusters)
    assert all(math.isfinite(float(v)) for v in tr.predictions["probs"].ravel())


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_other_resnets_step_with_gpu_options(backbone, tmp_path):
    "The ResNets no paper row uses (ResNet-50's bottleneck blocks and 2048 features among them), on CC's CIFAR-10 row."
    tr = paper_trainer("cc", "cifar10", tmp_path, backbone=backbone)
    check_gpu_options(tr)
    seen = train_a_few_steps(tr)
    assert seen["out_dtypes"] == {torch.bfloat16} and seen["in_channels_last"] == {True}
    assert all(math.isfinite(v) for s in seen["stats"] for v in s.values()) and seen["changed"]


RAW_METHODS = sorted(m for m in available_methods() if get_method(m).needs_raw)

@pytest.mark.parametrize("method", RAW_METHODS)
def test_raw_view_is_channels_last(method, tmp_path):
    tr = paper_trainer(method, "cifar10", tmp_path)
    tr.cfg.max_steps = 1
    seen = train_a_few_steps(tr)
    assert seen["raw_channels_last"] == {True} and seen["in_channels_last"] == {True}


def test_host_batches_path(tmp_path, monkeypatch):
    "`data_on_device=False`: the batches come from host memory through the background thread and a non-blocking copy."
    calls = []
    real = train_module.host_batches
    def counted(*a, **k):
        calls.append(1); yield from real(*a, **k)
    monkeypatch.setattr(train_module, "host_batches", counted)
    tr = paper_trainer("cc", "stl10", tmp_path, data_on_device=False)   # its unlabelled pass too
    assert not tr.data_on_device and tr.x.device.type == "cpu"
    seen = train_a_few_steps(tr)
    assert calls and len(calls) == len(seen["stats"]) * len(tr.passes)
    assert set(seen["heads"]) == {h for h, _ in tr.passes} and all(math.isfinite(v) for s in seen["stats"] for v in s.values())


def _cxx():
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")


@pytest.mark.skipif(not _cxx(), reason="torch.compile's inductor backend needs a C++ compiler on the CPU")
def test_compiled_backbone_steps(tmp_path):
    "torch.compile of a backbone (the small CNN: the ResNets take minutes to compile on one CPU thread) with the GPU options."
    tr = paper_trainer("cc", "cifar10", tmp_path, backbone="small_cnn", stem="small", compile=True)
    assert hasattr(type(tr.method.backbone), "_compiled_from")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        seen = train_a_few_steps(tr)
    fell_back = [str(x.message) for x in w if "torch.compile of" in str(x.message)]
    if fell_back and any(s in fell_back[0] for s in ("CppCompileError", "InvalidCxxCompiler", "CalledProcessError")):
        pytest.skip(f"inductor cannot build CPU kernels here: {fell_back[0][:300]}")
    assert not fell_back, fell_back
    assert seen["out_dtypes"] == {torch.bfloat16} and all(math.isfinite(v) for s in seen["stats"] for v in s.values())
    assert seen["changed"]
