//! `facerelay bench voice`: what a disguised voice costs, on a synthetic talker (a glottal
//! pulse train whose pitch glides between 95 and 165 Hz, through two formants that move, in
//! syllables, with a noise burst for consonants), 48 kHz Opus in 20 ms packets as a browser
//! sends them. Per packet, on one thread: decode ▸ disguise ▸ encode (the server's
//! [`VoiceCodec`]); the disguise's own delay; then as many voices as `--voices` on their own
//! threads at once, each at its real-time pace, to show whether this machine keeps up. Prints
//! a table and JSON.

use std::f32::consts::PI;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use opusic_c::{Application, Channels, Encoder, SampleRate};
use serde::Serialize;

use crate::voice::disguise::RATE;
use crate::voice::stream::VoiceCodec;
use crate::voice::{Disguiser, Voice, VoiceStage};

#[derive(Debug, clap::Args)]
pub struct VoiceBenchArgs {
    /// Seconds of speech per voice.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f32,
    /// The preset measured.
    #[arg(long, default_value = "neutral")]
    pub preset: String,
    /// Voices run at once, each on its own thread at real-time pace (comma-separated list).
    #[arg(long, default_value = "1,8,32")]
    pub voices: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stat {
    pub median: f64,
    pub p99: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Stat {
        median: round(at(0.5)),
        p99: round(at(0.99)),
    }
}

#[derive(Debug, Serialize)]
pub struct Together {
    pub voices: usize,
    /// Packets that left later than 20 ms after their due time, of all.
    pub late_share: f64,
    /// Milliseconds from a packet's due time to its disguised packet.
    pub wait_ms: Stat,
}

#[derive(Debug, Serialize)]
pub struct VoiceBench {
    pub preset: &'static str,
    pub packets: usize,
    /// Decode, disguise and encode of one 20 ms packet on one thread, milliseconds.
    pub per_packet_ms: Stat,
    /// The disguise's own delay of the sound, milliseconds (its splicer's look-back).
    pub disguise_delay_ms: Stat,
    /// disguise delay + per-packet time: what the voice path adds, decode to encode.
    pub added_latency_ms: Stat,
    /// One thread's share of a core per disguised voice (per-packet median / 20 ms).
    pub core_share_per_voice: f64,
    pub together: Vec<Together>,
}

/// The synthetic talker at 48 kHz.
pub fn talker(seconds: f32) -> Vec<f32> {
    let fs = 48_000.0f32;
    let n = (seconds * fs) as usize;
    let mut rng = 0x1234_5678u32;
    let mut noise = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng as f32 / u32::MAX as f32 - 0.5
    };
    let (mut y1, mut y2, mut z1, mut z2, mut phase) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
    (0..n)
        .map(|i| {
            let t = i as f32 / fs;
            let f0 = 130.0 + 35.0 * (2.0 * PI * 0.7 * t).sin();
            let syllable = (t * 4.0).fract();
            let (f1, f2) = (
                550.0 + 200.0 * (2.0 * PI * 0.9 * t).sin(),
                1500.0 + 500.0 * (2.0 * PI * 0.6 * t).cos(),
            );
            phase += f0 / fs;
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                1.0
            } else {
                0.0
            };
            let e = if syllable < 0.15 {
                0.05 * noise()
            } else if syllable < 0.8 {
                pulse
            } else {
                0.0
            };
            let res = |f: f32, bw: f32| {
                let r = (-PI * bw / fs).exp();
                (2.0 * r * (2.0 * PI * f / fs).cos(), -r * r)
            };
            let (a1, a2) = res(f1, 80.0);
            let (b1, b2) = res(f2, 100.0);
            let y = e + a1 * y1 + a2 * y2;
            (y2, y1) = (y1, y);
            let z = y + b1 * z1 + b2 * z2;
            (z2, z1) = (z1, z);
            z * 0.004
        })
        .collect()
}

fn packets(x: &[f32]) -> anyhow::Result<Vec<Bytes>> {
    let mut enc = Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip)
        .map_err(|e| anyhow::anyhow!("opus encoder: {e:?}"))?;
    let mut out = [0u8; 1500];
    x.chunks_exact(960)
        .map(|frame| {
            let len = enc
                .encode_float_to_slice(frame, &mut out)
                .map_err(|e| anyhow::anyhow!("opus encode: {e:?}"))?;
            Ok(Bytes::copy_from_slice(&out[..len]))
        })
        .collect()
}

