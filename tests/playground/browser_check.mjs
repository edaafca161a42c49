// Drives the playground of a running asr-serve in Debian's chromium (playwright-core, no bundled browser) and
// prints one JSON object of what it saw; tests/playground/test_playground_browser.py asserts on it.
// Usage: node browser_check.mjs <config.json>  with {baseUrl, apiKey, sample, corrupt, screenshot, chromium,
// userDataDir, fakeAudio}.

import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
  // a fake microphone that plays the sample: MediaRecorder records real speech without a device
  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
  `--use-file-for-fake-audio-capture=${config.fakeAudio}`,
];
const TIMEOUT_MS = 60_000;

async function submitAndWait(page) {
  await page.evaluate(() => { document.body.dataset.state = "submitting"; });
  await page.click("#submit");
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null,
    { timeout: TIMEOUT_MS });
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    error: document.getElementById("error").hidden ? null : document.getElementById("error").textContent,
    text: document.getElementById("result").hidden ? null : document.getElementById("transcript-text").textContent,
  }));
}

const streamState = (page, state) => page.waitForFunction((s) => document.body.dataset.stream === s, state,
  { timeout: TIMEOUT_MS });

// Live mode: the fake microphone loops the sample into the realtime session. Runs until an utterance has its
// completed text after showing text while it was still open, and one more has started; then Stop commits that one.
async function liveMode(page) {
  await page.click("#live-stream");
  await streamState(page, "streaming");
  const lines = () => page.$$eval("#utterances .utterance", (items) => items.map((li) => ({
    className: li.className, text: li.textContent, final: li.dataset.final ?? null,
    shownWhileOpen: li.dataset.shownWhileOpen ?? null, deltas: Number(li.dataset.deltas),
  })));
  await page.waitForFunction(() => {
    const lines = [...document.querySelectorAll("#utterances .utterance")];
    const early = lines.findIndex((li) => li.classList.contains("done") && li.dataset.shownWhileOpen);
    return early >= 0 && lines.length > early + 1;
  }, null, { timeout: TIMEOUT_MS }).catch(async (error) => {
    const state = await page.textContent("#stream-state");
    throw new Error(`${error.message}\nstream state: ${state}\nlines: ${JSON.stringify(await lines())}`);
  });
  await page.click("#live-stream");
  await streamState(page, "stopped");
  return lines();
}

async function main() {
  const out = { requests: [], consoleErrors: [], pageErrors: [] };
  const context = await chromium.launchPersistentContext(config.userDataDir, {
    executablePath: config.chromium, headless: true, args: ARGS, viewport: { width: 1100, height: 820 },
  });
  context.on("request", (request) => out.requests.push(request.url()));
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (message) => { if (message.type() === "error") out.consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => out.pageErrors.push(String(error)));
  try {
    await page.goto(`${config.baseUrl}/`, { waitUntil: "load" });
    await page.waitForFunction(() => document.getElementById("live-status").textContent === "ready", null,
      { timeout: TIMEOUT_MS });
    out.apiKeyFieldShown = await page.isVisible("#apikey");
    await page.setInputFiles("#file", config.sample);

    out.withoutKey = await submitAndWait(page); // the page asks for the key: a 401 explained in the page
    await page.click("#live-stream"); // live mode without the key: the session is refused, and the page says why
    await streamState(page, "error");
    out.liveWithoutKey = await page.evaluate(() => ({
      error: document.getElementById("error").textContent, state: document.getElementById("stream-state").textContent,
    }));
    await page.fill("#apikey", config.apiKey);
    await page.dispatchEvent("#apikey", "change");
    out.upload = await submitAndWait(page);
    out.segments = await page.$$eval("#segments .segment", (items) => items.map((li) => li.textContent));
    out.words = await page.$$eval("#timeline .word", (items) => items.map((w) => w.textContent));
    out.timing = await page.textContent("#timing");
    out.audioSrc = await page.$eval("#player", (player) => player.src);
    // the player's time drives the highlight: seek into the first word and read what is marked current
    await page.$eval("#player", (player) => {
      const first = document.querySelector("#timeline .word");
      player.currentTime = Number(first.dataset.start) + 0.01;
      player.dispatchEvent(new Event("timeupdate"));
    });
    out.currentSegments = await page.$$eval("#segments .segment.current", (items) => items.length);
    out.currentWord = await page.$eval("#timeline .word.current", (w) => w.textContent).catch(() => null);
    await page.waitForFunction(() => document.getElementById("live-batch").textContent.includes("mean"), null,
      { timeout: TIMEOUT_MS });
    out.live = await page.$$eval("#live dd", (items) => items.map((dd) => `${dd.id}=${dd.textContent}`));
    await page.screenshot({ path: config.screenshot, fullPage: true });

    await page.setInputFiles("#file", config.corrupt);
    out.corrupt = await submitAndWait(page);

    // Each wait is for the state asserted next, never for something that may already hold (the Transcribe button
    // is enabled from the upload before): recording started, 3 s of audio handed over, the recording in place.
    const recordState = (state) => page.waitForFunction((s) => document.body.dataset.record === s, state,
      { timeout: TIMEOUT_MS });
    await page.click("#record");
    await recordState("recording");
    await page.waitForFunction(() => {
      const seconds = /^recording… (\d+) s$/.exec(document.getElementById("record-state").textContent);
      return seconds !== null && Number(seconds[1]) >= 3;
    }, null, { timeout: TIMEOUT_MS });
    await page.click("#record");
    await recordState("recorded");
    out.recordState = await page.textContent("#record-state");
    out.recording = await submitAndWait(page);
    out.liveMode = await liveMode(page);
  } finally {
    await context.close();
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
