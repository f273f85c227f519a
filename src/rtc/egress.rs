//! Fan-out of one published stream to its subscribers.
//!
//! Video: each re-encoded access unit is payloaded once; every subscriber gets the same
//! payload bytes under its own RTP header (SSRC, payload type and sequence numbers of its
//! negotiated sender). Audio: the publisher's Opus packets go out unchanged but for SSRC,
//! payload type and header extensions (their ids belong to the publisher's session).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc_core::rtp::codec::h264::H264Payloader;
use rtc_core::rtp::packetizer::Payloader;
use rtc_core::rtp::{Header, Packet};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

use crate::media::pipeline::OutputUnit;
use crate::metrics::MediaMetrics;

const MTU: usize = 1200;
const NO_PAYLOAD_TYPE: u32 = u32::MAX;
/// Latency samples kept for the summary (a ring; oldest go first).
const LATENCY_SAMPLES: usize = 20_000;

/// One subscriber's sending end.
pub(crate) struct Sink {
    pub(crate) id: u64,
    pub(crate) track: Arc<TrackLocalStaticRTP>,
    pub(crate) ssrc: u32,
    /// Negotiated payload type; none until the subscriber's answer has been applied.
    payload_type: AtomicU32,
    next_seq: AtomicU16,
}

impl Sink {
    pub(crate) fn new(id: u64, track: Arc<TrackLocalStaticRTP>, ssrc: u32) -> Self {
        Self {
            id,
            track,
            ssrc,
            payload_type: AtomicU32::new(NO_PAYLOAD_TYPE),
            next_seq: AtomicU16::new(rand_u16()),
        }
    }

    pub(crate) fn activate(&self, payload_type: u8) {
        self.payload_type
            .store(payload_type as u32, Ordering::Release);
    }

    pub(crate) fn is_active(&self) -> bool {
        self.payload_type.load(Ordering::Acquire) != NO_PAYLOAD_TYPE
    }

    fn payload_type(&self) -> Option<u8> {
        match self.payload_type.load(Ordering::Acquire) {
            NO_PAYLOAD_TYPE => None,
            pt => Some(pt as u8),
        }
    }
}

/// The subscribers of one published stream.
#[derive(Default)]
pub(crate) struct Fanout {
    sinks: Mutex<Vec<Arc<Sink>>>,
    pub(crate) packets_out: AtomicU64,
}

impl Fanout {
    pub(crate) fn add(&self, sink: Arc<Sink>) {
        self.lock().push(sink);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Sink>>> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribers that can be written to now (the lock is not held across the writes).
    fn active(&self) -> Vec<(Arc<Sink>, u8)> {
        self.lock()
            .iter()
            .filter_map(|s| Some((s.clone(), s.payload_type()?)))
            .collect()
    }

    /// Writes one re-encoded access unit to every subscriber. Returns when the first packet
    /// went out, if any subscriber took it.
    pub(crate) async fn send_video(
        &self,
        payloader: &mut H264Payloader,
        unit: &OutputUnit,
    ) -> Option<Instant> {
        let sinks = self.active();
        if sinks.is_empty() {
            return None;
        }
        let payloads = match payloader.payload(MTU, &unit.data) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot packetize an encoded frame");
                return None;
            }
        };
        let mut first_out = None;
        let last = payloads.len() - 1;
        for (sink, payload_type) in sinks {
            for (i, payload) in payloads.iter().enumerate() {
                let packet = Packet {
                    header: Header {
                        version: 2,
                        marker: i == last,
                        payload_type,
                        sequence_number: sink.next_seq.fetch_add(1, Ordering::Relaxed),
                        timestamp: unit.timestamp,
                        ssrc: sink.ssrc,
                        ..Default::default()
                    },
                    payload: payload.clone(),
                };
                if sink.track.write_rtp(packet).await.is_err() {
                    // Not bound yet, or closing: the subscriber's session cleans up.
                    break;
                }
                self.packets_out.fetch_add(1, Ordering::Relaxed);
                first_out.get_or_insert_with(Instant::now);
            }
        }
        first_out
    }

    /// Forwards one Opus packet to every subscriber.
    pub(crate) async fn send_audio(&self, packet: &Packet) {
        if packet.payload.is_empty() {
            return;
        }
        for (sink, payload_type) in self.active() {
            let out = Packet {
                header: Header {
                    version: 2,
                    marker: packet.header.marker,
                    payload_type,
                    sequence_number: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    ssrc: sink.ssrc,
                    ..Default::default()
                },
                payload: packet.payload.clone(),
            };
            if sink.track.write_rtp(out).await.is_ok() {
                self.packets_out.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs until the pipeline stops: writes each encoded frame to the subscribers and records
/// how long the server held it.
pub(crate) async fn run_video_egress(
    fanout: Arc<Fanout>,
    mut frames: tokio::sync::mpsc::Receiver<OutputUnit>,
    latency: Arc<LatencyRecorder>,
    metrics: Arc<MediaMetrics>,
) {
    let mut payloader = H264Payloader::default();
    while let Some(unit) = frames.recv().await {
        if let Some(sent) = fanout.send_video(&mut payloader, &unit).await {
            let held = sent.saturating_duration_since(unit.arrived);
            latency.record(unit.width, unit.height, held);
            metrics.server_latency.record(held);
        }
    }
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() as u16
}

pub(crate) fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(1);
    (h.finish() >> 16) as u32 | 1
}

/// Server-added latency samples, by resolution.
#[derive(Default)]
pub struct LatencyRecorder {
    samples: Mutex<VecDeque<(u32, u32, Duration)>>,
}

/// Order statistics of recorded latencies.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencyRecorder {
    pub fn record(&self, width: u32, height: u32, latency: Duration) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() == LATENCY_SAMPLES {
            s.pop_front();
        }
        s.push_back((width, height, latency));
    }

    pub fn clear(&self) {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Summary of the samples at one resolution (or all, with `None`).
    pub fn summary(&self, resolution: Option<(u32, u32)>) -> Option<LatencySummary> {
        let mut v: Vec<Duration> = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(w, h, _)| resolution.is_none_or(|r| r == (*w, *h)))
            .map(|s| s.2)
            .collect();
        summarize(&mut v)
    }
}

/// Median, p95, p99 and max of a set of durations (nearest-rank).
pub fn summarize(v: &mut [Duration]) -> Option<LatencySummary> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1].as_secs_f64() * 1000.0
    };
    Some(LatencySummary {
        count: v.len(),
        median_ms: at(0.5),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = summarize(&mut v).unwrap();
        assert_eq!(
            (s.median_ms, s.p95_ms, s.p99_ms, s.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert!(summarize(&mut []).is_none());
        let r = LatencyRecorder::default();
        r.record(640, 480, Duration::from_millis(4));
        r.record(1280, 720, Duration::from_millis(9));
        assert_eq!(r.summary(Some((640, 480))).unwrap().median_ms, 4.0);
        assert_eq!(r.summary(None).unwrap().count, 2);
    }
}
