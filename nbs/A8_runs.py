# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: run folders
# > Engineering around the course: how the trainer and the report know which folders are theirs — a marker file that lists every file the project wrote — the rules that decide, before anything is read or written, whether a folder may be used, resumed or overwritten, and the files a run writes there: checkpoints and JSON, written atomically and read back safely.

# %%
#| default_exp runs

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import datetime, json, os, shutil, warnings
from dataclasses import dataclass, field
from pathlib import Path
import torch

# %%
import tempfile

# %% [markdown]
# A run writes its configuration, history, checkpoints, metrics and figures into one folder, and the report adds its
# figures and `report.json` beside them. Users keep other things in such folders too: notes, a draft, the output of
# another program with a `config.json` of its own. The rules below make sure that **nothing a user had is lost**:
#
# - a folder is the project's only when it holds the marker `deepcluster_run.json`, which the trainer writes when it
#   claims the folder and which lists every file the project has written there;
# - a folder that holds other files and no marker is never touched, even with `overwrite`;
# - `overwrite` removes exactly the files the marker lists (and the names the project always writes), nothing else;
# - `resume` needs a checkpoint, and `resume` with `overwrite` is a contradiction;
# - every check runs before the first byte is written, so a refused run changes nothing.
#
# The marker also records the run's status (`running`, `finished`, `stopped`, `failed` with its error), so a folder
# left by a failure says what happened and how to go on.

# %%
#| export
RUN_MARKER = "deepcluster_run.json"
TRAIN_FILES = ("checkpoint.pt", "checkpoint.prev.pt", "config.json", "history.json", "history.csv", "metrics.json",
               "training_curves.png", "confusion.png")
REPORT_FILES = ("report.json", "confusion.png", "cluster_sizes.png", "gallery_confident.png", "gallery_mistakes.png",
                "tsne.png", "history.png")

class RunFolderError(ValueError):
    "A run folder that cannot be used as asked: the message says what was found there and what to do."

class RunFolderExists(RunFolderError, FileExistsError):
    "The folder already holds a run that this one would replace."

def read_marker(d) -> dict|None:
    "The marker of run folder `d`, or None when there is none (or it is not ours)."
    p = Path(d) / RUN_MARKER
    try: m = json.loads(p.read_text())
    except (OSError, ValueError): return None
    return m if isinstance(m, dict) and m.get("package") == "deepcluster_nb" else None

def _write_marker(d:Path, m:dict):
    tmp = d / (RUN_MARKER + ".tmp")
    tmp.write_text(json.dumps(m, indent=2, default=str)); os.replace(tmp, d / RUN_MARKER)

def update_marker(d, # the run folder (claimed)
                  files=(), # names of files just written there
                  **fields, # status, epoch, error, ...
                 ) -> dict:
    "Add `files` to the marker's list and set `fields`; the marker is rewritten atomically."
    d = Path(d); m = read_marker(d) or {"package": "deepcluster_nb", "files": []}
    m["files"] = sorted(set(m.get("files", [])) | {Path(f).name for f in files})
    m.update(fields, updated=datetime.datetime.now().isoformat(timespec="seconds"))
    _write_marker(d, m)
    return m

# %% [markdown]
# What a folder holds, sorted into the project's files (listed by its marker) and the others:

# %%
#| export
@dataclass
class FolderState:
    "What `inspect_folder` found at a run folder's path."
    path: Path
    exists: bool = False
    is_dir: bool = False
    marker: dict|None = None
    ours: list = field(default_factory=list)     # files the project wrote there (present now)
    others: list = field(default_factory=list)   # everything else (never touched)
    @property
    def checkpoint(self) -> bool: return any(f in self.ours for f in ("checkpoint.pt", "checkpoint.prev.pt"))
    @property
    def empty(self) -> bool: return self.is_dir and not self.ours and not self.others and self.marker is None
    def describe(self) -> str:
        "A short account: status, epoch and files."
        m, bits = self.marker or {}, []
        if m.get("status"): bits.append(f"status {m['status']}" + (f" at epoch {m['epoch']}" if m.get("epoch") is not None else ""))
        if m.get("error"): bits.append(f"error: {m['error']}")
        bits.append("files: " + (", ".join(self.ours) if self.ours else "none of its own"))
        return "; ".join(bits)

