#!/usr/bin/env python
"""CPU threads for the small networks: training steps per second with 1 thread and with every core, on an idle
machine and with a competing job that keeps one core busy (what a laptop or a shared machine looks like).

The trainer's default (`threads=0`) is chosen from these figures: one thread for the small CNN on the CPU.

    python ci/bench_threads.py                 # CC's quick-start step (digits, 8 px, batch 128)
    python ci/bench_threads.py --steps 40 --image-size 16
"""
import argparse, json, multiprocessing as mp, os, sys, time


def spin(stop):
    "A competing job: one busy core until `stop` is set."
    x = 0
    while not stop.is_set():
        for _ in range(10000): x += 1


def steps_per_second(threads: int, steps: int, image_size: int, batch_size: int) -> float:
    import torch
    from deepcluster_nb.data import load_dataset
    from deepcluster_nb.train import Trainer, TrainConfig
    torch.set_num_threads(threads)
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        tr = Trainer(TrainConfig(out_dir=os.path.join(t, "run"), threads=threads, image_size=image_size,
                                 batch_size=batch_size, progress=False, device="cpu"), load_dataset("digits"))
        x = tr.x
        perm = torch.randperm(len(x))
        batches = [perm[i * batch_size:(i + 1) * batch_size] for i in range(len(x) // batch_size)]
        for idx in batches[:2]: tr.train_step(idx, x[idx])                 # warm-up
        t0, n = time.perf_counter(), 0
        while n < steps:
            idx = batches[n % len(batches)]; tr.train_step(idx, x[idx]); n += 1
        return n / (time.perf_counter() - t0)


def measure(threads, steps, image_size, batch_size, q):
    q.put(steps_per_second(threads, steps, image_size, batch_size))


def run(threads, busy, a):
    ctx = mp.get_context("spawn")
    stop, q = ctx.Event(), ctx.Queue()
    comp = ctx.Process(target=spin, args=(stop,)) if busy else None
    if comp: comp.start(); time.sleep(0.5)
    p = ctx.Process(target=measure, args=(threads, a.steps, a.image_size, a.batch_size, q)); p.start()
    r = q.get(); p.join()
    if comp: stop.set(); comp.join()
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    a = p.parse_args(argv)
    cores = os.cpu_count() or 1
    rows = []
    for busy in (False, True):
        for threads in sorted({1, cores}):
            sps = run(threads, busy, a)
            rows.append({"threads": threads, "competing_job": busy, "steps_per_s": round(sps, 2)})
            print(f"{'busy' if busy else 'idle'} machine, {threads} thread(s): {sps:.2f} steps/s", flush=True)
    print(json.dumps({"cores": cores, "image_size": a.image_size, "batch_size": a.batch_size, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
