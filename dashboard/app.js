// The analysts' dashboard: hash routes, polling, sign-in. No build step: plain ES modules.
//   #/              the test catalogue, with search
//   #/tests/{id}    one test
//   #/sign-in       paste a token (development) or sign in through the configured provider
import { Api, ApiError, AuthError } from "./api.js";
import { loadProvider, takeTokenFromFragment } from "./auth.js";
import { announce, h, replace } from "./dom.js";
import { listView } from "./views/list.js";
import { TestNotFound, testView } from "./views/test.js";

const main = document.getElementById("main");
let config;
let provider;
let api;
let current = null; // { view, timer, route }
let firstRender = true;

async function start() {
  config = await fetch("config.json", { cache: "no-cache" }).then((r) => r.json()).catch(() => ({}));
  takeTokenFromFragment();
  try {
    provider = await loadProvider(config);
  } catch (err) {
    // A provider that cannot start (config.json, or MSAL.js missing) must not leave "Loading…".
    const view = notFoundView("Sign-in is not available", `${err.message.replace(/\.?$/, ".")} Tell the people who run the dashboard.`, "error");
    view.render(main);
    document.title = `${view.title} – Markr results`;
    return;
  }
  api = new Api(config.apiBase || "/api", provider);
  window.addEventListener("hashchange", route);
  // The skip link moves focus without touching the hash, which holds the route.
  document.querySelector(".skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && current) poll(current);
  });
  await drawSession();
  await route();
}

function pollMs() {
  // Never slower than 10 s: new results must show within 10 s.
  return 1000 * Math.min(10, Math.max(1, Number(config.pollSeconds) || 5));
}

async function route() {
  if (takeTokenFromFragment()) await drawSession();
  stop();
  const path = (window.location.hash.replace(/^#/, "") || "/").split("?")[0];
  const match = path.match(/^\/tests\/(.+)$/);
  let view;
  if (path === "/" || path === "") view = listView(api, config.pageSize);
  else if (match) view = testView(api, safeDecode(match[1]));
  else if (path === "/sign-in") view = signInView(null);
  else view = notFoundView("Page not found", `There is no page at “${path}”.`);
  await show(view, path);
}

async function show(view, path) {
  const state = { view, timer: null, path };
  current = state;
  view.render(main);
  document.title = `${view.title} – Markr results`;
  if (view.refresh) {
    try {
      await view.refresh(true);
    } catch (err) {
      if (current === state) fail(err);
      return;
    }
    if (current !== state) return;
    schedule(state);
  }
  focusHeading();
}

function schedule(state) {
  state.timer = window.setTimeout(() => poll(state), pollMs());
}

async function poll(state) {
  if (current !== state) return;
  window.clearTimeout(state.timer);
  try {
    await state.view.refresh(false);
    setNotice(null);
  } catch (err) {
    if (current !== state) return;
    // A poll that cannot reach the API (network, 503) keeps the page as it is and tries again.
    if (err instanceof ApiError && (err.status === 0 || err.status >= 500)) {
      setNotice(`The results could not be refreshed (${err.message.replace(/\.$/, "")}). Trying again every ${pollMs() / 1000} s.`);
    } else {
      fail(err);
      return;
    }
  }
  if (current === state) schedule(state);
}

// Shown (and announced once) while polls fail; cleared by the next successful poll.
function setNotice(message, quiet = false) {
  const notice = document.getElementById("notice");
  if (!message) {
    if (!notice.hidden && !quiet) announce("Connection restored: results are up to date.");
    notice.hidden = true;
    notice.textContent = "";
    return;
  }
  if (notice.hidden) announce(message);
  notice.textContent = message;
  notice.hidden = false;
}

function stop() {
  if (current) window.clearTimeout(current.timer);
  current = null;
  setNotice(null, true);
}

function fail(err) {
  const path = current ? current.path : "/";
  stop();
  let view;
  if (err instanceof TestNotFound) {
    view = notFoundView("Test not found", `No results have been imported for test “${err.message}”.`);
  } else if (err instanceof AuthError) {
    view = signInView(err, path);
  } else {
    view = notFoundView("The results could not be loaded", `${err.message.replace(/\.?$/, ".")} Reload the page to try again.`, "error");
  }
  current = { view, timer: null, path };
  view.render(main);
  document.title = `${view.title} – Markr results`;
  focusHeading();
}

// Focus moves to the new page's heading on navigation (not on the first load), so keyboard and
// screen reader users start reading the page they went to.
function focusHeading() {
  const heading = main.querySelector("h1");
  if (!firstRender && heading) heading.focus();
  firstRender = false;
}

function notFoundView(title, message, kind = "not-found") {
  return {
    title,
    render(el) {
      replace(el, h("div", { class: `state ${kind}` },
        h("h1", { tabindex: "-1" }, title),
        h("p", {}, message),
        h("p", {}, h("a", { href: "#/" }, "Back to all tests"))));
    },
  };
}

function signInView(err, returnTo = "/") {
  const title = !err ? "Sign in" : err.status === 403 ? "Access denied" : "Sign-in required";
  const explain = !err
    ? "Results are for analysts. Sign in to read them."
    : err.status === 403
      ? `Your sign-in was accepted, but it does not allow reading results (403${err.message ? `: ${err.message}` : ""}). Ask for the analyst role, or sign in as someone else.`
      : `The API needs an analyst's sign-in to show results (401${err.message ? `: ${err.message}` : ""}).`;
  return {
    title,
    render(el) {
      const body = [h("h1", { tabindex: "-1" }, title), h("p", { class: "message" }, explain)];
      if (provider.kind === "session") {
        const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true });
        body.push(h("form", {
          class: "sign-in",
          onsubmit: async (event) => {
            event.preventDefault();
            await provider.signIn(input.value);
            await drawSession();
            window.location.hash = `#${returnTo === "/sign-in" ? "/" : returnTo}`;
            if (window.location.hash === `#${returnTo}`) await route();
          },
        },
        h("label", { for: "token" }, "Access token"),
        h("p", { class: "note", id: "token-help" }, "Locally: a development token. It is kept for this browser tab only."),
        input,
        h("button", { type: "submit", class: "button" }, "Sign in")));
        input.setAttribute("aria-describedby", "token-help");
      } else {
        body.push(h("p", {}, h("button", { type: "button", class: "button", onclick: () => provider.signIn() }, "Sign in")));
      }
      replace(el, h("div", { class: `state ${err ? "error" : ""}` }, body));
    },
  };
}

async function drawSession() {
  const session = document.getElementById("session");
  const token = await provider.getToken().catch(() => null);
  if (token) {
    replace(session, h("span", { class: "who" }, "Signed in"), " ",
      h("button", {
        type: "button", class: "link-button",
        onclick: async () => {
          await provider.signOut();
          await drawSession();
          await route();
        },
      }, "Sign out"));
  } else {
    replace(session, h("a", { href: "#/sign-in" }, "Sign in"));
  }
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

start();
