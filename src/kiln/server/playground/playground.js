// Kiln playground: a client of this server's WebSocket task API, speaking it as the official JS
// SDK does: an authentication task first, then one task per frame, every reply item routed by its
// taskUUID. The page validates nothing itself: what the server refuses is shown as it was sent.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "kiln.apiKey";
const MODEL_STORAGE = "kiln.model";
const PREFERRED_MODEL = "kiln:shapes@1";
const PING_MS = 30000;

/** A UUID v4 (crypto.randomUUID exists only on https and localhost pages). */
function uuid4() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
}

/** An element with properties and children (strings become text, never HTML). */
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** An error the server sent (`error` is its object), or one of the page's own (no `code`). */
class TaskError extends Error {
  constructor(error) {
    super(error.message || error.code || "Unknown error");
    this.error = error;
  }
}

/** One authenticated WebSocket. `run` sends a task and hands each reply item to `onItem`. */
class Session {
  static open(apiKey) {
    const url = new URL("v1", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      socket.addEventListener("open", () => {
        socket.send(JSON.stringify([{ taskType: "authentication", apiKey }]));
      });
      socket.addEventListener("message", (event) => {
        const errors = JSON.parse(event.data).errors;
        if (errors && errors.length) {
          socket.close();
          reject(new TaskError(errors[0]));
        } else {
          resolve(new Session(socket));
        }
      }, { once: true });
      socket.addEventListener("close", () => {
        reject(new TaskError({ message: `The connection to ${url} closed before authentication.` }));
      });
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.closed = false;
    this.listeners = new Map(); // taskUUID -> {onItem, onError}
    socket.addEventListener("message", (event) => this.receive(JSON.parse(event.data)));
    socket.addEventListener("close", () => this.close("The connection to the server closed."));
    this.pinger = setInterval(() => socket.send(JSON.stringify([{ taskType: "ping", ping: true }])), PING_MS);
  }

  receive(message) {
    for (const item of message.data || []) {
      const listener = this.listeners.get(item.taskUUID);
      if (listener) listener.onItem(item);
    }
    for (const error of message.errors || []) {
      const listener = this.listeners.get(error.taskUUID);
      if (listener) listener.onError(error);
      else showError(new TaskError(error));
    }
  }

  /** Resolves with the item for which `onItem` returns true; rejects with the task's first error. */
  run(task, onItem = () => true) {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new TaskError({ message: "Not connected." }));
        return;
      }
      const finish = (settle, value) => {
        this.listeners.delete(task.taskUUID);
        settle(value);
      };
      this.listeners.set(task.taskUUID, {
        onItem: (item) => { if (onItem(item)) finish(resolve, item); },
        onError: (error) => finish(reject, new TaskError(error)),
      });
      this.socket.send(JSON.stringify([task]));
    });
  }

  close(reason) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pinger);
    for (const listener of this.listeners.values()) listener.onError({ message: reason });
    this.listeners.clear();
    this.socket.close();
  }
}

// ---- connection and models ----

const models = new Map(); // AIR -> modelSearch result
let connection = null; // {apiKey, promise of a Session whose models are loaded}

function setStatus(text) {
  $("connection").textContent = text;
}

/** The open session for the key in the key box, connecting (and loading the models) if needed. */
async function session() {
  const apiKey = $("api-key").value.trim();
  if (connection && connection.apiKey === apiKey) {
    const open = await connection.promise.catch(() => null);
    if (open && !open.closed) return open;
  }
  if (connection) connection.promise.then((old) => old.close("The API key changed."), () => {});
  setStatus("Connecting\u2026");
  const promise = Session.open(apiKey).then(async (opened) => {
    await loadModels(opened);
    return opened;
  });
  connection = { apiKey, promise };
  try {
    const opened = await promise;
    setStatus("Connected");
    return opened;
  } catch (error) {
    if (connection && connection.promise === promise) connection = null;
    setStatus("Not connected");
    throw error;
  }
}

async function searchModels(open, category) {
  const reply = await open.run({ taskType: "modelSearch", taskUUID: uuid4(), category, limit: 100 });
  return reply.results;
}

