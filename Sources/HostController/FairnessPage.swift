/// The live fairness page tandem-host serves at `/` next to `/metrics`: per link, each VM's
/// allocation, measured rate and demand over the last minutes as a plot, Jain's index over
/// time, the table as `tandem-host fairness` prints it (agent state, reservations), and the
/// reservations the host holds. It reads `/api/v1/fairness` once a second and redraws.
///
/// One self-contained document: inline style and script, SVG drawn by the script, nothing
/// fetched from anywhere but this server (the host that serves it may have no internet, and
/// the Content-Security-Policy forbids anything else). For scripts and tests, the page keeps
/// what it drew in the DOM: each plotted line has `data-vm`, `data-series` and `data-last`
/// (the latest value in bit/s); `body` has `data-updates` (how many times it redrew) and
/// `data-requests` (every URL the page loaded, from the Resource Timing API).
public enum FairnessPageSource {
    public static var html: String { FairnessPage.html }
}

enum FairnessPage {
    static let contentSecurityPolicy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static let html = #"""
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tandem fairness</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em 2em; color: #1d2433; background: #fafbfc; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
  .meta { color: #5b6578; } .err { color: #b42318; font-weight: 600; }
  .plots { display: flex; gap: 1.5em; flex-wrap: wrap; align-items: flex-start; }
  svg { background: #fff; border: 1px solid #d8dde6; }
  svg text { font-size: 11px; fill: #5b6578; } .grid { stroke: #eceff4; }
  table { border-collapse: collapse; margin-top: .6em; background: #fff; }
  th, td { border: 1px solid #d8dde6; padding: .25em .6em; text-align: right; white-space: nowrap; }
  th { background: #f0f2f6; } td:first-child, th:first-child { text-align: left; }
  .legend span { display: inline-block; margin-right: 1.2em; } .sw { display: inline-block; width: 1.6em; height: 3px; vertical-align: middle; margin-right: .3em; }
  .connected { color: #067647; } .silent, .absent, .disconnected { color: #b42318; }
</style>
</head>
<body data-updates="0" data-requests="">
<h1>Tandem fairness</h1>
<div class="meta" id="meta">loading…</div>
<div id="links"></div>
<h2>Reservations</h2>
<div id="reservations"></div>
<script>
"use strict";
const colors = ["#2e6fdb", "#e5531a", "#16a34a", "#9333ea", "#ca8a04", "#0891b2", "#db2777", "#4b5563"];
const rate = b => b == null ? "-" : b >= 1e9 ? (b / 1e9).toFixed(2) + " Gbit/s" : b >= 1e6 ? (b / 1e6).toFixed(1) + " Mbit/s" : b >= 1e3 ? (b / 1e3).toFixed(0) + " kbit/s" : Math.round(b) + " bit/s";
const axis = b => b >= 1e9 ? +(b / 1e9).toFixed(2) + "G" : b >= 1e6 ? +(b / 1e6).toFixed(1) + "M" : b >= 1e3 ? +(b / 1e3).toFixed(0) + "k" : String(Math.round(b));
const ago = s => s >= 120 ? `${Math.round(s / 60)} min ago` : `${Math.round(s)} s ago`;
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const NS = "http://www.w3.org/2000/svg";
function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
// One plot: times on x, values (nil: a gap) on y from 0 to top; each series a polyline.
function plot(title, times, series, top, unit, fmt) {
  const W = 640, H = 220, L = 48, R = 10, T = 22, B = 26;
  const svg = el("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title});
  el("text", {x: L, y: 14}, svg).textContent = title;
  const t0 = times.length ? times[0] : 0, t1 = times.length ? times[times.length - 1] : 1, span = Math.max(t1 - t0, 1);
  const x = t => L + (W - L - R) * (t - t0) / span, y = v => H - B - (H - T - B) * Math.min(v / top, 1.05);
  for (let k = 0; k <= 4; k++) {
    const v = top * k / 4;
    el("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid"}, svg);
    el("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end"}, svg).textContent = fmt(v);
  }
  el("text", {x: L, y: H - 8}, svg).textContent = ago(span);
  el("text", {x: W - R, y: H - 8, "text-anchor": "end"}, svg).textContent = "now";
  for (const s of series) {
    let pts = [], last = null;
    s.values.forEach((v, i) => { if (v != null) { pts.push(`${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`); last = v; } });
    // (A lone sample is drawn as a dot: a line needs two.)
    if (pts.length === 1) { const [px, py] = pts[0].split(","); el("circle", {cx: px, cy: py, r: 2.5, fill: s.color}, svg); }
    el("polyline", {points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": s.width || 2, "stroke-dasharray": s.dash || "",
                    "data-vm": s.vm || "", "data-series": s.name, "data-last": last == null ? "" : String(last), "data-points": String(pts.length)}, svg);
  }
  return svg;
}
function render(d) {
  document.getElementById("meta").textContent =
    `tandem-host ${d.version} · ${new Date(d.time * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC · ${d.times.length} samples, one a second, kept 10 min · updated every second`;
  const links = document.getElementById("links");
  links.textContent = "";
  for (const l of d.links) {
    const h = d.history.find(x => x.link === l.link) || {vms: [], jain: [], capacity: l.capacity};
    const sec = document.createElement("section");
    sec.dataset.link = l.link;
    sec.innerHTML = `<h2>link ${esc(l.link)} · capacity ${rate(l.capacity)} · used ${(l.utilisation * 100).toFixed(0)}% · Jain ${l.jain == null ? "-" : l.jain.toFixed(3)}</h2>`;
    const legend = document.createElement("div");
    legend.className = "legend";
    const series = [];
    h.vms.forEach((v, i) => {
      const c = colors[i % colors.length];
      legend.insertAdjacentHTML("beforeend", `<span><i class="sw" style="background:${c}"></i>${esc(v.vm)}</span>`);
      series.push({vm: v.vm, name: "measured", values: v.measured, color: c});
      series.push({vm: v.vm, name: "allocation", values: v.allocation, color: c, dash: "6 4", width: 1.5});
      series.push({vm: v.vm, name: "demand", values: v.demand, color: c, dash: "1 3", width: 1.5});
    });
    legend.insertAdjacentHTML("beforeend", `<span>solid: measured · dashed: allocation · dotted: demand</span>`);
    sec.appendChild(legend);
    const plots = document.createElement("div");
    plots.className = "plots";
    plots.appendChild(plot("bit/s per VM", d.times, series, l.capacity, "bit/s", axis));
    plots.appendChild(plot("Jain's index (1: fair by weight)", d.times, [{name: "jain", values: h.jain, color: "#1d2433"}], 1, "", v => v.toFixed(2)));
    sec.appendChild(plots);
    const rows = l.vms.map(r => `<tr data-vm="${esc(r.vm)}"><td>${esc(r.vm)}</td><td>${r.weight}</td><td>${rate(r.min)}</td><td>${r.max == null ? "-" : rate(r.max)}</td>` +
      `<td>${r.reserved ? rate(r.reserved) : "-"}</td><td>${rate(r.demand)}</td><td>${rate(r.allocation)}</td><td>${rate(r.measured)}</td>` +
      `<td>${(r.share * 100).toFixed(1)}%</td><td class="${esc(r.agent)}">${esc(r.agent)}</td>${l.groups ? `<td>${esc(r.group || "-")}</td>` : ""}</tr>`).join("");
    sec.insertAdjacentHTML("beforeend", `<table><tr><th>VM</th><th>weight</th><th>min</th><th>max</th><th>reserved</th><th>demand</th><th>allocation</th>` +
      `<th>measured</th><th>share</th><th>agent</th>${l.groups ? "<th>group</th>" : ""}</tr>${rows}</table>`);
    links.appendChild(sec);
  }
  const res = document.getElementById("reservations");
  res.innerHTML = d.reservations.length === 0 ? "<p class=meta>none</p>" :
    "<table><tr><th>VM</th><th>id</th><th>rate</th><th>flows</th><th>confirmed</th></tr>" +
    d.reservations.map(r => `<tr><td>${esc(r.vm)}</td><td>${esc(r.id)}</td><td>${esc(r.rate)}</td><td>${esc(r.selector)}</td><td>${r.confirmed ? "yes" : "no"}</td></tr>`).join("") + "</table>";
  document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  document.body.dataset.requests = performance.getEntriesByType("resource").map(e => e.name).concat([location.href]).join(" ");
}
async function update() {
  try {
    const r = await fetch("/api/v1/fairness", {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    render(await r.json());
  } catch (e) {
    document.getElementById("meta").innerHTML = `<span class="err">tandem-host not answering (${esc(e.message)}); retrying</span>`;
  }
  setTimeout(update, 1000);
}
update();
</script>
</body>
</html>
"""#
}
