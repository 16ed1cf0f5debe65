// The srkit serve page: pick or drop an image, POST it to /api/upscale, compare input and result.
// Plain JavaScript, no build step and nothing fetched from other sites.
"use strict";

const $ = (id) => document.getElementById(id);
const app = $("app");
const fileInput = $("file");
const drop = $("drop");
const modelSelect = $("model");
const faceSelect = $("face-model");
const upscaleButton = $("upscale");
const progress = $("progress");
const statusText = $("status");
const errorBox = $("error");
const output = $("output");
const compare = $("compare");
const result = $("result");
const before = $("before");
const divider = $("divider");
const download = $("download");

let file = null;
let beforeUrl = null;
let resultUrl = null;
let limits = null; // from /api/health: max_upload_bytes, max_pixels, ...
let models = [];
let position = 50; // divider, percent from the left
let busy = false;

function setState(state, text) {
  app.dataset.state = state;
  statusText.textContent = text;
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  progress.hidden = true;
  setState("error", "Failed.");
}

function clearError() {
  errorBox.textContent = "";
  errorBox.hidden = true;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function updateButton() {
  upscaleButton.disabled = busy || !file || models.length === 0;
}

async function readDetail(response) {
  // Errors are JSON {"detail": "..."}; anything else (a proxy's HTML page) is shown as text.
  const text = await response.text();
  try {
    const detail = JSON.parse(text).detail;
    return typeof detail === "string" ? detail : JSON.stringify(detail);
  } catch {
    return text.slice(0, 500) || response.statusText;
  }
}

async function loadServer() {
  try {
    const health = await fetch("/api/health");
    if (!health.ok) throw new Error(`/api/health: ${health.status} ${await readDetail(health)}`);
    limits = await health.json();
    showHealth(limits);
    $("limits").textContent =
      `This server takes up to ${formatBytes(limits.max_upload_bytes)} and ` +
      `${(limits.max_pixels / 1e6).toFixed(1)} megapixels per image.`;
    const listed = await fetch("/api/models");
    if (!listed.ok) throw new Error(`/api/models: ${listed.status} ${await readDetail(listed)}`);
    models = await listed.json();
    modelSelect.replaceChildren(
      ...models.map((m) => new Option(`${m.name} (×${m.scale})`, m.name)),
    );
    modelSelect.disabled = false;
    // Face models first (trained on faces), then the others: any model can upscale the face windows.
    const ordered = [...models.filter((m) => m.domain === "faces"), ...models.filter((m) => m.domain !== "faces")];
    faceSelect.replaceChildren(
      new Option("off", ""),
      ...ordered.map((m) => new Option(`${m.name}${m.domain === "faces" ? " (face model)" : ""}`, m.name)),
    );
    faceSelect.disabled = false;
    showModelInfo();
  } catch (err) {
    showError(`Cannot talk to the server: ${err.message}`);
  }
  updateButton();
}

function showHealth(h) {
  const load = h.jobs_running + h.jobs_waiting === 0
    ? "idle"
    : `busy: ${h.jobs_running} running, ${h.jobs_waiting} waiting`;
  $("server").textContent = `srkit ${h.version} · ${h.device} · ${load}`;
}

async function pollHealth() {
  if (document.hidden) return;
  try {
    const health = await fetch("/api/health");
    if (health.ok) showHealth(await health.json());
  } catch {
    $("server").textContent = "server not reachable";
  }
}

function showModelInfo() {
  const m = models.find((x) => x.name === modelSelect.value);
  $("model-info").textContent = m
    ? `${m.description} · ${m.params.toLocaleString()} parameters`
    : "";
}

function pickFile(picked) {
  if (!picked) return;
  clearError();
  file = picked;
  output.hidden = true;
  if (beforeUrl) URL.revokeObjectURL(beforeUrl);
  beforeUrl = URL.createObjectURL(file);
  before.hidden = false;
  $("before-note").hidden = true;
  before.src = beforeUrl;
  $("file-info").textContent = `${file.name} · ${formatBytes(file.size)}`;
  if (limits && file.size > limits.max_upload_bytes) {
    // No point sending it: the server would refuse it after the whole upload.
    file = null;
    showError(
      `${picked.name} is ${formatBytes(picked.size)}; this server accepts at most ` +
      `${formatBytes(limits.max_upload_bytes)} (max_upload_bytes).`,
    );
  } else {
    setState("ready", "Ready: press Upscale.");
  }
  updateButton();
}

function filenameFrom(disposition) {
  const star = /filename\*=UTF-8''([^;]+)/i.exec(disposition || "");
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="([^"]+)"/i.exec(disposition || "");
  return plain ? plain[1] : "upscaled.png";
}

