// Two Debian Chromium pages (fake camera) open a room's shared link (/?room=NAME) and must each
// see the other's video playing: videoWidth > 0 and framesDecoded rising in getStats().
// Usage: node tests/browser/room.mjs http(s)://127.0.0.1:PORT/ [ARTIFACT_DIR]
// (SHOT: the screenshot's file name; ROOM and TOKENS: a room and join tokens by name; BOB_FACE:
// a gallery face Bob picks in his invitation before joining, which he must still wear after a
// cluster node sent him to another)

import { launch, look, openPage, transceivers, until } from "./lib.mjs";

const base = process.argv[2];
const dir = process.argv[3] ?? "test-artifacts";
const browser = await launch();
const room = process.env.ROOM ?? `browser-${Date.now()}`;
const link = `${base}?room=${encodeURIComponent(room)}`;
// Join tokens by name (TOKENS='{"Alice":"…","Bob":"…"}'), for a server with token_secret.
const tokens = JSON.parse(process.env.TOKENS ?? "{}");
// Bob may open another node of a cluster (BOB_BASE): the room's node takes both.
const bobLink = `${process.env.BOB_BASE ?? base}?room=${encodeURIComponent(room)}`;
const linkFor = (name) => {
  const l = name === "Bob" ? bobLink : link;
  return tokens[name] ? `${l}&token=${tokens[name]}` : l;
};

let ok = false;
try {
  const alice = await openPage(browser, linkFor("Alice"), "Alice");
  await alice.click("#join");
  const bob = await openPage(browser, linkFor("Bob"), "Bob");
  const bobFace = process.env.BOB_FACE;
  if (bobFace) {
    await bob.waitForSelector(`#invite-gallery button[data-face=${bobFace}]`, { timeout: 10_000 });
    await bob.click(`#invite-gallery button[data-face=${bobFace}]`);
  }
  await bob.click("#join");
  const sees = (name) => (s) => s.remote.length === 1 && s.remote[0].name === name && s.remote[0].width > 0 && s.framesDecoded > 0;
  const first = await until([alice, bob], (s) => s.remote.length === 1 && s.remote[0].width > 0 && s.framesDecoded > 0);
  if (first.ok) {
    const [a0, b0] = first.states;
    // Both keep playing: ten more decoded frames each, of the right person.
    const [ma, mb] = await Promise.all([
      until([alice], (s) => sees("Bob")(s) && s.framesDecoded >= a0.framesDecoded + 10),
      until([bob], (s) => sees("Alice")(s) && s.framesDecoded >= b0.framesDecoded + 10),
    ]);
    const [a1, b1] = [ma.states[0], mb.states[0]];
    ok = ma.ok && mb.ok;
    console.log(`Alice sees ${JSON.stringify(a1.remote)}; frames decoded ${a0.framesDecoded} -> ${a1.framesDecoded}`);
    console.log(`Bob sees ${JSON.stringify(b1.remote)}; frames decoded ${b0.framesDecoded} -> ${b1.framesDecoded}`);
    if (bobFace) {
      // The face went with him: his gallery marks it, and Alice's page shows his tile with the
      // badge of a worn face (swapped, or hidden while the server finds no face to swap).
      const pressed = await bob.evaluate((f) => document.querySelector(`#gallery button[data-face=${f}]`)?.getAttribute("aria-pressed"), bobFace);
      const badge = a1.remote[0]?.badge;
      console.log(`after the move Bob's gallery marks ${bobFace}: ${pressed}; Alice sees Bob's badge "${badge}"`);
      ok = ok && pressed === "true" && /^(face-swapped|face hidden)$/.test(badge);
    }
  } else {
    console.log("not both playing within 30 s:", JSON.stringify(first.states));
    // Where each page ended up and what it exchanged with the server (a move between nodes
    // navigates the page: its signalling log starts again there).
    for (const [name, page] of [["Alice", alice], ["Bob", bob]]) {
      console.log(`${name} at ${page.url()}: signalling ${JSON.stringify(page.signalling)}; calls ${JSON.stringify(await transceivers(page).catch((e) => e.message))}`);
    }
  }
  if (ok) {
    // The signalling connection drops: the page says so and rejoins by itself.
    await alice.evaluate(() => window.facerelay.ws.close());
    const dropped = await until([alice], (s) => /Connection lost/.test(s.status) && s.remote.length === 0, 5_000);
    const lost = dropped.states[0].status;
    const again = await until([alice, bob], (s) => s.remote.length === 1 && s.remote[0].width > 0 && s.framesDecoded > 0, 20_000);
    const names = again.states.map((s) => s.remote[0]?.name);
    ok = again.ok && names[0] === "Bob" && names[1] === "Alice" && /Connection lost/.test(lost);
    if (process.env.BOB_BASE) {
      // Bob opened another node; the room's node took him.
      const [a, b] = [new URL(alice.url()).origin, new URL(bob.url()).origin];
      console.log(`Bob opened ${process.env.BOB_BASE}, ended on ${b}; Alice is on ${a}`);
      ok = ok && a === b && b !== new URL(process.env.BOB_BASE).origin;
    }
    console.log(`after a dropped connection: "${lost}"; then Alice sees ${names[0]}, Bob sees ${names[1]}`);
  }
  if (ok) {
    // The statistics overlay, once it shows figures (it is refreshed every second).
    await alice.click("#stats");
    await alice.waitForFunction(() => [...document.querySelectorAll("figure:not([data-participant=self]) .overlay")]
      .some((o) => !o.hidden && / [1-9]\d* kb\/s/.test(o.textContent)), null, { timeout: 10_000 });
  }
  const shot = process.env.SHOT ?? "room.png";
  await alice.screenshot({ path: `${dir}/${shot}` });
  console.log(`screenshot: ${dir}/${shot}`);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
