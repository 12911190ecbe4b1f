# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The trainer
# > One training loop for every method, built up one concern at a time: the smallest loop, configuration from the method's settings table, evaluation, checkpoints and exact resume, run folders, mixed precision, data on the device, and alarms for collapse.

# %%
#| default_exp train

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import os, json, time, math, random, csv, copy, warnings, threading, queue
from dataclasses import dataclass, field, asdict, fields, replace
from pathlib import Path
import numpy as np
import torch
from fastcore.basics import patch
from deepcluster_nb.data import load_dataset, data_root, ClusterData, ImageData, DATASETS
from deepcluster_nb.augment import BatchAugment, AugmentConfig, cc_recipe
from deepcluster_nb.models import make_backbone, get_method, Batch, BACKBONES, RESNETS, predict
from deepcluster_nb.metrics import score_assignments, matched_confusion
from deepcluster_nb.runs import (check_run_folder, claim_run_folder, update_marker, read_marker, write_json,
                                 save_checkpoint, load_checkpoint)
from deepcluster_nb.memory import training_step_memory, available_memory, memory_refusal

# %%
import tempfile
from deepcluster_nb.models import available_methods
from deepcluster_nb.cc import CC
from torch._dynamo.backends.common import aot_autograd

# %% [markdown]
# The chapter's trainers that are built but never fitted point to folders under one temporary directory (building a
# trainer checks its run folder: a `runs/` left by another run in this directory must not matter here).

# %%
_runs = Path(tempfile.mkdtemp())

# %%
_data = load_dataset("digits")

# %% [markdown]
# ## The smallest loop
# Everything a contrastive clustering method needs from a trainer fits in a dozen lines: shuffle the images, cut the
# permutation into batches, draw two augmented views of each image, ask the method for its loss, take an optimiser
# step. Here it is, training CC on scikit-learn's 1,797 digits with the small CNN:

# %%
def fit_minimal(method, # a `ClusterMethod`
                x:torch.Tensor, # uint8 training images (N, C, H, W)
                aug, # a `BatchAugment`: uint8 images -> one random normalised view
                epochs:int=5, batch_size:int=128, lr:float=2e-3,
                reseed=lambda epoch: torch.manual_seed(epoch), # called at the start of every epoch
               ) -> list: # the mean loss of each epoch
    "The smallest training loop: shuffle, augment, step."
    opt = torch.optim.Adam(method.parameters(), lr=lr)
    losses, steps = [], len(x) // batch_size
    for epoch in range(epochs):
        reseed(epoch)
        perm, total = torch.randperm(len(x)), 0.0
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            views = [aug(x[idx]) for _ in range(method.n_views)]
            loss = method.training_step(Batch(views, idx))["loss"]
            opt.zero_grad(); loss.backward(); opt.step()
            total += loss.item()
        losses.append(total / steps)
    return losses

# %%
torch.manual_seed(0)
_aug = BatchAugment(cc_recipe("digits", 8), mean=[0.3], std=[0.4])
_bb, _fd = make_backbone("small_cnn", 1)
_cc = CC(_bb, _fd, n_clusters=10)
_losses = fit_minimal(_cc, _data.train.x, _aug, epochs=15)
_cc.eval()
with torch.no_grad(): _pred = _cc(_aug.eval_view(_data.train.x))["probs"].argmax(1).numpy()
_s = score_assignments(_data.train.y, np.eye(10)[_pred])
print(f"mean loss per epoch: {_losses[0]:.3f} → {_losses[-1]:.3f};  ACC after 15 epochs {_s['acc']:.3f}")
assert _losses[-1] < _losses[0] and _s["acc"] > 0.3          # learning, well above chance (0.1)

# %% [markdown]
# That loop trains, but it is not yet a tool: the settings are typed into the call, nothing is saved, a crash loses
# everything, nobody watches for collapse, and it would be slow on a GPU. The rest of the chapter adds one concern at
# a time, each with a check; at the end the `Trainer` is still that loop.
#
# ## Configuration
# A run is described by one flat dataclass, declared once: the notebook's papermill parameters, the command line
# (`python -m deepcluster_nb train --help`) and `config.json` are all derived from it. A field left at `None`
# takes the method's setting for the dataset from the method's **settings table** (the paper's settings on the paper's
# benchmarks, each with its source), so `TrainConfig(method="cc", dataset="cifar10")` is the paper's run and any
# number can still be overridden. The method's own hyperparameters go in `hparams`.

# %%
#| export
@dataclass
class TrainConfig:
    "Everything that defines a training run; a field left at None takes the method's setting for the dataset."
    method: str = "cc"  # clustering method: cc, dcdc, crlc, tcc, cadec (any registered method)
    dataset: str = "digits"  # benchmark name, a path to an .npz file or ImageFolder, or NAME for data_root/NAME.npz
    data_root: str | None = None  # data folder (None: $DEEPCLUSTER_DATA, else the project's data/)
    protocol: str | None = None  # "paper" (train and evaluate on the paper's splits) or "train-test"; None: the method's
    backbone: str | None = None  # small_cnn, resnet18, resnet34 or resnet50, optionally prefixed sobel_
    stem: str | None = None  # ResNet stem: "imagenet" (7x7/2 and max-pool) or "small" (3x3/1)
    image_size: int | str | None = None  # training resolution in pixels, or "native" (the dataset's own)
    n_clusters: int | None = None  # number of clusters K (None: the number of classes)
    epochs: int | None = None  # passes over the training images
    batch_size: int | None = None  # images per optimiser step (each gives the method's number of views)
    optimizer: str | None = None  # "adam" or "sgd"
    lr: float | None = None  # learning rate
    weight_decay: float | None = None  # weight decay
    momentum: float = 0.9  # SGD momentum
    schedule: str | None = None  # learning-rate schedule: "constant" or "cosine" (to 0 at the last step)
    warmup_epochs: int | None = None  # epochs of linear learning-rate warm-up from 0
    seed: int = 0  # seeds Python, NumPy and torch; runs with one seed are identical on one machine
    device: str = "auto"  # "auto" (cuda if available), "cuda", "cuda:N" or "cpu"
    amp: bool | None = None  # bf16 autocast (None: on for cuda, off on the CPU)
    channels_last: bool | None = None  # channels-last memory format for the model and views (None: on for cuda)
    fused: bool | None = None  # fused optimiser kernels (None: on for cuda; Adam and SGD have them on the CPU too)
    compile: bool = False  # torch.compile the backbone (falls back to eager, with a warning, if compiling fails)
    data_on_device: bool | None = None  # keep the uint8 training set on the device (None: if it fits)
    threads: int = 0  # PyTorch CPU threads (0: one thread for the small CNN on the CPU, which never stalls on a busy machine; else PyTorch's default)
    out_dir: str = "runs/{method}_{dataset}_s{seed}"  # run folder for config, history, checkpoint, metrics and figures
    resume: bool = False  # continue the run in out_dir from its checkpoint
    overwrite: bool = False  # replace a run already in out_dir (otherwise the trainer refuses to touch it)
    eval_every: int = 10  # evaluate every N epochs (0: only at the end)
    stop_on_collapse: bool = False  # stop (keeping the checkpoint) when the clusters collapse or the loss explodes or stalls
    max_steps: int = 0  # stop after this many optimiser steps (0: no limit); for trimmed runs
    max_minutes: float = 0  # stop after this many minutes of training (0: no limit); the run then ends as if finished
    subset: int = 0  # train on a random subset of this many images (0: all)
    unlabeled: bool | None = None  # also train on the dataset's unlabelled images (STL-10's 100,000) where the method's paper does
    progress: bool = True  # show a progress bar (off: one line per epoch)
    hparams: dict = field(default_factory=dict)  # method hyperparameters, e.g. {"tau_i": 0.5}

# %% [markdown]
# Values arrive as text from the command line and from papermill (`-p resume false` passes the string `"false"`,
# which Python finds true). `TrainConfig.parse` turns such values into the declared types, and says which field and
# what it expected when it cannot: booleans accept `true/false/yes/no/on/off/1/0` in any case, `auto`, `none` or an empty
# string mean "the method's setting" for a field that may be `None`, and `hparams` accepts a YAML or JSON mapping.

# %%
#| export
class ConfigError(ValueError):
    "A bad training parameter: the message says which one and what to type instead."

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")

def coerce_value(name:str, value, anno:str):
    "`value` converted to the field type `anno` (a string such as 'int | None')."
    kinds = [k.strip() for k in anno.split("|")]
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto", "none", "null")):
        if "None" in kinds: return None
        if value is None: raise ConfigError(f"{name} cannot be None")
    if "bool" in kinds:
        if isinstance(value, (bool, np.bool_)): return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1): return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE: return value.strip().lower() in _TRUE
        raise ConfigError(f"{name} must be true or false (also yes/no, 1/0), got {value!r}")
    if "dict" in kinds:
        if isinstance(value, dict): return dict(value)
        if isinstance(value, str):
            import yaml
            try: d = yaml.safe_load(value)
            except yaml.YAMLError as e: d = e
            if isinstance(d, dict): return d
        raise ConfigError(f"{name} must be a mapping such as {{tau_i: 0.5}}, got {value!r}; from papermill pass it as YAML: "
                          f"-y \"{name}: {{tau_i: 0.5}}\" (or -p {name} '{{\"tau_i\": 0.5}}')")
    if isinstance(value, bool): raise ConfigError(f"{name} must be {anno.replace(' | None', '')}, got {value!r}")
    if "int" in kinds:
        try:
            if isinstance(value, (int, np.integer)): return int(value)
            if isinstance(value, float) and value.is_integer(): return int(value)
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit(): return int(value)
        except (TypeError, ValueError): pass
        if "str" in kinds and isinstance(value, str): return value.strip()
        raise ConfigError(f"{name} must be an integer{' or a word such as native' if 'str' in kinds else ''}, got {value!r}")
    if "float" in kinds:
        try: v = float(value)
        except (TypeError, ValueError): raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if not math.isfinite(v): raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return v
    return str(value)

