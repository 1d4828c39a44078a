// Turns one classification result into DOM: bars, the input pair, the heat map and the
// feature-map grids with a clickable, keyboard-reachable button over every tile.

const MIN_TILE_PX = 44; // shown tile size to aim for: big enough to see and to tap

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("aria-") || key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function percent(p) {
  return `${(100 * p).toFixed(1)} %`;
}

export function renderPredictions(list, predictions) {
  list.replaceChildren(
    ...predictions.map((p, i) =>
      el(
        "li",
        { class: i === 0 ? "first" : "" },
        el("span", { class: "bar-label" }, p.label),
        el("span", { class: "bar-value" }, percent(p.probability)),
        el(
          "span",
          { class: "bar", "aria-hidden": "true" },
          el("span", { class: "bar-fill", style: { width: `${Math.max(0.5, 100 * p.probability)}%` } }),
        ),
      ),
    ),
  );
}

const RESIZE = {
  none: (size) => `already ${size}, not resized`,
  pad: (size) => `scaled to fit ${size} and padded`,
  crop: (size) => `scaled and centre-cropped to ${size}`,
  stretch: (size) => `stretched to ${size}`,
};

// What the service did to the picture before the network saw it, in a sentence or two.
export function describePreprocessing(prep, spec) {
  if (!prep) return "";
  const inp = spec?.input;
  const steps = [];
  if (prep.frames > 1) steps.push(`first of ${prep.frames} frames used`);
  if (prep.exif_rotated) steps.push("turned upright per its EXIF orientation");
  if (prep.scaled_16bit) steps.push("16-bit samples scaled to 8 bits");
  if (prep.alpha_flattened) steps.push("transparent parts filled in");
  if (inp) {
    const mode = inp.mode === "L" ? "gray" : "colour";
    if (prep.mode && prep.mode !== inp.mode && !(inp.mode === "RGB" && prep.mode === "RGBA")) {
      steps.push(`converted to ${mode}`);
    }
    const size = `${inp.width}×${inp.height}`;
    if (!prep.framing?.applied) steps.push((RESIZE[prep.resize] || ((s) => `resized to ${s}`))(size));
  }
  let sentence = `Received ${prep.format} ${prep.width}×${prep.height}`;
  if (steps.length) sentence += `; ${steps.join(", ")}`;
  sentence += ".";
  const framed = describeFraming(prep.framing, inp);
  if (framed) sentence += ` ${framed}`;
  if (prep.inverted) {
    sentence +=
      " Inverted: the picture has a light background, so the service flipped it to light on dark, like the pictures the model learned from.";
  }
  return sentence;
}

// The "trim" framing policy (photos framed the way the training pictures were), in sentences.
function describeFraming(framing, inp) {
  if (!framing?.applied) return "";
  const [lo, hi] = framing.background_range || [];
  const [x0, y0, x1, y1] = framing.box || [];
  const [w, h] = framing.object_size || [];
  const steps = [];
  steps.push(
    `Framed like the training pictures: a ${framing.background} background (levels ${lo}–${hi}` +
      `${hi - lo > 20 ? ", unevenly lit" : ""}) flattened and brought to black`,
  );
  if (framing.box) steps.push(`the object trimmed to its box (${x1 - x0}×${y1 - y0} px at ${x0}, ${y0})`);
  if (w && inp) steps.push(`scaled to ${w}×${h} and centred in ${inp.width}×${inp.height}`);
  if (framing.sharpened) steps.push("sharpened");
  if (framing.gain > 1) steps.push(`contrast ×${framing.gain}`);
  let text = `${steps.join(", ")}.`;
  if (framing.reason) text += ` (${framing.reason}.)`;
  return text;
}

// Tile geometry inside a grid image. The grid may have a gap between tiles and a margin around
// them; when the service does not say, infer the gap from the image's size.
function tileBox(grid, index, naturalWidth) {
  const { cols, tile } = grid;
  const margin = grid.margin ?? grid.border ?? 0;
  let gap = grid.gap ?? grid.padding ?? null;
  if (gap === null) gap = cols > 1 ? Math.max(0, (naturalWidth - 2 * margin - cols * tile) / (cols - 1)) : 0;
  const row = Math.floor(index / cols);
  const col = index % cols;
  return { x: margin + col * (tile + gap), y: margin + row * (tile + gap), size: tile };
}

export function layerCaption(map) {
  const shape = Array.isArray(map.shape) ? map.shape.join("×") : map.shape;
  const bits = [map.kind];
  if (map.kernel) bits.push(`kernel ${map.kernel}×${map.kernel}`);
  if (map.stride !== undefined) bits.push(`stride ${map.stride}`);
  if (map.padding !== undefined) bits.push(`padding ${map.padding}`);
  return `${bits.join(", ")} → ${shape}`;
}

export function renderFeatureMaps(container, maps, openTile) {
  container.replaceChildren();
  for (const map of maps) {
    const grid = map.grid;
    const img = el("img", {
      class: "grid-img pixelated",
      src: map.image,
      alt: `${map.layer}: ${grid.channels} channels as a ${grid.rows}×${grid.cols} grid`,
      "data-layer": map.layer,
    });
    const wrap = el("div", { class: "grid-wrap" }, img);
    const figure = el(
      "figure",
      { class: "layer", "data-layer": map.layer },
      el("figcaption", {}, el("strong", {}, map.layer), " ", el("span", { class: "spec" }, layerCaption(map))),
      el("div", { class: "grid-scroll" }, wrap),
    );
    container.append(figure);

    const place = () => {
      const W = img.naturalWidth;
      const H = img.naturalHeight;
      if (!W || !H) return;
      // Show tiles at least MIN_TILE_PX wide where the screen allows; CSS caps it at 100 %.
      const scale = Math.max(1, Math.ceil(MIN_TILE_PX / grid.tile));
      img.style.width = `${W * scale}px`;
      const buttons = [];
      for (let c = 0; c < grid.channels; c++) {
        const box = tileBox(grid, c, W);
        const button = el("button", {
          type: "button",
          class: "tile",
          "aria-label": `${map.layer} channel ${c + 1} of ${grid.channels}: enlarge`,
          style: {
            left: `${(100 * box.x) / W}%`,
            top: `${(100 * box.y) / H}%`,
            width: `${(100 * box.size) / W}%`,
            height: `${(100 * box.size) / H}%`,
          },
        });
        button.tabIndex = c === 0 ? 0 : -1;
        button.addEventListener("click", () => openTile(map, img, c));
        buttons.push(button);
      }
      // One tab stop per layer; arrow keys, Home and End move between its tiles.
      wrap.addEventListener("keydown", (event) => {
        const from = buttons.indexOf(document.activeElement);
        if (from < 0) return;
        const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -grid.cols, ArrowDown: grid.cols };
        let to = from + (step[event.key] ?? 0);
        if (event.key === "Home") to = 0;
        if (event.key === "End") to = buttons.length - 1;
        if (to === from || to < 0 || to >= buttons.length) return;
        event.preventDefault();
        buttons[from].tabIndex = -1;
        buttons[to].tabIndex = 0;
        buttons[to].focus();
      });
      wrap.append(...buttons);
    };
    if (img.complete && img.naturalWidth) place();
    else img.addEventListener("load", place, { once: true });
  }
}

// Crop one channel's tile from the grid image onto the dialog's canvas, without smoothing, so
// every activation stays a crisp square.
export function drawTile(canvas, img, map, channel) {
  const box = tileBox(map.grid, channel, img.naturalWidth);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(img, box.x, box.y, box.size, box.size, 0, 0, canvas.width, canvas.height);
}
