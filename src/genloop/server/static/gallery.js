// The gallery's workbench: a lightbox (an output at full size with its recipe, arrows to move, a download), a zip
// of the selected cards (POST /v1/generations/archive), "Use these settings" (a generation's settings back in
// the generate form), named presets per model (/v1/presets, kept by the server) and the prompt's warnings
// (cut to fit the context, unknown characters) from a text job's result, shown beside the generate panel.
// It hooks into the core through app.js's `hooks` (cards, model changes, finished generate jobs).

import {
  $,
  ApiError,
  InputError,
  announce,
  api,
  askToken,
  audioPlayer,
  authHeaders,
  controlsForm,
  currentModel,
  el,
  errorDetail,
  generationParams,
  guard,
  hooks,
  icon,
  imageSrc,
  short,
  showError,
  state,
  userName,
} from "./app.js";

const gallery = {
  selected: new Set(), // generation ids ticked for the zip
  data: new WeakMap(), // card element -> its generation
  box: { cards: [], index: 0 }, // the lightbox: the cards it steps through, and which one shows
  presets: [], // the chosen model's presets
};

export function setupGallery() {
  hooks.card.push(decorateCard);
  hooks.model.push((m) => guard(() => loadPresets(m)));
  hooks.generated.push(showPromptNotes);
  buildZipBar();
  buildLightbox();
  buildPresets();
  buildNotice();
}

// ───────────────────────── cards ─────────────────────────

/** Each card gets: its media opening the lightbox, "Use settings", and a tick for the zip. */
export function decorateCard(card, g) {
  gallery.data.set(card, g);
  const media = $(".card-media", card);
  const opener = $("img, .gen-text", media);
  if (opener) {
    opener.classList.add("lightbox-opener");
    opener.title = "Open at full size with its recipe";
    if (opener.tagName === "IMG") opener.tabIndex = 0;
    opener.addEventListener("click", () => openLightbox(card));
    opener.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || (e.key === " " && opener.tagName === "IMG")) {
        e.preventDefault();
        openLightbox(card);
      }
    });
  }
  const actions = $(".card-actions", card);
  if (g.settings) {
    actions.insertBefore(
      el("button", { type: "button", class: "link", "data-testid": "use-settings", title: "Fill the generate form with this generation's settings", onclick: () => guard(() => useSettings(g)) }, "Use settings"),
      $('[data-testid="download-link"]', card),
    );
  }
  const tick = el("input", { type: "checkbox", "data-testid": "zip-pick", "aria-label": "Select for the zip download" });
  tick.checked = gallery.selected.has(g.id);
  tick.addEventListener("change", () => selectForZip(g.id, tick.checked));
  const zip = el("label", { class: "zip-pick", title: "Select for “Download selected as zip”" }, tick, " Zip");
  actions.append(el("span", { class: "card-ticks" }, $(".ab-pick", card), zip)); // the two ticks wrap together
}

// ───────────────────────── the zip ─────────────────────────

function buildZipBar() {
  const bar = $("#view-gallery .toolbar");
  bar.append(
    el("span", { class: "toolbar-break", "aria-hidden": "true" }),
    el("button", { type: "button", id: "zip-download", class: "secondary", "data-testid": "zip-download", disabled: true, onclick: () => guard(downloadZip) }, icon("download"), el("span", { id: "zip-label", text: "Download selected (0) as zip" })),
    el("button", { type: "button", id: "zip-clear", class: "ghost", "data-testid": "zip-clear", hidden: true, onclick: clearZip }, "Clear selection"),
  );
}

export function selectForZip(id, on) {
  if (on) gallery.selected.add(id);
  else gallery.selected.delete(id);
  for (const c of state.cards.get(id) || []) {
    const tick = $('[data-testid="zip-pick"]', c);
    if (tick) tick.checked = on;
  }
  const n = gallery.selected.size;
  $("#zip-label").textContent = `Download selected (${n}) as zip`;
  $("#zip-download").disabled = n === 0;
  $("#zip-clear").hidden = n === 0;
}

function clearZip() {
  for (const id of [...gallery.selected]) selectForZip(id, false);
  announce("Selection cleared");
}

/** POST the ticked ids; the server streams a zip of their signed files and recipes.jsonl, saved as a file. */
export async function downloadZip() {
  const ids = [...gallery.selected];
  if (!ids.length) throw new InputError("Tick Zip on the cards to download first");
  const button = $("#zip-download");
  button.disabled = true;
  try {
    const res = await fetch("/v1/generations/archive", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json", Accept: "application/zip" }),
      body: JSON.stringify({ ids }),
    });
    if (res.status === 401 || res.status === 403) askToken("This server needs an API token.");
    if (!res.ok) throw new Error(`Download of ${ids.length} generation${ids.length === 1 ? "" : "s"} as zip failed (${res.status}): ${await errorDetail(res)}`);
    const name = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "")?.[1] || "genloop-generations.zip";
    saveBlob(await res.blob(), name);
    announce(`Downloading ${ids.length} generation${ids.length === 1 ? "" : "s"} as ${name}`);
  } finally {
    button.disabled = gallery.selected.size === 0;
  }
}

