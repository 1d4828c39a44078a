// A sketch pad: white strokes on black, the way Fashion-MNIST pictures look. Pointer events
// cover mouse, touch and pen alike.

export function sketchPad(canvas, brushInput, brushOutput) {
  const ctx = canvas.getContext("2d");
  let last = null;
  let dirty = false;

  function clear() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    dirty = false;
  }

  // The canvas is scaled by CSS; map client coordinates back to its own pixels.
  function at(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * canvas.width) / box.width,
      y: ((event.clientY - box.top) * canvas.height) / box.height,
    };
  }

  function stroke(from, to) {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = Number(brushInput.value);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
    dirty = true;
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    stroke(last, last);
    event.preventDefault();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const point = at(event);
    stroke(last, point);
    last = point;
  });
  for (const name of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(name, () => (last = null));
  }

  brushInput.addEventListener("input", () => {
    brushOutput.value = `${brushInput.value} px`;
    brushInput.setAttribute("aria-valuetext", `${brushInput.value} pixels`);
  });

  clear();
  return {
    clear,
    isEmpty: () => !dirty,
    toBlob: () =>
      new Promise((resolve) => canvas.toBlob((blob) => resolve(new File([blob], "drawing.png", { type: "image/png" })), "image/png")),
  };
}
