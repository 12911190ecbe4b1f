"""Losses in float32 under mixed precision.

Every exported loss of the course carries `float32_loss` (InfoNCE chapter, §10): under the trainer's bf16 autocast it
runs with autocast off and its half-precision tensor arguments in float32. Two levels of checks, on the CPU's bf16
autocast:

- each decorated function, fed fixed float32 network-like outputs (and their bf16 casts), gives the float32 values and
  gradients to the chapter's tolerance, and its undecorated form misses it wherever the function multiplies matrices;
- each registered method's `training_step` under autocast hands its losses the network's outputs, and every loss call
  returns what the same call computes in float32 without autocast; with the decorators stripped, some call misses.
"""
import contextlib, sys
import pytest
import torch
import deepcluster_nb.infonce as infonce
from deepcluster_nb.infonce import float32_loss
from deepcluster_nb.models import Batch, available_methods, get_method, make_backbone
import deepcluster_nb.cc as cc, deepcluster_nb.dcdc as dcdc, deepcluster_nb.crlc as crlc
import deepcluster_nb.tcc as tcc, deepcluster_nb.dec as dec, deepcluster_nb.cadec as cadec

TOL = 1e-5          # the float32 tolerance of the InfoNCE chapter (§10): relative to the value and to the gradient's norm
BF16_ULP = 2. ** -8  # a gradient handed back to a bf16 argument is the float32 one rounded to 8 significant bits
_WRAPPER = float32_loss(lambda: None).__code__


def is_float32_loss(obj) -> bool:
    "Whether `obj` is a function decorated with `float32_loss`."
    return getattr(obj, "__code__", None) is _WRAPPER and hasattr(obj, "__wrapped__")


def package_modules():
    return [m for n, m in sorted(sys.modules.items()) if n.startswith("deepcluster_nb") and m is not None]


def decorated_functions() -> dict:
    "Every decorated function of the package, keyed by (defining module, name); aliases and imports counted once."
    return {(v.__module__, v.__name__): v for m in package_modules() for v in vars(m).values() if is_float32_loss(v)}


@contextlib.contextmanager
def undecorated():
    "Replace every decorated function of the package's modules by its undecorated form (nested calls included)."
    saved = [(m, k, v) for m in package_modules() for k, v in list(vars(m).items()) if is_float32_loss(v)]
    for m, k, v in saved: setattr(m, k, v.__wrapped__)
    try: yield
    finally:
        for m, k, v in saved: setattr(m, k, v)


def tensors(x) -> list:
    "The tensors of a (nested) output: a tensor, a tuple or list, or a dict."
    if torch.is_tensor(x): return [x]
    if isinstance(x, dict): x = list(x.values())
    if isinstance(x, (tuple, list)): return [t for v in x for t in tensors(v)]
    return []


def rel_err(x, ref) -> float:
    "‖x − ref‖ / ‖ref‖ in float64 (‖x − ref‖ when ref is zero); equal infinities count as equal."
    x, ref = x.detach().double(), ref.detach().double()
    same_inf = torch.isinf(ref) & (x == ref)
    x, ref = x.masked_fill(same_inf, 0.), ref.masked_fill(same_inf, 0.)
    d, n = (x - ref).norm().item(), ref.norm().item()
    return d / n if n > 0 else d


def _is_float(a): return torch.is_tensor(a) and a.is_floating_point()


def evaluate(fn, args, kwargs, dtype=torch.float32, amp=False):
    "fn's output tensors and the gradients of a fixed weighting of them w.r.t. its floating arguments, given in `dtype`."
    ins = [a.detach().to(dtype).requires_grad_() if _is_float(a) else a for a in args]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp): outs = tensors(fn(*ins, **kwargs))
    leaves = [a for a in ins if _is_float(a)]
    g = torch.Generator().manual_seed(0)
    s = sum(((1 + 0.5 * torch.randn(o.shape, generator=g, dtype=torch.float64)) * o.double().masked_fill(torch.isinf(o), 0.)).sum()
            for o in outs if o.requires_grad)
    grads = torch.autograd.grad(s, leaves, allow_unused=True) if torch.is_tensor(s) else [None] * len(leaves)
    return [o.detach() for o in outs], list(grads)


