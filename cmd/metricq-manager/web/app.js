// The live view of metricq-manager watch: lists the metrics with their
// metadata and charts each, fed by the server-sent events of /events.
//
// Query parameters:
//   window=S   seconds shown by the charts (default: the data so far, in
//              steps of 10 s, at least 10 and at most 60)
//   events=N   stop listening after N "points" events (for tests and
//              screenshots: a page with an open event stream never idles)
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const fixedWindowMs = 1000 * (Number(params.get("window")) || 0);
  const maxWindowMs = fixedWindowMs || 60000;
  const maxEvents = Number(params.get("events")) || 0;

  const $ = (id) => document.getElementById(id);
  const main = $("metrics");
  const metrics = new Map(); // name -> {card, pts: [[ms, value|null]], row}
  let newest = -Infinity; // latest timestamp of any point, the charts' right edge
  let oldest = Infinity; // earliest timestamp of any point
  let pointEvents = 0;
  let pointsSeen = 0;
  let drawPending = false;

  function setState(state, text) {
    document.body.dataset.state = state;
    $("state").textContent = text;
  }

  // formatValue prints v with 4 significant digits and an SI prefix.
  function formatValue(v, unit) {
    if (v === null || v === undefined) return "–";
    unit = unit || "";
    const a = Math.abs(v);
    const prefixes = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    let text = null;
    if (a >= 1e4) {
      for (const [f, p] of prefixes) {
        if (a >= f) { text = trim(v / f) + " " + p + unit; break; }
      }
    }
    if (text === null) {
      text = a !== 0 && a < 1e-3 ? v.toExponential(2) : trim(v);
      if (unit) text += " " + unit;
    }
    return text;
  }
  function trim(v) { return String(Number(v.toPrecision(4))); }

  function element(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function card(name) {
    let m = metrics.get(name);
    if (m) return m;
    const section = element("section", "metric undeclared");
    section.dataset.metric = name;
    section.dataset.chartPoints = "0";
    section.dataset.count = "0";
    section.append(element("h2", "", name), element("p", "description"), element("ul", "metadata"));
    const stats = element("div", "stats");
    for (const [cls, label] of [["count", "points"], ["rate", "rate"], ["latest", "latest"], ["age", "last arrival"]]) {
      const s = element("span", cls);
      s.append(element("span", "label", label), element("b", "", "–"));
      stats.append(s);
    }
    const canvas = element("canvas");
    section.append(stats, canvas);
    m = { card: section, canvas, pts: [], row: null, metadataJSON: "" };
    metrics.set(name, m);
    $("empty")?.remove();
    // Keep the cards sorted by name.
    const names = [...metrics.keys()].sort();
    const next = names[names.indexOf(name) + 1];
    main.insertBefore(section, next ? metrics.get(next).card : null);
    $("metric-count").textContent = metrics.size;
    return m;
  }

  function showMetadata(m, md) {
    const json = JSON.stringify(md);
    if (json === m.metadataJSON) return;
    m.metadataJSON = json;
    m.card.classList.toggle("undeclared", md === null);
    m.card.querySelector(".description").textContent = (md && md.description) || "";
    const list = m.card.querySelector(".metadata");
    list.replaceChildren();
    if (!md) return;
    for (const key of Object.keys(md).sort()) {
      if (key === "description") continue;
      let value = md[key];
      if (typeof value === "object") value = JSON.stringify(value);
      if (value === "") value = "(none)";
      const li = element("li");
      li.dataset.key = key;
      li.append(element("span", "", key + ": "), document.createTextNode(String(value)));
      list.append(li);
    }
  }

  function showRow(row) {
    const m = card(row.name);
    m.row = row;
    showMetadata(m, row.metadata);
    const unit = row.metadata && row.metadata.unit;
    const set = (cls, text) => { m.card.querySelector("." + cls + " b").textContent = text; };
    m.card.dataset.count = row.count;
    set("count", row.count.toLocaleString("en"));
    set("rate", row.rate === null ? "–" : trim(row.rate) + "/s");
    set("latest", formatValue(row.last_value, unit));
    set("age", row.age === null ? "never" : row.age.toFixed(1) + " s ago");
  }

  function onMetrics(snapshot) {
    for (const row of snapshot.metrics) showRow(row);
    $("point-count").textContent = snapshot.points.toLocaleString("en");
    $("elapsed").textContent = Math.round(snapshot.elapsed) + " s";
  }

  function onPoints(batch) {
    for (const [name, pts] of Object.entries(batch)) {
      const m = card(name);
      for (const p of pts) {
        m.pts.push(p);
        if (p[0] > newest) newest = p[0];
        if (p[0] < oldest) oldest = p[0];
      }
      pointsSeen += pts.length;
      // Keep twice the window, so that a wider window later still has data.
      const cut = newest - 2 * maxWindowMs;
      let drop = 0;
      while (drop < m.pts.length && m.pts[drop][0] < cut) drop++;
      if (drop) m.pts.splice(0, drop);
      m.card.dataset.chartPoints = m.pts.length;
    }
    document.body.dataset.points = pointsSeen;
    scheduleDraw();
  }

  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    setTimeout(() => { drawPending = false; drawAll(); }, 0);
  }

  function drawAll() {
    for (const m of metrics.values()) draw(m);
  }

  function draw(m) {
    const c = m.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr));
    const h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const W = w / dpr, H = h / dpr;
    const left = 64, right = 8, top = 8, bottom = 20;
    const pw = W - left - right, ph = H - top - bottom;
    g.clearRect(0, 0, W, H);
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#66717d";
    g.strokeStyle = "#dde3e9";
    g.lineWidth = 1;

    const windowMs = chartWindow();
    const t1 = newest, t0 = newest - windowMs;
    const visible = m.pts.filter((p) => p[0] >= t0 && p[1] !== null);
    if (!visible.length) {
      g.strokeRect(left + 0.5, top + 0.5, pw, ph);
      g.textAlign = "center";
      g.fillText("no data yet", left + pw / 2, top + ph / 2);
      return;
    }
    let lo = Infinity, hi = -Infinity;
    for (const p of visible) { if (p[1] < lo) lo = p[1]; if (p[1] > hi) hi = p[1]; }
    if (hi === lo) { const d = Math.abs(hi) * 0.1 || 1; lo -= d; hi += d; }
    const pad = (hi - lo) * 0.08;
    lo -= pad; hi += pad;
    const x = (t) => left + ((t - t0) / (t1 - t0)) * pw;
    const y = (v) => top + (1 - (v - lo) / (hi - lo)) * ph;
    const unit = m.row && m.row.metadata && m.row.metadata.unit;

    // Grid: value lines at round numbers, time marks at round seconds.
    g.textAlign = "right";
    g.textBaseline = "middle";
    const step = niceStep((hi - lo) / 4);
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(left, yy); g.lineTo(left + pw, yy); g.stroke();
      g.fillText(formatValue(Math.abs(v) < step / 1e6 ? 0 : v, unit), left - 6, yy);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    const tstep = niceStep(windowMs / 4000) * 1000;
    for (let ago = 0; ago <= windowMs + 1; ago += tstep) {
      const xx = Math.round(x(t1 - ago)) + 0.5;
      g.beginPath(); g.moveTo(xx, top); g.lineTo(xx, top + ph); g.stroke();
      const label = ago ? "−" + Math.round(ago / 1000) + " s" : "latest";
      g.fillText(label, Math.min(Math.max(xx, left + 14), left + pw - 18), top + ph + 4);
    }

    // The line; gaps of more than 5 s (or null values) break it.
    g.save();
    g.beginPath(); g.rect(left, top, pw, ph); g.clip();
    g.strokeStyle = "#1f6feb";
    g.lineWidth = 1.5;
    g.beginPath();
    let prev = null;
    for (const p of m.pts) {
      if (p[0] < t0 - 5000) continue;
      if (p[1] === null) { prev = null; continue; }
      if (prev === null || p[0] - prev > 5000) g.moveTo(x(p[0]), y(p[1]));
      else g.lineTo(x(p[0]), y(p[1]));
      prev = p[0];
    }
    g.stroke();
    if (visible.length < 100) {
      g.fillStyle = "#1f6feb";
      for (const p of visible) { g.beginPath(); g.arc(x(p[0]), y(p[1]), 2, 0, 2 * Math.PI); g.fill(); }
    }
    g.restore();
  }

  // niceStep rounds a step up to 1, 2 or 5 times a power of ten.
  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const f of [1, 2, 5, 10]) if (f * p >= raw) return f * p;
    return 10 * p;
  }

  // chartWindow is the time the charts show, in ms.
  function chartWindow() {
    if (fixedWindowMs) return fixedWindowMs;
    const span = newest - oldest;
    return Math.min(maxWindowMs, Math.max(10000, Math.ceil(span / 10000) * 10000));
  }

  const es = new EventSource("events");
  es.addEventListener("open", () => setState("live", "live"));
  es.addEventListener("error", () => {
    if (document.body.dataset.state === "ended" || document.body.dataset.state === "paused") return;
    setState("reconnecting", es.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");
  });
  es.addEventListener("info", (e) => {
    const info = JSON.parse(e.data);
    document.title = info.title;
    $("title").textContent = info.title;
    $("broker").textContent = info.broker;
    $("bindings").textContent = info.bindings.join(" ");
  });
  es.addEventListener("metrics", (e) => onMetrics(JSON.parse(e.data)));
  es.addEventListener("points", (e) => {
    onPoints(JSON.parse(e.data));
    pointEvents++;
    document.body.dataset.events = pointEvents;
    if (maxEvents && pointEvents >= maxEvents) {
      es.close();
      setState("paused", "paused after " + pointEvents + " updates");
    }
  });
  es.addEventListener("end", () => {
    es.close();
    setState("ended", "ended");
  });
  window.addEventListener("resize", scheduleDraw);
  setInterval(drawAll, 1000);
})();
