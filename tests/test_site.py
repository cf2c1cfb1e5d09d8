"""The built site as a reader sees it: every page opened in headless Chromium (driven by
Playwright) from a server on 127.0.0.1, with every request to any other host blocked, so the
site must be complete without a network.

Checked on every page: no console errors and no failed requests, typeset math (MathJax output,
no raw ``\\(`` left), figures that load, widgets rendered from their saved state, internal links
that resolve; on notebook pages the launch buttons (Colab, download .ipynb, Binder and JupyterHub
where ``_config.yml`` sets them); and search finds "convolution". Screenshots of three pages go to
``_build/screenshots/``.

On a phone (390 px): the navigation drawer and the page contents open from their buttons (and the
sidebar collapses on a desktop), no page scrolls sideways, wide figures stay legible, display math
scrolls inside its box. Search ranks chapter sections above API entries, lists each page once, and
shows snippets without raw LaTeX or tables of contents. Their screenshots (``phone_*.png``,
``search_dropout.png``) go to ``_build/screenshots/`` too.

Chromium is Debian's package (``/usr/bin/chromium``), installed by the set-up (``make browser``,
which .ci/run runs before ``make test``), never by a test; Playwright (from PyPI) drives it and
downloads no browser of its own.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
SCREENSHOTS = BUILD / "screenshots"
# Flags for a headless Chromium on a machine without network: no background connections
# (component updates, sync, ...), no sandbox (the tests may run as root), no GPU.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--disable-default-apps", "--disable-extensions"]
# Three pages to look at: the landing page, a chapter with math and figures, search results.
SCREENSHOT_PAGES = {"index.png": "book/index.html", "02_perceptron.png": "book/02_perceptron.html",
                    "search_convolution.png": "search.html?q=convolution"}

pytestmark = pytest.mark.slow


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's Chromium. The tests install nothing: `make browser` (run by .ci/run
    before `make test`) installs the package."""
    path = find_chromium()
    if path is None:
        pytest.fail("the browser tests need Chromium, which is not on PATH: run `make browser` (it installs "
                    "Debian's package with apt-get, as root), or put a chromium executable on PATH")
    return path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def site(build) -> str:
    """The built site served on 127.0.0.1 (a free port), for as long as the session lasts."""
    # A warning fails test_book.py; the pages written despite it (--keep-going) are still checked here.
    if not (HTML / "book" / "index.html").is_file():
        pytest.fail(f"the book build wrote no site (exit {build.returncode}):\n{(build.stdout + build.stderr)[-3000:]}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@dataclass
class Visit:
    """What one page showed in the browser."""

    errors: list[str] = field(default_factory=list)    # console errors and uncaught exceptions
    failed: list[str] = field(default_factory=list)    # requests that failed, were blocked or got >= 400
    math: dict = field(default_factory=dict)
    broken_images: list[str] = field(default_factory=list)
    widgets: dict = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    buttons: dict = field(default_factory=dict)


def pages() -> list[str]:
    """Every HTML page of the site, relative to its root."""
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                  if not {"_static", "_sources", "_images"} & set(p.relative_to(HTML).parts))


WAIT_FOR_MATH = """async () => {
    if (!document.querySelector('.math')) return {has_math: false};
    const t0 = Date.now();
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
        if (Date.now() - t0 > 60000) return {has_math: true, loaded: false};
        await new Promise(r => setTimeout(r, 100));
    }
    await MathJax.startup.promise;
    const maths = Array.from(document.querySelectorAll('.math'));
    const raw = maths.filter(e => !e.querySelector('mjx-container') || /\\\\[(\\[]|\\$\\$/.test(e.textContent));
    return {has_math: true, loaded: true, count: maths.length,
            typeset: document.querySelectorAll('mjx-container').length,
            raw: raw.slice(0, 5).map(e => e.textContent.slice(0, 80))};
}"""

WAIT_FOR_IMAGES = """async () => {
    const imgs = Array.from(document.images);
    imgs.forEach(i => { i.loading = 'eager'; });
    await Promise.all(imgs.map(i => i.decode().catch(() => null)));
    return imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'));
}"""

