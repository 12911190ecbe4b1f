# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: the command line
# > Engineering around the course: `python -m deepcluster_nb train ...` runs the trainer from a shell (and under `torchrun`, data-parallel), `python -m deepcluster_nb report RUN_DIR` writes a run's report. Every option is generated from the training configuration, so the command line cannot drift from it.

# %%
#| default_exp cli

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import argparse, difflib, inspect, os, sys
import torch.distributed as dist
from deepcluster_nb.train import TrainConfig, Trainer, ConfigError, config_help, coerce_value
from deepcluster_nb.runs import RunFolderExists, UnsafeCheckpoint
from deepcluster_nb.report import RunMismatch
from deepcluster_nb.readers import build_imagenet_subset, IMAGENET_SUBSETS

# %% [markdown]
# A run can be started three ways, all with the same `TrainConfig` and the same `Trainer`: from Python
# (`Trainer(TrainConfig(...)).fit()`), as a papermill run of `nbs/train.ipynb` (`-p epochs 50`), and from a shell:
#
# ```bash
# python -m deepcluster_nb train --method cc --dataset cifar10               # the paper's settings
# python -m deepcluster_nb train --method tcc --dataset digits --epochs 20 --hparams '{lam: 0.5}'
# python -m deepcluster_nb train --out_dir runs/cc_digits_s0 --resume --epochs 150  # continue a run, longer
# python -m deepcluster_nb train --help                                        # every option, its type and default
# torchrun --standalone --nproc_per_node 4 -m deepcluster_nb train --method cc --dataset cifar10   # 4 GPUs
# python -m deepcluster_nb report runs/cc_cifar10_s0 --device cpu             # figures and report.json
# ```
#
# This appendix is the shell's entry point. It holds no training logic: it turns words into a `TrainConfig` with
# `TrainConfig.parse` (the parser papermill runs use too) and calls the trainer, or calls the report's `load_run` and
# `write_report`. Under `torchrun` (which sets `WORLD_SIZE` to the number of processes) it uses the
# `DistributedTrainer` of the data-parallel appendix instead of the `Trainer`; nothing else changes.
#
# ## Options from the configuration
# The options are not typed in here: one `--name` per field of `TrainConfig`, with the field's type and the comment
# that documents it (`config_help`), so a new field appears on the command line and in `--help` the moment it is
# declared. Values stay text until `TrainConfig.parse` converts them, which gives the command line the same rules as
# papermill: booleans are `true/false/yes/no/1/0`, `auto` or `none` leaves a field to the method's settings table,
# `--hparams` takes a YAML mapping. A boolean option given alone means true (`--resume`). Options are written as the
# fields are (`--batch_size`); `--batch-size` is accepted too.

# %%
#| export
def _kinds(anno:str) -> list: return [k.strip() for k in str(anno).split("|") if k.strip() != "None"]

def metavar(anno:str) -> str:
    "How `--help` shows a value of type `anno`: BOOL, YAML, INT, INT|STR, ..."
    k = _kinds(anno)
    return "YAML" if k == ["dict"] else "|".join(x.upper() for x in k)

def _default_text(default, none:str) -> str:
    if default is None: return none
    if isinstance(default, bool): return str(default).lower()
    if isinstance(default, (list, tuple)) and not default: return "none"
    return str(default)

def add_options(parser:argparse.ArgumentParser, # gets one option per entry
                spec:dict, # name -> (annotation, default, help), e.g. `config_help()`
                none:str="the method's setting", # what a default of None means, for `--help`
               ) -> list: # the option strings added
    "Add `--name VALUE` for each entry of `spec`, kept as text; a boolean given alone means true. Unset options stay unset."
    names = []
    for name, (anno, default, text) in spec.items():
        kw = dict(nargs="?", const="true") if "bool" in _kinds(anno) else {}
        if _kinds(anno) == ["list"]: kw = dict(nargs="*")
        parser.add_argument(f"--{name}", metavar=metavar(anno), default=argparse.SUPPRESS,
                            help=f"{text} [{metavar(anno)}; default: {_default_text(default, none)}]".replace("%", "%%"), **kw)
        names.append(f"--{name}")
    return names

# %%
_p = argparse.ArgumentParser(allow_abbrev=False)
test_eq(add_options(_p, {"epochs": ("int | None", None, "passes"), "resume": ("bool", False, "continue")}), ["--epochs", "--resume"])
test_eq(vars(_p.parse_args(["--epochs", "3", "--resume"])), {"epochs": "3", "resume": "true"})
test_eq(vars(_p.parse_args(["--resume", "no"])), {"resume": "no"}); test_eq(vars(_p.parse_args([])), {})
test_eq((metavar("int | str | None"), metavar("bool | None"), metavar("dict")), ("INT|STR", "BOOL", "YAML"))