function fillSelect(select, results, preferred) {
  const previous = select.value;
  select.replaceChildren(...results.map((m) => el("option", { value: m.air, title: m.comment || "" }, m.air)));
  const airs = results.map((m) => m.air);
  select.value = [previous, ...preferred].find((air) => airs.includes(air)) || airs[0] || "";
}

async function loadModels(open) {
  const [checkpoints, controlnets] = await Promise.all([
    searchModels(open, "checkpoint"), searchModels(open, "controlnet"),
  ]);
  models.clear();
  for (const model of checkpoints) models.set(model.air, model);
  fillSelect($("model"), checkpoints, [localStorage.getItem(MODEL_STORAGE), PREFERRED_MODEL]);
  fillSelect($("controlnet-model"), controlnets, []);
  showModelDefaults();
}

/** Empty fields mean "the model's default": show those defaults as placeholders. */
function showModelDefaults() {
  const model = models.get($("model").value);
  if (!model) return;
  $("width").placeholder = model.defaultWidth;
  $("height").placeholder = model.defaultHeight;
  $("steps").placeholder = model.defaultSteps;
  $("cfg").placeholder = model.defaultCFG;
  $("scheduler").options[0].textContent = `model default (${model.defaultScheduler})`;
}

// ---- the form's limits, rendered by the server from its protocol module ----

function applyLimits() {
  let limits;
  try {
    limits = JSON.parse($("task-form").dataset.limits);
  } catch {
    return; // the page was opened as a file, not served by Kiln
  }
  for (const input of document.querySelectorAll("[data-limit]")) {
    const limit = limits[input.dataset.limit];
    if (!limit) continue;
    if (input.tagName === "SELECT") {
      for (const value of limit.allowed || []) input.add(new Option(value, value));
      continue;
    }
    if (limit.min !== undefined) input.min = limit.min;
    if (limit.max !== undefined) input.max = limit.max;
    input.step = limit.step || (limit.type === "integer" ? 1 : "any");
    if (limit.max !== undefined && limit.max <= Number.MAX_SAFE_INTEGER) {
      const hint = el("small", { id: `${input.id}-hint` },
        `${limit.min}\u2013${limit.max}` + (limit.step ? `, \u00d7${limit.step}` : ""));
      input.setAttribute("aria-describedby", hint.id);
      input.after(hint);
    }
  }
}

// ---- errors and progress ----

function showError(error) {
  const sent = error instanceof TaskError ? error.error : { message: String(error.message || error) };
  const line = el("p", {}, sent.code ? el("code", {}, sent.code) : "", sent.code ? " " : "", sent.message || "");
  const entry = el("div", { className: "error" }, line);
  if (sent.code) {
    entry.append(el("details", {}, el("summary", {}, "As sent by the server"),
      el("pre", {}, JSON.stringify(sent, null, 2))));
  }
  $("errors").append(entry);
}

/** The progress bar of one generation of `count` images. */
class Progress {
  constructor(count) {
    this.count = count;
    this.done = new Map(); // imageIndex -> fraction done
    this.set(0, "Waiting for the server\u2026");
  }

  set(percent, text) {
    const bar = $("progress");
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", text);
    bar.firstElementChild.style.width = `${percent}%`;
    $("progress-text").textContent = text;
  }

  update(fraction, index, text) {
    this.done.set(index, fraction);
    let sum = 0;
    for (const value of this.done.values()) sum += value;
    this.set(Math.min(100, Math.round((100 * sum) / this.count)), text);
  }

  step(item) {
    const index = item.imageIndex || 0;
    this.update(item.step / item.steps, index,
      `Image ${index + 1} of ${this.count}: step ${item.step} of ${item.steps}`);
    if (item.previewDataURI) {
      $("preview").src = item.previewDataURI;
      $("preview").hidden = false;
    }
  }

  // results arrive in the order of their imageIndex
  image(received) {
    this.update(1, received - 1, `${received} of ${this.count} images`);
    $("preview").hidden = true;
  }

  fail() {
    this.set(0, "Failed.");
    $("preview").hidden = true;
  }
}

// ---- seed image and mask ----

let seed = null; // {image: a UUID or data URI, painted: bool}
const brush = { x: 0, y: 0, down: false };

