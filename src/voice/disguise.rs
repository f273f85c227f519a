//! The disguise itself, on 16 kHz mono samples: the speech is split into its envelope (the
//! formants, by linear prediction every 5 ms) and its excitation (the residual: pitch pulses,
//! noise). The excitation is resampled by the pitch factor, its duration kept by splicing
//! whole pitch periods in or out where the waveform matches (no click), and whitened once more
//! (what the first whitening left of the envelope would otherwise move with the pitch); the
//! envelope is moved along the frequency axis by the formant factor and put back on. Pitch and
//! formants thus move independently. The `robot` preset replaces the excitation by a monotone pulse train.
//!
//! Streaming and causal: samples in, as many out, delayed by the splicer's look-back
//! (about 11 ms on average, at most [`MAX_DELAY`] samples).

use std::collections::VecDeque;
use std::f32::consts::PI;

use super::lpc::{self, Envelope, FormantShift, Lattice, ORDER};

/// The disguise's sample rate.
pub const RATE: u32 = 16_000;
/// An analysis subframe: the envelope is measured and changed every 5 ms.
const SUB: usize = 80;
/// The analysis window (24 ms) ends at the newest sample: no look-ahead.
const WINDOW: usize = 384;
/// The pre-emphasis coefficient.
const EMPHASIS: f32 = 0.9;
/// The splice's crossfade (4 ms).
const FADE: usize = 64;
/// Splice lengths: one or more pitch periods between 6 and 16 ms.
const SPLICE_MIN: usize = 96;
const SPLICE_MAX: usize = 256;
/// The waveform compared at a splice (10 ms behind the read head).
const COMPARE: usize = 160;
/// The excitation's ring buffer (128 ms).
const RING: usize = 2048;
/// The most the disguise delays a sample, in samples at [`RATE`] (23 ms at a factor of 1.6).
pub const MAX_DELAY: usize = FADE * 8 / 5 + 4 + SPLICE_MAX + 4;

/// What a preset does to a voice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// Pitch factor (0.5–1.6); ignored with `monotone`.
    pub pitch: f32,
    /// Formant factor (0.7–1.4): the envelope's frequencies are multiplied by it.
    pub formant: f32,
    /// A fixed pitch in Hz instead of the speaker's (the robot).
    pub monotone: Option<f32>,
}

/// Resamples the excitation by the pitch factor and keeps its duration by splicing.
struct Splicer {
    ring: Vec<f32>,
    /// Samples written so far.
    written: u64,
    /// The read head, in absolute samples (fractional).
    head: f64,
    factor: f64,
    /// A splice in progress: the old head (fading out) and how far the fade has gone.
    fade: Option<(f64, usize)>,
    min_delay: f64,
    /// The delay (written − head) seen at each output sample's subframe start.
    delay: f64,
}

impl Splicer {
    fn new(factor: f32) -> Self {
        let factor = factor.clamp(0.5, 1.6) as f64;
        let min_delay = FADE as f64 * factor.max(1.0) + 4.0;
        let start = min_delay + (SPLICE_MIN + SPLICE_MAX) as f64 / 4.0;
        Self {
            ring: vec![0.0; RING],
            written: 0,
            head: -start,
            factor,
            fade: None,
            min_delay,
            delay: start,
        }
    }

    fn at(&self, i: i64) -> f32 {
        if i < 0 || i as u64 >= self.written || self.written - i as u64 > RING as u64 {
            return 0.0;
        }
        self.ring[i as usize % RING]
    }

    /// Catmull-Rom interpolation at a fractional position.
    fn read(&self, pos: f64) -> f32 {
        let i = pos.floor() as i64;
        let t = (pos - i as f64) as f32;
        let (p0, p1, p2, p3) = (self.at(i - 1), self.at(i), self.at(i + 1), self.at(i + 2));
        p1 + 0.5
            * t
            * (p2 - p0
                + t * (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3 + t * (3.0 * (p1 - p2) + p3 - p0)))
    }

    /// How alike the `COMPARE` samples before positions `a` and `b` are (normalised
    /// cross-correlation, −1…1).
    fn likeness(&self, a: i64, b: i64) -> f32 {
        let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
        for n in 1..=COMPARE as i64 {
            let (x, y) = (self.at(a - n), self.at(b - n));
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa * bb).sqrt().max(1e-12)
    }

