#!/usr/bin/env python
"""The GPU campaign: what to run first whenever a GPU is available (about 10 minutes on one recent GPU).

1. the throughput benchmark in both configurations (`paper`: CC with ResNet-34 at 224 px against the official-style
   loop; `native`: ResNet-34 with the small stem at 32 px), and
2. a fixed-budget CIFAR-10 run of every method with its paper settings (the real CIFAR-10 test images from
   `cifar10_test.npz` in the data root): `--minutes` of training each, then ACC/NMI/ARI on the same images.

Every stage writes its result into `OUT/results.json` as soon as it finishes (with the device, the command, the commit
and the time), and `OUT/results.md` is a table for the README. The campaign is safe to interrupt: run the same command
again and the finished stages are skipped (`--redo` runs them again).

    DEEPCLUSTER_DATA=/path/with/cifar10_test.npz python ci/gpu_campaign.py --out runs/campaign
    python ci/gpu_campaign.py --tiny --device cpu --out /tmp/campaign     # a CPU rehearsal of every stage, in seconds
"""
import argparse, datetime, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    try: return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError: return ""


def load(out: Path) -> dict:
    f = out / "results.json"
    return json.loads(f.read_text()) if f.exists() else {"stages": {}}


def save(out: Path, res: dict):
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(res, indent=2, default=str)); os.replace(tmp, out / "results.json")
    (out / "results.md").write_text(markdown(res))


def markdown(res: dict) -> str:
    "The README table: the throughput figures, then one row per method's fixed-budget run."
    st, lines = res["stages"], []
    for cfg in ("bench_paper", "bench_native"):
        if cfg in st:
            b = st[cfg]["result"]
            lines.append(f"- `{st[cfg]['command']}` on {b['device']}: {b['train_views_per_s']:.0f} views/s end to end, "
                         f"{b['model_views_per_s']:.0f} model only (pipeline efficiency {b['pipeline_efficiency']:.2f}, MFU "
                         f"{b['mfu']:.2f}); the official-style loop {b.get('ref_views_per_s', float('nan')):.0f} views/s "
                         f"(×{b.get('speedup_vs_reference', float('nan')):.1f}).")
    runs = [v for k, v in st.items() if k.startswith("run_")]
    if runs:
        lines += ["", "| method | backbone | image size | batch | steps | minutes | ACC | NMI | ARI |", "|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            m, c = r["result"], r["config"]
            lines.append(f"| {c['method']} | {c['backbone']} | {c['image_size']} | {c['batch_size']} | {m['steps']} | "
                         f"{m['train_seconds'] / 60:.1f} | {m['acc']:.3f} | {m['nmi']:.3f} | {m['ari']:.3f} |")
    head = f"Device: {res.get('device', '?')}; commit {res.get('commit', '?')}; {res.get('date', '')}."
    return head + "\n\n" + "\n".join(lines) + "\n"


def budget_run(method, data_path, minutes, device, tiny, out_dir):
    "Train `method` with its CIFAR-10 settings for `minutes` of wall time, then evaluate; return (config, metrics)."
    import torch
    from deepcluster_nb.data import load_dataset
    from deepcluster_nb.train import Trainer, TrainConfig, seed_everything
    kw = dict(batch_size=32, image_size=32, backbone="resnet18", stem="small") if tiny else {}
    # dataset="cifar10" with the npz's images: the method's CIFAR-10 settings from its table, the real test images
    tr = Trainer(TrainConfig(method=method, dataset="cifar10", device=device, progress=False, out_dir=str(out_dir),
                             overwrite=True, eval_every=0, data_root=str(data_path.parent), **kw), load_dataset(str(data_path)))
    tr.start_run()
    t0 = time.time(); deadline = t0 + 60 * minutes
    tr.method.train()
    while time.time() < deadline:
        for i, (head, x) in enumerate(tr.passes):
            seed_everything(tr.cfg.seed, tr.epoch, i)
            for idx, xb in tr.batches(torch.randperm(len(x), device=x.device), x):
                tr.train_step(idx, xb, head)
                if time.time() >= deadline: break
        tr.epoch += 1
    if tr.device.type == "cuda": torch.cuda.synchronize()
    secs = time.time() - t0
    m = tr.evaluate()
    c = tr.cfg
    return ({k: getattr(c, k) for k in ("method", "backbone", "stem", "image_size", "batch_size", "optimizer", "lr")},
            {"steps": tr.global_step, "train_seconds": round(secs, 1), **{k: m[k] for k in ("acc", "nmi", "ari", "collapsed")}})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/campaign", help="folder for results.json, results.md and the run folders")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--data-root", default=None, help="folder holding cifar10_test.npz (default: $DEEPCLUSTER_DATA or data/)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    p.add_argument("--minutes", type=float, default=1.0, help="training time of each method's run")
    p.add_argument("--tiny", action="store_true", help="CPU rehearsal: tiny benchmark and runs (seconds)")
    p.add_argument("--redo", action="store_true", help="run finished stages again")
    a = p.parse_args(argv)
    from deepcluster_nb.data import data_root
    from deepcluster_nb.models import available_methods
    from deepcluster_nb.bench import run_benchmark, BENCH_CONFIGS
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    data = data_root(a.data_root) / "cifar10_test.npz"
    if not data.exists():
        sys.exit(f"{data} not found: put cifar10_test.npz (arrays x (N, 32, 32, 3) uint8 and y) there or pass --data-root")
    res = load(out)
    import torch
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else "cpu" if a.device == "auto" else a.device)
    res.update(device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
               commit=commit(), date=datetime.date.today().isoformat(), torch=torch.__version__)
    stage = lambda k: a.redo or k not in res["stages"]
    for cfg in ("paper", "native"):
        key = f"bench_{cfg}"
        if not stage(key): print(f"{key}: done, skipped"); continue
        cmd = f"python ci/bench_throughput.py --config {cfg} --device {a.device}"
        t = time.time()
        r = (run_benchmark("cc", a.device, "small", steps=3, warmup=1, ref_steps=2, threads=1) if a.tiny
             else run_benchmark("cc", a.device, cfg))
        res["stages"][key] = {"command": cmd + (" (tiny rehearsal: --config small)" if a.tiny else ""), "seconds": round(time.time() - t, 1),
                              "result": r}
        save(out, res); print(f"{key}: {r['train_views_per_s']:.0f} views/s")
    for m in (a.methods.split(",") if a.methods else available_methods()):
        key = f"run_{m}"
        if not stage(key): print(f"{key}: done, skipped"); continue
        cfg, met = budget_run(m, data, 0.05 if a.tiny else a.minutes, a.device, a.tiny, out / m)
        res["stages"][key] = {"command": f"python ci/gpu_campaign.py --methods {m} --minutes {a.minutes}", "config": cfg, "result": met}
        save(out, res); print(f"{key}: ACC {met['acc']:.3f} after {met['steps']} steps")
    save(out, res)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
