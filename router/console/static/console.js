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

/** The message of a refusal, with how to get the scope a page needs. */
function refusal(error, scope) {
  return error.status === 403 && error.message.includes("scope")
    ? `${error.message}. Make a key with it: crossroute keys create --tenant ${who && who.tenant ? who.tenant : "T"} --scope ${scope} (or --scope admin).`
    : error.message;
}

/** GET `path`; on a refusal, say it in `into` (with the scope the page needs) and return null. */
async function load(path, into, scope) {
  try {
    return await api(path);
  } catch (error) {
    into.replaceChildren(el("p", { class: "error", role: "alert" }, refusal(error, scope)));
    return null;
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
  signedIn = false;
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
      "Make one with: crossroute keys create --tenant YOUR_TENANT --scope admin (every page; "
      + "without --scope: route and search only). It stays in this tab only."),
    message ? el("p", { class: "error", role: "alert" }, message) : null,
    el("label", { for: "api-key" }, "API key"), input,
    el("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) {
      keyForm("Paste an API key first.");
      return;
    }
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
  const preview = el("div", { class: "muted", id: `${name}-preview` });
  const update = () => {
    const file = input.files && input.files[0];
    preview.replaceChildren(file
      ? el("img", { class: "preview", alt: `${label}: ${file.name}`, src: URL.createObjectURL(file) })
      : "");
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
  const text = el("textarea", { id: "ticket-text", name: "text",
                                placeholder: "What does the customer say? (or attach a photo or screenshot)" });
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
    const images = ["photo", "screenshot"].filter((n) => form.querySelector(`#${n}`).files.length);
    if (!text.value.trim() && !images.length) {
      result.replaceChildren(el("p", { class: "error", role: "alert" }, "Type the ticket's text, or attach a photo or a screenshot."));
      return;
    }
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
        auto ? "Routed automatically" : "Would go to the human queue (nothing fits well enough)"),
      auto ? null : el("p", { class: "muted" }, "Tickets routed here are not queued; the queue holds the tickets the worker routes from Kafka."),
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
        : null,
      explained.share_id
        ? el("p", {}, el("a", { id: "share-link", href: `#/decision/${encodeURIComponent(explained.share_id)}` },
            "Link to this decision"), el("span", { class: "muted" }, " (for keys of this tenant, 7 days)"))
        : null));
}

async function decisionView(shareId) {
  const result = el("section", { id: "result", "aria-live": "polite" });
  show(el("h1", {}, "A shared decision"), result);
  const explained = await load(`/v1/decisions/${encodeURIComponent(shareId)}`, result, "route");
  if (!explained) return;
  renderExplained(result, { ...explained, share_id: null });
  result.prepend(el("section", { class: "card" }, el("h2", {}, "Ticket"),
    el("p", { id: "shared-text" }, explained.text || "(no text: images only)"),
    el("p", { class: "muted" }, "Shared decisions keep the text, not the images.")));
}

// -- charts: inline SVG built with the DOM API -----------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** A bar chart of values (null: no data) with a title per bar; max defaults to the largest. */
export function chart(id, label, values, titles, max) {
  const width = 600, height = 90;
  const top = max || Math.max(1e-9, ...values.filter((v) => v !== null));
  const w = width / Math.max(1, values.length);
  const bars = values.map((v, i) => {
    const h = v === null ? 0 : Math.max(1, (v / top) * (height - 4));
    return svg("rect", { x: (i * w).toFixed(2), y: (height - h).toFixed(2),
                         width: Math.max(1, w - 1).toFixed(2), height: h.toFixed(2),
                         class: v === null ? "col none" : "col", "aria-hidden": "true" },
      svg("title", {}, titles[i]));
  });
  return svg("svg", { id, class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
                      "aria-label": label, preserveAspectRatio: "none" },
    svg("title", {}, label), ...bars);
}

