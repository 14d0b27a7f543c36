// GenLoop Studio: a single-page client for the GenLoop HTTP API (no build step, no dependencies).
// Contract: GET /v1/models (OpenAI's {object: "list", data: [...]}), POST /v1/generations (-> job),
// GET /v1/jobs/{id}/events (SSE), ratings, preferences, train jobs and run metrics. Every failure is shown in the error banner; nothing fails silently.
//
// Layout: this file holds the shared core (utilities, the API client, job following, cards) and the original tabs;
// it exports every top-level name. A tab or panel of its own lives in its own module beside it, imports what it
// needs from here, and exports a setup function that init() below calls (one import line, one call).

// Tab modules (imported for their setup functions; they import the core back, which ES modules allow because
// nothing runs at import time).
import { setupEdit } from "./edit.js";
import { setupRuns } from "./runs.js";
import { setupGallery } from "./gallery.js";
import { dataName, setupDatasets } from "./datasets.js";

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
export const FINAL = new Set(["succeeded", "failed", "cancelled"]);
export const PAGE = 24;
export const LS_TOKEN = "genloop.token";
export const LS_USER = "genloop.user";
export const LS_MINE = "genloop.myRatings";

export const state = {
  models: [],
  families: [],
  datasets: [],
  gallery: { offset: 0, runId: "", done: false, loading: false },
  cards: new Map(), // generation id -> Set of card elements showing it
  replays: new Map(), // generation id -> {text, identical} of its last replay in this page
  abPicks: [], // generation ids ticked for A/B (max 2)
  abPair: null, // {a, b, random: bool}
  jobs: [],
  selectedJob: null,
  jobFollow: null, // AbortController of the followed job in the detail pane
  series: new Map(), // metric name -> [[step, value], ...]
  hiddenSeries: new Set(),
  genBusy: false,
  authBlocked: null, // the token (or "") that the server last refused; background polling pauses on it
  session: null, // the token a session cookie was opened for (POST /v1/session): <img> then needs no header
};

// ───────────────────────── utilities ─────────────────────────

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** A problem with what the user typed: shown in the banner, not logged as a page error. */
export class InputError extends Error {}

// Hooks a tab module adds its functions to: card(card, g) after makeCard builds a card, model(m) when the chosen
// model changes, generated(job) when a generate job of the left panel ends.
export const hooks = { card: [], model: [], generated: [] };

export const token = () => localStorage.getItem(LS_TOKEN) || "";
export const userName = () => localStorage.getItem(LS_USER) || "";

export function authHeaders(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export const SVG_NS = "http://www.w3.org/2000/svg";

/** An icon of the page's inline SVG sprite (index.html): never an emoji, which may render as an empty box. */
export function icon(name, cls = "icon") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", cls);
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(SVG_NS, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

export function announce(msg) {
  const s = $("#status");
  s.textContent = "";
  // A fresh text node so screen readers announce repeated messages too.
  requestAnimationFrame(() => (s.textContent = msg));
}

export function showError(err) {
  const msg = typeof err === "string" ? err : err?.message || String(err);
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return; // the token prompt handles these
  if (err?.name === "AbortError") return;
  if (!(err instanceof InputError)) console.error(err);
  $("#error-text").textContent = msg;
  $("#error-banner").hidden = false;
}

export function dismissError() {
  $("#error-banner").hidden = true;
  $("#error-text").textContent = "";
}

/** Run an async action; any error goes to the banner. Returns the action's result or undefined. */
export async function guard(fn) {
  try {
    return await fn();
  } catch (e) {
    showError(e);
    return undefined;
  }
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z");
  if (Number.isNaN(d.getTime())) return iso;
  const diff = (Date.now() - d.getTime()) / 1000;
  if (diff < 0) return d.toLocaleString();
  if (diff < 60) return "just now";
  if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
  return d.toLocaleString();
}

export const short = (id) => (id && id.length > 10 ? id.slice(0, 8) : id || "");
export const randomSeed = () => Math.floor(Math.random() * 2 ** 31);

export function numberOrUndefined(input) {
  const v = input.value.trim();
  if (v === "") return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InputError(`${labelOf(input)} must be a number`);
  return n;
}

export function intIn(input, lo, hi) {
  const n = numberOrUndefined(input);
  if (n === undefined) return undefined;
  if (!Number.isInteger(n) || n < lo || (hi !== undefined && n > hi)) {
    throw new InputError(`${labelOf(input)} must be a whole number${hi !== undefined ? ` from ${lo} to ${hi}` : ` ≥ ${lo}`}`);
  }
  return n;
}

export function labelOf(input) {
  const l = input.id && document.querySelector(`label[for="${input.id}"]`);
  return l ? l.childNodes[0].textContent.trim() : input.name || input.id;
}

// ───────────────────────── API ─────────────────────────

export async function api(path, { method = "GET", body, signal, quiet404 = false } = {}) {
  const headers = authHeaders({ Accept: "application/json" });
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `Cannot reach the GenLoop server (${method} ${path}): ${e.message}`);
  }
  if (res.status === 401 || res.status === 403) throw await authRefusal(res);
  if (!res.ok) {
    const detail = await errorDetail(res);
    if (quiet404 && res.status === 404) return null;
    let msg = `${method} ${path} failed (${res.status}): ${detail}`;
    if (/^moderation blocked/.test(detail)) msg = `Blocked by moderation — ${detail}`; // the reason, in the banner
    const retry = res.headers.get("Retry-After");
    if (res.status === 429 && retry) msg += ` — retry in ${retry} s`;
    throw new ApiError(res.status, msg);
  }
  if (res.status === 204) return null;
  const type = res.headers.get("Content-Type") || "";
  return type.includes("json") ? res.json() : res.text();
}

// A 401/403: ask for the token (background polling pauses on the refused one) and return the error to throw, which
// the banner stays quiet about since the token dialog says it.
export async function authRefusal(res) {
  const detail = await errorDetail(res);
  state.authBlocked = token();
  askToken(res.status === 401 ? `This server needs an API token (${detail}).` : `The saved token was refused (${detail}).`);
  return new ApiError(res.status, detail);
}

// POST a multipart form (an upload, a file to verify) with the token, as api() sends JSON: an unreachable server
// and a refused token are thrown as api() throws them; any other answer is the caller's to read (each says its
// own refusals its own way).
export async function postForm(path, form) {
  let res;
  try {
    res = await fetch(path, { method: "POST", headers: authHeaders({ Accept: "application/json" }), body: form });
  } catch (e) {
    throw new ApiError(0, `Cannot reach the GenLoop server (POST ${path}): ${e.message}`);
  }
  if (res.status === 401 || res.status === 403) throw await authRefusal(res);
  return res;
}

export async function errorDetail(res) {
  const text = await res.text().catch(() => "");
  try {
    const j = JSON.parse(text);
    if (typeof j.detail === "string") return j.detail;
    if (j.error && typeof j.error.message === "string") return j.error.message; // OpenAI-shaped routes
    if (Array.isArray(j.detail)) {
      // FastAPI validation errors: [{loc, msg}, ...]
      return j.detail.map((d) => `${(d.loc || []).filter((x) => x !== "body").join(".")}: ${d.msg}`).join("; ");
    }
    if (j.detail !== undefined) return JSON.stringify(j.detail);
  } catch {
    /* not JSON */
  }
  return text.trim().slice(0, 300) || res.statusText || "no detail";
}

// ───────────────────────── auth ─────────────────────────

export function askToken(reason) {
  const dlg = $("#token-dialog");
  if (reason) $("#token-reason").textContent = reason;
  $("#token-input").value = token();
  $("#user-input").value = userName();
  if (!dlg.open) {
    dlg.showModal();
    $("#token-input").focus();
  }
}

export function setupAuth() {
  const dlg = $("#token-dialog");
  $("#settings-button").addEventListener("click", () => askToken("Token and name are kept in this browser only."));
  $("#token-cancel").addEventListener("click", () => dlg.close("cancel"));
  $("#token-clear").addEventListener("click", () => {
    localStorage.removeItem(LS_TOKEN);
    state.session = null;
    fetch("/v1/session", { method: "DELETE" }).catch(() => {});
    $("#token-input").value = "";
    announce("Token forgotten");
  });
  $("#token-form").addEventListener("submit", (ev) => {
    const t = $("#token-input").value.trim();
    const u = $("#user-input").value.trim();
    if (t) localStorage.setItem(LS_TOKEN, t);
    else localStorage.removeItem(LS_TOKEN);
    if (u) localStorage.setItem(LS_USER, u);
    else localStorage.removeItem(LS_USER);
    if (ev.submitter?.value === "save") {
      state.authBlocked = null;
      announce("Saved; reloading data");
      dismissError();
      setTimeout(loadAll, 0);
    }
  });
}

// ───────────────────────── job following (SSE over fetch, polling fallback) ─────────────────────────

/**
 * Follow a job until it ends. handlers: {status(data), progress(data), metrics(data), text(data), event(type,data)}.
 * Reads GET /v1/jobs/{id}/events with fetch (EventSource cannot send Authorization), resuming with ?after=
 * when the stream drops; falls back to polling GET /v1/jobs/{id}. Resolves with the final job.
 */
