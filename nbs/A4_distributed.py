# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: data-parallel training
# > Engineering around the course: several processes train one model under `torchrun`, batch-wide contrastive losses still see the whole batch, and the gradients are exactly those of one process. `DistributedTrainer` is the trainer with four of its steps replaced.

# %%
#| default_exp distributed

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import os
from dataclasses import dataclass
import torch
import torch.distributed as dist
from deepcluster_nb.train import Trainer, ConfigError, seed_everything

# %% [markdown]
# This appendix is not part of the course's argument: nothing in the method chapters depends on it, and on one GPU
# or a laptop it is never used. It is what a run on several GPUs needs. One command starts it; the command line
# (appendix *The command line*) sees that `torchrun` started it and uses the `DistributedTrainer` defined here:
#
# ```bash
# torchrun --standalone --nproc_per_node 4 -m deepcluster_nb train --method cc --dataset cifar10
# ```
#
# `torchrun --nproc_per_node P` starts P processes and tells each its `RANK`, `LOCAL_RANK` and `WORLD_SIZE`
# through environment variables. Each process holds a full copy of the model, takes its own slice of every global
# batch, and PyTorch's DistributedDataParallel (DDP) averages the gradients across processes after each backward
# pass, so the copies stay identical. The batch size of the configuration is the *global* batch: with
# `batch_size=256` on 4 GPUs each one augments and runs 64 images per step, and the run is, up to its random
# augmentations, the run one GPU makes with 256: the same losses over the same batches, the same learning rate, the
# same number of steps, the same settings table. Only process 0 evaluates and writes the run folder.
#
# The trainer itself knows nothing of this (the layers go data → … → train → distributed, never back). The
# data-parallel trainer is a subclass that replaces four of the trainer's steps (and, before training, waits once for
# the other processes):
#
# | step | one process (`Trainer`) | data-parallel (`DistributedTrainer`) |
# |---|---|---|
# | `setup_config` | the device of the configuration | join the process group; the device `cuda:LOCAL_RANK`; the batch must split evenly |
# | `setup_model` | the method, its step `method.training_step` | BatchNorm synchronised across GPUs, `method.gather` = an all-gather, the step behind DDP |
# | `local_batch` | the whole batch | this process's slice of it |
# | `seed_views` | nothing | a seed of its own for this process's augmentations |

# %% [markdown]
# ## Joining the processes

# %%
#| export
@dataclass
class DistInfo:
    "Where this process stands in a data-parallel run."
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    @property
    def enabled(self): return self.world_size > 1
    @property
    def is_main(self): return self.rank == 0

def init_distributed(device_type:str="cpu") -> DistInfo:
    "Join the process group that `torchrun` describes in the environment (gloo on CPU, NCCL on CUDA); a no-op without it."
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1: return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device_type == "cuda": torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return info

# %%
test_eq(init_distributed(), DistInfo())   # a plain process: one rank, nothing to join
test_eq((DistInfo(0, 2).is_main, DistInfo(1, 2).is_main, DistInfo().enabled), (True, False, False))

# %% [markdown]
# ## Batch-wide losses see the whole batch
# Every loss of this course compares each sample with *all* the others of the batch: InfoNCE's negatives, CC's
# cluster columns over the batch, the batch marginal of the balance terms. With P processes each computing the loss
# on its own slice, the negatives and the columns would shrink P-fold and the run would be another run. So every
# method passes its batch-wide tensors through `self.gather`, the identity on one process, which the data-parallel
# trainer sets to `gather_with_grad`: an all-gather that keeps the autograd graph.
#
# **Why the gradients come out right.** Every process computes the same global loss $L$ from the gathered tensor
# $Z = [Z_1; \dots; Z_P]$. The backward of the all-gather sends to process $r$ the sum over processes of
# $\partial L/\partial Z_r$, that is $P\,\partial L/\partial Z_r$; DDP then averages the parameter gradients over the
# $P$ processes:
#
# $$\frac1P\sum_{r=1}^P P\,\frac{\partial L}{\partial Z_r}\frac{\partial Z_r}{\partial\theta} = \frac{dL}{d\theta},$$
#
# exactly the single-process gradient of the loss on the whole batch.

# %%
#| export
def gather_with_grad(t:torch.Tensor) -> torch.Tensor:
    "Concatenate `t` from every process along dim 0, in rank order, keeping gradients (identity on one process)."
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1: return t
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(t.contiguous()), 0)

