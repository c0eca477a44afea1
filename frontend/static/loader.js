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

  // The nav item copies its neighbour's classes so it looks and highlights like the others.
  function ensureNavItem() {
    const nav = document.querySelector("aside nav ul");
    if (!nav) return;
    const anchorBefore = nav.querySelector('a[href^="#/models"]') || nav.querySelector('a[href^="#/experiments"]');
    if (!anchorBefore) return;
    let item = document.getElementById(ITEM_ID);
    if (!item) {
      const li = anchorBefore.closest("li");
      item = li.cloneNode(true);
      item.id = ITEM_ID;
      const a = item.querySelector("a");
      const label = [...a.querySelectorAll("span, div")].reverse().find((e) => e.children.length === 0 && e.textContent.trim());
      if (label) label.textContent = "DAGs"; else a.textContent = "DAGs";
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
  new MutationObserver(() => { if (!document.getElementById(ITEM_ID) || isDags() !== !!document.querySelector("main[data-concurrent-dags]")) route(); })
    .observe(document.documentElement, { childList: true, subtree: true });
  route();
})();
