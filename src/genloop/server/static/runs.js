// The Runs tab: every run with its family, data, steps, status and headline metric beside its real-data floor;
// a run's report in the page (a sandboxed frame); an evaluation started as a job and followed; selected runs
// compared (the table `genloop compare` prints, and a small plot of each run's headline metric against its
// floor); a run deleted after a confirmation. Routes: GET /v1/runs, GET /v1/runs/{id}, GET|POST
// /v1/runs/{id}/report, GET /v1/runs/compare?ids=, DELETE /v1/runs/{id}, POST /v1/jobs {kind: "evaluate"}.

import { $, FINAL, SVG_NS, announce, api, el, fmtTime, followJob, guard, intIn, loadModels, progressText, selectTab, setBar, short, state, token, userName } from "./app.js";

const runs = {
  list: [],
  selected: new Set(), // run ids ticked for comparison
  evals: new Map(), // run id -> {job, progress, status}: evaluations started from this page
  deleting: null, // the run the delete dialog asks about
  compared: null, // the last comparison shown (its plot is drawn again at a new width)
};

const enc = encodeURIComponent;
const dataName = (d) => String(d ?? "?").split("/").at(-1) || String(d); // a file's name, not the server's path
const tail = (id) => String(id).split("-").at(-1); // a run id ends in its random part (the start is its date)

// ───────────────────────── list ─────────────────────────

export async function loadRuns() {
  const data = await api("/v1/runs");
  runs.list = data.runs || [];
  const ids = new Set(runs.list.map((r) => r.id));
  for (const id of [...runs.selected]) if (!ids.has(id)) runs.selected.delete(id);
  renderRuns();
}

function stepsText(r) {
  if (r.total_steps) return `${r.step} / ${r.total_steps}`;
  if (r.time_budget) return `${r.step} (${Math.round(r.time_budget)} s budget)`;
  return String(r.step);
}

/** The headline metric beside its floor: "FID 12.3", then "floor 1.20 · 10.3× floor" (lower is better). */
export function headlineCell(h) {
  if (!h) return el("span", { class: "muted", text: "not evaluated" });
  const lines = [el("div", { class: "runs-metric" }, el("span", { class: "muted", text: `${h.label} ` }), el("strong", { text: h.text }))];
  if (h.floor_text !== null && h.floor_text !== undefined) {
    const ratio = h.better === "lower" && typeof h.x_floor === "number" ? ` · ${h.x_floor.toFixed(1)}× floor` : "";
    lines.push(el("div", { class: "muted small", text: `floor ${h.floor_text}${ratio}${h.better ? ` · ${h.better} is better` : ""}` }));
  } else {
    lines.push(el("div", { class: "muted small", text: "no real-data floor" }));
  }
  return el("div", { "data-testid": "run-headline", "data-key": h.key }, ...lines);
}

// A run's status drawn with the job badges' colours (finished like a succeeded job, ended early like a cancelled one).
const TONE = { finished: "succeeded", created: "running", diverged: "failed", killed: "cancelled", interrupted: "cancelled" };

function statusCell(r) {
  const cell = el("td", { class: "runs-status" }, el("span", { class: "badge", "data-status": TONE[r.status] ?? r.status, "data-testid": "run-status", text: r.status ?? "?" }));
  const ev = runs.evals.get(r.id);
  if (ev && !FINAL.has(ev.status)) {
    const bar = el("progress", { max: "1", "aria-label": `Evaluation of ${r.id}`, "data-testid": "run-eval-progress" });
    setBar(bar, ev.progress, ev.status);
    const text = ev.status === "queued" ? "evaluation waiting for a worker…" : progressText(ev.progress) || "evaluating…";
    cell.append(el("div", { class: "runs-eval", "data-testid": "run-eval" }, bar, el("span", { class: "muted small", "data-testid": "run-eval-text", text })));
  }
  return cell;
}

export function renderRuns() {
  const body = $("#runs-body");
  body.replaceChildren(
    ...runs.list.map((r) => {
      const evaluating = runs.evals.has(r.id) && !FINAL.has(runs.evals.get(r.id).status);
      const active = r.status === "running" || r.status === "created";
      return el(
        "tr",
        { "data-testid": "run-row", "data-id": r.id, "aria-selected": String(runs.selected.has(r.id)) },
        el(
          "td",
          {},
          el("input", {
            type: "checkbox",
            "data-testid": "run-pick",
            "aria-label": `Select ${r.family} ${r.id} for comparison`,
            checked: runs.selected.has(r.id),
            onchange: (e) => togglePick(r.id, e.target.checked),
          }),
        ),
        el(
          "td",
          {},
          el("div", { class: "job-what", title: r.dataset ?? "", text: `${r.family ?? "?"} · ${dataName(r.dataset)}` }),
          el("div", { class: "muted small runs-id" }, el("code", { title: r.id, text: r.id }), " · ", el("time", { datetime: r.created, title: r.created, text: fmtTime(r.created) })),
        ),
        statusCell(r),
        el("td", { class: "nowrap", "data-testid": "run-steps", text: stepsText(r) }),
        el("td", {}, headlineCell(r.headline)),
        el(
          "td",
          { class: "runs-actions" },
          el("button", { type: "button", class: "link", "data-testid": "run-report", onclick: () => guard(() => openReport(r.id)), text: "Report" }),
          el("button", {
            type: "button",
            class: "link",
            "data-testid": "run-evaluate",
            disabled: evaluating || active || !r.has_weights,
            title: r.has_weights ? "Score samples against held-out data (a job)" : "No trained weights yet",
            onclick: () => guard(() => evaluate(r.id)),
            text: evaluating ? "Evaluating…" : "Evaluate",
          }),
          el("button", { type: "button", class: "link runs-danger", "data-testid": "run-delete", disabled: active, onclick: () => askDelete(r), text: "Delete" }),
        ),
      );
    }),
  );
  $("#runs-empty").hidden = runs.list.length > 0;
  $("#runs-compare").disabled = runs.selected.size < 2;
}

