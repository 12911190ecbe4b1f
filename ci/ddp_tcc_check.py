"""Run under `torchrun --standalone --nproc_per_node 2 ci/ddp_tcc_check.py OUT.json [RUN_DIR]` (CPU, gloo): a few TCC
training steps of the `DistributedTrainer` on two processes, then the largest difference between the processes' momentum networks, cluster queues P and
instance queues Q, which must stay identical (every process pushes the same gathered rows). The momentum network's
BatchNorm running statistics are left out: each process copies them from its own online network after a forward
pass on its own images, and the momentum network only ever runs in training mode, where they are not used."""
import json, sys, tempfile
import torch
import torch.distributed as dist
from deepcluster_nb.train import TrainConfig
from deepcluster_nb.distributed import DistributedTrainer

with tempfile.TemporaryDirectory() as t:   # without RUN_DIR each process has a folder of its own (only process 0 writes)
    tr = DistributedTrainer(TrainConfig(method="tcc", dataset="digits", subset=256, batch_size=64, epochs=1, max_steps=3,
                                        eval_every=0, progress=False, device="cpu",
                                        out_dir=sys.argv[2] if len(sys.argv) > 2 else t))
    tr.fit()
assert tr.world_size == 2 and isinstance(tr.step_fn, torch.nn.parallel.DistributedDataParallel), "not a data-parallel run"
m = tr.method
state = {"P": m.P.queue, "P.ptr": m.P.ptr.float(), "Q": m.Q.queue, "Q.ptr": m.Q.ptr.float(),
         **{f"ema.{k}": v.float() for k, v in m.momentum_net.ema.state_dict().items()
            if "running_" not in k and "num_batches_tracked" not in k}}
diff = {}
for k, v in state.items():
    parts = [torch.zeros_like(v) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, v.contiguous())
    diff[k] = float((parts[0] - parts[1]).abs().max())
res = {"world_size": dist.get_world_size(), "max_diff": max(diff.values()), "worst": max(diff, key=diff.get),
       "P_ptr": int(m.P.ptr), "Q_ptr": int(m.Q.ptr), "queue_nonzero": bool(m.Q.queue.abs().sum() > 0)}
if dist.get_rank() == 0: json.dump(res, open(sys.argv[1], "w"))
print(res)
del tr, m, state, parts       # the data-parallel wrapper goes before its process group, not at interpreter exit
import gc; gc.collect()
dist.barrier(); dist.destroy_process_group()