export async function followJob(id, handlers = {}, signal) {
  let after = 0;
  let failures = 0;
  const emit = (type, data) => {
    try {
      handlers.event?.(type, data);
      handlers[type]?.(data);
    } catch (e) {
      showError(e);
    }
  };
  while (failures < 3) {
    let ended = false;
    try {
      const res = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events?after=${after}`, {
        headers: authHeaders({ Accept: "text/event-stream" }),
        signal,
      });
      if (res.status === 401 || res.status === 403) {
        askToken("This server needs an API token.");
        throw new ApiError(res.status, await errorDetail(res));
      }
      if (!res.ok || !res.body) throw new ApiError(res.status, await errorDetail(res));
      for await (const events of sseEvents(res)) {
        for (const ev of events) {
          if (ev.id !== undefined && Number.isFinite(Number(ev.id))) after = Number(ev.id);
          emit(ev.type, ev.data);
          if (ev.type === "status" && FINAL.has(ev.data?.status)) ended = true;
        }
        if (ended) break; // leaving the loop cancels the stream
      }
      failures = 0;
    } catch (e) {
      if (e.name === "AbortError") throw e;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) throw e;
      failures += 1;
      console.warn("event stream problem, retrying", e);
    }
    const job = await api(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
    if (ended || FINAL.has(job.status)) return job;
    await sleep(failures ? 500 * failures : 250, signal); // the stream ended early: resume after the last event
  }
  // The stream keeps failing: poll.
  for (;;) {
    const job = await api(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
    emit("progress", job.progress || {});
    if (FINAL.has(job.status)) {
      emit("status", { status: job.status });
      return job;
    }
    emit("status", { status: job.status });
    await sleep(1000, signal);
  }
}

/**
 * The server-sent events of a fetch response's body, parsed (parseSse): one array per chunk read, holding the
 * events it completed (blocks without data, such as comments and keep-alives, are skipped). Leaving a
 * `for await` over it early cancels the stream.
 */
export async function* sseEvents(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, "\n");
      const events = [];
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const ev = parseSse(buf.slice(0, cut));
        buf = buf.slice(cut + 2);
        if (ev) events.push(ev);
      }
      yield events;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

export function parseSse(block) {
  let type = "message";
  let id;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  if (!data.length) return null;
  const raw = data.join("\n");
  let parsed;
  try {
    parsed = JSON.parse(raw);
  } catch {
    parsed = raw;
  }
  return { type, id, data: parsed };
}

export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(new DOMException("aborted", "AbortError"));
    });
  });
}

// ───────────────────────── health & models ─────────────────────────

export async function loadHealth() {
  const badge = $("#health");
  try {
    const h = await api("/v1/health");
    const q = h.queue || {};
    badge.dataset.state = h.status === "ok" ? "ok" : "warn";
    badge.textContent = `${h.status === "ok" ? "online" : h.status} · v${h.version ?? "?"} · ${q.running ?? 0} running, ${q.queued ?? 0} queued`;
    if (h.auth) badge.append(" · ", icon("lock", "icon inline"));
    badge.title = h.auth ? "This server requires a token" : "No token required";
    renderWorkers(h.workers || []);
    renderLanes(q.lanes || {});
  } catch (e) {
    badge.dataset.state = "down";
    badge.textContent = "offline";
    throw e;
  }
}

// The workers that run jobs, on this machine or others sharing the database (README, "Workers on several
// machines"): the heartbeat's age comes from the server's clock, so a skewed browser clock cannot mislead.
export function renderWorkers(workers) {
  $("#workers-body").replaceChildren(
    ...workers.map((w) => {
      const status = !w.alive ? "lost" : w.job ? "busy" : "idle";
      const age = w.heartbeat_age ?? null;
      return el(
        "tr",
        { "data-testid": "worker-row", "data-host": w.host, "data-status": status },
        el("td", {}, el("div", { text: w.host }), el("div", { class: "muted small" }, el("code", { text: `pid ${w.pid}` }), ` · ${w.lane ?? "all"} lane`)),
        el("td", { text: w.device || "—" }),
        el("td", {}, el("time", { datetime: w.last_heartbeat, title: w.last_heartbeat, text: age === null ? "—" : `${Math.round(age)} s ago` })),
        el("td", {}, el("span", { class: "badge", "data-status": status === "busy" ? "running" : status === "lost" ? "failed" : "succeeded", text: status })),
        el("td", {}, w.job ? el("code", { text: `${w.job.kind} · ${short(w.job.id)}` }) : el("span", { class: "muted", text: "—" })),
      );
    }),
  );
  $("#workers-empty").hidden = workers.some((w) => w.alive);
}

// Each lane's queue: interactive jobs (generations) and batch jobs (training, evaluation) have workers of their
// own, so a generation never waits behind a training job.
export const LANE_INFO = { interactive: ["Interactive", "generations"], batch: ["Batch", "training, evaluation"] };

export function renderLanes(lanes) {
  $("#lanes").replaceChildren(
    ...Object.entries(lanes).map(([name, q]) => {
      const [title, what] = LANE_INFO[name] || [name, ""];
      const workers = q.workers ?? 0;
      return el(
        "span",
        { class: "lane", "data-testid": `lane-${name}`, "data-queued": q.queued, "data-running": q.running, "data-workers": workers, "data-lane": name, title: `${title} lane: ${what}` },
        el("strong", { text: title }),
        ` ${q.queued} queued · ${q.running} running · `,
        el("span", { class: workers ? "" : "lane-idle", text: `${workers} worker${workers === 1 ? "" : "s"}` }),
      );
    }),
  );
}

// The option shows what tells runs apart at a glance; the full run id is in its tooltip and in the facts below
// the select (a long id no longer truncates the family and data set out of sight).
export function modelLabel(m) {
  return `${m.model} · ${m.dataset} · step ${m.step} · ${m.run_id.split("-").at(-1)}`;
}

export async function loadModels() {
  const data = await api("/v1/models");
  state.models = data.data || []; // OpenAI's model list; each entry also carries GenLoop's descriptor
  state.families = data.families || [];
  state.datasets = data.datasets || [];
  const sel = $("#model-select");
  const prev = sel.value || localStorage.getItem("genloop.model") || "";
  sel.replaceChildren();
  if (!state.models.length) {
    sel.append(el("option", { value: "", text: "No trained models yet — train one in Jobs" }));
  } else {
    sel.append(el("option", { value: "", text: "Choose a model…" }));
    // one group per modality the server reports ("Image models", "Text models", ...), never a default one
    const groups = {};
    for (const m of state.models) {
      const kind = String(m.modality);
      groups[kind] ??= el("optgroup", { label: `${kind.charAt(0).toUpperCase()}${kind.slice(1)} models` });
      groups[kind].append(el("option", { value: m.run_id, text: modelLabel(m), title: m.run_id }));
    }
    for (const kind of Object.keys(groups).sort()) sel.append(groups[kind]);
    if (state.models.some((m) => m.run_id === prev)) sel.value = prev;
  }
  fillSelect($("#gallery-filter"), [["", "All models"], ...state.models.map((m) => [m.run_id, `${m.model} — ${m.run_id}`])]);
  fillSelect($("#ab-model"), state.models.map((m) => [m.run_id, `${m.model} — ${m.run_id}`]));
  if (sel.value) $("#ab-model").value = sel.value;
  fillChatModels();
  fillSelect($("#train-family"), state.families.map((f) => [f, f]));
  fillSelect($("#train-data"), [...state.datasets.map((d) => [d, d]), ...(state.uploadChoices || [])]); // uploads: datasets.js
  onModelChange();
}

export function fillSelect(sel, options) {
  const prev = sel.value;
  sel.replaceChildren(...options.map(([v, t]) => el("option", { value: v, text: t })));
  if (options.some(([v]) => v === prev)) sel.value = prev;
}

export const currentModel = () => state.models.find((m) => m.run_id === $("#model-select").value) || null;

export function onModelChange() {
  const m = currentModel();
  const info = $("#model-info");
  $("#generate-button").disabled = !m || state.genBusy;
  // the descriptor picks the form: a list of controls is built into the generic fieldset, a string names one
  // of the page's own fieldsets; nothing is guessed from the modality's name
  const form = controlsForm(m);
  for (const id of BUILT_IN_FORMS) $(`#${id}`).hidden = form !== id;
  $("#descriptor-controls").hidden = form !== "descriptor-controls";
  if (form === "descriptor-controls") buildControls(m);
  for (const h of hooks.model) h(m);
  if (!m) {
    info.hidden = true;
    return;
  }
  localStorage.setItem("genloop.model", m.run_id);
  const facts = [
    ["Run", m.run_id],
    ["Family", m.model],
    ["Modality", m.modality],
    ["Dataset", m.dataset],
    ["Step", m.step],
    ["Status", m.status],
  ];
  if (m.conditional) facts.push(["Classes", m.num_classes ?? "?"]);
  info.replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v ?? "—"), dataset: { key: k.toLowerCase() } })]));
  info.hidden = false;
  if (form === "image-controls") {
    const classField = $("#class-field");
    classField.hidden = !m.conditional;
    if (m.conditional) {
      const opts = [["", "one of each (grid)"]];
      for (let c = 0; c < (m.num_classes || 0); c++) opts.push([String(c), `class ${c}`]);
      fillSelect($("#img-class"), opts);
    }
    $("#diffusion-fields").hidden = !m.diffusion;
    if (m.diffusion) fillSelect($("#img-sampler"), [["", "default"], ...(m.samplers || []).map((s) => [s, s])]);
    $("#img-prompt-field").hidden = !m.prompt; // a text-to-image run: its descriptor asks for a prompt box
    $("#guidance-field").hidden = !m.diffusion || !(m.conditional || m.prompt);
    const best = $('input[name="img-checkpoint"][value="best"]');
    best.disabled = !m.has_best;
    best.closest("label").title = m.has_best ? "" : "This run has no best checkpoint";
    if (!m.has_best) $('input[name="img-checkpoint"][value="last"]').checked = true;
  }
}

// The page's own fieldsets a descriptor may name as its `controls` (richer than the generic builder).
export const BUILT_IN_FORMS = ["image-controls", "text-controls"];