const axis = (from, to) => el("div", { class: "axis muted", "aria-hidden": "true" }, el("span", {}, from), el("span", {}, to));
const pct = (num, den) => (den ? `${Math.round((100 * num) / den)}%` : "–");
const time = (iso) => new Date(iso).toLocaleString();

// -- Human queue ----------------------------------------------------------------------------

function abstentionCard(q) {
  const buckets = q.abstention;
  const sum = (list, f) => list.reduce((a, b) => a + b[f], 0);
  const perHour = Math.max(1, Math.round(3600 / q.bucket_s));
  const hour = buckets.slice(-perHour);
  const rate = buckets.map((b) => (b.decisions ? b.human / b.decisions : null));
  const titles = buckets.map((b) => `${time(b.start)}: ${b.human} of ${b.decisions} to people`);
  return el("section", { class: "card", id: "abstention" },
    el("h2", {}, "Abstention rate (share of tickets sent to people)"),
    el("p", { id: "abstention-hour" },
      `Last hour: ${sum(hour, "human")} of ${sum(hour, "decisions")} tickets (${pct(sum(hour, "human"), sum(hour, "decisions"))}). `,
      `Last 24 hours: ${sum(buckets, "human")} of ${sum(buckets, "decisions")} (${pct(sum(buckets, "human"), sum(buckets, "decisions"))}).`),
    buckets.length ? chart("abstention-chart", "Abstention rate per 10 minutes, last 24 hours", rate, titles, 1) : null,
    buckets.length ? axis("24 hours ago", "now (bar height: share sent to people)") : null,
    el("p", { class: "muted" }, "Each answer you give teaches the router: similar tickets are then routed automatically."));
}

function answerForm(t, onAnswered) {
  const name = `answer-${t.ticket_id}`;
  const options = t.suggestions.map((s, i) => el("label", { class: "option" },
    el("input", { type: "radio", name, value: s.doc_id }),
    ` ${s.title || s.doc_id} `, el("span", { class: "muted" }, `${s.kind} ${s.doc_id} · ${s.score.toFixed(3)}`)));
  const other = el("input", { type: "text", class: "other-id", "aria-label": "Another article or policy id" });
  const status = el("p", { class: "status", "aria-live": "polite" });
  const form = el("form", { class: "answer" },
    el("fieldset", {}, el("legend", {}, "Answer with"),
      options,
      el("label", { class: "option" }, el("input", { type: "radio", name, value: "__other__" }),
        " Another article or policy: "), other,
      el("label", { class: "option" }, el("input", { type: "radio", name, value: "__none__" }),
        " No answer fits (keep similar tickets with people)")),
    el("button", { type: "submit", class: "send" }, "Send answer"), status);
  other.addEventListener("input", () => { form.querySelector('input[value="__other__"]').checked = true; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const picked = form.querySelector(`input[name="${CSS.escape(name)}"]:checked`);
    if (!picked) { status.textContent = "Pick an answer first (or “No answer fits”)."; return; }
    let docId = picked.value;
    if (docId === "__none__") docId = null;
    else if (docId === "__other__") docId = other.value.trim();
    if (docId === "") { status.textContent = "Type the id of an article or policy."; return; }
    status.textContent = "Sending…";
    try {
      const done = await api(`/v1/queue/${encodeURIComponent(t.ticket_id)}/answer`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ tenant: who.tenant, doc_id: docId }) });
      onAnswered(done);
    } catch (error) {
      status.textContent = error.message;
      status.classList.add("error");
    }
  });
  return form;
}

