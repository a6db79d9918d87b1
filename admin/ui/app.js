// Portico dashboard: polls the admin API once a second and redraws what
// changed. Everything shown comes from /api/status and /api/history; text
// is always set with textContent, never parsed as HTML.
"use strict";
(function () {
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  let selected = ""; // route name; "" is every request

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setText(e, t) { if (e.textContent !== t) e.textContent = t; }
  function num(v, digits) { return v === undefined || v === null ? "–" : v.toFixed(digits); }
  function ms(v) { return v ? (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms" : "–"; }
  function ago(t) {
    const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
    return s < 60 ? s.toFixed(0) + " s ago" : s < 3600 ? (s / 60).toFixed(0) + " min ago" : (s / 3600).toFixed(1) + " h ago";
  }
  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + Math.floor(s % 60) + "s";
  }
  function clock(t) { return new Date(t).toLocaleTimeString(); }

  // Charts ------------------------------------------------------------
  function chart(id, series) {
    const node = $(id);
    const opts = {
      width: Math.max(node.clientWidth, 200), height: 180,
      series: [{}].concat(series.map((s) => Object.assign({ width: 1.5, spanGaps: false }, s))),
      axes: [{}, { size: 48 }],
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(hi, 1) * 1.1] } },
      legend: { live: false },
    };
    const u = new uPlot(opts, [[]].concat(series.map(() => [])), node);
    new ResizeObserver(() => u.setSize({ width: Math.max(node.clientWidth, 200), height: 180 })).observe(node);
    return u;
  }
  const charts = {
    rate: chart("chart-rate", [{ label: "req/s", stroke: "#2b6cb0", fill: "rgba(43,108,176,0.12)" }]),
    errors: chart("chart-errors", [{ label: "5xx/s", stroke: "#c53030", fill: "rgba(197,48,48,0.12)" }]),
    latency: chart("chart-latency", [
      { label: "p50", stroke: "#1f8a4c" }, { label: "p95", stroke: "#b7791f" }, { label: "p99", stroke: "#c53030" },
    ]),
  };

  function drawHistory(points) {
    points = points || [];
    const t = points.map((p) => p.t);
    const lat = (k) => points.map((p) => (p.requests ? p[k] : null));
    charts.rate.setData([t, points.map((p) => p.requests)]);
    charts.errors.setData([t, points.map((p) => p.errors)]);
    charts.latency.setData([t, lat("p50_ms"), lat("p95_ms"), lat("p99_ms")]);
  }

  // Routes --------------------------------------------------------------
  const routeRows = new Map();
  function routeRow(name, label) {
    let r = routeRows.get(name);
    if (!r) {
      r = el("tr");
      r.dataset.route = name;
      for (let i = 0; i < 9; i++) r.appendChild(el("td", i >= 4 ? "num" : ""));
      r.cells[0].textContent = label;
      r.addEventListener("click", () => select(name, label));
      routeRows.set(name, r);
    }
    return r;
  }
  function select(name, label) {
    selected = name;
    setText($("selected"), label);
    for (const [n, r] of routeRows) r.classList.toggle("selected", n === selected);
    poll();
  }
  function fillTraffic(r, t) {
    t = t || {};
    setText(r.cells[4], num(t.rate, 1));
    setText(r.cells[5], t.rate ? (100 * t.error_ratio).toFixed(1) + "%" : "–");
    r.cells[5].className = "num" + (t.error_ratio > 0.05 ? " bad" : t.error_ratio > 0 ? " warn" : "");
    setText(r.cells[6], ms(t.p50_ms));
    setText(r.cells[7], ms(t.p95_ms));
    setText(r.cells[8], ms(t.p99_ms));
  }
  function drawRoutes(st) {
    const body = $("routes").tBodies[0];
    const seen = new Set([""]);
    const all = routeRow("", "all routes");
    all.cells[1].textContent = "every request, routed or not";
    fillTraffic(all, st.traffic);
    let prev = all;
    if (body.firstChild !== all) body.insertBefore(all, body.firstChild);
    for (const rt of st.routes) {
      seen.add(rt.name);
      const r = routeRow(rt.name, rt.name);
      setText(r.cells[1], (rt.host || "*") + rt.path_prefix + (rt.strip_prefix ? " (stripped)" : ""));
      setText(r.cells[2], rt.pool);
      setText(r.cells[3], rt.middlewares.length ? rt.middlewares.join(" → ") : "–");
      fillTraffic(r, rt.traffic);
      if (prev.nextSibling !== r) body.insertBefore(r, prev.nextSibling);
      prev = r;
    }
    for (const [n, r] of routeRows) {
      if (!seen.has(n)) { r.remove(); routeRows.delete(n); }
    }
    for (const [n, r] of routeRows) r.classList.toggle("selected", n === selected);
  }

  // Pools ---------------------------------------------------------------
  function backendState(b) {
    if (!b.healthy) return ["down", "bad"];
    if (b.ejected) return ["ejected", "warn"];
    if (!b.usable) return ["out", "warn"];
    return ["up", "ok"];
  }
  function drawPools(st) {
    const box = $("pools");
    const frag = document.createDocumentFragment();
    for (const p of st.pools) {
      const div = el("div", "pool");
      div.dataset.pool = p.name;
      const h = el("h3", "", p.name + " ");
      h.appendChild(el("span", "muted", p.balance + (p.panic_mode ? ", panic mode" : "") + " · "));
      const n = p.backends.length;
      h.appendChild(el("span", p.usable_backends === 0 ? "bad" : p.usable_backends < n ? "warn" : "ok",
        p.usable_backends + " of " + n + " usable"));
      div.appendChild(h);
      const t = el("table");
      const head = t.createTHead().insertRow();
      for (const c of ["backend", "state", "in flight", "weight", "ejections", "last check", "result"]) {
        head.appendChild(el("th", c === "in flight" || c === "weight" || c === "ejections" ? "num" : "", c));
      }
      const body = t.createTBody();
      for (const b of p.backends) {
        const r = body.insertRow();
        r.dataset.backend = b.url;
        const [state, cls] = backendState(b);
        r.appendChild(el("td", "", b.url));
        const sc = el("td");
        sc.appendChild(el("span", "badge " + cls, state));
        if (b.ejected) sc.appendChild(el("span", "muted", (state === "ejected" ? " for " : " · ejected for ") + (b.ejected_for_ms / 1000).toFixed(0) + " s"));
        r.appendChild(sc);
        r.appendChild(el("td", "num", String(b.in_flight)));
        r.appendChild(el("td", "num", String(b.weight) + (b.slow_start_share < 1 ? " (" + Math.round(100 * b.slow_start_share) + "%)" : "")));
        r.appendChild(el("td", "num", String(b.ejections)));
        const c = b.last_check;
        r.appendChild(el("td", "", c ? ago(c.time) : "no active checks"));
        r.appendChild(el("td", c ? (c.ok ? "ok" : "bad") : "muted", c ? (c.ok ? "pass" : "fail") + ": " + c.detail : "–"));
      }
      div.appendChild(t);
      frag.appendChild(div);
    }
    box.replaceChildren(frag);
  }

  function drawTransitions(st) {
    const all = [];
    for (const p of st.pools) for (const t of p.transitions) all.push(Object.assign({ pool: p.name }, t));
    all.sort((a, b) => (a.time < b.time ? 1 : -1));
    const body = $("transitions").tBodies[0];
    const frag = document.createDocumentFragment();
    for (const t of all.slice(0, 20)) {
      const r = el("tr");
      r.appendChild(el("td", "", clock(t.time)));
      r.appendChild(el("td", "", t.pool));
      r.appendChild(el("td", "", t.backend));
      r.appendChild(el("td", t.to === "down" ? "bad" : t.to === "ejected" ? "warn" : "ok", t.from + " → " + t.to));
      r.appendChild(el("td", "wrap", t.reason));
      frag.appendChild(r);
    }
    body.replaceChildren(frag);
    $("no-transitions").hidden = all.length > 0;
  }

  function drawCerts(st) {
    const body = $("certs").tBodies[0];
    const frag = document.createDocumentFragment();
    for (const c of st.certificates) {
      const r = el("tr");
      r.appendChild(el("td", "wrap", c.names.join(", ")));
      r.appendChild(el("td", "", c.source));
      r.appendChild(el("td", "", new Date(c.not_after).toISOString().slice(0, 10)));
      r.appendChild(el("td", "num " + (c.days_left < 7 ? "bad" : c.days_left < 21 ? "warn" : "ok"), c.days_left.toFixed(0)));
      frag.appendChild(r);
    }
    body.replaceChildren(frag);
    $("no-certs").hidden = st.certificates.length > 0;
  }

  function drawConfig(st) {
    const dl = $("config");
    const frag = document.createDocumentFragment();
    const add = (k, v, cls) => { frag.appendChild(el("dt", "", k)); frag.appendChild(el("dd", cls || "", v)); };
    for (const l of st.listeners) add(l.name + " listener", l.addr);
    const c = st.config;
    add("configuration", c.file);
    add("sha256", c.sha256);
    add("contents", c.routes + " routes, " + c.pools + " pools, " + c.backends + " backends" +
      (c.https ? ", HTTPS" : "") + (c.acme ? " with ACME" : ""));
    const r = st.last_reload;
    add("last reload", r ? clock(r.time) + (r.ok ? ": ok" : ": FAILED") : "none since start", r && !r.ok ? "bad" : "");
    dl.replaceChildren(frag);
  }

  function drawHeader(st) {
    setText($("version"), "version " + st.version);
    const ready = $("ready");
    setText(ready, st.ready ? "ready" : "not ready");
    ready.className = "badge " + (st.ready ? "ok" : "bad");
    setText($("uptime"), "up " + duration(st.uptime_seconds));
  }

  // Polling -------------------------------------------------------------
  let timer = null;
  async function getJSON(url) {
    const res = await fetch(url, { cache: "no-store" });
    if (!res.ok) throw new Error(url + ": " + res.status);
    return res.json();
  }
  async function poll() {
    clearTimeout(timer);
    try {
      const [st, hist] = await Promise.all([
        getJSON("/api/status"),
        getJSON("/api/history?route=" + encodeURIComponent(selected)),
      ]);
      $("conn").hidden = true;
      drawHeader(st);
      drawRoutes(st);
      drawPools(st);
      drawTransitions(st);
      drawCerts(st);
      drawConfig(st);
      drawHistory(hist);
    } catch (e) {
      $("conn").hidden = false;
    }
    timer = setTimeout(poll, POLL_MS);
  }

  // For tests and the curious: the charts and the selected route.
  window.portico = { charts, selected: () => selected, select };
  poll();
})();
