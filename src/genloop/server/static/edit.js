// GenLoop Studio, the Edit tab: an uploaded image, a mask painted on a canvas over it, an edit job of a diffusion
// run (POST /v1/jobs kind "edit"), its progress, then a before/after view (a slider and side by side).
//
// What a run can do comes from its /v1/models descriptor alone: `edit_tasks` (each task's name, description,
// whether it needs a mask or takes a sampler, its options with defaults and types). Runs without it are listed
// as unable to edit, with the reason; nothing is guessed from a family's or modality's name.
//
// The mask is kept as one byte per pixel of the input (1 = fill) and drawn on a canvas at the input's own size, so
// what is painted is exactly what is sent: a black-and-white PNG at the input's size (white = fill).

import {
  $,
  $$,
  ApiError,
  InputError,
  announce,
  api,
  el,
  errorDetail,
  fillSelect,
  followJob,
  guard,
  imageSrc,
  intIn,
  modelLabel,
  numberOrUndefined,
  onDroppedFiles,
  postForm,
  progressText,
  refreshGallery,
  setBadge,
  setBar,
  short,
  showError,
  showRecipe,
  state,
  userName,
} from "./app.js";

const LS_RUN = "genloop.editRun";
const MASK_RGBA = [109, 94, 252, 165]; // how painted pixels look over the image (the file sent is white on black)

// How the page shows a task option it knows (any other is a plain field named after it, typed by its descriptor).
export const OPTION_HINTS = {
  strength: { label: "Strength", min: 0, max: 1, step: 0.05, aboveMin: true, title: "near 0 keeps the input; 1 starts from noise" },
  scale: { label: "Scale (×)", min: 2, max: 16, int: true },
  sigma: { label: "Noise σ", min: 0, step: 0.01, aboveMin: true, title: "the input's noise, in [-1, 1] pixel units" },
  blur_sigma: { label: "Blur σ (px)", min: 0, step: 0.1, aboveMin: true },
  jump_length: { label: "Jump length", min: 1, int: true, title: "RePaint: steps between resampling jumps" },
  jump_n_sample: { label: "Jump count", min: 1, max: 100, int: true, title: "RePaint: samples per jump point (1 = no resampling)" },
  noise: { label: "Input noise σ", min: 0, step: 0.001, more: true },
  eta: { label: "η", min: 0, max: 1, step: 0.05, more: true },
  eta_b: { label: "η (b)", min: 0, max: 1, step: 0.05, more: true },
};

export const edit = {
  image: null, // {file, url, width, height, name}: the chosen input
  mask: null, // Uint8Array(width * height), 1 = fill
  painting: null, // {id, last: [x, y], value} while a pointer paints
  busy: false,
  shown: null, // the object URL the before/after view shows (kept until the next result)
};

// ───────────────────────── runs and tasks ─────────────────────────

export const editRuns = () => state.models.filter((m) => m.edit_tasks?.length);
export const editRun = () => editRuns().find((m) => m.run_id === $("#edit-run").value) || null;
export const editTask = () => editRun()?.edit_tasks.find((t) => t.name === $("#edit-task").value) || null;

export function fillEditRuns() {
  const sel = $("#edit-run");
  const prev = sel.value || localStorage.getItem(LS_RUN) || "";
  const runs = editRuns();
  // image runs of other families: listed, disabled, so the user sees why they are not offered
  const others = state.models.filter((m) => !m.edit_tasks?.length && m.controls === "image-controls");
  sel.replaceChildren();
  if (!runs.length) sel.append(el("option", { value: "", text: "No diffusion run yet — train a ddpm in Jobs" }));
  for (const m of runs) sel.append(el("option", { value: m.run_id, text: modelLabel(m), title: m.run_id }));
  if (others.length) {
    const group = el("optgroup", { label: "Cannot edit (editing needs a diffusion run)" });
    for (const m of others) group.append(el("option", { value: m.run_id, text: modelLabel(m), title: m.run_id, disabled: true }));
    sel.append(group);
  }
  if (runs.some((m) => m.run_id === prev)) sel.value = prev;
  else if (runs.length) sel.value = runs[0].run_id;
  onEditRunChange();
}