@patch(cls_method=True)
def parse(cls:TrainConfig, cfg:TrainConfig|dict|None=None, **params) -> TrainConfig:
    "A `TrainConfig` from a config and/or raw values (strings from papermill or a command line), checked and converted."
    raw = {**(asdict(cfg) if isinstance(cfg, TrainConfig) else dict(cfg or {})), **params}
    known = {f.name: f.type for f in fields(cls)}
    unknown = [k for k in raw if k not in known]
    if unknown:
        import difflib
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, 1)) else repr(k) for k in unknown]
        raise ConfigError(f"unknown training parameter(s) {', '.join(hints)}. Valid: {', '.join(known)}")
    return cls(**{k: coerce_value(k, v, known[k]) for k, v in raw.items()})

# %%
test_eq(TrainConfig.parse(resume="false", compile="No", progress="0", epochs="12", lr="3e-4").resume, False)
test_eq(TrainConfig.parse(epochs="12").epochs, 12); test_eq(TrainConfig.parse(lr="3e-4").lr, 3e-4)
test_eq(TrainConfig.parse(image_size="native").image_size, "native"); test_eq(TrainConfig.parse(image_size="auto").image_size, None)
test_eq(TrainConfig.parse(hparams="{tau_i: 0.5}").hparams, {"tau_i": 0.5})
test_eq(TrainConfig.parse(TrainConfig(method="dcdc"), seed="3").method, "dcdc")
test_fail(lambda: TrainConfig.parse(epoch=1), contains="'epoch' (did you mean 'epochs'?)")
test_fail(lambda: TrainConfig.parse(resume="maybe"), contains="resume must be true or false")
test_fail(lambda: TrainConfig.parse(hparams="{tau_i: 0.5"), contains="-y \"hparams: {tau_i: 0.5}\"")
test_fail(lambda: TrainConfig.parse(epochs="ten"), contains="epochs must be an integer")

# %% [markdown]
# The papermill parameters cell of `nbs/train.ipynb` and the command line are generated from the fields and their
# comments, so they cannot drift apart from the dataclass (a test compares the notebook's cell with this text).
# papermill's `--help-notebook` reads the annotations, which must be written as `Optional[...]` for it.

# %%
#| export
def config_help() -> dict:
    "name -> (annotation, default, help) of every `TrainConfig` field, from the dataclass and its comments."
    from fastcore.docments import docments
    docs = docments(TrainConfig)
    return {f.name: (f.type, f.default_factory() if f.default_factory is not field().default_factory else f.default,
                     docs.get(f.name) or "") for f in fields(TrainConfig)}

def _papermill_type(anno:str) -> str:
    kinds = [k.strip() for k in anno.split("|")]
    core = [k for k in kinds if k != "None"]
    t = core[0] if len(core) == 1 else f"Union[{', '.join(core)}]"
    return f"Optional[{t}]" if "None" in kinds else t

def parameters_cell() -> str:
    "The source of the papermill parameters cell of `nbs/train.ipynb`."
    lit = lambda d: json.dumps(d) if isinstance(d, str) else repr(d)
    return "\n".join(f"{k}: {_papermill_type(a)} = {lit(d)}  # {h}" for k, (a, d, h) in config_help().items())

def config_from_namespace(ns:dict, # the notebook's globals after the parameters (and papermill's injected) cell
                          before:set, # the names that existed before the parameters cell
                         ) -> TrainConfig:
    "The `TrainConfig` of a papermill run; a parameter name that `TrainConfig` lacks (a typo) stops the run."
    return TrainConfig.parse(**{k: v for k, v in ns.items() if k not in before and not k.startswith("_")})

# %%
print("\n".join(parameters_cell().splitlines()[:4]))
_ns = {"In": [], "method": "cc", "epochs": "3"}; _before = {"In"}
test_eq(config_from_namespace(_ns, _before).epochs, 3)
test_fail(lambda: config_from_namespace({**_ns, "epoch": 1}, _before), contains="did you mean 'epochs'")
test_eq(_papermill_type("int | str | None"), "Optional[Union[int, str]]"); test_eq(_papermill_type("bool"), "bool")

# %% [markdown]
# **Resolution** fills the `None` fields from the method's settings table for the dataset (then from
# `GLOBAL_DEFAULTS`, for a dataset no table names), checks every value, and catches bad input before anything is
# built, with messages that list the valid choices.

# %%
#| export
def dataset_key(name:str) -> str:
    "The key under which settings tables look up a dataset: the benchmark name (also for NAME_test, one split of it), or 'custom'."
    stem = Path(str(name)).stem
    if stem in DATASETS: return stem
    if stem.endswith("_test") and stem[:-5] in DATASETS: return stem[:-5]
    return "custom"

GLOBAL_DEFAULTS = dict(protocol="paper", unlabeled=False, backbone="resnet18", stem="small", image_size="native", epochs=100, batch_size=256,
                       optimizer="adam", lr=3e-4, weight_decay=0.0, schedule="constant", warmup_epochs=0)

MIN_IMAGE_SIZE = {"small_cnn": 4, "small": 8, "imagenet": 32}   # smallest side each backbone/stem accepts
MAX_IMAGE_SIZE = 1024

def _check_ranges(c:TrainConfig):
    "Sane ranges for the numeric fields."
    def bad(f, want): raise ConfigError(f"{f} must be {want}, got {getattr(c, f)!r}")
    for f in ("epochs", "batch_size", "n_clusters"):
        if getattr(c, f) < 1: bad(f, "a positive integer")
    if c.n_clusters < 2: bad("n_clusters", "at least 2")
    if c.batch_size < 2: bad("batch_size", "at least 2 (contrastive losses need negatives)")
    if not 0 < c.lr <= 10: bad("lr", "in (0, 10]")
    if c.weight_decay < 0: bad("weight_decay", "at least 0")
    if not 0 <= c.momentum < 1: bad("momentum", "in [0, 1)")
    for f in ("subset", "max_steps", "eval_every", "threads", "warmup_epochs", "max_minutes"):
        if getattr(c, f) < 0: bad(f, "0 or more")
    if c.warmup_epochs >= c.epochs and c.warmup_epochs: bad("warmup_epochs", f"below epochs ({c.epochs})")
    for k, v in c.hparams.items():   # temperatures of every method
        if k.split("_")[0] in ("tau", "temperature", "lam") and isinstance(v, (int, float)) and v <= 0:
            raise ConfigError(f"hparams.{k} is a temperature and must be positive, got {v!r}")

OUT_DIR_KEYS = ("method", "dataset", "seed")

def run_folder_path(c:TrainConfig) -> Path:
    "The run folder of `c`: `out_dir` with {method}, {dataset} and {seed} filled in."
    if not str(c.out_dir).strip(): raise ConfigError("out_dir must name a folder for the run, got ''; for example "
                                                     "out_dir='runs/{method}_{dataset}_s{seed}'")
    try: return Path(str(c.out_dir).format(method=c.method, dataset=Path(str(c.dataset)).stem, seed=c.seed))
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"out_dir {c.out_dir!r} is not a valid template ({type(e).__name__}: {e}): it may use "
                          + ", ".join("{" + k + "}" for k in OUT_DIR_KEYS) + ", e.g. 'runs/{method}_{dataset}_s{seed}'") from None

def check_hparams(cls, # the method class
                  hparams:dict, # name -> value, as given
                 ) -> dict: # the values converted to the declared types
    "Check a method's hyperparameters against the types its constructor declares (and their ranges) before anything is built."
    import inspect
    sig, valid = inspect.signature(cls.__init__).parameters, cls.hyperparameters()
    bad = [k for k in hparams if k not in valid]
    if bad: raise ConfigError(f"Unknown hyperparameter(s) {bad} for method {cls.name!r}. Valid: {', '.join(valid)}")
    out = {}
    for k, v in hparams.items():
        anno = sig[k].annotation
        anno = anno if isinstance(anno, str) else getattr(anno, "__name__", str(anno))
        kinds = [t.strip() for t in anno.split("|")]
        ok = ((isinstance(v, bool) and "bool" in kinds) or (isinstance(v, int) and not isinstance(v, bool) and ("int" in kinds or "float" in kinds))
              or (isinstance(v, float) and "float" in kinds) or (isinstance(v, str) and "str" in kinds)
              or (isinstance(v, (list, tuple)) and "tuple" in kinds))
        if not ok and isinstance(v, str) and kinds[0] in ("int", "float", "bool"):
            v = coerce_value(f"hparams.{k}", v, kinds[0]); ok = True          # "0.5" from a command line
        if not ok:
            raise ConfigError(f"hparams.{k} must be {' or '.join(kinds)}, got {v!r} ({type(v).__name__}); "
                              f"the default is {valid[k]!r}")
        if isinstance(v, float) and not math.isfinite(v): raise ConfigError(f"hparams.{k} must be a finite number, got {v!r}")
        for name, (lo, hi) in getattr(cls, "hparam_ranges", {}).items():
            if name == k and isinstance(v, (int, float)) and not (lo <= v <= hi):
                raise ConfigError(f"hparams.{k} must be in [{lo}, {hi}], got {v!r}")
        if isinstance(v, int) and not isinstance(v, bool) and "int" in kinds and v < 0:
            raise ConfigError(f"hparams.{k} is a count and must be 0 or more, got {v!r}")
        if k.split("_")[0] in ("tau", "temperature", "lam") and isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
            raise ConfigError(f"hparams.{k} is a temperature and must be positive, got {v!r}")
        out[k] = v
    return out

def check_config(cfg:TrainConfig) -> TrainConfig:
    "The checks that need neither data nor the settings table: seed, threads, device, out_dir, hyperparameters."
    if cfg.seed < 0: raise ConfigError(f"seed must be 0 or more, got {cfg.seed!r}")
    if cfg.threads < 0: raise ConfigError(f"threads must be 0 (automatic) or a positive number of CPU threads, got {cfg.threads!r}")
    cls = get_method(cfg.method)
    pick_device(cfg.device)
    run_folder_path(cfg)
    return replace(cfg, hparams=check_hparams(cls, dict(cfg.hparams or {})))

