// Number and date formatting, and the shapes the page reads from the API.

const oneDecimal = new Intl.NumberFormat("en", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const twoDecimals = new Intl.NumberFormat("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const whole = new Intl.NumberFormat("en");

export const percent = (value) => (value === null || value === undefined ? "–" : `${oneDecimal.format(value)}%`);
export const count = (value) => (value === null || value === undefined ? "–" : whole.format(value));
export const ratio = (value) => (value === null || value === undefined ? "–" : twoDecimals.format(value));

export function dateTime(value) {
  if (!value) return "–";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" }) + " UTC";
}

// The eight statistics of GET /api/results/{testId}/aggregate, in reading order.
export const STATISTICS = [
  ["mean", "Mean", percent],
  ["stddev", "Standard deviation", (v) => (v === null || v === undefined ? "–" : `${oneDecimal.format(v)} pts`)],
  ["min", "Minimum", percent],
  ["max", "Maximum", percent],
  ["p25", "25th percentile", percent],
  ["p50", "Median (50th percentile)", percent],
  ["p75", "75th percentile", percent],
  ["count", "Students", count],
];

export function binLabel(bin, last) {
  const lower = Number(bin.lowerPct);
  const upper = Number(bin.upperPct);
  const students = `${count(bin.count)} ${bin.count === 1 ? "student" : "students"}`;
  const range = last ? `${lower}% to ${upper}% inclusive` : `${lower}% to under ${upper}%`;
  return { short: `${lower}–${upper}`, name: `${range}: ${students}` };
}

// GET /api/results/{testId}/items -> { reliability, reliabilityName, questions, quality }.
export function readItems(data) {
  const list = data.questions || data.items || [];
  const questions = list.map((q, index) => {
    const options = readOptions(q.options || q.optionFrequencies || q.choices || []);
    const flags = [];
    for (const o of options) if (o.flagged) flags.push(`option ${o.label} chosen by ${o.share === null ? "few" : percent(o.share * 100)} of students (under 5%)`);
    for (const f of Array.isArray(q.flags) ? q.flags : []) {
      const text = typeof f === "string" ? f : f.message || f.code;
      if (text && !flags.some((x) => x.includes(text))) flags.push(text);
    }
    if (q.flagged === true && flags.length === 0) flags.push("flagged");
    return {
      id: String(q.question ?? q.questionId ?? q.number ?? q.id ?? index + 1),
      answered: q.answering ?? q.answered ?? q.answeredCount ?? null,
      difficulty: q.difficulty ?? null,
      discrimination: q.discrimination ?? q.pointBiserial ?? q.correctedPointBiserial ?? null,
      options,
      flags,
    };
  });
  // KR-20 when every question is scored 0/1 (then it equals alpha), Cronbach's alpha otherwise.
  const kr20 = data.kr20 ?? null;
  const reliability = kr20 ?? data.cronbachAlpha ?? null;
  const reliabilityName = kr20 !== null ? "KR-20" : "Cronbach's alpha";
  return { reliability, reliabilityName, questions, quality: data.dataQuality || null };
}

function readOptions(raw) {
  const entries = Array.isArray(raw)
    ? raw
    : Object.entries(raw).map(([label, v]) => (typeof v === "object" ? { option: label, ...v } : { option: label, count: v }));
  const total = entries.reduce((sum, o) => sum + (Number(o.count) || 0), 0);
  return entries.map((o) => {
    const share = o.frequency ?? o.share ?? o.proportion ?? (o.percent !== undefined ? o.percent / 100 : null);
    return {
      label: String(o.option ?? o.answer ?? o.choice ?? o.label ?? o.value ?? "?"),
      count: o.count ?? null,
      share: share ?? (total > 0 && o.count !== undefined ? o.count / total : null),
      flagged: Boolean(o.flagged ?? o.rare ?? o.flag),
    };
  });
}
