// The runner's API as the console calls it: the token from this tab's session storage, sent as a
// header on every call and never put in a URL; errors as the API words them.

const TOKEN_KEY = "kalla.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer: `status`, the API's `code` and its `message`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(body) {
  const all = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) all["Content-Type"] = "application/json";
  return all;
}

async function failure(response) {
  let code = "http_" + response.status;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    code = body.error.code;
    message = body.error.message;
  } catch {
    // Not the API's error body (a proxy's page): the status says enough.
  }
  return new ApiError(response.status, code, message);
}

async function send(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", `the runner cannot be reached (${error.message})`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

/** Calls the API; returns its JSON (or null for 204). */
export async function api(method, path, body) {
  const response = await send(method, path, body);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const put = (path, body) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);

/** Fetches `path` with the token and saves it as `filename`, through a blob: the URL the
 * browser saves from holds no token. */
export async function download(path, filename) {
  const response = await send("GET", path);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return blob.size;
}

/** A path with its query string; `null`/`undefined`/empty values are left out. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** A path segment, escaped. */
export const seg = encodeURIComponent;
