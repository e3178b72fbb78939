// Shoal dashboard: polls /api/v1/... (node/http/api.py) and draws plain tables. No framework.
// When the node it reads from stops answering, it says so and moves to another node's API
// (every node's HTTP address is in /api/v1/cluster), so the page survives losing its node.
"use strict";

const POLL_MS = 1500;          // one refresh of the visible page
const TIMEOUT_MS = 2500;       // a node slower than this counts as lost
const CHAOS_POLL_MS = 10000;   // reports change rarely
const EVENTS_MAX = 60;

const state = {
  base: null,            // HOST:PORT of the node read from; null = the node that served this page
  servedBy: null,        // {id, http_address} of the node read from, as it says
  known: new Map(),      // node id -> http address, from the last cluster answer
  cluster: null,         // the last /api/v1/cluster answer
  tab: "overview",
  chaosAt: 0, chaosSelected: null, jobOpen: null,
  token: sessionStorage.getItem("shoal-token") || "",   // bearer token, once the cluster has tokens
};

// A cluster with tokens answers /api with 401 (403: a token that may not read). The page then
// asks for a token and keeps it for this tab only (sessionStorage), never in the URL.
class AuthError extends Error {}

// ---- DOM helpers (text only: nothing from the API is parsed as HTML) ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);
const badge = (text, kind) => h("span", {class: `badge ${kind || text}`}, text);
const table = (headers, rows, attrs) => h("table", attrs || {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
  h("tbody", {}, rows));
const empty = (text) => h("div", {class: "empty"}, text);

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
function ago(unixS) {
  if (!unixS) return "–";
  return `${seconds(Math.max(0, Date.now() / 1000 - unixS))} ago`;
}
const clock = (unixS) => new Date(unixS * 1000).toLocaleTimeString();
function bar(percent) {
  const p = percent === null || percent === undefined ? 0 : Math.max(0, Math.min(100, percent));
  return h("span", {}, h("span", {class: "bar"}, h("span", {style: `width:${p}%`})), ` ${percent === null || percent === undefined ? "?" : p.toFixed(1)} %`);
}

// ---- talking to a node, and moving to another when it is lost ----

function url(base, path) { return base === null ? path : `${location.protocol}//${base}${path}`; }

async function getJson(base, path) {
  const control = new AbortController();
  const timer = setTimeout(() => control.abort(), TIMEOUT_MS);
  try {
    const headers = state.token ? {Authorization: `Bearer ${state.token}`} : {};
    const response = await fetch(url(base, path), {signal: control.signal, cache: "no-store", headers});
    if (response.status === 401 || response.status === 403) {
      const why = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
      throw new AuthError(why.error || `HTTP ${response.status}`);
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return await response.json();
  } catch (error) {
    if (error instanceof AuthError) throw error;
    throw new Error(error.name === "AbortError" ? `no answer within ${TIMEOUT_MS / 1000} s` : error.message);
  } finally {
    clearTimeout(timer);
  }
}

function describeCurrent() {
  const where = state.base === null ? location.host : state.base;
  return state.servedBy ? `${state.servedBy.id} (${where})` : where;
}

function askToken(message) {
  $("login").hidden = false;
  $("login-why").textContent = message;
  setSafety("lost", "A token is needed", "this cluster requires a bearer token (shoal token create --role reader)");
}

function saveToken(event) {
  event.preventDefault();
  state.token = $("login-token").value.trim();
  sessionStorage.setItem("shoal-token", state.token);
  $("login-token").value = "";
  $("login").hidden = true;
}

async function api(path) {
  try {
    return await getJson(state.base, path);
  } catch (error) {
    if (error instanceof AuthError) { askToken(error.message); throw error; }
    if (!(await failover(error))) throw error;
    return await getJson(state.base, path);
  }
}

async function failover(error) {
  const lost = describeCurrent();
  const lostAddress = state.base === null ? location.host : state.base;
  note(`lost contact with ${lost}: ${error.message}`, "bad");
  const nodes = state.cluster ? state.cluster.nodes : [];
  const alive = new Set(nodes.filter((n) => n.state === "alive").map((n) => n.id));
  const candidates = [...state.known.entries()]
    .filter(([, address]) => address && address !== lostAddress)
    .sort(([a], [b]) => (alive.has(b) ? 1 : 0) - (alive.has(a) ? 1 : 0));
  if (state.base !== null && lostAddress !== location.host) candidates.push(["(this page's node)", location.host]);
  for (const [id, address] of candidates) {
    try {
      const answer = await getJson(address === location.host ? null : address, "/api/v1/cluster");
      state.base = address === location.host ? null : address;
      state.servedBy = answer.served_by;
      showBanner(`Lost contact with ${lost} at ${new Date().toLocaleTimeString()}. Now reading from ${answer.served_by.id} (${address}).`);
      note(`now reading from ${answer.served_by.id} (${address})`, "good");
      return true;
    } catch (e) { /* try the next node */ }
  }
  showBanner(`Lost contact with ${lost} at ${new Date().toLocaleTimeString()}; no other node answers (tried ${candidates.length}). Retrying.`);
  setSafety("lost", "No node answers", "The figures below are the last ones seen.");
  return false;
}

function showBanner(text) { $("banner-text").textContent = text; $("banner").hidden = false; }

function note(text, kind) {
  const list = $("events");
  list.prepend(h("li", {class: kind || ""}, `${new Date().toLocaleTimeString()}  ${text}`));
  while (list.children.length > EVENTS_MAX) list.lastChild.remove();
}

// ---- the header: is the data safe right now? ----

function setSafety(kind, headline, detail) {
  $("safety").dataset.state = kind;
  $("safety-headline").textContent = headline;
  $("safety-detail").textContent = detail;
}

function renderSafety(cluster) {
  const r = cluster.redundancy;
  if (r.state === "safe") {
    setSafety("safe", "Data safe: every shard has all its copies", "0 s to full redundancy");
  } else if (r.state === "at-risk") {
    setSafety("at-risk", `Fully replicated, but ${r.suspect_nodes.join(", ")} went silent`, "its shards are re-copied if it is declared dead");
  } else {
    const figure = r.seconds_to_full === null ? "unknown" : `~${seconds(r.seconds_to_full)}`;
    const head = r.state === "unavailable" ? `${r.unavailable} shard(s) UNAVAILABLE` : `${r.under_replicated} shard(s) under-replicated`;
    const parts = [`${r.copies} cop${r.copies === 1 ? "y" : "ies"} under way`];
    if (r.waiting) parts.push(`${r.waiting} shard(s) waiting for a copy to start`);
    setSafety(r.state, `${head}: ${figure} to full redundancy`, parts.join(" · "));
  }
  $("safety").dataset.seconds = r.seconds_to_full === null ? "" : String(r.seconds_to_full);
  $("source").textContent = `reading from ${cluster.served_by.id} (${state.base === null ? location.host : state.base})\n`
    + `controller ${cluster.controller || "none"} · updated ${clock(cluster.time_s)}`;
}

// ---- overview ----

function diffEvents(previous, cluster) {
  if (!previous) return;
  if (previous.controller !== cluster.controller) note(`controller: ${previous.controller || "none"} → ${cluster.controller || "none"}`, "bad");
  const before = new Map(previous.nodes.map((n) => [n.id, n]));
  for (const node of cluster.nodes) {
    const old = before.get(node.id);
    if (!old) { note(`${node.id} joined (${node.state})`); continue; }
    if (old.state !== node.state) note(`${node.id}: ${old.state} → ${node.state}`, node.state === "alive" ? "good" : "bad");
    if (!old.suspect && node.suspect) note(`${node.id} is silent (${seconds(node.silent_s)})`, "bad");
  }
  const was = previous.redundancy.state, now = cluster.redundancy.state;
  if (was !== now) note(`data: ${was} → ${now}`, now === "safe" ? "good" : "bad");
}

function nodeState(node) {
  if (node.state === "alive" && node.suspect) return badge("suspect");
  if (node.state === "alive" && !node.reachable) return h("span", {}, badge("alive"), badge("unreachable"));
  return badge(node.state);
}

function renderOverview(cluster) {
  const alive = cluster.nodes.filter((n) => n.state === "alive").length;
  const copies = cluster.degraded_shards.reduce((sum, d) => sum + d.repair.length, 0);
  const card = (value, label, id) => h("div", {class: "card", id}, h("div", {class: "value"}, value), h("div", {class: "label"}, label));
  $("cards").replaceChildren(
    card(`${alive} / ${cluster.nodes.length}`, "nodes alive", "card-nodes"),
    card(cluster.datasets.length, "datasets", "card-datasets"),
    card(cluster.under_replicated, "shards under-replicated", "card-under"),
    card(cluster.unavailable, "shards unavailable", "card-unavailable"),
    card(copies, "copies under way", "card-copies"));
  const rows = cluster.nodes.map((n) => h("tr", {"data-node": n.id, "data-state": n.state, "data-suspect": n.suspect ? "1" : "0"},
    h("td", {}, h("b", {}, n.id), n.id === cluster.controller ? h("span", {class: "muted"}, " controller") : null),
    h("td", {class: "state"}, nodeState(n)),
    h("td", {}, n.raft_role === "unknown" ? "–" : badge(n.raft_role, n.raft_role === "leader" ? "leader" : "role")),
    h("td", {}, n.zone || "–"),
    h("td", {class: "mono"}, n.address, n.http_address ? h("div", {class: "muted"}, `http ${n.http_address}`) : null),
    h("td", {}, `${n.shards}`, h("span", {class: "muted"}, ` (${n.primaries} primary, ${n.learners} learning)`)),
    h("td", {}, `${bytes(n.disk_used_bytes)} / ${bytes(n.disk_free_bytes)}`),
    h("td", {}, n.reachable ? `${n.requests_in_flight} rpc · ${n.tasks_running} tasks · load ${n.load_1m}`
      : h("span", {class: "muted", title: n.error || ""}, n.error ? `not answering: ${n.error.split(":")[0]}` : "–")),
    h("td", {}, seconds(n.uptime_s)),
    h("td", {}, n.id === cluster.controller ? "–" : `${seconds(n.silent_s)} ago`)));
  $("nodes").tBodies[0].replaceChildren(...rows);
  $("overview-repairs").replaceChildren(copiesTable(cluster.degraded_shards, "overview-copies"));
}

function copiesTable(degraded, id) {
  if (!degraded.length) return empty("None: every shard has all its copies.");
  const rows = [];
  for (const d of degraded) {
    if (!d.repair.length) {
      rows.push(h("tr", {"data-shard": `${d.dataset}/${d.shard}`}, h("td", {}, `${d.dataset}/${d.shard}`), h("td", {}, badge(d.state)),
        h("td", {}, `${d.copies_left} of ${d.replication}`), h("td", {}, "–"), h("td", {}, "waiting for a copy to start"), h("td", {}), h("td", {}),
        h("td", {}, seconds(d.under_replicated_for_s))));
    }
    for (const c of d.repair) {
      rows.push(h("tr", {"data-shard": `${d.dataset}/${d.shard}`, class: "copy", "data-phase": c.phase},
        h("td", {}, `${d.dataset}/${d.shard}`), h("td", {}, badge(d.state)), h("td", {}, `${d.copies_left} of ${d.replication}`),
        h("td", {}, `${d.primary || "?"} → ${c.node}`), h("td", {}, badge(c.phase, "learner"), " ", bar(c.percent),
          h("span", {class: "muted"}, ` ${c.records_done} / ${c.records_total} records`)),
        h("td", {}, `${bytes(c.bytes_per_s)}/s`), h("td", {}, c.eta_s === null ? "–" : seconds(c.eta_s)),
        h("td", {}, seconds(d.under_replicated_for_s))));
    }
  }
  return table(["Shard", "State", "In-sync copies", "Copy", "Progress", "Rate", "ETA", "Under-replicated for"], rows, {id});
}

// ---- datasets and shards ----

function renderShards(answer) {
  if (!answer.datasets.length) { $("shards").replaceChildren(empty("No datasets yet.")); return; }
  $("shards").replaceChildren(...answer.datasets.map((d) => h("div", {},
    h("h2", {}, d.name, h("span", {class: "muted"}, ` ${d.shards} shards · replication ${d.replication} · ${d.under_replicated} under-replicated`)),
    table(["Shard", "State", "Epoch", "Primary", "In-sync set", "Learners", "Holders (role, records)", "Checksums", "Last scrub", "Under-replicated for"],
      d.shard_map.map((s) => {
        const scrubs = s.holders.filter((x) => x.role !== "learner").map((x) => x.scrubbed_at_s);
        const lastScrub = !scrubs.length ? "–" : scrubs.some((t) => t === null) ? "not yet" : ago(Math.min(...scrubs));
        return h("tr", {"data-shard": `${d.name}/${s.index}`, "data-state": s.state},
          h("td", {}, s.index), h("td", {}, badge(s.state)), h("td", {}, s.epoch), h("td", {}, s.primary || "–"),
          h("td", {}, s.replicas.join(", ") || "–"), h("td", {}, s.learners.join(", ") || "–"),
          h("td", {}, s.holders.map((x) => h("span", {}, badge(`${x.node} ${x.role}`, x.role), h("span", {class: "muted"}, `${x.records} `)))),
          h("td", {}, s.checksums_agree === null ? "–" : s.checksums_agree ? badge("agree", "ok") : badge("differ", "fail")),
          h("td", {}, lastScrub), h("td", {}, seconds(s.under_replicated_for_s)));
      })))));
}

// ---- repairs and transfers ----

function renderRepairs(answer) {
  const r = answer.redundancy;
  $("repairs").replaceChildren(
    h("div", {class: "cards"},
      h("div", {class: "card"}, h("div", {class: "value"}, r.state === "safe" ? "0 s" : r.seconds_to_full === null ? "unknown" : seconds(r.seconds_to_full)), h("div", {class: "label"}, "to full redundancy")),
      h("div", {class: "card"}, h("div", {class: "value"}, r.under_replicated), h("div", {class: "label"}, "shards under-replicated")),
      h("div", {class: "card"}, h("div", {class: "value"}, r.copies), h("div", {class: "label"}, "copies under way")),
      h("div", {class: "card"}, h("div", {class: "value"}, r.waiting), h("div", {class: "label"}, "shards waiting for a copy"))),
    h("h2", {}, "Copies (learners filling from their primary)"),
    copiesTable(answer.degraded_shards, "copies"));
}

// ---- jobs ----

function renderJobs(answer) {
  if (!answer.jobs.length) { $("jobs").replaceChildren(empty("No jobs yet.")); return; }
  const rows = [];
  for (const j of answer.jobs) {
    const percent = j.tasks_total ? (100 * j.tasks_done) / j.tasks_total : 0;
    const took = j.finished_at_s ? seconds(j.finished_at_s - j.submitted_at_s) : `running ${seconds(Date.now() / 1000 - j.submitted_at_s)}`;
    rows.push(h("tr", {class: `clickable${state.jobOpen === j.id ? " selected" : ""}`, "data-job": j.id, onclick: () => { state.jobOpen = state.jobOpen === j.id ? null : j.id; renderJobs(answer); }},
      h("td", {class: "mono"}, j.id.slice(0, 12)), h("td", {}, j.dataset), h("td", {}, j.kind), h("td", {}, badge(j.state), j.error ? h("div", {class: "muted"}, j.error) : null),
      h("td", {}, bar(percent), h("span", {class: "muted"}, ` ${j.tasks_done}/${j.tasks_total} tasks`)),
      h("td", {}, j.records_scanned), h("td", {}, j.attempts), h("td", {}, j.failovers), h("td", {}, clock(j.submitted_at_s)), h("td", {}, took)));
    if (state.jobOpen === j.id) {
      rows.push(h("tr", {}, h("td", {colspan: 10}, table(["Task", "Done", "Attempts (node of each, in order)", "Winner", "Records", "Failovers"],
        j.tasks.map((t) => h("tr", {}, h("td", {}, t.index), h("td", {}, t.done ? badge("done") : badge("running")),
          h("td", {}, t.attempts.map((a) => `#${a.attempt} ${a.node}`).join(" → ")), h("td", {}, t.node || "–"),
          h("td", {}, t.records), h("td", {}, t.failovers)))))));
    }
  }
  $("jobs").replaceChildren(table(["Job", "Dataset", "Kind", "State", "Progress", "Records scanned", "Attempts", "Failovers", "Submitted", "Took"], rows, {id: "jobs-table"}),
    h("div", {class: "muted"}, "Click a job for its tasks. A failover is an attempt after a task's first: a re-run after its node was lost, or a speculative copy."));
}

// ---- chaos reports ----

async function renderChaos(force) {
  if (!force && Date.now() - state.chaosAt < CHAOS_POLL_MS) return;
  state.chaosAt = Date.now();
  const answer = await api("/api/v1/chaos");
  if (!answer.reports.length) {
    $("chaos").replaceChildren(empty(`No chaos reports in ${answer.root} yet. Run: shoal chaos run SCENARIO --report ${answer.root}/NAME`));
    $("chaos-detail").replaceChildren();
    return;
  }
  if (!answer.reports.some((r) => r.name === state.chaosSelected)) state.chaosSelected = answer.reports[0].name;
  $("chaos").replaceChildren(table(["Report", "Verdict", "Scenario", "Seed", "Started", "Ops", "Failed checks"],
    answer.reports.map((r) => h("tr", {class: `clickable${r.name === state.chaosSelected ? " selected" : ""}`, "data-report": r.name,
      onclick: () => { state.chaosSelected = r.name; renderChaos(true); }},
      h("td", {class: "mono"}, r.name), h("td", {}, badge(r.verdict)), h("td", {}, r.scenario), h("td", {}, r.seed),
      h("td", {}, r.started_at), h("td", {}, r.ops), h("td", {}, Object.keys(r.failed_checks).join(", ") || (r.error ? r.error : "none")))),
    {id: "chaos-table"}));
  const selected = answer.reports.find((r) => r.name === state.chaosSelected);
  const report = await api(`/api/v1/chaos/${encodeURIComponent(selected.name)}/report.json`);
  const checks = Object.entries(report.checks || {});
  $("chaos-detail").replaceChildren(h("h2", {}, `${selected.name}: ${report.scenario || ""} seed ${report.seed}`),
    checks.length ? table(["Check", "Result", "Summary"], checks.map(([name, c]) => h("tr", {}, h("td", {}, name),
      h("td", {}, badge(c.passed ? "pass" : "fail")), h("td", {}, c.summary)))) : empty(report.error || "No checks."),
    selected.has_timeline ? picture(`/api/v1/chaos/${encodeURIComponent(selected.name)}/timeline.png?t=${Math.floor(selected.modified_at_s)}`,
      `timeline of ${selected.name}`) : empty("No timeline picture."));
}

// An <img> whose bytes are fetched with the token (an img src cannot carry an Authorization header).
function picture(path, alt) {
  const img = h("img", {class: "timeline", alt});
  const headers = state.token ? {Authorization: `Bearer ${state.token}`} : {};
  fetch(url(state.base, path), {headers, cache: "no-store"})
    .then((response) => { if (!response.ok) throw new Error(`HTTP ${response.status}`); return response.blob(); })
    .then((blob) => { img.src = URL.createObjectURL(blob); })
    .catch((error) => { img.alt = `${alt}: ${error.message}`; });
  return img;
}

// ---- the loop ----

const TAB_SOURCES = {shards: ["/api/v1/shards", renderShards], repairs: ["/api/v1/repairs", renderRepairs], jobs: ["/api/v1/jobs", renderJobs]};

async function refresh() {
  const cluster = await api("/api/v1/cluster");
  state.servedBy = cluster.served_by;
  state.known = new Map(cluster.nodes.map((n) => [n.id, n.http_address]));
  diffEvents(state.cluster, cluster);
  state.cluster = cluster;
  renderSafety(cluster);
  renderOverview(cluster);
  if (TAB_SOURCES[state.tab]) {
    const [path, render] = TAB_SOURCES[state.tab];
    render(await api(path));
  } else if (state.tab === "chaos") {
    await renderChaos(false);
  }
  document.body.dataset.updated = String(cluster.time_s);
}

async function loop() {
  try {
    await refresh();
  } catch (error) {
    note(`refresh failed: ${error.message}`, "bad");
  } finally {
    setTimeout(loop, POLL_MS);
  }
}

function selectTab(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === tab);
  for (const section of document.querySelectorAll("main .tab")) section.hidden = section.id !== `tab-${tab}`;
  if (tab === "chaos") state.chaosAt = 0;
  location.hash = tab;
  refresh().catch((error) => note(`refresh failed: ${error.message}`, "bad"));
}

for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => selectTab(button.dataset.tab));
$("banner-close").addEventListener("click", () => { $("banner").hidden = true; });
$("login").addEventListener("submit", saveToken);
const initial = location.hash.slice(1);
if (initial && initial !== "overview" && document.getElementById(`tab-${initial}`)) selectTab(initial);
loop();
