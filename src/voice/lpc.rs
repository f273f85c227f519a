//! Linear prediction: the spectral envelope of a short window of speech (its formants) as an
//! all-pole filter, in lattice form so that a filter may change every subframe without
//! clicks or instability; and the envelope moved along the frequency axis (a formant shift).
//!
//! Convention: `A(z) = 1 + Σ aᵢ z⁻ⁱ`; the residual `e = A(z)·x` is the speech with its
//! envelope removed (the excitation: pitch pulses or noise), and `x = e / A(z)` puts it back.

use std::f32::consts::PI;

/// The predictor's order at 16 kHz: two poles per formant up to 8 kHz, and a few for the
/// glottal tilt.
pub const ORDER: usize = 18;

/// Points on the envelope over [0, π] when it is moved along the frequency axis.
const GRID: usize = 128;

/// One envelope: the lattice's reflection coefficients and the prediction error it leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Envelope {
    /// `k[m]` for m = 1..=ORDER (index 0 unused).
    pub reflection: [f32; ORDER + 1],
    /// The prediction error energy, on the scale of the autocorrelation it came from.
    pub error: f32,
}

impl Envelope {
    /// The flat envelope (`A(z) = 1`): the filters pass the signal through.
    pub const FLAT: Envelope = Envelope {
        reflection: [0.0; ORDER + 1],
        error: 0.0,
    };

    /// The direct-form coefficients `a₀ = 1, a₁ … a_ORDER` of the same filter.
    pub fn predictor(&self) -> [f32; ORDER + 1] {
        let mut a = [0.0f32; ORDER + 1];
        a[0] = 1.0;
        for i in 1..=ORDER {
            let k = self.reflection[i];
            let prev = a;
            for j in 1..i {
                a[j] = prev[j] + k * prev[i - j];
            }
            a[i] = k;
        }
        a
    }
}

/// Levinson–Durbin: the envelope whose autocorrelation matches `r[0..=ORDER]`. A zero or
/// non-finite `r[0]` (silence) gives the flat envelope.
pub fn levinson(r: &[f32; ORDER + 1]) -> Envelope {
    let mut out = Envelope::FLAT;
    if r[0].is_nan() || r[0] <= f32::MIN_POSITIVE || !r[0].is_finite() {
        return out;
    }
    let mut a = [0.0f64; ORDER + 1];
    a[0] = 1.0;
    let mut err = r[0] as f64;
    for i in 1..=ORDER {
        let mut acc = r[i] as f64;
        for j in 1..i {
            acc += a[j] * r[i - j] as f64;
        }
        let k = (-acc / err).clamp(-0.9995, 0.9995);
        let prev = a;
        for j in 1..i {
            a[j] = prev[j] + k * prev[i - j];
        }
        a[i] = k;
        err *= 1.0 - k * k;
        out.reflection[i] = k as f32;
    }
    out.error = err as f32;
    out
}

/// The autocorrelation of `x` (already windowed) at lags 0..=ORDER, with a 60 Hz Gaussian
/// lag window (it widens sharp peaks so one harmonic is not taken for a formant) and a
/// -40 dB noise floor that keeps the recursion well conditioned.
pub fn autocorrelation(x: &[f32], lag_window: &[f32; ORDER + 1]) -> [f32; ORDER + 1] {
    let mut r = [0.0f32; ORDER + 1];
    for (lag, out) in r.iter_mut().enumerate() {
        let mut acc = 0.0f32;
        for n in lag..x.len() {
            acc += x[n] * x[n - lag];
        }
        *out = acc * lag_window[lag];
    }
    r[0] *= 1.0001;
    r
}

/// The lag window of [`autocorrelation`] at `rate` Hz.
pub fn lag_window(rate: f32) -> [f32; ORDER + 1] {
    let mut w = [0.0f32; ORDER + 1];
    for (i, v) in w.iter_mut().enumerate() {
        let x = 2.0 * PI * 60.0 * i as f32 / rate;
        *v = (-0.5 * x * x).exp();
    }
    w
}

/// A lattice filter's memory: `b[m]` holds the order-m backward error of the previous sample.
#[derive(Debug, Clone, Default)]
pub struct Lattice {
    b: [f32; ORDER],
}

