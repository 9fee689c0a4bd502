// crossroute console: plain ES module, no dependencies, nothing loaded from elsewhere.
// Every string from the server or the user reaches the page through textContent or an attribute
// set by the DOM API, never through HTML parsing: ticket texts, titles and payloads stay inert.

const KEY = "crossroute.apiKey";
const main = () => document.getElementById("main");

/** An element with attributes (on* handlers as functions) and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  const m = main();
  m.replaceChildren(...nodes);
  m.focus();
}

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

/** fetch() with the API key; JSON in and out; 401 sends the user back to the key form. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const res = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  if (!res.ok) {
    if (res.status === 401) { sessionStorage.removeItem(KEY); }
    throw new ApiError(res.status, body && body.detail ? body.detail : res.statusText);
  }
  return body;
}

let who = null; // {tenant, scopes, auth}
let signedIn = false; // a key was submitted in this tab: a refusal is then worth saying

async function whoami() {
  if (who) return who;
  who = await api("/v1/whoami");
  const label = who.auth === "off" ? `tenant: any (auth off)` : `tenant ${who.tenant}`;
  document.getElementById("who").replaceChildren(
    label, " ", el("button", { type: "button", id: "sign-out", onclick: signOut }, "Sign out"));
  return who;
}

function signOut() {
  sessionStorage.removeItem(KEY);
  who = null;
  document.getElementById("who").replaceChildren();
  location.hash = "#/route";
  render();
}

function keyForm(message) {
  const input = el("input", { type: "password", id: "api-key", autocomplete: "off",
                              "aria-describedby": "key-help" });
  const form = el("form", { class: "card", id: "key-form" },
    el("h1", {}, "Sign in with an API key"),
    el("p", { id: "key-help", class: "muted" },
      "Make one with: crossroute keys create --tenant YOUR_TENANT. It stays in this tab only."),
    message ? el("p", { class: "error", role: "alert" }, message) : null,
    el("label", { for: "api-key" }, "API key"), input,
    el("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    who = null;
    signedIn = true;
    render();
  });
  show(form);
  input.focus();
}

// -- Route a ticket --------------------------------------------------------------------------

function imageField(name, label) {
  const input = el("input", { type: "file", id: name, name, accept: "image/png,image/jpeg,image/webp" });
  const preview = el("div", { class: "muted", id: `${name}-preview` }, "none");
  const update = () => {
    const file = input.files && input.files[0];
    preview.replaceChildren(file
      ? el("img", { class: "preview", alt: `${label}: ${file.name}`, src: URL.createObjectURL(file) })
      : "none");
  };
  input.addEventListener("change", update);
  const zone = el("div", { class: "drop" }, el("label", { for: name }, label), input, preview);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      update();
    }
  });
  return zone;
}

function routeView() {
  const text = el("textarea", { id: "ticket-text", name: "text", required: true,
                                placeholder: "What does the customer say?" });
  const result = el("section", { id: "result", "aria-live": "polite" });
  const form = el("form", { class: "card", id: "route-form" },
    el("h1", {}, "Route a ticket"),
    el("label", { for: "ticket-text" }, "Ticket text"), text,
    el("div", { class: "row" },
      el("div", {}, imageField("photo", "Photo (optional)")),
      el("div", {}, imageField("screenshot", "Screenshot (optional)"))),
    el("button", { type: "submit", id: "route-submit" }, "Route"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData();
    const ticket = { id: `console-${Date.now().toString(36)}`, tenant: who.tenant, text: text.value };
    data.append("ticket", JSON.stringify(ticket));
    for (const name of ["photo", "screenshot"]) {
      const file = form.querySelector(`#${name}`).files[0];
      if (file) data.append(name, file, file.name);
    }
    result.replaceChildren(el("p", { class: "muted" }, "Routing…"));
    try {
      renderExplained(result, await api("/v1/route/explain", { method: "POST", body: data }));
    } catch (error) {
      result.replaceChildren(el("p", { class: "error", role: "alert" }, error.message));
    }
  });
  show(form, result);
}

function renderExplained(into, explained) {
  const d = explained.decision;
  const auto = d.queue === "auto";
  const rows = d.targets.map((t, i) => {
    const doc = explained.documents[t.doc_id] || {};
    return el("tr", { "data-doc-id": t.doc_id },
      el("td", {}, String(i + 1)),
      el("td", {}, el("span", { class: "title" }, doc.title || t.doc_id),
        el("div", { class: "muted" }, `${t.kind} ${t.doc_id}`)),
      el("td", {}, t.score.toFixed(3)),
      el("td", {}, t.evidence.map((e) => el("span", { class: "chip" }, e)),
        t.exemplar_id ? el("div", { class: "muted" }, `via resolved ticket ${t.exemplar_id}`) : null,
        t.via_product ? el("div", { class: "muted" }, `via product ${t.via_product}`) : null));
  });
  into.replaceChildren(
    el("section", { class: "card" },
      el("p", { class: `decision ${d.queue}`, id: "decision" },
        auto ? "Routed automatically" : "Sent to the human queue (nothing fits well enough)"),
      el("p", { class: "muted" },
        `threshold ${d.threshold.toFixed(3)} · space ${d.space_id} · ticket ${d.ticket_id}`),
      rows.length
        ? el("table", { id: "targets" },
            el("thead", {}, el("tr", {}, ...["#", "target", "score", "evidence"].map((h) => el("th", { scope: "col" }, h)))),
            el("tbody", {}, rows))
        : el("p", {}, "No candidates."),
      explained.ocr_text !== null && explained.ocr_text !== undefined
        ? el("div", {}, el("h2", {}, "Text read from the screenshot"),
            el("pre", { class: "ocr", id: "ocr-text" }, explained.ocr_text || "(none found)"))
        : null));
}


// -- Search ----------------------------------------------------------------------------------

const KINDS = [["product", "Products"], ["article", "Articles"], ["warranty_policy", "Warranty policies"]];

function searchView() {
  const text = el("input", { type: "text", id: "search-text", name: "text" });
  const category = el("input", { type: "text", id: "search-category", name: "category" });
  const stock = el("select", { id: "search-stock", name: "in_stock" },
    el("option", { value: "" }, "any"), el("option", { value: "true" }, "in stock"),
    el("option", { value: "false" }, "out of stock"));
  const kinds = el("fieldset", { id: "search-kinds" }, el("legend", {}, "Kinds (none: all)"),
    KINDS.map(([value, label]) => el("label", { class: "inline" },
      el("input", { type: "checkbox", name: "kind", value }), ` ${label}`)));
  const results = el("section", { id: "search-results", "aria-live": "polite" });
  const form = el("form", { class: "card", id: "search-form" },
    el("h1", {}, "Search the index"),
    el("label", { for: "search-text" }, "Text"), text,
    imageField("search-image", "Image (optional)"),
    el("div", { class: "row" },
      el("div", {}, kinds),
      el("div", {}, el("label", { for: "search-category" }, "Category"), category,
        el("label", { for: "search-stock" }, "Stock"), stock)),
    el("button", { type: "submit", id: "search-submit" }, "Search"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = { tenant: who.tenant, k: 10,
                    kinds: [...form.querySelectorAll("input[name=kind]:checked")].map((c) => c.value) };
    if (text.value.trim()) query.text = text.value;
    if (category.value.trim()) query.category = category.value.trim();
    if (stock.value) query.in_stock = stock.value === "true";
    const data = new FormData();
    data.append("query", JSON.stringify(query));
    const file = form.querySelector("#search-image").files[0];
    if (file) data.append("image", file, file.name);
    results.replaceChildren(el("p", { class: "muted" }, "Searching…"));
    try {
      const found = await api("/v1/search", { method: "POST", body: data });
      results.replaceChildren(el("section", { class: "card" },
        el("p", { class: "muted" }, `${found.hits.length} results · space ${found.space_id}`),
        found.hits.length
          ? el("table", { id: "hits" },
              el("thead", {}, el("tr", {}, ...["#", "title", "kind", "score"].map((h) => el("th", { scope: "col" }, h)))),
              el("tbody", {}, found.hits.map((h, i) => el("tr", { "data-id": h.id },
                el("td", {}, String(i + 1)),
                el("td", {}, el("span", { class: "title" }, h.title || h.id),
                  el("div", { class: "muted" }, h.parent ? `${h.id} (of ${h.parent})` : h.id)),
                el("td", {}, h.kind), el("td", {}, h.score.toFixed(3))))))
          : el("p", {}, "Nothing found.")));
    } catch (error) {
      results.replaceChildren(el("p", { class: "error", role: "alert" }, error.message));
    }
  });
  show(form, results);
}

// -- shell -----------------------------------------------------------------------------------

const PAGES = { route: routeView, search: searchView };

async function render() {
  const page = (location.hash.replace(/^#\//, "").split("?")[0]) || "route";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    await whoami();
  } catch (error) {
    keyForm(signedIn || error.status !== 401 ? error.message : null);
    return;
  }
  (PAGES[page] || routeView)();
}

window.addEventListener("hashchange", render);
render();
