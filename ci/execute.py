"""Run notebooks exactly as `nbdev_test` does and keep the executed copies for the site.

    python ci/execute.py nbs/01_metrics.ipynb [nbs/05_infonce.ipynb ...] [--out build/executed]

Each notebook goes through nbdev's own `test_nb` (IN_TEST=1 in the kernel, cells flagged with a `tst_flags` flag
from settings.ini and `#| eval: false` cells skipped, the notebook's folder as working directory); the only
difference is that the outputs are kept: `build/executed/NAME.ipynb` is the source notebook with the outputs of the
run, the reason each skipped code cell did not run (cell metadata `site.skipped`), and in its metadata `site` the
source's and the package's hashes, so `ci/site_build.py` renders it instead of running the notebook again while it is
current. Prints `Success.` and exits 0 when every notebook ran, like `nbdev_test`; a failing notebook's copy is
written too (status `error`, the traceback in the failing cell's outputs) and the exit status is 1.
"""
import argparse, hashlib, json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "build" / "executed"
SITE_KEY = "site"  # metadata key of the executed copies (notebook and cell level)


def package_hash(root=ROOT):
    "Hash of the generated package's sources: a notebook's outputs depend on the code the earlier chapters export."
    h = hashlib.sha256()
    for p in sorted((root / "deepcluster_nb").glob("*.py")):
        h.update(p.name.encode()); h.update(p.read_bytes())
    return h.hexdigest()


def source_hash(nb_path):
    "Hash of a notebook's source file."
    return hashlib.sha256(Path(nb_path).read_bytes()).hexdigest()


def is_current(executed, nb_path, pkg=None):
    "Whether `executed` is an executed copy of `nb_path` as it is now (same source, same package)."
    executed = Path(executed)
    if not executed.exists(): return False
    try: meta = json.loads(executed.read_text())["metadata"].get(SITE_KEY, {})
    except (ValueError, KeyError): return False
    return meta.get("source_sha256") == source_hash(nb_path) and meta.get("package_sha256") == (pkg or package_hash())


def _skip_reason(cell, flags):
    "Why nbdev's test run leaves this code cell out (the rules of `nbdev.test.test_nb`)."
    d = getattr(cell, "directives_", {}) or {}
    if "nbdev_export" + "(" in cell.source: return "export"
    if d.get("eval:", [""])[0].lower() == "false": return "eval: false"
    hit = sorted(flags & d.keys())
    return hit[0] if hit else None


def execute(nb_path, out_dir=EXECUTED, do_print=True):
    "Run one notebook with nbdev's test semantics; write its executed copy; return (ok, seconds, copy path)."
    import nbdev.test as nbtest
    from nbdev.config import get_config
    from fastcore.xtras import working_directory
    cfg = get_config()
    nb_path = Path(nb_path).absolute()
    flags = set(cfg.tst_flags.split())
    ran = {}

    class KeepOutputs(nbtest.CaptureShell):
        "nbdev's shell, remembering the notebook it ran and which cells it skipped."
        def run_all(self, nb, *args, preproc=None, **kwargs):
            ran["nb"] = nb
            def pre(cell):
                skip = preproc(cell)
                if skip and cell.cell_type == "code": cell.skipped_ = _skip_reason(cell, flags)
                return skip
            return super().run_all(nb, *args, preproc=pre, **kwargs)

    saved = nbtest.CaptureShell
    nbtest.CaptureShell = KeepOutputs
    try:
        with working_directory(cfg.nbs_path):  # nbdev_test's working directory (test_nb then moves to the notebook's)
            ok, secs = nbtest.test_nb(nb_path, skip_flags=cfg.tst_flags.split(), basepath=cfg.config_path,
                                      do_print=do_print)
    finally:
        nbtest.CaptureShell = saved
    out = Path(out_dir) / nb_path.name
    if "nb" in ran: write_copy(nb_path, ran["nb"], out, ok, secs)
    return ok, secs, out


def write_copy(nb_path, processed, out, ok, secs):
    "The source notebook with the outputs of `processed` (nbdev's processed copy; cells keep their index in `idx_`)."
    raw = json.loads(Path(nb_path).read_text())
    by_idx = {c.idx_: c for c in processed.cells if c.cell_type == "code" and getattr(c, "idx_", None) is not None}
    for i, cell in enumerate(raw["cells"]):
        if cell["cell_type"] != "code": continue
        run_cell = by_idx.get(i)
        if run_cell is None or _body(run_cell.source) != _body("".join(cell["source"])):
            raise RuntimeError(f"{Path(nb_path).name}: cannot line up executed cell {i} with the source")
        cell["outputs"] = [_plain(o) for o in run_cell.get("outputs", [])]
        cell["execution_count"] = None
        if getattr(run_cell, "skipped_", None): cell.setdefault("metadata", {})[SITE_KEY] = {"skipped": run_cell.skipped_}
    raw["metadata"][SITE_KEY] = dict(status="ok" if ok else "error", seconds=round(secs, 1), in_test=True,
                                     source_sha256=source_hash(nb_path), package_sha256=package_hash())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(raw, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, out)


def _body(src):
    "A cell's code without its `#|` directives (nbdev moves them out of the source when it reads a notebook)."
    return "\n".join(l for l in src.strip().splitlines() if not l.lstrip().startswith("#|")).strip()


def _plain(o):
    "An output as plain JSON (execnb keeps them as attribute dicts)."
    if isinstance(o, dict): return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)): return [_plain(v) for v in o]
    return o


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", help="notebooks to run")
    ap.add_argument("--out", default=str(EXECUTED), help="folder for the executed copies")
    a = ap.parse_args(argv)
    failed = []
    for nb in a.notebooks:
        t = time.time()
        ok, secs, out = execute(nb, a.out)
        print(f"{Path(nb).name}: {'ok' if ok else 'FAILED'} in {time.time() - t:.1f} s -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
        if not ok: failed.append(Path(nb).name)
    if failed:
        print("nbdev tests failed on: " + ", ".join(failed), file=sys.stderr)
        return 1
    print("Success.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
