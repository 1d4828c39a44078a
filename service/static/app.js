// The page: wires the picture sources (file, drop, paste, camera, drawing) to the API and the
// results to the DOM. No framework and no build step: ES modules served as they are.

import { ApiError, classify, getKey, listModels, setKey } from "./api.js";
import { camera } from "./camera.js";
import { sketchPad } from "./draw.js";
import {
  describePreprocessing,
  drawTile,
  percent,
  renderFeatureMaps,
  renderPredictions,
} from "./render.js";

const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  model: null, // the selected model's description from GET /v1/models
  picture: null, // the last Blob classified, kept for the heat-map label picker
  originalUrl: null,
  retry: null, // what to run again once the user has entered an API key
  tile: null, // {map, img, channel} shown in the dialog
};

// ---- messages -------------------------------------------------------------------------------

function say(text) {
  $("status").textContent = text;
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

// The service's own sentence, in parentheses after ours.
function detail(err) {
  return err.message ? ` (${err.message.replace(/\.$/, "")}).` : ".";
}

function explain(err) {
  if (!(err instanceof ApiError)) return `Something went wrong in the page: ${err.message || err}`;
  switch (err.status) {
    case 0:
      return err.message;
    case 401:
      return getKey()
        ? "The API key was not accepted. Check it and enter it again."
        : "This server needs an API key. Enter it below.";
    case 413:
      return `That picture is too large for this server${detail(err)}`;
    case 415:
      return `That file is not a picture this service can read; try PNG, JPEG, WebP, GIF, BMP or TIFF${detail(err)}`;
    case 400:
      return `The picture could not be read${detail(err)}`;
    case 404:
      return `Not found${detail(err)}`;
    case 422:
      return `The service refused the request${detail(err)}`;
    default:
      return err.status >= 500
        ? `The service failed (${err.status}). Try again in a moment.`
        : err.message;
  }
}

// Shows an API error; a 401 opens the key field and remembers what to retry after it.
function fail(err, retry) {
  say("");
  showError(explain(err));
  if (err instanceof ApiError && err.status === 401) {
    state.retry = retry;
    $("key-panel").hidden = false;
    $("api-key").focus();
  }
}

// ---- models ---------------------------------------------------------------------------------

function modelFacts(model) {
  const facts = [["Version", model.version]];
  const acc = model.metrics?.test_accuracy;
  if (typeof acc === "number") {
    const n = model.metrics.test_size ? ` on ${model.metrics.test_size.toLocaleString("en")} test pictures` : "";
    facts.push(["Test accuracy", `${percent(acc)}${n}`]);
  }
  if (typeof model.metrics?.ece === "number") facts.push(["Calibration error", percent(model.metrics.ece)]);
  const inp = model.input;
  if (inp) {
    const bg = inp.background ? `, ${inp.background} background` : "";
    facts.push(["Input", `${inp.width}×${inp.height} ${inp.mode === "L" ? "gray" : "colour"}, ${inp.resize}${bg}`]);
  }
  if (model.layers) facts.push(["Layers", model.layers.map((l) => l.name).join(" → ")]);
  facts.push(["Heat map", camKind(model.cam)]);
  return facts;
}

// What kind of map the model's `cam` is, in words (GET /v1/models says it).
function camKind(cam) {
  if (!cam) return "none (this model has no class-activation map)";
  if (cam.kind === "exact") return `exact class-activation map on ${cam.layer}`;
  return `approximation on ${cam.layer} (gradient-free, the same for every class)`;
}

function selectModel(name) {
  state.model = state.models.find((m) => m.name === name) || null;
  const info = $("model-info");
  info.replaceChildren();
  if (!state.model) return;
  for (const [term, value] of modelFacts(state.model)) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    info.append(dt, dd);
  }
  const labels = state.model.labels || [];
  $("label-list").replaceChildren(
    ...labels.map((label) => Object.assign(document.createElement("li"), { textContent: label })),
  );
  $("model-labels").hidden = labels.length === 0;
  $("model-labels").querySelector("summary").textContent = `Labels (${labels.length})`;
  $("top-k").max = String(Math.max(1, labels.length));
  fillCamLabels(labels);
  const cam = state.model.cam;
  $("cam-panel").hidden = !cam;
  // An approximate map is the same for every class: nothing to choose.
  $("cam-choice").hidden = !cam || cam.kind !== "exact";
  $("cam-kind").textContent = cam ? `Kind: ${camKind(cam)}.` : "";
}