impl Lattice {
    /// The analysis filter `A(z)`: speech in, residual out.
    pub fn whiten(&mut self, env: &Envelope, x: f32) -> f32 {
        let k = &env.reflection;
        let mut f = x;
        let mut b_here = x;
        for m in 1..=ORDER {
            let b_before = self.b[m - 1];
            let f_next = f + k[m] * b_before;
            let b_next = b_before + k[m] * f;
            self.b[m - 1] = b_here;
            b_here = b_next;
            f = f_next;
        }
        f
    }

    /// The synthesis filter `1 / A(z)`: residual in, speech out. Stable for any
    /// coefficients of magnitude below one, which [`levinson`] guarantees.
    pub fn colour(&mut self, env: &Envelope, e: f32) -> f32 {
        let k = &env.reflection;
        let mut f = e;
        for m in (1..=ORDER).rev() {
            f -= k[m] * self.b[m - 1];
            if m < ORDER {
                self.b[m] = self.b[m - 1] + k[m] * f;
            }
        }
        self.b[0] = f;
        f
    }

    pub fn reset(&mut self) {
        self.b = [0.0; ORDER];
    }
}

/// Moves envelopes along the frequency axis: what the envelope showed at frequency f it shows
/// at `factor`·f (formants up for a factor above one). Tables computed once per factor.
#[derive(Debug, Clone)]
pub struct FormantShift {
    factor: f32,
    /// cos(i·ωⱼ), sin(i·ωⱼ) for i = 0..=ORDER and the grid's ωⱼ.
    cos: Vec<[f32; ORDER + 1]>,
    sin: Vec<[f32; ORDER + 1]>,
}

impl FormantShift {
    pub fn new(factor: f32) -> Self {
        let mut cos = Vec::with_capacity(GRID);
        let mut sin = Vec::with_capacity(GRID);
        for j in 0..GRID {
            let w = PI * j as f32 / (GRID - 1) as f32;
            let mut c = [0.0f32; ORDER + 1];
            let mut s = [0.0f32; ORDER + 1];
            for i in 0..=ORDER {
                c[i] = (w * i as f32).cos();
                s[i] = (w * i as f32).sin();
            }
            cos.push(c);
            sin.push(s);
        }
        Self { factor, cos, sin }
    }