def worst(run, ref) -> float:
    "The largest relative error of a run's outputs and gradients against a reference run."
    (o, g), (o_ref, g_ref) = run, ref
    errs = [rel_err(a, b) for a, b in zip(o, o_ref)]
    for a, b in zip(g, g_ref):
        assert (a is None) == (b is None)
        if a is not None: errs.append(rel_err(a, b))
    return max(errs)


# ---------------------------------------------------------------------------------------------------------------
# Loss functions on fixed inputs: (id, function, inputs(g) -> (args, kwargs), whether it multiplies matrices)

def _randn(g, *shape): return torch.randn(*shape, generator=g)
def _probs(g, *shape, scale=2.): return torch.softmax(scale * _randn(g, *shape), -1)
def _views(g, n=64, d=128):
    "Two views of n features whose positive cosine is about 0.9, as for a network that has started to learn."
    a = _randn(g, n, d)
    return a, a + 0.5 * _randn(g, n, d)
def _unit(g, *shape): return torch.nn.functional.normalize(_randn(g, *shape), dim=-1)
def _scores(g):
    a, b = _views(g)
    a, b = (torch.nn.functional.normalize(t, dim=1) for t in (a, b))
    return (a @ b.t() / 0.1,), {}

CASES = [
    ("infonce.info_nce", infonce.info_nce, lambda g: ((*_scores(g)[0], torch.arange(64)), {}), False),
    ("infonce.infonce_bound", infonce.infonce_bound, lambda g: ((*_scores(g)[0], torch.arange(64)), {}), False),
    ("infonce.nt_xent", infonce.nt_xent, lambda g: ((*_views(g), 0.1), {}), True),
    ("infonce.nt_xent_grad", infonce.nt_xent_grad, lambda g: ((*_views(g), 0.5), {}), True),
    ("infonce.kl_to_uniform", infonce.kl_to_uniform, lambda g: ((_probs(g, 64, 10),), {}), False),
    ("infonce.marginal_entropy", infonce.marginal_entropy, lambda g: ((_probs(g, 3, 64, 10),), {}), False),
    ("infonce.marginal_entropy_penalty", infonce.marginal_entropy_penalty, lambda g: ((_probs(g, 64, 10),), {}), False),
    ("cc.instance_loss", cc.instance_loss, lambda g: ((*_views(g), 0.5), {}), True),
    ("cc.cluster_loss", cc.cluster_loss, lambda g: ((_probs(g, 64, 10), _probs(g, 64, 10), 1.0), {}), True),
    ("dcdc.sample_loss", dcdc.sample_loss, lambda g: ((_probs(g, 64, 10), _probs(g, 64, 10), 0.5), {}), True),
    ("dcdc.class_loss", dcdc.class_loss, lambda g: ((_probs(g, 64, 10), _probs(g, 64, 10), 0.5), {}), True),
    ("dcdc.dcdc_loss", dcdc.dcdc_loss, lambda g: ((_probs(g, 32, 10), _probs(g, 96, 10), 0.5, 3), dict(return_terms=True)), True),
    *[(f"crlc.critic[{k}]", crlc.critic, lambda g, k=k: ((_probs(g, 32, 10), _probs(g, 48, 10), k), {}), k in ("log_dot", "dot"))
      for k in crlc.CRITICS],
    ("crlc.probability_contrastive_loss", crlc.probability_contrastive_loss,
     lambda g: ((_probs(g, 3, 32, 10), _probs(g, 3, 32, 10)), {}), True),
    ("crlc.pc_logit_grad", crlc.pc_logit_grad, lambda g: ((_probs(g, 8, 10), _probs(g, 8, 5, 10)), {}), False),
    ("crlc.critic_logit_grad", crlc.critic_logit_grad, lambda g: ((_probs(g, 8, 10), _probs(g, 8, 10)), {}), False),
    ("crlc.logit_clamp_penalty", crlc.logit_clamp_penalty, lambda g: ((20 * _randn(g, 3, 32, 10),), {}), False),
    ("crlc.cluster_regularisers", crlc.cluster_regularisers, lambda g: ((20 * _randn(g, 3, 32, 10), 5 * _randn(g, 3, 32, 10)), {}), False),
    ("crlc.cluster_losses", crlc.cluster_losses, lambda g: ((20 * _randn(g, 3, 32, 10), 5 * _randn(g, 3, 32, 10)), {}), True),
    ("crlc.crlc_loss", crlc.crlc_loss,
     lambda g: ((*_views(g, 32), 20 * _randn(g, 3, 32, 10), 5 * _randn(g, 3, 32, 10)), dict(return_terms=True)), True),
    ("crlc.memory_bank_loss", crlc.memory_bank_loss,
     lambda g: ((_probs(g, 2, 32, 10), _probs(g, 2, 32, 10), _probs(g, 2, 64, 10), _randn(g, 32, 64) > 1.5), {}), True),
    ("tcc.cluster_representations", tcc.cluster_representations, lambda g: ((_probs(g, 64, 10), _randn(g, 64, 128)), {}), True),
    ("tcc.cluster_level_loss", tcc.cluster_level_loss, lambda g: ((_unit(g, 10, 128), _unit(g, 10, 128), _unit(g, 50, 128), 0.5), {}), True),
    ("tcc.moco_infonce", tcc.moco_infonce, lambda g: ((_unit(g, 64, 128), _unit(g, 64, 128), _unit(g, 256, 128), 0.5), {}), True),
    ("dec.student_t_assignment", dec.student_t_assignment, lambda g: ((_randn(g, 64, 32), _randn(g, 10, 32)), {}), False),
    ("dec.target_distribution", dec.target_distribution, lambda g: ((_probs(g, 64, 10),), {}), False),
    ("dec.kl_rows", dec.kl_rows, lambda g: ((_probs(g, 64, 10), _probs(g, 64, 10)), {}), False),
    ("dec.target_kl_loss", dec.target_kl_loss, lambda g: ((_probs(g, 64, 10),), {}), False),
    ("dec.anchor_loss", dec.anchor_loss, lambda g: ((_probs(g, 64, 10), _probs(g, 64, 10), _probs(g, 64, 10)), {}), False),
    ("cadec.jsd_rows", cadec.jsd_rows, lambda g: ((_probs(g, 64, 10), _probs(g, 64, 10)), {}), False),
    *[(f"cadec.anchor_objective[{k}]", cadec.anchor_objective,
       lambda g, k=k: ((_probs(g, 64, 10), _probs(g, 64, 10), _probs(g, 64, 10), k), {}), False) for k in cadec.ANCHORS],
]


