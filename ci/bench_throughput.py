#!/usr/bin/env python
"""Training throughput benchmark: our pipeline vs a loop in the official CC style, augmentation alone, MFU.

Prints one `name: value` line per figure, e.g.

    python ci/bench_throughput.py --config small --device cpu --threads 1      # seconds, runs in CI
    python ci/bench_throughput.py --config paper --device cuda                   # ResNet-34 at 224 px, CC
    python ci/bench_throughput.py --config native --device cuda                  # ResNet-34, small stem, 32 px
    python ci/bench_throughput.py --config paper --device cpu --tiny             # the paper setting's code paths, tiny sizes

Every rate is the mean over the timed steps (their views over their wall time, warm-up excluded); the median step
rate of each loop is printed beside it as `*_median`. Speed-up, MFU, pipeline efficiency and projected hours use
the means.

The functions live in deepcluster_nb.bench (appendix notebook nbs/A3_bench.ipynb).
"""
import argparse, json, sys


def main(argv=None):
    from deepcluster_nb.bench import BENCH_CONFIGS, run_benchmark, format_results
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="cc", help="registered method (default: cc)")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu (default: auto)")
    p.add_argument("--config", default="small", choices=sorted(BENCH_CONFIGS), help="benchmark configuration (default: small)")
    p.add_argument("--steps", type=int, help="timed steps of our pipeline and of the model alone (default: the configuration's)")
    p.add_argument("--warmup", type=int, help="untimed steps before them (default: the configuration's)")
    p.add_argument("--ref-steps", type=int, help="timed steps of the reference loop (default: the configuration's)")
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: PyTorch's choice)")
    p.add_argument("--workers", type=int, help="DataLoader processes of the PIL pipelines (default: up to 8 with a GPU, "
                                                "else 0 with one thread, one per thread otherwise)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    p.add_argument("--data-on-device", default="auto", help="auto, true or false")
    p.add_argument("--hparams", default="{}", help='method hyperparameters as JSON, e.g. \'{"joint_forward": true}\'')
    p.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    p.add_argument("--no-augment", action="store_true", help="skip the augmentation-only measurement")
    p.add_argument("--tiny", action="store_true", help="shrink the configuration (tiny images, batch and steps; same "
                                                       "backbone, stem and options) to rehearse its code paths")
    a = p.parse_args(argv)
    res = run_benchmark(a.method, a.device, a.config, steps=a.steps, warmup=a.warmup, ref_steps=a.ref_steps,
                        threads=a.threads, workers=a.workers, reference=not a.no_reference, augment_only=not a.no_augment,
                        tiny=a.tiny, compile=a.compile, data_on_device=a.data_on_device, hparams=json.loads(a.hparams))
    print(format_results(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