def resolve_config(cfg:TrainConfig, data:ClusterData) -> tuple[TrainConfig, AugmentConfig]:
    "Fill the None fields of `cfg` from the method's settings for `data`; validate; return it with the augmentation."
    cls = get_method(cfg.method)
    key = dataset_key(cfg.dataset)
    ms = cls.settings.resolve(key)
    c = replace(cfg, hparams=check_hparams(cls, dict(cfg.hparams or {})))
    for f, v in GLOBAL_DEFAULTS.items():
        if getattr(c, f) is None: setattr(c, f, ms.get(f, v))
    if data is None:                 # the checks before the data is read: what does not depend on it
        if c.image_size == "native": c.image_size = None
    elif c.image_size == "native": c.image_size = int(data.train.x.shape[-1])
    if c.n_clusters is None and data is not None: c.n_clusters = int(data.n_clusters)
    c.hparams = {**ms.get("hparams", {}), **c.hparams}
    base = c.backbone[6:] if c.backbone.startswith("sobel_") else c.backbone
    if base not in BACKBONES: raise ConfigError(f"Unknown backbone {c.backbone!r}. Valid: {', '.join(BACKBONES)} (optionally 'sobel_' + name)")
    for f, valid in (("stem", ("imagenet", "small")), ("optimizer", ("adam", "sgd")), ("schedule", ("constant", "cosine")),
                     ("protocol", ("paper", "train-test"))):
        if getattr(c, f) not in valid: raise ConfigError(f"{f} must be one of {', '.join(map(repr, valid))}, got {getattr(c, f)!r}")
    if c.image_size is not None and not isinstance(c.image_size, int):
        raise ConfigError(f"image_size must be a number of pixels or 'native', got {c.image_size!r}")
    lo = MIN_IMAGE_SIZE["small_cnn" if base == "small_cnn" else c.stem]
    if c.image_size is not None and not lo <= c.image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"image_size {c.image_size} is outside what {c.backbone}" + ("" if base == "small_cnn" else f" with the {c.stem} stem")
                          + f" can train on: {lo} to {MAX_IMAGE_SIZE} pixels")
    if data is None: _check_ranges(replace(c, n_clusters=c.n_clusters or 2)); return c, None
    _check_ranges(c)
    if cls.column_contrast and c.batch_size < c.n_clusters:
        raise ConfigError(f"batch_size ({c.batch_size}) must be at least n_clusters ({c.n_clusters}): {c.method}'s loss contrasts "
                          f"the K columns of a batch's soft-label matrix")
    aug = ms.get("augment", cc_recipe)
    aug = aug(key, c.image_size) if callable(aug) else replace(aug, size=c.image_size)
    return c, aug

# %%
show_doc(resolve_config)

# %%
test_eq([dataset_key(n) for n in ("cifar10", "mnist_test", "/data/usps.npz", "my_photos")], ["cifar10", "mnist", "usps", "custom"])

# %%
_c, _a = resolve_config(TrainConfig(), _data)
test_eq((_c.backbone, _c.image_size, _c.n_clusters, _c.optimizer, _c.protocol), ("small_cnn", 8, 10, "adam", "paper")); test_eq(_a.kind, "digits")
test_eq(resolve_config(TrainConfig(lr=1e-3), _data)[0].lr, 1e-3)                 # an explicit value wins over the table
test_fail(lambda: resolve_config(TrainConfig(method="kmeans"), _data), contains="Valid: ")
test_fail(lambda: resolve_config(TrainConfig(backbone="vgg16"), _data), contains="Valid: small_cnn")
test_fail(lambda: resolve_config(TrainConfig(batch_size=8), _data), contains="at least n_clusters")
test_fail(lambda: resolve_config(TrainConfig(hparams={"tau": 1}), _data), contains="Valid: tau_i, tau_c")
test_fail(lambda: resolve_config(TrainConfig(hparams={"tau_i": 0}), _data), contains="temperature and must be positive")
test_fail(lambda: resolve_config(TrainConfig(image_size=1), _data), contains="4 to 1024 pixels")
test_fail(lambda: resolve_config(TrainConfig(weight_decay=-1), _data), contains="weight_decay must be at least 0")
test_fail(lambda: resolve_config(TrainConfig(lr=1e6), _data), contains="lr must be in (0, 10]")

# %% [markdown]
# ## Seeds
# Every epoch reseeds all generators from `(seed, epoch, pass)`. Two runs with the same seed see the same
# permutations and the same augmentations, and a run resumed from the checkpoint of epoch $e$ replays epoch $e+1$
# exactly as the uninterrupted run did — no generator state has to survive a kill. (Across machines the floating-point
# order of operations differs, so runs with one seed agree only on one machine and thread count.)

# %%
#| export
def seed_everything(seed:int, *salt:int):
    "Seed Python, NumPy and torch (all devices) from `seed` and optional salts (e.g. the epoch)."
    s = int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0])
    random.seed(s); np.random.seed(s); torch.manual_seed(s)
    return s

# %%
seed_everything(3, 1); _r1 = torch.rand(3); seed_everything(3, 1); test_eq(torch.rand(3), _r1)
seed_everything(3, 2); assert not torch.equal(torch.rand(3), _r1)

# %% [markdown]
# ## From a configuration to the pieces
# The trainer holds what the smallest loop took as arguments. It is built in four steps — resolve the
# configuration, prepare the data and its augmentation, build the method, build the optimiser — each a method of its
# own, so that the data-parallel trainer of the last chapter can extend one step without copying the others.

# %%
#| export
class Trainer:
    "Train any registered method on any dataset: `Trainer(TrainConfig(...)).fit()` returns the final metrics."
    checks_run_folder = True   # False for a trainer that only evaluates a run (the report's)
    def __init__(self, cfg:TrainConfig, data:ClusterData|None=None,
                 cbs:tuple=(), # callbacks added to the default ones (see *Fitting, one concern at a time*)
                 remove:tuple=(), # callback classes to leave out, e.g. `remove=(Checkpoint,)`
                ):
        self.setup_config(cfg, data)
        self.setup_data()
        self.setup_model()
        self.setup_optimizer()
        self.setup_callbacks(cbs, remove)
        self.epoch, self.global_step, self.history = 0, 0, []

# %% [markdown]
# The trainer calls *events* at fixed points of its loop (`self.event("after_step")`), which *callbacks* answer; they
# come with `fit` at the end of the chapter. Until then a trainer has none:

# %%
#| export
@patch
def event(self:Trainer, name:str, *args):
    "Call `name` on every callback that defines it, in order."
    for cb in self.cbs:
        f = getattr(cb, name, None)
        if f is not None: f(self, *args)

# %%
@patch
def setup_callbacks(self:Trainer, cbs:tuple=(), remove:tuple=()):
    "The first version: only the callbacks given (the defaults come with `fit`)."
    self.cbs = list(cbs)

# %%
#| export
def pick_device(name:str) -> torch.device:
    "'auto' → cuda if available, else cpu; a clear error for a CUDA device that is not there."
    if name == "auto": return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA device is available (use device='cpu' or 'auto')")
    try: d = torch.device(name)
    except RuntimeError: d = None
    if d is None or d.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    return d

@patch
def setup_config(self:Trainer, cfg:TrainConfig, data:ClusterData|None=None):
    "Parse and resolve the configuration against the method's settings table and the data; pick the device."
    cfg = check_config(TrainConfig.parse(cfg))   # every value that needs neither the data nor a file, first
    self.given = cfg                             # what the user set, before the table filled in the rest
    self.device = pick_device(cfg.device)
    pre, _ = resolve_config(cfg, None)           # the table's values checked too, before any data is read
    self.out_dir = run_folder_path(cfg)
    self.folder_mode = check_run_folder(self.out_dir, cfg.resume, cfg.overwrite) if self.checks_run_folder else None
    threads = cfg.threads or (1 if self.device.type == "cpu" and pre.backbone == "small_cnn" else 0)
    if threads: torch.set_num_threads(threads)
    table = get_method(cfg.method).settings.resolve(dataset_key(cfg.dataset))
    protocol = cfg.protocol or table.get("protocol", "paper")
    unlabeled = table.get("unlabeled", False) if cfg.unlabeled is None else cfg.unlabeled
    self.data = data if data is not None else load_dataset(cfg.dataset, cfg.data_root, protocol, stl10_unlabeled=unlabeled)
    if unlabeled and self.data.extra is None: raise ConfigError(f"unlabeled=True, but {cfg.dataset} has no unlabelled images")
    if unlabeled and not get_method(cfg.method).unlabeled_heads:
        raise ConfigError(f"unlabeled=True, but {cfg.method} has no head that trains on unlabelled images")
    cfg = replace(cfg, protocol=protocol, unlabeled=unlabeled, data_root=str(data_root(cfg.data_root)))
    self.cfg, self.aug_cfg = resolve_config(cfg, self.data)
    c = self.cfg
    self.amp = (self.device.type == "cuda") if c.amp is None else c.amp
    self.channels_last = (self.device.type == "cuda") if c.channels_last is None else c.channels_last
    self.is_main, self.world_size = True, 1     # one process; the data-parallel trainer changes both

# %% [markdown]
# Where each setting of a run came from — given by the user, the method's table (with the table's source), or the
# trainer's defaults — is worth printing at the start of every run:

# %%
#| export
_DEFAULT_CONFIG = TrainConfig()

@patch
def settings_table(self:Trainer) -> list:
    "One row per setting of the run: its value and where it came from (given, the method's table and its source, or a default)."
    table = get_method(self.cfg.method).settings.sourced(dataset_key(self.cfg.dataset))
    rows = []
    for k, v in asdict(self.cfg).items():
        if k == "hparams":
            for h, hv in v.items():
                src = "given" if h in (self.given.hparams or {}) else table.get(f"hparams.{h}", (None, "method default"))[1]
                rows.append({"setting": f"hparams.{h}", "value": hv, "from": src})
            continue
        given, default = getattr(self.given, k), getattr(_DEFAULT_CONFIG, k)
        src = ("given" if given != default else table[k][1] if k in table
               else "the data" if k == "n_clusters" and given is None else "trainer default")
        rows.append({"setting": k, "value": v, "from": src})
    return rows

# %% [markdown]
# The data step seeds, takes an optional random subset (with its own generator, so the subset does not move the
# other random streams), measures the channel statistics the augmentation normalises with, and decides where the
# images live (see *Data on the device* below).

# %%
#| export
def channel_stats(x:torch.Tensor, n:int=5000, seed:int=0):
    "Per-channel mean and std of uint8 images in [0, 1] units, from up to `n` random images."
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    xf = x[idx].float().div_(255)
    return xf.mean((0, 2, 3)).tolist(), xf.std((0, 2, 3)).clamp(min=1e-3).tolist()