WAIT_FOR_WIDGETS = """async () => {
    const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length;
    if (!views) return {views: 0};
    const t0 = Date.now();
    while (!document.querySelector('.jupyter-widgets') && Date.now() - t0 < 30000) {
        await new Promise(r => setTimeout(r, 100));
    }
    return {views: views, rendered: document.querySelectorAll('.jupyter-widgets').length};
}"""

LINKS_AND_BUTTONS = """() => ({
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    colab: Array.from(document.querySelectorAll('a[href*="colab.research.google.com"]')).map(a => a.href),
    binder: Array.from(document.querySelectorAll('a.btn-launch-binder, a[href*="/v2/gh/"]')).map(a => a.href),
    jupyterhub: Array.from(document.querySelectorAll('a[href*="hub/user-redirect/git-pull"]')).map(a => a.href),
    download: Array.from(document.querySelectorAll('a.btn-download-source-button')).map(a => a.href),
})"""


@pytest.fixture(scope="session")
def crawl(site, browser) -> dict[str, Visit]:
    """Open every page once; the tests below read what each one showed."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    host = urllib.parse.urlsplit(site).netloc
    blocked: list[str] = []

    def offline(route):
        # The site must not need the network: anything not served by our server fails the page.
        if urllib.parse.urlsplit(route.request.url).netloc == host:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", offline)
    visits: dict[str, Visit] = {}
    start = time.perf_counter()
    for rel in pages():
        visit = visits[rel] = Visit()
        redirect = re.search(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', (HTML / rel).read_text(encoding="utf-8"))
        if redirect:  # Jupyter Book's index.html, a redirect to the root page: check where it points
            visit.links = [urllib.parse.urljoin(site + rel, redirect.group(1))]
            continue
        page = context.new_page()
        page.on("console", lambda m, v=visit: v.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e, v=visit: v.errors.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r, v=visit: v.failed.append(f"{r.url} ({r.failure})"))
        page.on("response", lambda r, v=visit: v.failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
        page.goto(site + rel, wait_until="load", timeout=120_000)
        visit.math = page.evaluate(WAIT_FOR_MATH)
        visit.broken_images = page.evaluate(WAIT_FOR_IMAGES)
        visit.widgets = page.evaluate(WAIT_FOR_WIDGETS)
        found = page.evaluate(LINKS_AND_BUTTONS)
        visit.links, visit.buttons = found.pop("links"), found
        page.close()
    crawl_seconds = time.perf_counter() - start

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, rel in SCREENSHOT_PAGES.items():
        page = context.new_page()
        page.goto(site + rel, wait_until="load", timeout=120_000)
        page.evaluate(WAIT_FOR_MATH)
        if rel.startswith("search.html"):
            page.wait_for_selector("ul.search li", timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / name))
        page.close()
    context.close()
    elapsed = time.perf_counter() - start
    summary = {"pages": len(visits), "crawl_seconds": round(crawl_seconds, 1), "with_screenshots_seconds": round(elapsed, 1),
               "blocked_requests": sorted(set(blocked)), "screenshots": sorted(SCREENSHOT_PAGES)}
    (BUILD / "site_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nbrowser: {len(visits)} pages in {crawl_seconds:.1f} s ({elapsed:.1f} s with screenshots); "
          f"screenshots in {SCREENSHOTS.relative_to(ROOT)}: {', '.join(SCREENSHOT_PAGES)}")
    return visits


def report(problems: dict[str, list]) -> str:
    return "\n".join(f"  {page}: {items[:5]}" for page, items in problems.items())


def test_site_has_the_pages_of_the_toc(crawl):
    assert "book/index.html" in crawl and "search.html" in crawl
    assert any(p.startswith("book/api/") for p in crawl), "no API reference pages"
    assert len(crawl) >= 10, sorted(crawl)


def test_every_page_loads_without_console_errors_or_failed_requests(crawl):
    problems = {p: v.errors + v.failed for p, v in crawl.items() if v.errors or v.failed}
    assert not problems, "pages with console errors or failed (or off-site) requests:\n" + report(problems)


def test_math_is_typeset_on_every_page_with_math(crawl):
    with_math = {p: v.math for p, v in crawl.items() if v.math.get("has_math")}
    assert "book/02_perceptron.html" in with_math, "chapter 2 has no math markup"
    problems = {p: [m] for p, m in with_math.items() if not m.get("loaded") or m.get("raw") or not m.get("typeset")}
    assert not problems, "math not typeset by MathJax:\n" + report(problems)


def test_every_figure_loads(crawl):
    problems = {p: v.broken_images for p, v in crawl.items() if v.broken_images}
    assert not problems, "images that did not load (naturalWidth 0):\n" + report(problems)
    assert any(v.broken_images == [] for v in crawl.values())


def test_widgets_render_from_their_saved_state(crawl):
    problems = {p: [v.widgets] for p, v in crawl.items() if v.widgets.get("views") and not v.widgets.get("rendered")}
    assert not problems, "widget views that the HTML manager did not render:\n" + report(problems)


def test_every_internal_link_resolves(crawl, site):
    ids: dict[Path, str] = {}
    problems: dict[str, list] = {}
    for rel, visit in crawl.items():
        for href in dict.fromkeys(visit.links):
            url = urllib.parse.urlsplit(href)
            if not href.startswith(site):
                continue
            target = HTML / urllib.parse.unquote(url.path[1:])
            if url.path.endswith("/"):
                target = target / "index.html"
            if not target.is_file():
                problems.setdefault(rel, []).append(f"{href}: no such file")
            elif url.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = target.read_text(encoding="utf-8")
                frag = urllib.parse.unquote(url.fragment)
                if f'id="{frag}"' not in ids[target] and f'name="{frag}"' not in ids[target]:
                    problems.setdefault(rel, []).append(f"{href}: no element with id {frag!r}")
    assert not problems, "internal links that do not resolve:\n" + report(problems)


def notebook_pages() -> dict[str, str]:
    """``page.html -> path of its notebook in the repository`` for every page built from a notebook."""
    sources = HTML / "_sources"
    return {p.relative_to(sources).with_suffix(".html").as_posix(): p.relative_to(sources).as_posix()
            for p in sources.rglob("*.ipynb")}


def test_launch_and_download_buttons_point_at_the_notebook(crawl, site):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo, branch = config["repository"]["url"].rstrip("/"), config["repository"]["branch"]
    org_repo = urllib.parse.urlsplit(repo).path.strip("/")
    launch = config.get("launch_buttons", {})
    nb_pages = notebook_pages()
    assert any(p.startswith("book/") for p in nb_pages) and any(p.startswith("labs/") for p in nb_pages)
    problems: dict[str, list] = {}
    for page, notebook in nb_pages.items():
        buttons, wrong = crawl[page].buttons, []
        colab = f"{launch['colab_url'].rstrip('/')}/github/{org_repo}/blob/{branch}/{notebook}"
        if buttons["colab"] != [colab]:
            wrong.append(f"Colab: expected [{colab}], got {buttons['colab']}")
        download = site + "_sources/" + notebook
        if buttons["download"] != [download]:
            wrong.append(f"download: expected [{download}], got {buttons['download']}")
        elif "cells" not in json.loads((HTML / "_sources" / notebook).read_text(encoding="utf-8")):
            wrong.append(f"download: {download} is not a notebook")
        if launch.get("binderhub_url"):
            binder = f"{launch['binderhub_url'].rstrip('/')}/v2/gh/{org_repo}/{branch}?urlpath="
            if len(buttons["binder"]) != 1 or not buttons["binder"][0].startswith(binder) or notebook not in buttons["binder"][0]:
                wrong.append(f"Binder: expected {binder}...{notebook}, got {buttons['binder']}")
        if launch.get("jupyterhub_url"):
            if len(buttons["jupyterhub"]) != 1 or urllib.parse.quote(notebook, safe="") not in buttons["jupyterhub"][0] \
                    and notebook not in buttons["jupyterhub"][0]:
                wrong.append(f"JupyterHub: expected a link to {notebook}, got {buttons['jupyterhub']}")
        if wrong:
            problems[page] = wrong
    assert not problems, "launch buttons that do not point at the page's notebook:\n" + report(problems)


def test_search_finds_convolution_offline(site, browser):
    context = browser.new_context()
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(site) else route.abort())
    page = context.new_page()
    page.goto(site + "search.html?q=convolution", wait_until="load", timeout=120_000)
    page.wait_for_selector("ul.search li", timeout=60_000)
    results = page.eval_on_selector_all("ul.search li a", "links => links.map(a => a.getAttribute('href'))")
    context.close()
    assert any("06_convolution" in r for r in results), f"search for 'convolution' did not find chapter 6: {results[:10]}"


def test_screenshots_were_written(crawl):
    for name in SCREENSHOT_PAGES:
        shot = SCREENSHOTS / name
        assert shot.is_file() and shot.stat().st_size > 10_000, f"{shot} missing or empty"


# --- The site on a phone (390 px wide) and its search -------------------------------------------

PHONE = {"width": 390, "height": 844}
# Pages with long inline code, wide tables, display math and multi-panel figures.
PHONE_PAGES = ["book/index.html", "book/performance.html", "book/01_what_is_deep_learning.html", "book/02_perceptron.html", "book/06_convolution.html",
               "book/09_recurrent_networks.html", "book/10_generative_models.html",
               "labs/lab03_convolution/lab03_convolution.html", "book/instructor_guide.html", "book/api/dlcourse.nn.html"]


@pytest.fixture(scope="session")
def phone(site, browser):
    """A browser context of a phone's width, offline like the crawl."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(site) else route.abort())
    yield context
    context.close()