    /// The splice length (in `SPLICE_MIN..=max`) at which the waveform around the new head
    /// best continues the old one; `forward`: the head jumps ahead (factor below one).
    fn best_splice(&self, max: usize, forward: bool) -> usize {
        let here = self.head.floor() as i64;
        let mut best = (f32::MIN, SPLICE_MIN);
        for len in SPLICE_MIN..=max.max(SPLICE_MIN) {
            let there = if forward {
                here + len as i64
            } else {
                here - len as i64
            };
            let score = self.likeness(here, there);
            if score > best.0 {
                best = (score, len);
            }
        }
        best.1
    }

    fn push(&mut self, e: f32) -> f32 {
        self.ring[(self.written % RING as u64) as usize] = e;
        self.written += 1;
        let delay = self.written as f64 - self.head;
        if self.fade.is_none() && self.factor != 1.0 {
            if self.factor > 1.0 && delay < self.min_delay {
                let len = self.best_splice(SPLICE_MAX, false);
                self.fade = Some((self.head, 0));
                self.head -= len as f64;
            } else if self.factor < 1.0 && delay > self.min_delay + SPLICE_MAX as f64 {
                let room = (delay - self.min_delay) as usize;
                let len = self.best_splice(room.min(SPLICE_MAX), true);
                self.fade = Some((self.head, 0));
                self.head += len as f64;
            }
        }
        let mut out = self.read(self.head);
        if let Some((old, done)) = self.fade {
            let t = 0.5 - 0.5 * (PI * (done as f32 + 0.5) / FADE as f32).cos();
            out = out * t + self.read(old) * (1.0 - t);
            self.fade = (done + 1 < FADE).then_some((old + self.factor, done + 1));
        }
        self.head += self.factor;
        out
    }
}

/// Which signal an analysis window reads.
#[derive(Clone, Copy)]
enum Analysed {
    Speech,
    Excitation,
}

/// One voice's disguise: feed it the speaker's samples, get the disguised ones back.
pub struct Disguiser {
    preset: Preset,
    /// The newest `WINDOW` input samples.
    history: Vec<f32>,
    window: Vec<f32>,
    lag_window: [f32; ORDER + 1],
    analysis: Lattice,
    /// The second whitening, of the resampled excitation, and what it saw last.
    rewhitening: Lattice,
    shifted_history: Vec<f32>,
    keep: f32,
    synthesis: Lattice,
    /// The last input sample and output sample, for the pre- and de-emphasis.
    emphasis_in: f32,
    emphasis_out: f32,
    shift: FormantShift,
    splicer: Splicer,
    /// The moved envelopes of the latest subframes (newest first), with their gains: the
    /// excitation leaves the splicer late, and is coloured by the envelope of its own time.
    envelopes: VecDeque<(Envelope, f32)>,
    /// Robot: samples since its last pulse, and the excitation's running loudness.
    pulse_phase: f32,
    level: f32,
    pending: Vec<f32>,
    ready: VecDeque<f32>,
}

impl Disguiser {
    pub fn new(preset: Preset) -> Self {
        // Asymmetric window: rises over 20 ms, falls over the newest 4 ms.
        let rise = WINDOW - 64;
        let window = (0..WINDOW)
            .map(|i| {
                if i < rise {
                    (0.5 * PI * i as f32 / rise as f32).sin().powi(2)
                } else {
                    (0.5 * PI * (i - rise) as f32 / 64.0).cos()
                }
            })
            .collect();
        Self {
            preset,
            history: vec![0.0; WINDOW],
            window,
            lag_window: lpc::lag_window(RATE as f32),
            analysis: Lattice::default(),
            rewhitening: Lattice::default(),
            shifted_history: vec![0.0; WINDOW],
            keep: 1.0,
            emphasis_in: 0.0,
            emphasis_out: 0.0,
            synthesis: Lattice::default(),
            shift: FormantShift::new(preset.formant.clamp(0.7, 1.4)),
            splicer: Splicer::new(preset.pitch),
            envelopes: VecDeque::with_capacity(8),
            pulse_phase: 0.0,
            level: 0.0,
            pending: Vec::with_capacity(SUB),
            ready: VecDeque::new(),
        }
    }

