// Drives the report in Debian's chromium (headless) with playwright-core and prints what it
// saw as one JSON object; tests/report.rs asserts on it. Usage:
//   node tests/browser/report.mjs SITE_DIR OUT_DIR [--page-size N] [--import FILE] [--dino-max X] [--review] [--drafts] [--scale]
// --review: accept/reject/pattern/note by keyboard, then export decisions (OUT_DIR/decisions.*)
// --drafts: review drafted questions by keyboard (edit, swap, approve, write one where drafting
// failed), reload, export (OUT_DIR/decisions.*) and screenshot a card under review.
// --scale: timings of load, filter, sort, paging and scrolling, and the longest main-thread task.
import { chromium } from "playwright-core";
import path from "node:path";
import fs from "node:fs";

const [site, out, ...rest] = process.argv.slice(2);
const flag = (name) => rest.includes(name);
const value = (name) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : null;
};
fs.mkdirSync(out, { recursive: true });
const url = (page) => "file://" + path.resolve(site, page);
const result = { console_errors: [], page_errors: [] };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--allow-file-access-from-files"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") result.console_errors.push(m.text()); });
  page.on("pageerror", (e) => result.page_errors.push(String(e)));
  await page.addInitScript(() => {
    window.__longest = 0;
    try {
      new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longest = Math.max(window.__longest, e.duration); })
        .observe({ type: "longtask", buffered: true });
    } catch (e) { /* no long task API */ }
  });
  const ready = async () => page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: 60000 });
  const count = async () => Number(await page.getAttribute("#count", "data-count"));
  const settle = async () => {
    await page.waitForFunction(() => document.querySelectorAll("#grid .card").length > 0 || document.getElementById("count").dataset.count === "0");
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0))));
  };

  // Every card whose draft was reviewed, with its fields as shown.
  const reviewedDrafts = () => page.evaluate(() =>
    Array.from(document.querySelectorAll("#grid .card:has(.draft.reviewed)")).map((c) => ({
      a: c.querySelector("figcaption").title,
      question: c.querySelector(".d-question").value,
      option_a: c.querySelector(".d-option_a").value,
      option_b: c.querySelector(".d-option_b").value,
      answer_a: c.querySelector(".d-answer_a").value,
      answer_b: c.querySelector(".d-answer_b").value,
      tags: Array.from(c.querySelectorAll(".draft-head .tag")).map((t) => t.textContent),
      pattern: c.querySelector("select.pattern").value,
    })));

  let t0 = Date.now();
  await page.goto(url("index.html"));
  await ready();
  result.load_ms = Date.now() - t0;
  result.count_initial = await count();
  result.shown = await page.evaluate(() => window.BLINDSPOT.index.clip.length);
  if (value("--page-size") !== null) {
    await page.selectOption("#page-size", value("--page-size"));
    await settle();
  }

  // Every card across every page.
  if (!flag("--scale")) {
    let total = 0, pages = 0, placeholders = 0;
    for (;;) {
      await settle();
      total += await page.locator("#grid .card").count();
      placeholders += await page.locator("#grid .noimg").count();
      pages += 1;
      if (await page.isDisabled("#next")) break;
      const before = await page.getAttribute("#grid", "data-page");
      await page.click("#next");
      await page.waitForFunction((b) => document.getElementById("grid").dataset.page !== b, before);
    }
    result.total_cards = total;
    result.placeholders = placeholders;
    result.pages = pages;
    await page.click("#reset");
    await settle();
  }

  if (value("--import") !== null) {
    await page.setInputFiles("#import", value("--import"));
    await page.waitForFunction(() => document.getElementById("decided").textContent.includes("imported"));
    result.imported_text = await page.textContent("#decided");
    await settle();
    result.imported_drafts = await reviewedDrafts();
  }

  if (value("--dino-max") !== null) {
    t0 = Date.now();
    await page.fill("#dino-max", value("--dino-max"));
    await settle();
    result.filter_ms = Date.now() - t0;
    result.filtered_count = await count();
    result.filtered_first_page = await page.locator("#grid .card").count();
    await page.click("#reset");
    await settle();
  }

  if (flag("--drafts")) {
    result.draft_cards = await page.locator("#grid .card:has(.draft)").count();
    for (const f of ["failed", "drafted", "verified", "blind"]) {
      await page.selectOption("#draft-filter", f);
      await settle();
      result["draft_filter_" + f] = await count();
    }
    await page.click("#reset");
    await settle();
    const index = (sel) => page.locator(sel).first().getAttribute("data-i");
    const drafted = "#grid .card:has(.d-question):not(:has(.tag.failed))";
    const edited = await index(drafted);
    const approved = await page.locator(drafted).nth(1).getAttribute("data-i");
    const written = await index("#grid .card:has(.tag.failed)");
    const at = (i) => page.locator('#grid .card[data-i="' + i + '"]');
    result.draft_before = await at(edited).evaluate((c) => ({
      a: c.querySelector("figcaption").title,
      question: c.querySelector(".d-question").value,
      answer_a: c.querySelector(".d-answer_a").value,
    }));
    // Edit a question (e, type, Enter) and swap the answers (s).
    await at(edited).locator(".sims").click();
    await page.keyboard.press("e");
    await page.keyboard.type("Does the foot of the letter point left, as edited?");
    await page.keyboard.press("Enter");
    await page.keyboard.press("s");
    // Approve another as drafted (v).
    await at(approved).locator(".sims").click();
    await page.keyboard.press("v");
    // Write one where drafting failed: question, Tab, options, Enter; then its pattern (2).
    await at(written).locator(".sims").click();
    await page.keyboard.press("e");
    await page.keyboard.type("Is there a letter in the image?");
    await page.keyboard.press("Tab");
    await page.keyboard.type("yes");
    await page.keyboard.press("Tab");
    await page.keyboard.type("no");
    await page.keyboard.press("Enter");
    await page.keyboard.press("2");
    result.focused_after_typing = await page.evaluate(() => document.activeElement.classList.contains("card"));
    result.drafts_reviewed = await reviewedDrafts();
    result.decided_text = await page.textContent("#decided");
    await at(edited).screenshot({ path: path.join(out, "draft-card.png") });
    await page.screenshot({ path: path.join(out, "draft-review.png") });
    await page.reload();
    await ready();
    await settle();
    result.drafts_after_reload = await reviewedDrafts();
    for (const [button, name] of [["#export-json", "decisions.json"], ["#export-csv", "decisions.csv"]]) {
      const [download] = await Promise.all([page.waitForEvent("download"), page.click(button)]);
      await download.saveAs(path.join(out, name));
    }
    await page.selectOption("#draft-filter", "reviewed");
    await settle();
    result.draft_filter_reviewed = await count();
    await page.click("#reset");
    await settle();
  }

  if (flag("--review")) {
    const card = (k) => page.locator("#grid .card").nth(k);
    await card(0).locator(".sims").click();
    await page.keyboard.press("a");
    await page.keyboard.press("6");
    await page.keyboard.press("j");
    await page.keyboard.press("r");
    await page.keyboard.press("j");
    await page.keyboard.press("a");
    await page.keyboard.press("1");
    await page.keyboard.press("n");
    await page.keyboard.type("=tilted, check");
    await page.keyboard.press("Enter");
    result.reviewed = await page.evaluate(() =>
      Array.from(document.querySelectorAll("#grid .card")).slice(0, 3).map((c) => ({
        i: Number(c.dataset.i), cls: c.className, note: c.querySelector(".note").value, pattern: c.querySelector("select.pattern").value,
      })));
    result.decided_text = await page.textContent("#decided");
    for (const [button, name] of [["#export-json", "decisions.json"], ["#export-csv", "decisions.csv"]]) {
      const [download] = await Promise.all([page.waitForEvent("download"), page.click(button)]);
      await download.saveAs(path.join(out, name));
    }
    // Filter by decision and by pattern, as computed from the decisions just made.
    await page.selectOption("#decision", "accept");
    await settle();
    result.accepted_count = await count();
    await page.selectOption("#decision", "");
    await page.selectOption("#pattern", "Color");
    await settle();
    result.color_count = await count();
    await page.click("#reset");
    await settle();
    await page.screenshot({ path: path.join(out, "gallery.png") });
    await page.reload();
    await ready();
    result.decided_after_reload = await page.textContent("#decided");
  } else {
    await page.screenshot({ path: path.join(out, "gallery.png") });
  }

  if (flag("--scale")) {
    const timed = async (what, f) => { const t = Date.now(); await f(); await settle(); result[what] = Date.now() - t; };
    await timed("sort_ms", () => page.selectOption("#sort", "clip-desc"));
    await timed("page_size_ms", () => page.selectOption("#page-size", "96"));
    let worst = 0;
    for (let k = 0; k < 30; k++) {
      const before = await page.getAttribute("#grid", "data-page");
      const t = Date.now();
      await page.click("#next");
      await page.waitForFunction((b) => document.getElementById("grid").dataset.page !== b, before);
      await settle();
      worst = Math.max(worst, Date.now() - t);
      await page.mouse.wheel(0, 4000);
    }
    result.next_page_worst_ms = worst;
    const t = Date.now();
    for (let k = 0; k < 40; k++) await page.mouse.wheel(0, 600);
    result.scroll_ms = Date.now() - t;
    result.longest_task_ms = await page.evaluate(() => window.__longest);
    result.heap_mb = await page.evaluate(() => (performance.memory ? performance.memory.usedJSHeapSize / 1048576 : null));
  }

  for (const name of ["thresholds.html", "evaluation.html"]) {
    await page.goto(url(name));
    await page.waitForLoadState("load");
    result[name] = await page.evaluate(() => ({
      charts: document.querySelectorAll("img.chart").length,
      charts_loaded: Array.from(document.querySelectorAll("img.chart")).filter((i) => i.complete && i.naturalWidth > 0).length,
      text: document.querySelector("main").innerText.slice(0, 4000),
    }));
    if (name === "evaluation.html") {
      const chart = page.locator("img.chart").first();
      if (await chart.count()) await chart.screenshot({ path: path.join(out, "patterns.png") });
    }
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
