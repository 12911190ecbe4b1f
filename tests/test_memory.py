"""The memory estimate of a training step (nbs/A6_memory.ipynb) against real CPU steps: the bytes autograd saves,
counted on the meta device, against those a real step saves (FP32 and bf16 autocast), and the step's measured peak
against the estimate's bound; every registered method gets an estimate; free memory and the refusal message."""
import re
import pytest
import torch
import torch.nn as nn
import deepcluster_nb.memory as memory
from deepcluster_nb.memory import training_step_memory, available_memory, memory_refusal, peak_bytes, PARTS
from deepcluster_nb.models import Batch, ClusterMethod, METHODS, available_methods, get_method, make_backbone

GiB = 2**30


def real_method(method, backbone, image_shape, small_stem, seed=0):
    "The method built on the CPU as the trainer builds it, in training mode."
    torch.manual_seed(seed)
    bb, d = make_backbone(backbone, image_shape[0], small_stem, image_shape[-1])
    return get_method(method)(bb, d, 10).train()


def real_inputs(m, batch_size, image_shape):
    views = [torch.randn(batch_size, *image_shape) for _ in range(m.n_views)]
    return views, (torch.randn(batch_size, *image_shape) if m.needs_raw else None)


def _is_cast(t):
    "A dtype copy of a parameter (autocast's cached weight), or a view of one."
    for u in (t, t._base):
        g = None if u is None else u.grad_fn
        if g is not None and "ToCopy" in g.name() and any(f is not None and "AccumulateGrad" in f.name() for f, _ in g.next_functions):
            return True
    return False


def real_saved(m, views, raw, amp):
    "Bytes a real CPU step saves for backward: (activations, weight copies), distinct storages by data pointer."
    held = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: held.append(t) or t, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            m.training_step(Batch(views, torch.arange(views[0].shape[0]), raw))
    skip = {t.untyped_storage().data_ptr() for t in [*m.parameters(), *m.buffers(), *views, *([raw] if raw is not None else [])]}
    acts, casts = {}, {}
    for t in held:
        s = t.untyped_storage()
        if s.data_ptr() not in skip: (casts if _is_cast(t) else acts)[s.data_ptr()] = s.nbytes()
    return sum(v for k, v in acts.items() if k not in casts), sum(casts.values())


# method, backbone, (C, S, S), small stem, batch: bf16 convolutions are slow on the CPU, hence the small batches
CONFIGS = {"small_cnn-8px": ("cc", "small_cnn", (1, 8, 8), True, 32),
           "resnet18-small-32px": ("cc", "resnet18", (3, 32, 32), True, 4),
           "resnet34-imagenet-64px": ("cc", "resnet34", (3, 64, 64), False, 4),
           "dcdc-small_cnn-8px": ("dcdc", "small_cnn", (1, 8, 8), True, 16),
           "cadec-small_cnn-16px": ("cadec", "small_cnn", (1, 16, 16), True, 16)}


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_saved_bytes_match_a_real_step(cfg, amp):
    "What the meta step counts is within 1.5× of what a real CPU step saves, both ways (activations and all saved)."
    method, backbone, shape, small, B = CONFIGS[cfg]
    m = real_method(method, backbone, shape, small)
    acts, casts = real_saved(m, *real_inputs(m, B, shape), amp)
    est = training_step_memory(method, B, shape, backbone, small, amp=amp)
    assert est["counted"] == "step" and est["note"] == "", est
    ratio, ratio_acts = (est["saved"] + est["casts"]) / (acts + casts), est["saved"] / acts
    print(f"{cfg} {'bf16' if amp else 'fp32'}: estimate/real saved {ratio:.3f}, activations {ratio_acts:.3f} "
          f"(real {acts / 2**20:.2f} + {casts / 2**20:.2f} MiB)")
    assert 1 / 1.5 <= ratio <= 1.5 and 1 / 1.5 <= ratio_acts <= 1.5, (ratio, ratio_acts)
    assert (casts > 0) == amp and (est["casts"] > 0) == amp   # bf16 copies of the weights only under autocast
    params = sum(p.numel() * 4 for p in m.parameters())
    assert est["gradients"] == params and est["optimizer"] == 2 * params
    assert est["weights"] == params + sum(b.numel() * b.element_size() for b in m.buffers())


