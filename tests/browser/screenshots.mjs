// Writes the README's screenshots: landing, room and roulette pages at desktop and phone sizes.
// Not a test: run it against a running server when the page changes.
//   target/release/facerelay serve &   node tests/browser/screenshots.mjs http://127.0.0.1:8080/ docs/screenshots

import { launch, openPage, until, sleep } from "./lib.mjs";

const base = process.argv[2] ?? "http://127.0.0.1:8080/";
const dir = process.argv[3] ?? "docs/screenshots";
const sizes = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };
const browser = await launch();
const oneRemote = (s) => s.remote.length === 1 && s.remote[0].width > 0;
try {
  for (const [label, viewport] of Object.entries(sizes)) {
    const room = `demo-${label}-${Date.now()}`;
    const landing = await openPage(browser, base, "Sam", viewport);
    await landing.fill("#room", "friday-call");
    await landing.screenshot({ path: `${dir}/landing-${label}.png` });

    const a = await openPage(browser, `${base}?room=${room}`, "Sam", viewport);
    await a.click("#join");
    const b = await openPage(browser, `${base}?room=${room}`, "Alex", viewport);
    await b.click("#join");
    await until([a], oneRemote);
    await a.click("#stats");
    await sleep(1500);
    await a.screenshot({ path: `${dir}/room-${label}.png` });

    const r1 = await openPage(browser, base, "Robin", viewport);
    await r1.click("#roulette");
    const r2 = await openPage(browser, base, "Kim", viewport);
    await r2.click("#roulette");
    await until([r1], oneRemote);
    await sleep(1000);
    await r1.screenshot({ path: `${dir}/roulette-${label}.png` });
    for (const p of [landing, a, b, r1, r2]) await p.context().close();
    console.log(`${label}: landing, room, roulette`);
  }
} finally {
  await browser.close();
}
