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
# Parameters left at `"auto"` take the method's defaults for the dataset — the paper's settings on the paper's
# benchmarks (for CC: ResNet-34 with the ImageNet stem, images resized to 224 px, Adam 3e-4, batch 256, 1,000
# epochs). For native resolution with the small-image stem: `-p image_size native -p stem small`.

# %% tags=["parameters"]
method: str = "cc"  # clustering method: cc, dcdc, crlc, tcc, cadec
dataset: str = "digits"  # benchmark (digits, mnist, usps, cifar10, cifar100, stl10, imagenet10, imagenet_dogs, tiny_imagenet), an .npz path or an ImageFolder path
data_root: str = ""  # data folder (empty: $DEEPCLUSTER_DATA or data/)
protocol: str = "auto"  # "paper" splits, "train-test" (train on train, evaluate on test), or "auto" (the method's protocol)
backbone: str = "auto"  # small_cnn, resnet18, resnet34, resnet50, optionally prefixed sobel_
stem: str = "auto"  # ResNet stem: "imagenet" (7x7/2 + max-pool) or "small" (3x3/1)
image_size = "auto"  # training resolution in pixels, "native", or "auto"
n_clusters = "auto"  # number of clusters K (auto: number of classes)
epochs = "auto"  # passes over the data
batch_size = "auto"  # images per optimiser step
optimizer: str = "auto"  # "adam" or "sgd"
lr = "auto"  # learning rate
weight_decay = "auto"  # weight decay
seed: int = 0  # random seed (runs with the same seed are identical on the same machine)
device: str = "auto"  # "auto" (cuda if available), "cuda" or "cpu"
compile: bool = False  # torch.compile the backbone (falls back to eager with a warning if compiling fails)
data_on_device = "auto"  # keep the uint8 training images on the device (true), gather batches on the host (false), or "auto" (on the device if they fit)
out_dir: str = "runs/{method}_{dataset}_s{seed}"  # run folder for config, history, checkpoint, metrics and figures
resume: bool = False  # continue from out_dir/checkpoint.pt if it exists
eval_every: int = 10  # evaluate every N epochs (0: only at the end)
max_steps: int = 0  # stop after this many optimiser steps (0: no limit); for trimmed runs
subset: int = 0  # train on a random subset of this many images (0: all)
progress: bool = True  # show a progress bar
hparams: dict = {}  # method hyperparameters, e.g. -y "hparams: {tau_i: 0.5}"

# %%
import json
from pathlib import Path
import matplotlib
import matplotlib.pyplot as plt
from deepcluster_nb.train import TrainConfig, Trainer, predict, plot_history, plot_confusion

# %%
if isinstance(hparams, str): hparams = json.loads(hparams) if hparams.strip() else {}
cfg = TrainConfig(method=method, dataset=dataset, data_root=data_root or None, protocol=protocol, backbone=backbone,
                  stem=stem, image_size=image_size, n_clusters=n_clusters, epochs=epochs, batch_size=batch_size,
                  optimizer=optimizer, lr=lr, weight_decay=weight_decay, seed=seed, device=device, compile=compile,
                  data_on_device=data_on_device, out_dir=out_dir,
                  resume=resume, eval_every=eval_every, max_steps=max_steps, subset=subset, progress=progress, hparams=hparams)
trainer = Trainer(cfg)
print(trainer.data)
print({k: v for k, v in vars(trainer.cfg).items() if k != "hparams"}, "hparams:", trainer.cfg.hparams)
print("augmentation:", trainer.aug_cfg)
print("run folder:", trainer.out_dir)

# %%
metrics = trainer.fit()

# %%
fig = plot_history(trainer.history, f"{cfg.method} on {trainer.data.name}")
fig.savefig(trainer.out_dir / "training_curves.png", dpi=110); plt.show()

# %%
out = predict(trainer.method, trainer.eval_data, trainer.aug, device=trainer.device, amp=trainer.amp)
fig = plot_confusion(trainer.eval_data.y, out["probs"].argmax(1), trainer.eval_data.classes, trainer.cfg.n_clusters,
                     f"{cfg.method} on {trainer.data.name}: ACC {metrics['acc']:.3f}")
fig.savefig(trainer.out_dir / "confusion.png", dpi=110); plt.show()

# %%
print(f"{cfg.method} on {trainer.data.name} after {metrics['epochs']} epochs ({metrics['steps']} steps, "
      f"{metrics['train_seconds']} s): ACC {metrics['acc']:.4f}  NMI {metrics['nmi']:.4f}  ARI {metrics['ari']:.4f}")
print("metrics written to", trainer.out_dir / "metrics.json")
