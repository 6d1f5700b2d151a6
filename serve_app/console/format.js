// Small formatting helpers; every value from the server goes through esc() before HTML.
const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ENTITIES[c]);

export const dash = "\u2013";

export function num(value, digits = 1) {
  return value === null || value === undefined ? dash : Number(value).toFixed(digits);
}

export function pct(value, digits = 1) {
  return value === null || value === undefined ? dash : `${(100 * value).toFixed(digits)}%`;
}

export function ago(at) {
  if (!at) return dash;
  const s = Math.max(0, Date.now() / 1000 - at);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function when(at) {
  return new Date(at * 1000).toISOString().replace("T", " ").slice(0, 19);
}

// Demo names look like fraud-<product>-<region>[-NN]; anything else has neither.
export function facets(name) {
  const parts = name.split("-");
  return parts[0] === "fraud" && parts.length >= 3
    ? { product: parts[1], region: parts[2] }
    : { product: "", region: "" };
}

export const DRIFT_CLASS = { steady: "ok", suspect: "warn", drifted: "bad" };
