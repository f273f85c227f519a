//! Server-wide counters and latency histograms, exposed at `GET /metrics` in the Prometheus
//! text format. Everything is a relaxed atomic: recording costs a few nanoseconds on the hot
//! path and never takes a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::infer::scheduler::SchedulerMetrics;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.133, 0.25, 0.5, 1.0,
];

/// A cumulative latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// What the video pipelines and egress count, summed over all streams.
#[derive(Debug, Default)]
pub struct MediaMetrics {
    /// Access units handed to a pipeline.
    pub units_in: AtomicU64,
    /// Access units refused because a pipeline's input was full (decoder far behind).
    pub units_rejected: AtomicU64,
    pub frames_decoded: AtomicU64,
    /// Decoded pictures replaced by a newer one before the stage took them.
    pub frames_dropped: AtomicU64,
    pub frames_out: AtomicU64,
    /// Encoded frames egress could not take.
    pub output_dropped: AtomicU64,
    /// Frames dropped for one subscriber (its queue full, or waiting for a keyframe after).
    pub egress_dropped: AtomicU64,
    pub decode_errors: AtomicU64,
    pub encode_errors: AtomicU64,
    pub stage_panics: AtomicU64,
    /// PLIs sent to publishers.
    pub plis_sent: AtomicU64,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests: AtomicU64,
    /// Published tracks alive now (gauges).
    pub video_streams: AtomicU64,
    pub audio_streams: AtomicU64,
    pub decode: Histogram,
    pub stage: Histogram,
    pub encode: Histogram,
    /// Last RTP packet of a frame in → first RTP packet of its re-encoded frame out.
    pub server_latency: Histogram,
    /// Frames whose face the live stage swapped.
    pub swapped_frames: AtomicU64,
    /// Frames of a stream with a chosen face whose inference failed (timeout, full queue, model
    /// error); what went out instead is counted below (`swap.on_failure`).
    pub swap_errors: AtomicU64,
    /// Frames of a stream with a chosen face that went out as the last swapped frame again.
    pub held_frames: AtomicU64,
    /// Frames of a stream with a chosen face that went out with the face regions pixelated.
    pub blurred_frames: AtomicU64,
    /// Frames of a stream with a chosen face that went out unswapped (`on_failure = "pass"`).
    pub unswapped_frames: AtomicU64,
    /// Live swap stages, per frame that ran them: detection (the time a frame waited for one,
    /// queueing included: the first frame of a track, or a detector behind its cadence; other
    /// detections run in the background), crop warp, swapper (queueing included), paste-back
    /// and label.
    pub swap_detect: Histogram,
    pub swap_align: Histogram,
    pub swap_swap: Histogram,
    pub swap_paste: Histogram,
}

impl MediaMetrics {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Gauges read at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub participants: usize,
    pub rooms: usize,
    pub sessions: usize,
    /// WebRTC peer connections alive in the process.
    pub peer_connections: usize,
    pub roulette: crate::room::roulette::RouletteStats,
}