    /// Adds a subframe to the history of `what` and returns the autocorrelation of that
    /// history under the analysis window.
    fn analyse(&mut self, what: Analysed, new: &[f32]) -> [f32; ORDER + 1] {
        let history = match what {
            Analysed::Speech => &mut self.history,
            Analysed::Excitation => &mut self.shifted_history,
        };
        history.drain(..new.len());
        history.extend_from_slice(new);
        let windowed: Vec<f32> = history
            .iter()
            .zip(&self.window)
            .map(|(x, w)| x * w)
            .collect();
        lpc::autocorrelation(&windowed, &self.lag_window)
    }

    /// The resampled excitation whitened once more: what the first whitening left of the
    /// envelope (it is never perfectly flat) was resampled with the pitch and would move the
    /// formants with it. Its loudness is kept.
    fn rewhiten(&mut self, shifted: Vec<f32>) -> Vec<f32> {
        let r = self.analyse(Analysed::Excitation, &shifted);
        let env = lpc::levinson(&r);
        let keep = if env.error > 0.0 {
            (r[0] / env.error).sqrt().clamp(1.0, 4.0)
        } else {
            1.0
        };
        // The gain glides from the last subframe's to this one's: no step at the boundary.
        let from = self.keep;
        self.keep = keep;
        shifted
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let t = (i + 1) as f32 / SUB as f32;
                (from + (keep - from) * t) * self.rewhitening.whiten(&env, e)
            })
            .collect()
    }

    /// The current delay of the disguise, in samples at [`RATE`].
    pub fn delay(&self) -> f64 {
        self.splicer.delay
    }

    /// Disguises `samples` in place (16 kHz, −1…1). The output lags the input by the
    /// splicer's delay; audio is processed in 5 ms subframes, so a block that is not a
    /// multiple of 80 samples adds the remainder once, at the start.
    pub fn process(&mut self, samples: &mut [f32]) {
        for &s in samples.iter() {
            self.pending.push(if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            });
            if self.pending.len() == SUB {
                self.subframe();
            }
        }
        if self.ready.len() < samples.len() {
            let missing = samples.len() - self.ready.len();
            for _ in 0..missing {
                self.ready.push_front(0.0);
            }
        }
        for s in samples.iter_mut() {
            *s = self.ready.pop_front().unwrap_or(0.0);
        }
    }

    fn subframe(&mut self) {
        let mut input = std::mem::take(&mut self.pending);
        // Pre-emphasis (the voice's spectral tilt is flattened before the analysis, and put
        // back after the synthesis), as speech codecs do: the envelope then holds the formants
        // rather than the tilt, and a flat excitation keeps the voice's tilt.
        for v in input.iter_mut() {
            let x = *v;
            *v = x - EMPHASIS * self.emphasis_in;
            self.emphasis_in = x;
        }
        let env = lpc::levinson(&self.analyse(Analysed::Speech, &input));
        if self.envelopes.len() == self.envelopes.capacity() {
            self.envelopes.pop_back();
        }
        self.envelopes.push_front(self.shift.apply(&env));
        self.splicer.delay = self.splicer.written as f64 + 1.0 - self.splicer.head;
        let (colour, gain) = match self.preset.monotone {
            Some(_) => self.envelopes[0],
            None => {
                let back = (self.splicer.delay / SUB as f64).round() as usize;
                self.envelopes[back.min(self.envelopes.len() - 1)]
            }
        };
        let mut energy = 0.0f32;
        let residual: Vec<f32> = input
            .iter()
            .map(|&x| {
                let e = self.analysis.whiten(&env, x);
                energy += e * e;
                e
            })
            .collect();
        // The robot's pulses carry the residual's loudness (attack fast, release slower).
        let loud = (energy / SUB as f32).sqrt();
        self.level = if loud > self.level {
            loud
        } else {
            0.7 * self.level + 0.3 * loud
        };
        let excitation: Vec<f32> = match self.preset.monotone {
            Some(f0) => {
                let period = RATE as f32 / f0;
                (0..SUB)
                    .map(|_| {
                        self.pulse_phase += 1.0;
                        if self.pulse_phase >= period {
                            self.pulse_phase -= period;
                            self.level * period.sqrt()
                        } else {
                            0.0
                        }
                    })
                    .collect()
            }
            None => {
                let shifted: Vec<f32> = residual.iter().map(|&e| self.splicer.push(e)).collect();
                self.rewhiten(shifted)
            }
        };
        let mut out = Vec::with_capacity(SUB);
        for e in excitation {
            let y = self.synthesis.colour(&colour, gain * e) + EMPHASIS * self.emphasis_out;
            if y.is_finite() {
                self.emphasis_out = y;
                out.push(y.clamp(-1.0, 1.0));
            } else {
                // Never expected (the lattice is stable); start the filters over, quiet.
                self.synthesis.reset();
                self.emphasis_out = 0.0;
                out.push(0.0);
            }
        }
        self.ready.extend(out);
        self.pending = input;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::analysis::{self, tests::vowel};
    use crate::voice::Voice;

    fn disguised(preset: Preset, x: &[f32]) -> (Vec<f32>, f64) {
        let mut d = Disguiser::new(preset);
        let mut y = x.to_vec();
        let mut most = 0.0f64;
        for block in y.chunks_mut(320) {
            d.process(block);
            most = most.max(d.delay());
        }
        (y, most)
    }

    /// A voice whose pitch glides between 100 and 140 Hz, as speech does.
    fn speech() -> Vec<f32> {
        vowel(2.0, RATE, |t| 120.0 + 20.0 * (2.0 * PI * 1.5 * t).sin())
    }

    #[test]
    fn with_no_change_the_voice_comes_out_as_it_went_in_a_little_later() {
        let x = speech();
        let (y, _) = disguised(
            Preset {
                pitch: 1.0,
                formant: 1.0,
                monotone: None,
            },
            &x,
        );
        // The lag with the best match, and how close the match is there.
        let best = (0..MAX_DELAY)
            .map(|lag| {
                let n = x.len() - MAX_DELAY;
                let (mut xy, mut xx, mut yy) = (0.0f32, 0.0f32, 0.0f32);
                for i in 4000..n {
                    xy += x[i] * y[i + lag];
                    xx += x[i] * x[i];
                    yy += y[i + lag] * y[i + lag];
                }
                (xy / (xx * yy).sqrt(), lag)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        // Not exactly the input: the second whitening and its gain follow the excitation's
        // own envelope every 5 ms (0.976 measured).
        assert!(best.0 > 0.95, "best match {} at lag {}", best.0, best.1);
        assert!(best.1 > 0 && best.1 < MAX_DELAY, "lag {}", best.1);
    }

    #[test]
    fn every_preset_moves_pitch_and_formants_by_its_factors_without_clicks() {
        let x = speech();
        let (p_in, (f1_in, f2_in)) = (
            analysis::median_pitch(&x, RATE).unwrap(),
            analysis::median_formants(&x, RATE).unwrap(),
        );
        let clicks_in = analysis::click_score(&x, RATE);
        for voice in &Voice::ALL[1..] {
            let preset = voice.preset().unwrap();
            let (y, most) = disguised(preset, &x);
            assert!(most <= MAX_DELAY as f64, "{voice:?}: delay {most}");
            let y = &y[1600..];
            let p_out = analysis::median_pitch(y, RATE).unwrap();
            let want = preset.monotone.unwrap_or(p_in * preset.pitch);
            assert!(
                (p_out / want - 1.0).abs() < 0.03,
                "{voice:?}: pitch {p_in} → {p_out}, want {want}"
            );
            let (f1, f2) = analysis::median_formants(y, RATE).unwrap();
            for (name, before, after) in [("F1", f1_in, f1), ("F2", f2_in, f2)] {
                let moved = after / before;
                assert!(
                    (moved / preset.formant - 1.0).abs() < 0.08,
                    "{voice:?}: {name} {before} → {after} (×{moved:.3}, want ×{})",
                    preset.formant
                );
            }
            let clicks = analysis::click_score(y, RATE);
            assert!(
                clicks < 1.5 * clicks_in,
                "{voice:?}: click score {clicks} (input {clicks_in})"
            );
        }
    }
}