function fillCamLabels(labels) {
  const select = $("cam-label");
  select.replaceChildren(new Option("the top label", ""), ...labels.map((l) => new Option(l, l)));
}

async function loadModels() {
  const select = $("model");
  let listing;
  try {
    listing = await listModels();
  } catch (err) {
    select.replaceChildren(new Option("(not loaded)"));
    fail(err, loadModels);
    return false;
  }
  showError("");
  state.models = listing.models || [];
  const previous = state.model ? state.model.name : listing.default;
  select.replaceChildren(...state.models.map((m) => new Option(`${m.name} (v${m.version})`, m.name)));
  select.disabled = state.models.length === 0;
  if (state.models.length === 0) {
    showError("The service has no models loaded.");
    return false;
  }
  if (state.models.some((m) => m.name === previous)) select.value = previous;
  selectModel(select.value);
  return true;
}

// ---- classification -------------------------------------------------------------------------

// What the field says, kept between 1 and the number of labels.
function topK() {
  const most = state.model?.labels?.length || 10;
  const k = Number.parseInt($("top-k").value, 10);
  const clamped = Number.isFinite(k) ? Math.min(Math.max(k, 1), most) : Math.min(5, most);
  $("top-k").value = String(clamped);
  return clamped;
}

async function run(picture) {
  if (!state.model && !(await loadModels())) {
    state.retry = () => run(picture);
    return;
  }
  showError("");
  say("Classifying…");
  $("results").setAttribute("aria-busy", "true");
  const featureMaps = $("show-maps").checked;
  const camLabel = state.model.cam ? $("cam-label").value || true : false;
  let body;
  try {
    body = await classify(state.model.name, picture, { topK: topK(), featureMaps, cam: camLabel });
  } catch (err) {
    $("results").removeAttribute("aria-busy");
    fail(err, () => run(picture));
    return;
  }
  state.picture = picture;
  show(body.results[0], picture, featureMaps);
}

function show(result, picture, featureMaps) {
  const results = $("results");
  results.hidden = false;
  results.removeAttribute("aria-busy");

  renderPredictions($("predictions"), result.predictions);
  const top = result.predictions[0];
  say(top ? `Top label: ${top.label} (${percent(top.probability)}).` : "No predictions.");

  if (state.originalUrl) URL.revokeObjectURL(state.originalUrl);
  state.originalUrl = URL.createObjectURL(picture);
  $("original").src = state.originalUrl;
  $("network-input").src = result.input_image || "";
  const prep = result.preprocessing || result.preprocess || null;
  $("network-caption").textContent = prep?.inverted ? "Network input (inverted)" : "Network input";
  $("prep-note").textContent = describePreprocessing(prep, state.model);

  showCam(result.cam);

  $("maps-section").hidden = !featureMaps;
  if (featureMaps) renderFeatureMaps($("maps"), result.feature_maps || [], openTile);
}

function showCam(cam) {
  const img = $("cam");
  img.hidden = !cam;
  $("cam-caption").textContent = !cam
    ? ""
    : cam.kind === "exact"
      ? `Where the network found “${cam.label}” (exact class-activation map on ${cam.layer}): red is strongest.`
      : `Where the network looked: an approximation (${cam.method}), on ${cam.layer}; red is strongest.`;
  img.dataset.kind = cam ? cam.kind : "";
  if (cam) {
    img.src = cam.image;
    img.alt = cam.kind === "exact"
      ? `Class-activation heat map for ${cam.label} over the network input`
      : `Approximate heat map of where the network looked, over the network input`;
  }
}

