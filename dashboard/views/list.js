// The test catalogue (GET /api/tests) with a search box that filters by test id.
import { announce, h, replace } from "../dom.js";
import { count, dateTime } from "../format.js";

export function listView(api, pageSize) {
  let tests = [];
  let nextToken = null;
  let pages = 1;
  let query = "";
  let searchTimer = null;
  const rows = h("tbody");
  const summary = h("p", { id: "search-count", class: "search-count" });
  const body = h("div", { class: "catalogue" });
  const more = h("button", { type: "button", class: "button", hidden: true, onclick: loadMore }, "Show more tests");
  const search = h("input", {
    id: "search", type: "search", autocomplete: "off", spellcheck: "false",
    "aria-describedby": "search-count", oninput: onSearch,
  });

  const view = {
    title: "Tests",
    render(main) {
      replace(main,
        h("h1", { tabindex: "-1" }, "Tests"),
        h("form", { role: "search", class: "search", onsubmit: (e) => e.preventDefault() },
          h("label", { for: "search" }, "Search by test id"), search),
        summary, body, more);
    },
    async refresh(first) {
      const fresh = await fetchPages(pages);
      if (!fresh.changed) return;
      const before = new Set(tests.map((t) => t.testId));
      tests = fresh.tests;
      nextToken = fresh.token;
      draw();
      if (!first) {
        const added = tests.filter((t) => !before.has(t.testId)).length;
        announce(added > 0 ? `${added} new ${added === 1 ? "test" : "tests"} with results.` : "Test list updated with new results.");
      }
    },
  };

  async function fetchPages(n) {
    let all = [];
    let token = null;
    let changed = false;
    for (let page = 0; page < n; page++) {
      const query = new URLSearchParams();
      if (pageSize) query.set("limit", String(pageSize));
      if (token) query.set("continuationToken", token);
      const path = query.size ? `/tests?${query}` : "/tests";
      const answer = await api.getJson(path);
      changed = changed || answer.changed;
      all = all.concat(answer.data.tests || []);
      token = answer.data.continuationToken || null;
      if (!token) break;
    }
    return { tests: all, token, changed };
  }

  async function loadMore() {
    pages += 1;
    let fresh;
    try {
      fresh = await fetchPages(pages);
    } catch (err) {
      pages -= 1;
      announce(`More tests could not be loaded: ${err.message}`);
      return;
    }
    tests = fresh.tests;
    nextToken = fresh.token;
    draw();
    announce(`${tests.length} tests loaded.`);
  }

  function onSearch() {
    query = search.value.trim().toLowerCase();
    draw();
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(() => announce(summary.textContent), 600);
  }

  function draw() {
    more.hidden = !nextToken;
    if (tests.length === 0) {
      summary.textContent = "";
      replace(body, h("div", { class: "empty" },
        h("h2", {}, "No tests yet"),
        h("p", {}, "Tests appear here as soon as a scanning machine's results document has been imported ",
          "(POST /api/import). This page checks for new results every few seconds.")));
      return;
    }
    const shown = query ? tests.filter((t) => String(t.testId).toLowerCase().includes(query)) : tests;
    summary.textContent = query
      ? `${shown.length} of ${tests.length} ${tests.length === 1 ? "test matches" : "tests match"} “${search.value.trim()}”.`
      : `${tests.length} ${tests.length === 1 ? "test" : "tests"}.`;
    replace(rows, shown.map(row));
    if (shown.length === 0) {
      replace(body, h("p", { class: "empty" }, "No test id contains that text. Clear the search to see every test."));
      return;
    }
    if (!body.contains(rows)) {
      replace(body, h("table", { class: "data" },
        h("caption", { class: "visually-hidden" }, "Tests with results"),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Test"),
          h("th", { scope: "col", class: "num" }, "Students"),
          h("th", { scope: "col", class: "num" }, "Marks available"),
          h("th", { scope: "col", class: "num" }, "Submissions"),
          h("th", { scope: "col" }, "Last updated"))),
        rows));
    }
  }

  function row(test) {
    return h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `#/tests/${encodeURIComponent(test.testId)}` }, `Test ${test.testId}`)),
      h("td", { class: "num" }, count(test.studentCount)),
      h("td", { class: "num" }, count(test.maxAvailable)),
      h("td", { class: "num" }, count(test.submissionCount)),
      h("td", {}, dateTime(test.updatedAt)));
  }

  return view;
}
