// One test: the eight statistics, the score distribution, the item analysis and the CSV export.
import { ApiError } from "../api.js";
import { announce, h, replace } from "../dom.js";
import { STATISTICS, binLabel, count, percent, ratio, readItems } from "../format.js";

export class TestNotFound extends Error {}

export function testView(api, testId) {
  const base = `/results/${encodeURIComponent(testId)}`;
  const stats = h("dl", { class: "stats" });
  const histogram = h("div", { class: "histogram-wrap" });
  const items = h("div", { class: "items" });
  const status = h("p", { class: "meta" });
  const csvName = `test-${testId.replace(/[^A-Za-z0-9._-]+/g, "_")}-students.csv`;
  const csvLink = h("a", {
    class: "button", href: api.url(`${base}/students.csv`), download: csvName, onclick: downloadCsv,
  }, "Download student results (CSV)");
  const csvNote = h("p", { class: "note", id: "csv-note" },
    "One row per student: student number, marks available, marks obtained, percent, submissions.");
  let lastCount = null;

  return {
    title: `Test ${testId}`,
    render(main) {
      replace(main,
        h("nav", { "aria-label": "Breadcrumb", class: "breadcrumb" }, h("a", { href: "#/" }, "All tests")),
        h("h1", { tabindex: "-1" }, `Test ${testId}`),
        status,
        section("stats-heading", "Statistics",
          h("p", { class: "note" }, "Percent of available marks, one score per student (best of their scans)."), stats),
        section("histogram-heading", "Score distribution", histogram),
        section("items-heading", "Item analysis", items),
        section("export-heading", "Export", h("p", {}, csvLink), csvNote));
      csvLink.setAttribute("aria-describedby", "csv-note");
    },
    async refresh(first) {
      let aggregate;
      try {
        aggregate = await api.getJson(`${base}/aggregate`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) throw new TestNotFound(testId);
        throw err;
      }
      const [hist, item] = await Promise.all([part(`${base}/histogram`), part(`${base}/items`)]);
      if (aggregate.changed) drawStats(aggregate.data);
      if (hist.changed) drawHistogram(hist);
      if (item.changed) drawItems(item);
      const students = aggregate.data.count;
      if (!first && aggregate.changed && students !== lastCount) {
        announce(`New results for test ${testId}: ${count(students)} students (was ${count(lastCount)}).`);
      } else if (!first && aggregate.changed) {
        announce(`New results for test ${testId}: statistics updated.`);
      }
      lastCount = students;
    },
  };

  // A part that is missing (older API, or no data yet) shows a note; the page still works.
  async function part(path) {
    try {
      return await api.getJson(path);
    } catch (err) {
      if (err instanceof ApiError) return { error: err, changed: true };
      throw err;
    }
  }

  function drawStats(data) {
    replace(stats, STATISTICS.map(([key, label, fmt]) => {
      const id = `stat-${key}`;
      return h("div", { class: "stat" },
        h("dt", { id: `${id}-label` }, label),
        h("dd", { id, "aria-labelledby": `${id}-label` }, h("data", { value: String(data[key]) }, fmt(data[key]))));
    }));
    status.textContent = `${count(data.count)} ${data.count === 1 ? "student" : "students"}. Updates by itself when new results are imported.`;
  }

  function drawHistogram(answer) {
    if (answer.error) {
      replace(histogram, h("p", { class: "empty" }, `The distribution is not available (${answer.error.message}).`));
      return;
    }
    const bins = answer.data.bins || [];
    const max = Math.max(1, ...bins.map((b) => b.count));
    const existing = histogram.querySelectorAll(".bar");
    if (existing.length === bins.length && bins.length > 0) {
      // Same bins: update in place, so the bars grow (motion allowing) instead of being redrawn.
      bins.forEach((bin, index) => {
        const label = binLabel(bin, index === bins.length - 1);
        const bar = existing[index];
        bar.style.height = `${(100 * bin.count) / max}%`;
        bar.setAttribute("aria-label", label.name);
        bar.setAttribute("title", label.name);
        bar.closest(".bin").querySelector(".bin-count").textContent = count(bin.count);
      });
      histogram.querySelector("#histogram-total").textContent = `${count(answer.data.total)} students in all.`;
      return;
    }
    const list = h("ol", { class: "histogram", "aria-describedby": "histogram-note" },
      bins.map((bin, index) => {
        const label = binLabel(bin, index === bins.length - 1);
        return h("li", { class: "bin" },
          h("span", { class: "bin-count", "aria-hidden": "true" }, count(bin.count)),
          h("span", { class: "bar-track" },
            h("span", {
              class: "bar", role: "img", "aria-label": label.name, title: label.name,
              style: { height: `${(100 * bin.count) / max}%` },
            })),
          h("span", { class: "bin-range", "aria-hidden": "true" }, label.short));
      }));
    replace(histogram, list, h("p", { id: "histogram-note", class: "note" },
      `Students by percent of available marks, in 10-point bins; the last bin includes 100%. `,
      h("span", { id: "histogram-total" }, `${count(answer.data.total)} students in all.`)));
  }

  function drawItems(answer) {
    if (answer.error) {
      replace(items, h("p", { class: "empty" }, `The item analysis is not available (${answer.error.message}).`));
      return;
    }
    const { reliability, reliabilityName, questions, quality } = readItems(answer.data);
    if (questions.length === 0) {
      replace(items, h("p", { class: "empty" },
        "No answer data for this test: its documents carried no <answer> elements."));
      return;
    }
    const flagged = questions.filter((q) => q.flags.length > 0).length;
    replace(items,
      h("p", {}, `Reliability (${reliabilityName}): `, h("strong", {}, ratio(reliability)), ". ",
        `${count(questions.length)} questions, ${count(flagged)} flagged.`),
      qualityNote(quality),
      h("div", { class: "table-scroll", tabindex: "0", role: "region", "aria-labelledby": "items-caption" },
        h("table", { class: "data items-table" },
          h("caption", { id: "items-caption" }, "Questions: difficulty, discrimination and the options chosen"),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, "Question"),
            h("th", { scope: "col", class: "num" }, "Answered"),
            h("th", { scope: "col", class: "num" }, "Difficulty"),
            h("th", { scope: "col", class: "num" }, "Discrimination"),
            h("th", { scope: "col" }, "Options chosen"),
            h("th", { scope: "col" }, "Flags"))),
          h("tbody", {}, questions.map(itemRow)))),
      h("p", { class: "note" },
        "Difficulty: mean awarded ÷ available (1 = everyone right). Discrimination: corrected point-biserial, ",
        "the question against the rest of the test. An option chosen by fewer than 5% of students is flagged."));
  }

  function itemRow(q) {
    const isFlagged = q.flags.length > 0;
    return h("tr", { class: isFlagged ? "flagged" : null },
      h("th", { scope: "row" }, `Q${q.id}`),
      h("td", { class: "num" }, count(q.answered)),
      h("td", { class: "num" }, ratio(q.difficulty)),
      h("td", { class: "num" }, ratio(q.discrimination)),
      h("td", {}, h("ul", { class: "options" }, q.options.map((o) =>
        h("li", { class: o.flagged ? "rare" : null },
          `${o.label}: ${o.share === null ? count(o.count) : percent(o.share * 100)}`,
          o.flagged ? h("span", { class: "tag" }, " (rare)") : null)))),
      h("td", {}, isFlagged
        ? h("span", { class: "flag" }, h("span", { "aria-hidden": "true" }, "⚠ "), `Flagged: ${q.flags.join("; ")}`)
        : "—"));
  }

  async function downloadCsv(event) {
    event.preventDefault();
    let blob;
    try {
      blob = await api.getBlob(`${base}/students.csv`);
    } catch (err) {
      const why = err.status === 401 || err.status === 403 ? "sign in again" : "try again";
      csvNote.textContent = `The CSV could not be downloaded (${err.message}). Please ${why}.`;
      announce(csvNote.textContent);
      return;
    }
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: csvName, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
    announce(`Downloaded ${csvName}.`);
  }
}

// Documents accepted with a warning are counted, not hidden: the analyst sees how much to trust the items.
function qualityNote(quality) {
  if (!quality) return null;
  const problems = [];
  if (quality.mismatchedResults) {
    problems.push(`${count(quality.mismatchedResults)} results (in ${count(quality.mismatchedSubmissions)} submissions) `
      + "whose awarded marks do not add up to their summary");
  }
  if (quality.unansweredResults) problems.push(`${count(quality.unansweredResults)} results without answers`);
  const text = problems.length ? `Data quality: ${problems.join("; ")}.` : "Data quality: no problems found.";
  return h("p", { class: problems.length ? "quality warn" : "quality note" },
    problems.length ? h("span", { "aria-hidden": "true" }, "⚠ ") : null, text,
    ` From ${count(quality.submissions)} ${quality.submissions === 1 ? "submission" : "submissions"}.`);
}

function section(id, title, ...children) {
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...children);
}
