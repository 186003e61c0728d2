// The API client: bearer token on every call, and conditional GETs. Each URL's last ETag and body
// are kept; the next GET sends If-None-Match and a 304 reuses the body, so a poll that finds
// nothing new costs an empty answer. `changed` tells the caller whether to redraw and announce.

export class AuthError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(base, provider) {
    this.base = base.replace(/\/+$/, "");
    this.provider = provider;
    this.cache = new Map(); // url -> { etag, text, data }
  }

  url(path) {
    return this.base + path;
  }

  async headers(extra = {}) {
    const headers = { Accept: "application/json", ...extra };
    const token = await this.provider.getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  // { data, changed } for a 200 or a 304; throws AuthError (401/403) or ApiError (anything else).
  async getJson(path) {
    const url = this.url(path);
    const cached = this.cache.get(url);
    const extra = cached && cached.etag ? { "If-None-Match": cached.etag } : {};
    let response;
    try {
      // With our own If-None-Match, "no-store": the 304 reaches this code instead of being turned
      // into a 200 by the HTTP cache. Without an ETag we can read (the first GET, or a cross-origin
      // API that does not expose it), "no-cache": the browser revalidates its cached copy itself.
      const cache = cached && cached.etag ? "no-store" : "no-cache";
      response = await fetch(url, { headers: await this.headers(extra), cache });
    } catch (err) {
      throw new ApiError(0, "network", `The API could not be reached (${err.message}).`);
    }
    if (response.status === 304 && cached) return { data: cached.data, changed: false };
    const text = await response.text();
    if (response.status === 401 || response.status === 403) {
      throw new AuthError(response.status, errorOf(text).message);
    }
    if (!response.ok) {
      const error = errorOf(text);
      throw new ApiError(response.status, error.code, error.message);
    }
    const data = JSON.parse(text);
    const changed = !cached || cached.text !== text;
    this.cache.set(url, { etag: response.headers.get("ETag"), text, data });
    return { data, changed };
  }

  // The CSV as a Blob, fetched with the token (a plain link cannot carry the Authorization header).
  async getBlob(path) {
    const response = await fetch(this.url(path), { headers: await this.headers({ Accept: "text/csv" }) });
    if (response.status === 401 || response.status === 403) {
      throw new AuthError(response.status, errorOf(await response.text()).message);
    }
    if (!response.ok) {
      const error = errorOf(await response.text());
      throw new ApiError(response.status, error.code, error.message);
    }
    return response.blob();
  }
}

function errorOf(text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error) return { code: body.error.code, message: body.error.message };
  } catch {
    // not JSON: fall through
  }
  return { code: "http-error", message: text.slice(0, 200) || "The API answered with an error." };
}