function upscale() {
  if (!file || busy) return;
  clearError();
  busy = true;
  updateButton();
  const model = modelSelect.value;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", model);
  const faceModel = faceSelect.value;
  if (faceModel) form.append("face_model", faceModel);
  // XMLHttpRequest rather than fetch: it reports upload progress.
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/upscale");
  xhr.responseType = "blob";
  const started = performance.now();
  let timer = null;
  progress.hidden = false;
  progress.value = 0;
  setState("busy", "Uploading…");
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      progress.value = e.loaded / e.total;
      setState("busy", `Uploading ${Math.round((100 * e.loaded) / e.total)}%…`);
    }
  };
  xhr.upload.onload = () => {
    progress.removeAttribute("value"); // indeterminate while the server works
    const tick = () => {
      const s = ((performance.now() - started) / 1000).toFixed(1);
      setState("busy", `Upscaling with ${model}… ${s} s`);
    };
    tick();
    timer = setInterval(tick, 200);
  };
  const finish = () => {
    clearInterval(timer);
    busy = false;
    updateButton();
    pollHealth();
  };
  xhr.onload = async () => {
    finish();
    const response = new Response(xhr.response, { status: xhr.status });
    if (xhr.status !== 200) {
      let message = `${xhr.status} ${xhr.statusText}: ${await readDetail(response)}`;
      const retry = xhr.getResponseHeader("Retry-After");
      if (xhr.status === 503 && retry) message += `\nThe server is busy; try again in ${retry} s.`;
      showError(message);
      return;
    }
    showResult(xhr.response, {
      name: filenameFrom(xhr.getResponseHeader("Content-Disposition")),
      model: faceModel ? `${model} + faces: ${faceModel}` : model,
      faces: xhr.getResponseHeader("X-Faces"),
      elapsed: xhr.getResponseHeader("X-Elapsed-Seconds"),
      input: `${xhr.getResponseHeader("X-Input-Width")}×${xhr.getResponseHeader("X-Input-Height")}`,
    });
  };
  xhr.onerror = () => {
    finish();
    const hint = limits ? ` (the limit is ${formatBytes(limits.max_upload_bytes)})` : "";
    showError(`The upload failed: the connection was closed. Is the server running, and is the file within its size limit${hint}?`);
  };
  xhr.send(form);
}

function showResult(blob, info) {
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = URL.createObjectURL(blob);
  download.href = resultUrl;
  download.download = info.name;
  $("tag-model").textContent = info.model;
  result.onload = () => {
    output.hidden = false;
    $("result-info").textContent =
      `${info.input} → ${result.naturalWidth}×${result.naturalHeight} · ${info.model} · ` +
      (info.faces ? `faces: ${info.faces} · ` : "") +
      `${Number(info.elapsed).toFixed(2)} s · ${formatBytes(blob.size)}`;
    layout();
    progress.hidden = true;
    setState("done", `Done: ${info.name}`);
  };
  result.onerror = () => showError("The server's result could not be displayed by this browser.");
  result.src = resultUrl;
}

function layout() {
  // Both layers fill the same box, so the browser scales the input by the model's factor (and the zoom).
  const w = result.naturalWidth;
  const h = result.naturalHeight;
  if (!w || !h) return;
  const zoom = $("zoom").value;
  const viewport = $("viewport");
  let scale;
  if (zoom === "fit") {
    const maxH = Math.max(200, window.innerHeight * 0.7);
    scale = Math.min((viewport.clientWidth - 2) / w, maxH / h);
  } else {
    scale = Number(zoom);
  }
  compare.style.width = `${Math.round(w * scale)}px`;
  compare.style.height = `${Math.round(h * scale)}px`;
  // Magnified, the result shows its own pixels; shrunk, let the browser filter it.
  result.className = scale > 1 ? "pixelated" : "smooth";
  before.className = $("before-mode").value;
  setPosition(position);
}

function setPosition(percent) {
  position = Math.min(100, Math.max(0, percent));
  before.style.clipPath = `inset(0 ${100 - position}% 0 0)`;
  divider.style.left = `${position}%`;
  divider.setAttribute("aria-valuenow", String(Math.round(position)));
}

function positionFromEvent(e) {
  const box = compare.getBoundingClientRect();
  return ((e.clientX - box.left) / box.width) * 100;
}

// Divider: drag anywhere on the image, or use the arrow keys on the divider.
compare.addEventListener("pointerdown", (e) => {
  compare.setPointerCapture(e.pointerId);
  setPosition(positionFromEvent(e));
});
compare.addEventListener("pointermove", (e) => {
  if (compare.hasPointerCapture(e.pointerId)) setPosition(positionFromEvent(e));
});
divider.addEventListener("keydown", (e) => {
  const step = e.shiftKey ? 10 : 2;
  if (e.key === "ArrowLeft") setPosition(position - step);
  else if (e.key === "ArrowRight") setPosition(position + step);
  else return;
  e.preventDefault();
});

before.addEventListener("error", () => {
  // e.g. TIFF: the browser cannot show the input, but the server can still upscale it.
  if (!before.getAttribute("src")) return;
  before.hidden = true;
  $("before-note").hidden = false;
});

fileInput.addEventListener("change", () => pickFile(fileInput.files[0]));
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer.files.length) pickFile(e.dataTransfer.files[0]);
});
modelSelect.addEventListener("change", showModelInfo);
upscaleButton.addEventListener("click", upscale);
$("zoom").addEventListener("change", layout);
$("before-mode").addEventListener("change", layout);
window.addEventListener("resize", layout);

loadServer();
setInterval(pollHealth, 5000);