def project_file(name:str, marker:dict|None) -> bool:
    "Whether `name` is a file the project wrote, for a folder with `marker` (its temporary files included)."
    if marker is None: return False
    base = name[:-4] if name.endswith(".tmp") else name
    return base == RUN_MARKER or base in marker.get("files", ()) or base in TRAIN_FILES or base in REPORT_FILES

def inspect_folder(d) -> FolderState:
    "Look at `d` without changing it."
    d = Path(d); st = FolderState(d, d.exists(), d.is_dir())
    if not st.is_dir: return st
    st.marker = read_marker(d)
    names = sorted(p.name for p in d.iterdir())
    st.ours = [n for n in names if n != RUN_MARKER and project_file(n, st.marker)]
    st.others = [n for n in names if not project_file(n, st.marker)]
    return st

# %% [markdown]
# The rules, as one function of the folder and the two flags. It returns what the run will do — `"new"`, `"resume"`
# or `"overwrite"` — or refuses with one line that names what it found and what to type instead:

# %%
#| export
def _writable(d:Path) -> Path|None:
    "The nearest existing folder at or above `d` if it cannot be written into, else None."
    p = d
    while not p.exists() and p != p.parent: p = p.parent
    return None if os.access(p, os.W_OK | os.X_OK) else p

def _names(xs, n=6): return ", ".join(xs[:n]) + (f" and {len(xs) - n} more" if len(xs) > n else "")

def check_run_folder(out_dir, # the run folder
                     resume:bool=False, # continue the run there from its checkpoint
                     overwrite:bool=False, # replace the run there
                    ) -> str: # "new", "resume" or "overwrite"
    "Decide, without changing anything, whether a run may use `out_dir`; refuse with a one-line `RunFolderError` if not."
    if str(out_dir).strip() in ("", "."):
        raise RunFolderError(f"out_dir must name a folder for the run, got {str(out_dir)!r} (the working directory is never "
                             f"used as a run folder): for example out_dir='runs/{{method}}_{{dataset}}_s{{seed}}'")
    if resume and overwrite:
        raise RunFolderError("resume=True and overwrite=True contradict each other: resume continues the run in out_dir, "
                             "overwrite replaces it. Pass only one of them")
    d = Path(out_dir); st = inspect_folder(d)
    if st.exists and not st.is_dir: raise RunFolderError(f"out_dir {d} is a file, not a folder: choose another out_dir")
    if (bad := _writable(d)) is not None: raise RunFolderError(f"out_dir {d} cannot be written: {bad} is not writable. Choose another out_dir")
    if st.marker is None and st.others:
        raise RunFolderError(f"{d} holds files that no run of this package wrote ({_names(st.others)}), so it is left alone "
                             f"(even with overwrite=True): choose another out_dir, or an empty folder")
    if resume:
        if st.checkpoint: return "resume"
        found = "does not exist" if not st.exists else "is empty" if st.empty else f"has no checkpoint ({st.describe()})"
        raise RunFolderError(f"resume=True, but {d} {found}: there is nothing to resume. Start the run without resume"
                             + (", with overwrite=True to replace what is there," if st.ours else "") + " or choose another out_dir")
    if st.marker is None or not st.ours: return "new"
    if overwrite: return "overwrite"
    how = ("Pass resume=True to continue it, overwrite=True to replace it, or choose another out_dir" if st.checkpoint else
           "It has no checkpoint to resume from: pass overwrite=True to replace it, or choose another out_dir")
    raise RunFolderExists(f"{d} already holds a run ({st.describe()}). {how}")

# %%
show_doc(check_run_folder)

# %% [markdown]
# Claiming a folder is the first write of a run: it creates the folder, removes (for `overwrite`) the files the
# marker lists, and writes the marker with the status `running`. `RunFolder` is the handle the trainer and the
# report write through, so that every file they write is added to the marker's list.

# %%
#| export
def clear_project_files(d) -> list:
    "Remove the files the project wrote in `d` (those its marker lists, the project's own names, their temporaries); return their names."
    st = inspect_folder(d)
    gone = []
    for n in st.ours:
        (Path(d) / n).unlink(missing_ok=True); gone.append(n)
    return gone

