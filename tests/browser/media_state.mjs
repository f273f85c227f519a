// Camera and microphone state, in Debian Chromium. While Ann's fake microphone beeps, Bob's page
// marks her tile as speaking, and shows how well her video arrives. Ann turns her camera and her
// microphone off: Bob's page shows her initials instead of a black picture and a muted mark
// beside her name, and she no longer speaks; she turns them on again and both marks go away.
// Screenshot camera-off.png (Bob's page).
// Usage: node tests/browser/media_state.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR

import { annAndBob, fail, finish, launch } from "./lib.mjs";

const [base, dir = "test-artifacts"] = process.argv.slice(2);
const browser = await launch();

// Ann's tile on Bob's page: initials shown, muted mark shown.
const annTile = (bob) => bob.evaluate(() => {
  const fig = [...document.querySelectorAll("figure:not([data-participant=self])")][0];
  const initials = fig?.querySelector(".initials");
  return {
    initials: initials ? initials.textContent : null,
    label: initials?.getAttribute("aria-label") ?? null,
    muted: !!fig?.querySelector("figcaption .muted"),
  };
});

async function waitFor(bob, want, ms = 10_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await annTile(bob);
    if (JSON.stringify(last) === JSON.stringify(want)) return { ok: true, last };
    await new Promise((r) => setTimeout(r, 100));
  }
  return { ok: false, last };
}

async function run() {
  const { ann, bob } = await annAndBob(browser, `${base}?room=media-${Date.now()}`);
  let r = await waitFor(bob, { initials: null, label: null, muted: false });
  if (!r.ok) return fail("Ann's tile starts with her video and sound", r.last);
  const annFigure = "figure:not([data-participant=self])";
  const spoke = await bob
    .waitForSelector(`${annFigure}.speaking`, { timeout: 15_000 })
    .then(() => true, () => false);
  if (!spoke) return fail("Bob sees Ann speak (her microphone beeps)", null);
  const quality = await bob
    .waitForSelector(`${annFigure} .quality[data-level]`, { timeout: 10_000 })
    .then((q) => q.getAttribute("aria-label"), () => null);
  if (!quality) return fail("Ann's tile says how well her video arrives", null);
  await ann.click("#cam");
  await ann.click("#mic");
  r = await waitFor(bob, { initials: "A", label: "Ann's camera is off", muted: true });
  if (!r.ok) return fail("Bob sees Ann's initials and her muted mark", r.last);
  await bob.screenshot({ path: `${dir}/camera-off.png` });
  const off = r.last;
  // Muted: silence, so no speaking mark for two seconds.
  await new Promise((done) => setTimeout(done, 1000));
  for (let i = 0; i < 20; i++) {
    if (await bob.$(`${annFigure}.speaking`)) return fail("a muted Ann does not speak", null);
    await new Promise((done) => setTimeout(done, 100));
  }
  await ann.click("#cam");
  await ann.click("#mic");
  r = await waitFor(bob, { initials: null, label: null, muted: false });
  if (!r.ok) return fail("both marks go away when Ann turns them on", r.last);
  console.log(JSON.stringify({ spoke, quality, off, on: r.last }));
  return true;
}

await finish(browser, run);
