// Three Debian Chromium pages enter the roulette: the first two are paired and see each other's
// video, the third waits. "Next" on the first pairs it with the waiting one, and the page it
// left returns to waiting. Screenshots go to the folder given.
// Usage: node tests/browser/roulette.mjs http://127.0.0.1:PORT/ [ARTIFACT_DIR]

import { fail, finish, inbound, launch, openPage, playing, transceivers, until, uplink, waiting } from "./lib.mjs";

const base = process.argv[2];
const dir = process.argv[3] ?? "test-artifacts";
const browser = await launch();

async function run() {
  const ann = await openPage(browser, base, "Ann");
  await ann.click("#roulette");
  const bob = await openPage(browser, base, "Bob");
  await bob.click("#roulette");
  let r = await until([ann], playing("Bob"));
  if (!r.ok) return fail("Ann sees Bob", r.states);
  r = await until([bob], playing("Ann"));
  if (!r.ok) return fail("Bob sees Ann", r.states);
  const cid = await openPage(browser, base, "Cid");
  await cid.click("#roulette");
  r = await until([cid], waiting);
  if (!r.ok) return fail("Cid waits", r.states);
  console.log(`paired: Ann and Bob; Cid: "${r.states[0].status}"`);
  await ann.screenshot({ path: `${dir}/roulette-paired.png` });
  await cid.screenshot({ path: `${dir}/roulette-waiting.png` });

  await ann.click("#next");
  r = await until([ann], playing("Cid"));
  if (!r.ok) return fail("after next, Ann sees Cid", r.states);
  r = await until([cid], playing("Ann"));
  if (!r.ok) {
    // What Cid's connection receives and Ann's sends: which side stopped.
    return fail("after next, Cid sees Ann", {
      cid: r.states, cidCall: await transceivers(cid), cidInbound: await inbound(cid),
      annUplink: await uplink(ann), cidSignalling: cid.signalling, annSignalling: ann.signalling,
    });
  }
  r = await until([bob], waiting);
  if (!r.ok) return fail("Bob waits again", r.states);
  const note = await bob.textContent("#notice");
  console.log(`after next: Ann and Cid paired; Bob: "${r.states[0].status}" / "${note}"`);
  await bob.screenshot({ path: `${dir}/roulette-left.png` });
  return true;
}

await finish(browser, run);