// Which fieldset a model's descriptor asks for: "descriptor-controls" for a list, a built-in id, or null.
export function controlsForm(m) {
  if (!m) return null;
  if (Array.isArray(m.controls)) return "descriptor-controls";
  return BUILT_IN_FORMS.includes(m.controls) ? m.controls : null;
}

// Controls a model's descriptor declares ({name, label, type: int|number|select|text, min, max, default, options}).
export function buildControls(m) {
  const box = $("#descriptor-fields");
  if (box.dataset.model === m.run_id) return; // keep what the user typed for this model
  box.dataset.model = m.run_id;
  $("#descriptor-legend").textContent = `${m.modality.charAt(0).toUpperCase()}${m.modality.slice(1)} settings`;
  box.replaceChildren(
    ...m.controls.map((c) => {
      const id = `ctl-${c.name}`;
      let input;
      if (c.type === "upload") {
        input = el("input", { id, "data-testid": id, type: "file", accept: c.accept ?? null });
      } else if (c.type === "select") {
        input = el("select", { id, "data-testid": id });
        input.append(el("option", { value: "", text: "any (the model's choice)" }));
        for (const o of c.options || []) input.append(el("option", { value: String(o), text: String(o) }));
        if (c.default != null) input.value = String(c.default);
      } else {
        const numeric = c.type === "int" || c.type === "number";
        input = el("input", {
          id,
          "data-testid": id,
          type: numeric ? "number" : "text",
          min: c.min ?? null,
          max: c.max ?? null,
          step: c.type === "int" ? "1" : c.type === "number" ? "0.01" : null,
          value: c.default ?? "",
          placeholder: c.default == null ? "any" : null,
        });
      }
      return el("div", { class: "field" }, el("label", { for: id, text: c.label || c.name }), input);
    }),
  );
}

export function descriptorParams(m) {
  const p = {};
  for (const c of m.controls) {
    const input = $(`#ctl-${c.name}`);
    if (!input || c.type === "upload") continue; // sent by uploadControls before the job
    let v;
    if (c.type === "int") v = intIn(input, c.min ?? 0, c.max);
    else if (c.type === "number") v = numberOrUndefined(input);
    else v = input.value.trim() || undefined;
    if (v !== undefined) p[c.name] = v;
  }
  p.n ??= 1;
  p.seed ??= 0;
  return p;
}

// A file a control names (a MIDI prompt) is uploaded first; the job gets its "upload:<id>".
export async function uploadControls(m, params) {
  for (const c of m?.controls || []) {
    const file = c.type === "upload" ? $(`#ctl-${c.name}`)?.files?.[0] : null;
    if (!file) continue;
    const form = new FormData();
    form.append("file", file);
    form.append("purpose", "input"); // one job's input, not a data set (the Jobs tab lists data sets only)
    const res = await postForm("/v1/uploads", form);
    if (!res.ok) throw new ApiError(res.status, `upload ${file.name}: ${await errorDetail(res)}`);
    params[c.name] = (await res.json()).data;
  }
}

// ───────────────────────── generate ─────────────────────────

export function generationParams() {
  const m = currentModel();
  if (!m) throw new InputError("Choose a model first");
  const p = { run_id: m.run_id };
  const form = controlsForm(m);
  if (form === null) throw new InputError(`${m.model} declares no generation controls this page knows`);
  if (form === "descriptor-controls") return { ...p, ...descriptorParams(m) };
  if (form === "image-controls") {
    p.n = intIn($("#img-n"), 1, 64) ?? 8;
    p.seed = intIn($("#img-seed"), 0) ?? 0;
    p.checkpoint = $('input[name="img-checkpoint"]:checked').value;
    if (m.conditional && $("#img-class").value !== "") p.class_label = Number($("#img-class").value);
    if (m.prompt && $("#img-prompt").value.trim()) p.prompt = $("#img-prompt").value.trim();
    if (m.diffusion) {
      if ($("#img-sampler").value) p.sampler = $("#img-sampler").value;
      const steps = intIn($("#img-steps"), 1, 10000);
      if (steps !== undefined) p.steps = steps;
      if (m.conditional || m.prompt) {
        const g = numberOrUndefined($("#img-guidance"));
        if (g !== undefined) p.guidance = g;
      }
    }
  } else {
    p.prompt = $("#txt-prompt").value;
    p.n = intIn($("#txt-n"), 1, 64) ?? 1;
    p.seed = intIn($("#txt-seed"), 0) ?? 0;
    p.max_tokens = intIn($("#txt-max-tokens"), 1) ?? 200;
    p.temperature = numberOrUndefined($("#txt-temperature")) ?? 1.0;
    p.top_k = intIn($("#txt-top-k"), 0) ?? 0;
    p.top_p = numberOrUndefined($("#txt-top-p")) ?? 1.0;
    p.repetition_penalty = numberOrUndefined($("#txt-rep")) ?? 1.0;
    const stop = $("#txt-stop").value.trim();
    if (stop) {
      p.stop = stop
        .split(",")
        .map((s) => s.trim().replace(/\\n/g, "\n").replace(/\\t/g, "\t"))
        .filter(Boolean);
    }
  }
  return p;
}

export async function onGenerate(ev) {
  ev.preventDefault();
  if (state.genBusy) return;
  await guard(async () => {
    const params = generationParams();
    const u = userName();
    if (u) params.user = u;
    setGenBusy(true);
    try {
      await uploadControls(currentModel(), params);
      const job = await api("/v1/generations", { method: "POST", body: params });
      await runGenerationJob(job, { label: `${params.n} × ${currentModel()?.model ?? ""}` });
    } finally {
      setGenBusy(false);
    }
  });
}

export function setGenBusy(busy) {
  state.genBusy = busy;
  const b = $("#generate-button");
  b.disabled = busy || !currentModel();
  b.textContent = busy ? "Generating…" : "Generate";
  b.setAttribute("aria-busy", String(busy));
}

/** Follow a generate job in the left panel, streaming text; show the resulting generations. */
export async function runGenerationJob(job, { label = "" } = {}) {
  const box = $("#gen-job");
  const status = $("#gen-job-status");
  const bar = $("#gen-job-progress");
  const stream = $("#stream-output");
  box.hidden = false;
  box.dataset.jobId = job.id;
  stream.textContent = "";
  stream.hidden = true;
  bar.removeAttribute("value"); // indeterminate until progress arrives
  $("#gen-job-label").textContent = `${label} · job ${short(job.id)}`;
  setBadge(status, job.status);
  announce(`Generation job ${short(job.id)} ${job.status}`);
  const final = await followJob(job.id, {
    status: (d) => setBadge(status, d.status),
    progress: (d) => {
      setBar(bar, d, "running");
      $("#gen-job-label").textContent = `${label} · job ${short(job.id)} · ${progressText(d)}`;
    },
    text: (d) => {
      stream.hidden = false;
      stream.textContent += d.text ?? "";
      stream.scrollTop = stream.scrollHeight;
    },
  });
  setBadge(status, final.status);
  for (const h of hooks.generated) h(final);
  bar.max = 1;
  bar.value = 1;
  if (final.status !== "succeeded") {
    const why = final.error || (final.status === "cancelled" ? "it was cancelled" : "no reason given");
    throw new Error(`Generation job ${short(final.id)} ${final.status}: ${why}`);
  }
  const ids = final.result?.generation_ids || [];
  const gens = await Promise.all(ids.map((id) => api(`/v1/generations/${encodeURIComponent(id)}`)));
  const grid = $("#latest-grid");
  grid.replaceChildren(...gens.map((g) => makeCard(g, { compact: true })));
  $("#latest").hidden = !gens.length;
  announce(`${gens.length} new generation${gens.length === 1 ? "" : "s"}`);
  await refreshGallery();
  return { job: final, generations: gens };
}

/** How far a job is, 0..1, from its progress (``fraction``, else ``step`` of ``total``); null when unknown. */
export function progressFraction(p) {
  if (!p) return null;
  if (typeof p.fraction === "number") return Math.min(Math.max(p.fraction, 0), 1);
  if (p.total) return Math.min((p.step ?? 0) / p.total, 1);
  return null;
}

/** One line for a job's progress: its phase, the step of the total (or seconds of the budget), time left, loss. */
export function progressText(p) {
  if (!p || !Object.keys(p).length) return "";
  const parts = [];
  if (p.phase) parts.push(p.phase);
  if (p.unit === "phases" && p.total) parts.push(`${Math.min(p.step + 1, p.total)} of ${p.total}`);
  else if (p.step !== undefined && p.total) parts.push(`${p.unit === "tokens" ? "token" : "step"} ${p.step} / ${p.total}`);
  else if (p.step !== undefined) parts.push(`step ${p.step}`);
  if (p.time_budget) parts.push(`${Math.round(p.time ?? 0)} s of ${Math.round(p.time_budget)} s`);
  if (p.eta_s != null) parts.push(`~${Math.round(p.eta_s)} s left`);
  if (typeof p.loss === "number") parts.push(`loss ${fmtNum(p.loss)}`);
  return parts.join(" · ");
}

export function setBar(bar, p, status) {
  const f = progressFraction(p);
  if (f !== null) {
    bar.max = 1;
    bar.value = f;
  } else if (FINAL.has(status)) {
    bar.max = 1;
    bar.value = 1;
  } else {
    bar.removeAttribute("value"); // indeterminate: nothing measured yet
  }
}

export function setBadge(node, status) {
  node.textContent = status;
  node.dataset.status = status;
}

// ───────────────────────── cards ─────────────────────────

export function myRatings() {
  try {
    return JSON.parse(localStorage.getItem(LS_MINE) || "{}");
  } catch {
    return {};
  }
}

export function rememberMine(id, patch) {
  const all = myRatings();
  all[id] = { ...(all[id] || {}), ...patch };
  localStorage.setItem(LS_MINE, JSON.stringify(all));
}