@patch
def setup_data(self:Trainer):
    "The training and evaluation images, the augmentation, and where the training images live."
    c = self.cfg
    seed_everything(c.seed)
    train = self.data.train
    if c.subset and c.subset < len(train):
        train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(c.seed))[:c.subset].sort().values)
    self.train_data = train
    self.eval_data = train if self.data.eval is self.data.train else self.data.eval
    if len(train) < c.batch_size:
        raise ConfigError(f"batch_size ({c.batch_size}) is larger than the training set ({len(train)} images)")
    if len(train) < c.n_clusters:
        raise ConfigError(f"the training set ({len(train)} images) is smaller than n_clusters ({c.n_clusters}): "
                          f"raise subset or lower n_clusters")
    check_memory(self)
    mean, std = channel_stats(train.x)
    self.aug = BatchAugment(self.aug_cfg, mean, std).to(self.device)
    self.place_data(train.x)

# %% [markdown]
# Where the images live is a concern of its own (*Data on the device*, below). Until then they simply stay where
# they are:

# %%
@patch
def place_data(self:Trainer, x:torch.Tensor):
    "The first version: the training images (and the unlabelled ones, when used) stay where they are."
    self.data_on_device, self.x = True, x
    self.x_unlabeled = self.data.extra.x if self.cfg.unlabeled else None

# %% [markdown]
# Before anything large is allocated, `check_memory` asks what a training step will hold — the weights, their
# gradients, the optimiser state, the views and every tensor autograd saves for the backward pass, counted by running
# the method's own step on PyTorch's `meta` device under the run's autocast (the appendix *The memory of a training
# step* derives it and checks it against real steps) — and compares it with the device's free memory, the caching
# allocator's unused blocks included. A run that cannot fit is refused with the numbers and what to lower, instead of
# being killed by the operating system halfway through its first step.

# %%
#| export
@patch
def memory_estimate(self:Trainer) -> dict|None:
    "What a training step holds (`training_step_memory` of the appendix *The memory of a training step*), per process."
    c, C = self.cfg, self.train_data.x.shape[1]
    return training_step_memory(c.method, max(2, c.batch_size // self.world_size), (C, c.image_size, c.image_size),
                                backbone=c.backbone, small_stem=c.stem == "small", n_clusters=c.n_clusters, hparams=c.hparams,
                                amp=self.amp, optimizer=c.optimizer, momentum=c.momentum, n_images=len(self.train_data))

def check_memory(trainer:Trainer):
    "Refuse a run whose training step cannot fit in the device's free memory, before allocating it."
    est = trainer.memory_estimate()
    if not est: return
    msg = memory_refusal(est, available_memory(trainer.device), trainer.device)
    if msg:
        c = trainer.cfg
        raise ConfigError(f"{msg} (batch_size {c.batch_size}, image_size {c.image_size}, {c.backbone})")

# %% [markdown]
# The model step builds the backbone and hands it to the method. The optimiser step is shared with the benchmark
# chapter: Adam or SGD with momentum over the method's parameter groups (a method may exempt biases and norms from
# weight decay), fused on the GPU.

# %%
#| export
def compile_module(module:torch.nn.Module, # compiled in place
                   backend:str|object="inductor", # a torch.compile backend
                  ) -> torch.nn.Module:
    "torch.compile `module`'s forward in place, keeping its state-dict names; fall back to eager, with a warning, if compiling the forward or the backward fails."
    cls = type(module)
    compiled = torch.compile(cls.forward, backend=backend)
    failed, checked = [], []
    def trial_backward(self, args, kwargs):
        "Compile the backward too, on a trial pass whose buffer updates (batch-norm statistics) are undone."
        saved = {k: b.clone() for k, b in self.named_buffers()}
        out = compiled(self, *args, **kwargs)
        outs = [t for t in (out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else [out])
                if torch.is_tensor(t) and t.requires_grad]
        params = [q for q in self.parameters() if q.requires_grad]
        if outs and params: torch.autograd.grad(sum(t.float().sum() for t in outs), params, allow_unused=True)
        with torch.no_grad():
            for k, b in self.named_buffers(): b.copy_(saved[k])
    def forward(self, *args, **kwargs):
        if not failed:
            try:
                if not checked and torch.is_grad_enabled():
                    trial_backward(self, args, kwargs); checked.append(True)
                return compiled(self, *args, **kwargs)
            except Exception as e:
                failed.append(e)
                warnings.warn(f"torch.compile of {cls.__name__} failed ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); "
                              f"running it eagerly")
        return cls.forward(self, *args, **kwargs)
    module.__class__ = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__, "_compiled_from": cls})
    return module

@patch
def setup_model(self:Trainer):
    "The backbone and the method on the device (channels-last on a GPU; optionally compiled)."
    c = self.cfg
    backbone, feat_dim = make_backbone(c.backbone, self.train_data.x.shape[1], c.stem == "small", c.image_size)
    self.method = get_method(c.method)(backbone, feat_dim, c.n_clusters, **c.hparams).to(self.device)
    if self.channels_last: self.method = self.method.to(memory_format=torch.channels_last)
    self.method.amp = self.amp                   # for what a method computes outside its step (CADEC's k-means features)
    if c.compile: compile_module(self.method.backbone)
    self.step_fn = self.method.training_step     # the data-parallel trainer puts DDP in between

# %%
#| export
def make_optimizer(method, # a `ClusterMethod`
                   optimizer:str, # "adam" or "sgd"
                   lr:float, weight_decay:float, momentum:float=0.9,
                   device:torch.device=torch.device("cpu"), # fused kernels on CUDA by default
                   fused:bool|None=None, # fused kernels (None: on CUDA only)
                  ) -> torch.optim.Optimizer:
    "Adam or SGD with momentum over the method's parameter groups."
    groups = method.param_groups(weight_decay)
    fused = torch.device(device).type == "cuda" if fused is None else bool(fused)
    if optimizer == "adam": return torch.optim.Adam(groups, lr=lr, fused=fused)
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=fused)
        if fused and momentum:   # the fused kernel needs every momentum buffer once any exists: a method whose first
            for g in opt.param_groups:   # pass trains only some heads (CRLC's STL-10 features pass) would crash it
                for q in g["params"]: opt.state[q]["momentum_buffer"] = torch.zeros_like(q, memory_format=torch.preserve_format)
        return opt
    raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")

@patch
def setup_optimizer(self:Trainer):
    "The optimiser of the configuration."
    c = self.cfg
    self.opt = make_optimizer(self.method, c.optimizer, c.lr, c.weight_decay, c.momentum, self.device, c.fused)

# %% [markdown]
# The configuration of the quick start, and the pieces it resolves to:

# %%
_tr = Trainer(TrainConfig(method="cc", dataset="digits", progress=False, out_dir=str(_runs / "quick")), _data)
test_eq((_tr.cfg.backbone, _tr.cfg.batch_size, _tr.aug_cfg.kind, type(_tr.method).__name__, type(_tr.opt).__name__),
        ("small_cnn", 128, "digits", "CC", "Adam"))
test_eq(_tr.x.dtype, torch.uint8)
_rows = {r["setting"]: r for r in _tr.settings_table()}
test_eq((_rows["progress"]["from"], _rows["n_clusters"]["from"]), ("given", "the data"))
test_eq(_rows["lr"]["value"], 2e-3); assert _rows["lr"]["from"].startswith("ours")     # CC's table, digits row
test_eq((_rows["data_root"]["from"], _rows["protocol"]["from"]), ("trainer default", "trainer default"))
test_fail(lambda: Trainer(TrainConfig(image_size=1000, batch_size=1024, backbone="resnet50", stem="small", out_dir=str(_runs / "big")), _data),
          contains="for a training step")
_est = _tr.memory_estimate()
assert 0 < _est["total"] < 2**30 and _est["method"] == "cc"        # the quick start's step: well under a GiB

# %% [markdown]
# ## One epoch
# An epoch is the smallest loop's inner loop with three changes: the batches come from wherever the images live
# (`batches`), a process may take only its slice of each batch (`local_batch`, the identity here), and the step's
# scalars are summed *on the device*. Calling `.item()` after every step, as the smallest loop does, makes the host
# wait for the device at every step; summing on the device and reading the sums once per epoch does not. A method
# may train several heads one after another (`train_heads`); each pass reseeds from `(seed, epoch, pass)`.

# %%
#| export
@patch(as_prop=True)
def steps_per_epoch(self:Trainer) -> int:
    "Optimiser steps of one pass over the training images."
    return len(self.train_data) // self.cfg.batch_size

@patch(as_prop=True)
def passes(self:Trainer) -> list:
    "(head, images) of each pass of an epoch: the method's unlabelled-image heads first (when used), then its `train_heads`."
    ps = []
    if self.cfg.unlabeled:
        for head, which in self.method.unlabeled_heads.items():
            ps.append((head, self.x_unlabeled if which == "unlabeled" else torch.cat([self.x_unlabeled, self.x])))
    return ps + [(head, self.x) for head in self.method.train_heads]