@pytest.mark.parametrize("cfg", ["small_cnn-8px", "resnet18-small-32px", "resnet34-imagenet-64px"])
def test_step_peak_within_the_bound(cfg):
    "The estimate's peak (saved + casts + gradients + backward transient) is within 1.5× of a real FP32 step's measured peak."
    method, backbone, shape, small, B = CONFIGS[cfg]
    m = real_method(method, backbone, shape, small)
    views, raw = real_inputs(m, 2 * B, shape)
    step = lambda: m.training_step(Batch(views, torch.arange(2 * B), raw))["loss"].backward()
    step(); m.zero_grad(set_to_none=True)
    peak = peak_bytes(step)
    est = training_step_memory(method, 2 * B, shape, backbone, small)
    bound = est["saved"] + est["casts"] + est["gradients"] + est["backward"]
    print(f"{cfg}: bound/measured peak {bound / peak:.3f} (peak {peak / 2**20:.2f} MiB)")
    assert peak / 1.5 <= bound <= 1.5 * peak, (peak, bound)


PAPER_RUN = dict(batch_size=256, image_shape=(3, 224, 224), backbone="resnet34", small_stem=False)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", available_methods())
def test_every_method_gets_an_estimate(name, amp):
    "Every registered method's real step runs on the meta device at the papers' size, after its on_train_start."
    est = training_step_memory(name, **PAPER_RUN, amp=amp, n_images=50_000)
    assert est["counted"] == "step", est["note"]
    assert est["total"] == sum(est[k] for k in PARTS) and all(est[k] >= 0 for k in PARTS)
    assert 2 * GiB < est["saved"] < 40 * GiB and est["fixed"] < est["total"]
    assert (est["casts"] > 0) == amp


def test_cc_paper_run_fits_a_24_gb_card():
    "The run the official code trains in FP32 on a 24 GB card: about 18 GiB, not the old rule's 67.8; bf16 about half."
    fp32, bf16 = (training_step_memory("cc", **PAPER_RUN, amp=a) for a in (False, True))
    assert 14 * GiB < fp32["total"] < 22 * GiB, fp32["total"] / GiB
    assert 0.45 < bf16["saved"] / fp32["saved"] < 0.6 and bf16["total"] < fp32["total"]
    assert memory_refusal(fp32, 24 * 10**9, "cuda:0") is None and memory_refusal(fp32, 12 * GiB, "cuda:0") is not None


class _HostReadStep(ClusterMethod):
    "A method whose step reads a number back to the host, which the meta device cannot do."
    name = "_host_read"
    def __init__(self, backbone, feat_dim, n_clusters):
        super().__init__(backbone, feat_dim, n_clusters)
        self.head = nn.Linear(feat_dim, n_clusters)
    def training_step(self, batch, head="main"):
        h = self.head(self.backbone(batch.views[0]))
        if h.sum().item() > 0: pass
        return {"loss": h.sum()}


def test_a_step_that_fails_on_meta_falls_back(monkeypatch):
    "`.item()` in a step: the backbone and heads are counted on every view instead, and the result says so."
    monkeypatch.setitem(METHODS, "_host_read", _HostReadStep)
    est = training_step_memory("_host_read", 8, (1, 8, 8), "small_cnn")
    assert est["counted"] == "modules" and "step failed on the meta device" in est["note"], est
    ref = training_step_memory("cc", 8, (1, 8, 8), "small_cnn")     # the same backbone on the same two views
    assert 0.5 * ref["saved"] < est["saved"] < 1.5 * ref["saved"], (est["saved"], ref["saved"])
    assert "backbone and heads alone" in memory_refusal(est, 1)


