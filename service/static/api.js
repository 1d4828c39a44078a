// The service's HTTP API as a few functions. URLs are relative to the page, so the page keeps
// working when a proxy serves it under a path prefix.

const KEY_STORE = "convscope.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

async function call(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const key = getKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(new URL(path, document.baseURI), { ...init, headers });
  } catch {
    throw new ApiError(0, "network", "The service cannot be reached. Is it running?");
  }
  if (response.ok) return response;
  // Every error the service sends is {"error": {"code", "message"}}; a proxy's may not be.
  let code = `http_${response.status}`;
  let message = `The service answered ${response.status} ${response.statusText}.`;
  try {
    const body = await response.json();
    if (body && body.error) ({ code = code, message = message } = body.error);
    else if (body && body.detail) message = typeof body.detail === "string" ? body.detail : message;
  } catch {
    /* not JSON: keep the generic sentence */
  }
  throw new ApiError(response.status, code, message);
}

// {default: name, models: [{name, version, labels, input, layers, metrics, ...}]}
export async function listModels() {
  return (await call("v1/models")).json();
}

export async function classify(model, blob, { topK = 5, featureMaps = true, cam = true } = {}) {
  // input_image: the page shows the pixels the network saw; API clients rarely need them.
  const query = new URLSearchParams({
    top_k: String(topK),
    feature_maps: String(featureMaps),
    input_image: "true",
  });
  query.set("cam", cam === true ? "true" : String(cam));
  const form = new FormData();
  form.append("file", blob, blob.name || "picture.png");
  const response = await call(`v1/models/${encodeURIComponent(model)}/classify?${query}`, {
    method: "POST",
    body: form,
  });
  return response.json();
}