def rank_slice(n:int, # the global batch size
               info:DistInfo, # this process
              ) -> slice:
    "The slice of a global batch of `n` that process `info.rank` takes."
    if n % info.world_size: raise ValueError(f"batch_size {n} is not divisible by the number of processes {info.world_size}")
    b = n // info.world_size
    return slice(info.rank * b, (info.rank + 1) * b)

# %%
_t = torch.randn(4, 3, requires_grad=True)
assert gather_with_grad(_t) is _t
test_eq(rank_slice(8, DistInfo(1, 2, 1)), slice(4, 8)); test_eq(rank_slice(8, DistInfo()), slice(0, 8))
test_fail(lambda: rank_slice(9, DistInfo(0, 2, 0)), contains="not divisible")

# %% [markdown]
# The equation can be checked in one process by playing the P processes in turn. Process $r$ computes its own slice
# $Z_r$ with gradients and receives the other slices from the gather (constants to it); the gather's backward
# multiplies its gradient by P; the average over the processes is what DDP applies. Here with CC's two losses on a
# linear model, P = 4:

# %%
from deepcluster_nb.cc import instance_loss, cluster_loss

# %%
torch.manual_seed(0)
_net, _P = torch.nn.Linear(6, 4), 4
_xa, _xb = torch.randn(8, 6), torch.randn(8, 6)
def _loss(za, zb): return instance_loss(za, zb, 0.5) + cluster_loss(za.softmax(1), zb.softmax(1), 1.0)
_whole = torch.autograd.grad(_loss(_net(_xa), _net(_xb)), list(_net.parameters()))
def _gathered(x, r):   # Z as process r sees it: its own slice with gradients, the others received from the gather
    return torch.cat([_net(x[rank_slice(8, DistInfo(q, _P))]) if q == r else _net(x[rank_slice(8, DistInfo(q, _P))]).detach()
                      for q in range(_P)])
_per_process = [[_P * g for g in torch.autograd.grad(_loss(_gathered(_xa, r), _gathered(_xb, r)), list(_net.parameters()))]
                for r in range(_P)]
for _g, _w in zip(zip(*_per_process), _whole): test_close(sum(_g) / _P, _w, eps=1e-6)

# %% [markdown]
# The same check with real processes, an all-gather and DDP, is `ci/ddp_check.py`, which `tests/test_distributed.py`
# runs under `torchrun` with two CPU processes on the gloo backend (largest difference from the single-process
# gradient: below $10^{-6}$).
#
# ## The step behind DDP
# DDP only synchronises gradients for computations that run through its `forward`. A method's loss is computed by
# `training_step`, so the method is wrapped in a tiny module whose `forward` *is* the training step, and the trainer
# calls that wrapper instead of the method (`trainer.step_fn`):

# %%
#| export
class StepModule(torch.nn.Module):
    "Wraps a method so that `forward(batch, head)` runs its training step (what DDP needs to see)."
    def __init__(self, method): super().__init__(); self.method = method
    def forward(self, batch, head:str="main"): return self.method.training_step(batch, head)

def wrap_ddp(method, # a `ClusterMethod`
             info:DistInfo, # this process
             device:torch.device, # its device
            ):
    "The method's training step behind DistributedDataParallel (unused parameters allowed: heads trained in separate passes)."
    from torch.nn.parallel import DistributedDataParallel as DDP
    step = StepModule(method)
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return DDP(step, device_ids=ids, find_unused_parameters=True)

# %%
_m = torch.nn.Linear(2, 1); _m.training_step = lambda batch, head: {"loss": _m(batch).sum()}
test_eq(float(StepModule(_m)(torch.ones(3, 2))["loss"]), float(_m(torch.ones(3, 2)).sum()))

# %% [markdown]
# ## The data-parallel trainer
# Each override calls the trainer's own step and adds what data parallelism needs.
#
# * **Configuration.** The process joins the group (`init_distributed`); on GPUs it trains on `cuda:LOCAL_RANK`; the
#   global batch must split evenly over the processes, checked before anything is built.
# * **Model.** On GPUs, BatchNorm layers become `SyncBatchNorm`, so their batch statistics are those of the global
#   batch, as on one GPU (on the CPU, gloo has no SyncBatchNorm, and each process normalises with its own slice's
#   statistics). The method's `gather` becomes the all-gather, and the training step goes behind DDP.
# * **Batches.** All processes draw the same permutation (the trainer seeds it from `(seed, epoch, pass)`); each
#   takes its slice of every global batch.
# * **Augmentations.** Right after the permutation, each process reseeds from `(seed, epoch, pass, 1 + rank)`, so the
#   P slices get independent augmentations and a resumed run replays them exactly.

