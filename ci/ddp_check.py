"""Run under `torchrun --standalone --nproc_per_node 2 ci/ddp_check.py OUT.json` (CPU, gloo): checks that a
batch-wide contrastive loss computed on gathered tensors gives, after DDP's gradient averaging, exactly the
single-process gradient of the loss on the whole batch."""
import json, sys
import torch
import torch.distributed as dist
from deepcluster_nb.distributed import init_distributed, gather_with_grad, rank_slice, wrap_ddp
from deepcluster_nb.cc import instance_loss, cluster_loss

info = init_distributed("cpu")
torch.manual_seed(0)
net = torch.nn.Linear(6, 4)
x_a, x_b = torch.randn(8, 6), torch.randn(8, 6)          # the same global batch on every rank

def loss_fn(model, xa, xb, gather):
    za, zb = gather(model(xa)), gather(model(xb))
    return instance_loss(za, zb, 0.5) + cluster_loss(za.softmax(1), zb.softmax(1), 1.0)

# single-process reference on the whole batch
ref = torch.autograd.grad(loss_fn(net, x_a, x_b, lambda t: t), list(net.parameters()))
# data-parallel: each rank its slice, losses on gathered tensors, DDP averages gradients
class Toy(torch.nn.Module):
    "A stand-in method whose training step is the loss above."
    def __init__(self, net): super().__init__(); self.net = net
    def training_step(self, batch, head="main"): return loss_fn(self.net, *batch, gather_with_grad)
ddp = wrap_ddp(Toy(net), info, torch.device("cpu"))
s = rank_slice(8, info)
out = ddp((x_a[s], x_b[s]))
out.backward()
err = max(float((p.grad - r).abs().max()) for p, r in zip(net.parameters(), ref))
res = {"rank": info.rank, "world_size": info.world_size, "max_abs_grad_error": err, "loss": float(out)}
if info.rank == 0: json.dump(res, open(sys.argv[1], "w"))
print(res)
dist.barrier(); dist.destroy_process_group()
