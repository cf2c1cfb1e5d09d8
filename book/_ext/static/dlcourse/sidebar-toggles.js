// The sidebar buttons of the article header open the navigation drawer and the page contents.
//
// The pinned theme pair (sphinx-book-theme 1.3 on pydata-sphinx-theme 0.17) puts two buttons of
// each kind on every page: pydata's in the site header, which sphinx-book-theme hides, and
// sphinx-book-theme's in the article header, the one readers see. Both themes attach their click
// handlers to document.querySelector(".primary-toggle") (and ".secondary-toggle"), the first
// one, so the visible buttons do nothing at any width. Here a click on a visible button is
// handed to the first one, whose handlers then do what the themes meant: a drawer (a <dialog>)
// on narrow screens, a collapsing sidebar on wide ones.
(() => {
  const wire = (selector) => {
    const buttons = Array.from(document.querySelectorAll(selector));
    const first = buttons[0];
    buttons.slice(1).forEach((button) => {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        button.blur();
        first.click();
      });
    });
  };
  const init = () => {
    wire(".primary-toggle");
    wire(".secondary-toggle");
  };
  if (document.readyState !== "loading") init();
  else document.addEventListener("DOMContentLoaded", init);
})();