function saveBlob(blob, name) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

// ───────────────────────── the lightbox ─────────────────────────

function buildLightbox() {
  const dlg = el(
    "dialog",
    { id: "lightbox", class: "dialog lightbox", "data-testid": "lightbox", "aria-labelledby": "lightbox-title" },
    el(
      "div",
      { class: "lightbox-frame" },
      el(
        "header",
        { class: "dialog-head" },
        el("h2", { id: "lightbox-title" }),
        el("span", { id: "lightbox-position", class: "muted small", "data-testid": "lightbox-position" }),
        el("button", { type: "button", class: "icon-button", "aria-label": "Close", "data-testid": "lightbox-close", onclick: () => dlg.close() }, icon("close")),
      ),
      el(
        "div",
        { class: "lightbox-body" },
        el("div", { id: "lightbox-media", class: "lightbox-media", "data-testid": "lightbox-media" }),
        el(
          "aside",
          { class: "lightbox-side" },
          el("h3", { text: "Recipe" }),
          el("pre", { id: "lightbox-recipe", class: "json", "data-testid": "lightbox-recipe", tabindex: "0" }),
        ),
      ),
      el(
        "footer",
        { class: "dialog-foot lightbox-foot" },
        el("button", { type: "button", id: "lightbox-prev", class: "ghost", "data-testid": "lightbox-prev", "aria-keyshortcuts": "ArrowLeft", onclick: () => step(-1) }, "Previous"),
        el("button", { type: "button", id: "lightbox-next", class: "ghost", "data-testid": "lightbox-next", "aria-keyshortcuts": "ArrowRight", onclick: () => step(1) }, "Next"),
        el("span", { class: "muted small kbd-hint", text: "← → to move, Esc to close" }),
        el("span", { class: "spacer" }),
        el("button", { type: "button", id: "lightbox-use", class: "secondary", "data-testid": "lightbox-use", onclick: () => guard(useFromLightbox) }, "Use these settings"),
        el("a", { id: "lightbox-download", class: "button primary", "data-testid": "lightbox-download", download: "" }, icon("download"), " Download"),
      ),
    ),
  );
  // on the document: a button that turns disabled at the end of the list drops the focus out of the dialog
  document.addEventListener("keydown", (e) => {
    if (!dlg.open || e.target.closest?.("input, textarea, select")) return;
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      e.preventDefault();
      step(e.key === "ArrowLeft" ? -1 : 1);
    }
  });
  dlg.addEventListener("click", (e) => e.target === dlg && dlg.close()); // a click on the backdrop closes it
  document.body.append(dlg);
}

/** Open the lightbox on a card; it steps through the cards of the same grid, in their order. */
export function openLightbox(card) {
  const grid = card.parentElement;
  gallery.box.cards = grid ? [...grid.children].filter((c) => gallery.data.has(c)) : [card];
  gallery.box.index = Math.max(0, gallery.box.cards.indexOf(card));
  showInLightbox();
  const dlg = $("#lightbox");
  if (!dlg.open) dlg.showModal();
  $("#lightbox-next").focus();
}

function step(by) {
  const { cards } = gallery.box;
  const live = cards.filter((c) => c.isConnected);
  if (!live.length) return;
  const at = live.indexOf(cards[gallery.box.index]);
  gallery.box.cards = live;
  gallery.box.index = Math.min(Math.max((at < 0 ? 0 : at) + by, 0), live.length - 1);
  showInLightbox();
}

