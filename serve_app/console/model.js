// The model view: versions and aliases, the rollout against its policy, score
// distributions, where it is loaded, the audit trail, and the admin actions.
import { describe, request } from "./api.js";
import { DRIFT_CLASS, dash, esc, num, pct, when } from "./format.js";

const GUARD_NAMES = { error_rate: "error rate", latency: "p99 ms", drift: "score PSI" };

function dl(pairs) {
  return `<dl>${pairs.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join("")}</dl>`;
}

function versionsHtml(d) {
  const s = d.serving;
  const aliases = Object.entries(d.aliases || {}).map(([a, v]) => `${esc(a)} \u2192 v${esc(v)}`);
  const pairs = [
    ["aliases", aliases.join(", ") || dash],
    ["champion", s ? `v${esc(s.champion)}` : `<span class="bad">not served</span>`],
    ["challenger", s && s.challenger !== null ? `v${esc(s.challenger)}${s.shadow ? " (shadow)" : ""}` : dash],
    ["standby", s && s.standby ? `v${esc(s.standby)} (kept open for an instant rollback)` : dash],
    ["drift", `<span class="badge ${DRIFT_CLASS[d.drift] || "warn"}">${esc(d.drift)}</span>`],
  ];
  for (const [v, why] of Object.entries(d.failed_versions || {})) pairs.push([`v${v} failed`, esc(why)]);
  for (const [v, why] of Object.entries(d.rejected_versions || {})) pairs.push([`v${v} rejected`, esc(why)]);
  if (d.control_error) pairs.push(["control error", `<span class="bad">${esc(d.control_error)}</span>`]);
  for (const [role, q] of Object.entries(d.live_quality || {})) {
    pairs.push([`live ${role}`, `${esc(q.labelled)} labelled, recall ${num(q.recall, 3)}, FPR ${num(q.false_positive_rate, 4)}`]);
  }
  return dl(pairs);
}

function rolloutHtml(d) {
  const r = d.rollout;
  const p = d.policy;
  if (!r) {
    return `<p class="muted">No rollout. Policy: ${esc(p.mode)}, steps ${esc(p.steps.join(" \u2192 "))}%, ` +
      `dwell ${esc(p.step_dwell_s)} s and ${esc(p.step_min_requests)} requests per step.</p>`;
  }
  const steps = r.steps.map((w, i) => {
    const cls = r.phase === "canary" ? (i < r.step ? "done" : i === r.step ? "now" : "") : "";
    return `<span class="${cls}">${esc(w)}%</span>`;
  }).join("");
  const st = d.step || {};
  const dwell = st.dwell_s ? Math.min(1, st.elapsed_s / st.dwell_s) : 1;
  const reqs = st.min_requests ? Math.min(1, st.challenger_requests / st.min_requests) : 1;
  const phase = r.phase === "canary" ? `canary, step ${r.step + 1} of ${r.steps.length}` : r.phase;
  const guards = (d.guards || []).map((g) => {
    const state = !g.judged ? `<span class="muted">too little traffic yet</span>`
      : g.breached ? `<span class="badge bad">breach</span>` : `<span class="badge ok">ok</span>`;
    const show = g.kind === "error_rate" ? (v) => pct(v, 2) : (v) => num(v, g.kind === "latency" ? 1 : 3);
    return `<tr><td>${esc(GUARD_NAMES[g.kind] || g.kind)}</td><td class="num">${show(g.reading)}</td>` +
      `<td class="num">${show(g.limit)}</td><td>${state}</td></tr>`;
  }).join("");
  return `<p>v${esc(r.candidate)} against v${esc(r.champion)}: <b>${esc(phase)}</b>, at ${num(r.weight, 0)}%</p>` +
    `<div class="steps">${steps}</div>` +
    (r.phase === "canary"
      ? `<div>dwell ${num(st.elapsed_s, 0)} / ${esc(st.dwell_s)} s</div><div class="meter"><i data-w="${dwell}"></i></div>` +
        `<div>challenger requests ${esc(st.challenger_requests)} / ${esc(st.min_requests)}</div><div class="meter"><i data-w="${reqs}"></i></div>`
      : `<p class="muted">Holds at this weight until an operator acts; the guards still roll it back (${esc(st.challenger_requests)} challenger requests this step).</p>`) +
    `<table><thead><tr><th>guard (this step)</th><th class="num">reading</th><th class="num">limit</th><th></th></tr></thead><tbody>${guards}</tbody></table>`;
}

function trafficHtml(d) {
  const recent = d.recent;
  const rows = Object.entries(recent.versions).map(([v, f]) =>
    `<tr><td>v${esc(v)}</td><td class="num">${esc(f.requests)}</td><td class="num">${num(f.requests_per_s, 2)}</td>` +
    `<td class="num">${f.p99_ms === null ? dash : `\u2264 ${num(f.p99_ms, 1)}`}</td><td class="num">${pct(f.error_rate, 2)}</td></tr>`).join("");
  return `<p class="muted">Scored requests in the last ${Math.round(recent.window_s)} s.</p>` +
    `<table><thead><tr><th>version</th><th class="num">requests</th><th class="num">req/s</th><th class="num">p99 ms</th><th class="num">errors</th></tr></thead>` +
    `<tbody>${rows || `<tr><td colspan="5" class="muted">no requests in the window</td></tr>`}</tbody></table>`;
}

