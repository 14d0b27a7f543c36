// Data sets of one's own, in the Jobs tab: drop (or choose) a zip of a folder of images, several images, a .txt or
// .jsonl text, or a MIDI file; it goes to POST /v1/uploads, the answer says what the server stored (kind, files,
// size, image sizes or text lines, files skipped) and which model families can train on it, and the upload joins the
// train form's data set choices as "upload:<id>". GET /v1/uploads lists the stored ones, so they are back after a
// reload. Which family fits which data is the server's answer (it asks the modalities), never guessed here.

import {
  $,
  InputError,
  announce,
  api,
  el,
  errorDetail,
  fillSelect,
  guard,
  onDroppedFiles,
  postForm,
  short,
  showError,
  state,
} from "./app.js";

const SHOWN = 20; // uploads listed in the panel (the newest); the train form offers the same ones

/** 12345 -> "12.1 KB": a size people read. */
export function fmtBytes(n) {
  if (!Number.isFinite(n)) return "";
  if (n < 1000) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let v = n / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** What the server said it stored, as one line: "zip · 48 images · 8×8 px · 8.5 KB · 1 other file skipped". */
export function uploadFacts(u) {
  const imageLike = Array.isArray(u.sizes);
  const parts = u.kind === "images" ? [] : [u.kind]; // "images · 2 images" would say it twice
  if (imageLike) parts.push(`${u.files} image${u.files === 1 ? "" : "s"}`);
  else if (u.lines !== undefined) parts.push(`${u.lines} line${u.lines === 1 ? "" : "s"}`);
  else parts.push(`${u.files} file${u.files === 1 ? "" : "s"}`);
  if (imageLike && u.sizes.length) parts.push(`${u.sizes.map((s) => s.replace("x", "×")).join(", ")} px${u.sizes.length > 1 ? " (mixed)" : ""}`);
  parts.push(fmtBytes(u.bytes));
  if (u.skipped) parts.push(`${u.skipped} other file${u.skipped === 1 ? "" : "s"} skipped`);
  return parts.join(" · ");
}

/** A train job's data as people know it: an upload by its file name, a built-in set by its own name. */
export const dataName = (data) => (state.uploads || []).find((u) => u.data === data)?.filename ?? data;

const uploadLabel = (u) => `${u.filename} (upload ${short(u.upload_id)})`;

/** The train form's data set choices: the built-in sets, then the uploads (kept when the model list reloads). */
export function fillTrainData() {
  state.uploadChoices = state.uploads.map((u) => [u.data, uploadLabel(u)]);
  fillSelect($("#train-data"), [...state.datasets.map((d) => [d, d]), ...state.uploadChoices]);
}

/** Choose ``u`` in the train form; when the chosen family cannot train on it, the first one that can. */
export function trainOn(u) {
  fillTrainData();
  $("#train-data").value = u.data;
  const family = $("#train-family");
  if (u.families?.length && !u.families.includes(family.value)) {
    const fit = u.families.find((f) => [...family.options].some((o) => o.value === f));
    if (fit) family.value = fit;
  }
  $("#train-steps").focus();
  announce(`Training on ${u.filename}: choose the steps and press Start training`);
}

function renderUploads() {
  const list = $("#data-list");
  list.replaceChildren(
    ...state.uploads.slice(0, SHOWN).map((u) =>
      el(
        "li",
        { class: "data-item", "data-testid": "data-item", "data-upload": u.data },
        el(
          "div",
          { class: "data-main" },
          el("div", { class: "data-name", title: u.filename, text: u.filename }),
          el("div", { class: "muted small", "data-testid": "data-facts", text: uploadFacts(u) }),
          el(
            "div",
            { class: "muted small data-families", "data-testid": "data-families" },
            u.families?.length ? `Trains: ${u.families.join(", ")}` : "No model family here trains on this data",
          ),
        ),
        el("button", { type: "button", class: "secondary", "data-testid": "data-use", disabled: !u.families?.length, onclick: () => trainOn(u) }, "Train on this"),
      ),
    ),
  );
  $("#data-empty").hidden = state.uploads.length > 0;
}

export async function loadUploads() {
  const data = await api(`/v1/uploads?purpose=data&limit=${SHOWN}`); // not the inputs of edits or MIDI prompts
  state.uploads = data.uploads || [];
  renderUploads();
  fillTrainData();
}

/** POST the files as one upload (several files: each an image, one data set); show and choose what came back. */
export async function uploadFiles(files) {
  if (!files.length) return;
  const zone = $("#data-drop");
  const form = new FormData();
  for (const f of files) form.append("file", f);
  form.append("purpose", "data");
  const what = files.length === 1 ? files[0].name : `${files.length} files`;
  zone.setAttribute("aria-busy", "true");
  $("#data-status").textContent = `Uploading ${what}…`;
  try {
    const res = await postForm("/v1/uploads", form);
    // the server's one line says what is wrong with the file: the user's to fix, not a fault of the page
    if (!res.ok) throw new InputError(`Upload of ${what} refused: ${await errorDetail(res)}`);
    const u = await res.json();
    state.uploads = [u, ...state.uploads.filter((x) => x.upload_id !== u.upload_id)];
    renderUploads();
    trainOn(u);
    $("#data-status").textContent = `Stored ${u.filename}: ${uploadFacts(u)}`;
  } catch (e) {
    $("#data-status").textContent = "";
    throw e;
  } finally {
    zone.removeAttribute("aria-busy");
    $("#data-file").value = "";
  }
}

export function setupDatasets() {
  state.uploads = [];
  state.uploadChoices = [];
  const zone = $("#data-drop");
  const input = $("#data-file");
  input.addEventListener("change", () => guard(() => uploadFiles([...(input.files || [])])));
  onDroppedFiles(zone, zone, (files) => guard(() => uploadFiles(files)));
  $("#data-refresh").addEventListener("click", () => guard(loadUploads));
  $("#tab-jobs").addEventListener("click", () => guard(loadUploads)); // stored meanwhile by another page or a script
  loadUploads().catch(showError);
}