/// The stage of the server, with its delay read after every packet.
struct Measured {
    inner: Disguiser,
    delays: Arc<std::sync::Mutex<Vec<f64>>>,
}

impl VoiceStage for Measured {
    fn process(&mut self, samples: &mut [f32]) -> Result<(), String> {
        self.inner.process(samples);
        let ms = self.inner.delay() * 1000.0 / RATE as f64;
        self.delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ms);
        Ok(())
    }
}

pub fn run(args: &VoiceBenchArgs) -> anyhow::Result<()> {
    let voice: Voice = args.preset.parse().map_err(anyhow::Error::msg)?;
    let preset = voice.preset().context("`none` is not a disguise")?;
    let counts: Vec<usize> = args
        .voices
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .context("--voices: numbers, comma-separated")
        })
        .collect::<anyhow::Result<_>>()?;
    let input = packets(&talker(args.seconds))?;

    let delays = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut codec = VoiceCodec::new(Box::new(Measured {
        inner: Disguiser::new(preset),
        delays: delays.clone(),
    }))
    .map_err(anyhow::Error::msg)?;
    let mut per_packet = Vec::with_capacity(input.len());
    for p in &input {
        let t = Instant::now();
        codec.disguise(p).map_err(anyhow::Error::msg)?;
        per_packet.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let delays = delays.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let added: Vec<f64> = delays.iter().zip(&per_packet).map(|(d, p)| d + p).collect();
    let per = stat(per_packet);

    let mut together = Vec::new();
    for &n in &counts {
        let input = Arc::new(input.clone());
        let start = Instant::now() + Duration::from_millis(50);
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let input = input.clone();
                std::thread::spawn(move || -> Result<Vec<f64>, String> {
                    let mut codec = VoiceCodec::new(Box::new(Disguiser::new(preset)))?;
                    let mut waits = Vec::with_capacity(input.len());
                    for (i, p) in input.iter().enumerate() {
                        let due = start + Duration::from_millis(20 * i as u64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        codec.disguise(p)?;
                        waits.push(Instant::now().duration_since(due).as_secs_f64() * 1e3);
                    }
                    Ok(waits)
                })
            })
            .collect();
        let mut waits = Vec::new();
        for t in threads {
            waits.extend(
                t.join()
                    .map_err(|_| anyhow::anyhow!("a voice thread panicked"))?
                    .map_err(anyhow::Error::msg)?,
            );
        }
        let late = waits.iter().filter(|w| **w > 20.0).count() as f64 / waits.len() as f64;
        together.push(Together {
            voices: n,
            late_share: (late * 1e4).round() / 1e4,
            wait_ms: stat(waits),
        });
    }

    let result = VoiceBench {
        preset: voice.as_str(),
        packets: input.len(),
        per_packet_ms: per,
        disguise_delay_ms: stat(delays),
        added_latency_ms: stat(added),
        core_share_per_voice: (per.median / 20.0 * 1e4).round() / 1e4,
        together,
    };
    println!(
        "voice disguise `{}`, {} packets of 20 ms (48 kHz Opus in, 16 kHz disguise, Opus out)",
        result.preset, result.packets
    );
    println!("{:<44} {:>10} {:>10}", "", "median", "p99");
    for (name, s) in [
        (
            "decode + disguise + encode, ms per packet",
            result.per_packet_ms,
        ),
        ("disguise delay, ms", result.disguise_delay_ms),
        (
            "added latency (delay + packet), ms",
            result.added_latency_ms,
        ),
    ] {
        println!("{name:<44} {:>10.3} {:>10.3}", s.median, s.p99);
    }
    println!(
        "one disguised voice takes {:.2} % of a core",
        result.core_share_per_voice * 100.0
    );
    for t in &result.together {
        println!(
            "{:>4} voices at once: packet done {:.3} ms after due (median), {:.3} ms (p99); {:.2} % later than 20 ms",
            t.voices,
            t.wait_ms.median,
            t.wait_ms.p99,
            t.late_share * 100.0
        );
    }
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({ "bench": "voice", "result": result }))?
    );
    Ok(())
}