/// Renders everything in the Prometheus text exposition format (version 0.0.4).
pub fn render(media: &MediaMetrics, gauges: Gauges) -> String {
    let mut out = String::with_capacity(4096);
    let mut gauge = |name: &str, help: &str, value: usize, labels: &str| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {value}"
        );
    };
    gauge(
        "facerelay_participants",
        "Participants in rooms.",
        gauges.participants,
        "",
    );
    gauge(
        "facerelay_rooms",
        "Rooms with at least one participant.",
        gauges.rooms,
        "",
    );
    gauge(
        "facerelay_signalling_sessions",
        "Open signalling WebSockets.",
        gauges.sessions,
        "",
    );
    gauge(
        "facerelay_peer_connections",
        "WebRTC peer connections alive.",
        gauges.peer_connections,
        "",
    );
    let r = gauges.roulette;
    gauge(
        "facerelay_roulette_online",
        "Participants in the roulette, waiting or paired.",
        r.online,
        "",
    );
    gauge(
        "facerelay_roulette_waiting",
        "Roulette participants waiting for a partner.",
        r.waiting,
        "",
    );
    for (name, help, value) in [
        (
            "facerelay_roulette_pairs_total",
            "Roulette pairs made.",
            r.pairs_made,
        ),
        (
            "facerelay_roulette_reports_total",
            "Roulette partners reported.",
            r.reports,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP facerelay_published_streams Tracks being relayed.\n# TYPE facerelay_published_streams gauge\n\
         facerelay_published_streams{{kind=\"video\"}} {}\nfacerelay_published_streams{{kind=\"audio\"}} {}",
        MediaMetrics::get(&media.video_streams),
        MediaMetrics::get(&media.audio_streams)
    );
    let counters: [(&str, &str, &AtomicU64); 17] = [
        (
            "facerelay_swapped_frames_total",
            "Frames whose face the live stage swapped.",
            &media.swapped_frames,
        ),
        (
            "facerelay_swap_errors_total",
            "Frames of a stream with a chosen face whose inference failed (timeout, busy, model error).",
            &media.swap_errors,
        ),
        (
            "facerelay_held_frames_total",
            "Frames that could not be swapped and went out as the last swapped frame (swap.on_failure).",
            &media.held_frames,
        ),
        (
            "facerelay_blurred_frames_total",
            "Frames that could not be swapped and went out with the faces pixelated (swap.on_failure).",
            &media.blurred_frames,
        ),
        (
            "facerelay_unswapped_frames_total",
            "Frames that could not be swapped and went out as they were (swap.on_failure = pass).",
            &media.unswapped_frames,
        ),
        (
            "facerelay_units_in_total",
            "H.264 access units received from publishers.",
            &media.units_in,
        ),
        (
            "facerelay_units_rejected_total",
            "Access units refused because the decoder was a whole queue behind.",
            &media.units_rejected,
        ),
        (
            "facerelay_frames_decoded_total",
            "Pictures decoded.",
            &media.frames_decoded,
        ),
        (
            "facerelay_frames_dropped_total",
            "Decoded pictures dropped because a newer one arrived before the stage was free.",
            &media.frames_dropped,
        ),
        (
            "facerelay_frames_out_total",
            "Frames re-encoded and sent to subscribers.",
            &media.frames_out,
        ),
        (
            "facerelay_output_dropped_total",
            "Encoded frames dropped because egress was full.",
            &media.output_dropped,
        ),
        (
            "facerelay_egress_dropped_frames_total",
            "Video frames dropped for one subscriber whose queue was full (or that waited for a keyframe after).",
            &media.egress_dropped,
        ),
        (
            "facerelay_decode_errors_total",
            "Access units the decoder rejected.",
            &media.decode_errors,
        ),
        (
            "facerelay_encode_errors_total",
            "Frames the encoder failed on.",
            &media.encode_errors,
        ),
        (
            "facerelay_stage_panics_total",
            "Frames on which the frame stage panicked (passed through).",
            &media.stage_panics,
        ),
        (
            "facerelay_plis_sent_total",
            "Picture loss indications sent to publishers.",
            &media.plis_sent,
        ),
        (
            "facerelay_keyframe_requests_total",
            "PLI/FIR received from subscribers.",
            &media.keyframe_requests,
        ),
    ];
    for (name, help, counter) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            MediaMetrics::get(counter)
        );
    }
    let _ = writeln!(
        out,
        "# HELP facerelay_stage_seconds Time per frame in each pipeline stage.\n# TYPE facerelay_stage_seconds histogram"
    );
    for (stage, h) in [
        ("decode", &media.decode),
        ("process", &media.stage),
        ("encode", &media.encode),
    ] {
        h.render(
            &mut out,
            "facerelay_stage_seconds",
            &format!("stage=\"{stage}\""),
        );
    }
    let _ = writeln!(
        out,
        "# HELP facerelay_swap_stage_seconds Time per frame in each stage of the live face swap.\n# TYPE facerelay_swap_stage_seconds histogram"
    );
    for (stage, h) in [
        ("detect", &media.swap_detect),
        ("align", &media.swap_align),
        ("swap", &media.swap_swap),
        ("paste", &media.swap_paste),
    ] {
        h.render(
            &mut out,
            "facerelay_swap_stage_seconds",
            &format!("stage=\"{stage}\""),
        );
    }
    let _ = writeln!(
        out,
        "# HELP facerelay_server_latency_seconds Last RTP packet of a frame in to first RTP packet of its re-encoded frame out.\n\
         # TYPE facerelay_server_latency_seconds histogram"
    );
    media
        .server_latency
        .render(&mut out, "facerelay_server_latency_seconds", "");
    out
}

/// Renders the inference schedulers' counters, one `model` label per role: batches by size,
/// request outcomes, queue wait and run time. Appended to [`render`]'s text by whoever owns
/// the schedulers (the live swap stage).
pub fn render_schedulers(schedulers: &[(&str, &SchedulerMetrics)]) -> String {
    let mut out = String::with_capacity(2048);
    let _ = writeln!(
        out,
        "# HELP facerelay_infer_batches_total Model runs by batch size.\n# TYPE facerelay_infer_batches_total counter"
    );
    for (model, m) in schedulers {
        for (i, n) in m.batch_sizes.iter().enumerate() {
            let _ = writeln!(
                out,
                "facerelay_infer_batches_total{{model=\"{model}\",size=\"{}\"}} {}",
                i + 1,
                n.load(Ordering::Relaxed)
            );
        }
    }
    type Pick = fn(&SchedulerMetrics) -> &AtomicU64;
    let outcomes: [(&str, Pick); 6] = [
        ("completed", |m| &m.completed),
        ("superseded", |m| &m.superseded),
        ("failed", |m| &m.failed_requests),
        ("timeout", |m| &m.timeouts),
        ("busy", |m| &m.busy),
        ("panicked_runs", |m| &m.panics),
    ];
    let _ = writeln!(
        out,
        "# HELP facerelay_infer_requests_total Inference requests by outcome (panicked_runs counts model runs).\n# TYPE facerelay_infer_requests_total counter"
    );
    for (model, m) in schedulers {
        for (outcome, pick) in outcomes {
            let _ = writeln!(
                out,
                "facerelay_infer_requests_total{{model=\"{model}\",outcome=\"{outcome}\"}} {}",
                pick(m).load(Ordering::Relaxed)
            );
        }
    }
    for (name, help, pick) in [
        (
            "facerelay_infer_queue_wait_seconds",
            "Inference request submitted to taken by a worker.",
            (|m| &m.queue_wait) as fn(&SchedulerMetrics) -> &Histogram,
        ),
        (
            "facerelay_infer_run_seconds",
            "One model run (a batch).",
            |m| &m.run,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (model, m) in schedulers {
            pick(m).render(&mut out, name, &format!("model=\"{model}\""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_is_in_seconds() {
        let h = Histogram::default();
        h.record(Duration::from_micros(300));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.004\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 5.0033"), "{out}");
    }

    #[test]
    fn render_names_every_series_once() {
        let m = MediaMetrics::default();
        MediaMetrics::add(&m.frames_out);
        m.decode.record(Duration::from_millis(1));
        let text = render(
            &m,
            Gauges {
                participants: 3,
                ..Default::default()
            },
        );
        assert!(text.contains("facerelay_participants 3\n"));
        assert!(text.contains("facerelay_frames_out_total 1\n"));
        assert!(text.contains("facerelay_stage_seconds_count{stage=\"decode\"} 1\n"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}