async function queueView() {
  const list = el("ul", { id: "queue-list", class: "queue", "aria-label": "Tickets waiting for an answer" });
  const head = el("div", {});
  const announce = el("p", { id: "queue-status", class: "muted", "aria-live": "polite" });
  show(el("h1", {}, "Human queue"), head, announce, list);
  const q = await load("/v1/queue?limit=50", head, "queue");
  if (!q) return;
  const openCount = el("p", { id: "queue-open" }, `${q.open} open`);
  head.replaceChildren(
    openCount, abstentionCard(q),
    el("p", { class: "muted" }, "Keys: ↑/↓ or j/k move between tickets, Enter answers the current one."));
  if (!q.tickets.length) {
    list.replaceChildren(el("li", { class: "empty" }, "Nothing waits for an answer."));
    return;
  }
  const items = [];
  const select = (i, focus = true) => {
    items.forEach((item, j) => {
      const current = j === i;
      item.node.tabIndex = current ? 0 : -1;
      item.node.setAttribute("aria-current", current ? "true" : "false");
      item.form.hidden = !current;
    });
    if (focus && items[i]) items[i].node.focus();
  };
  q.tickets.forEach((t) => {
    const node = el("li", { class: "ticket", "data-ticket-id": t.ticket_id, tabindex: -1 },
      el("p", { class: "ticket-text" }, t.text || "(images only)"),
      el("p", { class: "muted" }, `${t.ticket_id} · ${time(t.decided_at)} · ${t.locale}`,
        t.images.length ? ` · with ${t.images.join(" and ")}` : ""));
    const item = { node, form: null };
    item.form = answerForm(t, (done) => {
      const what = done.action === "resolved" ? `resolved with ${done.doc_id}` : "marked: no answer fits";
      q.open = Math.max(0, q.open - 1);
      openCount.textContent = `${q.open} open`;
      announce.textContent = `Ticket ${t.ticket_id} ${what}. The worker learns from it within seconds.`;
      const at = items.indexOf(item);
      items.splice(at, 1);
      node.remove();
      if (items.length) select(Math.min(at, items.length - 1));
      else list.replaceChildren(el("li", { class: "empty" }, "Nothing waits for an answer."));
    });
    node.append(item.form);
    node.addEventListener("focusin", () => { const i = items.indexOf(item); if (item.form.hidden) select(i, false); });
    items.push(item);
    list.append(node);
  });
  list.addEventListener("keydown", (event) => {
    if (event.target.closest("form") && !["ArrowDown", "ArrowUp"].includes(event.key)) return;
    if (event.target.closest("form") && event.target.type === "radio") return; // radios use arrows
    const i = items.findIndex((item) => item.node.tabIndex === 0);
    const moves = { ArrowDown: i + 1, j: i + 1, ArrowUp: i - 1, k: i - 1, Home: 0, End: items.length - 1 };
    if (event.key in moves && !event.target.closest("form")) {
      event.preventDefault();
      select(Math.max(0, Math.min(items.length - 1, moves[event.key])));
    } else if (event.key === "Enter" && event.target === items[i].node) {
      event.preventDefault();
      const first = items[i].form.querySelector("input:checked") || items[i].form.querySelector("input");
      if (first) first.focus();
    }
  });
  select(0, true); // the keys work at once
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
                el("td", {}, h.thumbnail && h.thumbnail.startsWith("data:image/jpeg;base64,")
                    ? el("img", { class: "thumb", src: h.thumbnail, alt: "", width: 48, height: 48 }) : null,
                  el("span", { class: "title" }, h.title || h.id),
                  el("div", { class: "muted" }, h.parent ? `${h.id} (of ${h.parent})` : h.id)),
                el("td", {}, h.kind), el("td", {}, h.score.toFixed(3))))))
          : el("p", {}, "Nothing found.")));
    } catch (error) {
      results.replaceChildren(el("p", { class: "error", role: "alert" }, error.message));
    }
  });
  show(form, results);
}

// -- Pipeline health and dead letters -------------------------------------------------------

let pipelineTimer = null;

function metricCard(id, title, body) {
  return el("section", { class: "card metric", id }, el("h2", {}, title), body);
}

