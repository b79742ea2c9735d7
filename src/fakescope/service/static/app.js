// fakescope page: each chosen or dropped file becomes a card, is sent to v1/detect on its own
// (the server batches concurrent requests), and shows its verdict, score bar and heatmap.
// Plain DOM, no libraries; server text is only ever set with textContent.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const PARALLEL = 4;            // uploads in flight at once; the rest wait their turn
const queue = [];
let running = 0;
let limits = null;             // from v1/models: checked here too, so a huge file is refused before upload
let ready = false;

function apiHeaders() {
  const key = $("#apikey").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function notice(text) {
  const n = $("#notice");
  n.textContent = text || "";
  n.hidden = !text;
}

function mb(bytes) {
  return (bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 2 : 1) + " MB";
}

// ------------------------------------------------------------------ server state
async function waitReady() {
  for (;;) {
    try {
      const r = await fetch("readyz", { cache: "no-store" });
      if (r.ok) break;
      const body = await r.json().catch(() => null);
      $("#model").textContent = (body && body.error && body.error.detail) || "Model loading…";
    } catch (e) {
      $("#model").textContent = "Cannot reach the server; retrying…";
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
  ready = true;
  await loadModels();
  pump();
}

async function loadModels() {
  const r = await fetch("v1/models", { headers: apiHeaders(), cache: "no-store" });
  if (r.status === 401) {
    $("#key-row").hidden = false;
    $("#model").textContent = "This server needs an API key.";
    notice("Enter the API key above, then choose your images.");
    return;
  }
  if (!r.ok) return;
  const info = await r.json();
  const d = info.detector;
  limits = info.limits;
  $("#model").textContent = `${d.id} v${d.version} · threshold ${d.threshold.toFixed(3)}` +
    (info.localizer ? " · heatmaps on" : " · no localiser loaded");
  $("#localize-row").hidden = !info.localizer;
  $("#legend").hidden = !info.localizer;
  $("#limits").textContent = `Up to ${mb(limits.max_upload_bytes)} and ` +
    `${(limits.max_pixels / 1e6).toFixed(0)} megapixels per image. ` +
    (info.keeps_uploads ? "This server keeps a copy of each image." : "Images are not stored.");
  if ($("#key-row").hidden === false) notice("");
}

// ------------------------------------------------------------------ cards
function newCard(file) {
  const card = $("#card-template").content.firstElementChild.cloneNode(true);
  $(".name", card).textContent = file.name || "(unnamed)";
  $(".name", card).title = file.name || "";
  const photo = $(".photo", card);
  const url = URL.createObjectURL(file);
  photo.addEventListener("load", () => {
    if (photo.naturalWidth < 256 && photo.naturalHeight < 256) $(".figure", card).classList.add("pixelated");
  });
  photo.addEventListener("error", () => {   // a format the browser cannot show (TIFF, HEIC, or not an image)
    photo.hidden = true;
    $(".nopreview", card).hidden = false;
  });
  photo.src = url;
  const slider = $(".opacity input", card);
  slider.addEventListener("input", () => { $(".heat", card).style.opacity = slider.value / 100; });
  $("#cards").prepend(card);
  $("#clear").hidden = false;
  return card;
}

function setState(card, state) {
  card.classList.remove("pending", "fake", "real", "uncertain", "rejected");
  card.classList.add(state);
}

function reject(card, title, text) {
  setState(card, "rejected");
  $(".verdict", card).textContent = title;
  const m = $(".message", card);
  m.textContent = text;
  m.hidden = false;
}

function show(card, res) {
  const state = res.label === "fake" || res.label === "uncertain" ? res.label : "real";
  setState(card, state);
  $(".verdict", card).textContent = state === "fake" && res.edited ? "Likely AI-edited (a region)"
    : {fake: "Likely AI-generated", uncertain: "Uncertain", real: "Likely real"}[state];
  if (res.reason) {  // why it says uncertain, or why a score above the threshold still reads "real"
    const m = $(".message", card);
    m.textContent = res.reason;
    m.hidden = false;
  }
  const meter = $(".meter", card);
  $(".fill", meter).style.width = (100 * res.score).toFixed(1) + "%";
  const mark = $(".mark", meter);
  mark.style.left = `calc(${(100 * res.threshold).toFixed(1)}% - 1px)`;
  mark.style.display = "block";
  meter.setAttribute("aria-valuenow", res.score.toFixed(3));
  let numbers = `P(fake) ${res.score.toFixed(3)} · threshold ${res.threshold.toFixed(3)}`;
  if (res.overlay_png) {
    const heat = $(".heat", card);
    heat.src = "data:image/png;base64," + res.overlay_png;
    heat.style.opacity = $(".opacity input", card).value / 100;
    heat.hidden = false;
    $(".opacity", card).hidden = false;
    numbers += ` · edit map ${res.map_score.toFixed(3)}`;
    if (res.edit_threshold != null) numbers += ` (an edit from ${res.edit_threshold.toFixed(3)})`;
  } else if (res.map_error) {
    numbers += " · no heatmap: " + res.map_error;
  }
  if (res.video) numbers += ` · video: ${res.video.frames.length} frames, max ${res.video.max.toFixed(3)}`;
  if (res.experts) {  // a fused detector: which kind of evidence spoke (null: the expert did not run on it)
    numbers += " · experts: " + Object.entries(res.experts)
      .map(([name, p]) => `${name} ${p === null ? "not run" : p.toFixed(3)}`).join(", ");
  }
  $(".numbers", card).textContent = numbers;
  showProvenance(card, res.provenance);
}

// What the file says about its own origin, beside the pixel score (never "real" from its absence).
function showProvenance(card, p) {
  if (!p) return;
  const box = $(".provenance", card);
  let text = "Provenance: " + p.summary;
  if (p.c2pa && !p.c2pa.valid) text += ` · C2PA manifest present but ${p.c2pa.validation_state.toLowerCase()}: not trusted`;
  if (p.notes && p.notes.length) text += " · notes: " + p.notes.join("; ");
  box.textContent = text;
  box.classList.toggle("claim", p.status === "ai_claim");
  box.hidden = false;
}

// Plain words for the server's error codes, when it gives no detail of its own.
const REASONS = {
  not_an_image: "Not an image fakescope can read",
  truncated: "The image is truncated or corrupt",
  empty: "The file is empty",
  too_large: "The file is too large",
  too_many_pixels: "The image has too many pixels",
  video_too_long: "The video is too long",
  video_unsupported: "Not a video fakescope can read",
  video_corrupt: "The video is corrupt",
  unauthorized: "API key missing or wrong",
  timeout: "The server took too long",
  not_ready: "The model is still loading",
  busy: "The server is busy",
};

async function detect(file, card) {
  $(".verdict", card).textContent = "Scoring…";
  // the same limits the server applies: videos have their own byte limit
  const max = file.type.startsWith("video/") && limits && limits.max_video_bytes ? limits.max_video_bytes
    : limits && limits.max_upload_bytes;
  if (max && file.size > max) {
    reject(card, "Rejected", `${REASONS.too_large}: ${mb(file.size)}, the limit is ${mb(max)}.`);
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  const localize = !$("#localize-row").hidden && $("#localize").checked;
  let r, body;
  try {
    r = await fetch(`v1/detect?localize=${localize}`, { method: "POST", headers: apiHeaders(), body: form });
    body = await r.json();
  } catch (e) {
    reject(card, "Failed", "No answer from the server (" + e.message + ").");
    return;
  }
  if (r.ok) {
    show(card, body);
    return;
  }
  const err = (body && body.error) || { code: "http_" + r.status, detail: r.statusText };
  if (err.code === "unauthorized") {
    $("#key-row").hidden = false;
    $("#apikey").focus();
  }
  const title = r.status >= 500 ? "Failed" : "Rejected";
  const text = err.detail ? err.detail.charAt(0).toUpperCase() + err.detail.slice(1) : REASONS[err.code] || "Refused";
  reject(card, title, `${text} (${err.code})`);
}

function pump() {
  while (ready && running < PARALLEL && queue.length) {
    const { file, card } = queue.shift();
    running += 1;
    detect(file, card).finally(() => { running -= 1; pump(); });
  }
}

function addFiles(files) {
  for (const file of files) {
    const card = newCard(file);
    queue.push({ file, card });
  }
  pump();
}

// ------------------------------------------------------------------ wiring
function init() {
  const drop = $("#drop");
  const input = $("#files");
  input.addEventListener("change", () => { addFiles(Array.from(input.files)); input.value = ""; });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    addFiles(Array.from(e.dataTransfer.files));
  });
  // A file dropped beside the zone must not make the browser navigate away to it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  const key = $("#apikey");
  key.value = sessionStorage.getItem("fakescope-api-key") || "";
  key.addEventListener("change", () => {
    sessionStorage.setItem("fakescope-api-key", key.value.trim());  // this tab only, gone when it closes
    if (ready) loadModels();
  });
  $("#clear").addEventListener("click", () => {
    for (const img of document.querySelectorAll("#cards .photo")) URL.revokeObjectURL(img.src);
    $("#cards").replaceChildren();
    $("#clear").hidden = true;
  });
  waitReady();
}

init();