/** Trade the saved token for an HttpOnly session cookie, so media URLs work in <img> and new tabs without
 * carrying the token (which would land in history and logs). Without a cookie, images come as blobs. */
export async function openSession() {
  const t = token();
  if (!t || state.session === t) return;
  try {
    const res = await fetch("/v1/session", { method: "POST", headers: authHeaders() });
    state.session = res.ok ? t : null;
  } catch {
    state.session = null;
  }
}

export function audioPlayer(g, label) {
  // a generation with audio (music): its piano roll and a player; the WAV is fetched as the image is
  const wrap = el("div", { class: "gen-audio" });
  if (g.image_url) {
    const img = el("img", { alt: `Piano roll of ${label}`, loading: "lazy", "data-testid": "gen-roll", decoding: "async" });
    imageSrc(img, g.image_url).catch(showError);
    wrap.append(img);
  }
  const audio = el("audio", { controls: true, preload: "none", "data-testid": "gen-audio", "aria-label": `Play ${label}` });
  imageSrc(audio, g.audio_url, null).catch(showError);
  wrap.append(audio);
  if (g.midi_url) wrap.append(el("a", { href: g.midi_url, download: `${g.id}.mid`, class: "small", text: "MIDI" }));
  return wrap;
}

export async function imageSrc(img, url, revokeOn = "load") {
  // <img> cannot send Authorization: with a token, it relies on the session cookie, else fetches a blob.
  if (!token() || state.session === token()) {
    img.src = url;
    return;
  }
  const res = await fetch(url, { headers: authHeaders() });
  if (!res.ok) throw new ApiError(res.status, `image ${url}: ${await errorDetail(res)}`);
  img.src = URL.createObjectURL(await res.blob());
  if (revokeOn) img.addEventListener(revokeOn, () => URL.revokeObjectURL(img.src), { once: true });
}

export function makeCard(g, { compact = false } = {}) {
  const card = $("#card-template").content.firstElementChild.cloneNode(true);
  card.dataset.id = g.id;
  card.dataset.modality = g.modality;
  if (compact) card.classList.add("compact");
  const media = $(".card-media", card);
  if (g.audio_url) {
    media.append(audioPlayer(g, `${g.model} piece, seed ${g.recipe?.seed ?? "?"}`));
  } else if (g.has_image && g.image_url) {
    const img = el("img", {
      alt: `Generated ${g.model} image, seed ${g.recipe?.seed ?? "?"}${g.recipe?.class_label != null ? `, class ${g.recipe.class_label}` : ""}`,
      loading: "lazy",
      "data-testid": "gen-image",
      decoding: "async",
    });
    img.addEventListener("error", () => media.classList.add("broken"), { once: true });
    imageSrc(img, g.image_url).catch(showError);
    media.append(img);
  } else {
    media.classList.add("text");
    const pre = el("pre", { class: "gen-text", "data-testid": "gen-text", tabindex: "0" });
    if (g.prompt) pre.append(el("span", { class: "prompt", text: g.prompt }));
    const completion = g.text ?? "";
    pre.append(g.prompt && completion.startsWith(g.prompt) ? completion.slice(g.prompt.length) : completion);
    media.append(pre);
    const mod = g.recipe?.moderation; // a flagged or withheld text says so, with the rule that fired
    if (mod) {
      const why = `${mod.rule?.id ?? "?"} (${mod.rule?.category ?? "?"})`;
      media.append(el("p", { class: "muted small", "data-testid": "moderation", text: mod.action === "block" ? `withheld by moderation: ${why}` : `flagged by moderation: ${why}` }));
    }
  }
  const seed = g.recipe?.seed;
  $(".card-meta", card).append(
    ...[
    el("span", { class: "tag", text: g.model }),
    el("span", { text: `seed ${seed ?? "?"}` }),
    g.recipe?.class_label != null ? el("span", { text: `class ${g.recipe.class_label}` }) : null,
    g.recipe?.prompt ? el("span", { text: `“${g.recipe.prompt}”` }) : null,
    g.checkpoint && g.checkpoint !== "last" ? el("span", { text: g.checkpoint }) : null,
    g.replay_of ? el("span", { class: "tag replay", title: `replay of ${g.replay_of}`, "aria-label": "replay" }, icon("refresh", "icon inline")) : null,
    verifiedBadge(g.verified),
    el("time", { datetime: g.created, title: g.created, text: fmtTime(g.created) }),
    ].filter(Boolean),
  );
  const stars = $(".stars", card);
  for (let s = 1; s <= 5; s++) {
    stars.append(
      el("button", {
        type: "button",
        class: "star",
        role: "radio",
        "aria-checked": "false",
        "aria-label": `${s} star${s > 1 ? "s" : ""}`,
        "data-testid": `star-${s}`,
        "data-stars": s,
        tabindex: s === 1 ? "0" : "-1",
        text: "★",
      }),
    );
  }
  $('[data-testid="thumbs-up"]', card).addEventListener("click", () => rate(g.id, { thumbs: 1 }));
  $('[data-testid="thumbs-down"]', card).addEventListener("click", () => rate(g.id, { thumbs: -1 }));
  stars.addEventListener("click", (e) => {
    const b = e.target.closest(".star");
    if (b) rate(g.id, { stars: Number(b.dataset.stars) });
  });
  stars.addEventListener("keydown", (e) => {
    const cur = document.activeElement.closest?.(".star");
    if (!cur) return;
    const n = Number(cur.dataset.stars);
    const to = { ArrowRight: n + 1, ArrowUp: n + 1, ArrowLeft: n - 1, ArrowDown: n - 1 }[e.key];
    if (to && to >= 1 && to <= 5) {
      e.preventDefault();
      $(`[data-stars="${to}"]`, stars).focus();
    }
  });
  $('[data-testid="recipe-button"]', card).addEventListener("click", () => showRecipe(g));
  const download = $('[data-testid="download-link"]', card);
  if (g.download_url) {
    download.hidden = false;
    download.href = g.download_url;
    download.download = "";
    download.title = "Download the signed file (its recipe and manifest inside)";
  }
  $('[data-testid="replay-button"]', card).addEventListener("click", (e) => replay(g, card, e.currentTarget));
  const pick = $('[data-testid="ab-pick"]', card);
  pick.checked = state.abPicks.includes(g.id);
  pick.setAttribute("aria-label", `Select for A/B comparison`);
  pick.addEventListener("change", () => toggleAbPick(g.id, pick.checked));
  renderFeedback(card, g);
  renderReplay(card, g.id);
  for (const h of hooks.card) h(card, g);
  if (!state.cards.has(g.id)) state.cards.set(g.id, new Set());
  state.cards.get(g.id).add(card);
  return card;
}

// "Verified": the server checked the stored file's signed manifest (valid); anything else is "Unverified", with
// the reason (tampered: which field; unsigned; unknown key) in the tooltip.
export function verifiedBadge(v) {
  if (!v) return null;
  const ok = v.status === "valid";
  const why = ok ? "Signed by this server's key; the file is unchanged" : `${v.status}${v.detail ? `: ${v.detail}` : ""}`;
  return el(
    "span",
    { class: `verify-badge ${ok ? "ok" : "bad"}`, "data-testid": "verified-badge", "data-status": v.status, title: why, "aria-label": ok ? "Verified" : `Unverified (${why})` },
    icon(ok ? "shield-check" : "shield-x", "icon inline"),
    ok ? " Verified" : " Unverified",
  );
}

export function renderFeedback(card, g) {
  const f = g.feedback || { up: 0, down: 0, stars: null, ratings: 0 };
  const mine = myRatings()[g.id] || {};
  const up = $('[data-testid="thumbs-up"]', card);
  const down = $('[data-testid="thumbs-down"]', card);
  up.setAttribute("aria-pressed", String(mine.thumbs === 1));
  down.setAttribute("aria-pressed", String(mine.thumbs === -1));
  up.dataset.count = f.up || 0;
  down.dataset.count = f.down || 0;
  for (const b of $$(".star", card)) {
    const s = Number(b.dataset.stars);
    const on = mine.stars ? s <= mine.stars : f.stars != null && s <= Math.round(f.stars);
    b.classList.toggle("on", on);
    b.setAttribute("aria-checked", String(mine.stars === s));
    b.tabIndex = (mine.stars ? mine.stars === s : s === 1) ? 0 : -1;
  }
  const summary = $('[data-testid="feedback-summary"]', card);
  summary.dataset.up = f.up || 0;
  summary.dataset.down = f.down || 0;
  summary.dataset.stars = f.stars ?? "";
  summary.dataset.ratings = f.ratings || 0;
  if (!f.ratings) {
    summary.textContent = "Not rated yet";
    summary.classList.add("muted");
  } else {
    summary.classList.remove("muted");
    const parts = [icon("thumb-up", "icon inline"), ` ${f.up || 0} · `, icon("thumb-down", "icon inline"), ` ${f.down || 0}`];
    if (f.stars != null) parts.push(` · ★ ${Number(f.stars).toFixed(1)}`);
    summary.replaceChildren(...parts, ` (${f.ratings} rating${f.ratings === 1 ? "" : "s"})`);
  }
}

export async function rate(id, body) {
  await guard(async () => {
    const u = userName();
    await api(`/v1/generations/${encodeURIComponent(id)}/ratings`, { method: "POST", body: u ? { ...body, user: u } : body });
    rememberMine(id, body);
    const g = await api(`/v1/generations/${encodeURIComponent(id)}`);
    for (const card of state.cards.get(id) || []) if (card.isConnected) renderFeedback(card, g);
    announce(body.stars ? `Rated ${body.stars} star${body.stars > 1 ? "s" : ""}` : body.thumbs > 0 ? "Thumbs up saved" : "Thumbs down saved");
  });
}