export function onEditRunChange() {
  const m = editRun();
  const note = $("#edit-run-note");
  if (m) localStorage.setItem(LS_RUN, m.run_id);
  const facts = [];
  if (m?.image_size) facts.push(`works at ${m.image_size}×${m.image_size} px, ${m.channels === 1 ? "grey" : `${m.channels} channels`}`);
  if (m?.conditional) facts.push(`class-conditional (${m.num_classes ?? "?"} classes)`);
  note.textContent = m ? `${m.model} · ${m.dataset} · step ${m.step}${facts.length ? ` · ${facts.join(" · ")}` : ""}` : "";
  const prev = $("#edit-task").value;
  const tasks = m?.edit_tasks || [];
  fillSelect($("#edit-task"), tasks.map((t) => [t.name, t.name]));
  if (!tasks.some((t) => t.name === prev) && tasks.some((t) => t.name === "inpaint")) $("#edit-task").value = "inpaint";
  $("#edit-class-fields").hidden = !m?.conditional;
  if (m?.conditional) {
    const opts = [["", "none (unconditional)"]];
    for (let c = 0; c < (m.num_classes || 0); c++) opts.push([String(c), `class ${c}`]);
    fillSelect($("#edit-class"), opts);
  }
  onEditTaskChange();
}

export function onEditTaskChange() {
  const m = editRun();
  const t = editTask();
  $("#edit-task-desc").textContent = t ? t.description : "";
  $("#edit-steps").placeholder = `default (${t?.steps ?? m?.default_steps ?? "the model's"})`;
  $("#edit-sampler-field").hidden = !t?.sampler;
  if (t?.sampler) fillSelect($("#edit-sampler"), [["", `${t.name}'s default`], ...(m.samplers || []).map((s) => [s, s])]);
  buildOptions(t);
  showMaskTools();
  setEditBusy(edit.busy);
}

/** The task's options as fields: blank means the task's default (shown as the placeholder). */
export function buildOptions(t) {
  const box = $("#edit-options");
  if (box.dataset.task === (t?.name ?? "")) return; // keep what the user typed for this task
  box.dataset.task = t?.name ?? "";
  const fields = [];
  const more = [];
  for (const o of t?.options || []) {
    const hint = OPTION_HINTS[o.name] || {};
    const id = `edit-opt-${o.name}`;
    const isInt = hint.int || o.type === "int";
    let input;
    if (o.type === "bool") {
      input = el("input", { id, "data-testid": id, type: "checkbox", checked: o.default === true });
    } else {
      const numeric = o.type !== "text";
      input = el("input", {
        id,
        "data-testid": id,
        type: numeric ? "number" : "text",
        min: hint.min ?? null,
        max: hint.max ?? null,
        step: isInt ? "1" : hint.step ?? "any",
        placeholder: o.default === null || o.default === undefined ? "auto" : String(o.default),
        title: hint.title ?? null,
      });
    }
    input.dataset.option = o.name;
    input.dataset.kind = o.type === "bool" ? "bool" : o.type === "text" ? "text" : isInt ? "int" : "number";
    const field = el("div", { class: "field" }, el("label", { for: id, text: hint.label || o.name }), input);
    (hint.more ? more : fields).push(field);
  }
  box.replaceChildren(...fields);
  if (more.length) box.append(el("details", { class: "edit-more" }, el("summary", { text: "More options" }), el("div", { class: "row" }, ...more)));
}

/** "more than 0 and at most 1", "at least 0", ...: the range a hint allows, in words. */
export function rangeText(hint) {
  const parts = [];
  if (hint.min !== undefined) parts.push(`${hint.aboveMin ? "more than" : "at least"} ${hint.min}`);
  if (hint.max !== undefined) parts.push(`at most ${hint.max}`);
  return parts.join(" and ");
}