async function changeCamLabel() {
  if (!state.picture || !state.model?.cam) return;
  say("Drawing the heat map…");
  try {
    const body = await classify(state.model.name, state.picture, {
      topK: 1,
      featureMaps: false,
      cam: $("cam-label").value || true,
    });
    showCam(body.results[0].cam);
    say(`Heat map for ${body.results[0].cam?.label}.`);
  } catch (err) {
    fail(err, changeCamLabel);
  }
}

// ---- the enlarged tile ----------------------------------------------------------------------

function openTile(map, img, channel) {
  state.tile = { map, img, channel };
  paintTile();
  const dialog = $("tile-dialog");
  if (!dialog.open) dialog.showModal();
}

function paintTile() {
  const { map, img, channel } = state.tile;
  drawTile($("tile-canvas"), img, map, channel);
  $("tile-title").textContent = `${map.layer}, channel ${channel + 1} of ${map.grid.channels}`;
  $("tile-canvas").setAttribute("aria-label", `Enlarged ${map.layer} channel ${channel + 1}`);
}

function stepTile(delta) {
  if (!state.tile) return;
  const n = state.tile.map.grid.channels;
  state.tile.channel = (state.tile.channel + delta + n) % n;
  paintTile();
}

// ---- picture sources ------------------------------------------------------------------------

function firstImage(files) {
  return [...(files || [])].find((f) => f && f.size >= 0) || null;
}

function wireSources() {
  $("file").addEventListener("change", (event) => {
    const file = firstImage(event.target.files);
    if (file) run(file);
    event.target.value = ""; // choosing the same file again still fires "change"
  });

  // Drops anywhere on the page count, so a near miss does not navigate away to the file.
  const drop = $("drop");
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) drop.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = firstImage(event.dataTransfer?.files);
    if (file) run(file);
  });

  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.items || [])]
      .filter((item) => item.kind === "file")
      .map((item) => item.getAsFile())
      .find(Boolean);
    if (file) {
      event.preventDefault();
      run(file);
    }
  });

  camera(
    {
      box: $("camera-box"),
      start: $("camera-start"),
      video: $("camera-video"),
      controls: $("camera-controls"),
      shoot: $("camera-shoot"),
      stop: $("camera-stop"),
    },
    run,
    showError,
  );

  const pad = sketchPad($("sketch"), $("brush"), $("brush-size"));
  $("draw-clear").addEventListener("click", () => pad.clear());
  $("draw-classify").addEventListener("click", async () => {
    if (pad.isEmpty()) {
      showError("Draw something first.");
      return;
    }
    run(await pad.toBlob());
  });
}

// ---- start ----------------------------------------------------------------------------------

function wireKey() {
  $("api-key").value = getKey();
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    setKey($("api-key").value.trim());
    showError("");
    const retry = state.retry;
    state.retry = null;
    if (!state.models.length) {
      if (!(await loadModels())) return;
    }
    say("Key saved for this tab.");
    if (retry && retry !== loadModels) retry();
  });
  $("key-forget").addEventListener("click", () => {
    setKey("");
    $("api-key").value = "";
    say("Key forgotten.");
  });
  if (getKey()) $("key-panel").hidden = false;
}

function wireDialog() {
  $("tile-prev").addEventListener("click", () => stepTile(-1));
  $("tile-next").addEventListener("click", () => stepTile(1));
  $("tile-dialog").addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") stepTile(-1);
    if (event.key === "ArrowRight") stepTile(1);
  });
}

$("model").addEventListener("change", (event) => selectModel(event.target.value));
// Small pictures (a 28x28 drawing or test picture) upscale as crisp squares, photos smoothly.
$("original").addEventListener("load", (event) => {
  event.target.classList.toggle("pixelated", event.target.naturalWidth < 160);
});
$("cam-label").addEventListener("change", changeCamLabel);
wireKey();
wireSources();
wireDialog();
loadModels();