def test_every_decorated_function_has_a_case():
    "The cases cover every decorated function of the package, and every function of a case is decorated."
    assert all(is_float32_loss(fn) for _, fn, _, _ in CASES)
    missing = set(decorated_functions()) - {(fn.__module__, fn.__name__) for _, fn, _, _ in CASES}
    assert not missing, f"decorated functions without a case: {sorted(missing)}"
    for name in ("instance_loss", "cluster_loss", "sample_loss", "class_loss", "dcdc_loss", "critic", "crlc_loss",
                 "memory_bank_loss", "cluster_level_loss", "moco_infonce", "target_kl_loss", "anchor_loss", "anchor_objective"):
        assert any(fn.__name__ == name for _, fn, _, _ in CASES), name


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_loss_in_float32_under_autocast(case):
    "Decorated: float32 inputs give the float32 values under autocast; bf16 inputs the float32 values of those inputs."
    _, fn, inputs, matmul = case
    args, kwargs = inputs(torch.Generator().manual_seed(0))
    ref = evaluate(fn, args, kwargs)
    assert all(o.dtype == torch.float32 for o in ref[0])
    assert worst(evaluate(fn, args, kwargs, amp=True), ref) <= TOL
    # bf16 arguments: computed in float32 from their values, the outputs float32, the gradients bf16
    args16 = [a.bfloat16() if _is_float(a) else a for a in args]
    ref16 = evaluate(fn, [a.float() if _is_float(a) else a for a in args16], kwargs)
    outs, grads = evaluate(fn, args16, kwargs, torch.bfloat16, amp=True)
    assert all(o.dtype == torch.float32 for o in outs)
    assert max(rel_err(a, b) for a, b in zip(outs, ref16[0])) <= TOL
    for a, b in zip(grads, ref16[1]):
        assert (a is None) == (b is None)
        if a is not None: assert a.dtype == torch.bfloat16 and rel_err(a, b) <= BF16_ULP
    # the undecorated function (its nested losses undecorated too) under autocast: bf16 matrix products miss the tolerance
    with undecorated(): err = worst(evaluate(fn.__wrapped__, args, kwargs, amp=True), ref)
    if matmul: assert err > 10 * TOL, err


