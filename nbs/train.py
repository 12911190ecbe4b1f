# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Train a clustering method
# > The run notebook: `papermill nbs/train.ipynb out.ipynb -p method cc -p dataset cifar10`. Every parameter below can be set with `-p name value` (or `-y` for YAML); `papermill nbs/train.ipynb --help-notebook` lists them.
#
# A parameter left at `None` takes the method's setting for the dataset from its settings table — the paper's
# settings on the paper's benchmarks (for CC: ResNet-34 with the ImageNet stem, images resized to 224 px, Adam 3e-4,
# batch 256, 1,000 epochs). The table printed below says where every value came from. For native resolution with
# the small-image stem: `-p image_size native -p stem small`. The same run from a shell:
# `python -m deepcluster_nb train --method cc --dataset cifar10`.

# %%
from typing import Optional, Union
import pandas as pd
from IPython.display import Image, display
from deepcluster_nb.train import Trainer, config_from_namespace

# %%
_before = set(globals()) | {"_before"}   # every name defined after this line is a parameter

# %% tags=["parameters"]
method: str = "cc"  # clustering method: cc, dcdc, crlc, tcc, cadec (any registered method)
dataset: str = "digits"  # benchmark name, a path to an .npz file or ImageFolder, or NAME for data_root/NAME.npz
data_root: Optional[str] = None  # data folder (None: $DEEPCLUSTER_DATA, else the project's data/)
protocol: Optional[str] = None  # "paper" (train and evaluate on the paper's splits) or "train-test"; None: the method's
backbone: Optional[str] = None  # small_cnn, resnet18, resnet34 or resnet50, optionally prefixed sobel_
stem: Optional[str] = None  # ResNet stem: "imagenet" (7x7/2 and max-pool) or "small" (3x3/1)
image_size: Optional[Union[int, str]] = None  # training resolution in pixels, or "native" (the dataset's own)
n_clusters: Optional[int] = None  # number of clusters K (None: the number of classes)
epochs: Optional[int] = None  # passes over the training images
batch_size: Optional[int] = None  # images per optimiser step (each gives the method's number of views)
optimizer: Optional[str] = None  # "adam" or "sgd"
lr: Optional[float] = None  # learning rate
weight_decay: Optional[float] = None  # weight decay
momentum: float = 0.9  # SGD momentum
schedule: Optional[str] = None  # learning-rate schedule: "constant" or "cosine" (to 0 at the last step)
warmup_epochs: Optional[int] = None  # epochs of linear learning-rate warm-up from 0
seed: int = 0  # seeds Python, NumPy and torch; runs with one seed are identical on one machine
device: str = "auto"  # "auto" (cuda if available), "cuda", "cuda:N" or "cpu"
amp: Optional[bool] = None  # bf16 autocast (None: on for cuda, off on the CPU)
channels_last: Optional[bool] = None  # channels-last memory format for the model and views (None: on for cuda)
fused: Optional[bool] = None  # fused optimiser kernels (None: on for cuda; Adam and SGD have them on the CPU too)
compile: bool = False  # torch.compile the backbone (falls back to eager, with a warning, if compiling fails)
data_on_device: Optional[bool] = None  # keep the uint8 training set on the device (None: if it fits)
threads: int = 0  # PyTorch CPU threads (0: one thread for the small CNN on the CPU, which never stalls on a busy machine; else PyTorch's default)
out_dir: str = "runs/{method}_{dataset}_s{seed}"  # run folder for config, history, checkpoint, metrics and figures
resume: bool = False  # continue the run in out_dir from its checkpoint
overwrite: bool = False  # replace a run already in out_dir (otherwise the trainer refuses to touch it)
eval_every: int = 10  # evaluate every N epochs (0: only at the end)
stop_on_collapse: bool = False  # stop (keeping the checkpoint) when the clusters collapse or the loss explodes or stalls
max_steps: int = 0  # stop after this many optimiser steps (0: no limit); for trimmed runs
max_minutes: float = 0  # stop after this many minutes of training (0: no limit); the run then ends as if finished
subset: int = 0  # train on a random subset of this many images (0: all)
unlabeled: Optional[bool] = None  # also train on the dataset's unlabelled images (STL-10's 100,000) where the method's paper does
progress: bool = True  # show a progress bar (off: one line per epoch)
hparams: dict = {}  # method hyperparameters, e.g. {"tau_i": 0.5}

# %% [markdown]
# ## The run
# The parameters are checked before anything is loaded: a misspelt name, a value of the wrong type or out of range,
# or a run folder that already holds a run stops here with a message that says what to type instead.

# %%
cfg = config_from_namespace(globals(), _before)
trainer = Trainer(cfg)
print(trainer.data)
print("run folder:", trainer.out_dir)
pd.DataFrame(trainer.settings_table()).set_index("setting")

# %%
metrics = trainer.fit()

# %% [markdown]
# ## Results
# The figures are written into the run folder by the trainer (the same files a run from Python or the command line
# leaves there).

# %%
for name in ("training_curves.png", "confusion.png"): display(Image(filename=str(trainer.out_dir / name)))

# %%
print(f"{cfg.method} on {trainer.data.name} after {metrics['epochs']} epochs ({metrics['steps']} steps, "
      f"{metrics['train_seconds']} s): ACC {metrics['acc']:.4f}  NMI {metrics['nmi']:.4f}  ARI {metrics['ari']:.4f}")
for w in metrics["collapse"]: print("WARNING (collapse):", w)
for a in metrics["alarms"]: print("WARNING:", a)
print("metrics written to", trainer.out_dir / "metrics.json")
