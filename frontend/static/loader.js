// Concurrent's loader for the MLflow UI: adds a "DAGs" item to MLflow's sidebar and mounts the
// Concurrent app on #/dags routes inside MLflow's main area. The edge injects this one script
// into MLflow's index.html; everything else of MLflow is served unchanged.
(() => {
  const ROUTE = /^#\/dags(\/|$|\?)/;
  const ITEM_ID = "concurrent-dags-nav";
  let app = null; // the promise of the mounted module: route() runs concurrently, mount once

  const isDags = () => ROUTE.test(location.hash);

  function workflowQuery() {
    const m = location.hash.match(/[?&]workflowType=[^&]*/);
    return m ? "?" + m[0].slice(1) : "";
  }

  // How MLflow currently draws its nav items (collapsed ones have no label).
  const shapeOf = (a) => a.className + "|" + (a.textContent.trim().length > 0);
  // Inside an experiment MLflow shows that experiment's own navigation: no DAGs item there.
  const inExperiment = (nav) => !!nav.querySelector('a[href*="#/experiments/"]');
  // The link the DAGs item goes after: Model registry, or Experiments when there is none.
  const neighbour = (nav) => nav.querySelector('a[href^="#/models"]') || nav.querySelector('a[href^="#/experiments"]');

  // The nav item copies its neighbour's classes so it looks and highlights like the others.
  function ensureNavItem() {
    const nav = document.querySelector("aside nav ul");
    if (!nav) return;
    if (inExperiment(nav)) {
      document.getElementById(ITEM_ID)?.remove();
      return;
    }
    const anchorBefore = neighbour(nav);
    if (!anchorBefore) return;
    const li = anchorBefore.closest("li");
    let item = document.getElementById(ITEM_ID);
    // MLflow renders its items differently when the sidebar is collapsed (icons only): copy
    // the neighbour again whenever its shape changes.
    const shape = shapeOf(anchorBefore);
    if (item && item.dataset.shape !== shape) { item.remove(); item = null; }
    // Kept right after its neighbour when MLflow re-renders the list (e.g. Model registry
    // appears with the Model training switch).
    if (item && item.previousElementSibling !== li) li.after(item);
    if (!item) {
      item = li.cloneNode(true);
      item.id = ITEM_ID;
      item.dataset.shape = shape;
      const a = item.querySelector("a");
      // The neighbour's label is its text; the icon stays (replaced below).
      const walker = document.createTreeWalker(a, NodeFilter.SHOW_TEXT);
      let labelled = false;
      for (let t = walker.nextNode(); t; t = walker.nextNode()) {
        if (!t.textContent.trim()) continue;
        t.textContent = labelled ? "" : "DAGs";
        labelled = true;
      }
      a.setAttribute("title", "DAGs");
      a.setAttribute("aria-label", "DAGs");
      // Our own icon (three connected nodes), sized like the neighbour's.
      const icon = a.querySelector("svg");
      if (icon) {
        const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
        for (const attr of ["class", "width", "height", "style", "aria-hidden", "focusable"]) {
          if (icon.hasAttribute(attr)) svg.setAttribute(attr, icon.getAttribute(attr));
        }
        svg.setAttribute("viewBox", "0 0 16 16");
        svg.setAttribute("fill", "none");
        svg.innerHTML = '<rect x="1" y="2" width="5" height="4" rx="1" stroke="currentColor" stroke-width="1.5"/>' +
          '<rect x="10" y="2" width="5" height="4" rx="1" stroke="currentColor" stroke-width="1.5"/>' +
          '<rect x="5.5" y="10" width="5" height="4" rx="1" stroke="currentColor" stroke-width="1.5"/>' +
          '<path d="M6 4h4M3.5 6v2.5l4.5 1.5M12.5 6v2.5L8 10" stroke="currentColor" stroke-width="1.5"/>';
        icon.replaceWith(svg);
      }
      a.setAttribute("data-concurrent", "dags");
      a.addEventListener("click", (e) => { e.preventDefault(); location.hash = "#/dags" + workflowQuery(); });
      li.after(item);
    }
    const a = item.querySelector("a");
    a.setAttribute("href", "#/dags" + workflowQuery());
    if (isDags()) {
      a.setAttribute("aria-current", "page");
      nav.querySelectorAll("a[aria-current]").forEach((o) => { if (o !== a) o.removeAttribute("aria-current"); });
    } else {
      a.removeAttribute("aria-current");
    }
  }

  // On #/dags, MLflow's own "not found" view is hidden with a CSS rule (React's nodes are never
  // removed) and the app is shown in a container appended to <main>.
  async function route() {
    ensureNavItem();
    const main = document.querySelector("main");
    if (!main) return;
    let root = document.getElementById("concurrent-root");
    if (isDags()) {
      main.setAttribute("data-concurrent-dags", "");
      if (!root) {
        root = document.createElement("div");
        root.id = "concurrent-root";
        main.appendChild(root);
      }
      root.hidden = false;
      app ||= import("/concurrent/concurrent_frontend.js").then(async (m) => {
        await m.default();
        m.mount_in("concurrent-root");
        return m;
      }).catch((e) => {
        app = null; // a later visit tries again
        root.textContent = "Concurrent's app did not load (" + e + "). Check that the edge serves /concurrent/, then reload.";
      });
      await app;
    } else {
      main.removeAttribute("data-concurrent-dags");
      if (root) root.hidden = true;
    }
  }

  const style = document.createElement("style");
  style.textContent = "main[data-concurrent-dags] > :not(#concurrent-root) { display: none !important; }";
  document.head.appendChild(style);
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = "/concurrent/style.css";
  document.head.appendChild(link);

  for (const name of ["pushState", "replaceState"]) {
    const original = history[name];
    history[name] = function (...args) { const r = original.apply(this, args); queueMicrotask(route); return r; };
  }
  addEventListener("hashchange", route);
  addEventListener("popstate", route);
  // React re-renders the sidebar (collapse, GenAI / Model training toggle): put the item back.
  const misplaced = () => {
    const nav = document.querySelector("aside nav ul");
    const item = document.getElementById(ITEM_ID);
    if (!nav) return !item;
    if (inExperiment(nav)) return false;
    const anchor = neighbour(nav);
    return !item || (anchor && (item.previousElementSibling !== anchor.closest("li")
      || item.dataset.shape !== shapeOf(anchor)));
  };
  new MutationObserver(() => { if (misplaced() || isDags() !== !!document.querySelector("main[data-concurrent-dags]")) route(); })
    .observe(document.documentElement, { childList: true, subtree: true });
  route();
})();