export function showRecipe(g) {
  const dlg = $("#recipe-dialog");
  $("#recipe-title").textContent = `Recipe · ${g.model} · ${short(g.id)}`;
  $("#recipe-json").textContent = JSON.stringify(
    { generation_id: g.id, run_id: g.run_id, checkpoint: g.checkpoint, checkpoint_sha256: g.checkpoint_sha256, recipe: g.recipe },
    null,
    2,
  );
  $("#recipe-copied").textContent = "";
  dlg.showModal();
}

export async function copyRecipe() {
  const text = $("#recipe-json").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API needs a secure context; fall back to selecting the text for Ctrl+C.
    const range = document.createRange();
    range.selectNodeContents($("#recipe-json"));
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    document.execCommand?.("copy");
  }
  $("#recipe-copied").textContent = "Copied ✓";
}

export async function replay(g, card, button) {
  const show = (text, identical) => {
    state.replays.set(g.id, { text, identical });
    for (const c of state.cards.get(g.id) || []) renderReplay(c, g.id);
  };
  button.disabled = true;
  show("Replaying…");
  try {
    await guard(async () => {
      const u = userName();
      const q = u ? `?user=${encodeURIComponent(u)}` : "";
      const job = await api(`/v1/generations/${encodeURIComponent(g.id)}/replay${q}`, { method: "POST", body: {} });
      const final = await followJob(job.id, { status: (d) => show(`Replay ${d.status}…`) });
      if (final.status !== "succeeded") throw new Error(`Replay job ${short(final.id)} ${final.status}: ${final.error || "no reason given"}`);
      const identical = final.result?.identical;
      show(identical === true ? "✓ Replay identical" : identical === false ? "✗ Replay differs" : "Replay done", identical);
      announce(state.replays.get(g.id).text);
      // Show the new generation at the top of the gallery without losing the reader's place.
      const grid = $("#gallery");
      for (const id of final.result?.generation_ids || []) {
        const ng = await api(`/v1/generations/${encodeURIComponent(id)}`);
        if (!state.gallery.runId || state.gallery.runId === ng.run_id) {
          grid.prepend(makeCard(ng));
          state.gallery.offset += 1;
        }
      }
      $("#gallery-empty").hidden = grid.children.length > 0;
    });
  } finally {
    button.disabled = false;
    const r = state.replays.get(g.id);
    if (r && r.identical === undefined && !r.text.startsWith("Replay done")) {
      state.replays.delete(g.id);
      for (const c of state.cards.get(g.id) || []) renderReplay(c, g.id);
    }
  }
}

export function renderReplay(card, id) {
  const out = $('[data-testid="replay-result"]', card);
  const r = state.replays.get(id);
  out.hidden = !r;
  out.className = "replay-result";
  if (!r) {
    delete out.dataset.identical;
    return;
  }
  out.textContent = r.text;
  if (r.identical !== undefined) {
    out.dataset.identical = String(r.identical);
    out.classList.add(r.identical ? "ok" : "bad");
  }
}

// ───────────────────────── gallery ─────────────────────────

export async function loadGallery({ reset = false } = {}) {
  const gal = state.gallery;
  if (gal.loading) return;
  gal.loading = true;
  const grid = $("#gallery");
  grid.setAttribute("aria-busy", "true");
  try {
    if (reset) {
      gal.offset = 0;
      gal.done = false;
      gal.runId = $("#gallery-filter").value;
    }
    const q = new URLSearchParams({ limit: String(PAGE), offset: String(gal.offset) });
    if (gal.runId) q.set("run_id", gal.runId);
    const data = await api(`/v1/generations?${q}`);
    const gens = data.generations || [];
    if (reset) {
      for (const c of grid.children) state.cards.get(c.dataset.id)?.delete(c);
      grid.replaceChildren();
    }
    grid.append(...gens.map((g) => makeCard(g)));
    gal.offset += gens.length;
    gal.done = typeof data.total === "number" ? gal.offset >= data.total : gens.length < PAGE;
    $("#gallery-more").hidden = gal.done;
    $("#gallery-empty").hidden = grid.children.length > 0;
  } finally {
    gal.loading = false;
    grid.setAttribute("aria-busy", "false");
  }
}

export const refreshGallery = () => loadGallery({ reset: true });

// ───────────────────────── A/B ─────────────────────────

export function toggleAbPick(id, on) {
  state.abPicks = state.abPicks.filter((x) => x !== id);
  if (on) state.abPicks.push(id);
  while (state.abPicks.length > 2) {
    const dropped = state.abPicks.shift();
    for (const c of state.cards.get(dropped) || []) $('[data-testid="ab-pick"]', c).checked = false;
  }
  for (const [gid, cards] of state.cards) {
    for (const c of cards) c.classList.toggle("picked", state.abPicks.includes(gid));
  }
  const n = state.abPicks.length;
  $("#ab-selection").textContent = n === 0 ? "Tick A/B on two cards." : n === 1 ? "1 selected — tick one more." : "2 selected.";
  $("#ab-compare-selected").disabled = n !== 2;
}

export async function compareSelected() {
  await guard(async () => {
    const [a, b] = await Promise.all(state.abPicks.map((id) => api(`/v1/generations/${encodeURIComponent(id)}`)));
    showPair(a, b, false);
    selectTab("ab");
  });
}

export async function randomPair(runId = $("#ab-model").value) {
  await guard(async () => {
    if (!runId) throw new InputError("Choose a model for the A/B comparison");
    const q = new URLSearchParams({ run_id: runId, limit: "50" });
    const gens = (await api(`/v1/generations?${q}`)).generations || [];
    if (gens.length < 2) throw new InputError(`A/B needs at least two generations of ${runId}; generate some first`);
    const i = Math.floor(Math.random() * gens.length);
    let j = Math.floor(Math.random() * (gens.length - 1));
    if (j >= i) j += 1;
    showPair(gens[i], gens[j], true);
  });
}

export function abContent(g) {
  const wrap = el("div", { class: "ab-item", "data-id": g.id });
  if (g.audio_url) {
    wrap.append(audioPlayer(g, `candidate ${g.model} piece, seed ${g.recipe?.seed ?? "?"}`));
  } else if (g.has_image && g.image_url) {
    const img = el("img", { alt: `Candidate ${g.model} image, seed ${g.recipe?.seed ?? "?"}` });
    imageSrc(img, g.image_url).catch(showError);
    wrap.append(img);
  } else {
    const pre = el("pre", { class: "gen-text" });
    if (g.prompt) pre.append(el("span", { class: "prompt", text: g.prompt }));
    const t = g.text ?? "";
    pre.append(g.prompt && t.startsWith(g.prompt) ? t.slice(g.prompt.length) : t);
    wrap.append(pre);
  }
  wrap.append(el("p", { class: "muted small", text: `${g.model} · seed ${g.recipe?.seed ?? "?"} · ${short(g.id)}` }));
  return wrap;
}

export function showPair(a, b, random) {
  state.abPair = { a, b, random };
  $("#ab-a").replaceChildren(abContent(a));
  $("#ab-b").replaceChildren(abContent(b));
  $("#ab-a").dataset.id = a.id;
  $("#ab-b").dataset.id = b.id;
  $("#ab-arena").hidden = false;
  $("#ab-empty").hidden = true;
  $("#ab-result").hidden = true;
  for (const btn of [$("#ab-choose-a"), $("#ab-choose-b")]) btn.disabled = false;
}

export async function choose(side) {
  const pair = state.abPair;
  if (!pair) return;
  const [chosen, rejected] = side === "A" ? [pair.a, pair.b] : [pair.b, pair.a];
  await guard(async () => {
    for (const btn of [$("#ab-choose-a"), $("#ab-choose-b")]) btn.disabled = true;
    const body = { chosen_id: chosen.id, rejected_id: rejected.id };
    const u = userName();
    if (u) body.user = u;
    try {
      const pref = await api("/v1/preferences", { method: "POST", body });
      const res = $("#ab-result");
      res.hidden = false;
      res.dataset.preferenceId = pref?.id ?? "";
      res.dataset.chosen = chosen.id;
      res.textContent = `Saved: ${side} (${short(chosen.id)}) preferred over ${side === "A" ? "B" : "A"} (${short(rejected.id)}).`;
      announce(res.textContent);
      await updatePreferenceCount();
      // Random mode moves on to the next pair of the same model while the A/B view is open.
      if (pair.random) setTimeout(() => state.abPair === pair && !$("#view-ab").hidden && randomPair(pair.a.run_id), 900);
    } catch (e) {
      for (const btn of [$("#ab-choose-a"), $("#ab-choose-b")]) btn.disabled = false;
      throw e;
    }
  });
}

export async function updatePreferenceCount() {
  const data = await api("/v1/preferences");
  const n = (data.preferences || []).length;
  const pill = $("#ab-count");
  pill.hidden = !n;
  pill.textContent = String(n);
  pill.title = `${n} preference${n === 1 ? "" : "s"} recorded`;
}

// ───────────────────────── jobs ─────────────────────────

