"""README.md is generated from the front page of the course, nbs/index.ipynb (nbdev's `readme_nb`), the way
`nbdev_readme` would do it without Quarto: the title, the summary as a quote, then every cell as markdown.

    python ci/readme.py            # write README.md
    python ci/readme.py --check    # exit 1 (with a diff) when README.md is not what nbs/index.ipynb makes
    python ci/readme.py --set-block results new_results.md   # replace the <!-- results:start/end --> part

Edit nbs/index.py (or the notebook), then run `jupytext --sync nbs/index.ipynb` and this script. Links in the
notebook are relative to nbs/ (so they work in JupyterLab and on the site); here they become relative to the
repository root. Code cells appear as python blocks, without their `#|` lines (`#| hide` cells are left out), with
their text outputs, if any, as plain blocks. A part of the page between `<!-- NAME:start -->` and
`<!-- NAME:end -->` can be replaced by a script (`set_block`): the measured results are marked as `results`.
"""
import argparse, difflib, json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT / "nbs" / "index.ipynb"
README = ROOT / "README.md"
NOTICE = "<!-- Generated from nbs/index.ipynb by ci/readme.py: edit nbs/index.py, then run `python ci/readme.py`. -->"


def _src(cell): return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def rebase_link(target, base="nbs"):
    "A link relative to nbs/ made relative to the repository root (absolute links and anchors are kept)."
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target, re.I) or not target: return target
    path, sep, frag = target.partition("#")
    parts = []
    for p in (base + "/" + path).split("/"):
        if p == "..": parts.pop() if parts else None
        elif p not in ("", "."): parts.append(p)
    return "/".join(parts) + sep + frag


def rebase_links(md):
    "Every markdown link and image target in `md`, outside code blocks and code spans, rebased to the root."
    out, fence = [], None
    for line in md.splitlines(keepends=True):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m and (fence is None or m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence)):
            fence = None if fence else m.group(1)
            out.append(line); continue
        if fence: out.append(line); continue
        pieces = re.split(r"(`+[^`]*`+)", line)  # leave code spans alone
        out.append("".join(p if p.startswith("`") else
                           re.sub(r"(\]\()([^)\s]+)(\))", lambda m: m.group(1) + rebase_link(m.group(2)) + m.group(3), p)
                           for p in pieces))
    return "".join(out)


def _directives(src):
    lines = src.splitlines()
    d = []
    while lines and re.match(r"^\s*#\s*\|", lines[0]): d.append(re.sub(r"^\s*#\s*\|\s*", "", lines.pop(0)))
    return d, "\n".join(lines).strip("\n")


def _text_outputs(cell):
    res = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream": res.append("".join(o["text"]))
        elif "text/markdown" in o.get("data", {}): res.append(("MD", "".join(o["data"]["text/markdown"])))
        elif "text/plain" in o.get("data", {}): res.append("".join(o["data"]["text/plain"]))
    return res


def render(nb):
    "The README text for the front-page notebook `nb` (a parsed .ipynb)."
    cells = nb["cells"]
    first = _src(cells[0]) if cells else ""
    title = re.search(r"^#\s+(.+?)\s*$", first, re.M)
    summary = re.search(r"^>\s+(.+?)\s*$", first, re.M)
    rest = re.sub(r"^>\s+.+$\n?", "", re.sub(r"^#\s+.+$\n?", "", first, count=1, flags=re.M), count=1, flags=re.M)
    parts = [f"# {title.group(1) if title else 'README'}", NOTICE]
    if summary: parts.append(f"> {summary.group(1)}")
    if rest.strip(): parts.append(rebase_links(rest.strip()))
    for c in cells[1:]:
        src = _src(c)
        if c["cell_type"] == "markdown":
            if src.strip(): parts.append(rebase_links(src.strip()))
        elif c["cell_type"] == "code":
            d, code = _directives(src)
            words = {w.split(":")[0].strip() for w in d if w.strip()}
            if "hide" in words or any(re.match(r"include:\s*false", w) for w in d): continue
            if code and not any(re.match(r"echo:\s*false", w) for w in d): parts.append(f"```python\n{code}\n```")
            for o in _text_outputs(c):
                parts.append(o[1].strip() if isinstance(o, tuple) else f"```\n{o.rstrip()}\n```")
    return "\n\n".join(parts).rstrip() + "\n"


def set_block(text, name, content, prefix=""):
    """Replace what lies between the lines `<!-- name:start -->` and `<!-- name:end -->` of `text` by `content`
    (with `prefix` before the markers and every line: "# " in the py:percent twin)."""
    start, end = f"{prefix}<!-- {name}:start -->", f"{prefix}<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1: raise ValueError(f"expected one {start!r} and one {end!r}")
    head, rest = text.split(start)
    tail = rest.split(end)[1]
    body = "\n".join((prefix + l).rstrip() for l in content.strip().splitlines())
    return f"{head}{start}\n{body}\n{end}{tail}"


def set_index_block(name, content):
    "Replace a marked part of nbs/index.py, rebuild nbs/index.ipynb from it and regenerate README.md."
    py = INDEX.with_suffix(".py")
    py.write_text(set_block(py.read_text(), name, content, prefix="# "))
    bin_ = Path(sys.executable).parent
    subprocess.run([str(bin_ / "jupytext"), "--update", "--to", "ipynb", str(py), "-q"], check=True)
    subprocess.run([str(bin_ / "nbdev_clean"), "--fname", str(INDEX)], check=True, cwd=ROOT)
    README.write_text(render(json.loads(INDEX.read_text())))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when README.md is out of date")
    ap.add_argument("--set-block", nargs=2, metavar=("NAME", "FILE"), help="replace a marked part with FILE's markdown")
    a = ap.parse_args(argv)
    if a.set_block:
        set_index_block(a.set_block[0], Path(a.set_block[1]).read_text())
        print(f"README.md: {a.set_block[0]} replaced"); return 0
    new = render(json.loads(INDEX.read_text()))
    old = README.read_text() if README.exists() else ""
    if a.check:
        if new == old: print("README.md is up to date"); return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "README.md",
                                                   "README.md from nbs/index.ipynb", n=1))
        print("\nREADME.md is out of date: run `python ci/readme.py`")
        return 1
    if new != old: README.write_text(new)
    print("README.md " + ("written" if new != old else "unchanged"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