# %% [markdown]
# ## Misspelt options
# A misspelt option must stop the run, not be ignored, and not be guessed: argparse would otherwise accept `--epoch`
# as an abbreviation of `--epochs` (and `--lr` would silently become ambiguous the day a field `--lr_min` is added),
# so abbreviations are switched off (`allow_abbrev=False`) and an unknown option is refused with the closest valid
# one and the whole list.

# %%
#| export
def unknown_options(extra:list, # the arguments argparse did not recognise
                    valid:list, # the valid option strings
                   ) -> str: # the error message
    "An error message for unrecognised arguments: each unknown option with its closest valid one, then every valid option."
    bad = [a.split("=", 1)[0] for a in extra if a.startswith("-")]
    if not bad: return f"unexpected argument(s): {' '.join(extra)}"
    hint = lambda b: f"{b} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(b, valid, 1, 0.6)) else b
    return f"unknown option(s) {', '.join(map(hint, bad))}. Valid options: {' '.join(valid)}"

class Parser(argparse.ArgumentParser):
    "argparse without abbreviations, remembering its options for `unknown_options`."
    def __init__(self, *args, **kwargs):
        self.options = []
        super().__init__(*args, allow_abbrev=False, **kwargs)
    def add_argument(self, *names, **kwargs):
        self.options += [n for n in names if n.startswith("--") and n != "--help"]
        return super().add_argument(*names, **kwargs)

def dashes_to_underscores(argv:list) -> list:
    "`--batch-size 64` → `--batch_size 64` (the option names only)."
    def fix(a):
        if not a.startswith("--"): return a
        name, eq, value = a.partition("=")
        return "--" + name[2:].replace("-", "_") + eq + value
    return [fix(a) for a in argv]

# %%
test_eq(unknown_options(["--epoch", "2"], ["--epochs", "--seed"]),
        "unknown option(s) --epoch (did you mean --epochs?). Valid options: --epochs --seed")
test_eq(unknown_options(["--zzz=1"], ["--epochs"]), "unknown option(s) --zzz. Valid options: --epochs")
test_eq(dashes_to_underscores(["--batch-size", "64", "--out-dir=a-b", "-h", "x-y"]), ["--batch_size", "64", "--out_dir=a-b", "-h", "x-y"])

# %% [markdown]
# ## The report command
# `report` loads a run folder and writes its report, like `papermill nbs/report.ipynb out.ipynb -p run_dir RUN_DIR`,
# and prints the comparison with the paper and the collapse check. Its options are generated the same way, from the
# signature and the documented parameters of `report_run`.

# %%
#| export
def report_run(run:str, # run folder holding checkpoint.pt, or a checkpoint file
               device:str="auto", # "auto" (cuda if available), "cuda" or "cpu"
               data_root:str|None=None, # data folder (default: the one recorded in the run)
               method:str|None=None, # expected method: stop with an error if the checkpoint is of another one
               dataset:str|None=None, # expected dataset: stop with an error if the checkpoint is of another one
               out_dir:str|None=None, # folder for the figures and report.json (default: the run folder)
               kmeans:bool=True, # also score k-means on the learned features
               tsne_samples:int=2000, # images in the t-SNE map (0 skips the t-SNE)
               gallery_size:int=8, # images per cluster in the galleries
               gallery_clusters:int=20, # clusters (rows) shown in each gallery
               runs:list=(), # more run folders (e.g. other seeds) summarised with this one as mean ± std
               seed:int=0, # seed of k-means, of the t-SNE sample and of t-SNE
              ) -> dict: # the report (also in report.json)
    "Load a run, write its report and figures, and print the scores beside the paper's and the collapse check."
    from deepcluster_nb.report import load_run, write_report, markdown_table, check_report_params
    check_report_params(tsne_samples, gallery_size, gallery_clusters, seed, device, list(runs))   # before evaluating
    r = load_run(run, device, data_root, method, dataset)
    rep = write_report(r, out_dir, tsne_samples, gallery_size, gallery_clusters, kmeans, list(runs), seed)
    print(markdown_table(rep["comparison"]))
    print("collapsed: " + ("; ".join(rep["collapse"]) if rep["collapsed"] else
                           f"no (the largest cluster holds {rep['largest_cluster']:.1%} of the images)"))
    print(f"wrote report.json and {len(rep['figures'])} figures to {out_dir or r.run_dir}")
    return rep

