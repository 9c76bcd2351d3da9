// The fleet dashboard: polls the gateway's public API with the operator's credential.
// Everything the API returns is put in place with textContent, never parsed as HTML.
"use strict";

(() => {
  const STORE_KEY = "multidb.dashboard.credential";
  const HEALTH_MS = 2000;
  const STATS_MS = 5000;
  const HISTORY_MS = 10000;
  const AUDIT_MS = 5000;
  const BACKUP_MS = 10000;
  const AUDIT_LIMIT = 20;
  const MAX_POINTS = 300;
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];

  // What a chart shows: a field of a history point, or the rate of a counter field.
  const CHARTS = [
    { id: "connections", title: "Connections", field: "connections" },
    { id: "size", title: "Database size (MB)", field: "database_size_bytes", scale: 1 / 1e6 },
    { id: "cache-hit", title: "Cache hit ratio (%)", field: "cache_hit_ratio", scale: 100 },
    { id: "commits", title: "Commits per second", field: "commits", rate: true },
  ];

  const $ = (id) => document.getElementById(id);
  let credential = null;
  let generation = 0; // bumped at sign-out: loops of an older generation stop
  const cards = new Map();
  const charts = new Map();
  let roles = [];

  // ---- credential -------------------------------------------------------------------
  function loadCredential() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
      if (saved && (saved.kind === "key" || saved.kind === "token") && saved.value) return saved;
    } catch (_) {
      // A damaged entry is the same as none.
    }
    return null;
  }

  function authHeaders() {
    return credential.kind === "token"
      ? { Authorization: "Bearer " + credential.value }
      : { "X-API-Key": credential.value };
  }

  async function api(path) {
    const response = await fetch(path, {
      headers: authHeaders(),
      cache: "no-store",
      credentials: "omit",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return { status: response.status, body };
  }

  function problem(answer) {
    const body = answer.body;
    if (body && typeof body.detail === "string" && body.detail) return body.detail;
    return "the gateway answered " + answer.status;
  }

  function signIn(kind, value) {
    credential = { kind, value };
    sessionStorage.setItem(STORE_KEY, JSON.stringify(credential));
    show();
  }

  function signOut(message) {
    generation += 1;
    credential = null;
    sessionStorage.removeItem(STORE_KEY);
    $("dashboard").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    $("summary").textContent = "";
    $("updated").textContent = "";
    $("sign-in-error").textContent = message || "";
    $("credential").value = "";
    for (const chart of charts.values()) chart.plot?.destroy();
    charts.clear();
    cards.clear();
    $("roles").replaceChildren();
    $("charts").replaceChildren();
    $("audit-rows").replaceChildren();
  }

  // A refused credential ends the session; any other failure is shown where it happened.
  function refused(answer) {
    if (answer.status === 401) {
      signOut("The gateway refused this credential (" + problem(answer) + ").");
      return true;
    }
    return false;
  }

  // ---- formatting -------------------------------------------------------------------
  function bytes(value) {
    if (typeof value !== "number") return "–";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let n = value;
    let unit = 0;
    while (n >= 1000 && unit < units.length - 1) {
      n /= 1000;
      unit += 1;
    }
    return n.toFixed(unit === 0 ? 0 : 1) + " " + units[unit];
  }

  const num = (value) => (typeof value === "number" ? String(value) : "–");
  const percent = (value) => (typeof value === "number" ? (value * 100).toFixed(2) + " %" : "–");
  const ms = (value) => (typeof value === "number" ? value.toFixed(1) + " ms" : "–");

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---- health and stats cards -------------------------------------------------------
  const FIELDS = [
    ["latency", "latency"],
    ["checked", "checked"],
    ["version", "version"],
    ["size", "size"],
    ["connections", "connections"],
    ["cache", "cache hit"],
    ["tables", "tables"],
    ["commits", "commits / rollbacks"],
    ["backup", "last backup"],
  ];

  function card(role) {
    let entry = cards.get(role);
    if (entry) return entry;
    const node = element("article", "card");
    node.dataset.role = role;
    node.dataset.status = "unknown";
    const title = element("h3");
    title.append(element("span", "name", role), element("span", "badge", "…"));
    const problemLine = element("p", "problem");
    const list = element("dl");
    const values = {};
    for (const [key, label] of FIELDS) {
      const value = element("dd", key, "–");
      values[key] = value;
      list.append(element("dt", "", label), value);
    }
    node.append(title, problemLine, list);
    $("roles").append(node);
    entry = { node, badge: title.lastChild, problem: problemLine, values, healthError: "", statsError: "" };
    cards.set(role, entry);
    return entry;
  }

  function showProblem(entry) {
    const parts = [entry.healthError, entry.statsError && "stats: " + entry.statsError];
    entry.problem.textContent = parts.filter(Boolean).join(" · ");
  }

  function renderHealth(body) {
    let healthy = 0;
    const names = Object.keys(body);
    for (const role of names) {
      const report = body[role] || {};
      const entry = card(role);
      // degraded: the primary answers, a replica is down or lagging (the reason says which).
      const status = report.status === "healthy" || report.status === "degraded"
        ? report.status : "unhealthy";
      if (status !== "unhealthy") healthy += 1;
      entry.node.dataset.status = status;
      entry.badge.textContent = status;
      entry.healthError = status === "healthy" ? ""
        : String((status === "degraded" ? report.reason : report.error) || status);
      showProblem(entry);
      entry.values.latency.textContent = ms(report.latency_ms);
      entry.values.checked.textContent =
        typeof report.age_s === "number" ? report.age_s.toFixed(1) + " s ago" : "–";
      entry.values.version.textContent = report.version ? String(report.version) : "–";
    }
    roles = names;
    const summary = $("summary");
    summary.textContent = healthy + " / " + names.length + " healthy";
    summary.className = "summary " + (healthy === names.length ? "good" : "bad");
  }

  function renderStats(body) {
    for (const role of Object.keys(body)) {
      const report = body[role] || {};
      const entry = card(role);
      const available = report.status === "available";
      entry.statsError = available ? "" : String(report.error || report.status || "unavailable");
      showProblem(entry);
      entry.values.size.textContent = bytes(report.database_size_bytes);
      entry.values.connections.textContent = num(report.connections);
      entry.values.cache.textContent = percent(report.cache_hit_ratio);
      entry.values.tables.textContent = num(report.table_count);
      entry.values.commits.textContent = num(report.commits) + " / " + num(report.rollbacks);
    }
  }

  async function pollHealth() {
    const answer = await api("/database/health/cached");
    if (refused(answer)) return;
    // 503 carries the same body: some role is not healthy.
    if ((answer.status === 200 || answer.status === 503) && answer.body) {
      $("health-note").textContent = "";
      renderHealth(answer.body);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } else {
      $("health-note").textContent = "Health: " + problem(answer);
    }
  }

  function ago(seconds) {
    if (seconds < 120) return Math.round(seconds) + " s ago";
    if (seconds < 7200) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h ago";
    return Math.round(seconds / 86400) + " d ago";
  }

  // "12 s ago · verified · drill passed", or why not; "stale" when older than twice the interval.
  function backupLine(state) {
    if (!state) return "–";
    const last = state.last_backup;
    const parts = [];
    if (state.stale) parts.push("STALE");
    if (!last) parts.push(state.schedule === "off" ? "never (schedule off)" : "none yet");
    else {
      parts.push(ago(last.age_s), last.verified ? "verified" : "not verified");
      if (last.last_drill) parts.push(last.last_drill.passed ? "drill passed" : "drill FAILED");
    }
    if (state.running) parts.push("running: " + state.running);
    if (state.last_failure) parts.push("failed: " + state.last_failure);
    return parts.join(" · ");
  }

  function renderBackups(body) {
    for (const role of Object.keys(body)) {
      const info = body[role] || {};
      const entry = card(role);
      const state = info.backups;
      entry.values.backup.textContent = info.status === "unavailable" ? "unavailable" : backupLine(state);
      entry.values.backup.dataset.stale = state && state.stale ? "true" : "false";
    }
  }

  async function pollBackups() {
    const answer = await api("/database/backup/info");
    if (refused(answer)) return;
    // 403: this credential may not administer any database; the field stays "–".
    if (answer.status === 200 && answer.body) renderBackups(answer.body);
  }

  async function pollStats() {
    const answer = await api("/database/stats");
    if (refused(answer)) return;
    if (answer.status === 200 && answer.body) renderStats(answer.body);
  }

  // ---- history charts ---------------------------------------------------------------
  function seconds(iso) {
    return Date.parse(iso) / 1000;
  }

  // One x axis for every role (the union of their bucket times), null where a role has
  // no point or its bucket failed, so a gap shows as a gap. Buckets with no sample at
  // all (the sampler was not running) get one empty x, so no line bridges them.
  function align(histories, chartSpec, step) {
    const times = new Set();
    for (const history of histories) for (const point of history.points) times.add(seconds(point.t));
    const sorted = Array.from(times).sort((a, b) => a - b);
    const xs = [];
    for (const x of sorted) {
      const last = xs[xs.length - 1];
      if (last !== undefined && x - last > 2 * step) xs.push(last + step);
      xs.push(x);
    }
    const index = new Map(xs.map((x, i) => [x, i]));
    const series = histories.map((history) => {
      const ys = new Array(xs.length).fill(null);
      let previous = null;
      for (const point of history.points) {
        const raw = point[chartSpec.field];
        const t = seconds(point.t);
        let value = typeof raw === "number" ? raw : null;
        if (chartSpec.rate) {
          const rate =
            value !== null && previous && previous.value !== null && value >= previous.value
              ? (value - previous.value) / (t - previous.t)
              : null;
          previous = { t, value };
          value = rate;
        } else if (value !== null && chartSpec.scale) {
          value *= chartSpec.scale;
        }
        ys[index.get(t)] = value;
      }
      return ys;
    });
    return [xs, ...series];
  }

  function chartBox(spec) {
    let chart = charts.get(spec.id);
    if (chart) return chart;
    const box = element("figure", "chart");
    box.id = "chart-" + spec.id;
    box.dataset.points = "0";
    box.dataset.seriesPoints = "0";
    box.append(element("h3", "", spec.title));
    $("charts").append(box);
    chart = { box, plot: null, roles: "" };
    charts.set(spec.id, chart);
    return chart;
  }

  function draw(spec, names, data) {
    const chart = chartBox(spec);
    const width = Math.max(280, chart.box.clientWidth - 8);
    const key = names.join(",");
    if (!chart.plot || chart.roles !== key) {
      chart.plot?.destroy();
      chart.roles = key;
      chart.plot = new uPlot(
        {
          width,
          height: 200,
          scales: { x: { time: true } },
          series: [
            {},
            ...names.map((role, i) => ({
              label: role,
              stroke: COLORS[i % COLORS.length],
              width: 2,
              spanGaps: false,
              points: { show: data[0].length < 60 },
            })),
          ],
          axes: [{}, { size: 60 }],
        },
        data,
        chart.box,
      );
    } else {
      chart.plot.setData(data);
      if (Math.abs(chart.plot.width - width) > 4) chart.plot.setSize({ width, height: 200 });
    }
    const filled = data.slice(1).map((ys) => ys.filter((y) => y !== null).length);
    chart.box.dataset.points = String(data[0].length);
    chart.box.dataset.seriesPoints = String(filled.length ? Math.min(...filled) : 0);
  }

  async function pollHistory() {
    if (typeof uPlot === "undefined") return;
    if (!roles.length) {
      const configured = await api("/database/configured");
      if (refused(configured)) return;
      if (configured.status !== 200 || !configured.body) return;
      roles = configured.body.databases;
    }
    const range = Number($("range").value) || 900;
    const step = Math.max(1, Math.ceil(range / MAX_POINTS));
    const since = new Date(Date.now() - range * 1000).toISOString();
    const names = roles.slice();
    const query = "?since=" + encodeURIComponent(since) + "&step=" + step;
    const answers = await Promise.all(
      names.map((role) => api("/database/" + encodeURIComponent(role) + "/stats/history" + query)),
    );
    if (answers.some(refused)) return;
    const failed = answers.find((answer) => answer.status !== 200 || !answer.body);
    if (failed) {
      $("history-note").textContent = "History: " + problem(failed);
      return;
    }
    $("history-note").textContent = "";
    const histories = answers.map((answer) => answer.body);
    // Every box first, so each chart is sized to its final column, not to an emptier grid.
    for (const spec of CHARTS) chartBox(spec);
    for (const spec of CHARTS) draw(spec, names, align(histories, spec, step));
  }

  // ---- audit ------------------------------------------------------------------------
  function auditRow(record) {
    const row = element("tr");
    row.dataset.outcome = String(record.outcome);
    row.dataset.requestId = String(record.request_id || "");
    const when = new Date(record.created_at);
    const cells = [
      ["nowrap", isNaN(when) ? String(record.created_at) : when.toLocaleTimeString()],
      ["nowrap", record.principal ? String(record.principal) : "–"],
      ["", record.target_role ? String(record.target_role) : "–"],
      ["outcome", String(record.outcome)],
      ["num", num(record.status_code)],
      ["num", num(record.row_count)],
      ["num", typeof record.duration_ms === "number" ? record.duration_ms.toFixed(1) : "–"],
      ["query", record.query_preview ? String(record.query_preview) : "–"],
      ["", record.error ? String(record.error) : ""],
      ["", record.request_id ? String(record.request_id) : ""],
    ];
    for (const [className, text] of cells) row.append(element("td", className, text));
    return row;
  }

  async function pollAudit() {
    const answer = await api("/database/audit/recent?limit=" + AUDIT_LIMIT);
    if (refused(answer)) return;
    const note = $("audit-note");
    const table = $("audit");
    if (answer.status === 403) {
      note.textContent =
        "The audit panel needs the db:admin scope (or db:admin:<role> for some databases); " +
        "this credential has neither.";
      table.hidden = true;
      return;
    }
    if (answer.status !== 200 || !answer.body || !Array.isArray(answer.body.records)) {
      note.textContent = "Audit trail: " + problem(answer);
      return;
    }
    table.hidden = false;
    const records = answer.body.records;
    note.textContent = records.length ? "" : "No execute recorded yet.";
    $("audit-rows").replaceChildren(...records.map(auditRow));
  }

  // ---- loops ------------------------------------------------------------------------
  // Each panel polls on its own; a slow or failing one holds up no other, and a round
  // starts only after the previous one ended.
  function loop(poll, everyMs) {
    const mine = generation;
    const round = async () => {
      if (mine !== generation) return;
      try {
        await poll();
      } catch (error) {
        // The gateway itself is unreachable (fetch rejects): say so, keep polling.
        $("summary").textContent = "gateway unreachable";
        $("summary").className = "summary bad";
      }
      if (mine === generation) setTimeout(round, everyMs);
    };
    round();
  }

  function show() {
    $("sign-in").hidden = true;
    $("dashboard").hidden = false;
    $("sign-out").hidden = false;
    $("sign-in-error").textContent = "";
    loop(pollHealth, HEALTH_MS);
    loop(pollStats, STATS_MS);
    loop(pollHistory, HISTORY_MS);
    loop(pollAudit, AUDIT_MS);
    loop(pollBackups, BACKUP_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("credential-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const kind = document.querySelector('input[name="kind"]:checked').value;
      const value = $("credential").value.trim();
      if (value) signIn(kind, value);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("range").addEventListener("change", () => {
      for (const chart of charts.values()) chart.plot?.destroy();
      charts.clear();
      $("charts").replaceChildren();
      pollHistory().catch(() => {});
    });
    credential = loadCredential();
    if (credential) show();
  });
})();
