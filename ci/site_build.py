"""Build the course site: one static HTML page per notebook with its outputs, a chapter sidebar, previous/next links
and every equation typeset by KaTeX when the site is built (no script and no network needed to read it).

    bash ci/site.sh                      # the whole site -> _site/index.html (installs KaTeX from npm when missing)
    python ci/site_build.py [--out _site] [--only 01_metrics 06_cc] [--no-execute | --keep-stale] [--allow-errors]

Outputs come from the executed copies that the notebook tests leave in build/executed/ (`ci/execute.py`, nbdev's
test semantics: IN_TEST=1, cells flagged `slow`/`gpu` and `#| eval: false` cells skipped). A chapter or appendix
whose copy is missing or no longer matches its notebook (or the package) is executed first; `--no-execute` renders
it without outputs instead, `--keep-stale` renders an out-of-date copy with a note (quick previews while editing). The front page (index) and the run notebooks (train, report, ...) are shown as written:
their outputs come from a papermill run. Pages are rendered by nbconvert with the template in ci/site/templates;
markdown (cells and `show_doc` entries) by markdown-it-py, equations by KaTeX (ci/site/katex_render.js).
Exits 1 when a notebook failed to run or an equation did not parse (the pages are written all the same);
`--allow-errors` exits 0 after listing them.
"""
import argparse, html, json, re, shutil, subprocess, sys, time
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
SITE_DIR = Path(__file__).resolve().parent / "site"
sys.path.insert(0, str(ROOT / "ci"))
from execute import EXECUTED, SITE_KEY, is_current, package_hash, source_hash  # noqa: E402

KINDS = {"index": "Start", "chapter": "Course", "appendix": "Appendices", "run": "Run notebooks"}
RUN_ORDER = ("train", "report", "results")  # the papermill entry points, in the order a run uses them


# ---------------------------------------------------------------- the pages

def kind_of(stem):
    "index, chapter (01_...), appendix (A...) or run (a papermill entry point: every other notebook)."
    if stem == "index": return "index"
    if stem[:1].isdigit(): return "chapter"
    if stem.startswith("A"): return "appendix"
    return "run"


def title_and_summary(nb):
    "The `# Title` and `> summary` of a notebook's first cell (nbdev's front matter)."
    src = "".join(nb["cells"][0]["source"]) if nb["cells"] else ""
    t = re.search(r"^#\s+(.+?)\s*$", src, re.M)
    s = re.search(r"^>\s+(.+?)\s*$", src, re.M)
    return (t.group(1) if t else None), (s.group(1) if s else "")


def discover(nbs=NBS):
    "Every notebook of the course in reading order: index, chapters, appendices, run notebooks."
    def key(p):
        k = kind_of(p.stem)
        rank = RUN_ORDER.index(p.stem) if p.stem in RUN_ORDER else len(RUN_ORDER)
        return list(KINDS).index(k), rank if k == "run" else 0, p.stem
    paths = [p for p in nbs.glob("*.ipynb") if not p.name.startswith(("_", "."))]
    pages = []
    for p in sorted(paths, key=key):
        nb = json.loads(p.read_text())
        title, summary = title_and_summary(nb)
        pages.append(dict(stem=p.stem, path=p, kind=kind_of(p.stem), title=title or p.stem, summary=summary,
                          href=f"{p.stem}.html"))
    return pages


def number_of(page):
    "The chapter or appendix number shown in the sidebar (01, A1, ...), or ''."
    m = re.match(r"^(\d+|A\d*)_", page["stem"])
    return m.group(1) if m and page["kind"] in ("chapter", "appendix") else ""


# ---------------------------------------------------------------- equations and markdown

