"""Open every page of a built site in headless Chromium and list what a reader would find broken.

    python ci/site_check.py [_site] [--screenshots build/site-test]

Per page: raw LaTeX left in the text (`$$`, `\\frac`, ... outside code), KaTeX error elements, equations without
KaTeX's fonts and styles, images that did not load or have no size, internal links to a missing page or anchor,
resources fetched from anywhere but the site itself (a CDN), and a sidebar that does not list every page. Used by
tests/test_site.py; Chromium and ChromeDriver are Debian's (`apt-get install chromium chromium-driver`), driven
through Selenium.
"""
import argparse, os, subprocess, sys, tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1600"]

# Runs in the page once it has loaded (and its fonts are ready); hands back what the checks need.
PAGE_JS = r"""
const done = arguments[arguments.length - 1];
document.fonts.ready.then(() => {
  const inCode = el => el && el.closest('pre, code, script, style, .katex, .katex-error, textarea');
  const raw = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const tex = /\$\$|\\(frac|sum|prod|int|begin|end|left|right|mathrm|mathbb|mathcal|mathbf|operatorname|log|exp|tau|theta|top|hat|tfrac|cdot|text)\b|\$[^$\s][^$]*[\\_^][^$]*\$/;
  while (walk.nextNode()) {
    const n = walk.currentNode;
    if (!inCode(n.parentElement) && tex.test(n.nodeValue)) raw.push(n.nodeValue.trim().slice(0, 100));
  }
  const katex = document.querySelectorAll('.katex');
  const first = katex[0];
  done({
    title: document.title,
    raw: raw,
    katexErrors: [...document.querySelectorAll('.katex-error')].map(e => (e.title || e.textContent).slice(0, 160)),
    katexCount: katex.length,
    katexStyled: first ? getComputedStyle(first).fontFamily.includes('KaTeX') : true,
    fontErrors: [...document.fonts].filter(f => f.status === 'error').map(f => f.family),
    images: [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0
                                             && i.getBoundingClientRect().width > 0 && i.getBoundingClientRect().height > 0})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    sidebar: [...document.querySelectorAll('nav.sidebar a[data-stem]')].map(a => a.dataset.stem),
    resources: performance.getEntriesByType('resource').map(e => e.name)
               .concat([...document.querySelectorAll('script[src], link[href][rel=stylesheet]')].map(e => e.src || e.href)),
  });
});
"""


def start_browser(user_data_dir, log=None):
    "Headless Chromium under ChromeDriver (Debian's), with a fresh profile and no background network."
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must not look for drivers on the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for f in FLAGS + [f"--user-data-dir={user_data_dir}"]: opts.add_argument(f)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log) if log else subprocess.DEVNULL)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(60); driver.set_script_timeout(30)
    return driver


def _local_path(url):
    "The file a file:// URL points to (without its #fragment), or None for other URLs."
    u = urlsplit(url)
    return Path(unquote(u.path)) if u.scheme == "file" else None


def check_site(driver, site, expected=None, screenshots=None, shots=()):
    """Problems found on the pages of `site` (a folder), one string each. `expected`: the stems the sidebar must
    list (default: every page but index). `shots`: page stems to save as PNG into `screenshots`."""
    site = Path(site).resolve()
    pages = sorted(site.glob("*.html"))
    if not pages: return [f"{site}: no pages"]
    expected = sorted(expected if expected is not None else [p.stem for p in pages if p.stem != "index"])
    problems, info = [], {}
    for page in pages:
        driver.get(page.as_uri())
        r = driver.execute_async_script(PAGE_JS)
        info[page.resolve()] = r
        name = page.name
        problems += [f"{name}: raw LaTeX in the text: {t!r}" for t in r["raw"]]
        problems += [f"{name}: KaTeX error: {t}" for t in r["katexErrors"]]
        if r["katexCount"] and not r["katexStyled"]: problems.append(f"{name}: equations without KaTeX's styles")
        problems += [f"{name}: font did not load: {f}" for f in sorted(set(r["fontErrors"]))]
        problems += [f"{name}: image did not load or has no size: {i['src'][:120]}" for i in r["images"] if not i["ok"]]
        problems += [f"{name}: resource from outside the site: {u}" for u in r["resources"]
                     if not (u.startswith("file:") or u.startswith("data:"))]
        missing = [s for s in expected if s not in r["sidebar"]]
        if missing: problems.append(f"{name}: sidebar lacks {missing}")
        if screenshots and page.stem in shots:
            Path(screenshots).mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(Path(screenshots) / f"{page.stem}.png"))
    for page, r in info.items():  # links, once every page's anchors are known
        for href in r["links"]:
            target = _local_path(href)
            if target is None: continue  # the web: not this site's business
            frag = unquote(urlsplit(href).fragment)
            if not target.exists():
                problems.append(f"{page.name}: link to a missing file: {href}")
            elif frag and target.suffix == ".html":
                ids = info[target.resolve()]["ids"] if target.resolve() in info else None
                if ids is not None and frag not in ids:
                    problems.append(f"{page.name}: link to a missing anchor: {target.name}#{frag}")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", nargs="?", default="_site")
    ap.add_argument("--screenshots", help="folder for screenshots of the front page")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as profile:
        driver = start_browser(profile)
        try: problems = check_site(driver, a.site, screenshots=a.screenshots, shots=("index",))
        finally: driver.quit()
    for p in problems: print(p)
    print(f"{len(problems)} problem(s) in {a.site}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
