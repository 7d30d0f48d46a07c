// trioproxy's dashboard: polls /dashboard/api/state and redraws. Every string from the server
// goes into the page through textContent (never innerHTML): request ids and error texts come
// from outside.
"use strict";

const STATE_URL = "/dashboard/api/state";
const POLL_MS = 1000;
const RETRY_MAX_MS = 8000;
const FETCH_TIMEOUT_MS = 10000;
const KEY_STORAGE = "trioproxy.dashboard.key";
const WINDOWS = ["rpm", "tpm", "utpm", "rpd", "tpd"];
const WINDOW_LABELS = {
  rpm: "requests / min", tpm: "tokens / min", utpm: "uncached tokens / min", rpd: "requests / day", tpd: "tokens / day",
};
// Shown only where it has a limit: most providers have no uncached bucket.
const OPTIONAL_WINDOWS = new Set(["utpm"]);

// A declared window's name, `requests_4h` or `tokens_30d_fixed`, as `requests / 4h (fixed)`.
function windowLabel(name) {
  const [, kind, length, metering] = name.match(/^(.*)_(\d+[smhd])(?:_(\w+))?$/) || [null, name, "", ""];
  return `${kind.replace("_", " ")} / ${length}${metering ? ` (${metering})` : ""}`;
}
const COLOURS = ["#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599"];

const $ = (id) => document.getElementById(id);
// Requests refused before any provider was chosen (bad input, no key) are counted under "-".
const providerLabel = (name) => (name === "-" ? "no provider" : name);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// A table row; `kind` "head": all header cells, "data": none, otherwise the first one.
function row(cells, kind) {
  const tr = document.createElement("tr");
  cells.forEach((cell, i) => tr.append(el(kind === "head" || (kind !== "data" && i === 0) ? "th" : "td", cell)));
  return tr;
}

const number = new Intl.NumberFormat("en");
const fmt = (value) => (value === null || value === undefined ? "-" : number.format(value));

function duration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

// ---------------------------------------------------------------- connection and key

let key = sessionStorage.getItem(KEY_STORAGE) || "";
let retryMs = POLL_MS;
let timer = null;

function setConnection(text, kind) {
  const badge = $("connection");
  badge.textContent = text;
  badge.className = "badge " + kind;
}

function askForKey(message) {
  $("key-panel").hidden = false;
  $("content").hidden = true;
  const error = $("key-error");
  error.hidden = !message;
  error.textContent = message || "";
  setConnection("key required", "warn");
  $("key-input").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key-input").value.trim();
  sessionStorage.setItem(KEY_STORAGE, key);
  poll();
});

async function errorMessage(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (_) {
    return response.statusText;
  }
}