// Two series of 10 score bins (share of each version's scores) as an inline SVG.
function histogram(title, champion, challenger) {
  const series = [["champion", champion, "#1d4ed8"], ["challenger", challenger, "#c2410c"]]
    .filter(([, bins]) => bins && bins.reduce((a, b) => a + b, 0) > 0);
  if (!series.length) return `<p class="muted">${esc(title)}: no scores yet.</p>`;
  const shares = series.map(([, bins]) => { const t = bins.reduce((a, b) => a + b, 0); return bins.map((b) => b / t); });
  const top = Math.max(...shares.flat(), 0.01);
  const width = 300, height = 100, slot = width / 10, bar = (slot - 4) / series.length;
  let bars = "";
  series.forEach(([, , colour], s) => shares[s].forEach((share, i) => {
    const h = (share / top) * (height - 14);
    bars += `<rect x="${(i * slot + 2 + s * bar).toFixed(1)}" y="${(height - 12 - h).toFixed(1)}" width="${bar.toFixed(1)}" height="${h.toFixed(1)}" fill="${colour}"></rect>`;
  }));
  const ticks = [0, 5, 10].map((i) => `<text x="${Math.min(i * slot, width - 14)}" y="${height}" font-size="9">${(i / 10).toFixed(1)}</text>`).join("");
  const legend = series.map(([role, bins]) => `<span class="${role}">\u25a0 ${role} (${bins.reduce((a, b) => a + b, 0)})</span>`).join(" ");
  return `<p>${esc(title)}</p><svg class="hist" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}">${bars}${ticks}</svg><div class="legend">${legend}</div>`;
}

function scoresHtml(d) {
  const s = d.serving;
  const versions = d.recent.versions;
  const bins = (v) => (v !== null && v !== undefined && versions[v] ? versions[v].score_bins : null);
  let html = histogram(`last ${Math.round(d.recent.window_s)} s, share of scores per 0.1 bin`,
    s && bins(s.champion), s && bins(s.challenger));
  if (d.rollout_scores) {
    html += histogram("this rollout step (what the PSI guard judges)", d.rollout_scores.champion, d.rollout_scores.challenger);
  }
  return html;
}

function placementHtml(d) {
  const pool = d.serving && d.serving.pool;
  const replicas = Object.entries(d.replicas || {});
  const list = replicas.map(([r, node]) => `<li>router replica ${esc(r)} (node ${esc(node.slice(0, 12))})</li>`).join("");
  const where = pool
    ? `<p>Scored on the model pool <b>${esc(pool)}</b>; pool replicas do not report what they hold open.</p>`
    : `<p>Fast lane (in the router replicas).</p>`;
  return where + (list ? `<p>Open in:</p><ul>${list}</ul>` : `<p class="muted">Not open in any router replica now (it opens on the first request).</p>`);
}

export class ModelView {
  constructor(doc) {
    this.doc = doc;
    this.name = null;
    this.outcome = doc.getElementById("outcome");
    doc.getElementById("act-canary").addEventListener("submit", (event) => {
      event.preventDefault();
      const weight = Number(doc.getElementById("weight").value);
      this.act("canary", `Set the challenger of ${this.name} to ${weight}% of traffic?`, { weight });
    });
    doc.getElementById("act-promote").addEventListener("click", () =>
      this.act("promote", `Promote the challenger of ${this.name} to champion?`));
    doc.getElementById("act-rollback").addEventListener("click", () =>
      this.act("rollback", `Roll back ${this.name}? (aborts a rollout, or returns champion to the standby version)`));
    doc.getElementById("act-retrain").addEventListener("click", () =>
      this.act("retrain", `Start a retrain of ${this.name} on the cluster?`));
  }

  open(name) {
    if (name !== this.name) this.outcome.hidden = true;
    this.name = name;
    this.doc.getElementById("model-name").textContent = name;
  }

  async refresh() {
    const path = `/admin/models/${encodeURIComponent(this.name)}`;
    const [detail, history] = await Promise.all([request("GET", path), request("GET", `${path}/history`)]);
    const $ = (id) => this.doc.getElementById(id);
    $("m-versions").innerHTML = versionsHtml(detail);
    $("m-rollout").innerHTML = rolloutHtml(detail);
    for (const meter of $("m-rollout").querySelectorAll(".meter > i")) {
      meter.style.width = `${Math.round(100 * Number(meter.dataset.w))}%`;
    }
    $("m-traffic").innerHTML = trafficHtml(detail);
    $("m-scores").innerHTML = scoresHtml(detail);
    $("m-placement").innerHTML = placementHtml(detail);
    $("m-history").innerHTML = history.events.slice().reverse().slice(0, 200).map((e) =>
      `<tr><td>${esc(when(e.at))}</td><td>${esc(e.kind)}</td><td>${e.version === null ? dash : `v${esc(e.version)}`}</td><td>${esc(e.detail)}</td></tr>`).join("") ||
      `<tr><td colspan="4" class="muted">no events</td></tr>`;
  }

  async act(action, question, body) {
    if (!window.confirm(question)) return;
    const name = this.name;
    try {
      const answer = await request("POST", `/admin/models/${encodeURIComponent(name)}/${action}`, body || {});
      this.show(true, `${action}: ${answer.message}`);
    } catch (error) {
      this.show(false, `${action} refused: ${describe(error)}`);
    }
    if (this.name === name) this.refresh().catch(() => {});
  }

  show(ok, text) {
    this.outcome.hidden = false;
    this.outcome.className = `outcome ${ok ? "ok" : "bad"}`;
    this.outcome.textContent = text;
  }
}