def _open(context, url: str):
    page = context.new_page()
    page.goto(url, wait_until="load", timeout=120_000)
    page.evaluate(WAIT_FOR_MATH)
    page.evaluate(WAIT_FOR_IMAGES)
    return page


def _visible_toggle(page, kind: str):
    """The sidebar button a reader sees (the themes also put a hidden copy in the page)."""
    toggles = page.locator(f"button.{kind}-toggle:visible")
    assert toggles.count() >= 1, f"no visible .{kind}-toggle button"
    return toggles.first


def test_the_navigation_drawer_and_page_contents_open_on_a_phone(site, phone):
    page = _open(phone, site + "book/02_perceptron.html")
    drawer = page.locator("#pst-primary-sidebar-modal")
    assert not drawer.evaluate("d => d.open")
    _visible_toggle(page, "primary").click()
    page.wait_for_function("document.getElementById('pst-primary-sidebar-modal').open", timeout=10_000)
    chapter_link = drawer.locator("a[href$='06_convolution.html']")
    assert chapter_link.is_visible(), "the drawer is open but the chapter list is not visible in it"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "phone_navigation.png"))
    chapter_link.click()  # the chapter list leads to another chapter
    page.wait_for_url("**/06_convolution.html*", timeout=30_000)
    assert "Convolution" in page.locator("article h1").first.inner_text()

    page.keyboard.press("Escape")
    contents = page.locator("#pst-secondary-sidebar-modal")
    _visible_toggle(page, "secondary").click()
    page.wait_for_function("document.getElementById('pst-secondary-sidebar-modal').open", timeout=10_000)
    sections = contents.locator("nav a[href^='#']")
    assert sections.count() >= 3 and sections.first.is_visible(), "the page contents did not show"
    page.screenshot(path=str(SCREENSHOTS / "phone_page_contents.png"))
    target = sections.nth(1).get_attribute("href")
    sections.nth(1).click()
    page.wait_for_function(f"location.hash === {json.dumps(target)}", timeout=10_000)
    page.close()