async function poll() {
  clearTimeout(timer);
  let next = POLL_MS;
  try {
    const headers = key ? { authorization: "Bearer " + key } : {};
    // A proxy that stops answering counts as lost after a while, not never.
    const response = await fetch(STATE_URL, { headers, cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (response.status === 401) {
      const why = await errorMessage(response);
      askForKey(key ? `The key was refused (401): ${why}` : "");
      return; // wait for a key; the form polls again
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}: ${await errorMessage(response)}`);
    render(await response.json());
    retryMs = POLL_MS;
    setConnection("live", "ok");
  } catch (error) {
    // Lost connection or a restarting proxy: keep trying, a little less often each time.
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    next = retryMs;
    setConnection(`reconnecting in ${Math.round(next / 1000)} s (${error.message})`, "bad");
  }
  timer = setTimeout(poll, next);
}

// ---------------------------------------------------------------- providers

let countdowns = []; // [{node, until (performance.now() ms), reason}]

function tickCountdowns() {
  const now = performance.now();
  for (const c of countdowns) {
    const left = (c.until - now) / 1000;
    c.node.textContent = left > 0 ? `cooling down, ${duration(left)} left (${c.reason})` : "cooldown over";
  }
}
setInterval(tickCountdowns, 1000);

// Where a limit comes from: the provider's stated figure (and its age), a configured ceiling, a plan preset.
function limitSource(source) {
  if (!source) return "";
  if (source.source === "provider" && source.age_seconds !== undefined) return ` (provider's figure, ${duration(source.age_seconds)} old)`;
  return ` (${source.source})`;
}

function gauge(name, window, source) {
  const box = el("div", null, "gauge");
  const limit = window.limit;
  const remaining = window.provider_remaining;
  box.append(el("span", WINDOW_LABELS[name] || windowLabel(name), "gauge-name"));
  const meter = document.createElement("meter");
  meter.min = 0;
  meter.max = limit || 1;
  meter.value = limit ? Math.min(window.used, limit) : 0;
  meter.low = (limit || 1) * 0.7;
  meter.high = (limit || 1) * 0.9;
  meter.optimum = 0;
  box.append(meter);
  let text = limit ? `${fmt(window.used)} / ${fmt(limit)}${limitSource(source)}` : `${fmt(window.used)} (no limit)`;
  if (remaining !== undefined) text += `, provider says ${fmt(remaining)} left`;
  box.append(el("span", text, "gauge-text"));
  return box;
}

// A provider's state for one route: a missing model is the route's problem, not the provider's.
function providerBadge(provider) {
  if (provider.model_offered === false) return ["model missing", "bad"];
  if (provider.usable) return ["up", "ok"];
  return [provider.up ? "not usable" : "down", "bad"];
}

function providerCard(provider, receivedAt) {
  const card = el("article", null, "card");
  card.dataset.provider = provider.name;
  const head = el("div", null, "card-head");
  head.append(el("h3", provider.name));
  const [badge, kind] = providerBadge(provider);
  head.append(el("span", badge, "badge " + kind));
  card.append(head);
  const candidates = provider.candidates || [provider.model];
  if (provider.model_offered === false) {
    card.dataset.missing = "";
    card.append(el("p", `models ${candidates.join(", ")}: none offered here, requests for this route skip ${provider.name}`, "error missing"));
  } else {
    // The model serving now; the other candidates would take over if the catalogue drops it.
    const others = candidates.filter((model) => model !== provider.model);
    const rest = others.length ? `; candidates: ${others.join(", ")}` : "";
    card.append(el("p", `model ${provider.model}${provider.model_offered ? " (offered)" : ""}${rest}`, "muted"));
  }
  if (provider.served_since_start) card.append(el("p", servedLine(provider.served_since_start), "muted served"));
  if (provider.last_error) card.append(el("p", `last error: ${provider.last_error}`, "error"));
  for (const [account, state] of Object.entries(provider.accounts)) {
    const section = el("div", null, "account");
    section.dataset.account = account;
    section.append(el("h4", account));
    const cooldown = el("p", null, "cooldown");
    if (state.cooldown_seconds > 0) {
      cooldown.classList.add("active");
      countdowns.push({ node: cooldown, until: receivedAt + state.cooldown_seconds * 1000, reason: state.cooldown_reason });
    } else {
      cooldown.textContent = state.half_open ? "cooldown over, next request probes" : "no cooldown";
    }
    section.append(cooldown);
    for (const name of [...WINDOWS, ...(state.other_windows || [])]) {
      if (state[name] && (state[name].limit != null || !OPTIONAL_WINDOWS.has(name))) {
        section.append(gauge(name, state[name], (state.limit_sources || {})[name]));
      }
    }
    const reset = new Date(Date.now() + state.day_resets_seconds * 1000);
    section.append(el("p",
      `today: ${fmt(state.tpd.used)} tokens, ${fmt(state.rpd.used)} requests; day resets in ` +
      `${duration(state.day_resets_seconds)} (${reset.toLocaleTimeString()})`, "muted day"));
    card.append(section);
  }
  return card;
}

// Requests and prompt tokens since start, and the share of them the provider's prompt cache held.
function servedLine(served) {
  const cached = served.cached_tokens && served.prompt_tokens
    ? `, ${Math.round((100 * served.cached_tokens) / served.prompt_tokens)} % of them from its prompt cache (${fmt(served.cached_tokens)})`
    : "";
  return `served since start: ${fmt(served.requests)} requests, ${fmt(served.prompt_tokens)} prompt tokens${cached}`;
}

function routeBlock(route, receivedAt) {
  const block = el("section", null, "route");
  block.dataset.route = route.name;
  const head = el("div", null, "route-head");
  head.append(el("h3", route.name));
  if (route.aliases.length) head.append(el("span", `aliases: ${route.aliases.join(", ")}`, "muted"));
  head.append(el("span", `${fmt(route.served_since_start)} served since start`, "muted"));
  const cards = el("div", null, "cards");
  cards.append(...route.providers.map((p) => providerCard(p, receivedAt)));
  block.append(head, cards);
  return block;
}

function renderRoutes(routes) {
  countdowns = [];
  const receivedAt = performance.now();
  $("routes").replaceChildren(...routes.map((r) => routeBlock(r, receivedAt)));
  tickCountdowns();
}

// ---------------------------------------------------------------- traffic

const charts = {};

function drawChart(id, minutes, perProvider) {
  const names = Object.keys(perProvider).sort();
  const data = [minutes, ...names.map((n) => perProvider[n])];
  const signature = names.join(",");
  let chart = charts[id];
  if (chart && chart.signature !== signature) {
    chart.plot.destroy();
    chart = null;
  }
  if (!chart) {
    const holder = $(id);
    const options = {
      width: Math.max(280, holder.clientWidth || 480),
      height: 180,
      series: [{}, ...names.map((name, i) => ({ label: providerLabel(name), stroke: COLOURS[i % COLOURS.length], width: 2 }))],
      axes: [{}, { size: 60 }],
      legend: { live: false },
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    };
    chart = charts[id] = { plot: new uPlot(options, data, holder), signature };
  } else {
    chart.plot.setData(data);
  }
}

function pairs(hour, start) {
  const keys = [...new Set([...Object.keys(hour), ...Object.keys(start)])].sort();
  return keys.map((k) => [k, fmt(hour[k] || 0), fmt(start[k] || 0)]);
}

function fillTable(id, header, rows, empty) {
  const table = $(id);
  const caption = table.querySelector("caption");
  table.replaceChildren(caption, row(header, "head"));
  if (!rows.length) table.append(row([empty, ...header.slice(1).map(() => "")]));
  rows.forEach((cells) => table.append(row(cells)));
}

function quantiles(q) {
  return q ? `${fmt(q.p50_ms)} / ${fmt(q.p90_ms)} / ${fmt(q.p99_ms)}` : "-";
}

function renderTraffic(traffic) {
  const hour = traffic.last_hour, start = traffic.since_start;
  drawChart("chart-requests", traffic.minutes, traffic.per_minute.requests);
  drawChart("chart-tokens", traffic.minutes, traffic.per_minute.tokens);
  const providers = [...new Set([...Object.keys(hour.requests), ...Object.keys(start.requests)])].sort();
  fillTable("totals", ["provider", "requests, hour", "since start", "tokens, hour", "since start"],
    providers.map((p) => [providerLabel(p), fmt(hour.requests[p] || 0), fmt(start.requests[p] || 0), fmt(hour.tokens[p] || 0), fmt(start.tokens[p] || 0)]),
    "no requests yet");
  fillTable("reroutes", ["reason", "last hour", "since start"], pairs(hour.reroutes, start.reroutes), "none");
  fillTable("errors", ["status", "last hour", "since start"], pairs(hour.errors, start.errors), "none");
  const latencyRows = [];
  for (const p of providers) {
    latencyRows.push([`${providerLabel(p)} latency`, quantiles(hour.latency[p]), quantiles(start.latency[p])]);
    if (start.first_byte[p]) latencyRows.push([`${p} first byte`, quantiles(hour.first_byte[p]), quantiles(start.first_byte[p])]);
  }
  fillTable("latency", ["p50 / p90 / p99", "last hour", "since start"], latencyRows, "no requests yet");
}

// One row per client: its weight, requests by provider, tokens, failovers and budgets.
function renderClients(clients) {
  const rows = Object.entries(clients || {}).map(([name, c]) => {
    const byProvider = {};
    for (const providers of Object.values(c.routes)) {
      for (const [p, u] of Object.entries(providers)) {
        if (p !== "-" && u.requests) byProvider[p] = (byProvider[p] || 0) + u.requests;
      }
    }
    const budgets = Object.entries(c.budgets || {}).flatMap(([scope, windows]) =>
      Object.entries(windows).map(([w, s]) => `${scope === "*" ? "" : scope + " "}${w} ${fmt(s.used)}/${fmt(s.limit)}`));
    const t = c.total;
    return [name, c.weight === null ? "-" : c.weight, fmt(t.requests),
      Object.entries(byProvider).sort().map(([p, n]) => `${p} ${fmt(n)}`).join(", ") || "-",
      `${fmt(t.prompt_tokens)} (${fmt(t.cached_tokens)} cached) / ${fmt(t.completion_tokens)}`,
      fmt(t.failovers), fmt(t.over_budget), budgets.join(", ") || "-"];
  });
  fillTable("clients", ["client", "weight", "requests", "by provider", "tokens in (cached) / out", "failovers",
    "over budget", "budgets"], rows, "no clients yet");
}

let shownRecent = ""; // the newest request shown: an unchanged list is not rebuilt every second

function renderRecent(recent) {
  const newest = recent.length ? `${recent.length} ${recent[0].time} ${recent[0].request_id}` : "";
  if (newest === shownRecent) return;
  shownRecent = newest;
  const rows = recent.map((r) => {
    const tr = row([
      new Date(r.time * 1000).toLocaleTimeString(),
      r.request_id, r.api, r.route, r.provider, r.reason, r.stream ? "yes" : "no", r.status,
      `${fmt(r.prompt_tokens)} / ${fmt(r.completion_tokens)}`, fmt(r.latency_ms), fmt(r.first_byte_ms),
      r.message || "",
    ], "data");
    if (r.status !== 200) tr.className = "failed";
    return tr;
  });
  $("recent").querySelector("tbody").replaceChildren(...rows);
}

function render(state) {
  $("key-panel").hidden = true;
  $("content").hidden = false;
  const names = state.routes.map((r) => r.name);
  $("model").textContent = `${names.length > 1 ? "models" : "model"} ${names.join(", ")}`;
  $("access").textContent = state.keys_required ? "client key required" : "open: no client keys set";
  $("uptime").textContent = `up ${duration(state.traffic.now - state.traffic.started)}`;
  renderRoutes(state.routes);
  renderTraffic(state.traffic);
  renderClients(state.clients);
  renderRecent(state.traffic.recent);
  fillTable("unknown-paths", ["method", "path", "requests"],
    state.refusals.unknown_paths.map((p) => [p.method, p.path, fmt(p.count)]), "none");
}

poll();
