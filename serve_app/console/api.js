// The console's one way to the admin API: the token (this tab only), JSON, errors as text.
const KEY = "serve-app.admin-token";

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Every call sends the token when one was entered: reads may need it
// (admin.reads_need_token), changes always do.
export async function request(method, path, body) {
  const headers = { accept: "application/json" };
  const secret = token.get();
  if (secret) headers.authorization = `Bearer ${secret}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let answer;
  try {
    answer = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, `serve-app is not reachable (${error.message})`);
  }
  let data = null;
  try {
    data = await answer.json();
  } catch {
    data = null;
  }
  if (!answer.ok) {
    throw new ApiError(answer.status, (data && data.error) || answer.statusText || "error");
  }
  return data;
}

const HINTS = {
  401: "check the admin token",
  403: "the admin API is closed: the service needs SERVE_APP_ADMIN_TOKEN",
  409: "the model is not in a state that allows it",
};

export function describe(error) {
  if (!(error instanceof ApiError)) return String(error);
  if (!error.status) return error.message;
  const hint = HINTS[error.status];
  return `${error.status}: ${error.message}${hint ? ` (${hint})` : ""}`;
}