def test_the_navigation_sidebar_collapses_and_comes_back_on_a_desktop(site, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = _open(context, site + "book/02_perceptron.html")
    sidebar = page.locator("#pst-primary-sidebar")
    assert sidebar.is_visible()
    _visible_toggle(page, "primary").click()
    page.wait_for_function("!document.getElementById('pst-primary-sidebar').checkVisibility({visibilityProperty: true})",
                           timeout=10_000)
    _visible_toggle(page, "primary").click()
    page.wait_for_function("document.getElementById('pst-primary-sidebar').checkVisibility({visibilityProperty: true})",
                           timeout=10_000)
    context.close()


SIDEWAYS = """() => {
    const W = document.documentElement.clientWidth;
    const wide = [];
    for (const e of document.querySelectorAll('article *')) {
        const r = e.getBoundingClientRect();
        if (r.width === 0 || r.right <= W + 1) continue;
        let scrolls = false;  // inside a box that scrolls (a code block, a table) it is fine
        for (let a = e.parentElement; a && !scrolls; a = a.parentElement) {
            scrolls = getComputedStyle(a).overflowX !== 'visible' && a.getBoundingClientRect().right <= W + 1;
        }
        if (!scrolls && !Array.from(e.children).some(c => c.getBoundingClientRect().right > W + 1)) {
            wide.push(`${e.tagName.toLowerCase()}.${e.className}: ${Math.round(r.right)} px "${e.textContent.slice(0, 40)}"`);
        }
    }
    return {scrollWidth: document.documentElement.scrollWidth, width: W, wide: wide.slice(0, 5)};
}"""


def test_no_page_scrolls_sideways_on_a_phone(site, phone):
    problems = {}
    for rel in PHONE_PAGES:
        page = _open(phone, site + rel)
        found = page.evaluate(SIDEWAYS)
        if rel == "book/index.html":
            page.screenshot(path=str(SCREENSHOTS / "phone_index.png"))
        page.close()
        if found["scrollWidth"] > found["width"]:
            problems[rel] = [f"{found['scrollWidth']} px wide in a {found['width']} px screen", *found["wide"]]
    assert not problems, "pages that scroll sideways at 390 px:\n" + report(problems)


FIGURES = """() => {
    // column: the width of the output box the figure sits in
    return Array.from(document.querySelectorAll('div.cell_output img')).map(i => ({
        src: i.getAttribute('src'), natural: i.naturalWidth, shown: i.getBoundingClientRect().width,
        column: i.closest('div.cell_output').clientWidth}));
}"""


def test_wide_figures_stay_legible_on_a_phone(site, phone):
    """A figure of several panels is shown at no less than twice the column's width (or at its own
    size, if smaller), in an output box that scrolls; not shrunk to a fraction of its size."""
    figures, problems = [], {}
    for rel in PHONE_PAGES:
        if rel.startswith("book/api/"):
            continue
        page = _open(phone, site + rel)
        found = page.evaluate(FIGURES)
        wide = [f for f in found if f["natural"] > 2 * f["column"]]
        if wide and not any(f["natural"] > 2 * f["column"] for f in figures):  # the first wide figure, as shown
            page.evaluate("src => document.querySelector(`div.cell_output img[src='${src}']`).scrollIntoView()",
                          wide[0]["src"])
            page.screenshot(path=str(SCREENSHOTS / "phone_wide_figure.png"))
        page.close()
        figures += found
        small = [f"{f['src']}: {f['shown']:.0f} px of {f['natural']}" for f in found
                 if f["shown"] < min(f["natural"], 2 * f["column"]) - 2]
        if small:
            problems[rel] = small
    assert any(f["natural"] > 2 * f["column"] for f in figures), "no wide figure on these pages to check"
    assert not problems, "figures shrunk below min(their size, twice the column) at 390 px:\n" + report(problems)


DISPLAY_MATH = """async () => {
    await MathJax.startup.promise;
    return Array.from(document.querySelectorAll('div.math')).map(box => {
        const math = box.querySelector('mjx-math');
        const before = {box: box.getBoundingClientRect().right, math: math.getBoundingClientRect().width};
        box.scrollLeft = box.scrollWidth;  // scroll the box to its end: the end of the equation shows
        const r = box.getBoundingClientRect(), m = math.getBoundingClientRect();
        const column = box.closest('article').getBoundingClientRect();
        const result = {text: box.textContent.trim().slice(0, 40), wide: before.math > r.width + 1,
                        overflow: getComputedStyle(box).overflowX, end_shown: m.right <= r.right + 1,
                        in_column: r.right <= column.right + 1};
        box.scrollLeft = 0;
        return result;
    });
}"""


@pytest.mark.parametrize("width", [1280, 390])
def test_wide_display_math_scrolls_within_its_box(site, browser, width):
    """Chapter 9's LSTM equations are wider than the column: their box scrolls, nothing is cut off."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = _open(context, site + "book/09_recurrent_networks.html")
    boxes = page.evaluate(DISPLAY_MATH)
    context.close()
    wide = [b for b in boxes if b["wide"]]
    assert wide, "chapter 9 has no display math wider than its box at this width"
    problems = [b for b in boxes if not b["in_column"] or (b["wide"] and not (b["overflow"] in ("auto", "scroll")
                                                                               and b["end_shown"]))]
    assert not problems, f"display math cut off or out of its column at {width} px: {problems[:3]}"


SEARCH_RESULTS = """async () => {
    const t0 = Date.now();
    const done = () => /Search finished/.test(document.getElementById('search-progress')?.textContent || '')
        || /found/.test(document.querySelector('#search-results .search-summary, #search-results p')?.textContent || '');
    // Wait for the list and for each entry's snippet (API entries carry a description instead).
    while (Date.now() - t0 < 60000) {
        const items = Array.from(document.querySelectorAll('ul.search li'));
        if (items.length && items.every(li => li.querySelector('p.context, span')) && done()) break;
        await new Promise(r => setTimeout(r, 200));
    }
    return Array.from(document.querySelectorAll('ul.search li')).map(li => ({
        href: li.querySelector('a').getAttribute('href'), title: li.querySelector('a').textContent,
        snippet: (li.querySelector('p.context') || {textContent: ''}).textContent}));
}"""


@pytest.fixture(scope="session")
def search(site, browser):
    """``search(query)``: the results of the site's search page, in order, with their snippets."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(site) else route.abort())
    cache = {}

    def run(query: str) -> list[dict]:
        if query not in cache:
            page = context.new_page()
            page.goto(site + "search.html?q=" + urllib.parse.quote(query), wait_until="load", timeout=120_000)
            page.wait_for_selector("ul.search li", timeout=60_000)
            cache[query] = page.evaluate(SEARCH_RESULTS)
            if query == "dropout":
                page.screenshot(path=str(SCREENSHOTS / "search_dropout.png"))
            page.close()
        return cache[query]

    yield run
    context.close()


@pytest.mark.parametrize("query, chapters", [("dropout", ("book/05_", "book/07_")),
                                             ("LSTM", ("book/09_", "labs/lab05_"))])
def test_search_ranks_chapter_sections_above_the_api(search, query, chapters):
    results = search(query)
    hrefs = [r["href"] for r in results]
    first_api = next((i for i, h in enumerate(hrefs) if h.startswith("book/api/")), len(hrefs))
    assert hrefs and hrefs[0].startswith(chapters), f"{query!r}: expected a chapter first, got {hrefs[:5]}"
    ranked = [i for i, h in enumerate(hrefs) if h.startswith(chapters)]
    assert ranked and max(ranked[:2]) < first_api, f"{query!r}: API entries before the chapters: {hrefs[:8]}"


@pytest.mark.parametrize("query", ["dropout", "LSTM", "convolution", "gradient"])
def test_search_lists_each_page_once_with_a_readable_snippet(search, query):
    results = search(query)
    pages = [r["href"].split("#")[0] for r in results if not r["href"].startswith("book/api/")]
    twice = sorted({p for p in pages if pages.count(p) > 1})
    assert not twice, f"{query!r}: pages listed more than once: {twice}"
    api_pages = [r["href"] for r in results if r["href"].startswith("book/api/")]
    assert len(api_pages) == len(set(api_pages)), f"{query!r}: an API entry listed twice"
    toc = re.compile(r"(?:\d+(?:\.\d+)+\.\s+[^\d]{2,60}?){3}")  # three numbered headings in a row: a table of contents
    problems = [(r["href"], r["snippet"][:100]) for r in results
                if re.search(r"\\[()\[\]]|\\[a-zA-Z]+\{|\$\$", r["snippet"]) or toc.search(r["snippet"])]
    assert not problems, f"{query!r}: snippets with raw LaTeX or a table of contents: {problems[:3]}"
    assert any(r["snippet"] for r in results)