class KaTeX:
    "A KaTeX process (node) that typesets one equation per request; equations seen before are not sent again."
    def __init__(self):
        script = SITE_DIR / "katex_render.js"
        if not (SITE_DIR / "node_modules" / "katex").exists():
            sys.exit("KaTeX is not installed: run `npm ci --prefix ci/site` (bash ci/site.sh does it)")
        self.proc = subprocess.Popen(["node", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, encoding="utf-8", bufsize=1)
        self.cache = {}

    def __call__(self, tex, display):
        key = (tex, display)
        if key not in self.cache:
            self.proc.stdin.write(json.dumps({"tex": tex, "display": display}) + "\n")
            self.proc.stdin.flush()
            self.cache[key] = json.loads(self.proc.stdout.readline())
        return self.cache[key]

    def close(self):
        self.proc.stdin.close(); self.proc.wait(timeout=30)


def slugify(text):
    "A heading's anchor: lower case, words joined by '-' (GitHub's rule, so links work on the code host too)."
    text = re.sub(r"<[^>]+>", "", html.unescape(text)).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-") or "section"


def highlight(code, lang, attrs):
    "A fenced block of a markdown cell, coloured by Pygments like the code cells."
    from pygments import highlight as pyg
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound
    try: lexer = get_lexer_by_name(lang or "text")
    except ClassNotFound: lexer = get_lexer_by_name("text")
    return f'<pre class="highlight"><code>{pyg(code, lexer, HtmlFormatter(nowrap=True))}</code></pre>'


class Markdown:
    """Notebook markdown to HTML: CommonMark with tables, `$…$`/`$$…$$` typeset by KaTeX, the `{attr=…}` that
    nbdev's `show_doc` writes after its source link, heading anchors, and links to notebooks turned into links
    to their pages (links to other files of the repository go to the code host)."""
    def __init__(self, katex, stems, repo_url, nbs=NBS):
        from markdown_it import MarkdownIt
        from mdit_py_plugins.attrs import attrs_plugin
        from mdit_py_plugins.dollarmath import dollarmath_plugin
        self.katex, self.stems, self.repo_url, self.nbs = katex, set(stems), repo_url, Path(nbs)
        self.md = (MarkdownIt("commonmark", {"html": True, "highlight": highlight}).enable(["table", "strikethrough"])
                   .use(dollarmath_plugin, allow_labels=False, double_inline=True, renderer=self.math)
                   .use(attrs_plugin))
        self.md.core.ruler.push("site_ids_links", self._ids_links)
        self.start_page("")
        self.problems = []

    def start_page(self, stem):
        "Anchors are unique on a page; equation errors are reported with the page's name."
        self.page, self.ids = stem, set()

    def math(self, tex, opts):
        display = bool(opts.get("display_mode"))
        r = self.katex(tex, display)
        if r["error"]: self.problems.append(f"{self.page}: equation does not parse: {r['error']}")
        return f'<div class="math-display">{r["html"]}</div>' if display else r["html"]

    def link(self, href):
        "Where a link in a notebook should point on the site."
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", href, re.I): return href
        path, _, frag = href.partition("#")
        p = Path(path)
        if p.suffix == ".ipynb" and p.stem in self.stems and len(p.parts) == 1:
            return f"{p.stem}.html" + (f"#{frag}" if frag else "")
        target = (self.nbs / path).resolve()
        if target.is_relative_to(ROOT) and target.exists():  # another file of the repository
            return f"{self.repo_url}/{target.relative_to(ROOT).as_posix()}" + (f"#{frag}" if frag else "")
        return href

    def _ids_links(self, state):
        for i, tok in enumerate(state.tokens):
            if tok.type == "heading_open" and not tok.attrGet("id"):
                slug = base = slugify(state.tokens[i + 1].content)
                n = 1
                while slug in self.ids: slug, n = f"{base}-{n}", n + 1
                self.ids.add(slug); tok.attrSet("id", slug)
            for child in tok.children or []:
                if child.type == "link_open": child.attrSet("href", self.link(child.attrGet("href") or ""))

    def inline(self, text):
        "One line of markdown (a title) as inline HTML."
        return self.md.renderInline(text)

    def __call__(self, source):
        return self.md.render("".join(source) if isinstance(source, list) else source or "")


# ---------------------------------------------------------------- cells

def directives(src):
    "The `#| key: value` lines at the top of a code cell, and the code without them."
    d, lines = {}, src.splitlines()
    while lines and re.match(r"^\s*#\s*\|", lines[0]):
        words = re.sub(r"^\s*#\s*\|\s*", "", lines.pop(0)).split()
        if not words: continue
        if words[0].endswith(":"): d[words[0][:-1]] = " ".join(words[1:])
        elif ":" in words[0]: k, _, v = words[0].partition(":"); d[k] = " ".join([v] + words[1:]).strip()
        else: d[words[0]] = " ".join(words[1:])
    return d, "\n".join(lines).strip("\n")


def prepare(nb, page):
    """What a reader sees of each cell (nbdev's and Quarto's rules): `hide` and `include: false` cells and the
    export cell are left out, `echo: false` and `show_doc` cells show only their output, `output: false` cells only
    their code; directive lines are removed; cells the test run skipped carry a note saying why."""
    from copy import deepcopy
    from nbformat import from_dict
    from nbformat.v4.rwbase import rejoin_lines
    nb = rejoin_lines(from_dict(deepcopy(nb)))  # multi-line strings stored as lists of lines -> strings
    cells = []
    for i, c in enumerate(nb["cells"]):
        c = dict(c)
        src = "".join(c.get("source", ""))
        if i == 0 and c["cell_type"] == "markdown":  # the title and summary are the page header
            src = re.sub(r"^#\s+.+$\n?", "", src, count=1, flags=re.M)
            src = re.sub(r"^>\s+.+$\n?", "", src, count=1, flags=re.M).strip()
            if not src: continue
        if c["cell_type"] == "code":
            d, code = directives(src)
            if "hide" in d or d.get("include") == "false" or "nbdev_export" + "(" in code: continue
            if d.get("echo") == "false" or re.search(r"^show_doc\b", code, re.M): code = ""
            if d.get("output") == "false": c["outputs"] = []
            if not code and not c.get("outputs"): continue
            if not code: c.setdefault("metadata", {})["transient"] = {"remove_source": True}
            src = code
            meta = dict(c.get("metadata", {}))
            meta["site_skipped"] = meta.get(SITE_KEY, {}).get("skipped", "")
            for o in c.get("outputs", []):  # alternative text for figures
                for mime in ("image/png", "image/jpeg", "image/svg+xml"):
                    if mime in o.get("data", {}):
                        o.setdefault("metadata", {}).setdefault(mime, {}).setdefault("alt", f"figure from {page['stem']}")
            c["metadata"] = meta
        c["source"] = src
        cells.append(c)
    return from_dict({**nb, "cells": cells})


# ---------------------------------------------------------------- the site

def repo_url():
    cfg = ConfigParser(); cfg.read(ROOT / "settings.ini")
    d = cfg["DEFAULT"]
    return f"{d.get('git_url', '').rstrip('/')}/blob/{d.get('branch', 'main')}"


def executed_copies(pages, execute=True, keep_stale=False):
    """The notebook to render for each page: its executed copy, run now when missing or out of date (with
    `keep_stale`, only when missing: an out-of-date copy is shown with a note)."""
    runnable = [p for p in pages if p["kind"] in ("chapter", "appendix")]
    pkg = package_hash()
    copy = lambda p: EXECUTED / p["path"].name
    todo = [p for p in runnable if not (copy(p).exists() if keep_stale else is_current(copy(p), p["path"], pkg))]
    if todo and execute:
        print(f"executing {len(todo)} notebook(s) without a current executed copy: "
              + " ".join(p["stem"] for p in todo), flush=True)
        for p in todo:  # one process per notebook, as nbdev_test runs them
            t = time.time()
            subprocess.run([sys.executable, str(ROOT / "ci" / "execute.py"), str(p["path"])], cwd=ROOT)
            print(f"  {p['stem']}: {time.time() - t:.1f} s", flush=True)
    pkg = package_hash()  # again: what the copies just written recorded
    for p in pages:
        if p["kind"] in ("chapter", "appendix") and copy(p).exists():
            current = is_current(copy(p), p["path"], pkg)
            if current or keep_stale:
                p["nb"] = json.loads(copy(p).read_text())
                meta = p["nb"]["metadata"].get(SITE_KEY, {})
                stale = "" if current else "source" if meta.get("source_sha256") != source_hash(p["path"]) else "package"
                p["run"] = dict(meta, stale=stale)
                continue
        p["nb"] = json.loads(p["path"].read_text())
        p["run"] = {"status": "not run"} if p["kind"] in ("chapter", "appendix") else {}


def copy_assets(out):
    from pygments.formatters import HtmlFormatter
    assets = out / "assets"
    (assets / "katex").mkdir(parents=True, exist_ok=True)
    shutil.copy2(SITE_DIR / "style.css", assets / "style.css")
    (assets / "pygments.css").write_text(HtmlFormatter(style="default").get_style_defs(".highlight"))
    dist = SITE_DIR / "node_modules" / "katex" / "dist"
    shutil.copy2(dist / "katex.min.css", assets / "katex" / "katex.min.css")
    shutil.copytree(dist / "fonts", assets / "katex" / "fonts", dirs_exist_ok=True)


def build(out, only=None, execute=True, nbs=NBS, keep_stale=False):
    "Write the site into `out`; return the list of problems (failed notebooks, equations that do not parse)."
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExtractOutputPreprocessor
    t0 = time.time()
    pages = discover(nbs)
    if only: pages = [p for p in pages if p["stem"] in only or p["kind"] == "index"]
    executed_copies(pages, execute, keep_stale)
    out = Path(out)
    if out.exists(): shutil.rmtree(out)
    (out / "figures").mkdir(parents=True)
    copy_assets(out)
    katex = KaTeX()
    md = Markdown(katex, [p["stem"] for p in pages], repo_url(), nbs)
    exporter = HTMLExporter(template_name="classic", template_file="page.html.j2",
                            extra_template_paths=[str(SITE_DIR / "templates")],
                            exclude_input_prompt=True, exclude_output_prompt=True,
                            filters={"markdown2html": md}, anchor_link_text="")
    exporter.register_preprocessor(ExtractOutputPreprocessor(), enabled=True)
    problems = []
    def nav_entry(p):
        "A page as the sidebar and the page header show it; an appendix drops its 'Appendix:' (its group says it)."
        short = re.sub(r"^Appendix:\s*", "", p["title"]) if p["kind"] == "appendix" else p["title"]
        return dict(stem=p["stem"], kind=p["kind"], href=p["href"], number=number_of(p), text=p["title"],
                    title=md.inline(p["title"]), short=md.inline(short))
    nav = [nav_entry(p) for p in pages]
    for i, p in enumerate(pages):
        md.start_page(p["stem"])
        nb = prepare(p["nb"], p)
        status = p["run"].get("status", "")
        if status == "error": problems.append(f"{p['stem']}: the notebook stopped with an error (see its page)")
        site = dict(page=nav[i], pages=nav, groups=[(k, v) for k, v in KINDS.items() if k != "index"],
                    summary=md(p["summary"]).strip(), run=p["run"], status=status,
                    prev=nav[i - 1] if i > 0 else None, next=nav[i + 1] if i + 1 < len(nav) else None,
                    source=f"{repo_url()}/nbs/{p['path'].name}", site_title=pages[0]["title"])
        body, res = exporter.from_notebook_node(nb, resources={"unique_key": p["stem"], "output_files_dir": "figures",
                                                               "site": site})
        (out / p["href"]).write_text(body)
        for name, data in res.get("outputs", {}).items(): (out / name).write_bytes(data)
    katex.close()
    problems += md.problems
    n_fig = len(list((out / "figures").iterdir()))
    print(f"wrote {len(pages)} pages and {n_fig} figures to {out} in {time.time() - t0:.1f} s")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "_site"), help="output folder (replaced)")
    ap.add_argument("--only", nargs="*", help="build only these notebooks (stems) and the front page")
    ap.add_argument("--no-execute", action="store_true", help="render notebooks without a current executed copy as written")
    ap.add_argument("--keep-stale", action="store_true",
                    help="render out-of-date executed copies (with a note) instead of running those notebooks again")
    ap.add_argument("--nbs", default=str(NBS), help="folder of the notebooks (tests build small sites from their own)")
    ap.add_argument("--allow-errors", action="store_true", help="exit 0 even when a notebook failed or an equation did not parse")
    a = ap.parse_args(argv)
    problems = build(a.out, a.only, execute=not a.no_execute, nbs=Path(a.nbs), keep_stale=a.keep_stale)
    for p in problems: print("problem:", p, file=sys.stderr)
    return 1 if problems and not a.allow_errors else 0


if __name__ == "__main__":
    sys.exit(main())
