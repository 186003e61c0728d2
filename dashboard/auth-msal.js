// The analyst's token from Microsoft Entra ID, through MSAL.js (@azure/msal-browser, pinned in
// package.json). config.json names this module as its tokenProvider and says which app to sign in
// as and which API scope to ask for (docs/deploy.md, "The dashboard"):
//   "msal": {"clientId": "<SPA app id>", "authority": "https://login.microsoftonline.com/<tenant>",
//            "scopes": ["api://<API app id>/access_as_user"], "redirectUri": "<dashboard URL>"}
// MSAL.js is loaded from a copy next to index.html (the deploy step puts it there), because the
// page's Content-Security-Policy runs scripts from its own origin only.

const BUNDLE = new URL("./vendor/msal-browser.min.js", import.meta.url).href;

let msal; // the library: PublicClientApplication, InteractionRequiredAuthError
let app;
let scopes = [];
let redirecting = null; // one redirect at a time: MSAL refuses a second while one is under way

async function loadLibrary() {
  const module = await import(BUNDLE);
  // The browser bundle is UMD: imported as a module it sets globalThis.msal and exports nothing.
  return module.PublicClientApplication ? module : globalThis.msal;
}

function redirect(start) {
  if (!redirecting) redirecting = start().finally(() => { redirecting = null; });
  return redirecting;
}

const provider = {
  kind: "msal",
  interactive: true,

  // Called once by loadProvider (auth.js) with config.json, before the first page is drawn.
  async start(config) {
    const settings = config.msal || {};
    if (!settings.clientId || !Array.isArray(settings.scopes) || settings.scopes.length === 0) {
      throw new Error("config.json: \"msal\" needs a clientId and at least one scope.");
    }
    scopes = settings.scopes;
    msal = await loadLibrary();
    const here = window.location.origin + window.location.pathname;
    app = new msal.PublicClientApplication({
      auth: {
        clientId: settings.clientId,
        authority: settings.authority || "https://login.microsoftonline.com/organizations",
        redirectUri: settings.redirectUri || here,
        postLogoutRedirectUri: settings.redirectUri || here,
      },
      // Like the development token: this tab only.
      cache: { cacheLocation: "sessionStorage" },
    });
    await app.initialize();
    // Back from Entra ID: MSAL reads the answer from the address, then returns to the page the
    // sign-in started from (its hash route included).
    const result = await app.handleRedirectPromise();
    if (result && result.account) app.setActiveAccount(result.account);
    else if (!app.getActiveAccount() && app.getAllAccounts().length > 0) app.setActiveAccount(app.getAllAccounts()[0]);
  },

  // A cached or silently refreshed access token for the API; null when nobody is signed in. When
  // Entra ID wants the analyst (consent, MFA, an expired session), the page goes there and back.
  async getToken() {
    const account = app.getActiveAccount();
    if (!account) return null;
    try {
      const result = await app.acquireTokenSilent({ scopes, account });
      return result.accessToken;
    } catch (err) {
      if (!(err instanceof msal.InteractionRequiredAuthError)) throw err;
      await redirect(() => app.acquireTokenRedirect({ scopes, account }));
      return null;
    }
  },

  async signIn() {
    await redirect(() => app.loginRedirect({ scopes }));
  },

  async signOut() {
    await redirect(() => app.logoutRedirect({ account: app.getActiveAccount() }));
  },
};

export default provider;
