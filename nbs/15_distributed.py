# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data-parallel training
# > Several processes, one model: PyTorch's DistributedDataParallel under `torchrun`, and the one place where batch-wide contrastive losses see the whole batch.

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

# %% [markdown]
# `torchrun --nproc_per_node P script.py` starts P processes and tells each its `RANK`, `LOCAL_RANK` and `WORLD_SIZE`
# through environment variables. Each process holds a full copy of the model, takes its own slice of every global
# batch, and DistributedDataParallel (DDP) averages the gradients across processes after each backward pass, so the
# copies stay identical.
#
# Contrastive losses need more than averaged gradients: every loss of this course compares each sample with *all*
# the others of the batch (InfoNCE's negatives, CC's cluster columns over the batch, the batch marginal of the
# entropy terms). With P processes each computing the loss on its slice only, the negatives and the columns would
# shrink P-fold. So every method passes its batch-wide tensors through `self.gather`, which the trainer sets to
# `gather_with_grad` below: an all-gather that keeps the autograd graph.
#
# **Why the gradients come out right.** Every process computes the same global loss $L$ from the gathered tensor
# $Z = [Z_1; \dots; Z_P]$. The backward of the all-gather sends to process $r$ the sum over processes of
# $\partial L/\partial Z_r$, that is $P\,\partial L/\partial Z_r$; DDP then averages the parameter gradients over the
# $P$ processes, $\frac1P\sum_r P\,\frac{\partial L}{\partial Z_r}\frac{\partial Z_r}{\partial\theta} = \frac{dL}{d\theta}$: exactly the
# single-process gradient of the loss on the whole batch. `tests/test_distributed.py` checks this with two CPU
# processes on the gloo backend.

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

# %%
#| export
def gather_with_grad(t:torch.Tensor) -> torch.Tensor:
    "Concatenate `t` from every process along dim 0, in rank order, keeping gradients (identity on one process)."
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1: return t
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(t.contiguous()), 0)

def rank_slice(n:int, info:DistInfo) -> slice:
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
# DDP only synchronises gradients for computations that run through its `forward`. A method's loss is computed by
# `training_step`, so the trainer wraps the method in a tiny module whose `forward` *is* the training step:

# %%
#| export
class StepModule(torch.nn.Module):
    "Wraps a method so that `forward(batch, head)` runs its training step (what DDP needs to see)."
    def __init__(self, method): super().__init__(); self.method = method
    def forward(self, batch, head:str="main"): return self.method.training_step(batch, head)

def wrap_ddp(method, info:DistInfo, device):
    "The method's training step behind DistributedDataParallel (unused parameters allowed: heads trained in separate passes)."
    from torch.nn.parallel import DistributedDataParallel as DDP
    step = StepModule(method)
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return DDP(step, device_ids=ids, find_unused_parameters=True)

# %% [markdown]
# Running the trainer data-parallel is one line; the global batch is split evenly over the processes, rank 0
# evaluates and writes the run folder:
#
# ```bash
# torchrun --standalone --nproc_per_node 2 -m deepcluster_nb.distributed method=cc dataset=digits epochs=5
# ```

# %%
#| export
def main(argv=None):
    "Command line for torchrun: `key=value` pairs of `TrainConfig` fields (values parsed as Python literals when possible)."
    import sys, ast
    from deepcluster_nb.train import TrainConfig, Trainer
    kw = {}
    for a in (sys.argv[1:] if argv is None else argv):
        if "=" not in a: raise SystemExit(f"arguments are key=value pairs of TrainConfig fields, got {a!r}")
        k, v = a.split("=", 1)
        try: kw[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError): kw[k] = v
    metrics = Trainer(TrainConfig(**kw)).fit()
    if int(os.environ.get("RANK", "0")) == 0:
        print({k: metrics[k] for k in ("acc", "nmi", "ari", "epochs", "steps") if k in metrics})
    if dist.is_initialized(): dist.destroy_process_group()
    return metrics

import builtins
if __name__ == "__main__" and not getattr(builtins, "__IPYTHON__", False): main()  # `python -m deepcluster_nb.distributed`, not in Jupyter

# %%
#| hide
import nbdev; nbdev.nbdev_export()
