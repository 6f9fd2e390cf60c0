// The REST API, as any client uses it: the session cookie, JSON bodies (the server's rule for
// cookie writes), and the error envelope turned into an Error carrying its fields.

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.errors = (body && body.errors) || [];
    this.body = body;
  }
}

export async function api(method, path, body, { raw = false, headers = {} } = {}) {
  const init = { method, credentials: "same-origin", headers: { "Content-Type": "application/json", ...headers } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(`/api/v1${path}`, init);
  if (raw) return response;
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// One entity with its revision (the ETag), for the next If-Match.
export async function revisioned(method, path, body, headers = {}) {
  const response = await api(method, path, body, { raw: true, headers });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return { entity: data, etag: response.headers.get("ETag") };
}

export async function page(path) {
  const response = await api("GET", path, undefined, { raw: true });
  const data = await response.json();
  if (!response.ok) throw new ApiError(response.status, data);
  const link = response.headers.get("Link");
  const next = link && /<([^>]+)>;\s*rel="next"/.exec(link);
  return { items: data, next: next ? next[1].replace(/^\/api\/v1/, "") : null };
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
