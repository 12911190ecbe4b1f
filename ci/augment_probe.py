#!/usr/bin/env python
"""The digit-augmentation probe: NT-Xent alone on the small CNN under each digits recipe, then k-means on its features.

Writes one row per (dataset, recipe, seed) to nbs/results/augment_probe.csv and skips rows already there, so an
interrupted run continues where it stopped. Real-digit sets missing from the data root are skipped with a message.

    DEEPCLUSTER_DATA=<data root> .venv/bin/python ci/augment_probe.py              # the chapter's probe
    .venv/bin/python ci/augment_probe.py --datasets digits --seeds 0 1 --jobs 1     # a smaller one

The function lives in deepcluster_nb.augment (chapter nbs/03_augment.ipynb).
"""
import argparse, csv, os, platform, sys
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor

EPOCHS = {"digits": 20, "usps": 5, "mnist_test": 5}
FIELDS = ["dataset", "variant", "seed", "epochs", "acc", "nmi", "seconds", "machine"]


def one(job):
    dataset, variant, seed, epochs = job
    import torch
    torch.set_num_threads(1)
    from dataclasses import replace
    from deepcluster_nb.augment import PROBE_VARIANTS, augmentation_probe, cc_recipe
    from deepcluster_nb.data import load_dataset
    data = load_dataset(dataset).train
    cfg = replace(cc_recipe("digits", int(data.x.shape[-1])), **PROBE_VARIANTS[variant])
    r = augmentation_probe(data, cfg, epochs=epochs, seed=seed)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    return {"dataset": dataset, "variant": variant, "seed": seed, "epochs": epochs, "acc": round(r["acc"], 4),
            "nmi": round(r["nmi"], 4), "seconds": r["seconds"], "machine": machine}


def main(argv=None):
    from deepcluster_nb.augment import PROBE_VARIANTS
    from deepcluster_nb.data import load_dataset, DatasetNotFound
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(EPOCHS), help="digits, usps, mnist_test (default: all three)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="probes run at once, one thread each (default: 2)")
    p.add_argument("--epochs", type=int, help="epochs of every probe (default: digits 20, usps 5, mnist_test 5)")
    p.add_argument("--out", default="nbs/results/augment_probe.csv")
    a = p.parse_args(argv)
    unknown = [d for d in a.datasets if d not in EPOCHS]
    if unknown: p.error(f"unknown dataset(s) {unknown}; choose from {list(EPOCHS)}")
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        with open(out) as f: done = {(r["dataset"], r["variant"], int(r["seed"])) for r in csv.DictReader(f)}
    jobs = []
    for d in a.datasets:
        try: load_dataset(d, download=False)
        except DatasetNotFound as e:
            print(f"skipping {d}: {e}", file=sys.stderr); continue
        jobs += [(d, v, s, a.epochs or EPOCHS[d]) for s in a.seeds for v in PROBE_VARIANTS if (d, v, s) not in done]
    print(f"{len(jobs)} probes to run ({len(done)} already in {out})", flush=True)
    new = not out.exists()
    with open(out, "a", newline="") as f, ProcessPoolExecutor(a.jobs) as ex:
        w = csv.DictWriter(f, FIELDS)
        if new: w.writeheader()
        for r in ex.map(one, jobs):
            w.writerow(r); f.flush()
            print(f"{r['dataset']:>10}  {r['variant']:<26} seed {r['seed']}  acc {r['acc']:.3f}  nmi {r['nmi']:.3f}  "
                  f"{r['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
