// The admin API client. The token lives in sessionStorage only: gone when the tab
// closes, never in a cookie or in localStorage, never in a URL.

const KEY = 'hookgate.admin-token';

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

// Calls the admin API; answers `{status, data}` or throws an ApiError carrying the
// API's own message. Statuses in `accept` (e.g. 422 of a rejected reload) are answers.
export async function api(method, path, { query, body, accept = [] } = {}) {
  const bearer = token.get();
  if (!bearer) throw new ApiError(401, 'unauthorized', 'Sign in with the admin token first.');
  const headers = { Authorization: `Bearer ${bearer}`, Accept: 'application/json' };
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(withQuery(path, query), {
      method, headers, body: payload, cache: 'no-store', credentials: 'omit',
    });
  } catch (error) {
    throw new ApiError(0, 'network', `The gateway did not answer (${error.message}).`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401) {
    token.clear();
    onUnauthorized();
  }
  if (!response.ok && !accept.includes(response.status)) {
    throw new ApiError(
      response.status,
      data?.error ?? `http_${response.status}`,
      data?.message ?? `The gateway answered HTTP ${response.status}.`,
      data,
    );
  }
  return { status: response.status, data };
}

// The health report: public, and answered 503 (with the same body) when down.
export async function health() {
  const response = await fetch('/api/v1/health', { cache: 'no-store', credentials: 'omit' });
  return response.json();
}
