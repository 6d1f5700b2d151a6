// The console's entry: the hash route (#/ fleet, #/models/NAME), the token form, and a
// refresh every 5 s of whatever view is shown (one request for the fleet).
import { describe, request, token } from "./api.js";
import { FleetView } from "./fleet.js";
import { ModelView } from "./model.js";

const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
const fleet = new FleetView(document, (name) => { location.hash = `#/models/${encodeURIComponent(name)}`; });
const model = new ModelView(document);
let timer = null;
let busy = false;

function banner(text) {
  $("banner").hidden = !text;
  $("banner").textContent = text || "";
}

function route() {
  const found = location.hash.match(/^#\/models\/(.+)$/);
  return found ? decodeURIComponent(found[1]) : null;
}

async function refresh() {
  if (busy) return;
  busy = true;
  const name = route();
  $("fleet-view").hidden = name !== null;
  $("model-view").hidden = name === null;
  try {
    if (name === null) {
      const status = await request("GET", "/admin/models");
      fleet.update(status);
      const replicas = Object.keys(status.replicas || {}).length;
      $("summary").textContent = `${Object.keys(status.models).length} models \u00b7 ${replicas} router replica(s) \u00b7 table r${status.table_revision}`;
    } else {
      model.open(name);
      await model.refresh();
    }
    banner("");
  } catch (error) {
    banner(`Could not load the data: ${describe(error)}`);
  } finally {
    busy = false;
  }
}

function schedule() {
  clearInterval(timer);
  timer = $("auto").checked ? setInterval(refresh, REFRESH_MS) : null;
}

$("token").value = token.get();
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (value) token.set(value); else token.clear();
  refresh();
});
$("token-clear").addEventListener("click", () => { token.clear(); $("token").value = ""; refresh(); });
$("auto").addEventListener("change", schedule);
window.addEventListener("hashchange", refresh);
schedule();
refresh();