function togglePick(id, on) {
  if (on) runs.selected.add(id);
  else runs.selected.delete(id);
  $(`#runs-body tr[data-id="${CSS.escape(id)}"]`)?.setAttribute("aria-selected", String(on));
  $("#runs-compare").disabled = runs.selected.size < 2;
}

// ───────────────────────── evaluate (a job) ─────────────────────────

export async function evaluate(runId) {
  const n = intIn($("#runs-eval-n"), 10) ?? 500;
  const body = { kind: "evaluate", params: { run_id: runId, n } };
  const u = userName();
  if (u) body.user = u;
  const job = await api("/v1/jobs", { method: "POST", body });
  const entry = { job: job.id, status: job.status, progress: job.progress || {} };
  runs.evals.set(runId, entry);
  renderRuns();
  announce(`Evaluation of ${tail(runId)} queued (job ${short(job.id)})`);
  const redraw = () => renderRuns();
  const final = await followJob(job.id, {
    status: (d) => {
      entry.status = d.status;
      redraw();
    },
    progress: (d) => {
      entry.progress = d;
      redraw();
    },
  });
  entry.status = final.status;
  entry.progress = final.progress || entry.progress;
  await loadRuns();
  if (final.status !== "succeeded") throw new Error(`Evaluation of ${runId} ${final.status}: ${final.error || "no detail"}`);
  announce(`Evaluated ${tail(runId)}`);
}

// ───────────────────────── report (in a sandboxed frame) ─────────────────────────

export async function openReport(runId, { rebuild = false } = {}) {
  const dlg = $("#runs-report-dialog");
  const frame = $("#runs-report-frame");
  dlg.dataset.runId = runId;
  $("#runs-report-title").textContent = `Report · ${runId}`;
  let rep = (await api(`/v1/runs/${enc(runId)}`)).report;
  if (rebuild || !rep.exists || rep.stale) {
    $("#runs-report-state").textContent = "Building the report…";
    if (!dlg.open) dlg.showModal();
    rep = await api(`/v1/runs/${enc(runId)}/report`, { method: "POST" });
  }
  $("#runs-report-state").textContent = `Built ${rep.built ?? ""}: the run's samples, curves, metrics beside their floors and config.`;
  frame.removeAttribute("srcdoc");
  if (!token() || state.session === token()) {
    frame.src = `${rep.url}?built=${enc(rep.built ?? "")}`; // the session cookie (or no token) lets the frame load it
  } else {
    frame.removeAttribute("src");
    frame.srcdoc = await api(rep.url); // no cookie: fetched with the token, shown in the same sandbox
  }
  dlg.dataset.state = "shown";
  if (!dlg.open) dlg.showModal();
}

// ───────────────────────── compare ─────────────────────────

export async function compareSelected() {
  const ids = runs.list.map((r) => r.id).filter((id) => runs.selected.has(id)); // in the table's order
  const data = await api(`/v1/runs/compare?ids=${ids.map(enc).join(",")}`);
  $("#runs-compare-panel").hidden = false; // shown first: the plot is drawn at the width it gets
  renderCompare(data);
  $("#runs-compare-panel").scrollIntoView({ block: "nearest" });
  announce(`Compared ${ids.length} runs`);
}

