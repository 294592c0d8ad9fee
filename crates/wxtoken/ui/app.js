// wxtoken's dashboard: plain DOM, no dependencies. Every value from the server is put
// in the page with textContent or an attribute, never parsed as HTML. No token or
// ticket value is ever requested: only status, timeline, alerts and clients.
"use strict";

const KEY_ITEM = "wxtoken.key";
const REFRESH_MS = 5000;
const DAY_MS = 24 * 3600 * 1000;
const SVG = "http://www.w3.org/2000/svg";

let timer = null;
let isAdmin = false;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function duration(secs) {
  if (secs === null || secs === undefined || !isFinite(secs)) return "–";
  const s = Math.max(0, Math.floor(secs));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m ${String(r).padStart(2, "0")}s`;
  return `${r}s`;
}

function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function clock(unixMs) {
  return new Date(unixMs).toLocaleString();
}

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(KEY_ITEM) };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    throw new HttpError(response.status, err.code || "http_" + response.status,
      err.message || "the server answered " + response.status);
  }
  return data;
}

// ---- sign-in ----

function showSignedIn(signedIn) {
  $("sign-in").hidden = signedIn;
  $("dashboard").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  if (!signedIn) {
    $("whoami").textContent = "";
    $("updated").textContent = "";
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY_ITEM);
  if (timer) clearInterval(timer);
  timer = null;
  isAdmin = false;
  $("apps").replaceChildren();
  $("alerts").replaceChildren();
  $("admin").hidden = true;
  showSignedIn(false);
  $("sign-in-error").textContent = message || "";
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  $("key").value = "";
  await start();
}

async function start() {
  $("sign-in-error").textContent = "";
  try {
    await refresh();
  } catch (e) {
    signOut(e.status === 401 || e.status === 403
      ? "That key was refused: " + e.message
      : "Could not reach the server: " + e.message);
    return;
  }
  showSignedIn(true);
  if (timer) clearInterval(timer);
  timer = setInterval(() => refresh().catch(onRefreshError), REFRESH_MS);
}

function onRefreshError(e) {
  if (e.status === 401) {
    signOut("The key is no longer accepted: " + e.message);
    return;
  }
  $("load-error").textContent = "Could not refresh: " + e.message;
}

// ---- one refresh of everything ----

async function refresh() {
  const apps = (await api("GET", "/v1/apps")).apps || [];
  const [timelines, alerts, clients] = await Promise.all([
    Promise.all(apps.map((a) =>
      api("GET", `/v1/apps/${encodeURIComponent(a.id)}/timeline`)
        .then((t) => t.events || [])
        .catch(() => null))),
    api("GET", "/v1/alerts").catch((e) => (e.status === 404 ? { open: [], recent: [] } : e)),
    api("GET", "/v1/clients").catch((e) => e),
  ]);
  isAdmin = !(clients instanceof Error) && clients !== null && Array.isArray(clients.clients);
  renderApps(apps, timelines);
  renderAlerts(alerts);
  renderAdmin(isAdmin ? clients.clients : null);
  $("load-error").textContent = "";
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  tick();
}

// ---- apps ----

function fact(label, valueNode, attrs) {
  return el("div", attrs, el("dt", {}, label), el("dd", {}, valueNode));
}

function quotaText(app) {
  const q = app.quota;
  if (q && typeof q === "object") {
    const budget = q.budget === null || q.budget === undefined ? "no budget" : q.budget;
    return `${q.used ?? app.upstream_calls_today} / ${budget}` + (q.guarded ? " (guarded)" : "");
  }
  return `${app.upstream_calls_today} (no budget reported)`;
}

function wechatQuota(app) {
  const w = app.quota && app.quota.wechat;
  if (!w || typeof w !== "object") return null;
  if (w.daily_limit !== undefined && w.used !== undefined) {
    return `${w.used} / ${w.daily_limit} (${w.remain ?? "?"} left)` +
      (w.fetched_at ? `, as of ${clock(w.fetched_at * 1000)}` : "");
  }
  const parts = Object.entries(w).map(([k, v]) =>
    `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`);
  return parts.join(", ");
}

function renderApp(app, events) {
  const token = app.token;
  const facts = el("dl", { class: "facts" },
    fact("token age", el("span", token ? { "data-age-from": token.fetched_at * 1000 } : {}, "–")),
    fact("time left", el("span", token ? { "data-left-until": token.expires_at * 1000 } : {}, "–")),
    fact("generation", token ? token.generation : "–"),
    fact("last refresh", token ? clock(token.fetched_at * 1000) : "never"),
    fact("next refresh in", duration(app.next_refresh_in)),
    fact("upstream calls today", quotaText(app), { class: "quota" }),
  );
  const wq = wechatQuota(app);
  if (wq) facts.append(fact("WeChat's quota", wq));

  const head = el("div", { class: "app-head" },
    el("span", { class: "id" }, app.id),
    el("span", { class: "kind" }, app.kind + (app.mode ? ` (${app.mode})` : "")),
    el("span", { class: "appid" }, app.appid),
    el("span", { class: "state " + app.state }, app.state),
  );
  if (isAdmin) {
    const remove = el("button", { type: "button", class: "remove-app" }, "Remove app");
    remove.addEventListener("click", () => removeApp(app.id));
    head.append(remove);
  }

  const node = el("div", { class: "app", "data-app": app.id }, head, facts);
  if (app.last_error) {
    const e = app.last_error;
    node.append(el("p", { class: "last-error" },
      `last error (${clock(e.at * 1000)}, ${e.class}` +
      (e.wechat_errcode !== null && e.wechat_errcode !== undefined ? `, errcode ${e.wechat_errcode}` : "") +
      `): ${e.message}`));
  }
  const tickets = Object.entries(app.tickets || {});
  if (tickets.length > 0) {
    node.append(el("p", { class: "tickets" }, "tickets: " + tickets.map(([type, t]) =>
      `${type} ${t.state}` + (t.ticket ? ` (${duration(t.ticket.expires_in)} left)` : "") +
      (t.last_error ? ` – ${t.last_error.message}` : "")).join("; ")));
  }
  node.append(renderTimeline(events));
  return node;
}

function renderApps(apps, timelines) {
  const list = apps.map((app, i) => renderApp(app, timelines[i]));
  if (list.length === 0) list.push(el("p", {}, "No app is visible to this key."));
  $("apps").replaceChildren(...list);
}

// ---- the 24 h timeline: one minute per unit, a mark per event ----

function renderTimeline(events) {
  const now = Date.now();
  const from = now - DAY_MS;
  const box = svg("svg", { class: "timeline", viewBox: "0 0 1440 28", preserveAspectRatio: "none", role: "img" });
  const label = svg("title", {});
  label.textContent = events === null
    ? "timeline unavailable"
    : `${events.length} events in the last 24 h`;
  box.append(label);
  for (let h = 1; h < 24; h++) {
    box.append(svg("line", { class: "hour", x1: h * 60, x2: h * 60, y1: 0, y2: 28 }));
  }
  for (const e of events || []) {
    if (e.at < from) continue;
    // Three minutes wide so a single mark shows at any page width; the newest end inside.
    const x = Math.min(1437, (e.at - from) / 60000);
    const failed = e.event === "failed";
    const mark = svg("rect", {
      class: "mark " + (failed ? "failed" : "refreshed"),
      x: x.toFixed(2), y: failed ? 2 : 6, width: 3, height: failed ? 24 : 16,
      "data-at": e.at,
      "data-credential": e.credential,
      "data-generation": e.generation ?? "",
    });
    const tip = svg("title", {});
    tip.textContent = `${clock(e.at)} ${e.credential} ${e.event}` +
      (e.generation !== null && e.generation !== undefined ? ` (generation ${e.generation})` : "") +
      (e.error ? `: ${e.error}` : "");
    mark.append(tip);
    box.append(mark);
  }
  const shown = (events || []).filter((e) => e.at >= from);
  const failures = shown.filter((e) => e.event === "failed").length;
  const summary = events === null
    ? "timeline unavailable"
    : `${count(shown.length - failures, "refresh", "refreshes")}, ` +
      `${count(failures, "failure", "failures")} in 24 h`;
  const axis = el("div", { class: "axis" },
    el("span", {}, "24 h ago"), el("span", { class: "timeline-summary" }, summary), el("span", {}, "now"));
  return el("div", { class: "timeline-box" }, box, axis);
}

// ---- alerts ----

function renderAlerts(alerts) {
  const box = $("alerts");
  if (alerts instanceof Error) {
    box.replaceChildren(el("p", { class: "none" }, "alerts unavailable: " + alerts.message));
    return;
  }
  const open = (alerts && alerts.open) || [];
  const recent = (alerts && alerts.recent) || [];
  const rows = [];
  for (const a of open) {
    rows.push(el("div", { class: "alert open" },
      el("strong", {}, `${a.kind}`), ` ${a.app ?? ""} – ${a.summary} (since ${clock(a.since * 1000)})`));
  }
  for (const a of recent) {
    rows.push(el("div", { class: "alert " + (a.event === "resolved" ? "resolved" : "recent") },
      el("strong", {}, `${a.event} ${a.kind}`), ` ${a.app ?? ""} – ${a.summary} (${clock(a.at * 1000)})`));
  }
  if (rows.length === 0) rows.push(el("p", { class: "none" }, "no alerts"));
  box.replaceChildren(...rows);
}

// ---- admin ----

function renderAdmin(clients) {
  $("admin").hidden = clients === null;
  $("whoami").textContent = clients === null ? "" : "admin";
  if (clients === null) return;
  const rows = clients.map((c) => {
    const revoke = el("button", { type: "button", class: "revoke-client" }, "Revoke");
    revoke.addEventListener("click", () => revokeClient(c.name));
    const list = (v) => (Array.isArray(v) ? v.join(", ") : String(v ?? ""));
    return el("tr", { "data-client": c.name },
      el("td", {}, c.name), el("td", {}, list(c.apps)), el("td", {}, list(c.scopes)), el("td", {}, revoke));
  });
  $("clients").tBodies[0].replaceChildren(...rows);
}

async function adminAction(action) {
  $("admin-error").textContent = "";
  try {
    await action();
    await refresh();
  } catch (e) {
    $("admin-error").textContent = e.message;
  }
}

function removeApp(id) {
  if (!confirm(`Remove app ${id}? Its routes answer 404 at once.`)) return;
  adminAction(() => api("DELETE", `/v1/apps/${encodeURIComponent(id)}`));
}

function revokeClient(name) {
  if (!confirm(`Revoke client ${name}? Its key stops working at once.`)) return;
  adminAction(() => api("DELETE", `/v1/clients/${encodeURIComponent(name)}`));
}

function addClient(event) {
  event.preventDefault();
  const name = $("client-name").value.trim();
  const appsRaw = $("client-apps").value.trim();
  const apps = appsRaw === "*" ? ["*"] : appsRaw.split(",").map((s) => s.trim()).filter(Boolean);
  const scopes = [...document.querySelectorAll("#add-client input[name=scope]:checked")].map((i) => i.value);
  adminAction(async () => {
    const created = await api("POST", "/v1/clients", { name, apps, scopes });
    $("new-key-value").textContent = created.key;
    $("new-key").hidden = false;
    $("client-name").value = "";
    $("client-apps").value = "";
  });
}

function forgetNewKey() {
  $("new-key-value").textContent = "";
  $("new-key").hidden = true;
}

// ---- the one-second tick: ages and times left move between refreshes ----

function tick() {
  const now = Date.now();
  for (const node of document.querySelectorAll("[data-age-from]")) {
    node.textContent = duration((now - Number(node.dataset.ageFrom)) / 1000);
  }
  for (const node of document.querySelectorAll("[data-left-until]")) {
    const left = (Number(node.dataset.leftUntil) - now) / 1000;
    node.textContent = left > 0 ? duration(left) : "expired";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(""));
  $("add-client").addEventListener("submit", addClient);
  $("new-key-done").addEventListener("click", forgetNewKey);
  setInterval(tick, 1000);
  if (sessionStorage.getItem(KEY_ITEM)) start();
});
