# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: run folders
# > Engineering around the course: how the trainer and the report know which folders are theirs — a marker file that lists every file the project wrote — and the rules that decide, before anything is read or written, whether a folder may be used, resumed or overwritten.

# %%
#| default_exp runs

# %%
#| hide
from nbdev.showdoc import show_doc
from fastcore.test import test_eq, test_close, test_fail

# %%
#| export
from __future__ import annotations
import datetime, json, os
from dataclasses import dataclass, field
from pathlib import Path

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
    m = st.marker
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

# %%
#| hide
import nbdev; nbdev.nbdev_export()