async function pipelineView() {
  const box = el("div", { id: "pipeline" });
  show(el("h1", {}, "Pipeline health"), box);
  const draw = async () => {
    const p = await load("/v1/pipeline", box, "admin");
    if (!p) return;
    // one slot per scrape over the last hour, so the charts' x axis is always that hour
    const slots = Math.max(2, Math.round(3600 / p.every_s));
    const end = p.scraped_at || 0;
    const slot = (x) => slots - 1 - Math.round((end - x.at) / p.every_s);
    const series = (f) => {
      const out = new Array(slots).fill(null);
      for (const x of p.points) { const i = slot(x); if (i >= 0) out[i] = f(x); }
      return out;
    };
    const labels = (f) => {
      const out = new Array(slots).fill("no sample");
      for (const x of p.points) {
        const i = slot(x);
        if (i >= 0) out[i] = `${new Date(x.at * 1000).toLocaleTimeString()}: ${f(x)}`;
      }
      return out;
    };
    const latest = p.points.length ? p.points[p.points.length - 1] : null;
    const fmt = (v, unit) => (v === null || v === undefined ? "–" : `${v.toFixed(v < 10 ? 2 : 0)}${unit}`);
    const lagTopics = Object.keys(p.lag).sort();
    const reasons = Object.entries(p.dead_letters).sort((a, b) => b[1] - a[1]);
    box.replaceChildren(...[
      p.url === null
        ? el("p", { class: "error", id: "no-metrics" }, "The worker exports no metrics: set CROSSROUTE_WORKER__METRICS_PORT (or METRICS_URL) for the worker and this API.")
        : el("p", { class: "muted" }, `From ${p.url}, every ${p.every_s} s; ${p.points.length} intervals over the last hour.`),
      p.error ? el("p", { class: "error", role: "alert" }, p.error) : null,
      el("div", { class: "grid" },
        metricCard("lag", "Consumer lag (events behind)",
          el("div", {}, lagTopics.length ? el("table", {}, el("tbody", {}, lagTopics.map((t) =>
            el("tr", {}, el("th", { scope: "row" }, t), el("td", {}, String(p.lag[t])),
              el("td", { class: "spark" }, chart(`lag-${t}`, `lag of ${t}, last hour`,
                series((x) => (t in x.lag ? x.lag[t] : null)), labels((x) => x.lag[t] ?? "–")))))))
            : el("p", { class: "muted" }, "No partition consumed yet."))),
        metricCard("rate", "Events/s",
          el("div", {}, el("p", { class: "big", id: "events-now" }, fmt(latest && latest.events_per_s, "/s")),
            chart("events-chart", "events per second, last hour", series((x) => x.events_per_s),
              labels((x) => fmt(x.events_per_s, "/s"))), axis("an hour ago", "now"))),
        metricCard("freshness", "Freshness (event to searchable, mean s)",
          el("div", {}, el("p", { class: "big", id: "freshness-now" }, fmt(latest && latest.freshness_s, " s")),
            chart("freshness-chart", "mean freshness, last hour", series((x) => x.freshness_s),
              labels((x) => fmt(x.freshness_s, " s"))), axis("an hour ago", "now"),
            el("p", { class: "muted" }, "Measured when documents are indexed; none indexed: –"))),
        metricCard("dead", "Dead letters by reason",
          el("div", {}, reasons.length
            ? el("table", { id: "dead-reasons" }, el("tbody", {}, reasons.map(([r, n]) =>
                el("tr", {}, el("th", { scope: "row" }, r), el("td", {}, String(n))))))
            : el("p", { class: "muted" }, "None."),
            el("p", {}, el("a", { href: "#/deadletters" }, "Browse the dead letters")),
            el("p", { class: "muted" }, `Stale writes refused: ${p.stale_writes}`))),
        metricCard("spaces", "Documents per space",
          el("table", { id: "space-docs" }, el("tbody", {}, Object.entries(p.spaces).map(([id, sp]) =>
            el("tr", {}, el("th", { scope: "row" }, id), el("td", {}, sp.role || ""),
              el("td", {}, sp.documents === null ? "no index" : String(sp.documents)))))))),
    ].filter(Boolean));
  };
  await draw();
  pipelineTimer = setInterval(() => { if (document.getElementById("pipeline")) draw(); }, 10000);
}

