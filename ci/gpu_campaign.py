#!/usr/bin/env python
"""The GPU campaign: what to run first whenever a GPU is available (eight minutes by default, start-up included).

Seven stages, each in its own Python process:

- `run_cc`, `run_dcdc`, `run_crlc`, `run_tcc`, `run_cadec`: a fixed-budget CIFAR-10 run of every method with its
  paper settings (`Trainer(...).fit()` with `max_minutes`, on the real CIFAR-10 test images of `cifar10_test.npz` in
  the data root), evaluated every `--eval-every` epochs, so that every run gives ACC against wall-clock minutes;
- `bench_native`, `bench_paper`: the throughput benchmark (`deepcluster_nb.bench.run_benchmark`) in its two
  configurations (`native`: ResNet-34 with the small stem at 32 px; `paper`: CC with ResNet-34 at 224 px, against the
  official-style loop).

The order is the order of value. The methods' CIFAR-10 runs come first: none of them has ever run on a GPU, so they
are the first test of every method's GPU path end to end (bf16 autocast, channels-last, fused optimiser, data on the
device, evaluation, checkpoints) and they give the only accuracy figures on a paper benchmark; a method that crashes
is found in the first minutes instead of after the benchmarks. CC runs first because it is the base the other
methods build on and the method of the paper benchmark; the others follow in the order of the course's chapters.
The benchmarks follow: they time CC alone, whose model `run_cc` has already exercised, and their figures are for the
README's speed section. `bench_native` goes before `bench_paper` because it is the cheaper of the two and times the
32-px small-stem model that four of the five runs train; `bench_paper` (224 px, and a per-image PIL loop at 224 px)
is the longest stage and the one that a short budget should lose first.

Every stage has a time limit and runs in a subprocess: an out-of-memory error, a crash or a hang costs that stage
only, leaves no cached GPU memory behind, and the next stage starts in a fresh process. Each stage's result, or its
error (type, message, the end of the traceback, or for a killed or timed-out process the signal and the end of its
output), is written into `OUT/results.json` (atomically) as soon as the stage ends, with the device, the torch
version, the command, the commit and the date; `OUT/results.md` is the README table (throughput, the final scores,
ACC against minutes) and `OUT/acc_vs_minutes.png` its figure. Run the same command again and the finished stages are
skipped, the failed or unfinished ones are retried (`--redo` runs every stage again). One `--budget-minutes` is split
over the stages that still have to run (weights in `WEIGHTS`); a progress line says which stage runs, how long the
campaign has taken and how much time is left.

    DEEPCLUSTER_DATA=/path/with/cifar10_test.npz python ci/gpu_campaign.py --out runs/campaign
    python ci/gpu_campaign.py --tiny --out /tmp/campaign     # a CPU rehearsal of every stage, in seconds

For tests, `DEEPCLUSTER_CAMPAIGN_FAIL=STAGE[:MODE][,STAGE[:MODE]...]` makes a stage fail inside its subprocess:
MODE `raise` (the default) raises an exception, `kill` has the process killed by SIGKILL (as the out-of-memory killer
does), `hang` makes it sleep past its time limit.
"""
import argparse, datetime, json, os, shlex, signal, subprocess, sys, time, traceback
from pathlib import Path

T0 = time.monotonic()          # the campaign's clock starts here (the interpreter's start-up is in RESERVE_S)
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))    # this checkout's package, installed or not
FAIL_ENV = "DEEPCLUSTER_CAMPAIGN_FAIL"
METHODS = ("cc", "dcdc", "crlc", "tcc", "cadec")           # the order of the course's chapters
BENCHES = ("native", "paper")
STAGES = tuple(f"run_{m}" for m in METHODS) + tuple(f"bench_{b}" for b in BENCHES)
WEIGHTS = {"bench_paper": 1.75, "bench_native": 1.0}     # a stage's share of the budget; a method's run weighs 1
RESERVE_S = 10                 # kept back from the budget: the interpreter's start-up and the final writes
MIN_STAGE_S = 20               # a stage is not started with less time than this left (it is retried on the next run)
RUN_OVERHEAD_S = 30            # a run's seconds outside training (start-up, data, model, k-means init, last evaluation,
                               # figures), until a finished run has measured it
