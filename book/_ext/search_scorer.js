// The book's search: ranking, one entry per page, readable snippets.
//
// Sphinx puts this file (html_search_scorer, set by book/_ext/dlcourse_site.py) into
// language_data.js, which the search page loads right after searchtools.js: `Search` exists here,
// and nothing has been searched yet (the search starts when the page has loaded).
//
// - Ranking: a chapter or lab section whose title matches comes before the API reference, which
//   comes before pages that merely mention the word. (Sphinx ranks an API entry above a chapter
//   section of the same name.)
// - One entry per page: the best match of a page (its matching section rather than the page as a
//   whole); on an API page each documented object may still have its own entry.
// - Snippets come from the article alone (not its table of contents, navigation or outputs), with
//   math shown as text ("p", "σ(W_hf h_t-1)") rather than raw LaTeX ("\(p\)").

var Scorer = {
  objNameMatch: 11,
  objPartialMatch: 6,
  objPrio: {0: 15, 1: 5, 2: -5},
  objPrioDefault: 0,
  title: 15,
  partialTitle: 7,
  term: 5,
  partialTerm: 2,

  // result: [docname, title, anchor, descr, score, filename]; descr is set for API objects.
  score: (result) => {
    const [docname, , anchor, descr, score] = result;
    const api = docname.startsWith("book/api/");
    if (!api && !descr && score >= Scorer.partialTitle) return score + 20;  // a chapter's title matches
    if (api && !descr && !anchor) return score - 2;  // an API page whose text mentions the word
    return score;
  },
};

(() => {
  const isApi = (docname) => docname.startsWith("book/api/");

  // One entry per page; on API pages one per object. Results arrive sorted by rising score.
  const performSearch = Search._performSearch;
  Search._performSearch = (...args) => {
    const results = performSearch(...args);
    const better = (a, b) => a[4] > b[4] || (a[4] === b[4] && a[2] && !b[2]);  // higher, or more precise
    const best = new Map();
    const withObjects = new Set(results.filter((r) => r[3]).map((r) => r[0]));
    for (const r of results) {
      if (isApi(r[0]) && !r[2] && withObjects.has(r[0])) continue;  // the page of objects already listed
      const key = isApi(r[0]) && r[3] ? `${r[0]}${r[2]}` : r[0];
      if (!best.has(key) || better(r, best.get(key))) best.set(key, r);
    }
    const kept = new Set(best.values());
    return results.filter((r) => kept.has(r));
  };

  // LaTeX as plain text: \(\sigma(W_{hf} h_{t-1})\) -> σ(W_hf h_t-1).
  const GREEK = {alpha: "α", beta: "β", gamma: "γ", delta: "δ", epsilon: "ε", eta: "η", theta: "θ",
    lambda: "λ", mu: "μ", pi: "π", rho: "ρ", sigma: "σ", tau: "τ", phi: "φ", omega: "ω",
    Delta: "Δ", Sigma: "Σ", nabla: "∇", partial: "∂", odot: "⊙", cdot: "·", times: "×",
    sum: "Σ", prod: "Π", infty: "∞", leq: "≤", geq: "≥", neq: "≠", approx: "≈", to: "→",
    rightarrow: "→", in: "∈", ldots: "…", dots: "…", cdots: "…"};
  const latexToText = (tex) => tex
    .replace(/^\s*(\\\(|\\\[|\$\$?)|(\\\)|\\\]|\$\$?)\s*$/g, "")
    .replace(/\\(?:frac)\s*\{([^{}]*)\}\s*\{([^{}]*)\}/g, "($1)/($2)")
    .replace(/\\([A-Za-z]+)/g, (m, name) => GREEK[name] !== undefined ? GREEK[name] : "")
    .replace(/\\[,;:! ]/g, " ")
    .replace(/&|\\\\/g, " ")
    .replace(/[{}]/g, "")
    .replace(/\s+/g, " ")
    .trim();

  const JUNK = [".headerlink", "script", "style", "nav", ".toctree-wrapper", ".cell_output",
    ".tag_dlcourse-setup", ".tag_remove-input", ".tag_remove-cell", ".header-article", ".prev-next-area",
    ".bd-sidebar-secondary", "#print-main-content", "footer"];
  Search.htmlToText = (htmlString, anchor) => {
    const doc = new DOMParser().parseFromString(htmlString, "text/html");
    doc.querySelectorAll(JUNK.join(",")).forEach((el) => el.remove());
    doc.querySelectorAll(".math").forEach((el) => el.replaceWith(` ${latexToText(el.textContent)} `));
    const main = doc.querySelector("article.bd-article") || doc.querySelector('[role="main"]');
    if (!main) return "";
    const target = anchor ? doc.getElementById(decodeURIComponent(anchor.slice(1))) : null;
    const part = target && main.contains(target) ? target : null;
    return (part || main).textContent.replace(/\s+/g, " ");
  };
})();