# %%
#| export
class DistributedTrainer(Trainer):
    "The `Trainer` for several processes started by torchrun: each takes a slice of every batch, DDP averages the gradients."
    def setup_config(self, cfg, data=None):
        "The trainer's configuration, then: join the process group, take this process's GPU, check the batch splits evenly."
        super().setup_config(cfg, data)
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda": self.device = torch.device("cuda", self.dist.local_rank)
        try: rank_slice(self.cfg.batch_size, self.dist)
        except ValueError as e: raise ConfigError(f"{e}: choose a batch_size that splits evenly over the processes") from None
        self.is_main, self.world_size = self.dist.is_main, self.dist.world_size

    def setup_model(self):
        "The trainer's model, then: synchronised BatchNorm on GPUs, the all-gather, and the step behind DDP."
        super().setup_model()
        if not self.dist.enabled: return
        if self.device.type == "cuda": self.method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        self.method.gather = gather_with_grad
        self.step_fn = wrap_ddp(self.method, self.dist, self.device)

    def local_batch(self, idx, xb):
        "This process's slice of the global batch."
        s = rank_slice(len(idx), self.dist)
        return idx[s], xb[s]

    def seed_views(self, pass_index:int):
        "Augmentations of this process's own: reseed from (seed, epoch, pass, 1 + rank) after the shared permutation."
        if self.dist.enabled: seed_everything(self.cfg.seed, self.epoch, pass_index, 1 + self.dist.rank)

    def start_run(self):
        "The trainer's run-folder rules, then wait for every process, so none inspects the folder after process 0 writes to it."
        super().start_run()
        if self.dist.enabled: dist.barrier()

# %%
show_doc(DistributedTrainer)

# %% [markdown]
# (`start_run` is overridden too, for one line: every process checks the run folder before training, and the barrier
# makes sure process 0 writes its first file only after all of them have looked.)
#
# Started without `torchrun`, the data-parallel trainer is a world of one process and is exactly the trainer: the
# same epochs, to the last bit. Its slicing, given a world of two by hand, takes the second half of a batch for
# process 1:

# %%
import tempfile
from pathlib import Path
from deepcluster_nb.data import load_dataset
from deepcluster_nb.train import TrainConfig

# %%
_data = load_dataset("digits")
_cfg = TrainConfig(method="cc", dataset="digits", subset=256, epochs=1, progress=False, eval_every=0,
                   out_dir=str(Path(tempfile.mkdtemp()) / "run"))   # a folder of its own: building a trainer checks it
_one, _dp = Trainer(_cfg, _data), DistributedTrainer(_cfg, _data)
test_eq((_dp.world_size, _dp.is_main, _dp.step_fn == _dp.method.training_step), (1, True, True))
test_eq(_dp.train_epoch(), _one.train_epoch())
_dp.dist = DistInfo(1, 2, 1)
_idx, _xb = _dp.local_batch(torch.arange(128), _dp.x[:128])
test_eq(_idx.tolist(), list(range(64, 128))); test_eq(_xb, _dp.x[64:128])
test_fail(lambda: _dp.local_batch(torch.arange(99), _dp.x[:99]), contains="not divisible")

# %% [markdown]
# ## Under torchrun
# The command line is the entry point: `python -m deepcluster_nb train ...` with the same options under `torchrun`.
# Two CPU processes on digits (gloo), the run the tests make:
#
# ```bash
# torchrun --standalone --nproc_per_node 2 -m deepcluster_nb train --method cc --dataset digits --epochs 2 \
#     --batch_size 128 --device cpu --out_dir runs/cc_digits_ddp
# ```
#
# `metrics.json` then records `"world_size": 2`, and the steps per epoch are those of one process with the global
# batch (⌊1797 / 128⌋ = 14). Methods with state beyond their weights keep it identical on every process because they
# update it from gathered tensors: TCC's momentum network and its cluster and instance queues are the same on both
# processes after training (`ci/ddp_tcc_check.py`).

# %%
#| hide
import nbdev; nbdev.nbdev_export()