async function deadLettersView() {
  const detail = el("section", { id: "dead-detail", class: "card", "aria-live": "polite", hidden: true });
  const box = el("div", {});
  show(el("h1", {}, "Dead letters"), el("p", { class: "muted" }, "The newest first; open one to see why and what it held. Payloads are shown as text."), box, detail);
  const letters = await load("/v1/deadletters?limit=100", box, "admin");
  if (!letters) return;
  if (!letters.length) {
    box.replaceChildren(el("p", {}, "No dead letters."));
    return;
  }
  const open = (d) => {
    detail.hidden = false;
    detail.replaceChildren(
      el("h2", {}, `${d.reason}: ${d.source_topic ?? "?"} partition ${d.source_partition ?? "?"} offset ${d.source_offset ?? "?"}`),
      el("p", { id: "dead-error" }, d.error),
      el("p", { class: "muted" }, `key ${d.key ?? "(none)"} · ${d.payload_bytes} bytes${d.truncated ? " (first 8 KiB shown)" : ""} · dead-letter offset ${d.partition}/${d.offset}`),
      el("pre", { id: "dead-payload", class: "payload" }, d.payload));
    detail.focus();
  };
  detail.tabIndex = -1;
  box.replaceChildren(el("table", { id: "dead-letters" },
    el("thead", {}, el("tr", {}, ...["when", "reason", "source", "key", ""].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, letters.map((d) => el("tr", { "data-offset": `${d.partition}/${d.offset}` },
      el("td", {}, d.timestamp_ms ? new Date(d.timestamp_ms).toLocaleString() : ""),
      el("td", {}, d.reason),
      el("td", {}, `${d.source_topic ?? "?"}/${d.source_partition ?? "?"}@${d.source_offset ?? "?"}`),
      el("td", {}, d.key ?? ""),
      el("td", {}, el("button", { type: "button", class: "open", onclick: () => open(d) }, "Open")))))));
}

// -- Models and spaces -----------------------------------------------------------------------

const short = (hex) => (hex ? hex.slice(0, 12) : "–");

function gateCard(id, gate) {
  if (!gate) return el("p", { class: "muted" }, "Not gated yet (crossroute gate --candidate … records its verdict here).");
  const metrics = gate.slices.length ? Object.keys(gate.slices[0].candidate) : [];
  return el("div", { class: "gate" },
    el("p", { class: `decision ${gate.go ? "auto" : "human"}`, id: `gate-${id}` },
      `${gate.go ? "GO" : "NO-GO"} against ${gate.baseline} (tenant ${gate.tenant}, ${new Date(gate.created_at * 1000).toLocaleString()})`),
    gate.reasons.length ? el("ul", {}, gate.reasons.map((r) => el("li", {}, r))) : null,
    el("table", { class: "slices", id: `slices-${id}` },
      el("thead", {}, el("tr", {}, ...["dataset", "slice", "queries", ...metrics.map((m) => `${m} (Δ)`)].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, gate.slices.map((row) => el("tr", { class: row.judged ? "" : "muted" },
        el("td", {}, row.dataset), el("td", {}, row.slice), el("td", {}, String(row.queries)),
        metrics.map((m) => el("td", { class: row.deltas[m] < 0 ? "worse" : "" },
          `${row.candidate[m].toFixed(3)} (${row.deltas[m] >= 0 ? "+" : ""}${row.deltas[m].toFixed(3)})`)))))));
}

async function modelsView() {
  const box = el("div", { id: "spaces" });
  show(el("h1", {}, "Models and spaces"),
    el("p", { class: "muted" }, "Every embedding space registered here: its bundle, its index, its role, and the gate's verdict."), box);
  const spaces = await load("/v1/spaces", box, "admin");
  if (!spaces) return;
  const ids = Object.keys(spaces);
  if (!ids.length) { box.replaceChildren(el("p", {}, "No space registered yet (the worker registers its own).")); return; }
  box.replaceChildren(...ids.map((id) => {
    const sp = spaces[id];
    const m = sp.manifest;
    return el("section", { class: "card space", "data-space-id": id },
      el("h2", {}, id, " ", sp.role ? el("span", { class: `chip role-${sp.role}` }, sp.role) : null),
      el("table", { class: "facts" }, el("tbody", {},
        el("tr", {}, el("th", { scope: "row" }, "index"), el("td", {}, `${sp.index} · ${sp.documents === null ? "no index" : `${sp.documents} documents`}`)),
        el("tr", {}, el("th", { scope: "row" }, "registered"), el("td", {}, new Date(sp.registered_at * 1000).toLocaleString())),
        el("tr", {}, el("th", { scope: "row" }, "bundle"), el("td", {}, sp.bundle)),
        m ? [
          el("tr", {}, el("th", { scope: "row" }, "spec"), el("td", { class: "spec" }, `${m.name} v${m.version} · ${m.dim} dims · OCR ${m.ocr ? "yes" : "no"} · manifest ${short(m.digest)}`)),
          el("tr", {}, el("th", { scope: "row" }, "text encoder"), el("td", {}, Object.values(m.text).join(" "))),
          el("tr", {}, el("th", { scope: "row" }, "image encoder"), el("td", {}, Object.values(m.image).join(" "))),
          el("tr", {}, el("th", { scope: "row" }, "projection"), el("td", {}, m.projection
            ? `weights ${short(m.projection.weights_sha256)} · training data ${short(m.projection.training_data_digest)}` : "none")),
        ] : el("tr", {}, el("th", { scope: "row" }, "manifest"), el("td", { class: "error" }, sp.manifest_error || "unreadable")))),
      el("h3", {}, "Gate"), gateCard(id, sp.gate),
      el("h3", {}, "Eval reports"), reportsTable(id, sp.reports || []));
  }));
}

function reportsTable(spaceId, reports) {
  if (!reports.length) {
    return el("p", { class: "muted" }, "None kept (crossroute eval DATASET --model BUNDLE --report FILE keeps the latest per dataset).");
  }
  const shown = ["recall@10", "mrr@10", "ndcg@10"];
  return el("table", { class: "reports", id: `reports-${spaceId}` },
    el("thead", {}, el("tr", {}, ...["dataset", "when", "queries", ...shown, ""].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, reports.map((r) => el("tr", { "data-report": r.name },
      el("td", {}, r.dataset), el("td", {}, new Date(r.created_at * 1000).toLocaleString()),
      el("td", {}, r.queries === null || r.queries === undefined ? "" : String(r.queries)),
      shown.map((m) => el("td", {}, m in r.metrics ? r.metrics[m].toFixed(3) : "–")),
      el("td", {}, r.html ? el("button", { type: "button", class: "download",
        onclick: () => downloadReport(spaceId, r.name) }, "Download HTML") : null)))));
}

/** Fetch a kept report with the key and save it (it opens from the disk, outside the console). */
async function downloadReport(spaceId, name) {
  const res = await fetch(`/v1/spaces/${encodeURIComponent(spaceId)}/reports/${encodeURIComponent(name)}`,
    { headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` } });
  if (!res.ok) return;
  const url = URL.createObjectURL(await res.blob());
  const link = el("a", { href: url, download: `${spaceId}-${name}.html` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// -- shell -----------------------------------------------------------------------------------

const PAGES = { route: routeView, search: searchView, queue: queueView, pipeline: pipelineView,
                deadletters: deadLettersView, models: modelsView };

async function render() {
  if (pipelineTimer) { clearInterval(pipelineTimer); pipelineTimer = null; }
  const [page, arg] = ((location.hash.replace(/^#\//, "").split("?")[0]) || "route").split("/");
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
  if (page === "decision" && arg) decisionView(decodeURIComponent(arg));
  else (PAGES[page] || routeView)();
}

window.addEventListener("hashchange", render);
render();