/** The options the user set (blank ones are left to the task), checked where the page knows their range. */
export function optionValues() {
  const out = {};
  for (const input of $$("#edit-options [data-option]")) {
    const name = input.dataset.option;
    const hint = OPTION_HINTS[name] || {};
    let v;
    if (input.dataset.kind === "bool") v = input.checked;
    else if (input.dataset.kind === "text") v = input.value.trim() || undefined;
    else if (input.dataset.kind === "int") v = intIn(input, hint.min ?? 0, hint.max);
    else {
      v = numberOrUndefined(input);
      const low = v !== undefined && hint.min !== undefined && (hint.aboveMin ? v <= hint.min : v < hint.min);
      const high = v !== undefined && hint.max !== undefined && v > hint.max;
      if (low || high) throw new InputError(`${hint.label || name} must be ${rangeText(hint)}`);
    }
    if (v !== undefined) out[name] = v;
  }
  return out;
}

// ───────────────────────── the input image ─────────────────────────

/** Take a chosen or dropped file as the input: it must be an image this browser decodes. */
export async function takeFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) throw new InputError(`${file.name} is not an image: choose a PNG or JPEG file`);
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new InputError(`${file.name} is not an image this browser can read`);
  }
  const { width, height } = bitmap;
  bitmap.close();
  if (edit.image && edit.image.url !== edit.shown) URL.revokeObjectURL(edit.image.url);
  edit.image = { file, url: URL.createObjectURL(file), width, height, name: file.name };
  edit.mask = new Uint8Array(width * height);
  const preview = $("#edit-preview");
  preview.src = edit.image.url;
  const stage = $("#edit-stage");
  stage.style.aspectRatio = `${width} / ${height}`;
  stage.style.setProperty("--edit-w", `${width}px`);
  stage.classList.toggle("pixelated", Math.max(width, height) < 256);
  stage.hidden = false;
  const canvas = $("#edit-mask");
  canvas.width = width;
  canvas.height = height;
  const brush = $("#edit-brush");
  const longest = Math.max(width, height);
  brush.max = String(Math.max(1, Math.round(longest / 3)));
  brush.value = String(Math.max(1, Math.round(longest / 10)));
  brushOut();
  $("#edit-file-info").textContent = `${file.name} · ${width}×${height} px`;
  $("#edit-drop").classList.add("has-file");
  renderMask();
  showMaskTools();
  setEditBusy(edit.busy);
  announce(`Input ${file.name}, ${width} by ${height} pixels`);
}

export function showMaskTools() {
  const needs = Boolean(editTask()?.mask);
  $("#edit-mask-tools").hidden = !needs || !edit.image;
  $("#edit-mask").hidden = !needs;
}

// ───────────────────────── the mask ─────────────────────────

export const brushSize = () => Number($("#edit-brush").value) || 1;
export const brushOut = () => ($("#edit-brush-out").textContent = `${brushSize()} px`);
const tool = () => $('input[name="edit-tool"]:checked').value;

/** Paint (value 1) or erase (0) a disc of the brush's diameter around (cx, cy), in input pixels. */
export function stamp(cx, cy, value) {
  const { width: w, height: h } = edit.image;
  const r = brushSize() / 2;
  const x0 = Math.max(0, Math.floor(cx - r));
  const x1 = Math.min(w - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r));
  const y1 = Math.min(h - 1, Math.ceil(cy + r));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx;
      const dy = y + 0.5 - cy;
      if (dx * dx + dy * dy <= r * r) edit.mask[y * w + x] = value;
    }
  }
  const px = Math.floor(cx);
  const py = Math.floor(cy);
  if (px >= 0 && py >= 0 && px < w && py < h) edit.mask[py * w + px] = value; // a 1 px brush always hits its pixel
  return [x0, y0, x1, y1];
}

/** Paint along the segment from a to b (stamps close enough that a fast stroke leaves no gaps). */
export function strokeTo(a, b, value) {
  const d = Math.hypot(b[0] - a[0], b[1] - a[1]);
  const n = Math.max(1, Math.ceil(d / Math.max(0.5, brushSize() / 4)));
  let box = null;
  for (let i = 1; i <= n; i++) {
    const [x0, y0, x1, y1] = stamp(a[0] + ((b[0] - a[0]) * i) / n, a[1] + ((b[1] - a[1]) * i) / n, value);
    box = box ? [Math.min(box[0], x0), Math.min(box[1], y0), Math.max(box[2], x1), Math.max(box[3], y1)] : [x0, y0, x1, y1];
  }
  renderMask(box);
}