TAIL_LINES = 25                # lines of traceback and of output kept with an error


# ---------------------------------------------------------------------------------------------- the stage processes

def injected_failure(name: str):
    "Fail as `DEEPCLUSTER_CAMPAIGN_FAIL` asks for stage `name`, if it names it."
    for item in filter(None, (s.strip() for s in os.environ.get(FAIL_ENV, "").split(","))):
        stage, _, mode = item.partition(":")
        if stage != name: continue
        mode = mode or "raise"
        print(f"{FAIL_ENV}: failing stage {name} ({mode})", flush=True)
        if mode == "kill": os.kill(os.getpid(), signal.SIGKILL)
        if mode == "hang":
            while True: time.sleep(1)
        raise RuntimeError(f"failure injected into stage {name} by {FAIL_ENV}")


def environment(device) -> dict:
    "Where the stage ran: the device's name, torch, CUDA and cuDNN versions, CPU threads."
    import torch
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    env = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads()}
    if device.type == "cuda": env["cudnn"] = torch.backends.cudnn.version()
    return env


def pick(device: str, tiny: bool) -> str:
    "'auto' → cuda when available (cpu for the tiny rehearsal); anything else as given."
    if device != "auto": return device
    if tiny: return "cpu"
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def bench_stage(config: str, device: str, tiny: bool) -> dict:
    "The throughput benchmark of CC in `config`; tiny: the same configuration shrunk to seconds on one CPU thread."
    from deepcluster_nb.bench import run_benchmark
    if tiny: return run_benchmark("cc", device, config, tiny=True, threads=1)
    return run_benchmark("cc", device, config)


def tiny_backbone(method: str) -> str:
    "The small CNN, behind the Sobel layer where the method's CIFAR-10 backbone has one."
    from deepcluster_nb.models import get_method
    return ("sobel_" if get_method(method).settings.resolve("cifar10").get("backbone", "").startswith("sobel_") else "") + "small_cnn"