def claim_run_folder(out_dir, # the run folder, already checked by `check_run_folder`
                     mode:str, # what `check_run_folder` returned
                     **fields, # recorded in the marker (e.g. method, dataset)
                    ) -> Path:
    "Create or take over `out_dir` for a run: clear it for 'overwrite', drop stale temporaries, write the marker."
    d = Path(out_dir); d.mkdir(parents=True, exist_ok=True)
    if mode == "overwrite": clear_project_files(d)
    m = read_marker(d)
    for n in os.listdir(d):
        if n.endswith(".tmp") and project_file(n, m or {"files": []}): (d / n).unlink(missing_ok=True)   # left by a kill during a write
    if mode != "resume" or m is None:
        m = {"package": "deepcluster_nb", "files": [], "created": datetime.datetime.now().isoformat(timespec="seconds")}
    m.update(fields, status="running", error=None)
    m.pop("epoch", None) if mode != "resume" else None
    _write_marker(d, m)
    return d

# %%
with tempfile.TemporaryDirectory() as _t:
    _t = Path(_t)
    test_eq(check_run_folder(_t / "new"), "new"); test_eq(check_run_folder(_t), "new")           # absent, or empty
    test_fail(lambda: check_run_folder(""), contains="out_dir must name a folder")
    test_fail(lambda: check_run_folder(_t, True, True), contains="contradict each other")
    test_fail(lambda: check_run_folder(_t / "new", resume=True), contains="does not exist: there is nothing to resume")
    (_t / "f").write_text("x"); test_fail(lambda: check_run_folder(_t / "f"), contains="is a file, not a folder")
    # a folder of someone else's: never touched, even with overwrite
    _u = _t / "theirs"; _u.mkdir(); (_u / "draft.tmp").write_text("notes"); (_u / "config.json").write_text("{}")
    for _kw in ({}, {"overwrite": True}, {"resume": True}):
        test_fail(lambda: check_run_folder(_u, **_kw), contains="no run of this package wrote (config.json, draft.tmp)")
    # a run: refused, resumed when it has a checkpoint, overwritten without touching the user's file
    _r = claim_run_folder(_t / "run", "new", method="cc")
    for _n in ("config.json", "checkpoint.pt", "tsne.png"): (_r / _n).write_text("x")
    update_marker(_r, ["config.json", "checkpoint.pt", "tsne.png"], status="finished", epoch=2)
    (_r / "notes.tmp").write_text("mine")
    test_fail(lambda: check_run_folder(_r), contains="already holds a run (status finished at epoch 2")
    test_eq(check_run_folder(_r, resume=True), "resume"); test_eq(check_run_folder(_r, overwrite=True), "overwrite")
    claim_run_folder(_r, "overwrite")
    test_eq(sorted(p.name for p in _r.iterdir()), [RUN_MARKER, "notes.tmp"])                 # the user's file stays
    test_eq(read_marker(_r)["status"], "running")
    test_fail(lambda: check_run_folder(_r, resume=True), contains="has no checkpoint")
    test_eq(check_run_folder(_r), "new")                  # a marker and nothing of its own: nothing to lose

# %% [markdown]
# ## Checkpoints and JSON files
# What a run writes into its folder is written so that a kill at any moment leaves a complete file: to a temporary
# file first, then moved into place with `os.replace`, which is atomic. A checkpoint holds only tensors and plain data
# (the trainer chapter lists what), so it loads with `torch.load(weights_only=True)` — PyTorch's safe loader, which
# refuses a file that carries code instead of running it. The previous checkpoint is kept beside the latest, so a
# latest file damaged later (a full disk, a bad copy) falls back to the one before. The trainer writes its checkpoints
# and JSON files with these functions; the report and CRLC's second stage read checkpoints with `load_checkpoint`.

# %%
#| export
def write_json(obj, path):
    "Write JSON atomically."
    path = Path(path); tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))); os.replace(tmp, path)

def atomic_save(obj, path):
    "torch.save to a temporary file, then atomically replace `path`."
    path = Path(path); tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp); os.replace(tmp, path)

