// Writes the README's screenshots at desktop and phone sizes: landing, invitation (with the
// gallery when the server has one), a room of two and of four, the roulette, the face picker.
// Not a test: run it against a running server when the page changes (FAKE_VIDEO: a y4m camera,
// e.g. test-artifacts/real-face.y4m that tests/it/real_faces.rs writes).
//   target/release/facerelay serve &
//   FAKE_VIDEO=test-artifacts/real-face.y4m node tests/browser/screenshots.mjs http://127.0.0.1:8080/ docs/screenshots

import { launch, openPage, until, sleep } from "./lib.mjs";

const base = process.argv[2] ?? "http://127.0.0.1:8080/";
const dir = process.argv[3] ?? "docs/screenshots";
const sizes = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };
const browser = await launch();
const remotes = (n) => (s) => s.remote.length === n && s.remote.every((r) => r.width > 0);
try {
  for (const [label, viewport] of Object.entries(sizes)) {
    const room = "friday-call";
    const landing = await openPage(browser, base, "Sam", viewport);
    await landing.fill("#room", "friday-call");
    await landing.screenshot({ path: `${dir}/landing-${label}.png` });

    const a = await openPage(browser, `${base}?room=${room}`, "Sam", viewport);
    await sleep(500);
    // With a gallery: its first face tried on, the preview through the server.
    const face = await a.$("#invite-gallery button");
    if (face) {
      await face.click();
      await a.waitForFunction(() => /through the server/.test(document.getElementById("invite-camera").textContent), null, { timeout: 20_000 });
      await sleep(1500);
    }
    await a.screenshot({ path: `${dir}/invitation-${label}.png` });
    await a.click("#join");
    const b = await openPage(browser, `${base}?room=${room}`, "Alex", viewport);
    await b.click("#join");
    await until([a], remotes(1));
    await sleep(1500);
    await a.screenshot({ path: `${dir}/room2-${label}.png` });
    await a.click("#face");
    await sleep(500);
    await a.screenshot({ path: `${dir}/face-${label}.png` });
    await a.click("#face");
    const more = [];
    for (const name of ["Kai", "Noor"]) {
      const p = await openPage(browser, `${base}?room=${room}`, name, viewport);
      await p.click("#join");
      more.push(p);
    }
    await until([a], remotes(3));
    await sleep(1500);
    await a.screenshot({ path: `${dir}/room4-${label}.png` });

    const r1 = await openPage(browser, base, "Robin", viewport);
    await r1.click("#roulette");
    const r2 = await openPage(browser, base, "Kim", viewport);
    await r2.click("#roulette");
    await until([r1], remotes(1));
    await sleep(1500);
    await r1.screenshot({ path: `${dir}/roulette-${label}.png` });
    for (const p of [landing, a, b, ...more, r1, r2]) await p.context().close();
    console.log(`${label}: landing, invitation, room of 2 and 4, face picker, roulette`);
  }
} finally {
  await browser.close();
}
