"""Sphinx extension of the book: serve its third-party JavaScript from the site itself.

Nothing third-party is committed to the repository and nothing is loaded from a CDN:

- MathJax 3 comes from the PyPI package ``sphinx-mathjax-offline`` (a pinned book dependency,
  installed with the others); its ``static/mathjax`` folder is served as ``_static/mathjax``.
- The ipywidgets HTML manager (``@jupyter-widgets/html-manager``, the ipywidgets 8 line) comes
  from the npm registry: ``npm pack`` fetches the pinned version once per build folder into
  ``_build/.vendor``, its sha512 is checked against the pin below, and its ``dist/`` folder is
  served as ``_static/html-manager`` (``embed.js`` bundles the standard widgets and their fonts).

``_config.yml`` points Sphinx at these copies (``mathjax_path``, ``nb_ipywidgets_js``).

The layout and search fixes (each file says why):

- ``static/dlcourse/sidebar-toggles.js``: the article header's buttons open the navigation drawer
  and the page contents (the pinned theme pair binds its handlers to hidden copies of them).
- ``static/dlcourse/site.css``: nothing makes a phone's page scroll sideways (inline code wraps),
  display math scrolls inside its own box, wide figures stay legible on a phone.
- ``search_scorer.js`` (``html_search_scorer``): chapter sections rank above API entries, one entry
  per page, snippets without the table of contents or raw LaTeX.

Two fixes for the browser console, which the site's browser tests keep empty:

- ipywidgets 8 typesets labels with MathJax 2's ``MathJax.Hub.Queue``; ``static/dlcourse/mathjax2-hub.js``
  (ours) forwards it to MathJax 3.
- sphinx-thebe adds its inline configuration script twice (``const THEBE_JS_URL`` declared twice
  is a SyntaxError): each page keeps one copy of every script.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

# The ipywidgets 8 HTML manager, pinned by version and by the registry's integrity hash.
HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.15"
HTML_MANAGER_SHA512 = "5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="


def mathjax_static() -> Path:
    """The folder of ``sphinx-mathjax-offline`` that holds ``mathjax/`` (MathJax 3, es5 build)."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")  # its import name has hyphens
    if spec is None or spec.origin is None:
        raise ExtensionError("MathJax is served from the package sphinx-mathjax-offline, which is not installed: "
                             "run `make install`")
    static = Path(spec.origin).parent / "static"
    if not (static / "mathjax" / "tex-mml-chtml.js").is_file():
        raise ExtensionError(f"sphinx-mathjax-offline has no mathjax/tex-mml-chtml.js under {static}")
    return static


def html_manager_static(vendor: Path) -> Path:
    """A folder holding ``html-manager/`` (the HTML manager's ``dist/``), fetched with npm if absent."""
    static = vendor / f"html-manager-{HTML_MANAGER.rsplit('@', 1)[1]}"
    if (static / "html-manager" / "embed.js").is_file():
        return static
    npm = shutil.which("npm")
    if npm is None:
        raise ExtensionError(f"the widgets' HTML manager ({HTML_MANAGER}) is fetched from the npm registry, "
                             "but npm was not found: install Node.js and npm (Debian: apt-get install npm)")
    logger.info(f"[dlcourse_site] fetching {HTML_MANAGER} from the npm registry")
    vendor.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=vendor) as tmp:
        proc = subprocess.run([npm, "pack", HTML_MANAGER, "--prefer-offline", "--silent", "--pack-destination", tmp],
                              capture_output=True, text=True, timeout=300)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            raise ExtensionError(f"`npm pack {HTML_MANAGER}` failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        digest = base64.b64encode(hashlib.sha512(tarballs[0].read_bytes()).digest()).decode()
        if digest != HTML_MANAGER_SHA512:
            raise ExtensionError(f"{HTML_MANAGER}: expected sha512 {HTML_MANAGER_SHA512}, got {digest}")
        staged = Path(tmp) / "static" / "html-manager"
        staged.mkdir(parents=True)
        with tarfile.open(tarballs[0]) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith("package/dist/") and not member.name.endswith(".map"):
                    target = staged / Path(member.name).relative_to("package/dist")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        if not (staged / "embed.js").is_file():
            raise ExtensionError(f"{HTML_MANAGER} has no dist/embed.js")
        shutil.rmtree(static, ignore_errors=True)
        (Path(tmp) / "static").rename(static)
    return static


def add_static_paths(app: Sphinx, config: Config) -> None:
    # app.outdir is <build>/html: keep the npm download beside it, in <build>/.vendor.
    vendor = Path(app.outdir).parent / ".vendor"
    ours = Path(__file__).resolve().parent / "static"
    config.html_static_path = [*config.html_static_path, str(mathjax_static()), str(html_manager_static(vendor)),
                               str(ours)]
    # The search page's ranking, one entry per page, readable snippets (see the file).
    config.html_search_scorer = str(Path(__file__).resolve().parent / "search_scorer.js")


def add_scripts(app: Sphinx) -> None:
    # Before everything else, so it sees every assignment of window.MathJax.
    app.add_js_file("dlcourse/mathjax2-hub.js", priority=100)
    # After the themes' scripts (priority 500): their sidebar buttons, made to work.
    app.add_js_file("dlcourse/sidebar-toggles.js", priority=800)
    app.add_css_file("dlcourse/site.css", priority=800)


def one_copy_of_each_script(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # An inline script is added once with filename None and once with "": the same script.
        key = (getattr(js, "filename", str(js)) or "", tuple(sorted((getattr(js, "attributes", None) or {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def trait_docstrings(app: Sphinx, what: str, name: str, obj, options, lines: list[str]) -> None:
    """A traitlets option's docstring is its ``help`` text, which napoleon would split at its first
    colon into a "type" and a description; lead with a line that says what the option is instead."""
    try:
        from traitlets import TraitType
    except ImportError:
        return
    if what == "attribute" and isinstance(obj, TraitType):
        lines[:0] = [f"A configurable ``{type(obj).__name__}`` option (default ``{obj.default_value!r}``).", ""]


def setup(app: Sphinx) -> dict:
    app.connect("autodoc-process-docstring", trait_docstrings, priority=400)  # before napoleon (500)
    app.connect("config-inited", add_static_paths)
    app.connect("builder-inited", add_scripts)
    # After the other extensions have added their per-page scripts (default priority 500).
    app.connect("html-page-context", one_copy_of_each_script, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