/** Draw the mask (or its rectangle box = [x0, y0, x1, y1]) on the canvas over the image. */
export function renderMask(box = null) {
  if (!edit.image) return;
  const { width: w, height: h } = edit.image;
  const [x0, y0, x1, y1] = box ? [Math.max(0, box[0]), Math.max(0, box[1]), Math.min(w - 1, box[2]), Math.min(h - 1, box[3])] : [0, 0, w - 1, h - 1];
  if (x1 < x0 || y1 < y0) return;
  const bw = x1 - x0 + 1;
  const bh = y1 - y0 + 1;
  const ctx = $("#edit-mask").getContext("2d");
  const img = ctx.createImageData(bw, bh);
  for (let y = 0; y < bh; y++) {
    for (let x = 0; x < bw; x++) {
      if (edit.mask[(y0 + y) * w + x0 + x]) img.data.set(MASK_RGBA, (y * bw + x) * 4);
    }
  }
  ctx.putImageData(img, x0, y0);
}

export function maskCount() {
  let n = 0;
  for (const v of edit.mask || []) n += v;
  return n;
}

export function maskInfo() {
  if (!edit.image) return;
  const n = maskCount();
  const all = edit.image.width * edit.image.height;
  const canvas = $("#edit-mask");
  canvas.dataset.filled = String(n);
  $("#edit-mask-info").textContent = n ? `${n} of ${all} px to fill (${Math.round((100 * n) / all)} %)` : "Paint the part to fill";
}

/** Where a pointer event falls on the input, in its pixels. */
function pointAt(ev) {
  const rect = $("#edit-mask").getBoundingClientRect();
  return [((ev.clientX - rect.left) * edit.image.width) / rect.width, ((ev.clientY - rect.top) * edit.image.height) / rect.height];
}

