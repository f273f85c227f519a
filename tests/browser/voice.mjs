// A voice disguise chosen in Debian Chromium. Both pages' microphone is a WAV file of speech
// (FAKE_AUDIO). Bob records SECONDS of Ann's audio as he receives it (Web Audio from her
// tile's stream, counted in samples) while she speaks with her own voice, then Ann picks VOICE
// in her face panel, Bob waits for her tile's "voice disguised" badge and records again. The
// recordings go to PREFIX-own.f32 and PREFIX-VOICE.f32 (32-bit floats, little-endian), their
// rate and what the pages said to PREFIX.json, for the Rust test to measure.
// Usage: FAKE_AUDIO=speech.wav node tests/browser/voice.mjs URL DIR VOICE PREFIX SECONDS

import { writeFileSync } from "node:fs";
import { annAndBob, fail, finish, launch, waitForBadge, waitForText } from "./lib.mjs";

const [base, dir = "test-artifacts", voice = "higher", prefix = "voice", seconds = "5"] = process.argv.slice(2);
const browser = await launch();
const link = `${base}?room=voice-${Date.now()}`;

// SECONDS of the other participant's audio as Bob's page receives it; { rate, samples (base64) }.
async function record(page, seconds) {
  return page.evaluate(async (seconds) => {
    const video = document.querySelector("figure:not([data-participant=self]) video");
    const track = video.srcObject.getAudioTracks()[0];
    const ctx = new AudioContext();
    await ctx.resume();
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const tap = ctx.createScriptProcessor(4096, 1, 1);
    const want = Math.round(seconds * ctx.sampleRate);
    const out = new Float32Array(want);
    let n = 0;
    await new Promise((done, failed) => {
      const timer = setTimeout(() => failed(new Error(`${n} of ${want} samples in 60 s`)), 60_000);
      tap.onaudioprocess = (e) => {
        const d = e.inputBuffer.getChannelData(0).subarray(0, want - n);
        out.set(d, n);
        n += d.length;
        if (n >= want) { clearTimeout(timer); done(); }
      };
      source.connect(tap);
      tap.connect(ctx.destination);
    });
    await ctx.close();
    const bytes = new Uint8Array(out.buffer);
    let bin = "";
    for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { rate: ctx.sampleRate, samples: btoa(bin) };
  }, Number(seconds));
}

await finish(browser, async () => {
  const { ann, bob } = await annAndBob(browser, link);
  const own = await record(bob, seconds);
  writeFileSync(`${dir}/${prefix}-own.f32`, Buffer.from(own.samples, "base64"));
  await ann.click("#face");
  await ann.selectOption("#voice-select", voice);
  const disguised = "The others hear your disguised voice.";
  if (!(await waitForText(ann, "#voice-state", disguised))) {
    return fail("Ann reads that her voice is disguised", await ann.textContent("#voice-state"));
  }
  if (!(await waitForBadge(bob, "voice disguised"))) return fail("Bob sees Ann's voice badge", null);
  const changed = await record(bob, seconds);
  writeFileSync(`${dir}/${prefix}-${voice}.f32`, Buffer.from(changed.samples, "base64"));
  const said = { rate: own.rate, annReads: await ann.textContent("#voice-state") };
  writeFileSync(`${dir}/${prefix}.json`, JSON.stringify(said));
  console.log(`recorded ${seconds} s of Ann's own voice and ${seconds} s disguised (${voice}) at ${own.rate} Hz; Ann reads "${said.annReads}"`);
  await bob.screenshot({ path: `${dir}/${prefix}.png` });
  return true;
});