def function_spec(f) -> dict:
    "name -> (annotation, default, help) of the keyword parameters of `f`, from its signature and docments."
    from fastcore.docments import docments
    docs, sig = docments(f), inspect.signature(f).parameters
    return {k: (str(p.annotation), p.default, docs.get(k) or "") for k, p in sig.items() if p.default is not p.empty}

# %%
test_eq(function_spec(report_run)["tsne_samples"], ("int", 2000, "images in the t-SNE map (0 skips the t-SNE)"))
assert "run" not in function_spec(report_run)

# %% [markdown]
# ## The parser and `main`

# %%
#| export
def build_parser() -> Parser:
    "The parser of `python -m deepcluster_nb`: the `train` and `report` sub-commands."
    p = Parser(prog="python -m deepcluster_nb", description="Contrastive deep clustering: train a method, report on a run.")
    sub = p.add_subparsers(dest="command", metavar="{train,report,build-imagenet}", parser_class=Parser)
    t = sub.add_parser("train", help="train a method (every TrainConfig field is an option)",
                       usage="%(prog)s [--FIELD VALUE ...]  (--help lists them)",
                       description="Train a clustering method. A field left unset takes the method's setting for the "
                       "dataset (its settings table); under torchrun the run is data-parallel.")
    add_options(t, config_help())
    r = sub.add_parser("report", help="evaluate a run folder: figures, report.json, the paper's numbers",
                       usage="%(prog)s RUN [--OPTION VALUE ...]  (--help lists them)",
                       description="Evaluate a run: scores of the cluster head and of k-means, figures, report.json.")
    r.add_argument("run", help="run folder holding checkpoint.pt, or a checkpoint file")
    add_options(r, function_spec(report_run), none="none")
    b = sub.add_parser("build-imagenet", help="make ImageNet-10 or ImageNet-Dogs from an ILSVRC-2012 training set",
                       usage="%(prog)s {imagenet10,imagenet_dogs} SOURCE [--OPTION VALUE ...]",
                       description="Copy the subset's classes out of ILSVRC-2012's training set into the data root, "
                       "checking every class and its image count (the data chapter's `build_imagenet_subset`).")
    b.add_argument("name", choices=sorted(IMAGENET_SUBSETS), help="the subset")
    b.add_argument("source", help="ILSVRC-2012 train: a folder of <wnid>/ folders or <wnid>.tar files, or ILSVRC2012_img_train.tar")
    add_options(b, function_spec(build_imagenet_subset), none="none")
    p.commands = {"train": t, "report": r, "build-imagenet": b}
    return p

def parse_command(argv:list|None=None) -> tuple:
    "(command, raw option values) of a command line; exits with a message (status 2) on anything unknown."
    p = build_parser()
    ns, extra = p.parse_known_args(dashes_to_underscores(sys.argv[1:] if argv is None else list(argv)))
    if ns.command is None: p.print_help(sys.stderr); p.exit(2)
    sub = p.commands[ns.command]
    if extra: sub.error(unknown_options(extra, sub.options))
    return ns.command, {k: v for k, v in vars(ns).items() if k != "command"}

# %%
test_eq(parse_command(["train", "--epochs", "3", "--resume", "--batch-size", "64"]),
        ("train", {"epochs": "3", "resume": "true", "batch_size": "64"}))
test_eq(parse_command(["report", "runs/x", "--runs", "a", "b", "--kmeans", "false"]),
        ("report", {"run": "runs/x", "runs": ["a", "b"], "kmeans": "false"}))

# %% [markdown]
# A misspelt option, and an abbreviation, stop with status 2 and say what was meant:

# %%
import contextlib, io

