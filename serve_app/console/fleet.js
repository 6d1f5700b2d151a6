// The fleet view: one row per model from one /admin/models answer per refresh. Rows are
// kept by model name and rewritten only when what they show changed, so a refresh of
// 500 models touches only the rows that moved; filtering only toggles `hidden`.
import { DRIFT_CLASS, ago, dash, esc, facets, num, pct } from "./format.js";

const LABELS = ["model", "champion", "challenger", "split", "rollout", "req/s", "p99 ms",
  "errors", "drift", "quality", "last change"];

function rolloutText(model) {
  const r = model.rollout;
  if (!r) return { html: `<span class="muted">${dash}</span>`, phase: "idle" };
  const step = r.phase === "canary" ? ` step ${r.step + 1}/${r.steps.length}` : "";
  return { html: `<span class="badge info">${esc(r.phase)}${esc(step)}</span>`, phase: r.phase };
}

function splitText(serving) {
  if (!serving || serving.challenger === null) return "100%";
  const w = serving.challenger_weight;
  if (serving.shadow) return `100% (shadow copy ${num(w, 0)}%)`;
  return `${num(100 - w, 0)}% / ${num(w, 0)}%`;
}

function qualityHtml(q) {
  if (!q) return `<span class="muted">no labels</span>`;
  const cls = q.below_evaluation ? "bad" : "ok";
  const text = `recall ${num(q.recall, 2)} \u00b7 FPR ${num(q.false_positive_rate, 3)}`;
  return `<span class="badge ${cls}" title="${esc(q.below_evaluation || `${q.labelled} labelled rows`)}">${esc(text)}</span>`;
}

function problems(model) {
  return Object.keys(model.failed_versions || {}).length > 0 ||
    Object.keys(model.rejected_versions || {}).length > 0 || Boolean(model.control_error);
}

function describeRow(name, model) {
  const serving = model.serving;
  const recent = model.recent || {};
  const rollout = rolloutText(model);
  const drift = model.drift || "steady";
  const flags = [];
  if (problems(model)) flags.push(`<span class="badge bad" title="${esc(model.control_error || "failed or rejected versions")}">!</span>`);
  if (model.retraining) flags.push(`<span class="badge info">retraining</span>`);
  const last = model.last_event;
  const cells = [
    `<a href="#/models/${encodeURIComponent(name)}">${esc(name)}</a> ${flags.join(" ")}`,
    serving ? `v${esc(serving.champion)}` : `<span class="bad">not served</span>`,
    serving && serving.challenger !== null ? `v${esc(serving.challenger)}` : dash,
    esc(splitText(serving)),
    rollout.html,
    num(recent.requests_per_s, 1),
    recent.p99_ms === null || recent.p99_ms === undefined ? dash : `\u2264 ${num(recent.p99_ms, 1)}`,
    pct(recent.error_rate, 2),
    `<span class="badge ${DRIFT_CLASS[drift] || "warn"}">${esc(drift)}</span>`,
    qualityHtml(model.quality),
    last ? `<span title="${esc(last.kind)}">${esc(last.kind)} ${esc(ago(last.at))}</span>` : dash,
  ];
  const html = cells.map((c, i) => `<td data-label="${LABELS[i]}"${i >= 5 && i <= 7 ? ' class="num"' : ""}>${c}</td>`).join("");
  const states = new Set([rollout.phase]);
  if (model.rollout) states.add("rollout");
  if (drift !== "steady") states.add("drift");
  if (model.quality && model.quality.below_evaluation) states.add("quality");
  if (problems(model)) states.add("problem");
  if (model.retraining) states.add("retraining");
  return { html, states, ...facets(name) };
}

export class FleetView {
  constructor(doc, onOpen) {
    this.body = doc.getElementById("fleet-rows");
    this.search = doc.getElementById("search");
    this.product = doc.getElementById("product");
    this.region = doc.getElementById("region");
    this.state = doc.getElementById("state");
    this.shown = doc.getElementById("shown");
    this.note = doc.getElementById("window-note");
    this.rows = new Map(); // name -> {tr, html, states, product, region}
    this.order = "";
    for (const input of [this.search, this.product, this.region, this.state]) {
      input.addEventListener("input", () => this.filter());
    }
    this.body.addEventListener("click", (event) => {
      const tr = event.target.closest("tr.row");
      if (tr && !event.target.closest("a")) onOpen(tr.dataset.model);
    });
  }

  update(status) {
    const started = performance.now();
    const models = status.models || {};
    const names = Object.keys(models).sort();
    for (const [name, row] of this.rows) {
      if (!(name in models)) {
        row.tr.remove();
        this.rows.delete(name);
      }
    }
    for (const name of names) {
      const described = describeRow(name, models[name]);
      let row = this.rows.get(name);
      if (!row) {
        const tr = document.createElement("tr");
        tr.className = "row";
        tr.dataset.model = name;
        row = { tr, html: "" };
        this.rows.set(name, row);
      }
      if (row.html !== described.html) row.tr.innerHTML = described.html;
      Object.assign(row, described);
    }
    const order = names.join("\n");
    if (order !== this.order) { // new or removed models: put the rows in order once
      const fragment = document.createDocumentFragment();
      for (const name of names) fragment.appendChild(this.rows.get(name).tr);
      this.body.appendChild(fragment);
      this.order = order;
    }
    this.options(this.product, names.map((n) => this.rows.get(n).product));
    this.options(this.region, names.map((n) => this.rows.get(n).region));
    const window = names.length ? models[names[0]].recent : null;
    this.note.textContent = window
      ? `req/s, p99 (upper edge of its latency bucket) and errors (5xx share): the last ${Math.round(window.window_s)} s of scored requests, all versions`
      : "";
    this.filter();
    // the render's cost, in the browser's performance panel (and read by the tests)
    performance.measure("fleet-render", { start: started });
  }

  options(select, values) {
    const wanted = [...new Set(values.filter(Boolean))].sort();
    const have = [...select.options].slice(1).map((o) => o.value);
    if (wanted.join() === have.join()) return;
    const current = select.value;
    select.length = 1;
    for (const value of wanted) select.add(new Option(value, value));
    select.value = wanted.includes(current) ? current : "";
  }

  filter() {
    const text = this.search.value.trim().toLowerCase();
    const product = this.product.value;
    const region = this.region.value;
    const state = this.state.value;
    let shown = 0;
    for (const [name, row] of this.rows) {
      const visible = (!text || name.toLowerCase().includes(text)) &&
        (!product || row.product === product) && (!region || row.region === region) &&
        (!state || row.states.has(state));
      if (row.tr.hidden === visible) row.tr.hidden = !visible;
      shown += visible;
    }
    this.shown.textContent = `${shown} of ${this.rows.size} models`;
  }
}
