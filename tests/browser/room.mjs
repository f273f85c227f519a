// Two Debian Chromium pages (fake camera) join one room through web/index.html and must each
// see the other's video playing: videoWidth > 0 and framesDecoded rising in getStats().
// Usage: node tests/browser/room.mjs http://127.0.0.1:PORT/ [screenshot.png]
// Exits 0 on success; prints what it saw either way.

import { chromium } from "playwright-core";

const base = process.argv[2];
const screenshot = process.argv[3] ?? "test-artifacts/room.png";
if (!base) {
  console.error("usage: node tests/browser/room.mjs BASE_URL [SCREENSHOT]");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
});

const room = `browser-${Date.now()}`;
async function openPage(name) {
  const context = await browser.newContext({ viewport: { width: 960, height: 720 } });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.log(`[${name}] ${m.text()}`); });
  await page.goto(`${base}?room=${encodeURIComponent(room)}`);
  await page.fill("#name", name);
  await page.click("#join");
  return page;
}

// Remote tiles with a playing video, and total frames decoded across inbound video streams.
async function look(page) {
  return page.evaluate(async () => {
    const remote = [...document.querySelectorAll("figure:not([data-participant=self]) video")]
      .map((v) => ({ width: v.videoWidth, height: v.videoHeight, name: v.nextSibling?.textContent }));
    let framesDecoded = 0;
    let decoder = null;
    const stats = await window.facerelay.pc?.getStats();
    stats?.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        framesDecoded += s.framesDecoded ?? 0;
        decoder = s.decoderImplementation ?? decoder;
      }
    });
    const error = document.getElementById("error");
    return { remote, framesDecoded, decoder, error: error.hidden ? null : error.textContent };
  });
}

let ok = false;
try {
  const a = await openPage("Alice");
  const b = await openPage("Bob");
  const deadline = Date.now() + 30_000;
  let first = null;
  while (Date.now() < deadline) {
    const [la, lb] = [await look(a), await look(b)];
    const playing = [la, lb].every((l) => l.remote.length === 1 && l.remote[0].width > 0 && l.framesDecoded > 0);
    if (playing && !first) first = [la, lb];
    if (first && [la, lb].every((l, i) => l.framesDecoded >= first[i].framesDecoded + 30)) {
      console.log(`Alice sees ${JSON.stringify(la.remote)}; frames decoded ${first[0].framesDecoded} -> ${la.framesDecoded} (${la.decoder})`);
      console.log(`Bob sees ${JSON.stringify(lb.remote)}; frames decoded ${first[1].framesDecoded} -> ${lb.framesDecoded} (${lb.decoder})`);
      ok = true;
      break;
    }
    if (la.error || lb.error) console.log(`errors shown: ${la.error} / ${lb.error}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  if (!ok) console.log("not both playing within 30 s:", JSON.stringify([await look(a), await look(b)]));
  await a.click("#stats");
  await new Promise((r) => setTimeout(r, 1500));
  await a.screenshot({ path: screenshot });
  console.log(`screenshot: ${screenshot}`);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