export function setupMaskCanvas() {
  const canvas = $("#edit-mask");
  canvas.addEventListener("pointerdown", (ev) => {
    if (!edit.image || ev.button !== 0) return;
    ev.preventDefault();
    canvas.setPointerCapture(ev.pointerId);
    const p = pointAt(ev);
    edit.painting = { id: ev.pointerId, last: p, value: tool() === "eraser" ? 0 : 1 };
    strokeTo(p, p, edit.painting.value);
  });
  canvas.addEventListener("pointermove", (ev) => {
    const paint = edit.painting;
    if (!paint || paint.id !== ev.pointerId) return;
    const p = pointAt(ev);
    strokeTo(paint.last, p, paint.value);
    paint.last = p;
  });
  const end = (ev) => {
    if (!edit.painting || edit.painting.id !== ev.pointerId) return;
    edit.painting = null;
    maskInfo();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("#edit-brush").addEventListener("input", brushOut);
  $("#edit-mask-clear").addEventListener("click", () => {
    if (!edit.image) return;
    edit.mask.fill(0);
    $("#edit-mask").getContext("2d").clearRect(0, 0, edit.image.width, edit.image.height);
    maskInfo();
    announce("Mask cleared");
  });
  $("#edit-mask-invert").addEventListener("click", () => {
    if (!edit.image) return;
    for (let i = 0; i < edit.mask.length; i++) edit.mask[i] = 1 - edit.mask[i];
    renderMask();
    maskInfo();
    announce("Mask inverted");
  });
}

/** The mask as a PNG at the input's size: white = fill, black = keep. */
export function maskBlob() {
  const { width: w, height: h } = edit.image;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < edit.mask.length; i++) {
    const v = edit.mask[i] ? 255 : 0;
    img.data[4 * i] = v;
    img.data[4 * i + 1] = v;
    img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the mask could not be made into a PNG"))), "image/png"));
}

// ───────────────────────── the edit job ─────────────────────────

/** POST /v1/uploads; its "upload:<id>". */
export async function uploadBlob(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  form.append("purpose", "input"); // one job's input, not a data set (the Jobs tab lists data sets only)
  const res = await postForm("/v1/uploads", form);
  if (!res.ok) throw new ApiError(res.status, `upload ${name}: ${await errorDetail(res)}`);
  return (await res.json()).data;
}

/** The input as the server takes it: a PNG as it is (its pixels exactly); any other image — a JPEG too — as the
 * PNG of what the page shows, so that the mask painted over it lines up (a JPEG's EXIF rotation, which browsers
 * apply, is then in the pixels the server reads). */
export async function inputUpload() {
  const { file, name } = edit.image;
  const base = (name.replace(/\.[^.]*$/, "") || "input").slice(0, 80);
  if (file.type === "image/png") return uploadBlob(file, `${base}.png`);
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  return uploadBlob(png, `${base}.png`);
}

export function editParams() {
  const m = editRun();
  if (!m) throw new InputError(editRuns().length ? "Choose a diffusion run first" : "Editing needs a diffusion run: train a ddpm in the Jobs tab first");
  const t = editTask();
  if (!t) throw new InputError("Choose a task first");
  if (!edit.image) throw new InputError("Choose or drop an image to edit first");
  if (t.mask && !maskCount()) throw new InputError(`The mask is empty: paint the part of the image that ${t.name} should fill`);
  const p = { run_id: m.run_id, task: t.name, seed: intIn($("#edit-seed"), 0) ?? 0, options: optionValues() };
  const steps = intIn($("#edit-steps"), 1, 10000);
  if (steps !== undefined) p.steps = steps;
  if (t.sampler && $("#edit-sampler").value) p.sampler = $("#edit-sampler").value;
  if (m.conditional && $("#edit-class").value !== "") {
    p.class_label = Number($("#edit-class").value);
    const g = numberOrUndefined($("#edit-guidance"));
    if (g !== undefined) p.guidance = g;
  }
  return p;
}

export function setEditBusy(busy) {
  edit.busy = busy;
  const b = $("#edit-submit");
  b.disabled = busy || !editRun();
  b.textContent = busy ? "Editing…" : "Edit";
  b.setAttribute("aria-busy", String(busy));
}

export async function onEditSubmit(ev) {
  ev.preventDefault();
  if (edit.busy) return;
  await guard(async () => {
    const params = editParams();
    const t = editTask();
    const input = edit.image;
    setEditBusy(true);
    try {
      params.input = await inputUpload();
      if (t.mask) params.mask = await uploadBlob(await maskBlob(), "mask.png");
      const body = { kind: "edit", params };
      if (userName()) body.user = userName();
      const job = await api("/v1/jobs", { method: "POST", body });
      const final = await followEditJob(job, `${t.name} · ${input.name}`);
      const [id] = final.result?.generation_ids || [];
      if (!id) throw new Error(`Edit job ${short(final.id)} stored no result`);
      const g = await api(`/v1/generations/${encodeURIComponent(id)}`);
      showResult(g, input, final.result);
      await refreshGallery(); // the result is a generation like any other
    } finally {
      setEditBusy(false);
    }
  });
}

/** The job's badge, bar and phase line, live; resolves with the final job, or throws its error. */
export async function followEditJob(job, label) {
  const status = $("#edit-job-status");
  const bar = $("#edit-job-progress");
  const text = $("#edit-job-label");
  $("#edit-job").hidden = false;
  $("#edit-job").dataset.jobId = job.id;
  bar.removeAttribute("value");
  text.textContent = `${label} · job ${short(job.id)}`;
  setBadge(status, job.status);
  announce(`Edit job ${short(job.id)} ${job.status}`);
  const final = await followJob(job.id, {
    status: (d) => setBadge(status, d.status),
    progress: (d) => {
      setBar(bar, d, "running");
      text.textContent = `${label} · job ${short(job.id)} · ${progressText(d)}`;
    },
  });
  setBadge(status, final.status);
  setBar(bar, final.progress, final.status);
  if (final.status !== "succeeded") {
    const why = final.error || (final.status === "cancelled" ? "it was cancelled" : "no reason given");
    throw new Error(`Edit job ${short(final.id)} ${final.status}: ${why}`);
  }
  return final;
}

// ───────────────────────── before and after ─────────────────────────

export function showResult(g, input, result) {
  const box = $("#edit-result");
  box.hidden = false;
  box.dataset.generationId = g.id;
  if (edit.shown && edit.shown !== edit.image?.url) URL.revokeObjectURL(edit.shown);
  edit.shown = input.url;
  for (const id of ["#edit-before", "#edit-side-before"]) $(id).src = input.url;
  for (const id of ["#edit-after", "#edit-side-after"]) imageSrc($(id), g.image_url).catch(showError);
  const compare = $("#edit-compare");
  compare.style.aspectRatio = `${input.width} / ${input.height}`;
  const small = Math.max(input.width, input.height) < 256;
  box.classList.toggle("pixelated", small);
  for (const f of $$(".edit-frame", box)) f.style.aspectRatio = `${input.width} / ${input.height}`;
  setSplit(50);
  const download = $("#edit-download");
  download.href = g.download_url || g.image_url;
  download.download = `${g.id}.png`;
  $("#edit-recipe").onclick = () => showRecipe(g);
  const r = g.recipe || {};
  const size = r.model_size ?? null; // the result's side, in pixels (the model's size)
  const parts = [`${r.task ?? "edit"} with ${g.model}`, `seed ${r.seed ?? "?"}`];
  if (result?.model_calls != null) parts.push(`${result.model_calls} model calls`);
  if (size && (size !== input.width || size !== input.height)) {
    parts.push(`result at the model's ${size}×${size} px, shown stretched to the input's ${input.width}×${input.height}`);
  }
  $("#edit-result-note").textContent = parts.join(" · ");
  announce("Edit done: before and after shown");
}

export function setSplit(v) {
  $("#edit-split").value = String(v);
  $("#edit-after").style.clipPath = `inset(0 0 0 ${v}%)`;
  $("#edit-divider").style.left = `${v}%`;
}

/** Drag anywhere on the comparison to move the divider; the range input over it also takes the arrow keys. */
export function setupSlider() {
  const box = $("#edit-compare");
  const split = $("#edit-split");
  const follow = (ev) => {
    const r = box.getBoundingClientRect();
    setSplit(Math.round(Math.min(Math.max((100 * (ev.clientX - r.left)) / r.width, 0), 100)));
  };
  let dragging = null;
  box.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    ev.preventDefault();
    split.focus();
    box.setPointerCapture(ev.pointerId);
    dragging = ev.pointerId;
    follow(ev);
  });
  box.addEventListener("pointermove", (ev) => dragging === ev.pointerId && follow(ev));
  const end = (ev) => {
    if (dragging === ev.pointerId) dragging = null;
  };
  box.addEventListener("pointerup", end);
  box.addEventListener("pointercancel", end);
  split.addEventListener("input", () => setSplit(Number(split.value)));
}

