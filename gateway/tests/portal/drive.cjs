// Drives the portal in Debian's Chromium with playwright-core, for gateway/tests/portal.rs.
// Environment: GATEWAY (base URL), SHOTS (screenshot folder), PLAYWRIGHT (playwright-core's
// folder), CHROMIUM (the browser), SCENARIO (`main`, `auth`, `zoom` or `paint`), USER_NAME and
// PASSWORD (with basic auth).
// Exits non-zero, saying what it did not see, on any failed expectation.
"use strict";
const path = require("path");
const { chromium } = require(process.env.PLAYWRIGHT);

const base = process.env.GATEWAY;
const shots = process.env.SHOTS;
const seconds = (n) => n * 1000;

function check(ok, what) {
  if (!ok) throw new Error(`expected: ${what}`);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

async function main(page) {
  // The list, with the function the test deployed in local mode.
  await page.goto(`${base}/ui/`);
  await page.locator('tr[data-function="shout"]').waitFor({ timeout: seconds(10) });
  const resting = await page.locator('tr[data-function="resting"] [data-col="state"]').innerText();
  check(resting.includes("paused") && resting.includes("throttled: 5/s"), `paused and throttled said in words: ${resting}`);
  const risky = await page.locator('tr[data-function="risky"] [data-col="ready / desired"]').innerText();
  check(/stable \d+ \/ \d+, canary \d+ \/ \d+/.test(risky), `replicas per version: ${risky}`);
  await shot(page, "list");

  // A bad deploy is refused with the API's message, naming the field.
  await page.getByRole("link", { name: "Deploy" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Bad_Name");
  await page.getByLabel("Image", { exact: true }).fill("x");
  await page.getByRole("button", { name: "Deploy" }).click();
  const refusal = page.getByRole("alert");
  await refusal.waitFor({ timeout: seconds(10) });
  const said = await refusal.innerText();
  check(said.includes("metadata.name") || said.includes("service"), `a refusal naming the field, got ${JSON.stringify(said)}`);
  await shot(page, "deploy-refused");

  // A good one lands on its page; invoke it from the form, with the keyboard.
  await page.getByLabel("Name", { exact: true }).fill("echo");
  await page.getByLabel(/^Command/).fill("cat");
  await page.getByLabel(/^Command/).press("Enter");
  await page.waitForURL(/#\/fn\/default\/echo$/, { timeout: seconds(10) });
  await page.getByLabel("Body").fill("hello from the portal");
  await page.getByRole("button", { name: "Invoke" }).focus();
  await page.keyboard.press("Enter");
  const answer = page.locator("#invoke-answer");
  await answer.waitFor({ timeout: seconds(30) });
  check((await answer.innerText()) === "hello from the portal", "the function's answer in the form");
  check((await page.locator("[data-status]").getAttribute("data-status")) === "200", "status 200 shown");
  const shown = await page.locator("#invoke-result").innerText();
  check(/cold start|warm/.test(shown), `the form says whether it was a cold start: ${shown}`);
  // The invocation reaches the requests chart (refreshed every 2 s).
  await page.waitForFunction(
    () => Number(document.querySelector('[data-chart="Requests per second by status"]').dataset.total) >= 1,
    null,
    { timeout: seconds(10) },
  );
  // Live logs.
  await page.getByRole("button", { name: "Follow logs" }).click();
  await page.waitForFunction(() => document.getElementById("logs").textContent.length > 0, null, { timeout: seconds(10) });
  await page.getByRole("button", { name: "Stop following" }).click();
  await shot(page, "function-echo");

  // Back in the list, the invocation is counted.
  await page.getByRole("link", { name: "← Functions" }).click();
  await page.waitForFunction(
    () => Number(document.querySelector('tr[data-function="echo"] [data-col="invocations"]')?.textContent) >= 1,
    null,
    { timeout: seconds(10) },
  );

  // The function the test loaded: its replicas rose and fell, with scaling events marked.
  await page.goto(`${base}/ui/#/fn/default/busy`);
  await page.waitForFunction(
    () => Number(document.querySelector('[data-chart^="Replicas"]').dataset.events) >= 2,
    null,
    { timeout: seconds(20) },
  );
  const events = await page.locator("ol.events").innerText();
  check(/scaling: stable version: \d+ -> \d+ replicas/.test(events), `scaling events listed: ${events}`);
  await shot(page, "function-busy");

  // The failing canary: rolled back, and why.
  await page.goto(`${base}/ui/#/fn/default/risky`);
  // The badge beside the summary says so in words (not by colour alone).
  await page.locator("main > p .badge", { hasText: "canary 0% RolledBack" }).waitFor({ timeout: seconds(20) });
  const riskyEvents = await page.locator("ol.events").innerText();
  check(riskyEvents.includes("CanaryRolledBack"), `the rollback in the events: ${riskyEvents}`);
  check((await page.locator('[data-chart^="Canary weight"]').getAttribute("data-events")) !== "0", "the verdict marked on the weight chart");
  await shot(page, "function-risky");

  // The learned idle policy and the schedule, in words and as a histogram.
  await page.goto(`${base}/ui/#/fn/default/nightly`);
  const idle = page.locator('[data-idle="stable"]');
  await idle.waitFor({ timeout: seconds(10) });
  const policy = await idle.innerText();
  check(/learned, from its histogram of quiet spells \(43 spells\)/.test(policy), `the policy and its basis: ${policy}`);
  check(/back 17\.1 min after it, kept until 23\.1 min after it/.test(policy), `the windows: ${policy}`);
  check(/Next scheduled\s+2 replica\(s\) from/.test(policy) || /Scheduled minimum\s+2 replica\(s\) now/.test(policy), `the schedule: ${policy}`);
  check((await idle.locator("figure").getAttribute("data-spells")) === "43", "the histogram of 43 spells");
  check((await idle.locator("rect").count()) >= 21, "a bar per bin up to the last one used");
  await shot(page, "function-nightly");

  // Delete from the portal.
  await page.goto(`${base}/ui/#/fn/default/echo`);
  page.once("dialog", (d) => d.accept());
  await page.getByRole("button", { name: "Delete echo" }).click();
  await page.waitForURL(/#\/$/, { timeout: seconds(10) });
  await page.waitForFunction(() => !document.querySelector('tr[data-function="echo"]'), null, { timeout: seconds(10) });
}

async function auth(page) {
  await page.goto(`${base}/ui/`);
  await page.locator('tr[data-function="shout"]').waitFor({ timeout: seconds(10) });
  await shot(page, "list-with-auth");
}

// At 200% zoom (a 640 px wide window at twice the pixels), without a mouse: the page reflows
// with no sideways scrolling, and the keyboard reaches a function's page.
async function zoom(page) {
  await page.goto(`${base}/ui/`);
  await page.locator('tr[data-function="shout"]').waitFor({ timeout: seconds(10) });
  const wide = await page.evaluate(() =>
    Math.max(document.documentElement.scrollWidth - window.innerWidth, ...[...document.querySelectorAll(".table-wrap")].map((t) => t.scrollWidth - t.clientWidth)),
  );
  check(wide <= 0, `no sideways scrolling at 200% (${wide}px too wide)`);
  check((await page.locator('tr[data-function="shout"] [data-col="state"]').isVisible()), "every column shown at 200%");
  await shot(page, "list-at-200-percent");
  for (let i = 0; i < 10; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(() => document.activeElement.textContent === "shout")) break;
  }
  check(await page.evaluate(() => document.activeElement.textContent === "shout"), "Tab reaches the function's link");
  await page.keyboard.press("Enter");
  await page.waitForURL(/#\/fn\/default\/shout$/, { timeout: seconds(10) });
  await page.waitForFunction(() => document.activeElement.id === "main", null, { timeout: seconds(10) });
  await page.locator("#invoke-body").waitFor();
  await shot(page, "function-at-200-percent");
}

// What scripts/bench portal reads: when the list (of however many functions) was first shown.
async function paint(page) {
  await page.goto(`${base}/ui/`);
  await page.waitForFunction(() => performance.getEntriesByName("flint-list").length > 0, null, { timeout: seconds(30) });
  const rows = await page.locator("tbody tr").count();
  const ms = await page.evaluate(() => performance.getEntriesByName("flint-list")[0].startTime);
  console.log(JSON.stringify({ rows, firstPaintMs: ms }));
}

(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox"] });
  const options = process.env.USER_NAME
    ? { httpCredentials: { username: process.env.USER_NAME, password: process.env.PASSWORD } }
    : {};
  const zoomed = process.env.SCENARIO === "zoom";
  const screen = zoomed ? { viewport: { width: 640, height: 900 }, deviceScaleFactor: 2 } : { viewport: { width: 1280, height: 900 } };
  const context = await browser.newContext({ ...screen, ...options });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // The portal's Content-Security-Policy allows no inline script or style: a violation is a
  // console error that would otherwise go unseen.
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) errors.push(m.text());
  });
  try {
    const scenarios = { main, auth, zoom, paint };
    await scenarios[process.env.SCENARIO](page);
    check(errors.length === 0, `no script errors on the page: ${errors.join("; ")}`);
  } catch (e) {
    await shot(page, "failure").catch(() => {});
    console.error(`${e.message}\nat ${page.url()}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
})();
