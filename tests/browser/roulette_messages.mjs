// The roulette's messages, one at a time and in order, in Debian Chromium: alone, Next, Report
// and Block are disabled; with only two people, Next pairs the same two again and says so; a
// report's confirmation stays readable and is the only message; Stop leaves no error behind.
// Usage: node tests/browser/roulette_messages.mjs http://127.0.0.1:PORT/ [ARTIFACT_DIR]

import { fail, finish, launch, openPage, playing, until, waiting } from "./lib.mjs";

const base = process.argv[2];
const dir = process.argv[3] ?? "test-artifacts";
const browser = await launch();
const buttons = (page) => page.evaluate(() =>
  Object.fromEntries(["next", "report", "block"].map((id) => [id, !document.getElementById(id).disabled])));
const shown = (page, id) => page.evaluate((id) => {
  const e = document.getElementById(id);
  return e.hidden ? null : e.textContent;
}, id);

async function run() {
  const ann = await openPage(browser, base, "Ann");
  await ann.click("#roulette");
  let r = await until([ann], waiting);
  if (!r.ok) return fail("Ann waits", r.states);
  let b = await buttons(ann);
  if (b.next || b.report || b.block) return fail("alone: Next, Report and Block disabled", b);
  console.log(`alone: "${r.states[0].status}", buttons ${JSON.stringify(b)}`);

  const bob = await openPage(browser, base, "Bob");
  await bob.click("#roulette");
  r = await until([ann, bob], (s) => s.remote.length === 1 && s.remote[0].width > 0 && s.framesDecoded > 0);
  if (!r.ok) return fail("Ann and Bob paired", r.states);
  b = await buttons(ann);
  if (!(b.next && b.report && b.block)) return fail("paired: buttons enabled", b);

  // Only two people: Next pairs them again, and Ann is told why.
  await ann.click("#next");
  r = await until([ann], playing("Bob"));
  if (!r.ok) return fail("after Next, Ann is with Bob again", r.states);
  const again = await shown(ann, "notice");
  if (!/again/.test(again ?? "")) return fail("Ann is told she is with Bob again", again);
  console.log(`next with nobody else waiting: "${again}"`);

  // Report: one message, readable, no error; the two are never paired again.
  await ann.click("#report");
  // Waiting again: the server has taken the report (an error it sent would be shown by now).
  r = await until([ann], waiting, 5_000);
  const reported = await shown(ann, "notice");
  const error = await shown(ann, "error");
  b = await buttons(ann);
  if (!/Reported/.test(reported ?? "") || error !== null) return fail("one message after a report", { reported, error });
  if (!r.ok || b.next || !b.report) return fail("after the report Ann waits: Next off, Report (the last partner) on", { b, states: r.states });
  console.log(`report: "${reported}", no error; waiting: "${r.states[0].status}"`);
  await ann.screenshot({ path: `${dir}/roulette-reported.png` });

  // Stop: back on the landing page with no message left over.
  await ann.click("#leave");
  await until([ann], (s) => /Not connected/.test(s.status), 5_000);
  const after = { error: await shown(ann, "error"), notice: await shown(ann, "notice") };
  if (after.error !== null || after.notice !== null) return fail("Stop leaves nothing behind", after);
  console.log("stop: no error, no notice");
  return true;
}

await finish(browser, run);