def save_checkpoint(state:dict, # what `Trainer.state` returns
                    path, # the checkpoint file; the one it replaces becomes NAME.prev.pt
                   ):
    "Write a checkpoint atomically, keeping the previous one as `<name>.prev.pt` (at every moment both are complete)."
    path = Path(path); prev = path.with_suffix(".prev.pt")
    if path.exists():
        link = prev.with_name(prev.name + ".tmp")
        link.unlink(missing_ok=True)
        try: os.link(path, link)
        except OSError: shutil.copy2(path, link)
        os.replace(link, prev)
    atomic_save(state, path)

class UnsafeCheckpoint(RuntimeError):
    "A checkpoint that holds code or other Python objects: refused, never executed."

def load_checkpoint(path, # a checkpoint file (its `.prev.pt` sibling is the fallback)
                    map_location="cpu") -> tuple: # (the state dict, the file it came from)
    "Load a checkpoint with `weights_only=True`; fall back to the previous one, with a warning, if the latest is damaged."
    path = Path(path); errors = []
    for p in (path, path.with_suffix(".prev.pt")):
        if not p.exists(): continue
        try: return torch.load(p, map_location=map_location, weights_only=True), p
        except Exception as e:
            why = next((l.strip() for l in str(e).splitlines() if "GLOBAL" in l), None)
            if why:   # the safe unpickler met a reference to code (garbage bytes fail differently: a damaged file)
                raise UnsafeCheckpoint(f"refusing to load {p}: it holds Python objects other than tensors and plain data "
                                       f"(code could run on loading; {why}). Checkpoints written by this package never do; "
                                       f"only load files you trust") from None
            errors.append(f"{p.name}: {type(e).__name__}: {str(e).strip().splitlines()[0][:120]}")
            warnings.warn(f"cannot read {p} ({errors[-1]}); trying the previous checkpoint")
    raise FileNotFoundError(f"no readable checkpoint at {path}" + (f" ({'; '.join(errors)})" if errors else ""))

# %%
show_doc(load_checkpoint)

# %% [markdown]
# Two saves keep both checkpoints; a damaged latest file falls back, with a warning, to the one before; a path with
# neither file is a `FileNotFoundError`. `write_json` writes what JSON cannot hold by itself (tensors, arrays,
# paths) as lists and strings.

# %%
with tempfile.TemporaryDirectory() as _t:
    _ck = Path(_t) / "checkpoint.pt"
    save_checkpoint({"epoch": 1, "w": torch.arange(3.)}, _ck); save_checkpoint({"epoch": 2, "w": torch.ones(3)}, _ck)
    test_eq(sorted(p.name for p in Path(_t).iterdir()), ["checkpoint.prev.pt", "checkpoint.pt"])   # no temporaries left
    test_eq(load_checkpoint(_ck)[0]["epoch"], 2)
    _ck.write_bytes(b"damaged")
    with warnings.catch_warnings(record=True) as _w:
        warnings.simplefilter("always"); _state, _from = load_checkpoint(_ck)
    test_eq((_from.name, _state["epoch"], _state["w"].tolist()), ("checkpoint.prev.pt", 1, [0., 1., 2.]))
    assert any("trying the previous checkpoint" in str(w.message) for w in _w)
    test_fail(lambda: load_checkpoint(Path(_t) / "other.pt"), contains="no readable checkpoint")
    write_json({"acc": torch.tensor(0.5), "sizes": torch.tensor([1, 2]), "dir": Path(_t)}, Path(_t) / "m.json")
    test_eq(json.loads((Path(_t) / "m.json").read_text()), {"acc": 0.5, "sizes": [1, 2], "dir": _t})

# %% [markdown]
# And a checkpoint that carries code is refused without running it. The "code" here is a class whose unpickling
# would call `os.system` to write a file; the safe loader stops at the unknown global, and the file is never written:

# %%
class _Payload:
    def __init__(self, cmd): self.cmd = cmd
    def __reduce__(self): return (os.system, (self.cmd,))
with tempfile.TemporaryDirectory() as _t:
    torch.save({"model": _Payload(f"echo ran > {Path(_t) / 'ran'}")}, Path(_t) / "evil.pt")
    try: load_checkpoint(Path(_t) / "evil.pt"); raise AssertionError("the payload was loaded")
    except UnsafeCheckpoint as e: assert "refusing to load" in str(e), e
    assert not (Path(_t) / "ran").exists()                                # the command never ran

# %%
#| hide
import nbdev; nbdev.nbdev_export()