function showInLightbox() {
  const { cards, index } = gallery.box;
  const g = gallery.data.get(cards[index]);
  const label = `${g.model} · seed ${g.recipe?.seed ?? "?"}`;
  $("#lightbox").dataset.id = g.id;
  $("#lightbox-title").textContent = `${g.model} · ${short(g.id)}`;
  $("#lightbox-position").textContent = `${index + 1} of ${cards.length}`;
  const lost = document.activeElement;
  $("#lightbox-prev").disabled = index === 0;
  $("#lightbox-next").disabled = index === cards.length - 1;
  if (lost?.disabled) $(lost.id === "lightbox-next" ? "#lightbox-prev" : "#lightbox-next").focus(); // keep focus inside
  const media = $("#lightbox-media");
  media.className = "lightbox-media";
  if (g.audio_url) {
    media.replaceChildren(audioPlayer(g, label));
  } else if (g.has_image && g.image_url) {
    const img = el("img", { alt: `Generated ${label}, full size`, "data-testid": "lightbox-image" });
    const size = el("p", { class: "muted small", "data-testid": "lightbox-size" });
    img.addEventListener("load", () => (size.textContent = `${img.naturalWidth} × ${img.naturalHeight} px, shown enlarged`), { once: true });
    imageSrc(img, g.image_url).catch(showError);
    media.replaceChildren(img, size);
  } else {
    media.classList.add("text");
    const pre = el("pre", { class: "gen-text", "data-testid": "lightbox-text", tabindex: "0" });
    if (g.prompt) pre.append(el("span", { class: "prompt", text: g.prompt }));
    const completion = g.text ?? "";
    pre.append(g.prompt && completion.startsWith(g.prompt) ? completion.slice(g.prompt.length) : completion);
    media.replaceChildren(pre);
  }
  $("#lightbox-recipe").textContent = JSON.stringify(
    { generation_id: g.id, run_id: g.run_id, checkpoint: g.checkpoint, checkpoint_sha256: g.checkpoint_sha256, recipe: g.recipe },
    null,
    2,
  );
  const download = $("#lightbox-download");
  download.hidden = !g.download_url;
  if (g.download_url) download.href = g.download_url;
  $("#lightbox-use").hidden = !g.settings;
}

async function useFromLightbox() {
  const g = gallery.data.get(gallery.box.cards[gallery.box.index]);
  $("#lightbox").close();
  await useSettings(g);
}

// ───────────────────────── settings into the form ─────────────────────────

// The image form's inputs by generate-job param (the text form's below); what a form has no input for is named.
const IMAGE_INPUTS = { n: "#img-n", seed: "#img-seed", class_label: "#img-class", sampler: "#img-sampler", steps: "#img-steps", guidance: "#img-guidance" };
const TEXT_INPUTS = { prompt: "#txt-prompt", n: "#txt-n", seed: "#txt-seed", max_tokens: "#txt-max-tokens", temperature: "#txt-temperature", top_k: "#txt-top-k", top_p: "#txt-top-p", repetition_penalty: "#txt-rep", stop: "#txt-stop" };
// Optional inputs: a generation or preset without them means "the default", so they are emptied.
const OPTIONAL = new Set(["class_label", "sampler", "steps", "guidance", "stop"]);

/** "Use these settings": the generation's model chosen, its settings in the form. */
export async function useSettings(g) {
  const left = fillForm(g.settings);
  const note = left.length ? ` (this form has no field for ${left.join(", ")})` : "";
  announce(`Settings of generation ${short(g.id)} are in the form${note}`);
  $("#generate-form").scrollIntoView({ block: "nearest" });
}

/** Choose ``params.run_id`` (if given) and fill the form with ``params``; returns the keys with a value that no
 * field shows (a default such as 0 or an empty list does not count). */
export function fillForm(params) {
  const sel = $("#model-select");
  if (params.run_id && sel.value !== params.run_id) {
    if (!state.models.some((m) => m.run_id === params.run_id)) {
      throw new InputError(`The model ${params.run_id} is not among this server's models any more`);
    }
    sel.value = params.run_id;
    sel.dispatchEvent(new Event("change")); // the core builds the model's form (and follows the A/B model)
  }
  const m = currentModel();
  if (!m) throw new InputError("Choose a model first");
  const form = controlsForm(m);
  const placed = new Set(["run_id"]);
  const put = (selector, key) => {
    const input = $(selector);
    if (!input) return;
    const v = params[key];
    if (v === undefined || v === null) {
      if (OPTIONAL.has(key)) input.value = "";
      return;
    }
    input.value = key === "stop" ? v.map((s) => s.replace(/\n/g, "\\n").replace(/\t/g, "\\t")).join(", ") : String(v);
    if (input.tagName === "SELECT" && input.value !== String(v)) return; // not an option of this model: named below
    placed.add(key);
  };
  if (form === "image-controls") {
    for (const [key, selector] of Object.entries(IMAGE_INPUTS)) put(selector, key);
    if (params.checkpoint) {
      const radio = $(`input[name="img-checkpoint"][value="${params.checkpoint}"]`);
      if (radio && !radio.disabled) {
        radio.checked = true;
        placed.add("checkpoint");
      }
    }
  } else if (form === "text-controls") {
    for (const [key, selector] of Object.entries(TEXT_INPUTS)) put(selector, key);
  } else if (form === "descriptor-controls") {
    for (const c of m.controls) if (c.type !== "upload") put(`#ctl-${c.name}`, c.name);
  }
  const trivial = (v) => v === null || v === 0 || v === false || v === "" || v === "last" || (typeof v === "object" && !Object.keys(v).length);
  return Object.keys(params).filter((k) => !placed.has(k) && !trivial(params[k]));
}