// ───────────────────────── wiring ─────────────────────────

export function setupEdit() {
  const view = $("#view-edit");
  // The run list follows the model list (app.js refills #model-select whenever it loads the models).
  new MutationObserver(fillEditRuns).observe($("#model-select"), { childList: true });
  new MutationObserver(() => !view.hidden && fillEditRuns()).observe(view, { attributes: true, attributeFilter: ["hidden"] });
  $("#edit-run").addEventListener("change", onEditRunChange);
  $("#edit-task").addEventListener("change", onEditTaskChange);
  $("#edit-form").addEventListener("submit", onEditSubmit);
  $("#edit-file").addEventListener("change", (e) => {
    const file = e.target.files?.[0];
    guard(() => takeFile(file)).finally(() => (e.target.value = "")); // the same file may be chosen again
  });
  // A file dropped anywhere on the tab is its input (and never opens in the browser instead of the page).
  onDroppedFiles(view, $("#edit-drop"), (files) => guard(() => takeFile(files[0])));
  setupMaskCanvas();
  setupSlider();
  for (const r of $$('input[name="edit-view"]')) {
    r.addEventListener("change", () => {
      const side = $('input[name="edit-view"]:checked').value === "side";
      $("#edit-compare").hidden = side;
      $("#edit-side").hidden = !side;
    });
  }
  brushOut();
  if (location.hash === "#edit") $("#tab-edit").click();
}