# %%
def _stderr_of(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try: parse_command(argv)
        except SystemExit as e: return e.code, err.getvalue()
_code, _msg = _stderr_of(["train", "--epoch", "3"])
test_eq(_code, 2); assert "--epoch (did you mean --epochs?)" in _msg and "--hparams" in _msg, _msg
assert "(did you mean --eval_every?)" in _stderr_of(["train", "--eval", "1"])[1]
assert "did you mean --tsne_samples?" in _stderr_of(["report", "r", "--tsne_sample", "0"])[1]
print(_msg.splitlines()[-1][:200], "...")

# %% [markdown]
# `main` runs a sub-command. For `train` it converts the values with `TrainConfig.parse`, builds the trainer — the
# data-parallel one when `torchrun` started several processes — prints where each setting came from, and fits. Bad
# values and a run folder that already holds a run stop with the trainer's message and status 2, before anything is
# trained.

# %%
#| export
def trainer_for(cfg:TrainConfig) -> Trainer:
    "The trainer for `cfg`: the `DistributedTrainer` when torchrun started several processes (WORLD_SIZE > 1), else the `Trainer`."
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from deepcluster_nb.distributed import DistributedTrainer
        return DistributedTrainer(cfg)
    return Trainer(cfg)

def train(**values) -> dict:
    "Train from raw option values (text): parse, build the trainer, print the settings, fit; return the final metrics."
    tr = trainer_for(TrainConfig.parse(**values))
    if tr.is_main:
        print(f"{tr.cfg.method} on {tr.data}; run folder {tr.out_dir}" + (f"; {tr.world_size} processes" if tr.world_size > 1 else ""))
        for r in tr.settings_table():
            if r["from"] != "trainer default": print(f"  {r['setting']} = {r['value']!r}  ({r['from']})")
    grouped = lambda: dist.is_available() and dist.is_initialized()
    try: m = tr.fit()
    except BaseException:
        if grouped(): dist.destroy_process_group()
        raise
    if grouped(): dist.barrier(); dist.destroy_process_group()   # after process 0 has written the run folder
    if tr.is_main:
        print(", ".join(f"{k} {m[k]:.4f}" for k in ("acc", "nmi", "ari") if k in m)
              + f"; {m['epochs']} epochs, {m['steps']} steps; metrics in {tr.out_dir / 'metrics.json'}")
        if m.get("alarms"): print("alarms: " + "; ".join(m["alarms"]))
    return m

def main(argv:list|None=None) -> int:
    "The command line: `python -m deepcluster_nb {train,report} ...`; returns the exit status."
    command, values = parse_command(argv)
    try:
        if command == "train": train(**values)
        elif command == "report":
            values = {k: v if k in ("run", "runs") else coerce_value(k, v, function_spec(report_run)[k][0]) for k, v in values.items()}
            report_run(**values)
        else:
            spec = function_spec(build_imagenet_subset)
            values = {k: v if k in ("name", "source") else coerce_value(k, v, spec[k][0]) for k, v in values.items()}
            print(f"wrote {build_imagenet_subset(**values)}")
    except (ConfigError, RunFolderExists, UnsafeCheckpoint, RunMismatch, FileNotFoundError, ValueError, FileExistsError) as e:
        build_parser().commands[command].error(str(e))
    return 0

# %%
show_doc(main)

# %% [markdown]
# A short run on digits and its report, through `main` as the shell would call it:

# %%
import json, tempfile
from pathlib import Path

# %%
test_eq(type(trainer_for(TrainConfig(epochs=1, progress=False, out_dir=tempfile.mkdtemp()))), Trainer)   # one process: the plain trainer
with tempfile.TemporaryDirectory() as _t:
    test_eq(main(["train", "--epochs", "1", "--subset", "256", "--progress", "false", "--out_dir", _t, "--hparams", "{tau_i: 0.4}"]), 0)
    _cfg = json.loads((Path(_t) / "config.json").read_text())["config"]
    test_eq((_cfg["epochs"], _cfg["subset"], _cfg["hparams"]["tau_i"], _cfg["progress"]), (1, 256, 0.4, False))
    with contextlib.redirect_stderr(io.StringIO()) as _err:
        test_fail(lambda: main(["train", "--epochs", "1", "--out_dir", _t]), exc=SystemExit)
    assert "already holds a run" in _err.getvalue()
    test_eq(main(["report", _t, "--device", "cpu", "--tsne_samples", "0", "--kmeans", "false", "--gallery_size", "4"]), 0)
    test_eq(set(json.loads((Path(_t) / "report.json").read_text())["metrics"]), {"head"})
with contextlib.redirect_stderr(io.StringIO()) as _err:                # the ImageNet builder names what is missing
    test_fail(lambda: main(["build-imagenet", "imagenet10", "/no/such/ILSVRC/train"]), exc=SystemExit)
assert "No ILSVRC-2012 training set at /no/such/ILSVRC/train" in _err.getvalue(), _err.getvalue()

# %% [markdown]
# `python -m deepcluster_nb` runs the package's `__main__` module, which calls `main` (appendix `A5_main`). The whole
# `--help` of the train command, as a shell shows it:

# %%
with contextlib.redirect_stdout(io.StringIO()) as _out:
    try: parse_command(["train", "--help"])
    except SystemExit: pass
_help = _out.getvalue()
for _name, (_anno, _default, _text) in config_help().items(): assert f"--{_name} " in _help, _name
print(_help)

# %%
#| hide
import nbdev; nbdev.nbdev_export()
