// The roulette of a two-node cluster, in Debian Chromium: Ann and Bob are paired on node 1 and
// Ann puts on the face in PHOTO; Cid waits on node 2. Ann's "Next" finds Cid: her page moves to
// node 2 without reloading, puts her face back on there (a cross-origin call to node 2's face
// API) and meets Cid, whose tile of Ann carries the face badge from the first moment; Bob waits
// on node 1. Cid's page records the badge on Ann's tile every 100 ms.
// Usage: BASE2=URL node tests/browser/roulette_move.mjs NODE1_URL DIR PHOTO

import { fail, finish, launch, openPage, playing, sleep, until, waitForBadge, waiting } from "./lib.mjs";

const [base1, dir = "test-artifacts", photo] = process.argv.slice(2);
const base2 = process.env.BASE2;
const browser = await launch();

// Ann's tile on `page`: present, and its badge (null without one).
const annTile = (page) => page.evaluate(() => {
  const fig = [...document.querySelectorAll("figure:not([data-participant=self])")]
    .find((f) => f.querySelector("figcaption")?.textContent.startsWith("Ann"));
  return fig ? { badge: fig.querySelector(".badge")?.textContent ?? null, width: fig.querySelector("video").videoWidth } : null;
});

async function run() {
  const ann = await openPage(browser, base1, "Ann");
  await ann.click("#roulette");
  const bob = await openPage(browser, base1, "Bob");
  await bob.click("#roulette");
  let r = await until([ann], playing("Bob"));
  if (!r.ok) return fail("Ann sees Bob on node 1", r.states);
  await ann.click("#face");
  await ann.check("#face-consent");
  await ann.setInputFiles("#face-file", photo);
  if (!(await waitForBadge(bob, "face hidden")) && !(await waitForBadge(bob, "face-swapped", 1000))) {
    return fail("Bob sees Ann's face badge", await ann.textContent("#face-state"));
  }
  const badgeBefore = (await annTile(bob)).badge;
  const cid = await openPage(browser, base2, "Cid");
  await cid.click("#roulette");
  r = await until([cid], waiting);
  if (!r.ok) return fail("Cid waits on node 2", r.states);

  const t0 = Date.now();
  await ann.click("#next");
  const seen = [];
  while (Date.now() - t0 < 30_000) {
    const tile = await annTile(cid);
    if (tile) seen.push({ ms: Date.now() - t0, ...tile });
    if (tile?.width > 0 && seen.filter((s) => s.width > 0).length >= 20) break;
    await sleep(100);
  }
  r = await until([ann], playing("Cid"));
  if (!r.ok) return fail("Ann sees Cid after her move", r.states);
  r = await until([bob], waiting);
  if (!r.ok) return fail("Bob waits on node 1", r.states);
  const server = await ann.evaluate(() => window.facerelay.server);
  const annReads = await ann.textContent("#face-state");
  const error = await ann.evaluate(() => { const e = document.getElementById("error"); return e.hidden ? "" : e.textContent; });
  await cid.screenshot({ path: `${dir}/roulette-moved.png` });
  const playingSince = seen.find((s) => s.width > 0)?.ms;
  console.log(JSON.stringify({ badgeBefore, server, annReads, error, playingSince, badges: [...new Set(seen.map((s) => s.badge))] }));
  if (server !== base2) return fail("Ann's page talks to node 2", server);
  if (error) return fail("no error on Ann's page", error);
  if (!seen.length || seen.some((s) => s.badge !== badgeBefore)) {
    return fail(`Cid sees Ann with the badge "${badgeBefore}" from the first moment`, seen);
  }
  if (playingSince === undefined) return fail("Cid sees Ann's video", seen);
  return true;
}

await finish(browser, run);
