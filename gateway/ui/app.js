// Flint's portal: the function list, a function's page (charts, invoke form, live logs,
// delete) and a deploy form, over the gateway's REST API and its /system/ui/* JSON. No build
// step: plain DOM (data is only ever set as text, never parsed as HTML) and uPlot for charts.
"use strict";

const main = document.getElementById("main");
let page = { timers: [], charts: [], aborts: [] };

function leave() {
  page.timers.forEach(clearInterval);
  page.charts.forEach((c) => c.destroy());
  page.aborts.forEach((a) => a.abort());
  page = { timers: [], charts: [], aborts: [] };
}

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function alertBox(text) {
  return el("div", { class: "alert", role: "alert" }, text);
}

async function getJson(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

const fmt = {
  ms: (v) => (v === null || v === undefined ? "–" : v < 10 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`),
  pct: (v) => `${v.toFixed(v < 10 && v > 0 ? 1 : 0)} %`,
  time: (t) => new Date(t * 1000).toLocaleTimeString(),
  when: (t) => new Date(t * 1000).toLocaleString(),
  secs: (v) => (v < 90 ? `${+v.toFixed(1)} s` : v < 5400 ? `${+(v / 60).toFixed(1)} min` : `${+(v / 3600).toFixed(1)} h`),
};

async function route() {
  leave();
  const hash = location.hash || "#/";
  const fn = hash.match(/^#\/fn\/([^/]+)\/([^/]+)$/);
  if (fn) await functionPage(decodeURIComponent(fn[1]), decodeURIComponent(fn[2]));
  else if (hash === "#/deploy") deployPage();
  else await listPage();
}
// A new page takes the focus, so that keyboard and screen-reader users start at its top.
window.addEventListener("hashchange", () => route().then(() => main.focus()));

// ---- The list ----------------------------------------------------------------------------

function states(f) {
  const out = [];
  if (f.paused) out.push(el("span", { class: "badge bad" }, "paused"));
  if (f.throttle) {
    const t = f.throttle;
    const queued = t.queued ? `, ${t.queued} queued` : "";
    out.push(el("span", { class: "badge muted" }, `throttled${t.rate ? `: ${t.rate}/s` : ""}${queued}`));
  }
  if (f.replicas === 0) out.push(el("span", { class: "badge muted" }, "scaled to zero"));
  if (f.canary) {
    const phase = f.canary.phase ? ` ${f.canary.phase}` : "";
    const cls = f.canary.phase === "RolledBack" ? "badge bad" : "badge ok";
    out.push(el("span", { class: cls }, `canary ${f.canary.weight}%${phase}`));
  }
  return out;
}

const COLUMNS = ["Function", "Namespace", "Image", "Ready / desired", "Invocations", "Last minute", "5xx", "p99", "State"];

async function listPage() {
  document.title = "Functions · Flint";
  const body = el("tbody");
  const note = el("p", { class: "muted", "aria-live": "polite" });
  const table = el(
    "table",
    { "aria-describedby": "list-note" },
    el("caption", { class: "muted", id: "list-note" }, "Numbers of the last minute; refreshed every 2 s."),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        COLUMNS.map((h) => el("th", { scope: "col" }, h)),
      ),
    ),
    body,
  );
  main.replaceChildren(el("h1", {}, "Functions"), note, el("div", { class: "table-wrap" }, table));
  async function refresh() {
    try {
      const rows = await getJson("/system/ui/functions");
      note.textContent = rows.length ? "" : "No functions yet: deploy one.";
      body.replaceChildren(
        ...rows.map((f) =>
          el(
            "tr",
            { "data-function": f.name },
            ...[
              el("a", { href: `#/fn/${encodeURIComponent(f.namespace)}/${encodeURIComponent(f.name)}` }, f.name),
              f.namespace,
              f.image,
              f.versions.length ? f.versions.map((v) => `${v.version} ${v.ready} / ${v.replicas}`).join(", ") : `${f.availableReplicas} / ${f.replicas}`,
              String(f.invocationCount),
              String(f.requestsLastMinute),
              fmt.pct(f.errorRate),
              fmt.ms(f.p99Ms),
              states(f),
            ].map((v, i) => el("td", { "data-label": COLUMNS[i], "data-col": COLUMNS[i].toLowerCase(), class: i >= 3 && i <= 7 ? "num" : null }, v)),
          ),
        ),
      );
    } catch (e) {
      note.replaceChildren(alertBox(e.message));
    }
  }
  await refresh();
  // When the list was first on screen (read by scripts/bench portal).
  if (!performance.getEntriesByName("flint-list").length) performance.mark("flint-list");
  page.timers.push(setInterval(refresh, 2000));
}

