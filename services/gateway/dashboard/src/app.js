// The clawline dashboard: polls /v1/dashboard/data every 2 s with the API key and redraws.
// Every string from the server goes into the page as text (textContent), never as HTML: prompts
// and answers are whatever users typed.
(function () {
  "use strict";
  const POLL_MS = 2000;
  const charts = {};
  const WINDOW_S = 600; // the last 10 minutes, what the server keeps
  let nowS = Date.now() / 1000;
  let key = sessionStorage.getItem("clawline-key") || new URLSearchParams(location.hash.slice(1)).get("key") || "";
  if (location.hash) history.replaceState(null, "", location.pathname);

  const $ = (id) => document.getElementById(id);
  const palette = ["#2f6fde", "#e0663b", "#2a9d55", "#9b51e0", "#d4a017", "#17a2b8", "#c2185b", "#5d6d7e"];

  function text(el, value) { el.textContent = value == null ? "" : String(value); return el; }

  function cell(row, value, cls) {
    const td = text(document.createElement("td"), value);
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function fillTable(id, rows) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren();
    for (const r of rows) {
      const tr = document.createElement("tr");
      for (const [value, cls] of r) cell(tr, value, cls);
      body.appendChild(tr);
    }
  }

  const time = (ms) => new Date(ms).toLocaleTimeString();

  // One uPlot per chart; rebuilt when its series change, otherwise fed new data.
  function draw(id, names, data, opts) {
    const el = $(id);
    const signature = names.join("\u0000");
    let c = charts[id];
    if (!c || c.signature !== signature) {
      if (c) c.plot.destroy();
      const series = [{}].concat(names.map((name, i) => Object.assign({
        label: name, stroke: palette[i % palette.length], width: 1.5, spanGaps: true,
        points: { size: 6 },
      }, (opts && opts.series && opts.series(name, i)) || {})));
      const plot = new uPlot({
        width: Math.max(el.clientWidth, 320), height: 220, series,
        scales: { x: { time: true, range: () => [nowS - WINDOW_S, nowS + 5] } },
        axes: [{}, { size: 60 }],
        legend: { live: false },
      }, data, el);
      c = charts[id] = { plot, signature };
    } else {
      c.plot.setData(data);
    }
  }

  // {name: [[t, v], ...]} → uPlot's aligned columns over the union of timestamps.
  function align(seriesMap, pick) {
    const names = Object.keys(seriesMap).sort();
    const ts = Array.from(new Set(names.flatMap((n) => seriesMap[n].map((p) => p[0])))).sort((a, b) => a - b);
    const index = new Map(ts.map((t, i) => [t, i]));
    const columns = names.map((n) => {
      const col = new Array(ts.length).fill(null);
      for (const p of seriesMap[n]) col[index.get(p[0])] = pick ? pick(p) : p[1];
      return col;
    });
    return { names, data: [ts.map((t) => t / 1000)].concat(columns) };
  }

  function render(d) {
    nowS = d.now / 1000;
    document.body.classList.toggle("tenant", !d.admin);
    text($("who"), d.admin ? "all tenants (admin)" : "tenant " + d.tenant);
    let a = align(d.steps);
    draw("steps", a.names, a.data);
    a = align(d.rewards, (p) => p[1]);
    draw("rewards", a.names, a.data);
    a = align(d.feedback);
    draw("feedback", a.names, a.data);
    if (d.admin) {
      a = align(d.serving);
      draw("versions", a.names, a.data, { series: () => ({ paths: uPlot.paths.stepped({ align: 1 }) }) });
      fillTable("timeline", d.timeline.slice().reverse().map((e) => [[time(e.t)], ["v" + e.version], [e.engine], [e.event], [e.reason, "text"]]));
      a = align(d.training);
      draw("training", a.names, a.data);
      fillTable("queue", Object.entries(d.queue.channels).map(([ch, q]) => [[ch], [q.waiting], [q.ready]]));
      fillTable("drops", Object.entries(d.queue.drops).map(([reason, n]) => [[reason], [n]]));
      fillTable("lag", d.lag.map((l) => [[l.stream], [l.consumer], [l.pending], [l.unacked]]));
    }
    fillTable("recent", d.recent.slice().reverse().map((s) => [[time(s.t)], [s.tenant], [s.channel], [s.prompt, "text"], [s.answer, "text"], [s.version == null ? "" : "v" + s.version]]));
    text($("status"), "updated " + time(d.now));
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  }

  // "Why isn't it learning?": the diagnosis every 10 s, a step's timeline on demand. Lines and
  // stage texts are text, never markup, like everything else here.
  const DIAGNOSIS_MS = 10000;
  const auth = () => (key ? { Authorization: "Bearer " + key } : {});
  const problem = (body, status) => (body && body.error && body.error.message) || "error " + status;

  async function diagnose() {
    const list = $("diagnosis");
    try {
      const r = await fetch("/v1/diagnosis", { headers: auth() });
      const body = await r.json().catch(() => null);
      const lines = r.ok && body ? body.lines : [problem(body, r.status)];
      list.className = r.ok && body && body.ok ? "ok" : "";
      list.replaceChildren(...lines.map((l) => text(document.createElement("li"), l)));
    } catch (e) {
      list.replaceChildren(text(document.createElement("li"), "unreachable: " + e.message));
    }
    setTimeout(diagnose, DIAGNOSIS_MS);
  }

  async function explainStep(id) {
    text($("explain-summary"), "…");
    fillTable("explanation", []);
    try {
      const r = await fetch("/v1/explain/" + encodeURIComponent(id), { headers: auth() });
      const body = await r.json().catch(() => null);
      if (!r.ok || !body) {
        text($("explain-summary"), problem(body, r.status));
        return;
      }
      text($("explain-summary"), body.summary);
      fillTable("explanation", body.stages.map((s) => [
        [s.time ? time(Date.parse(s.time)) : ""], [s.stage], [s.status.replace("_", " "), s.status], [s.text, "text"]]));
    } catch (e) {
      text($("explain-summary"), "unreachable: " + e.message);
    }
  }

  $("explain-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("step-id").value.trim();
    if (id) explainStep(id);
  });

  async function poll() {
    try {
      const headers = key ? { Authorization: "Bearer " + key } : {};
      const r = await fetch("/v1/dashboard/data", { headers });
      if (r.status === 401 || r.status === 403) {
        $("login").hidden = false;
        text($("status"), r.status === 401 ? "an API key is needed" : "this key may not see the dashboard");
      } else if (!r.ok) {
        text($("status"), "error " + r.status);
      } else {
        $("login").hidden = true;
        render(await r.json());
      }
    } catch (e) {
      text($("status"), "unreachable: " + e.message);
    }
    setTimeout(poll, POLL_MS);
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    key = $("key").value.trim();
    sessionStorage.setItem("clawline-key", key);
  });
  poll();
  diagnose();
})();