# ---------------------------------------------------------------------------------------------------------------
# Methods: what each training step hands its losses, under autocast

METHOD_MODULES = {"cc": cc, "dcdc": dcdc, "crlc": crlc, "tcc": tcc, "cadec": cadec}


def build(name, seed=0):
    "The method on the small CNN with its digits hyperparameters, 10 clusters, and a fixed batch of 32 8×8 images."
    cls = get_method(name)
    torch.manual_seed(seed)
    m = cls(*make_backbone("small_cnn", 1), n_clusters=10, **cls.settings.resolve("digits")["hparams"])
    x = torch.randn(32, 1, 8, 8)
    batch = Batch(views=[x + 0.1 * torch.randn_like(x) for _ in range(m.n_views)], index=torch.arange(32),
                  raw=x if m.needs_raw else None)
    return m, batch


def _snapshot(a): return a.detach().clone() if torch.is_tensor(a) else a


@contextlib.contextmanager
def recording(module, names, calls):
    "Record every call of the functions `names` of `module`: (name, args, kwargs, output tensors)."
    saved = {k: getattr(module, k) for k in names}
    def recorder(k, fn):
        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            calls.append((k, [_snapshot(a) for a in args], {n: _snapshot(v) for n, v in kwargs.items()},
                          [o.detach().clone() for o in tensors(out)]))
            return out
        return call
    for k, fn in saved.items(): setattr(module, k, recorder(k, fn))
    try: yield
    finally:
        for k, fn in saved.items(): setattr(module, k, fn)


def step_calls(name, amp, strip=False):
    "Run every head's training step of method `name` (CPU bf16 autocast if `amp`); its losses and the recorded loss calls."
    module = METHOD_MODULES.get(name) or sys.modules[get_method(name).__module__]
    names = [k for k, v in vars(module).items() if is_float32_loss(v)]
    m, batch = build(name)
    calls, losses = [], {}
    with contextlib.ExitStack() as stack:
        if strip: stack.enter_context(undecorated())
        stack.enter_context(recording(module, names, calls))
        for head in (*m.train_heads, *m.unlabeled_heads):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp): out = m.training_step(batch, head)
            out["loss"].backward()
            losses[head] = out["loss"].detach()
    return module, losses, calls


def call_errors(module, calls) -> list:
    "For each recorded call: the relative error of its outputs against the same call in float32 without autocast."
    errs = []
    for k, args, kwargs, outs in calls:
        with torch.no_grad(): ref = tensors(getattr(module, k)(*[a.float() if _is_float(a) else a for a in args],
                                                                 **{n: v.float() if _is_float(v) else v for n, v in kwargs.items()}))
        errs.append((k, max(rel_err(a, b) for a, b in zip(outs, ref))))
    return errs


def test_methods_cover_the_registry():
    assert set(available_methods()) == set(METHOD_MODULES)


@pytest.mark.parametrize("name", ["cc", "dcdc", "crlc", "tcc", "cadec"])
def test_training_step_losses_in_float32_under_autocast(name):
    "Under autocast each loss call of a step returns the float32 value of the network outputs it was given."
    for amp in (False, True):
        module, losses, calls = step_calls(name, amp)
        assert calls, "the step calls no decorated loss of its module"
        for head, l in losses.items(): assert l.dtype == torch.float32 and torch.isfinite(l), (head, l)
        errs = call_errors(module, calls)
        assert all(e <= TOL for _, e in errs), [ke for ke in errs if ke[1] > TOL]
    # the same steps with every decorator stripped: some loss call misses the tolerance
    module, _, calls = step_calls(name, True, strip=True)
    assert max(e for _, e in call_errors(module, calls)) > TOL