// ───────────────────────── presets ─────────────────────────

function buildPresets() {
  const box = el(
    "div",
    { id: "presets", class: "presets", "data-testid": "presets", hidden: true },
    el("div", { class: "field" }, el("label", { for: "preset-select", text: "Presets of this model" }),
      el(
        "div",
        { class: "preset-row" },
        el("select", { id: "preset-select", "data-testid": "preset-select" }),
        el("button", { type: "button", id: "preset-apply", class: "secondary", "data-testid": "preset-apply", onclick: () => guard(applyPreset) }, "Apply"),
        el("button", { type: "button", id: "preset-delete", class: "danger", "data-testid": "preset-delete", onclick: () => guard(deletePreset) }, "Delete"),
      ),
    ),
    el("div", { class: "field" }, el("label", { for: "preset-name", text: "Save the form as a preset" }),
      el(
        "div",
        { class: "preset-row" },
        el("input", { id: "preset-name", "data-testid": "preset-name", type: "text", maxlength: "64", placeholder: "Name, e.g. Sharp, 50 steps", autocomplete: "off" }),
        el("button", { type: "button", id: "preset-save", class: "secondary", "data-testid": "preset-save", onclick: () => guard(savePreset) }, "Save"),
      ),
    ),
  );
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && e.target.id === "preset-name") {
      e.preventDefault(); // not the generate form's submit
      guard(savePreset);
    }
  });
  $("#model-info").after(box);
}

export async function loadPresets(m = currentModel()) {
  const box = $("#presets");
  box.hidden = !m || controlsForm(m) === null;
  if (box.hidden) return;
  const data = await api(`/v1/presets?run_id=${encodeURIComponent(m.run_id)}`);
  if (currentModel()?.run_id !== m.run_id) return; // the model changed while this loaded
  gallery.presets = data.presets || [];
  const sel = $("#preset-select");
  const prev = sel.value;
  sel.replaceChildren(
    el("option", { value: "", text: gallery.presets.length ? "Choose a preset…" : "No presets yet" }),
    ...gallery.presets.map((p) => el("option", { value: p.id, text: p.name })),
  );
  if (gallery.presets.some((p) => p.id === prev)) sel.value = prev;
  $("#preset-apply").disabled = $("#preset-delete").disabled = !gallery.presets.length;
}

function chosenPreset() {
  const p = gallery.presets.find((x) => x.id === $("#preset-select").value);
  if (!p) throw new InputError("Choose a preset first");
  return p;
}

export async function savePreset() {
  const name = $("#preset-name").value.trim();
  if (!name) throw new InputError("Give the preset a name");
  const { run_id: runId, ...params } = generationParams();
  const u = userName();
  let saved;
  try {
    saved = await api("/v1/presets", { method: "POST", body: { run_id: runId, name, params, ...(u ? { user: u } : {}) } });
  } catch (e) {
    // a name already taken, a value the server refuses: the user's to fix, said in the banner (not a page error)
    if (e instanceof ApiError && (e.status === 409 || e.status === 422)) throw new InputError(`Preset not saved: ${e.message}`);
    throw e;
  }
  $("#preset-name").value = "";
  await loadPresets();
  $("#preset-select").value = saved.id;
  announce(`Preset “${saved.name}” saved`);
}

export async function applyPreset() {
  const p = chosenPreset();
  const left = fillForm({ ...p.params, run_id: p.run_id });
  announce(`Preset “${p.name}” applied${left.length ? ` (this form has no field for ${left.join(", ")})` : ""}`);
}

export async function deletePreset() {
  const p = chosenPreset();
  await api(`/v1/presets/${encodeURIComponent(p.id)}`, { method: "DELETE" });
  await loadPresets();
  announce(`Preset “${p.name}” deleted`);
}

// ───────────────────────── the prompt's warnings ─────────────────────────

function buildNotice() {
  $("#gen-job").after(el("div", { id: "gen-notes", class: "notice warn", "data-testid": "gen-notes", role: "status", hidden: true }));
  $("#generate-form").addEventListener("submit", () => ($("#gen-notes").hidden = true));
}

/** A text job's result names what it did to the prompt (cut to the context, unknown characters): shown as a note,
 * not an error (the generation happened). */
export function showPromptNotes(job) {
  const box = $("#gen-notes");
  const notes = job.status === "succeeded" ? job.result?.warnings || [] : [];
  box.hidden = !notes.length;
  box.replaceChildren(...(notes.length ? [el("strong", { text: "Note on the prompt" }), el("ul", {}, ...notes.map((n) => el("li", { text: n })))] : []));
  if (notes.length) announce(`Note on the prompt: ${notes.join("; ")}`);
}