@patch
def batches(self:Trainer, perm:torch.Tensor, x:torch.Tensor|None=None):
    "(indices, uint8 images) of each step of a pass over `x` (the training images), on the device."
    B, x = self.cfg.batch_size, self.x if x is None else x
    if not self.data_on_device:
        yield from host_batches(x, perm, B, len(x) // B, self.device); return
    for s in range(len(x) // B):
        idx = perm[s * B:(s + 1) * B]
        yield idx, x[idx]

@patch
def local_batch(self:Trainer, idx:torch.Tensor, xb:torch.Tensor) -> tuple:
    "This process's part of a global batch: all of it on one process."
    return idx, xb

@patch
def seed_views(self:Trainer, pass_index:int):
    "Reseed the augmentations of this pass after the permutation (one process: nothing to do)."

# %% [markdown]
# The learning rate may follow a schedule. It is a function of the step alone — linear warm-up, then constant or a
# cosine decay to zero at the last step — so a resumed run needs no scheduler state and replays the same rates.

# %%
#| export
def lr_at(step:int, # optimiser steps taken so far (0 for the first step)
          total:int, # steps in the whole run
          base:float, # the configured learning rate
          schedule:str="constant", # "constant" or "cosine"
          warmup:int=0, # warm-up steps
         ) -> float:
    "The learning rate of step `step`: linear warm-up from 0 over `warmup` steps, then constant or cosine to 0."
    if step < warmup: return base * (step + 1) / warmup
    if schedule == "cosine":
        t = (step - warmup) / max(1, total - warmup)
        return base * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return base

# %%
test_eq([lr_at(s, 10, 1.0) for s in (0, 9)], [1.0, 1.0])
test_close([lr_at(s, 10, 1.0, "cosine", warmup=2) for s in (0, 1, 2, 6)], [0.5, 1.0, 1.0, 0.5])
test_close(lr_at(10, 10, 1.0, "cosine"), 0.0)

# %%
#| export
@patch(as_prop=True)
def epoch_steps(self:Trainer) -> int:
    "Optimiser steps of one epoch (all its passes)."
    return sum(len(x) // self.cfg.batch_size for _, x in self.passes)

@patch(as_prop=True)
def total_steps(self:Trainer) -> int:
    "Optimiser steps of the whole run."
    n = self.cfg.epochs * self.epoch_steps
    return min(n, self.cfg.max_steps) if self.cfg.max_steps else n

@patch
def train_step(self:Trainer, idx:torch.Tensor, xb:torch.Tensor, head:str="main") -> dict:
    "One optimiser step on the uint8 images `xb` (indices `idx`): views, the method's loss, backward, step."
    idx, xb = self.local_batch(idx, xb)
    views = [self.aug(xb) for _ in range(self.method.n_views)]
    if self.channels_last: views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    raw = self.aug.eval_view(xb) if self.method.needs_raw else None
    if raw is not None and self.channels_last: raw = raw.contiguous(memory_format=torch.channels_last)
    c = self.cfg
    if c.schedule != "constant" or c.warmup_epochs:
        lr = lr_at(self.global_step, self.total_steps, c.lr, c.schedule, c.warmup_epochs * self.epoch_steps)
        for g in self.opt.param_groups: g["lr"] = lr
    with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
        out = self.step_fn(Batch(views, idx, raw), head)
    self.opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    self.opt.step()
    self.global_step += 1
    self.method.after_step(self.global_step)
    return out

# %%
#| export
class NonFiniteLoss(RuntimeError):
    "Raised when a training loss becomes NaN or infinite."

@patch
def non_finite_message(self:Trainer, bad:list) -> str:
    "What went wrong, which checkpoint is kept (if any), and which settings may be at fault."
    c, ck = self.cfg, self.out_dir / "checkpoint.pt"
    kept = (f"the checkpoint of epoch {self.epoch} is kept in {ck} (resume=True continues from it)" if self.epoch and ck.exists()
            else "no checkpoint was written (it failed in the first epoch)")
    return (f"non-finite {bad} in epoch {self.epoch + 1} (step {self.global_step}); {kept}. The learning rate may be too "
            f"high for this run (lr={c.lr:g}, weight_decay={c.weight_decay:g}, batch_size={c.batch_size}): try a lower lr, or another seed")

@patch
def out_of_budget(self:Trainer) -> bool:
    "Whether `max_steps` steps or `max_minutes` minutes (from the start of `fit`) have been spent."
    c, deadline = self.cfg, getattr(self, "deadline", None)
    return bool(c.max_steps and self.global_step >= c.max_steps) or bool(deadline and time.time() >= deadline)

@patch
def train_epoch(self:Trainer, bar=None) -> dict:
    "One pass over the training images per head; the mean of every loss term (one host synchronisation per epoch)."
    c, sums, counts = self.cfg, {}, {}
    self.method.train()
    for hi, (head, x) in enumerate(self.passes):
        seed_everything(c.seed, self.epoch, hi)
        perm = torch.randperm(len(x), device=x.device)    # the same permutation on every process
        self.seed_views(hi)
        batches = self.batches(perm, x)
        for idx, xb in batches:
            out = self.train_step(idx, xb, head)
            for k, v in out.items():
                key = k if head == "main" else f"{head}/{k}"
                sums[key] = sums.get(key, 0) + v.detach().float(); counts[key] = counts.get(key, 0) + 1
            if bar is not None: bar.update(1)
            self.event("after_step")
            if self.out_of_budget(): break
        batches.close()
        if self.out_of_budget(): break
    stats = {k: float(v) / counts[k] for k, v in sums.items()}
    bad = [k for k, v in stats.items() if not math.isfinite(v)]
    if bad: raise NonFiniteLoss(self.non_finite_message(bad))
    return stats

# %% [markdown]
# A dataset may come with unlabelled images (STL-10's 100,000). A method that trains some head on them names it in
# `unlabeled_heads`; with `unlabeled=True` (CC's table sets it for STL-10) each epoch starts with those passes:

# %%
_extra = ImageData(_data.train.x[:256].clone(), np.full(256, -1), _data.train.classes, "extra")
_with_extra = ClusterData(_data.train, _data.eval, 10, "digits", extra=_extra)
_tu = Trainer(TrainConfig(unlabeled=True, progress=False, out_dir=str(_runs / "extra")), _with_extra)
test_eq([(h, len(x)) for h, x in _tu.passes], [("instance", 256), ("main", 1797)])
test_eq(_tu.epoch_steps, 256 // 128 + 1797 // 128)
test_eq(set(_tu.train_epoch()), {"loss", "instance", "cluster", "instance/loss", "instance/instance"})
test_fail(lambda: Trainer(TrainConfig(unlabeled=True, progress=False, out_dir=str(_runs / "extra")), _data), contains="has no unlabelled images")

# %% [markdown]
# The check: with the trainer's seeding, the smallest loop and the trainer's epochs are the same computation.

# %%
_cfg = TrainConfig(method="cc", dataset="digits", subset=512, epochs=2, progress=False, out_dir=str(_runs / "cfg"))
_tr = Trainer(_cfg, _data)
_trainer_losses = [(_tr.train_epoch()["loss"], setattr(_tr, "epoch", _tr.epoch + 1))[0] for _ in range(2)]
seed_everything(0)
_bb, _fd = make_backbone("small_cnn", 1)
_cc = CC(_bb, _fd, 10)
_minimal_losses = fit_minimal(_cc, _tr.x, _tr.aug, epochs=2, batch_size=128, lr=_tr.cfg.lr, reseed=lambda e: seed_everything(0, e, 0))
test_close(_trainer_losses, _minimal_losses, eps=1e-5)
print("trainer:", [round(l, 5) for l in _trainer_losses], " smallest loop:", [round(l, 5) for l in _minimal_losses])

# %% [markdown]
# ## Evaluation
# The cluster head's prediction on un-augmented images (resized to the training size and normalised), scored with
# the metrics chapter's `score_assignments`: ACC/NMI/ARI, cluster usage, and whether the clustering has collapsed.
# The images go through `predict`, the models chapter's one function that runs a model over a dataset (the report
# and the methods' own evaluations use it too).

# %%
#| export
@patch
def evaluate(self:Trainer) -> dict:
    "Scores of the cluster head on the evaluation images, with cluster usage and collapse."
    self.predictions = predict(self.method, self.eval_data, self.aug, device=self.device, amp=self.amp)
    return score_assignments(self.eval_data.y, self.predictions["probs"])

# %%
_e = _tr.evaluate()
test_eq(sum(_e["cluster_sizes"]), len(_tr.eval_data)); test_eq(_tr.predictions["features"].shape, (512, 256))
print({k: _e[k] for k in ("acc", "nmi", "ari", "largest_cluster", "collapsed")})

# %% [markdown]
# ## Checkpoints and exact resume
# The state of a run is the method's weights and buffers (queues, memory banks and momentum networks included), the
# optimiser's state, the step counters and the history. It holds only tensors and plain data, so it loads with
# `torch.load(weights_only=True)` — PyTorch's safe loader, which refuses a file that carries code instead of running it.
# A checkpoint is written after every epoch to a temporary file and moved into place with `os.replace`, which is
# atomic: a kill at any moment leaves a complete checkpoint. The previous checkpoint is kept beside it, so a latest
# file damaged later (a full disk, a bad copy) falls back to the one before. The file side — `save_checkpoint`,
# `load_checkpoint` (with its fallback and its refusal of files that carry code), `atomic_save` and `write_json` —
# lives with the run folders (appendix *Run folders*, module `runs`); this chapter imports it.
#
# The trainer's side: what goes into a checkpoint, and how it comes back. `on_resume` gives the method the training
# images again (two-stage CRLC draws its positives from them).

# %%
#| export
@patch
def state(self:Trainer, finished:bool=False) -> dict:
    "Everything needed to continue the run, as tensors and plain data."
    return {"method": self.cfg.method, "dataset": self.cfg.dataset, "config": asdict(self.cfg), "augment": asdict(self.aug_cfg),
            "epoch": self.epoch, "global_step": self.global_step, "finished": finished,
            "model": self.method.state_dict(), "optimizer": self.opt.state_dict(), "history": self.history,
            "norm": {"mean": self.aug.mean.flatten().tolist(), "std": self.aug.std.flatten().tolist()}}

@patch
def load_state(self:Trainer, ck:dict):
    "Restore weights, optimiser state, counters and history from a checkpoint of the same method and dataset."
    if ck["method"] != self.cfg.method or ck["dataset"] != self.cfg.dataset:
        raise ConfigError(f"checkpoint is for method={ck['method']!r}, dataset={ck['dataset']!r}, "
                          f"not {self.cfg.method!r}/{self.cfg.dataset!r}")
    self.method.load_state_dict(ck["model"]); self.opt.load_state_dict(ck["optimizer"])
    self.epoch, self.global_step, self.history = ck["epoch"], ck["global_step"], ck["history"]
    self.method.on_resume(self.x, self.aug)

# %% [markdown]
# The check: two epochs, a checkpoint, a fresh trainer that loads it and trains a third epoch, against three epochs
# straight. Reseeding per epoch makes them identical, not merely close.

# %%
def _epochs(tr, n):
    for _ in range(n): tr.history.append(tr.train_epoch()); tr.epoch += 1
    return tr

with tempfile.TemporaryDirectory() as _t:
    _a = _epochs(Trainer(_cfg, _data), 2)
    save_checkpoint(_a.state(), Path(_t) / "checkpoint.pt")
    _b = Trainer(_cfg, _data); _b.load_state(load_checkpoint(Path(_t) / "checkpoint.pt")[0]); _epochs(_b, 1)
    _whole = _epochs(Trainer(_cfg, _data), 3)
    test_eq([h["loss"] for h in _b.history], [h["loss"] for h in _whole.history])
    for _k, _v in _whole.method.state_dict().items(): test_eq(_b.method.state_dict()[_k], _v)

# %% [markdown]
# ## Run folders
# A run lives in a folder: `config.json` (the configuration actually used), `history.csv`/`history.json`, the
# checkpoints, `metrics.json`, two figures, and the marker `deepcluster_run.json` that lists them and says how the run
# ended. The rules for a folder (appendix *Run folders*, `check_run_folder`) are checked when the trainer is built,
# before any data is read: the trainer never replaces a run that is already there unless told to (`overwrite=True`),
# never touches a folder it did not write, and `overwrite` removes only its own files. A resumed run must be the run
# it continues: changing the architecture, the data or the optimisation is refused, while what only extends or
# observes the run (more epochs, the evaluation interval, the device) is allowed and recorded.

# %%
#| export
RESUME_SAFE = ("epochs", "eval_every", "max_steps", "max_minutes", "progress", "device", "amp", "channels_last", "fused", "compile", "data_on_device", "threads",
               "out_dir", "resume", "overwrite", "stop_on_collapse", "data_root")

def _plain(v): return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else {k: _plain(x) for k, x in v.items()} if isinstance(v, dict) else v

def config_changes(saved:dict, # the configuration in the checkpoint
                   new:dict, # the configuration of the resuming run
                  ) -> tuple: # (safe changes, refused changes), each name -> (saved, new)
    "What a resumed run changes, split into the changes that are safe and the ones that would make it another run."
    diff = {k: (saved.get(k), v) for k, v in new.items() if _plain(saved.get(k)) != _plain(v) and k not in ("resume", "overwrite", "progress")}
    return {k: d for k, d in diff.items() if k in RESUME_SAFE}, {k: d for k, d in diff.items() if k not in RESUME_SAFE}

# %%
test_eq(config_changes({"epochs": 10, "lr": 1e-3}, {"epochs": 20, "lr": 1e-3}), ({"epochs": (10, 20)}, {}))
test_eq(config_changes({"epochs": 10, "lr": 1e-3}, {"epochs": 10, "lr": 2e-3})[1], {"lr": (1e-3, 2e-3)})
test_eq(config_changes({"hparams": {"w": (1, 2)}}, {"hparams": {"w": [1, 2]}}), ({}, {}))   # a tuple saved, a list given

# %%
#| export
@patch
def start_run(self:Trainer):
    "Check the run-folder rules again (the `RunFolder` callback claims it), then resume from the checkpoint or start."
    c, d = self.cfg, self.out_dir
    mode = check_run_folder(d, c.resume, c.overwrite)          # again: the folder may have changed since
    ck_path = d / "checkpoint.pt"
    self.resumed_changes = {}
    if mode == "resume":
        ck, src = load_checkpoint(ck_path, self.device)
        safe, refused = config_changes(ck["config"], asdict(c))
        if refused:
            raise ConfigError(f"cannot resume {d}: the checkpoint was trained with another configuration ("
                              + ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in refused.items())
                              + "). Resume with the saved values, or start a new run (another out_dir, or overwrite=True)")
        self.load_state(ck)
        self.resumed_changes = safe
        self.folder_mode_now = mode
        if self.is_main:
            print(f"resumed from {src} at epoch {self.epoch}" + (f"; changed: {', '.join(f'{k} {a!r} → {b!r}' for k, (a, b) in safe.items())}" if safe else ""))
        return
    self.folder_mode_now = mode
    seed_everything(c.seed, 10**6)
    self.method.on_train_start(self.x, self.aug, c.seed)

# %% [markdown]
# ## Watching for collapse and divergence
# A run can go wrong quietly: with a far too large learning rate, the softmax saturates, every image lands in one
# cluster and the loss stops moving; a loss can also grow by orders of magnitude for many epochs before it turns NaN.
# The trainer already reads the epoch's mean losses once per epoch, so watching them costs nothing. An evaluation
# flags collapsed clusters (`score_assignments`); `loss_alarm` flags a loss that has exploded relative to the first
# epoch or has not moved for five epochs. Alarms go into the history, the progress output and `metrics.json`;
# `stop_on_collapse=True` also stops the run, keeping its checkpoint.

# %%
#| export
def loss_alarm(losses:list, # mean loss of each epoch so far
               window:int=5, # epochs without movement that count as stalled
               explode:float=1e3, # growth over the first epoch's scale that counts as exploding
              ) -> str|None: # "exploding", "stalled" or None
    "Whether a loss curve has exploded (|loss| ≫ the first epoch's) or stopped moving."
    if not losses: return None
    if abs(losses[-1]) > explode * (abs(losses[0]) + 1): return "exploding"
    last = losses[-window:]
    if len(losses) > window and max(last) - min(last) <= 1e-6 * (abs(sum(last) / len(last)) + 1e-3): return "stalled"
    return None

class Collapsed(RuntimeError):
    "Raised by `stop_on_collapse` when the clusters collapse or the loss explodes or stalls."

# %%
test_eq(loss_alarm([5.0, 4.0, 3.5]), None)
test_eq(loss_alarm([5.0, 60.0, 1e5]), "exploding")
test_eq(loss_alarm([5.0, 2.3026, 2.3026, 2.3026, 2.3026, 2.3026]), "stalled")
test_eq(loss_alarm([5.0, 4.0, 4.0, 4.0, 4.0, 3.99]), None)

# %% [markdown]
# ## Mixed precision
# On a GPU the forward pass runs under bf16 autocast (`amp`): matrix products in bfloat16, reductions and the losses
# in float32 (every loss of the course casts to float32 before its softmax). bfloat16 keeps float32's exponent range,
# so no loss scaling is needed. The check runs one CC step in bf16 on the CPU against float32: the loss agrees to the
# precision of bfloat16's 8-bit mantissa.

# %%
_tr32 = Trainer(replace(_cfg, amp=False), _data); _tr16 = Trainer(replace(_cfg, amp=True), _data)
seed_everything(0); _l32 = _tr32.train_step(torch.arange(128), _tr32.x[:128])["loss"]
seed_everything(0); _l16 = _tr16.train_step(torch.arange(128), _tr16.x[:128])["loss"]
test_close(_l16, _l32, eps=0.05 * abs(float(_l32)))
print(f"one step: float32 loss {float(_l32):.4f}, bf16 autocast {float(_l16):.4f}")

# %% [markdown]
# ## Data on the device
# **Where the images live.** With `data_on_device=True` the whole uint8 training set sits in device memory; an epoch
# is a permutation of indices and a batch is a slice of it, gathered on the device. At native size CIFAR-10 (60,000
# images) takes 184 MB and STL-10 with its unlabelled split (113,000 images of 96 px) 3.1 GB, so they fit on one GPU.
# For a dataset that does not, `data_on_device=False` keeps the images in host memory and works like a DataLoader: a
# background thread gathers the uint8 images of the next batches on the host and pins them, and the main thread copies
# each batch with `non_blocking=True`, so the copy overlaps the GPU's work on the previous step. `None` (the default)
# keeps the data on the device when it takes at most half of the free device memory.

# %%
#| export
def use_data_on_device(setting:bool|None, # TrainConfig.data_on_device: True, False or None (decide)
                       x:torch.Tensor, # the uint8 training images
                       device:torch.device, # the training device
                      ) -> bool:
    "Resolve `data_on_device`: None keeps the images on the device if they take at most half of its free memory."
    if setting is not None: return bool(setting)
    if device.type != "cuda": return True
    free, _ = torch.cuda.mem_get_info(device)
    return x.numel() * x.element_size() <= free // 2

def host_batches(x:torch.Tensor, # uint8 images (N, C, H, W) in host memory
                 perm:torch.Tensor, # host permutation of the N indices
                 batch_size:int, # images per batch
                 n_batches:int, # batches to yield
                 device:torch.device, # where the batches go
                 prefetch:int=2, # batches prepared ahead by the background thread
                ):
    "Yield (indices, images) on `device`, gathered from host memory in a background thread, pinned and copied asynchronously."
    pin = torch.device(device).type == "cuda"
    q, stop = queue.Queue(maxsize=prefetch), threading.Event()
    def put(item):
        while not stop.is_set():
            try: q.put(item, timeout=0.1); return True
            except queue.Full: pass
        return False
    def work():
        try:
            for s in range(n_batches):
                idx = perm[s * batch_size:(s + 1) * batch_size]
                xb = x.index_select(0, idx)
                if not put((idx.pin_memory(), xb.pin_memory()) if pin else (idx, xb)): return
        except Exception as e: put(e)
    t = threading.Thread(target=work, daemon=True, name="host_batches"); t.start()
    try:
        for _ in range(n_batches):
            item = q.get()
            if isinstance(item, Exception): raise item
            yield tuple(v.to(device, non_blocking=True) for v in item)
    finally:
        stop.set(); t.join()

# %%
_xh = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
_perm = torch.randperm(10)
_got = list(host_batches(_xh, _perm, 3, 3, torch.device("cpu")))
test_eq([i.tolist() for i, _ in _got], [_perm[s * 3:(s + 1) * 3].tolist() for s in range(3)])
test_eq(torch.cat([b[:, 0, 0, 0] for _, b in _got]).tolist(), _perm[:9].tolist())
_g = host_batches(_xh, _perm, 2, 5, torch.device("cpu")); next(_g); _g.close()   # stopping early ends the thread
assert not any(t.name == "host_batches" for t in threading.enumerate())
test_eq(use_data_on_device(None, _xh, torch.device("cpu")), True); test_eq(use_data_on_device(False, _xh, torch.device("cpu")), False)

# %%
#| export
@patch
def place_data(self:Trainer, x:torch.Tensor):
    "Put the uint8 training images `x` on the device, or leave them in host memory for `host_batches`."
    extra = self.data.extra.x if self.cfg.unlabeled else None
    self.data_on_device = use_data_on_device(self.cfg.data_on_device, x if extra is None else torch.cat([x, extra]), self.device)
    put = lambda t: t.to(self.device) if self.data_on_device else t
    self.x = put(x)
    self.x_unlabeled = None if extra is None else put(extra)

# %% [markdown]
# The host path gives the same epochs as the resident data (on the CPU both draw the same permutation):

# %%
_dev, _host = _epochs(Trainer(_cfg, _data), 2), _epochs(Trainer(replace(_cfg, data_on_device=False), _data), 2)
test_eq((_dev.data_on_device, _host.data_on_device), (True, False))
test_eq([h["loss"] for h in _host.history], [h["loss"] for h in _dev.history])

# %% [markdown]
# **Compiling.** `torch.compile` fuses the backbone's operations into fewer, larger kernels. Compiling can fail
# (no compiler available, an unsupported operation), and it fails at the first call, not when `torch.compile` is
# called. `compile_module` (above) therefore swaps in a forward that calls the compiled code and, if that raises,
# warns once and runs the original forward from then on. It changes only the module's class, so the parameter names
# in the checkpoint stay the same, and a deep copy (a momentum encoder) stays compiled and stays correct.

# %%
_bb, _ = make_backbone("small_cnn", 1); _bb.eval()
_xc = torch.randn(4, 1, 8, 8); _ref = _bb(_xc); _keys = list(_bb.state_dict())
compile_module(_bb, backend="eager")
test_close(_bb(_xc), _ref, eps=1e-6); test_eq(list(_bb.state_dict()), _keys); test_close(copy.deepcopy(_bb)(_xc), _ref, eps=1e-6)
def _no_compiler(gm, example_inputs): raise RuntimeError("no compiler")
_bb2, _ = make_backbone("small_cnn", 1); _bb2.eval(); _ref2 = _bb2(_xc)
compile_module(_bb2, backend=_no_compiler)
with warnings.catch_warnings(record=True) as _w:
    warnings.simplefilter("always"); _out2 = _bb2(_xc)
test_close(_out2, _ref2, eps=1e-6); assert any("running it eagerly" in str(w.message) for w in _w)
# a backward that cannot compile (its compiler raises) is caught at the first training call too, not in loss.backward()
def _fw_only(gm, example_inputs): return gm.forward
def _no_bw(gm, example_inputs): raise RuntimeError("no backward compiler")
_bb3, _ = make_backbone("small_cnn", 1); _bb3.train()
compile_module(_bb3, backend=aot_autograd(fw_compiler=_fw_only, bw_compiler=_no_bw))
with warnings.catch_warnings(record=True) as _w:
    warnings.simplefilter("always"); _out3 = _bb3(_xc)
    _out3.sum().backward()                                  # the eager graph: no error here
assert any("no backward compiler" in str(w.message) for w in _w)
assert all(p.grad is not None for p in _bb3.parameters())

# %% [markdown]
# ## Plots
# The training curves and the confusion matrix after Hungarian matching, written into every run folder.

# %%
#| export
def plot_history(history:list, title:str=""):
    "Losses per epoch (left) and ACC/NMI/ARI at each evaluation (right)."
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    ep = [h["epoch"] for h in history]
    skip = ("epoch", "step", "time_s", "acc", "nmi", "ari", "empty_clusters", "largest_cluster", "majority_acc", "collapsed", "alarm")
    for k in [k for k in history[0] if k not in skip and isinstance(history[0][k], (int, float))]:
        a.plot(ep, [h.get(k, np.nan) for h in history], label=k)
    a.set_xlabel("epoch"); a.set_ylabel("loss"); a.legend(fontsize=8, loc="best"); a.set_title("training losses")
    for k in ("acc", "nmi", "ari"):
        pts = [(h["epoch"], h[k]) for h in history if k in h]
        if pts: b.plot(*zip(*pts), marker="o", label=k.upper())
    bad = [h["epoch"] for h in history if h.get("collapsed")]
    if bad: b.scatter(bad, [0.02] * len(bad), marker="x", color="firebrick", label="collapsed")
    b.set_xlabel("epoch"); b.set_ylim(0, 1); b.legend(fontsize=8, loc="best"); b.set_title("evaluation")
    for ax in (a, b): ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title: fig.suptitle(title)
    fig.tight_layout(); return fig

def plot_confusion(y_true, y_pred, classes:list, n_clusters:int, title:str=""):
    "Heatmap of the matched confusion matrix, class names on the rows."
    import matplotlib.pyplot as plt, seaborn as sns
    cm, order = matched_confusion(y_true, y_pred, n_clusters, return_order=True)
    side = min(12, 3 + 0.45 * cm.shape[1])
    fig, ax = plt.subplots(figsize=(side, min(12, 2.5 + 0.4 * cm.shape[0])))
    sns.heatmap(cm, annot=cm.shape[1] <= 20, fmt="d", cmap="Blues", cbar=False, ax=ax,
                yticklabels=classes if len(classes) <= 40 else False, xticklabels=order if len(order) <= 40 else False)
    ax.set_xlabel("cluster id (in matched order)"); ax.set_ylabel("true class"); ax.set_title(title or "confusion after Hungarian matching")
    fig.tight_layout(); return fig

@patch
def write_figures(self:Trainer):
    "training_curves.png, and confusion.png after an evaluation, in the run folder; returns the file names."
    import matplotlib.pyplot as plt
    name = f"{self.cfg.method} on {Path(str(self.cfg.dataset)).stem}"
    figs = [("training_curves.png", lambda: plot_history(self.history, name))]
    if getattr(self, "predictions", None) is not None:
        y, pred = self.eval_data.y, self.predictions["probs"].argmax(1)
        acc = f": ACC {score_assignments(y, self.predictions['probs'])['acc']:.3f}" if (y >= 0).any() else ""
        figs.append(("confusion.png", lambda: plot_confusion(y, pred, self.eval_data.classes, self.cfg.n_clusters, name + acc)))
    for fname, draw in figs:
        fig = draw(); fig.savefig(self.out_dir / fname, dpi=110); plt.close(fig)
    return [f for f, _ in figs]

# %% [markdown]
# ## Fitting, one concern at a time
# `fit` is the loop of the first section: epochs of `train_epoch` until the configured number (or the budget of
# `max_steps`/`max_minutes`) is reached. Everything else a run does — the run folder, evaluation, alarms, checkpoints,
# progress — is a **callback**: an object with methods named after the events of the loop (`before_fit`,
# `before_epoch`, `after_step`, `after_epoch`, `after_fit`, `on_exception`), called in the order of their `order`
# attribute. The loop itself never changes when a concern is added or taken away; `Trainer(cfg, remove=(Checkpoint,))`
# switches one off, `Trainer(cfg, cbs=[MyCallback()])` adds one. This is fastai's design, kept small.
#
# During an epoch's end, `tr.rec` is that epoch's record (already the last entry of `tr.history`): the callbacks add
# to it — the evaluation its scores, the alarms their warning — before the checkpoint saves it.

# %%
#| export
class Callback:
    "A concern of the training loop: define methods named after the events (before_fit, before_epoch, after_step, after_epoch, after_fit, on_exception); lower `order` runs first."
    order = 0
    def __repr__(self): return type(self).__name__

@patch
def fit(self:Trainer) -> dict:
    "Train (or resume) to the configured number of epochs, the callbacks doing the rest; return the final metrics."
    c = self.cfg
    self.start_run()
    self.t0, self.say = time.time(), print
    self.deadline = time.time() + 60 * c.max_minutes if c.max_minutes else None
    try:
        self.event("before_fit")
        while self.epoch < c.epochs and not self.out_of_budget():
            self.event("before_epoch")
            stats = self.train_epoch()
            self.epoch += 1
            self.last = self.epoch == c.epochs or self.out_of_budget()
            self.rec = {"epoch": self.epoch, "step": self.global_step, **stats, "time_s": round(time.time() - self.t0, 2)}
            self.history.append(self.rec)
            self.event("after_epoch")
        self.metrics = {"method": c.method, "dataset": str(c.dataset), "epochs": self.epoch, "steps": self.global_step,
                        "checkpoint": str(self.out_dir / "checkpoint.pt"), "train_seconds": round(time.time() - self.t0, 1),
                        "world_size": self.world_size}
        self.event("after_fit")
    except BaseException as e:
        self.event("on_exception", e)
        raise
    return self.metrics

# %% [markdown]
# The callbacks, in the order they run. **Evaluation** every `eval_every` epochs and at the end (process 0 only):

# %%
#| export
class Evaluate(Callback):
    "Score the cluster head every `eval_every` epochs and at the end; flag collapsed clusters; the final scores go into the metrics."
    order = 10
    def after_epoch(self, tr):
        c = tr.cfg
        if not tr.is_main or not ((c.eval_every and tr.epoch % c.eval_every == 0) or tr.last): return
        ev = tr.evaluate()
        tr.rec.update({k: v for k, v in ev.items() if k not in ("cluster_sizes", "collapse")})
        if ev["collapsed"]: tr.rec["alarm"] = "collapsed: " + "; ".join(ev["collapse"])
    def after_fit(self, tr):
        if tr.is_main: tr.metrics = {**tr.evaluate(), **tr.metrics}

# %% [markdown]
# **Alarms**: the loss watch of *Watching for collapse and divergence* on every epoch's mean loss, a warning line, and
# the list of alarms in the metrics. Stopping on an alarm is a callback of its own, placed after the checkpoint, so
# the stopped run keeps the epoch that raised it:

# %%
#| export
class Alarms(Callback):
    "Flag a loss that explodes or stalls (beside the evaluation's collapse flag), warn, and list every alarm in the metrics."
    order = 20
    def before_fit(self, tr): self.alarms = [h["alarm"] for h in tr.history if h.get("alarm")]
    def after_epoch(self, tr):
        la = loss_alarm([h["loss"] for h in tr.history if "loss" in h]) if "loss" in tr.rec else None
        if la: tr.rec["alarm"] = (tr.rec["alarm"] + "; " if tr.rec.get("alarm") else "") + f"loss {la}"
        if tr.rec.get("alarm"):
            self.alarms.append(tr.rec["alarm"])
            if tr.is_main: tr.say(f"WARNING epoch {tr.epoch}: {tr.rec['alarm']}")
    def after_fit(self, tr):
        if tr.is_main: tr.metrics["alarms"] = self.alarms

class StopOnCollapse(Callback):
    "With `stop_on_collapse=True`, end the run (keeping its checkpoint) at the first alarm."
    order = 90
    def after_epoch(self, tr):
        if tr.cfg.stop_on_collapse and tr.rec.get("alarm"):
            raise Collapsed(f"stopped at epoch {tr.epoch} ({tr.rec['alarm']}); the checkpoint is kept in {tr.out_dir}")

# %% [markdown]
# The history is written as JSON and as a CSV of its scalar columns; `config.json` records the configuration actually
# used, the augmentation, the sizes, the device, the torch version and every resume with what it changed:

# %%
#| export
def write_history(history:list, out_dir):
    "The per-epoch history as history.json and history.csv (scalar columns)."
    out_dir = Path(out_dir); write_json(history, out_dir / "history.json")
    cols = []
    for h in history: cols += [k for k, v in h.items() if k not in cols and not isinstance(v, (list, dict))]
    with open(out_dir / "history.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, cols); w.writeheader()
        for h in history: w.writerow({k: h.get(k, "") for k in cols})
    os.replace(out_dir / "history.csv.tmp", out_dir / "history.csv")

@patch
def write_config(self:Trainer):
    "config.json: the configuration actually used (data root included), the augmentation, sizes and versions."
    d = self.out_dir / "config.json"
    prev = json.loads(d.read_text()).get("resumed", []) if d.exists() and self.epoch else []
    if self.resumed_changes: prev = prev + [{"at_epoch": self.epoch, "changed": {k: list(v) for k, v in self.resumed_changes.items()}}]
    write_json({"config": asdict(self.cfg), "augment": asdict(self.aug_cfg), "n_train": len(self.train_data),
                "n_eval": len(self.eval_data), "device": str(self.device), "world_size": self.world_size,
                "torch": torch.__version__, "resumed": prev}, d)

# %% [markdown]
# **Checkpoints and history**, atomically after every epoch; and the **run folder**: claimed at the start (the rules
# of *Run folders*), `config.json`, the marker's list of files and status, `metrics.json` and the figures at the end,
# and a failed or stopped run marked as such:

# %%
#| export
class Checkpoint(Callback):
    "Save the checkpoint and the history after every epoch (process 0)."
    order = 50
    def after_epoch(self, tr):
        if not tr.is_main: return
        save_checkpoint(tr.state(finished=tr.last), tr.out_dir / "checkpoint.pt")
        write_history(tr.history, tr.out_dir)
        if read_marker(tr.out_dir) is not None:
            update_marker(tr.out_dir, ["checkpoint.pt", "checkpoint.prev.pt", "history.json", "history.csv"], epoch=tr.epoch)

class RunFolder(Callback):
    "Claim the run folder, write config.json, metrics.json and the figures, and keep the marker's status (process 0)."
    order = 60
    def before_fit(self, tr):
        if not tr.is_main: return
        claim_run_folder(tr.out_dir, tr.folder_mode_now, method=tr.cfg.method, dataset=str(tr.cfg.dataset))
        tr.write_config(); update_marker(tr.out_dir, ["config.json"])
    def after_fit(self, tr):
        if not tr.is_main: return
        write_json(tr.metrics, tr.out_dir / "metrics.json")
        figures = tr.write_figures()
        update_marker(tr.out_dir, ["metrics.json", *figures], status="finished", epoch=tr.epoch)
    def on_exception(self, tr, e):
        if tr.is_main and read_marker(tr.out_dir) is not None:
            status = "stopped" if isinstance(e, (KeyboardInterrupt, Collapsed)) else "failed"
            update_marker(tr.out_dir, status=status, epoch=tr.epoch, error=f"{type(e).__name__}: {str(e).strip()[:300]}")

# %% [markdown]
# **Progress**: a progress bar, or, with `progress=False`, one line per epoch (so a papermill run with
# `--log-output` shows how it goes):

# %%
#| export
@patch
def epoch_line(self:Trainer, rec:dict) -> str:
    "One line for an epoch's record: epoch, step, loss, the scores when evaluated, the time."
    c = self.cfg
    bits = [f"epoch {rec['epoch']}/{c.epochs}", f"step {rec['step']}/{self.total_steps}"]
    if "loss" in rec: bits.append(f"loss {rec['loss']:.4f}")
    if "acc" in rec: bits.append(f"ACC {rec['acc']:.3f} NMI {rec['nmi']:.3f} ARI {rec['ari']:.3f}")
    return f"{c.method} on {Path(str(c.dataset)).stem}: " + ", ".join(bits) + f" ({rec['time_s']:.0f} s)"

class Progress(Callback):
    "A tqdm bar over the run's steps, or one line per epoch when `progress=False` (process 0)."
    order = 80
    bar = None   # until fit starts (train_epoch may be called on its own)
    def before_fit(self, tr):
        from tqdm.auto import tqdm
        c = tr.cfg
        self.bar = tqdm(total=tr.total_steps, initial=min(tr.global_step, tr.total_steps), desc=f"{c.method} on {Path(str(c.dataset)).stem}",
                        mininterval=2, dynamic_ncols=True) if c.progress and tr.is_main else None
        if self.bar is not None: tr.say = self.bar.write
    def after_step(self, tr):
        if self.bar is not None: self.bar.update(1)
    def after_epoch(self, tr):
        if not tr.is_main: return
        if self.bar is None: print(tr.epoch_line(tr.rec), flush=True)
        else: self.bar.set_postfix(loss=f"{tr.rec.get('loss', float('nan')):.3f}", acc=f"{tr.rec.get('acc', float('nan')):.3f}")
    def after_fit(self, tr):
        if self.bar is not None: self.bar.close()
    on_exception = lambda self, tr, e: self.after_fit(tr)

# %% [markdown]
# The trainer's callbacks, and the quiet set that chapters and experiments remove when they want the loop alone (no
# files, no evaluation, no output):

# %%
#| export
DEFAULT_CALLBACKS = (Evaluate, Alarms, Checkpoint, RunFolder, Progress, StopOnCollapse)
QUIET = (Evaluate, Alarms, Checkpoint, RunFolder, Progress)

@patch
def default_callbacks(self:Trainer) -> list:
    "One instance of each default callback."
    return [cb() for cb in DEFAULT_CALLBACKS]

@patch
def setup_callbacks(self:Trainer, cbs:tuple=(), remove:tuple=()):
    "The default callbacks less the classes in `remove`, plus `cbs`, sorted by order."
    unknown = [r for r in remove if not (isinstance(r, type) and issubclass(r, Callback))]
    if unknown: raise ConfigError(f"remove takes callback classes, got {unknown}")
    self.cbs = sorted([cb for cb in self.default_callbacks() if not isinstance(cb, tuple(remove))] + list(cbs), key=lambda cb: cb.order)
# %% [markdown]
# The loop alone, with every quiet-able concern removed, is the computation of the chapter's earlier checks (which
# called `train_epoch` by hand): the same losses, and nothing written. A callback of one's own sees every event:

# %%
class _Count(Callback):
    def before_fit(self, tr): self.seen = {"steps": 0, "epochs": 0}
    def after_step(self, tr): self.seen["steps"] += 1
    def after_epoch(self, tr): self.seen["epochs"] += 1
with tempfile.TemporaryDirectory() as _t:
    _quiet = Trainer(replace(_cfg, out_dir=f"{_t}/run"), _data, cbs=[_count := _Count()], remove=QUIET)
    _quiet.fit()
    test_eq([h["loss"] for h in _quiet.history], [h["loss"] for h in _epochs(Trainer(_cfg, _data), 2).history])
    test_eq(_count.seen, {"steps": 2 * (512 // 128), "epochs": 2})
    assert not Path(f"{_t}/run").exists()                                   # no RunFolder: no folder
    test_eq([type(cb).__name__ for cb in Trainer(replace(_cfg, out_dir=f"{_t}/r2"), _data, remove=(Checkpoint,)).cbs],
            ["Evaluate", "Alarms", "RunFolder", "Progress", "StopOnCollapse"])
    test_fail(lambda: Trainer(_cfg, _data, remove=("Checkpoint",)), contains="remove takes callback classes")

# %% [markdown]
# A short run on digits, small enough for the tests (two epochs), and what it leaves in its folder:

# %%
with tempfile.TemporaryDirectory() as _t:
    _tr = Trainer(TrainConfig(epochs=2, out_dir=_t, progress=False, eval_every=1), _data)
    _m = _tr.fit()
    assert {"acc", "nmi", "ari", "cluster_sizes", "collapsed"} <= set(_m) and len(_tr.history) == 2
    test_eq(sorted(f.name for f in Path(_t).iterdir()),
            ["checkpoint.prev.pt", "checkpoint.pt", "config.json", "confusion.png", "deepcluster_run.json", "history.csv",
             "history.json", "metrics.json", "training_curves.png"])
    test_eq((read_marker(_t)["status"], read_marker(_t)["epoch"], len(read_marker(_t)["files"])), ("finished", 2, 8))
    _ck, _ = load_checkpoint(Path(_t) / "checkpoint.pt")
    test_eq((_ck["epoch"], _ck["finished"]), (2, True))
    test_eq(json.loads((Path(_t) / "config.json").read_text())["config"]["data_root"], str(data_root()))
    # the same folder again: refused, unless resumed or overwritten
    test_fail(lambda: Trainer(TrainConfig(epochs=2, out_dir=_t, progress=False), _data).fit(), contains="already holds a run")
    test_fail(lambda: Trainer(TrainConfig(epochs=3, lr=1e-2, out_dir=_t, progress=False, resume=True), _data).fit(),
              contains="lr 0.002 → 0.01")
    _m3 = Trainer(TrainConfig(epochs=3, eval_every=1, out_dir=_t, progress=False, resume=True), _data).fit()   # more epochs: allowed
    test_eq(json.loads((Path(_t) / "config.json").read_text())["resumed"], [{"at_epoch": 2, "changed": {"epochs": [2, 3]}}])
print({k: _m[k] for k in ("acc", "nmi", "ari")})
_ = plot_history(_tr.history, "2 epochs of CC on digits")

# %% [markdown]
# With `compile=True` the backbone runs through `torch.compile` (slow to compile on the CPU, so this cell is
# skipped in the tests):

# %%
#| slow
_tc = Trainer(replace(_cfg, compile=True, epochs=1), _data, remove=QUIET); _tc.fit()
assert hasattr(type(_tc.method.backbone), "_compiled_from")
test_close(_tc.history[0]["loss"], _dev.history[0]["loss"], eps=1e-3)

# %%
#| hide
import nbdev; nbdev.nbdev_export()
