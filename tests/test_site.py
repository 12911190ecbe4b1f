"""The course's front page and site: README.md is generated from nbs/index.ipynb and lists every notebook; the site
(`bash ci/site.sh`) has a page per notebook that a real browser (headless Chromium) shows without raw LaTeX, KaTeX
errors, broken images or broken links; and the checker that says so fails on pages that are broken on purpose.

This file runs after tests/test_notebooks.py, whose executed copies the site renders (a notebook without a current
copy is run by the site build). Screenshots go to build/site-test/."""
import json, shutil, subprocess, sys
import pytest
from conftest import ROOT, BIN, run

sys.path.insert(0, str(ROOT / "ci"))
import site_check  # noqa: E402
from site_build import discover  # noqa: E402

OUT = ROOT / "build" / "site-test"
SITE = ROOT / "_site"


# ---------------------------------------------------------------- README and the front page

def test_readme_is_generated_from_the_index_notebook():
    r = subprocess.run([str(BIN / "python"), "ci/readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_readme_marks_the_measured_results():
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- results:start -->") == 1 and text.count("<!-- results:end -->") == 1
    assert text.index("## Measured results") < text.index("<!-- results:start -->") < text.index("<!-- results:end -->")


def test_set_block_replaces_only_the_marked_part():
    import readme
    text = "a\n<!-- results:start -->\nold\n<!-- results:end -->\nb\n"
    assert readme.set_block(text, "results", "new\n\nlines") == "a\n<!-- results:start -->\nnew\n\nlines\n<!-- results:end -->\nb\n"
    py = "# a\n# <!-- results:start -->\n# old\n# <!-- results:end -->\n"
    assert readme.set_block(py, "results", "x\n\ny", prefix="# ") == "# a\n# <!-- results:start -->\n# x\n#\n# y\n# <!-- results:end -->\n"
    with pytest.raises(ValueError): readme.set_block("no markers", "results", "x")


def test_readme_links_are_relative_to_the_root():
    import readme
    assert readme.rebase_link("06_cc.ipynb") == "nbs/06_cc.ipynb"
    assert readme.rebase_link("../data/README.md#usps") == "data/README.md#usps"
    assert readme.rebase_link("#quick-start") == "#quick-start"
    assert readme.rebase_link("https://example.org/a.md") == "https://example.org/a.md"
    assert readme.rebase_links("see [x](06_cc.ipynb), `[y](z.ipynb)`\n```\n[q](r.md)\n```\n") == \
        "see [x](nbs/06_cc.ipynb), `[y](z.ipynb)`\n```\n[q](r.md)\n```\n"


def test_the_index_lists_every_notebook():
    "The chapter map on the front page names each notebook of nbs/ once, and no notebook that is not there."
    import re
    src = "".join("".join(c["source"]) for c in json.loads((ROOT / "nbs/index.ipynb").read_text())["cells"])
    linked = re.findall(r"\]\(([\w.-]+)\.ipynb\)", src)
    pages = [p["stem"] for p in discover() if p["kind"] != "index"]
    assert not sorted(set(pages) - set(linked)), f"add these notebooks to the chapter map in nbs/index.py: {sorted(set(pages) - set(linked))}"
    assert not sorted(set(linked) - set(pages)), f"nbs/index.py links to notebooks that do not exist: {sorted(set(linked) - set(pages))}"


# ---------------------------------------------------------------- the browser

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("selenium", reason="selenium is not installed: run `bash ci/setup.sh`")
    missing = [str(p) for p in (site_check.CHROMIUM, site_check.CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"no browser for the site tests: {', '.join(missing)} missing (as root, `bash ci/setup.sh` "
                    "installs Debian's chromium and chromium-driver; it could not here)")
    OUT.mkdir(parents=True, exist_ok=True)
    driver = site_check.start_browser(tmp_path_factory.mktemp("chromium-profile"), log=OUT / "chromedriver.log")
    yield driver
    driver.quit()


def _page(title, body, stems=("a", "b")):
    "A page shaped like the site's: a sidebar listing `stems`, then `body`."
    side = "".join(f'<a href="{s}.html" data-stem="{s}">{s}</a>' for s in stems)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>'
            f'<link rel="stylesheet" href="assets/katex/katex.min.css"></head>'
            f'<body><nav class="sidebar"><a href="index.html">home</a>{side}</nav><main>{body}</main></body></html>')


@pytest.fixture(scope="module")
def katex_html():
    "One equation rendered by the site's KaTeX, and its stylesheet and fonts, for synthetic pages."
    import site_build as builder
    if not (ROOT / "ci/site/node_modules/katex").exists(): pytest.skip("KaTeX not installed (npm ci --prefix ci/site)")
    k = builder.KaTeX()
    try: return k(r"\frac{a}{b}", True)["html"]
    finally: k.close()


def _synthetic(folder, pages):
    folder.mkdir(parents=True, exist_ok=True)
    dist = ROOT / "ci/site/node_modules/katex/dist"
    (folder / "assets/katex").mkdir(parents=True, exist_ok=True)
    shutil.copy2(dist / "katex.min.css", folder / "assets/katex/katex.min.css")
    shutil.copytree(dist / "fonts", folder / "assets/katex/fonts", dirs_exist_ok=True)
    # a real 4x3 PNG (drawn by matplotlib's writer)
    import matplotlib.image as mpimg, numpy as np
    mpimg.imsave(folder / "fig.png", np.ones((3, 4, 3)))
    for name, html in pages.items(): (folder / name).write_text(html)
    return folder


def test_checker_passes_a_good_page_and_fails_each_broken_one(browser, tmp_path, katex_html):
    good = _page("good", f'<p>Ratio {katex_html}</p><img src="fig.png" alt="f"><a href="b.html#there">b</a>'
                         f'<pre>$$ \\frac in code is fine $$</pre>')
    site = _synthetic(tmp_path / "good", {"index.html": good, "a.html": good,
                                          "b.html": _page("b", '<h2 id="there">there</h2>')})
    assert site_check.check_site(browser, site) == []

    broken = {
        "raw.html": _page("raw", "<p>The loss $$\\frac{1}{N}\\sum_i \\ell_i$$ was not typeset.</p>"),
        "raw_inline.html": _page("raw_inline", "<p>with $z_i^\\top z_j$ left as text</p>"),
        "katex_error.html": _page("err", '<span class="katex-error" title="ParseError: KaTeX parse error">\\frac{a}{</span>'),
        "image.html": _page("img", '<img src="figures/missing.png" alt="gone">'),
        "empty_image.html": _page("empty", '<img src="fig.png" alt="f" style="width:0;height:0">'),
        "link.html": _page("link", '<a href="missing.html">gone</a>'),
        "anchor.html": _page("anchor", '<a href="b.html#nowhere">gone</a>'),
        "sidebar.html": _page("side", "<p>ok</p>", stems=("a",)),
        "cdn.html": _page("cdn", '<script src="https://cdn.example.invalid/katex.js"></script>'),
    }
    site = _synthetic(tmp_path / "bad", {"index.html": good, "a.html": good,
                                         "b.html": _page("b", '<h2 id="there">there</h2>'), **broken})
    problems = site_check.check_site(browser, site, expected=["a", "b"])
    for page, words in [("raw.html", "raw LaTeX"), ("raw_inline.html", "raw LaTeX"), ("katex_error.html", "KaTeX error"),
                        ("image.html", "image did not load"), ("empty_image.html", "image did not load"),
                        ("link.html", "missing file"), ("anchor.html", "missing anchor"),
                        ("sidebar.html", "sidebar lacks ['b']"), ("cdn.html", "outside the site")]:
        assert any(p.startswith(page) and words in p for p in problems), (page, words, problems)
    assert not any(p.startswith(("index.html", "a.html", "b.html")) for p in problems), problems


def test_builder_output_with_a_broken_equation_or_image_fails_the_checks(browser, tmp_path):
    "A notebook with a broken equation and a missing image, built by ci/site_build.py: the build and the checker say so."
    if not (ROOT / "ci/site/node_modules/katex").exists(): pytest.skip("KaTeX not installed (npm ci --prefix ci/site)")
    import nbformat
    nbs = tmp_path / "nbs"; nbs.mkdir()
    def nb(name, *cells):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(c) for c in cells]), nbs / name)
    nb("index.ipynb", "# Toy course\n> A front page", "Chapters: [01_good](01_good.ipynb), [01_bad](01_bad.ipynb)")
    nb("01_good.ipynb", "# Good\n> fine", "An equation $$\\frac{a}{b}$$ and $x_i^\\top y$ inline.")
    nb("02_bad.ipynb", "# Bad\n> broken on purpose", "A broken equation $$\\frac{a}{$$", "![gone](missing.png)")
    out = tmp_path / "site"
    r = subprocess.run([str(BIN / "python"), "ci/site_build.py", "--nbs", str(nbs), "--out", str(out), "--no-execute"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "02_bad: equation does not parse" in r.stderr, r.stdout + r.stderr
    problems = site_check.check_site(browser, out, expected=["01_good", "02_bad"])
    assert any(p.startswith("02_bad.html: KaTeX error") for p in problems), problems
    assert any(p.startswith("02_bad.html: image did not load") for p in problems), problems
    assert any(p.startswith("index.html: link to a missing file") and "01_bad" in p for p in problems), problems
    assert not any(p.startswith("01_good.html") for p in problems), problems


# ---------------------------------------------------------------- the course site

@pytest.fixture(scope="module")
def site():
    """The whole site, built from the executed copies the notebook tests left (a notebook without one is run now).
    --keep-stale: a copy made from an older package is shown rather than run again; the notebook tests are the ones
    that run the notebooks, and in CI every copy is current. --allow-errors: a failing notebook fails its own test."""
    if not (ROOT / "ci/site/node_modules/katex").exists() and not shutil.which("npm"):
        pytest.skip("npm not found: KaTeX cannot be installed, the site cannot be built")
    r = run(["bash", "ci/site.sh", "--keep-stale", "--allow-errors", "--out", str(SITE)], timeout=1800)
    (OUT).mkdir(parents=True, exist_ok=True)
    (OUT / "build.log").write_text(r.stdout + r.stderr)
    return SITE


def test_site_has_a_page_per_notebook(site):
    pages = discover()
    assert sorted(p.name for p in site.glob("*.html")) == sorted(p["href"] for p in pages)
    assert (site / "index.html").exists()


def test_site_pages_in_a_browser(site, browser):
    "Every page: no raw LaTeX, no KaTeX error, images loaded, internal links resolved, every chapter in the sidebar."
    pages = discover()
    chapters = [p for p in pages if p["kind"] in ("chapter", "appendix")]
    # the derivation chapter to photograph: the one with the most equations
    derivation = max(chapters, key=lambda p: (site / p["href"]).read_text().count('class="katex"'))["stem"]
    problems = site_check.check_site(browser, site, expected=[p["stem"] for p in pages if p["kind"] != "index"],
                                     screenshots=OUT, shots=("index", derivation))
    assert (OUT / "index.png").exists() and (OUT / f"{derivation}.png").exists()
    assert not problems, f"{len(problems)} problem(s) on the site:\n" + "\n".join(problems[:60])


def test_site_shows_outputs_and_api_entries(site):
    "The executed outputs and the show_doc entries reach the pages (a chapter with figures has <img> tags)."
    html = {p.stem: p.read_text() for p in site.glob("*.html")}
    chapters = [p["stem"] for p in discover() if p["kind"] == "chapter"]
    assert sum('class="output_png' in html[c] for c in chapters) >= len(chapters) // 2, "few chapters show figures"
    assert sum('class="output_markdown' in html[c] for c in chapters) >= len(chapters) // 2, "few show_doc entries"
    assert all("Outputs from the test run" in html[c] or "stopped with an error" in html[c] for c in chapters)