export async function loadJobs() {
  const data = await api("/v1/jobs?limit=50");
  state.jobs = data.jobs || [];
  const body = $("#jobs-body");
  body.replaceChildren(
    ...state.jobs.map((j) => {
      const p = j.progress || {};
      const f = progressFraction(p);
      const pct = f !== null ? Math.round(100 * f) : j.status === "succeeded" ? 100 : null;
      const what = jobWhat(j);
      const tr = el(
        "tr",
        {
          tabindex: "0",
          "data-testid": "job-row",
          "data-id": j.id,
          "aria-selected": String(state.selectedJob === j.id),
          onclick: () => selectJob(j.id),
          onkeydown: (e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), selectJob(j.id)),
        },
        el("td", {}, el("div", { class: "job-what", text: what }),
          el("div", { class: "muted small" }, el("code", { text: `${j.kind} · ${short(j.id)}` }), " · ", el("span", { class: "lane-tag", "data-lane": j.lane, text: j.lane ?? "" }), " · ", el("time", { datetime: j.created, title: j.created, text: fmtTime(j.created) }))),
        el("td", {}, el("span", { class: "badge", "data-status": j.status, text: j.status })),
        el("td", {}, pct === null ? el("span", { class: "muted", text: "—" }) : el("div", { class: "mini-bar", title: `${pct}%`, role: "img", "aria-label": `${pct}% done` }, el("span", { style: `width:${pct}%` }))),
      );
      return tr;
    }),
  );
  $("#jobs-empty").hidden = state.jobs.length > 0;
  const active = state.jobs.filter((j) => !FINAL.has(j.status)).length;
  const pill = $("#jobs-active");
  pill.hidden = !active;
  pill.textContent = `${active} active`;
}

export function jobWhat(j) {
  const p = j.params || {};
  if (j.kind === "train") return `${p.model ?? "?"} on ${dataName(p.data) ?? "?"}${p.steps ? `, ${p.steps} steps` : ""}`;
  const m = state.models.find((x) => x.run_id === p.run_id);
  const name = m ? m.model : p.run_id || "?";
  if (p.replay_of || p.replay) return `replay · ${name}`;
  if (j.kind === "generate") return `${p.n ?? 1} × ${name}${p.prompt ? ` “${p.prompt.slice(0, 24)}${p.prompt.length > 24 ? "…" : ""}”` : ""}`;
  return `${j.kind} ${name}`;
}

export async function onTrain(ev) {
  ev.preventDefault();
  await guard(async () => {
    const params = { model: $("#train-family").value, data: $("#train-data").value };
    if (!params.model) throw new InputError("Choose a model family to train");
    if (!params.data) throw new InputError("Choose a dataset to train on");
    const steps = intIn($("#train-steps"), 1);
    if (steps !== undefined) params.steps = steps;
    const budget = numberOrUndefined($("#train-budget"));
    if (budget !== undefined) params.time_budget = budget;
    const seed = intIn($("#train-seed"), 0);
    if (seed !== undefined) params.seed = seed;
    const overrides = $("#train-overrides").value.split("\n").map((s) => s.trim()).filter(Boolean);
    if (overrides.length) params.overrides = overrides;
    const body = { kind: "train", params };
    const u = userName();
    if (u) body.user = u;
    const job = await api("/v1/jobs", { method: "POST", body });
    announce(`Training job ${short(job.id)} queued`);
    await loadJobs();
    selectJob(job.id);
  });
}

export async function selectJob(id) {
  state.jobFollow?.abort();
  const ctrl = new AbortController();
  state.jobFollow = ctrl;
  state.selectedJob = id;
  for (const tr of $$("#jobs-body tr")) tr.setAttribute("aria-selected", String(tr.dataset.id === id));
  state.series = new Map();
  drawChart();
  try {
    const job = await api(`/v1/jobs/${encodeURIComponent(id)}`, { signal: ctrl.signal });
    renderJobDetail(job);
    if (job.run_id) {
      const hist = await api(`/v1/runs/${encodeURIComponent(job.run_id)}/metrics`, { signal: ctrl.signal, quiet404: true });
      for (const r of hist?.records || []) addMetrics(r);
      drawChart();
    }
    if (FINAL.has(job.status)) return;
    let last = job;
    let pending = false;
    const final = await followJob(
      id,
      {
        status: (d) => {
          last = { ...last, status: d.status };
          renderJobDetail(last);
          guard(loadJobs); // keep the row in the list in step with the detail
        },
        progress: (d) => {
          last = { ...last, progress: d };
          renderJobDetail(last);
        },
        metrics: (d) => {
          addMetrics(d);
          if (!pending) {
            pending = true;
            requestAnimationFrame(() => {
              pending = false;
              drawChart();
            });
          }
        },
      },
      ctrl.signal,
    );
    renderJobDetail(final);
    await loadJobs();
    if (final.kind === "train" && final.status === "succeeded") await loadModels();
  } catch (e) {
    if (e.name !== "AbortError") showError(e);
  }
}

export function renderJobDetail(job) {
  $("#job-detail-empty").hidden = true;
  $("#job-detail-body").hidden = false;
  $("#job-detail").dataset.jobId = job.id;
  const what = job.kind === "train" ? `Train ${job.params?.model ?? ""} on ${dataName(job.params?.data) ?? ""}` : `${job.kind[0].toUpperCase()}${job.kind.slice(1)} job`;
  $("#job-detail-title").textContent = `${what} · ${short(job.id)}`;
  setBadge($("#job-detail-status"), job.status);
  const p = job.progress || {};
  const bar = $("#job-detail-progress");
  setBar(bar, p, job.status);
  bar.dataset.fraction = String(progressFraction(p) ?? "");
  let text = progressText(p);
  if (FINAL.has(job.status)) {
    const done = progressText({ ...p, eta_s: null }); // nothing is left of a finished job
    text = `${job.status}${job.finished ? ` ${fmtTime(job.finished)}` : ""}${done ? ` · ${done}` : ""}`;
  }
  else if (job.status === "queued") text = `waiting for a worker${job.lane ? ` of the ${job.lane} lane` : ""}…`;
  else if (!text) text = "running…";
  $("#job-detail-progress-text").textContent = text;
  const err = $("#job-detail-error");
  err.hidden = !job.error;
  err.textContent = job.error || "";
  const cancel = $("#job-cancel");
  cancel.disabled = FINAL.has(job.status) || !!job.cancel_requested;
  cancel.textContent = job.cancel_requested && !FINAL.has(job.status) ? "Cancelling…" : "Cancel";
  $("#job-detail-json").textContent = JSON.stringify(
    { params: job.params, run_id: job.run_id, result: job.result, attempts: job.attempts, user: job.user, created: job.created, started: job.started, finished: job.finished },
    null,
    2,
  );
}

export async function cancelJob() {
  const id = state.selectedJob;
  if (!id) return;
  await guard(async () => {
    const job = await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST", body: {} });
    renderJobDetail(job);
    announce(`Cancel requested for job ${short(id)}`);
    await loadJobs();
  });
}

// ───────────────────────── loss chart ─────────────────────────

export const SKIP_METRICS = new Set(["step", "time", "lr", "epoch", "images_per_s", "tokens_per_s", "samples_per_s", "grad_norm", "wall", "elapsed"]);
export const PALETTE = ["#6d5efc", "#ef6c4a", "#1fa88a", "#e0a100", "#d6459b", "#3a8fd9", "#8a8f98"];

export function addMetrics(rec) {
  if (!rec || rec.step === undefined) return;
  for (const [k, v] of Object.entries(rec)) {
    if (SKIP_METRICS.has(k) || typeof v !== "number" || !Number.isFinite(v)) continue;
    if (!state.series.has(k)) state.series.set(k, []);
    state.series.get(k).push([rec.step, v]);
  }
}

