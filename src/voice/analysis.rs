//! Measurements of speech for the voice tests and `facerelay bench voice`: the pitch (YIN),
//! the first two formants (roots of the LPC polynomial), and the discontinuities a disguise
//! must not add (clicks, gaps). All work on mono samples in −1…1 at any rate.

/// Analysis hop: one value per 10 ms.
pub const HOP_SECONDS: f32 = 0.010;

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// The median of the finite values (`None` when there are none).
pub fn median(values: impl IntoIterator<Item = f32>) -> Option<f32> {
    let mut v: Vec<f32> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// The pitch every 10 ms (YIN over 30 ms windows, 60–450 Hz); `None` where the frame is
/// unvoiced or quieter than 35 dB below the loudest frame.
pub fn pitch_track(x: &[f32], rate: u32) -> Vec<Option<f32>> {
    let fs = rate as f32;
    let window = (0.030 * fs) as usize;
    let hop = (HOP_SECONDS * fs) as usize;
    let (tau_min, tau_max) = ((fs / 450.0) as usize, (fs / 60.0) as usize);
    if x.len() < window + tau_max + 1 {
        return Vec::new();
    }
    let frames = (x.len() - window - tau_max) / hop;
    let loudest = (0..frames)
        .map(|f| rms(&x[f * hop..f * hop + window]))
        .fold(0.0f32, f32::max);
    let gate = loudest * 10f32.powf(-35.0 / 20.0);
    let mut d = vec![0.0f32; tau_max + 1];
    (0..frames)
        .map(|f| {
            let s = &x[f * hop..];
            if rms(&s[..window]) < gate || gate <= 0.0 {
                return None;
            }
            for (tau, dt) in d.iter_mut().enumerate().skip(1) {
                *dt = (0..window).map(|j| (s[j] - s[j + tau]).powi(2)).sum();
            }
            // Cumulative mean normalised difference.
            let mut cum = 0.0f32;
            let mut cmnd = vec![1.0f32; tau_max + 1];
            for tau in 1..=tau_max {
                cum += d[tau];
                cmnd[tau] = if cum > 0.0 {
                    d[tau] * tau as f32 / cum
                } else {
                    1.0
                };
            }
            let mut tau = (tau_min..tau_max).find(|&t| cmnd[t] < 0.12).or_else(|| {
                let best = (tau_min..tau_max).min_by(|&a, &b| cmnd[a].total_cmp(&cmnd[b]))?;
                (cmnd[best] < 0.25).then_some(best)
            })?;
            while tau + 1 < tau_max && cmnd[tau + 1] < cmnd[tau] {
                tau += 1;
            }
            // Parabolic interpolation around the minimum.
            let (a, b, c) = (cmnd[tau - 1], cmnd[tau], cmnd[tau + 1]);
            let den = a - 2.0 * b + c;
            let shift = if den.abs() > 1e-9 {
                0.5 * (a - c) / den
            } else {
                0.0
            };
            Some(fs / (tau as f32 + shift.clamp(-1.0, 1.0)))
        })
        .collect()
}

/// The median pitch of the voiced frames.
pub fn median_pitch(x: &[f32], rate: u32) -> Option<f32> {
    median(pitch_track(x, rate).into_iter().flatten())
}

#[derive(Clone, Copy, Debug)]
struct C {
    re: f64,
    im: f64,
}

impl C {
    fn mul(self, o: C) -> C {
        C {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    fn sub(self, o: C) -> C {
        C {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }
    fn div(self, o: C) -> C {
        let n = (o.re * o.re + o.im * o.im).max(1e-300);
        C {
            re: (self.re * o.re + self.im * o.im) / n,
            im: (self.im * o.re - self.re * o.im) / n,
        }
    }
}

/// The roots of the monic polynomial `z^n + c[0] z^(n−1) + … + c[n−1]` (Durand–Kerner).
fn roots(c: &[f64]) -> Vec<C> {
    let n = c.len();
    let eval = |z: C| {
        let mut acc = C { re: 1.0, im: 0.0 };
        for &ci in c {
            acc = acc.mul(z);
            acc.re += ci;
        }
        acc
    };
    let seed = C { re: 0.4, im: 0.9 };
    let mut z: Vec<C> = Vec::with_capacity(n);
    let mut p = C { re: 1.0, im: 0.0 };
    for _ in 0..n {
        p = p.mul(seed);
        z.push(p);
    }
    for _ in 0..500 {
        let mut moved = 0.0f64;
        for i in 0..n {
            let mut den = C { re: 1.0, im: 0.0 };
            for j in 0..n {
                if i != j {
                    den = den.mul(z[i].sub(z[j]));
                }
            }
            let step = eval(z[i]).div(den);
            z[i] = z[i].sub(step);
            moved = moved.max(step.re.abs() + step.im.abs());
        }
        if moved < 1e-10 {
            break;
        }
    }
    z
}

/// The first two formants (Hz) every 10 ms where the speech is voiced: the lowest two
/// resonances narrower than 400 Hz among the roots of a 25 ms frame's LPC polynomial
/// (order 2 + kHz, pre-emphasised, Hamming window).
pub fn formant_track(x: &[f32], rate: u32) -> Vec<Option<(f32, f32)>> {
    let fs = rate as f64;
    let window = (0.025 * fs) as usize;
    let hop = (HOP_SECONDS as f64 * fs) as usize;
    let order = 2 + (rate as usize / 1000);
    let voiced = pitch_track(x, rate);
    let pre = (-2.0 * std::f64::consts::PI * 50.0 / fs).exp();
    voiced
        .iter()
        .enumerate()
        .map(|(f, v)| {
            v.as_ref()?;
            // The pitch frame is 30 ms from f·hop; centre the 25 ms frame in it.
            let start = f * hop + (0.0025 * fs) as usize;
            let frame = x.get(start.saturating_sub(1)..start + window)?;
            let w: Vec<f64> = (0..window)
                .map(|i| {
                    let ham = 0.54
                        - 0.46
                            * (2.0 * std::f64::consts::PI * i as f64 / (window - 1) as f64).cos();
                    (frame[i + 1] as f64 - pre * frame[i] as f64) * ham
                })
                .collect();
            let r: Vec<f64> = (0..=order)
                .map(|lag| (lag..window).map(|n| w[n] * w[n - lag]).sum())
                .collect();
            if r[0] <= 0.0 {
                return None;
            }
            let mut a = vec![0.0f64; order + 1];
            a[0] = 1.0;
            let mut err = r[0] * 1.000001;
            for i in 1..=order {
                let acc: f64 = r[i] + (1..i).map(|j| a[j] * r[i - j]).sum::<f64>();
                let k = -acc / err;
                let prev = a.clone();
                for j in 1..i {
                    a[j] = prev[j] + k * prev[i - j];
                }
                a[i] = k;
                err *= 1.0 - k * k;
            }
            let mut found: Vec<f32> = roots(&a[1..])
                .into_iter()
                .filter(|z| z.im > 0.0)
                .filter_map(|z| {
                    let freq = z.im.atan2(z.re) * fs / (2.0 * std::f64::consts::PI);
                    let mag = (z.re * z.re + z.im * z.im).sqrt();
                    let bandwidth = -mag.ln() * fs / std::f64::consts::PI;
                    (freq > 90.0 && freq < fs / 2.0 - 50.0 && bandwidth < 400.0)
                        .then_some(freq as f32)
                })
                .collect();
            found.sort_by(|a, b| a.total_cmp(b));
            (found.len() >= 2).then(|| (found[0], found[1]))
        })
        .collect()
}

/// The median first and second formants of the voiced frames.
pub fn median_formants(x: &[f32], rate: u32) -> Option<(f32, f32)> {
    let track: Vec<(f32, f32)> = formant_track(x, rate).into_iter().flatten().collect();
    Some((
        median(track.iter().map(|f| f.0))?,
        median(track.iter().map(|f| f.1))?,
    ))
}

/// Clicks: a click is a burst of broadband energy, where voiced speech has little. Per 10 ms
/// block, the share of its energy that the third difference keeps (a high-pass of 18 dB per
/// octave: 8 kHz passes, 1 kHz is 42 dB down); the score is the largest block's share over
/// the median share of the 100 ms around it, among blocks no quieter than 40 dB below the
/// loudest. Speech changes its share slowly (a fricative's stretch is as long as the window's
/// half); a click in a vowel makes one block's share jump.
pub fn click_score(x: &[f32], rate: u32) -> f32 {
    let hop = (HOP_SECONDS * rate as f32) as usize;
    if x.len() < 12 * hop {
        return 0.0;
    }
    let h: Vec<f32> = (3..x.len())
        .map(|n| x[n] - 3.0 * x[n - 1] + 3.0 * x[n - 2] - x[n - 3])
        .collect();
    let blocks = h.len() / hop;
    let energy = |s: &[f32]| s.iter().map(|v| v * v).sum::<f32>();
    let level: Vec<f32> = (0..blocks)
        .map(|b| energy(&x[b * hop + 3..(b + 1) * hop + 3]))
        .collect();
    let share: Vec<f32> = (0..blocks)
        .map(|b| energy(&h[b * hop..(b + 1) * hop]) / level[b].max(1e-12))
        .collect();
    let loudest = level.iter().copied().fold(0.0f32, f32::max);
    let mut worst = 0.0f32;
    for b in 5..blocks.saturating_sub(5) {
        if level[b] < loudest * 1e-4 {
            continue;
        }
        let around = median(share[b - 5..=b + 5].iter().copied()).unwrap_or(0.0);
        if around > 0.0 {
            worst = worst.max(share[b] / around);
        }
    }
    worst
}

/// RMS per 10 ms block.
pub fn levels(x: &[f32], rate: u32) -> Vec<f32> {
    let hop = (HOP_SECONDS * rate as f32) as usize;
    x.chunks_exact(hop).map(rms).collect()
}

/// The lag (in 10 ms blocks, `0..max_lag`) at which `later`'s loudness contour best follows
/// `earlier`'s (normalised correlation of the dB contours).
pub fn contour_lag(earlier: &[f32], later: &[f32], max_lag: usize) -> usize {
    // In dB, floored 50 dB below the loudest block: a silent stretch counts as quiet, not as
    // minus infinity.
    let db = |v: &[f32]| -> Vec<f32> {
        let top = 20.0 * v.iter().copied().fold(1e-9f32, f32::max).log10();
        v.iter()
            .map(|x| (20.0 * x.max(1e-9).log10()).max(top - 50.0))
            .collect()
    };
    let (a, b) = (db(earlier), db(later));
    let score = |lag: usize| {
        let n = a.len().min(b.len().saturating_sub(lag));
        if n < 10 {
            return f32::MIN;
        }
        let (ma, mb) = (
            a[..n].iter().sum::<f32>() / n as f32,
            b[lag..lag + n].iter().sum::<f32>() / n as f32,
        );
        let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let (x, y) = (a[i] - ma, b[lag + i] - mb);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa * bb).sqrt().max(1e-9)
    };
    (0..max_lag)
        .max_by(|&x, &y| score(x).total_cmp(&score(y)))
        .unwrap_or(0)
}

/// The longest run of 10 ms blocks (in blocks) where `input` speaks (no quieter than 30 dB
/// below its loudest block) and `output`, `lag` blocks later, is 20 dB quieter than it: a
/// hole in the disguised speech.
pub fn longest_gap(input: &[f32], output: &[f32], lag: usize) -> usize {
    let loudest = input.iter().copied().fold(0.0f32, f32::max);
    let (mut run, mut longest) = (0usize, 0usize);
    for (i, &level) in input.iter().enumerate() {
        let Some(&out) = output.get(i + lag) else {
            break;
        };
        if level >= loudest * 10f32.powf(-30.0 / 20.0) && out < level * 0.1 {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::f32::consts::PI;

    /// A vowel-like sound: pulses at `f0` through resonances at 600 and 1500 Hz, peaking at
    /// half of full scale.
    pub(crate) fn vowel(seconds: f32, rate: u32, f0: impl Fn(f32) -> f32) -> Vec<f32> {
        let fs = rate as f32;
        let n = (seconds * fs) as usize;
        let res = |f: f32, bw: f32| {
            let r = (-PI * bw / fs).exp();
            (2.0 * r * (2.0 * PI * f / fs).cos(), -r * r)
        };
        let (a1, a2) = res(600.0, 70.0);
        let (b1, b2) = res(1500.0, 90.0);
        let (mut y1, mut y2, mut z1, mut z2, mut phase) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        let out = (0..n)
            .map(|i| {
                phase += f0(i as f32 / fs) / fs;
                let e = if phase >= 1.0 {
                    phase -= 1.0;
                    1.0
                } else {
                    0.0
                };
                let y = e + a1 * y1 + a2 * y2;
                (y2, y1) = (y1, y);
                let z = y + b1 * z1 + b2 * z2;
                (z2, z1) = (z1, z);
                z
            })
            .collect::<Vec<f32>>();
        let peak = out.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-9);
        out.into_iter().map(|v| 0.5 * v / peak).collect()
    }

    #[test]
    fn the_pitch_tracker_reads_the_pitch_of_a_pulse_train() {
        for f0 in [90.0f32, 130.0, 220.0] {
            let x = vowel(1.0, 16000, |_| f0);
            let p = median_pitch(&x, 16000).expect("voiced");
            assert!((p / f0 - 1.0).abs() < 0.01, "{f0} Hz read as {p}");
        }
        assert_eq!(median_pitch(&vec![0.0; 16000], 16000), None);
    }

    #[test]
    fn the_formant_tracker_finds_the_resonances() {
        let x = vowel(1.0, 16000, |t| 120.0 + 10.0 * (6.0 * t).sin());
        let (f1, f2) = median_formants(&x, 16000).expect("formants");
        assert!(
            (f1 - 600.0).abs() < 50.0 && (f2 - 1500.0).abs() < 80.0,
            "{f1} {f2}"
        );
    }

    #[test]
    fn a_step_in_a_vowel_scores_as_a_click() {
        let x = vowel(1.0, 16000, |_| 120.0);
        let smooth = click_score(&x, 16000);
        let mut clicked = x.clone();
        for v in &mut clicked[8000..] {
            *v += 0.1;
        }
        let click = click_score(&clicked, 16000);
        // The tests of the disguise allow 1.5 times the input's score.
        assert!(click > 1.5 * smooth, "smooth {smooth}, with a step {click}");
    }

    #[test]
    fn a_hole_in_the_output_is_found_where_it_is() {
        // Syllables: 120 ms of vowel, 80 ms of near silence, five times a second.
        let x: Vec<f32> = vowel(1.0, 16000, |_| 120.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % 3200 < 1920 { v } else { 0.01 * v })
            .collect();
        let mut y = vec![0.0f32; 480];
        y.extend_from_slice(&x);
        for v in &mut y[480 + 4000..480 + 4000 + 800] {
            *v = 0.0;
        }
        let (lx, ly) = (levels(&x, 16000), levels(&y, 16000));
        let lag = contour_lag(&lx, &ly, 20);
        assert_eq!(lag, 3);
        assert_eq!(longest_gap(&lx, &ly, lag), 5);
        assert_eq!(
            longest_gap(&lx, &levels(&[vec![0.0; 480], x].concat(), 16000), lag),
            0
        );
    }
}
