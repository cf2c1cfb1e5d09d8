// ipywidgets 8 typesets widget labels with the MathJax 2 API, MathJax.Hub.Queue(["Typeset",
// MathJax.Hub, element]); the site runs MathJax 3, which has no Hub. Give every object that
// becomes window.MathJax (Sphinx's configuration, then MathJax 3 itself) a Hub whose Queue
// typesets the elements with MathJax 3 once it has started.
(function () {
  "use strict";
  const pending = [];
  const Hub = {
    Queue: function (...jobs) {
      const elements = jobs.filter(Array.isArray).map((job) => job[2]).filter(Boolean);
      const mj = current;
      if (mj && mj.startup && mj.startup.promise && mj.typesetPromise) {
        mj.startup.promise = mj.startup.promise.then(() => mj.typesetPromise(elements));
      } else {
        pending.push(...elements);
      }
    },
  };
  let current = window.MathJax;
  function withHub(mj) {
    if (mj && typeof mj === "object" && !mj.Hub) {
      mj.Hub = Hub;
    }
    return mj;
  }
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    enumerable: true,
    get: () => current,
    set: (value) => {
      current = withHub(value);
    },
  });
  withHub(current);
  // Typeset what widgets queued before MathJax 3 had started (give up after a minute).
  let ticks = 0;
  const timer = setInterval(() => {
    const mj = current;
    if (mj && mj.startup && mj.startup.promise && mj.typesetPromise) {
      clearInterval(timer);
      mj.startup.promise = mj.startup.promise.then(() => pending.length && mj.typesetPromise(pending.splice(0)));
    } else if (++ticks > 1200) {
      clearInterval(timer);
    }
  }, 50);
})();