def test_a_backbone_that_fails_on_meta_never_raises(monkeypatch):
    "When even the backbone cannot run on meta, the estimate still comes back, with no activations and a note."
    class HostRead(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(64, 16)
        def forward(self, x): return self.lin(x.flatten(1)) * float(x.sum().item() > 0)
    monkeypatch.setitem(METHODS, "_host_read", _HostReadStep)
    monkeypatch.setattr(memory, "make_backbone", lambda *a: (HostRead(), 16))
    est = training_step_memory("_host_read", 8, (1, 8, 8), "small_cnn")
    assert est["counted"] == "none" and est["saved"] == 0 and "backbone failed too" in est["note"], est
    assert est["weights"] == (64 * 16 + 16 + 16 * 10 + 10) * 4


def test_on_train_start_sizes_what_the_step_needs():
    "CRLC's memory bank exists only after on_train_start: with the training-set size the real step runs, without it the fallback."
    hp = dict(memory_bank=True)
    sized = training_step_memory("crlc", 16, (1, 8, 8), "small_cnn", hparams=hp, n_images=1000)
    unsized = training_step_memory("crlc", 16, (1, 8, 8), "small_cnn", hparams=hp)
    assert sized["counted"] == "step" and unsized["counted"] == "modules" and "memory bank is empty" in unsized["note"]
    assert sized["weights"] > unsized["weights"]   # the bank: a row per training image
    cadec = training_step_memory("cadec", 16, (1, 8, 8), "small_cnn", n_images=1000)   # k-means needs numbers
    assert cadec["counted"] == "step" and "on_train_start failed" in cadec["note"]


def test_optimizer_state():
    kw = dict(batch_size=8, image_shape=(1, 8, 8), backbone="small_cnn")
    adam, sgd, plain = (training_step_memory("cc", **kw, optimizer=o, momentum=mo) for o, mo in (("adam", 0.9), ("sgd", 0.9), ("sgd", 0)))
    assert adam["optimizer"] == 2 * adam["gradients"] and sgd["optimizer"] == sgd["gradients"] and plain["optimizer"] == 0
    with pytest.raises(ValueError, match="optimizer must be"): training_step_memory("cc", **kw, optimizer="lamb")


def test_available_memory_on_cuda_adds_the_allocators_unused_blocks(monkeypatch):
    "free = mem_get_info's free + reserved − allocated, with torch.cuda mocked."
    seen = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (seen.append(d), (10 * GiB, 80 * GiB))[1])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 6 * GiB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 2 * GiB)
    assert available_memory(torch.device("cuda", 1)) == 14 * GiB and seen == [torch.device("cuda", 1)]
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 2 * GiB)
    assert available_memory("cuda:0") == 10 * GiB


def test_available_memory_on_the_cpu(monkeypatch, tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    7000000 kB\n")
    monkeypatch.setattr(memory, "Path", lambda p: f)
    assert available_memory("cpu") == 7000000 * 1024
    f.write_text("MemTotal:       16000000 kB\n")
    assert available_memory("cpu") is None
    monkeypatch.setattr(memory, "Path", lambda p: tmp_path / "missing")
    assert available_memory("cpu") is None and available_memory("meta") is None


def test_refusal_message():
    est = training_step_memory("cc", 64, (1, 8, 8), "small_cnn")
    assert memory_refusal(est, est["total"]) is None and memory_refusal(est, None) is None
    free = est["fixed"] + (est["total"] - est["fixed"]) // 3
    msg = memory_refusal(est, free, "cuda:0")
    assert "\n" not in msg and msg.startswith(f"this run needs about {est['total'] / GiB:.1f} GiB")
    assert f"cuda:0 has {free / GiB:.1f} GiB free" in msg and "turn on amp" in msg
    assert all(f"{k} " in msg for k in PARTS) and "batch_size 64" in msg and "images 1×8×8" in msg
    fit = int(re.search(r"at most about (\d+) fits", msg).group(1))
    assert 15 <= fit <= 21 and training_step_memory("cc", fit, (1, 8, 8), "small_cnn")["total"] <= free
    assert "smaller backbone" in memory_refusal(est, est["fixed"] - 1)
    bf16 = training_step_memory("cc", 64, (1, 8, 8), "small_cnn", amp=True)
    assert "amp" not in memory_refusal(bf16, 1).split(": ")[-1] and "bf16" in memory_refusal(bf16, 1)