export function drawChart() {
  const canvas = $("#loss-chart");
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 640;
  const cssH = canvas.clientHeight || 260;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const styles = getComputedStyle(document.documentElement);
  const fg = styles.getPropertyValue("--muted").trim() || "#888";
  const grid = styles.getPropertyValue("--line").trim() || "#ddd";
  ctx.font = "11px system-ui, sans-serif";

  // Loss-like series first; everything else can be toggled on in the legend.
  const names = [...state.series.keys()].sort((a, b) => (b.includes("loss") - a.includes("loss")) || a.localeCompare(b));
  const legend = $("#loss-legend");
  legend.replaceChildren(
    ...names.map((name, i) => {
      const cb = el("input", { type: "checkbox", "data-series": name });
      cb.checked = !state.hiddenSeries.has(name);
      cb.addEventListener("change", () => {
        if (cb.checked) state.hiddenSeries.delete(name);
        else state.hiddenSeries.add(name);
        drawChart();
      });
      const last = state.series.get(name).at(-1)?.[1];
      return el("label", { class: "legend-item" }, cb, el("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), `${name} ${last !== undefined ? fmtNum(last) : ""}`);
    }),
  );
  const shown = names.filter((n) => !state.hiddenSeries.has(n));
  const pad = { l: 52, r: 14, t: 12, b: 26 };
  const w = cssW - pad.l - pad.r;
  const h = cssH - pad.t - pad.b;
  const pts = shown.flatMap((n) => state.series.get(n));
  canvas.dataset.points = String(pts.length);
  if (!pts.length) {
    ctx.fillStyle = fg;
    ctx.textAlign = "center";
    ctx.fillText(state.series.size ? "all series hidden" : "no metrics yet — the curve appears as the run logs", cssW / 2, cssH / 2);
    canvas.setAttribute("aria-label", "Training loss curve: no data yet");
    return;
  }
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of pts) {
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) {
    y1 += Math.abs(y1) * 0.05 || 1;
    y0 -= Math.abs(y0) * 0.05 || 1;
  }
  const yPad = (y1 - y0) * 0.06;
  y0 = y0 >= 0 && y0 - yPad < 0 ? 0 : y0 - yPad;
  y1 += yPad;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * w;
  const Y = (y) => pad.t + (1 - (y - y0) / (y1 - y0)) * h;

  ctx.strokeStyle = grid;
  ctx.lineWidth = 1;
  ctx.fillStyle = fg;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const y of niceTicks(y0, y1, 4)) {
    ctx.beginPath();
    ctx.moveTo(pad.l, Math.round(Y(y)) + 0.5);
    ctx.lineTo(pad.l + w, Math.round(Y(y)) + 0.5);
    ctx.stroke();
    ctx.fillText(String(+y.toPrecision(4)), pad.l - 6, Y(y));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const xTicks = niceTicks(x0, x1, Math.min(6, Math.max(1, Math.round(x1 - x0)))).filter((x) => Number.isInteger(x) || x1 - x0 < 2);
  for (const x of xTicks) ctx.fillText(String(x), X(x), pad.t + h + 6);
  ctx.lineWidth = 1.75;
  ctx.lineJoin = "round";
  for (const name of shown) {
    const s = state.series.get(name);
    ctx.strokeStyle = PALETTE[names.indexOf(name) % PALETTE.length];
    ctx.beginPath();
    s.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    ctx.stroke();
    if (s.length === 1) {
      ctx.fillStyle = ctx.strokeStyle;
      ctx.beginPath();
      ctx.arc(X(s[0][0]), Y(s[0][1]), 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  const main = shown[0];
  const lastMain = state.series.get(main).at(-1);
  canvas.setAttribute("aria-label", `Training curve: ${shown.join(", ")}; ${main} ${fmtNum(lastMain[1])} at step ${lastMain[0]}`);
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return ticks;
}

export function fmtNum(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(3);
}

// ───────────────────────── dropped files ─────────────────────────

// Files dropped on `target` go to `onFiles` (an array, never empty) and never open in the browser in place of the
// page; `zone` is highlighted while files are dragged over. Verify, Edit and the data sets all take drops this way.
export function onDroppedFiles(target, zone, onFiles) {
  for (const type of ["dragenter", "dragover"]) {
    target.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
  }
  target.addEventListener("dragleave", (e) => {
    if (!target.contains(e.relatedTarget)) zone.classList.remove("dragging");
  });
  target.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    const files = [...(e.dataTransfer?.files || [])];
    if (files.length) onFiles(files);
  });
}

// ───────────────────────── verify a file ─────────────────────────

export const VERIFY_WORDS = { valid: "Verified", tampered: "Tampered", unsigned: "Unsigned", "unknown key": "Unknown key", error: "Not verifiable" };

/** POST the file (and its sidecar manifest, if given) to /v1/verify and show what the server found. */
export async function verifyFile(file, sidecar) {
  const zone = $("#verify-drop");
  const form = new FormData();
  form.append("file", file);
  if (sidecar) form.append("manifest", sidecar);
  zone.setAttribute("aria-busy", "true");
  $("#verify-result").dataset.state = "checking";
  try {
    const res = await postForm("/v1/verify", form);
    // a file that cannot be verified is an answer, not a failure of the page: shown in the result, not the banner
    showVerify(res.ok ? await res.json() : { status: "error", detail: await errorDetail(res), filename: file.name });
  } finally {
    zone.removeAttribute("aria-busy");
  }
}

export function showVerify(v) {
  const box = $("#verify-result");
  box.hidden = false;
  box.dataset.state = "done";
  box.dataset.status = v.status;
  const ok = v.status === "valid";
  $("#verify-icon").replaceChildren(icon(ok ? "shield-check" : v.status === "error" ? "alert" : "shield-x", "icon big"));
  setBadge($("#verify-status"), v.status);
  $("#verify-status").textContent = VERIFY_WORDS[v.status] || v.status;
  $("#verify-filename").textContent = v.filename || "";
  let detail = v.detail || "";
  if (v.status === "valid") detail = "The signature is good, the content is unchanged and the key is trusted." + (v.content_checked === false ? ` ${detail}` : "");
  else if (v.status === "tampered") detail = `Changed since it was signed${v.fields?.length ? `: ${v.fields.join(", ")}` : ""} (${v.detail})`;
  else if (v.status === "unsigned") detail = "No signed manifest: the metadata was stripped, or it was never signed.";
  else if (v.status === "unknown key") detail = "Signed by a key this server does not trust (add its public key to keys/trusted/).";
  $("#verify-detail").textContent = detail;
  const facts = [];
  if (v.generation_id) facts.push(["Generation", v.generation_id, "generation"]);
  if (v.items > 1) facts.push(["Items", v.items, "items"]);
  if (v.created) facts.push(["Created", v.created, "created"]);
  if (v.model_sha256) facts.push(["Model sha256", v.model_sha256.slice(0, 16), "model"]);
  if (v.run) facts.push(["Run", `${v.run.id} (${v.run.model} on ${v.run.dataset})`, "run"]);
  if (v.key_id) facts.push(["Key", v.key_id, "key"]);
  const w = v.watermark;
  if (w) {
    const found = w.detected ? (w.generation_id ? `found: generation ${w.generation_id}` : "found") : "not found";
    const score = typeof w.score === "number" ? ` · ${w.score_name ?? "score"} ${fmtNum(w.score)} (threshold ${w.threshold})` : "";
    facts.push(["Watermark", `${found}${score}${w.detail && !w.detected ? ` · ${w.detail}` : ""}`, "watermark"]);
  }
  $("#verify-facts").replaceChildren(...facts.flatMap(([k, val, key]) => [el("dt", { text: k }), el("dd", { text: String(val), dataset: { key } })]));
  $("#verify-facts").hidden = !facts.length;
  $("#verify-recipe-box").hidden = !v.recipe;
  $("#verify-recipe-title").textContent = v.recipe_source ? `Recipe (from the ${v.recipe_source})` : "Recipe";
  $("#verify-recipe").textContent = v.recipe ? JSON.stringify(v.recipe, null, 2) : "";
  announce(`${v.filename || "file"}: ${VERIFY_WORDS[v.status] || v.status}`);
}

export function setupVerify() {
  const zone = $("#verify-drop");
  const input = $("#verify-file");
  const sidecar = $("#verify-sidecar");
  const run = () => input.files?.[0] && guard(() => verifyFile(input.files[0], sidecar.files?.[0]));
  input.addEventListener("change", run);
  sidecar.addEventListener("change", run);
  onDroppedFiles(zone, zone, (files) => {
    // two files dropped together: a file and its sidecar manifest
    const side = files.length > 1 ? files.find((f) => f.name.endsWith(".manifest.json")) : undefined;
    const main = files.find((f) => f !== side);
    guard(() => verifyFile(main, side));
  });
}

// ───────────────────────── chat ─────────────────────────
// The conversation lives in the page only: each Send posts all of it to /v1/chat/completions (stream=true);
// every reply is a stored generation, so its thumbs and A/B choices are ordinary ratings and preferences.

export const chat = { history: [], busy: false, abort: null };

/** Runs that take a prompt: their descriptor picks the text form (nothing is guessed from the modality). */
export const chatRuns = () => state.models.filter((m) => m.controls === "text-controls");

export function fillChatModels() {
  const runs = chatRuns();
  const sel = $("#chat-model");
  const prev = sel.value || $("#model-select").value;
  fillSelect(sel, runs.length ? runs.map((m) => [m.run_id, `${m.model} — ${m.run_id}`]) : [["", "No text runs yet"]]);
  if (runs.some((m) => m.run_id === prev)) sel.value = prev;
  setChatBusy(chat.busy);
}

export function setChatBusy(busy) {
  chat.busy = busy;
  const ready = !busy && Boolean($("#chat-model").value);
  $("#chat-send").disabled = !ready;
  $("#chat-ab").disabled = !ready;
}

export function chatMessages() {
  const system = $("#chat-system").value.trim();
  return [...(system ? [{ role: "system", content: system }] : []), ...chat.history.map(({ role, content }) => ({ role, content }))];
}

/**
 * POST /v1/chat/completions with stream=true; onPiece(index, text) for each delta. Resolves with one
 * {text, id, finish} per choice, where id is the stored generation that GenLoop names on the choice's last chunk.
 */
export async function streamChat(body, onPiece, signal) {
  const res = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: authHeaders({ Accept: "text/event-stream", "Content-Type": "application/json" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (res.status === 401 || res.status === 403) {
    askToken("This server needs an API token.");
    throw new ApiError(res.status, await errorDetail(res));
  }
  if (!res.ok || !res.body) throw new ApiError(res.status, `POST /v1/chat/completions failed (${res.status}): ${await errorDetail(res)}`);
  const choices = [];
  for await (const events of sseEvents(res)) {
    for (const { data } of events) {
      if (!data || typeof data !== "object") continue; // "[DONE]"
      if (data.error) throw new ApiError(data.error.code || 500, `Chat reply failed: ${data.error.message}`);
      for (const c of data.choices || []) {
        const choice = (choices[c.index] ??= { text: "", id: null, finish: null });
        if (c.delta?.content) {
          choice.text += c.delta.content;
          onPiece(c.index, choice.text);
        }
        if (c.finish_reason) choice.finish = c.finish_reason;
      }
      const ids = data.genloop?.generation_ids;
      if (ids?.length && data.choices?.length) choices[data.choices[0].index].id = ids[0];
    }
  }
  if (!choices.length || choices.some((c) => !c.id)) throw new ApiError(0, "The chat stream ended before naming its reply");
  return choices;
}

export function chatTurn(role, text) {
  const body = el("p", { class: "chat-text", text });
  const li = el("li", { class: `chat-turn ${role}`, "data-testid": `chat-turn-${role}` }, el("div", { class: "chat-role", text: role === "user" ? "You" : "Assistant" }), body);
  $("#chat-log").append(li);
  $("#chat-empty").hidden = true;
  return { li, body };
}

/** Thumbs up/down that rate the reply's generation, like a gallery card's. */
export function chatVotes(id) {
  const box = el("div", { class: "feedback", "data-testid": "chat-feedback", "data-generation-id": id });
  const vote = (thumbs, name, label) =>
    el(
      "button",
      {
        type: "button",
        class: `vote ${thumbs > 0 ? "up" : "down"}`,
        "aria-pressed": "false",
        "aria-label": label,
        "data-testid": `chat-${name}`,
        onclick: async (e) => {
          const btn = e.currentTarget;
          const u = userName();
          const saved = await guard(() =>
            api(`/v1/generations/${encodeURIComponent(id)}/ratings`, { method: "POST", body: u ? { thumbs, user: u } : { thumbs } }),
          );
          if (saved === undefined) return; // the banner says why; the buttons stay as they were
          rememberMine(id, { thumbs });
          for (const b of box.querySelectorAll(".vote")) b.setAttribute("aria-pressed", String(b === btn));
          announce(thumbs > 0 ? "Thumbs up saved" : "Thumbs down saved");
        },
      },
      icon(name),
    );
  box.append(vote(1, "thumb-up", "Thumbs up"), vote(-1, "thumb-down", "Thumbs down"));
  return box;
}

/** Send the message box's text (if any) and stream one reply, or two to choose from when ab is true. */
export async function chatSend(ab = false) {
  if (chat.busy) return;
  const run = $("#chat-model").value;
  const input = $("#chat-input");
  const text = input.value.trim();
  if (!run) return showError(new InputError("Choose a text run first."));
  if (!text && !chat.history.length) return showError(new InputError("Type a message first."));
  if (!text && chat.history.at(-1).role !== "user") return showError(new InputError("Type a message first."));
  const maxTokens = Number($("#chat-max-tokens").value);
  const temperature = Number($("#chat-temperature").value);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) return showError(new InputError("Max tokens must be a whole number of at least 1."));
  if (!Number.isFinite(temperature) || temperature < 0 || temperature > 2) return showError(new InputError("Temperature must be between 0 and 2."));
  dismissError();
  const added = [];
  if (text) {
    chat.history.push({ role: "user", content: text });
    added.push(chatTurn("user", text).li);
    input.value = "";
  }
  const body = { model: run, messages: chatMessages(), max_tokens: maxTokens, temperature, n: ab ? 2 : 1 };
  if (userName()) body.user = userName();
  let views;
  if (ab) {
    const li = el("li", { class: "chat-turn chat-ab-pair", "data-testid": "chat-ab-pair" });
    const sides = el("div", { class: "chat-ab-sides" });
    views = ["A", "B"].map((side) => {
      const textNode = el("p", { class: "chat-text", text: "…" });
      const pick = el("button", { type: "button", class: "secondary", disabled: true, "data-testid": `chat-keep-${side.toLowerCase()}`, text: `Keep ${side}` });
      const box = el("div", { class: "chat-ab-side", "data-testid": `chat-ab-${side.toLowerCase()}` }, el("div", { class: "chat-role", text: `Reply ${side}` }), textNode, pick);
      sides.append(box);
      return { box, body: textNode, pick };
    });
    li.append(sides);
    $("#chat-log").append(li);
    added.push(li);
  } else {
    const view = chatTurn("assistant", "…");
    views = [view];
    added.push(view.li);
  }
  setChatBusy(true);
  chat.abort = new AbortController();
  try {
    const choices = await streamChat(body, (i, sofar) => views[i] && (views[i].body.textContent = sofar), chat.abort.signal);
    choices.forEach((c, i) => (views[i].body.textContent = c.text || "(empty reply)"));
    if (ab) {
      await chatChoose(choices, views);
    } else {
      keepReply(choices[0]);
      views[0].li.dataset.generationId = choices[0].id;
      views[0].li.append(chatVotes(choices[0].id));
      announce("Reply received");
    }
  } catch (e) {
    // the turn did not happen: take it back out of the history, and its text back into the box
    for (const node of added) node.remove();
    if (text) {
      chat.history.pop();
      input.value = text;
    }
    $("#chat-empty").hidden = chat.history.length > 0;
    if (e.name !== "AbortError") showError(e);
  } finally {
    chat.abort = null;
    setChatBusy(false);
  }
}

/** A reply continues the conversation; an empty one cannot (the server refuses empty turns), so it is only shown. */
export function keepReply(choice) {
  if (choice.text.trim()) chat.history.push({ role: "assistant", content: choice.text, id: choice.id });
}

/** Wait for the user to keep A or B: POST /v1/preferences, and the kept reply continues the conversation. */
export function chatChoose(choices, views) {
  return new Promise((resolve, reject) => {
    const signal = chat.abort.signal;
    signal.addEventListener("abort", () => reject(new DOMException("reset", "AbortError")), { once: true });
    views.forEach((v, i) => {
      v.pick.disabled = false;
      v.pick.addEventListener("click", async () => {
        const other = 1 - i;
        const pref = { chosen_id: choices[i].id, rejected_id: choices[other].id };
        if (userName()) pref.user = userName();
        for (const w of views) w.pick.disabled = true;
        try {
          await api("/v1/preferences", { method: "POST", body: pref });
        } catch (e) {
          for (const w of views) w.pick.disabled = false;
          showError(e);
          return;
        }
        v.box.classList.add("kept");
        views[other].box.classList.add("dropped");
        v.pick.replaceWith(el("span", { class: "chat-note", "data-testid": "chat-kept", text: "Kept: preferred over the other reply" }));
        views[other].pick.remove();
        keepReply(choices[i]);
        announce(`Reply ${i ? "B" : "A"} kept`);
        guard(updatePreferenceCount);
        resolve();
      });
    });
  });
}

export function chatReset() {
  chat.abort?.abort();
  chat.history = [];
  $("#chat-log").replaceChildren();
  $("#chat-empty").hidden = false;
  announce("Conversation cleared");
}

export function setupChat() {
  $("#chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    chatSend(false);
  });
  $("#chat-ab").addEventListener("click", () => chatSend(true));
  $("#chat-reset").addEventListener("click", chatReset);
  $("#chat-model").addEventListener("change", () => setChatBusy(chat.busy));
  $("#chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      chatSend(false);
    }
  });
}