// ---- A function --------------------------------------------------------------------------

/** A chart of some of a series' columns; markers at the events of `kinds`. */
function chart(caption, columns, kinds, unit) {
  const figure = el("figure", { "data-chart": caption });
  const holder = el("div");
  figure.append(el("figcaption", {}, caption), holder);
  let plot = null;
  let events = [];
  const dashes = [[], [6, 4], [2, 3], [10, 3, 2, 3]];
  const colours = ["#0a58ca", "#b3261e", "#1a7f37", "#8250df"];
  function update(series) {
    events = series.events.filter((e) => kinds.includes(e.kind));
    const data = [series.t, ...columns.map(([key]) => series[key])];
    const total = columns.reduce((n, [key]) => n + series[key].reduce((a, v) => a + (v || 0), 0), 0);
    figure.dataset.total = String(total);
    figure.dataset.events = String(events.length);
    if (plot) return plot.setData(data);
    plot = new uPlot(
      {
        width: Math.max(280, holder.clientWidth || 600),
        height: 180,
        scales: { x: { time: true } },
        axes: [{}, { label: unit }],
        series: [
          {},
          ...columns.map(([, label], i) => ({ label, stroke: colours[i % 4], dash: dashes[i % 4], width: 2, spanGaps: false })),
        ],
        hooks: {
          draw: [
            (u) => {
              const ctx = u.ctx;
              ctx.save();
              ctx.strokeStyle = "#57606a";
              ctx.setLineDash([2, 2]);
              for (const e of events) {
                const x = u.valToPos(e.at, "x", true);
                ctx.beginPath();
                ctx.moveTo(x, u.bbox.top);
                ctx.lineTo(x, u.bbox.top + u.bbox.height);
                ctx.stroke();
              }
              ctx.restore();
            },
          ],
        },
      },
      data,
      holder,
    );
    page.charts.push(plot);
  }
  return { figure, update };
}

// ---- A function's idle policy and schedule ---------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  e.append(...children);
  return e;
}