async function setSeed(image, src) {
  const img = $("seed-image");
  img.src = src;
  await img.decode();
  const mask = $("mask");
  mask.width = img.naturalWidth;
  mask.height = img.naturalHeight;
  seed = { image, painted: false };
  brush.x = mask.width / 2;
  brush.y = mask.height / 2;
  $("seed-area").hidden = false;
  $("seed-panel").open = true;
  mask.focus();
}

function removeSeed() {
  seed = null;
  $("seed-area").hidden = true;
  $("seed-file").value = "";
}

function brushRadius() {
  const mask = $("mask");
  return (Number($("brush").value) * mask.width) / mask.getBoundingClientRect().width / 2;
}

function paint(fromX, fromY, toX, toY) {
  const context = $("mask").getContext("2d");
  context.strokeStyle = "#fff";
  context.lineCap = "round";
  context.lineWidth = brushRadius() * 2;
  context.beginPath();
  context.moveTo(fromX, fromY);
  context.lineTo(toX, toY);
  context.stroke();
  seed.painted = true;
}

function canvasPoint(event) {
  const mask = $("mask");
  const box = mask.getBoundingClientRect();
  return [(event.clientX - box.left) * mask.width / box.width, (event.clientY - box.top) * mask.height / box.height];
}

function showBrush() {
  const mask = $("mask");
  const cursor = $("brush-cursor");
  const radius = brushRadius();
  cursor.style.left = `${(100 * (brush.x - radius)) / mask.width}%`;
  cursor.style.top = `${(100 * (brush.y - radius)) / mask.height}%`;
  cursor.style.width = `${(200 * radius) / mask.width}%`;
  cursor.style.height = `${(200 * radius) / mask.height}%`;
  cursor.hidden = false;
}

function setUpMask() {
  const mask = $("mask");
  mask.addEventListener("pointerdown", (event) => {
    mask.setPointerCapture(event.pointerId);
    [brush.x, brush.y] = canvasPoint(event);
    brush.down = true;
    paint(brush.x, brush.y, brush.x, brush.y);
  });
  mask.addEventListener("pointermove", (event) => {
    const [x, y] = canvasPoint(event);
    if (brush.down) paint(brush.x, brush.y, x, y);
    [brush.x, brush.y] = [x, y];
  });
  for (const type of ["pointerup", "pointercancel"]) mask.addEventListener(type, () => { brush.down = false; });
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  mask.addEventListener("keydown", (event) => {
    const move = moves[event.key];
    if (move) {
      const distance = Math.max(1, brushRadius());
      brush.x = Math.min(mask.width, Math.max(0, brush.x + move[0] * distance));
      brush.y = Math.min(mask.height, Math.max(0, brush.y + move[1] * distance));
    } else if (event.key === " ") {
      paint(brush.x, brush.y, brush.x, brush.y);
    } else {
      return;
    }
    event.preventDefault();
    showBrush();
  });
  mask.addEventListener("focus", showBrush);
  mask.addEventListener("blur", () => { $("brush-cursor").hidden = true; });
  $("clear-mask").addEventListener("click", () => {
    mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
    if (seed) seed.painted = false;
  });
  $("remove-seed").addEventListener("click", removeSeed);
}

/** The painted mask as the protocol wants it: white repaints, black keeps. */
function maskDataURI() {
  const mask = $("mask");
  const out = el("canvas", { width: mask.width, height: mask.height });
  const context = out.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, out.width, out.height);
  context.drawImage(mask, 0, 0);
  return out.toDataURL("image/png");
}

// ---- ControlNet guide ----

let guideSource = null; // the image to preprocess: a UUID or data URI
let guide = null; // the preprocessed guide's UUID

async function preprocess() {
  const button = $("preprocess");
  button.setAttribute("aria-busy", "true");
  try {
    const open = await session();
    const item = await open.run({
      taskType: "imageControlNetPreProcess", taskUUID: uuid4(), inputImage: guideSource ?? undefined,
      preProcessorType: $("preprocessor").value, outputType: "dataURI", outputFormat: "PNG",
    });
    guide = item.guideImageUUID;
    $("guide-image").src = item.guideImageDataURI;
    $("guide-area").hidden = false;
  } catch (error) {
    showError(error);
  } finally {
    button.removeAttribute("aria-busy");
  }
}