    /// The envelope moved by the factor, and the gain that keeps the loudness of a residual
    /// coloured by it equal to that of the original envelope.
    pub fn apply(&self, env: &Envelope) -> (Envelope, f32) {
        if (self.factor - 1.0).abs() < 1e-4 || env.error <= 0.0 {
            return (*env, 1.0);
        }
        let a = env.predictor();
        // The envelope's power on the grid: error / |A(e^{jω})|².
        let mut power = [0.0f32; GRID];
        for (j, p) in power.iter_mut().enumerate() {
            let (mut re, mut im) = (0.0f32, 0.0f32);
            for i in 0..=ORDER {
                re += a[i] * self.cos[j][i];
                im -= a[i] * self.sin[j][i];
            }
            *p = env.error / (re * re + im * im).max(1e-12);
        }
        // Moved: the power at ω is the original's at ω / factor (past π, the value at π).
        let mut moved = [0.0f32; GRID];
        for (j, m) in moved.iter_mut().enumerate() {
            let src = j as f32 / self.factor;
            *m = if src >= (GRID - 1) as f32 {
                power[GRID - 1]
            } else {
                let i = src as usize;
                let t = src - i as f32;
                power[i] * (1.0 - t) + power[i + 1] * t
            };
        }
        // Its autocorrelation (the inverse cosine transform, trapezoid rule), then the
        // all-pole fit of it.
        let mut r = [0.0f32; ORDER + 1];
        for (j, m) in moved.iter().enumerate() {
            let weight = if j == 0 || j == GRID - 1 { 0.5 } else { 1.0 };
            for i in 0..=ORDER {
                r[i] += weight * m * self.cos[j][i];
            }
        }
        for v in &mut r {
            *v /= (GRID - 1) as f32;
        }
        r[0] *= 1.0001;
        let shifted = levinson(&r);
        let gain = if shifted.error > 0.0 {
            (shifted.error / env.error).sqrt()
        } else {
            1.0
        };
        (shifted, gain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vowel(n: usize, rate: f32) -> Vec<f32> {
        // A pulse train at 120 Hz through two resonances (700 Hz, 1200 Hz).
        let mut out = vec![0.0f32; n];
        let (mut y1, mut y2, mut z1, mut z2) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        let res = |f: f32, bw: f32| {
            let r = (-PI * bw / rate).exp();
            (2.0 * r * (2.0 * PI * f / rate).cos(), -r * r)
        };
        let (a1, a2) = res(700.0, 80.0);
        let (b1, b2) = res(1200.0, 90.0);
        let period = (rate / 120.0) as usize;
        for (i, o) in out.iter_mut().enumerate() {
            let e = if i % period == 0 { 1.0 } else { 0.0 };
            let y = e + a1 * y1 + a2 * y2;
            y2 = y1;
            y1 = y;
            let z = y + b1 * z1 + b2 * z2;
            z2 = z1;
            z1 = z;
            *o = z * 0.01;
        }
        out
    }

    #[test]
    fn whitening_then_colouring_gives_the_signal_back() {
        let x = vowel(4000, 16000.0);
        let lw = lag_window(16000.0);
        let (mut a, mut s) = (Lattice::default(), Lattice::default());
        let mut worst = 0.0f32;
        for (c, chunk) in x.chunks(80).enumerate() {
            // A different envelope every subframe: the lattices stay exact inverses.
            let start = (c * 80).saturating_sub(320);
            let env = levinson(&autocorrelation(&x[start..c * 80 + chunk.len()], &lw));
            for &v in chunk {
                let y = s.colour(&env, a.whiten(&env, v));
                worst = worst.max((y - v).abs());
            }
        }
        assert!(worst < 1e-4, "reconstruction error {worst}");
    }

    #[test]
    fn the_residual_carries_far_less_energy_than_the_speech() {
        let x = vowel(4000, 16000.0);
        let env = levinson(&autocorrelation(&x[1000..1384], &lag_window(16000.0)));
        let mut a = Lattice::default();
        let e: Vec<f32> = x.iter().map(|&v| a.whiten(&env, v)).collect();
        // The envelope (the resonances) is what the predictor takes out: at least 20 dB.
        let energy = |s: &[f32]| s.iter().map(|v| v * v).sum::<f32>();
        let gain = energy(&x[2000..3600]) / energy(&e[2000..3600]);
        assert!(gain > 100.0, "prediction gain {gain}");
    }

    /// The frequency of the envelope's strongest peak between `lo` and `hi` Hz.
    fn peak(env: &Envelope, lo: f32, hi: f32) -> f32 {
        let a = env.predictor();
        let mut best = (0.0f32, lo);
        let mut f = lo;
        while f <= hi {
            let w = 2.0 * PI * f / 16000.0;
            let (mut re, mut im) = (0.0f32, 0.0f32);
            for (i, ai) in a.iter().enumerate() {
                re += ai * (w * i as f32).cos();
                im -= ai * (w * i as f32).sin();
            }
            let p = 1.0 / (re * re + im * im);
            if p > best.0 {
                best = (p, f);
            }
            f += 5.0;
        }
        best.1
    }

    #[test]
    fn a_formant_shift_moves_the_envelope_peaks_by_its_factor() {
        let x = vowel(4000, 16000.0);
        let mut windowed = x[1000..1384].to_vec();
        for (i, v) in windowed.iter_mut().enumerate() {
            *v *= 0.5 - 0.5 * (2.0 * PI * i as f32 / 383.0).cos();
        }
        let env = levinson(&autocorrelation(&windowed, &lag_window(16000.0)));
        let f1 = peak(&env, 400.0, 950.0);
        assert!((f1 - 700.0).abs() < 60.0, "F1 found at {f1}");
        for factor in [0.85f32, 1.15] {
            let (moved, gain) = FormantShift::new(factor).apply(&env);
            let g1 = peak(&moved, 300.0, 1000.0);
            assert!(
                (g1 / f1 - factor).abs() < 0.03,
                "factor {factor}: F1 {f1} moved to {g1}"
            );
            assert!(gain > 0.3 && gain < 3.0, "gain {gain}");
        }
    }
}
