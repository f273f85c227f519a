// The call's layout in Debian Chromium. At 1280×800 with two people in a room, the other's video
// covers at least half of the window; at 390×844 (a phone), in a two-person room and in the
// roulette, your own video and the other's are both on screen without scrolling. Screenshots
// layout-desktop.png, layout-phone-room.png, layout-phone-roulette.png.
// Usage: node tests/browser/layout.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR

import { fail, finish, launch, openPage, rendered, until } from "./lib.mjs";

const [base, dir = "test-artifacts"] = process.argv.slice(2);
const browser = await launch();
const desktop = { width: 1280, height: 800 };
const phone = { width: 390, height: 844 };
const playingOne = (s) => s.remote.length === 1 && s.remote[0].width > 0 && s.framesDecoded > 0;

// Each video's visible rectangle (clipped to the window), and whether the page scrolls.
const measure = (page) => page.evaluate(() => {
  const clip = (r) => {
    const w = Math.max(0, Math.min(r.right, innerWidth) - Math.max(r.left, 0));
    const h = Math.max(0, Math.min(r.bottom, innerHeight) - Math.max(r.top, 0));
    return { w: Math.round(w), h: Math.round(h), whole: r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight };
  };
  const rect = (sel) => { const e = document.querySelector(sel); return e ? clip(e.getBoundingClientRect()) : null; };
  return {
    window: [innerWidth, innerHeight],
    other: rect("figure:not([data-participant=self]) video"),
    self: rect("figure[data-participant=self] video"),
    scrolls: document.documentElement.scrollHeight > innerHeight + 1 || document.documentElement.scrollWidth > innerWidth + 1,
  };
});

async function pair(viewport, roulette) {
  const room = `layout-${Date.now()}`;
  const a = await openPage(browser, roulette ? base : `${base}?room=${room}`, "Ann", viewport);
  await a.click(roulette ? "#roulette" : "#join");
  const b = await openPage(browser, roulette ? base : `${base}?room=${room}`, "Bob", viewport);
  await b.click(roulette ? "#roulette" : "#join");
  const r = await until([a, b], playingOne);
  if (!r.ok) throw new Error(`the two do not see each other: ${JSON.stringify(r.states)}`);
  for (const p of [a, b]) await rendered(p);
  return [a, b];
}

async function run() {
  const results = {};
  let [a, b] = await pair(desktop, false);
  let m = await measure(b);
  results.desktop = m;
  const share = (m.other.w * m.other.h) / (desktop.width * desktop.height);
  await b.screenshot({ path: `${dir}/layout-desktop.png` });
  if (share < 0.5) return fail(`at 1280×800 the other's video covers half the window (${share.toFixed(2)})`, m);
  if (m.scrolls || !m.self?.whole) return fail("at 1280×800 nothing scrolls and your own video shows", m);
  for (const p of [a, b]) await p.context().close();

  for (const roulette of [false, true]) {
    [a, b] = await pair(phone, roulette);
    m = await measure(b);
    results[roulette ? "phoneRoulette" : "phoneRoom"] = m;
    await b.screenshot({ path: `${dir}/layout-phone-${roulette ? "roulette" : "room"}.png` });
    if (m.scrolls || !m.other?.whole || !m.self?.whole || m.other.w === 0 || m.self.w === 0) {
      return fail(`at 390×844 (${roulette ? "roulette" : "room"}) both videos are on screen without scrolling`, m);
    }
    for (const p of [a, b]) await p.context().close();
  }
  results.desktopShare = Number(share.toFixed(2));
  console.log(JSON.stringify(results));
  return true;
}

await finish(browser, run);