function removeGuide() {
  guide = null;
  $("guide-area").hidden = true;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// ---- generating ----

function numberField(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

function imageInferenceTask() {
  const task = {
    taskType: "imageInference",
    taskUUID: uuid4(),
    model: $("model").value,
    positivePrompt: $("prompt").value,
    negativePrompt: $("negative-prompt").value.trim() || undefined,
    width: numberField("width"),
    height: numberField("height"),
    steps: numberField("steps"),
    CFGScale: numberField("cfg"),
    scheduler: $("scheduler").value || undefined,
    seed: numberField("seed"),
    numberResults: numberField("number-results"),
    outputType: "dataURI",
    outputFormat: "PNG",
    includeCost: true,
    progress: true, // Kiln's extension: step items before the images
    progressPreviews: true,
  };
  if (seed) {
    task.seedImage = seed.image;
    task.strength = numberField("strength");
    if (seed.painted) task.maskImage = maskDataURI();
  }
  if (guide) {
    task.controlNet = [{ model: $("controlnet-model").value, guideImage: guide, weight: numberField("controlnet-weight") }];
  }
  return task;
}

function addToGallery(run, item, prompt) {
  const download = el("a", { href: item.imageDataURI, download: `kiln-${item.imageUUID}.png` }, "Download");
  const asSeed = el("button", { type: "button" }, "Use as seed image");
  asSeed.addEventListener("click", () => setSeed(item.imageUUID, item.imageDataURI).catch(showError));
  const asGuide = el("button", { type: "button" }, "Use as ControlNet source");
  asGuide.addEventListener("click", () => {
    guideSource = item.imageUUID;
    $("controlnet-panel").open = true;
    $("preprocessor").focus();
  });
  const details = [`seed ${item.seed}`];
  if (item.cost !== undefined) details.push(`$${item.cost}`);
  run.append(el("figure", {},
    el("img", { src: item.imageDataURI, alt: prompt }),
    el("figcaption", {}, details.join(" \u00b7 ")),
    el("div", { className: "actions" }, download, asSeed, asGuide)));
}

async function generate(event) {
  event.preventDefault();
  $("errors").replaceChildren();
  let progress = null;
  try {
    const open = await session();
    const task = imageInferenceTask();
    const count = task.numberResults || 1;
    progress = new Progress(count);
    const run = el("div", { className: "run" }); // newest run first, its images in order
    $("gallery").prepend(run);
    let received = 0;
    await open.run(task, (item) => {
      if (item.imageUUID) {
        addToGallery(run, item, task.positivePrompt);
        progress.image(++received);
        return received >= count;
      }
      if (item.status === "processing" && item.steps) progress.step(item);
      return false;
    });
  } catch (error) {
    if (progress) progress.fail();
    showError(error);
  }
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  applyLimits();
  setUpMask();
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("input", () => localStorage.setItem(KEY_STORAGE, key.value.trim()));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("errors").replaceChildren();
    session().catch(showError);
  });
  if (key.value) session().catch(showError);

  $("model").addEventListener("change", () => {
    localStorage.setItem(MODEL_STORAGE, $("model").value);
    showModelDefaults();
  });
  $("task-form").addEventListener("submit", generate);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("task-form").requestSubmit();
    }
  });

  $("seed-file").addEventListener("change", async () => {
    const file = $("seed-file").files[0];
    if (!file) return;
    try {
      const data = await readFile(file);
      const open = await session();
      const item = await open.run({ taskType: "imageUpload", taskUUID: uuid4(), image: data });
      await setSeed(item.imageUUID, data);
    } catch (error) {
      showError(error);
    }
  });
  $("guide-file").addEventListener("change", async () => {
    const file = $("guide-file").files[0];
    if (file) guideSource = await readFile(file).catch((error) => { showError(error); return null; });
  });
  $("preprocess").addEventListener("click", preprocess);
  $("remove-guide").addEventListener("click", removeGuide);
});