/** The histogram of quiet spells, with the pre-warm and keep-alive marked. */
function histogram(v) {
  const bins = v.bins.length ? v.bins : [0];
  const width = 480, height = 120, pad = 20;
  const top = Math.max(1, ...bins);
  // Room after the keep-alive for its label.
  const span = Math.max(bins.length, v.keepAliveS ? Math.ceil(v.keepAliveS / v.binS) + 4 : 0);
  const w = (width - 2 * pad) / span;
  const x = (s) => pad + (s / v.binS) * w;
  const label = `${v.spells} quiet spells in bins of ${fmt.secs(v.binS)}` + (v.longer ? `, ${v.longer} longer than every bin` : "");
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 16}`, role: "img", "aria-label": label, class: "histogram" });
  bins.forEach((n, i) => {
    const h = (n / top) * (height - pad);
    chart.append(svg("rect", { x: pad + i * w, y: height - h, width: Math.max(1, w - 1), height: h, fill: "#0a58ca" }, svg("title", {}, `${fmt.secs(i * v.binS)}–${fmt.secs((i + 1) * v.binS)}: ${n}`)));
  });
  for (const [at, text, colour] of [[v.preWarmS, "pre-warm", "#1a7f37"], [v.keepAliveS, "keep-alive", "#b3261e"]]) {
    if (at === null || at === undefined) continue;
    chart.append(svg("line", { x1: x(at), x2: x(at), y1: pad / 2, y2: height, stroke: colour, "stroke-dasharray": "4 3" }));
    chart.append(svg("text", { x: x(at) + 3, y: pad, fill: colour, "font-size": 11 }, text));
  }
  chart.append(svg("line", { x1: pad, x2: width - pad, y1: height, y2: height, stroke: "#57606a" }));
  chart.append(svg("text", { x: pad, y: height + 14, "font-size": 11, fill: "#57606a" }, `0 → ${fmt.secs(span * v.binS)} after the last call`));
  return el("figure", { "data-spells": v.spells }, el("figcaption", {}, label), chart);
}

/** What the idle policy decided for one version and what its schedule holds, in words. */
function idleView(version, v) {
  const now = Date.now() / 1000;
  const lines = [];
  if (v.policy === "learned" && v.basis !== "fixed") {
    const from = v.basis === "forecast" ? "a forecast of its next long quiet spell" : "its histogram of quiet spells";
    lines.push(["Policy", `learned, from ${from} (${v.spells} spells)`]);
    lines.push(["Windows", `to zero after each call; one replica back ${fmt.secs(v.preWarmS)} after it, kept until ${fmt.secs(v.keepAliveS)} after it`]);
    if (v.warmFrom && v.warmFrom > now) lines.push(["Next warm-up", `${fmt.when(v.warmFrom)} (in ${fmt.secs(v.warmFrom - now)})`]);
    else if (v.warmUntil && v.warmUntil > now) lines.push(["Next warm-up", `warm now, until ${fmt.when(v.warmUntil)}`]);
    else lines.push(["Next warm-up", "after the next call"]);
  } else if (v.policy === "learned") {
    lines.push(["Policy", `learned, not decided yet: to zero ${fmt.secs(v.zeroAfterS)} after the last call (zeroAfter) until the spells say more (${v.spells} so far)`]);
  } else {
    lines.push(["Policy", `fixed: to zero ${fmt.secs(v.zeroAfterS)} after the last call (zeroAfter)`]);
  }
  if (v.scheduled) lines.push(["Scheduled minimum", `${v.scheduled.min} replica(s) now, until ${fmt.when(v.scheduled.at)}`]);
  if (v.nextScheduled) lines.push(["Next scheduled", `${v.nextScheduled.min} replica(s) from ${fmt.when(v.nextScheduled.at)}`]);
  return el(
    "div",
    { "data-idle": version },
    el("h3", {}, `${version} version`),
    el("dl", { class: "facts" }, lines.flatMap(([k, text]) => [el("dt", {}, k), el("dd", {}, text)])),
    v.policy === "learned" ? histogram(v) : null,
  );
}

function idlePanel() {
  const section = el("section", { hidden: true });
  function update(series) {
    const views = (series.idle || []).map((v, i) => v && idleView(i ? "canary" : "stable", v)).filter(Boolean);
    section.hidden = !views.length;
    section.replaceChildren(el("h2", {}, "Idle policy and schedule"), ...views);
  }
  return { section, update };
}

async function functionPage(namespace, name) {
  document.title = `${name} · Flint`;
  const target = `${name}.${namespace}`;
  const summary = el("p", { "aria-live": "polite" });
  const charts = [
    chart("Requests per second by status", [["ok", "2xx/3xx"], ["clientErrors", "4xx"], ["serverErrors", "5xx"]], [], "req/s"),
    chart("Latency", [["p50Ms", "p50"], ["p99Ms", "p99"]], [], "ms"),
    chart(
      "Replicas: desired and actual (dotted lines: scaling events)",
      [["desiredStable", "desired (stable)"], ["actualStable", "actual (stable)"], ["desiredCanary", "desired (canary)"], ["actualCanary", "actual (canary)"]],
      ["scaling"],
      "replicas",
    ),
    chart("Canary weight (dotted lines: analysis verdicts)", [["canaryWeight", "weight %"]], ["canary"], "%"),
    chart("Cold starts per second", [["coldStarts", "cold starts"]], [], "starts"),
  ];
  const events = el("ol", { class: "events", reversed: true });
  const idle = idlePanel();
  main.replaceChildren(
    el("p", {}, el("a", { href: "#/" }, "← Functions")),
    el("h1", {}, name, " ", el("span", { class: "muted" }, `(${namespace})`)),
    summary,
    el("h2", {}, "Last ten minutes"),
    el("div", { class: "grid" }, charts.map((c) => c.figure)),
    idle.section,
    el("h2", {}, "Events"),
    events,
    invokeForm(namespace, name),
    logsPanel(namespace, name),
    deleteButton(namespace, name),
  );
  async function refresh() {
    try {
      const [rows, series] = await Promise.all([
        getJson(`/system/ui/functions?namespace=${encodeURIComponent(namespace)}`),
        getJson(`/system/ui/series/${encodeURIComponent(target)}`),
      ]);
      const f = rows.find((r) => r.name === name);
      if (f) {
        const why = f.canary && f.canary.message ? [el("span", {}, ` ${f.canary.message}`)] : [];
        summary.replaceChildren(
          `Image ${f.image}; ${f.availableReplicas} of ${f.replicas} replicas ready; ${f.invocationCount} invocations. `,
          ...states(f),
          ...why,
        );
      }
      charts.forEach((c) => c.update(series));
      idle.update(series);
      events.replaceChildren(
        ...series.events
          .slice()
          .reverse()
          .map((e) => el("li", {}, el("time", { datetime: new Date(e.at * 1000).toISOString() }, fmt.time(e.at)), ` ${e.kind}: ${e.text}`)),
      );
      if (!series.events.length) events.replaceChildren(el("li", { class: "muted" }, "None in the last ten minutes."));
    } catch (e) {
      summary.replaceChildren(alertBox(e.message));
    }
  }
  await refresh();
  page.timers.push(setInterval(refresh, 2000));
}

function invokeForm(namespace, name) {
  const method = el("select", { id: "invoke-method" }, ["POST", "GET", "PUT", "DELETE", "PATCH"].map((m) => el("option", {}, m)));
  const path = el("input", { id: "invoke-path", value: "/", spellcheck: "false" });
  const headers = el("textarea", { id: "invoke-headers", placeholder: "Content-Type: text/plain", spellcheck: "false" });
  const body = el("textarea", { id: "invoke-body", spellcheck: "false" });
  const result = el("div", { id: "invoke-result", "aria-live": "polite" });
  const form = el(
    "form",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const h = new Headers();
        for (const line of headers.value.split("\n")) {
          const i = line.indexOf(":");
          if (i > 0) h.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
        }
        const p = path.value.startsWith("/") ? path.value : `/${path.value}`;
        const started = performance.now();
        try {
          const r = await fetch(`/function/${encodeURIComponent(name)}.${encodeURIComponent(namespace)}${p}`, {
            method: method.value,
            headers: h,
            body: ["GET", "HEAD"].includes(method.value) ? undefined : body.value,
          });
          const text = await r.text();
          const took = performance.now() - started;
          const cold = r.headers.get("x-flint-cold-start") === "true";
          result.replaceChildren(
            el(
              "div",
              { class: "result" },
              el("p", {}, el("strong", { "data-status": r.status }, `Status ${r.status} ${r.statusText}`), ` in ${fmt.ms(took)}`, cold ? " (cold start: it waited for a replica to start)" : " (warm)"),
              el("p", {}, "Headers"),
              el("pre", {}, [...r.headers].map(([k, v]) => `${k}: ${v}`).join("\n")),
              el("p", {}, "Body"),
              el("pre", { id: "invoke-answer" }, text),
            ),
          );
        } catch (e) {
          result.replaceChildren(alertBox(e.message));
        }
      },
    },
    el("label", { for: "invoke-method" }, "Method"),
    method,
    el("label", { for: "invoke-path" }, "Path below the function"),
    path,
    el("label", { for: "invoke-headers" }, "Headers (one \"Name: value\" per line)"),
    headers,
    el("label", { for: "invoke-body" }, "Body"),
    body,
    el("button", { type: "submit" }, "Invoke"),
  );
  return el("section", { "aria-labelledby": "invoke-h" }, el("h2", { id: "invoke-h" }, "Invoke"), form, result);
}

function logsPanel(namespace, name) {
  const out = el("pre", { id: "logs", "aria-live": "off" }, "");
  const button = el("button", { type: "button", "aria-pressed": "false" }, "Follow logs");
  let abort = null;
  button.addEventListener("click", async () => {
    if (abort) {
      abort.abort();
      return;
    }
    abort = new AbortController();
    page.aborts.push(abort);
    button.textContent = "Stop following";
    button.setAttribute("aria-pressed", "true");
    try {
      const q = `name=${encodeURIComponent(name)}&namespace=${encodeURIComponent(namespace)}&tail=50&follow=true`;
      const r = await fetch(`/system/logs?${q}`, { signal: abort.signal });
      if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const lines = (rest + value).split("\n");
        rest = lines.pop();
        for (const line of lines.filter(Boolean)) {
          const m = JSON.parse(line);
          out.append(`${m.timestamp} ${m.instance} ${m.text}\n`);
        }
        out.scrollTop = out.scrollHeight;
      }
    } catch (e) {
      if (e.name !== "AbortError") out.append(`(${e.message})\n`);
    } finally {
      abort = null;
      button.textContent = "Follow logs";
      button.setAttribute("aria-pressed", "false");
    }
  });
  return el("section", { "aria-labelledby": "logs-h" }, el("h2", { id: "logs-h" }, "Logs"), button, out);
}

function deleteButton(namespace, name) {
  const result = el("div", { "aria-live": "polite" });
  const button = el("button", {
    type: "button",
    class: "danger",
    onclick: async () => {
      if (!confirm(`Delete ${name} in ${namespace}?`)) return;
      const r = await fetch("/system/functions", {
        method: "DELETE",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ functionName: name, namespace }),
      });
      if (r.ok) location.hash = "#/";
      else result.replaceChildren(alertBox((await r.text()).trim()));
    },
  }, `Delete ${name}`);
  return el("section", { "aria-labelledby": "delete-h" }, el("h2", { id: "delete-h" }, "Delete"), button, result);
}

// ---- Deploy -----------------------------------------------------------------------------

function deployPage() {
  document.title = "Deploy · Flint";
  const field = (id, label, attrs = {}) => [el("label", { for: id }, label), el(attrs.multiline ? "textarea" : "input", { id, spellcheck: "false", ...attrs, multiline: undefined })];
  const result = el("div", { id: "deploy-result", "aria-live": "polite" });
  const form = el(
    "form",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const v = (id) => document.getElementById(id).value.trim();
        const envVars = {};
        for (const line of v("deploy-env").split("\n")) {
          const i = line.indexOf("=");
          if (i > 0) envVars[line.slice(0, i).trim()] = line.slice(i + 1);
        }
        const deployment = { service: v("deploy-name"), image: v("deploy-image"), namespace: v("deploy-namespace"), envVars };
        if (v("deploy-command")) deployment.envProcess = v("deploy-command");
        const r = await fetch("/system/functions", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(deployment),
        });
        if (r.ok) {
          const ns = deployment.namespace || "default";
          location.hash = `#/fn/${encodeURIComponent(ns)}/${encodeURIComponent(deployment.service)}`;
        } else {
          result.replaceChildren(alertBox((await r.text()).trim()));
        }
      },
    },
    field("deploy-name", "Name", { required: true, autocomplete: "off" }),
    field("deploy-image", "Image", { required: true }),
    field("deploy-namespace", "Namespace (empty: the gateway's default)"),
    field("deploy-command", "Command (the process the watchdog runs, e.g. cat)"),
    field("deploy-env", "Environment (one NAME=value per line)", { multiline: true }),
    el("button", { type: "submit" }, "Deploy"),
  );
  main.replaceChildren(el("h1", {}, "Deploy a function"), form, result);
}

route();
