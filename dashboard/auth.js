// Where the analyst's bearer token comes from. A provider is { kind, getToken(), interactive,
// signIn(token?), signOut() }. "session" (the default) keeps a token pasted into the sign-in box or
// passed once in the URL fragment (#token=...) in sessionStorage: it lasts for this tab only and
// never goes to the server in a URL. In Azure, config.json names a module instead (for example
// "./auth-msal.js") whose default export is a provider built on MSAL (docs/deploy.md); a provider
// may also have start(config), awaited once before the first page is drawn.

const KEY = "markr.token";

export const sessionProvider = {
  kind: "session",
  interactive: true,
  async getToken() {
    return sessionStorage.getItem(KEY);
  },
  async signIn(token) {
    const value = (token || "").trim();
    if (value) sessionStorage.setItem(KEY, value);
  },
  async signOut() {
    sessionStorage.removeItem(KEY);
  },
};

// "#token=abc" or "#token=abc&next=/tests/9863": keep the token, then strip it from the address bar
// and the history entry, so it is not bookmarked, shared or left in the history.
export function takeTokenFromFragment() {
  const hash = window.location.hash;
  if (!hash.startsWith("#token=")) return false;
  const params = new URLSearchParams(hash.slice(1));
  const token = params.get("token");
  if (token) sessionStorage.setItem(KEY, token);
  const next = params.get("next");
  const route = next && next.startsWith("/") ? next : "/";
  window.history.replaceState(null, "", `${window.location.pathname}${window.location.search}#${route}`);
  return true;
}

export async function loadProvider(config) {
  const name = config.tokenProvider || "session";
  if (name === "session") return sessionProvider;
  const module = await import(new URL(name, window.location.href).href);
  const provider = module.default;
  if (provider.start) await provider.start(config); // e.g. MSAL: finish a sign-in redirect
  return provider;
}