def run_stage(method: str, device: str, tiny: bool, npz: Path, out_dir: Path, train_minutes: float, eval_every: int) -> dict:
    "Train `method` with its CIFAR-10 settings on the images of `npz` (for `train_minutes`; tiny: two tiny epochs)."
    import torch
    from deepcluster_nb.data import load_dataset
    from deepcluster_nb.train import Trainer, TrainConfig
    t0 = time.time()
    data = load_dataset(str(npz))
    kw = (dict(backbone=tiny_backbone(method), stem="small", image_size=16, batch_size=16, epochs=2, eval_every=1, threads=1)
          if tiny else dict(max_minutes=train_minutes, eval_every=eval_every))
    # dataset="cifar10" with the npz's images: the method's CIFAR-10 row of its settings table, the real test images;
    # amp, channels_last, fused and data_on_device left at None: the trainer's GPU choices on CUDA
    cfg = TrainConfig(method=method, dataset="cifar10", device=device, progress=False, out_dir=str(out_dir), overwrite=True, **kw)
    tr = Trainer(cfg, data)
    built = time.time() - t0
    injected_failure(f"run_{method}")
    m = tr.fit()
    c = tr.cfg
    curve = [{"minutes": round(h["time_s"] / 60, 4), "epoch": h["epoch"], "step": h["step"],
              **{k: h[k] for k in ("acc", "nmi", "ari") if k in h}} for h in tr.history if "acc" in h]
    res = {"config": {**{k: getattr(c, k) for k in ("method", "backbone", "stem", "image_size", "batch_size", "optimizer",
                                                    "lr", "weight_decay", "epochs", "eval_every", "max_minutes", "hparams")},
                      "amp": tr.amp, "channels_last": tr.channels_last, "fused": bool(tr.opt.defaults.get("fused")),
                      "data_on_device": tr.data_on_device, "n_images": len(tr.train_data)},
           "metrics": {"epochs": m["epochs"], "steps": m["steps"], "train_seconds": m["train_seconds"],
                       **{k: m[k] for k in ("acc", "nmi", "ari", "collapsed") if k in m}, "alarms": m.get("alarms", [])},
           "curve": curve, "run_folder": str(out_dir), "setup_seconds": round(built, 1)}
    if tr.device.type == "cuda": res["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(tr.device) / 2**30, 2)
    return res


def write_json(obj, path: Path):
    "Write JSON atomically (a temporary file, then a rename)."
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    os.replace(tmp, path)


def stage_main(a) -> int:
    "The body of one stage's subprocess: run it and write {'result': ...} or {'error': ...} to the stage file."
    name, out, rec = a.stage, Path(a.stage_file), {}
    try:
        device = pick(a.device, a.tiny)
        rec["environment"] = environment(device)
        print(f"stage {name} on {device}: {json.dumps(rec['environment'])}", flush=True)
        if name.startswith("bench_"):
            injected_failure(name)
            rec["result"] = bench_stage(name[6:], device, a.tiny)
        elif name.startswith("run_"):
            rec["result"] = run_stage(name[4:], device, a.tiny, Path(a.npz), Path(a.out) / name[4:], a.train_minutes, a.eval_every)
        else: raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
        write_json(rec, out)
        print(f"stage {name} finished: {json.dumps(rec['result'], default=str)[:4000]}", flush=True)
        return 0
    except BaseException as e:   # also KeyboardInterrupt: whatever ends the stage is recorded
        tb = traceback.format_exc().rstrip().splitlines()
        err = {"type": type(e).__name__, "message": str(e).strip()[:2000], "traceback": tb[-TAIL_LINES:]}
        try:
            import torch
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                err["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        except Exception: pass
        write_json({**rec, "error": err}, out)
        traceback.print_exc()
        return 1


# ---------------------------------------------------------------------------------------------- the campaign

def commit() -> str:
    try: return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError: return ""


def now_iso() -> str: return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def load(out: Path) -> dict:
    f = out / "results.json"
    try: return json.loads(f.read_text()) if f.exists() else {"stages": {}}
    except json.JSONDecodeError:
        f.replace(f.with_suffix(".damaged.json"))
        print(f"{f} was unreadable; kept as results.damaged.json, starting afresh", flush=True)
        return {"stages": {}}


def save(out: Path, res: dict):
    "results.json (atomically), results.md and the ACC-against-minutes figure."
    write_json(res, out / "results.json")
    tmp = out / "results.md.tmp"
    tmp.write_text(markdown(res)); os.replace(tmp, out / "results.md")
    try: plot(res, out / "acc_vs_minutes.png")
    except Exception as e: print(f"acc_vs_minutes.png not drawn ({type(e).__name__}: {e})", flush=True)


def tail(path: Path, n: int = TAIL_LINES) -> list:
    try: return path.read_text(errors="replace").rstrip().splitlines()[-n:]
    except OSError: return []


def run_child(name: str, cmd: list, limit: float, stage_file: Path, log: Path, env: dict) -> dict:
    "Run one stage's process with a time limit; its result, or a description of how it failed."
    stage_file.unlink(missing_ok=True)
    t = time.monotonic()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        timed_out = False
        try: p.wait(timeout=limit)
        except subprocess.TimeoutExpired: timed_out = True
        finally:                                        # also on Ctrl-C: no stage is left running
            try: os.killpg(p.pid, signal.SIGKILL)      # the stage's own children too (DataLoader workers)
            except (ProcessLookupError, PermissionError): pass
            p.wait()
    secs = round(time.monotonic() - t, 1)
    rec = {"seconds": secs, "time_limit_s": round(limit), "log": str(log)}
    got = {}
    if stage_file.exists():
        try: got = json.loads(stage_file.read_text())
        except json.JSONDecodeError: got = {}
    rec.update({k: got[k] for k in ("environment",) if k in got})
    if timed_out:
        rec["error"] = {"type": "Timeout", "message": f"stage {name} ran past its time limit of {limit:.0f} s and was killed",
                        "output_tail": tail(log)}
    elif p.returncode == 0 and "result" in got:
        rec["result"] = got["result"]
    elif "error" in got:
        rec["error"] = {**got["error"], "exit_code": p.returncode, "output_tail": tail(log)}
    elif p.returncode < 0:
        sig = signal.Signals(-p.returncode).name
        why = " (the out-of-memory killer sends SIGKILL)" if sig == "SIGKILL" else ""
        rec["error"] = {"type": "Killed", "message": f"stage {name}'s process was killed by {sig}{why}", "signal": sig,
                        "output_tail": tail(log)}
    else:
        rec["error"] = {"type": "Crashed", "message": f"stage {name}'s process exited with code {p.returncode} without a result",
                        "exit_code": p.returncode, "output_tail": tail(log)}
    rec["status"] = "ok" if "result" in rec else "failed"
    return rec


def fmt_s(s: float) -> str: return f"{int(s // 60)}:{int(s % 60):02d}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/campaign", help="folder for results.json, results.md, the figure, logs and run folders")
    p.add_argument("--device", default="auto", help="auto (cuda if available; cpu with --tiny), cuda or cpu")
    p.add_argument("--data-root", default=None, help="folder holding cifar10_test.npz (default: $DEEPCLUSTER_DATA or data/)")
    p.add_argument("--stages", default=None, help=f"comma-separated stages to run (default: all, in the order {','.join(STAGES)})")
    p.add_argument("--methods", default=None, help="comma-separated methods whose run_<method> stages to run (default: all)")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="wall time of the whole campaign, start-up included "
                   "(split over the stages still to run; default 8)")
    p.add_argument("--eval-every", type=int, default=1, help="epochs between evaluations in the runs (default 1: on CIFAR-10's "
                   "10,000 images an epoch takes seconds on a GPU)")
    p.add_argument("--stage-timeout", type=float, default=None, help="time limit of every stage in seconds (default: from the budget)")
    p.add_argument("--tiny", action="store_true", help="CPU rehearsal of every stage: tiny benchmarks and runs (seconds)")
    p.add_argument("--redo", action="store_true", help="run finished stages again")
    p.add_argument("--stage", help=argparse.SUPPRESS)              # inside a stage's subprocess: the stage to run
    p.add_argument("--stage-file", help=argparse.SUPPRESS)
    p.add_argument("--npz", help=argparse.SUPPRESS)
    p.add_argument("--train-minutes", type=float, default=1.0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.stage: return stage_main(a)

    from deepcluster_nb.readers import data_root
    stages = [s for s in STAGES if (a.stages is None or s in a.stages.split(","))
              and (a.methods is None or not s.startswith("run_") or s[4:] in a.methods.split(","))]
    unknown = sorted(set((a.stages or "").split(",")) - set(STAGES) - {""}) + \
              sorted(set((a.methods or "").split(",")) - set(METHODS) - {""})
    if unknown: p.error(f"unknown stage(s) or method(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    npz = data_root(a.data_root) / "cifar10_test.npz"
    if any(s.startswith("run_") for s in stages) and not npz.exists():
        sys.exit(f"{npz} not found: the runs train on the CIFAR-10 test images. Put cifar10_test.npz (arrays x (N, 32, 32, 3) "
                 f"uint8 and y) in {npz.parent}, or point --data-root or $DEEPCLUSTER_DATA at the folder that holds it "
                 f"(data/README.md says how to make it).")
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(exist_ok=True); (out / "logs").mkdir(exist_ok=True)
    res = load(out)
    res.setdefault("stages", {})
    command = shlex.join(["python", "ci/gpu_campaign.py", *argv])
    res.update(command=command, commit=commit(), date=datetime.date.today().isoformat(), tiny=a.tiny,
               budget_minutes=a.budget_minutes, data=str(npz))
    done = lambda s: res["stages"].get(s, {}).get("status") == "ok" and bool(res["stages"][s].get("tiny")) == a.tiny
    for s in stages:
        if done(s) and not a.redo: print(f"{s}: finished {res['stages'][s].get('finished', '')}, skipped (--redo runs it again)")
    todo = [s for s in stages if a.redo or not done(s)]
    deadline = T0 + 60 * a.budget_minutes - RESERVE_S
    weight = lambda s: WEIGHTS.get(s, 1.0)
    env = dict(os.environ)
    if a.tiny: env.setdefault("OMP_NUM_THREADS", "1")
    failed = []
    print(f"campaign: {len(todo)} stage(s) to run in {a.budget_minutes:g} minutes: {', '.join(todo) or 'none'}", flush=True)
    for i, s in enumerate(todo):
        left = deadline - time.monotonic()
        if left < MIN_STAGE_S:
            res["stages"][s] = {"status": "not_run", "tiny": a.tiny, "finished": now_iso(),
                                "error": {"type": "OutOfBudget", "message": f"{left:.0f} s of the budget left when stage {s} was due; "
                                                                            f"rerun the command (or raise --budget-minutes) to run it"}}
            failed.append(s); save(out, res)
            print(f"[{fmt_s(time.monotonic() - T0)}] {s}: not run, {max(left, 0):.0f} s left", flush=True)
            continue
        share = left * weight(s) / sum(weight(t) for t in todo[i:])
        seen = [r["overhead_s"] for k, r in res["stages"].items() if k.startswith("run_") and "overhead_s" in r and not r.get("tiny")]
        overhead = max(seen) if seen else RUN_OVERHEAD_S
        train_minutes = max(0.1, (share - overhead) / 60)
        limit = a.stage_timeout or min(left, 2 * share if s.startswith("bench_") else share + max(30.0, 0.5 * share))
        cmd = [sys.executable, str(SCRIPT), "--stage", s, "--stage-file", str(out / "stages" / f"{s}.json"),
               "--out", str(out), "--device", a.device, "--npz", str(npz), "--eval-every", str(a.eval_every)]
        cmd += ["--tiny"] if a.tiny else []
        cmd += ["--train-minutes", f"{train_minutes:.2f}"] if s.startswith("run_") and not a.tiny else []
        plan = f", {train_minutes:.2f} min of training" if s.startswith("run_") and not a.tiny else ""
        print(f"[{fmt_s(time.monotonic() - T0)}] {s}: started ({i + 1}/{len(todo)}), share {share:.0f} s{plan}, "
              f"limit {limit:.0f} s, {left:.0f} s left", flush=True)
        started = now_iso()
        rec = run_child(s, cmd, limit, out / "stages" / f"{s}.json", out / "logs" / f"{s}.log", env)
        rec.update(started=started, finished=now_iso(), tiny=a.tiny, command=shlex.join(["python", "ci/gpu_campaign.py", *map(str, cmd[2:])]),
                   campaign_command=command, commit=res["commit"], date=res["date"])
        if s.startswith("run_") and rec["status"] == "ok":   # the seconds of the stage outside training, for the next plans
            rec["overhead_s"] = round(rec["seconds"] - rec["result"]["metrics"]["train_seconds"], 1)
        res["stages"][s] = rec
        if "environment" in rec: res.update({k: rec["environment"][k] for k in ("device", "torch", "cuda")})
        save(out, res)
        left = deadline - time.monotonic()
        if rec["status"] == "ok":
            r = rec["result"]
            what = (f"ACC {r['metrics']['acc']:.3f} after {r['metrics']['steps']} steps" if s.startswith("run_")
                    else f"{r['train_views_per_s']:.0f} views/s")
        else:
            failed.append(s); e = rec["error"]
            what = f"FAILED: {e['type']}: {e['message'].splitlines()[0] if e['message'] else ''} (log {rec['log']})"
        print(f"[{fmt_s(time.monotonic() - T0)}] {s}: {what}; took {rec['seconds']:.0f} s, {max(left, 0):.0f} s left", flush=True)
    save(out, res)
    print((out / "results.md").read_text())
    if failed:
        print(f"{len(failed)} stage(s) did not finish: {', '.join(failed)}; run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------- the report

def nice_step(span: float, columns: int = 8) -> float:
    "The smallest 1, 2 or 5 × 10^k that divides `span` into at most `columns` steps."
    import math
    e = math.floor(math.log10(max(span, 1e-6) / columns))
    for k in (1, 2, 5, 10):
        if span / (k * 10 ** e) <= columns: return k * 10 ** e
    return 10 ** (e + 1)


def acc_table(runs: dict) -> list:
    "ACC against minutes: one row per method, the last evaluation at or before each minute mark."
    curves = {k[4:]: r["result"]["curve"] for k, r in runs.items() if r["result"].get("curve")}
    if not curves: return []
    end = max(pt["minutes"] for c in curves.values() for pt in c)
    step = nice_step(end)
    marks = [step * j for j in range(1, int(end / step + 1e-9) + 1)] or [step]
    if marks[-1] < end - 1e-9: marks.append(end)
    show = lambda t: f"{t:.3g}"
    lines = ["| method | " + " | ".join(show(t) for t in marks) + " |", "|---|" + "---|" * len(marks)]
    for m, c in curves.items():
        cells = []
        for t in marks:
            seen = [pt["acc"] for pt in c if pt["minutes"] <= t + 1e-9]
            cells.append(f"{seen[-1]:.3f}" if seen else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def markdown(res: dict) -> str:
    "The README's material: the stages, the throughput figures, the runs' final scores and ACC against minutes."
    st = res["stages"]
    head = (f"Device: {res.get('device', '?')} (torch {res.get('torch', '?')}); commit {res.get('commit', '?')}; "
            f"{res.get('date', '')}. Command: `{res.get('command', '')}`" + (" (tiny CPU rehearsal)" if res.get("tiny") else "") + ".")
    lines = [head, "", "| stage | status | seconds | note |", "|---|---|---|---|"]
    for k in [s for s in STAGES if s in st] + [s for s in st if s not in STAGES]:
        r = st[k]
        note = "" if r.get("status") == "ok" else f"{r['error']['type']}: {(r['error'].get('message') or '').splitlines()[0][:160]}"
        lines.append(f"| {k} | {r.get('status', '?')} | {r.get('seconds', '')} | {note} |")
    benches = [(k, st[k]) for k in ("bench_paper", "bench_native") if st.get(k, {}).get("status") == "ok"]
    if benches: lines += ["", "Throughput (CC):", ""]
    for k, r in benches:
        b = r["result"]
        lines.append(f"- `python ci/bench_throughput.py --config {b['config'].split()[0]}` ({b['backbone']}, {b['stem']} stem, "
                     f"{b['image_size']} px, batch {b['batch_size']}) on {b['device']}: {b['train_views_per_s']:.0f} views/s end to end, "
                     f"{b['model_views_per_s']:.0f} model only (pipeline efficiency {b['pipeline_efficiency']:.2f}, MFU {b['mfu']:.2f}, "
                     f"{b['projected_hours']:.1f} h for {b['epochs']} epochs); the official-style loop "
                     f"{b.get('ref_views_per_s', float('nan')):.0f} views/s (×{b.get('speedup_vs_reference', float('nan')):.1f}).")
    runs = {k: st[k] for k in STAGES if k.startswith("run_") and st.get(k, {}).get("status") == "ok"}
    if runs:
        lines += ["", "Fixed-budget CIFAR-10 runs (the 10,000 test images, each method's paper settings):", "",
                  "| method | backbone | stem | image size | batch | steps | epochs | minutes | ACC | NMI | ARI |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, r in runs.items():
            c, m = r["result"]["config"], r["result"]["metrics"]
            lines.append(f"| {c['method']} | {c['backbone']} | {c['stem']} | {c['image_size']} | {c['batch_size']} | {m['steps']} | "
                         f"{m['epochs']} | {m['train_seconds'] / 60:.2f} | {m['acc']:.3f} | {m['nmi']:.3f} | {m['ari']:.3f} |")
        lines += ["", "ACC against minutes of training (wall clock from the first step, evaluations included; each cell the "
                      "last evaluation by then):", "", *acc_table(runs)]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path):
    "ACC against minutes, one line per method (matplotlib, Agg)."
    runs = {k[4:]: r["result"]["curve"] for k, r in res["stages"].items()
            if k.startswith("run_") and r.get("status") == "ok" and r["result"].get("curve")}
    if not runs: return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, c in runs.items(): ax.plot([p["minutes"] for p in c], [p["acc"] for p in c], marker="o", label=m)
    ax.set_xlabel("minutes of training (wall clock)"); ax.set_ylabel("ACC"); ax.set_ylim(0, 1); ax.legend()
    ax.set_title(f"CIFAR-10 on {res.get('device', '?')}" + (" (tiny rehearsal)" if res.get("tiny") else ""))
    fig.tight_layout(); fig.savefig(path.with_name(path.name + ".tmp.png"), dpi=110); plt.close(fig)
    os.replace(path.with_name(path.name + ".tmp.png"), path)


if __name__ == "__main__":
    sys.exit(main())