export function renderCompare(data) {
  const note = $("#runs-unranked");
  note.hidden = !data.unranked;
  note.textContent = data.unranked ? `Not ranked: ${data.unranked}.` : "";
  $("#runs-compare-head").replaceChildren(el("tr", {}, ...data.columns.map((c) => el("th", { scope: "col", text: c.title }))));
  $("#runs-compare-body").replaceChildren(
    ...data.rows.map((row) =>
      el(
        "tr",
        { "data-testid": "compare-row", "data-id": row.run_id },
        ...data.columns.map((c, i) => {
          const best = data.best[c.key] === row.run_id;
          const full = row.cells[i];
          const text = c.key === "run_id" ? tail(full) : c.key === "dataset" ? dataName(full) : full;
          return el("td", { class: best ? "runs-best" : null, "data-best": best ? "true" : null, title: text === full ? null : full }, best ? el("strong", { text }) : text);
        }),
      ),
    ),
  );
  runs.compared = data;
  $("#runs-plot").replaceChildren(plot(data.plot));
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Each run's headline metric as a bar, its real-data floor as a dark tick; runs of one metric share a scale. */
export function plot(entries) {
  const shown = entries.filter((e) => typeof e.value === "number");
  const W = Math.round(Math.min(Math.max($("#runs-plot").clientWidth || 600, 280), 720)); // text stays legible
  const ROW = 58, TOP = 6;
  const root = svg("svg", { viewBox: `0 0 ${W} ${TOP + ROW * Math.max(shown.length, 1)}`, role: "img", class: "runs-plot-svg", "data-testid": "runs-plot-svg" });
  root.append(svg("title", {}, "Each run's headline metric (bar) against its real-data floor (tick)"));
  const scale = {};
  for (const e of shown) scale[e.key] = Math.max(scale[e.key] ?? 0, e.value, e.floor ?? 0);
  shown.forEach((e, i) => {
    const y = TOP + i * ROW;
    const max = scale[e.key] || 1;
    const ratio = e.better === "lower" && typeof e.x_floor === "number" ? ` (${e.x_floor.toFixed(1)}× floor)` : "";
    const floor = e.floor_text ? `floor ${e.floor_text}${ratio}` : "no real-data floor";
    const g = svg("g", { "data-testid": "plot-row", "data-id": e.run_id, "data-key": e.key });
    g.append(svg("text", { x: 0, y: y + 12, class: "runs-plot-label" }, `${e.family} · ${tail(e.run_id)}: ${e.label} ${e.text}`));
    g.append(svg("text", { x: 0, y: y + 27, class: "runs-plot-label muted" }, floor));
    g.append(svg("rect", { x: 0, y: y + 33, width: W, height: 12, rx: 3, class: "runs-plot-track" }));
    g.append(svg("rect", { x: 0, y: y + 33, width: Math.max(1, (W * Math.max(e.value, 0)) / max), height: 12, rx: 3, class: "runs-plot-bar", "data-testid": "plot-bar" }));
    if (typeof e.floor === "number") {
      const x = Math.min(W - 1.5, Math.max(1.5, (W * e.floor) / max));
      g.append(svg("line", { x1: x, x2: x, y1: y + 30, y2: y + 48, class: "runs-plot-floor", "data-testid": "plot-floor" }));
    }
    root.append(g);
  });
  if (!shown.length) root.append(svg("text", { x: 0, y: 24, class: "runs-plot-label" }, "No headline metric to plot"));
  return root;
}

// ───────────────────────── delete (asked first) ─────────────────────────

function askDelete(r) {
  runs.deleting = r.id;
  $("#runs-delete-what").textContent = `${r.family} on ${r.dataset}, step ${r.step} · ${r.id}`;
  $("#runs-delete-dialog").returnValue = "";
  $("#runs-delete-dialog").showModal();
}

export async function deleteRun(runId) {
  await api(`/v1/runs/${enc(runId)}`, { method: "DELETE" });
  runs.selected.delete(runId);
  announce(`Deleted run ${runId}`);
  await loadRuns();
  await loadModels(); // the model list (and every select fed from it) loses the run
}

// ───────────────────────── wiring ─────────────────────────

export function setupRuns() {
  $("#runs-refresh").addEventListener("click", () => guard(loadRuns));
  $("#runs-compare").addEventListener("click", () => guard(compareSelected));
  $("#runs-report-rebuild").addEventListener("click", () => guard(() => openReport($("#runs-report-dialog").dataset.runId, { rebuild: true })));
  $("#runs-report-dialog").addEventListener("close", () => {
    const frame = $("#runs-report-frame");
    frame.removeAttribute("src");
    frame.removeAttribute("srcdoc");
    delete $("#runs-report-dialog").dataset.state;
  });
  $("#runs-delete-dialog").addEventListener("close", () => {
    const id = runs.deleting;
    runs.deleting = null;
    if (id && $("#runs-delete-dialog").returnValue === "delete") guard(() => deleteRun(id));
  });
  // The list loads when the tab is shown (by click, keyboard or the #runs address), never in the background.
  new MutationObserver(() => !$("#view-runs").hidden && guard(loadRuns)).observe($("#view-runs"), { attributes: true, attributeFilter: ["hidden"] });
  let resizing = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(() => runs.compared && !$("#runs-compare-panel").hidden && $("#runs-plot").replaceChildren(plot(runs.compared.plot)));
  });
  // While the tab shows a run in training, its steps and status follow (as the Jobs tab polls its jobs).
  setInterval(() => {
    if (document.hidden || $("#view-runs").hidden || state.authBlocked === token()) return;
    if (runs.list.some((r) => r.status === "running" || r.status === "created")) guard(loadRuns);
  }, 4000);
  if (location.hash === "#runs") selectTab("runs");
}