// ───────────────────────── tabs ─────────────────────────

export function selectTab(name) {
  for (const tab of $$('[role="tab"]')) {
    const on = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`#${tab.getAttribute("aria-controls")}`).hidden = !on;
  }
  location.hash = name === "gallery" ? "" : name;
  if (name === "jobs") {
    guard(loadJobs);
    requestAnimationFrame(drawChart);
  }
  if (name === "ab" && !$("#ab-model").value && $("#model-select").value) $("#ab-model").value = $("#model-select").value;
}

export function setupTabs() {
  const tabs = $$('[role="tab"]');
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab.id.slice(4)));
    tab.addEventListener("keydown", (e) => {
      const i = tabs.indexOf(tab);
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (to === undefined) return;
      e.preventDefault();
      const next = tabs[(to + tabs.length) % tabs.length];
      next.focus();
      selectTab(next.id.slice(4));
    });
  }
  const initial = location.hash.slice(1);
  if (["ab", "chat", "jobs", "verify"].includes(initial)) selectTab(initial);
}

// ───────────────────────── wiring ─────────────────────────

export async function loadAll() {
  await openSession();
  await guard(loadHealth);
  await guard(loadModels);
  await guard(refreshGallery);
  await guard(updatePreferenceCount);
  await guard(loadJobs);
}

function init() {
  setupAuth();
  setupTabs();
  setupVerify();
  setupChat();
  // Tab modules' setups.
  setupEdit();
  setupRuns();
  setupGallery();
  setupDatasets();
  $("#error-dismiss").addEventListener("click", dismissError);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("#error-banner").hidden && !document.querySelector("dialog[open]")) dismissError();
  });
  $("#model-select").addEventListener("change", () => {
    onModelChange();
    if ($("#model-select").value) $("#ab-model").value = $("#model-select").value;
  });
  $("#generate-form").addEventListener("submit", onGenerate);
  for (const b of $$(".dice")) {
    b.addEventListener("click", () => {
      const input = $(`#${b.dataset.seedFor}`);
      input.value = String(randomSeed());
      announce(`Seed ${input.value}`);
    });
  }
  $("#gallery-filter").addEventListener("change", () => guard(refreshGallery));
  $("#gallery-refresh").addEventListener("click", () => guard(refreshGallery));
  $("#gallery-more").addEventListener("click", () => guard(() => loadGallery()));
  $("#ab-compare-selected").addEventListener("click", compareSelected);
  $("#ab-random").addEventListener("click", () => randomPair());
  $("#ab-choose-a").addEventListener("click", () => choose("A"));
  $("#ab-choose-b").addEventListener("click", () => choose("B"));
  document.addEventListener("keydown", (e) => {
    if ($("#view-ab").hidden || e.ctrlKey || e.metaKey || e.altKey || document.querySelector("dialog[open]")) return;
    if (e.target.closest("input, textarea, select")) return;
    const k = e.key.toLowerCase();
    if (k === "a" && !$("#ab-arena").hidden && !$("#ab-choose-a").disabled) choose("A");
    else if (k === "b" && !$("#ab-arena").hidden && !$("#ab-choose-b").disabled) choose("B");
    else if (k === "n") randomPair();
  });
  $("#recipe-copy").addEventListener("click", () => guard(copyRecipe));
  $("#train-form").addEventListener("submit", onTrain);
  $("#jobs-refresh").addEventListener("click", () => guard(loadJobs));
  $("#job-cancel").addEventListener("click", cancelJob);
  window.addEventListener("resize", () => !$("#view-jobs").hidden && drawChart());
  window.addEventListener("unhandledrejection", (e) => showError(e.reason));
  // Keep the jobs list and health fresh while something is running.
  setInterval(() => {
    if (document.hidden || state.authBlocked === token()) return;
    const active = state.jobs.some((j) => !FINAL.has(j.status));
    if (active || !$("#view-jobs").hidden) guard(loadJobs);
    loadHealth().catch(() => {});
  }, 4000);
  loadAll().then(() => document.body.setAttribute("data-ready", "true"));
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
