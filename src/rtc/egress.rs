//! Fan-out of one published stream to its subscribers.
//!
//! Video: each re-encoded access unit is payloaded once; every subscriber gets the same
//! payload bytes under its own RTP header (SSRC, payload type and sequence numbers of its
//! negotiated sender). Audio: the publisher's Opus packets go out unchanged but for SSRC,
//! payload type and header extensions (their ids belong to the publisher's session).
//!
//! Each subscriber has its own bounded packet queue and writer task, so one whose transport
//! is slow never delays the others. A video frame is queued whole or not at all: when a
//! subscriber's queue cannot take it, that subscriber skips frames until the next keyframe
//! (which the egress asks the encoder for) instead of receiving a broken picture.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use rtc_core::rtp::codec::h264::H264Payloader;
use rtc_core::rtp::packetizer::Payloader;
use rtc_core::rtp::{Header, Packet};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

use crate::media::pipeline::{OutputUnit, PipelineControl};
use crate::metrics::MediaMetrics;

const MTU: usize = 1200;
const NO_PAYLOAD_TYPE: u32 = u32::MAX;
/// Latency samples kept for the summary (a ring; oldest go first).
const LATENCY_SAMPLES: usize = 20_000;
/// Packets queued per subscriber (about 600 KB: a few seconds of video at call bit rates, and
/// more than the largest keyframe the pixel limit allows at them).
pub(crate) const QUEUE_PACKETS: usize = 512;

/// Writes one packet to a subscriber's transport; `false` when it could not.
pub(crate) type WriteFn =
    Arc<dyn Fn(Packet) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// One subscriber's sending end.
pub(crate) struct Sink {
    pub(crate) id: u64,
    pub(crate) track: Arc<TrackLocalStaticRTP>,
    pub(crate) ssrc: u32,
    /// Negotiated payload type; none until the subscriber's answer has been applied.
    payload_type: AtomicU32,
    next_seq: AtomicU16,
    /// Packets waiting for this subscriber's writer task.
    queue: mpsc::Sender<Packet>,
    /// A video frame could not be queued: nothing more until a keyframe.
    resync: AtomicBool,
    /// Video frames not queued because the queue was full.
    pub(crate) dropped_frames: AtomicU64,
}

impl Sink {
    /// A sink writing to `track`, with its writer task (needs a tokio runtime).
    pub(crate) fn new(id: u64, track: Arc<TrackLocalStaticRTP>, ssrc: u32) -> Self {
        let out = track.clone();
        let write: WriteFn = Arc::new(move |packet| {
            let out = out.clone();
            Box::pin(async move { out.write_rtp(packet).await.is_ok() })
        });
        Self::with_writer(id, track, ssrc, write)
    }

    /// A sink whose packets go to `write` (tests stand in a slow transport here).
    pub(crate) fn with_writer(
        id: u64,
        track: Arc<TrackLocalStaticRTP>,
        ssrc: u32,
        write: WriteFn,
    ) -> Self {
        let (queue, mut packets) = mpsc::channel::<Packet>(QUEUE_PACKETS);
        // Ends when the sink is dropped (its queue closes) and the queue is drained.
        tokio::spawn(async move {
            while let Some(packet) = packets.recv().await {
                // A failed write (not bound yet, or closing) loses that packet only; the
                // subscriber's session cleans up a closed connection.
                write(packet).await;
            }
        });
        Self {
            id,
            track,
            ssrc,
            payload_type: AtomicU32::new(NO_PAYLOAD_TYPE),
            next_seq: AtomicU16::new(rand_u16()),
            queue,
            resync: AtomicBool::new(false),
            dropped_frames: AtomicU64::new(0),
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

    /// Queues one re-encoded access unit for every subscriber, never waiting for any of them.
    pub(crate) fn send_video(&self, payloader: &mut H264Payloader, unit: &OutputUnit) -> VideoSent {
        let mut sent = VideoSent::default();
        let sinks = self.active();
        if sinks.is_empty() {
            return sent;
        }
        let payloads = match payloader.payload(MTU, &unit.data) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return sent,
            Err(e) => {
                tracing::warn!(error = %e, "cannot packetize an encoded frame");
                return sent;
            }
        };
        let last = payloads.len() - 1;
        for (sink, payload_type) in sinks {
            let resyncing = sink.resync.load(Ordering::Relaxed);
            if resyncing && !unit.keyframe {
                sink.dropped_frames.fetch_add(1, Ordering::Relaxed);
                sent.dropped_frames += 1;
                continue;
            }
            // The whole frame or nothing: a part of a frame is a broken picture.
            let Ok(permits) = sink.queue.try_reserve_many(payloads.len()) else {
                sink.dropped_frames.fetch_add(1, Ordering::Relaxed);
                sent.dropped_frames += 1;
                if !resyncing {
                    sink.resync.store(true, Ordering::Relaxed);
                    sent.fell_behind += 1;
                }
                continue;
            };
            sink.resync.store(false, Ordering::Relaxed);
            for (i, (permit, payload)) in permits.zip(&payloads).enumerate() {
                permit.send(Packet {
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
                });
            }
            self.packets_out
                .fetch_add(payloads.len() as u64, Ordering::Relaxed);
            sent.first_out.get_or_insert_with(Instant::now);
        }
        sent
    }

    /// Queues one Opus packet for every subscriber (dropped for one whose queue is full).
    pub(crate) fn send_audio(&self, packet: &Packet) {
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
            if sink.queue.try_send(out).is_ok() {
                self.packets_out.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What [`Fanout::send_video`] did with a frame.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VideoSent {
    /// When it was queued for the first subscriber, if any took it.
    pub(crate) first_out: Option<Instant>,
    /// Subscribers that did not get it (queue full, or waiting for a keyframe).
    pub(crate) dropped_frames: u64,
    /// Subscribers that fell behind on this frame (their queue could not take it): they get
    /// nothing until a keyframe, which the egress asks for once.
    pub(crate) fell_behind: u32,
}

/// Runs until the pipeline stops: queues each encoded frame for the subscribers, records how
/// long the server held it, and asks the encoder for a keyframe when a subscriber missed one.
pub(crate) async fn run_video_egress(
    fanout: Arc<Fanout>,
    mut frames: tokio::sync::mpsc::Receiver<OutputUnit>,
    control: Weak<PipelineControl>,
    latency: Arc<LatencyRecorder>,
    metrics: Arc<MediaMetrics>,
) {
    let mut payloader = H264Payloader::default();
    while let Some(unit) = frames.recv().await {
        let sent = fanout.send_video(&mut payloader, &unit);
        if let Some(at) = sent.first_out {
            let held = at.saturating_duration_since(unit.arrived);
            latency.record(unit.width, unit.height, held);
            metrics.server_latency.record(held);
        }
        if sent.fell_behind > 0 {
            if let Some(control) = control.upgrade() {
                control.request_idr();
            }
        }
        MediaMetrics::add_n(&metrics.egress_dropped_frames, sent.dropped_frames);
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

    /// A unit of `packets` RTP packets' worth of payload.
    fn unit(keyframe: bool, packets: usize) -> OutputUnit {
        // One NAL unit split into `packets` fragments (FU-A) by the payloader.
        let mut data = vec![0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }];
        data.resize(5 + (MTU - 10) * packets - 10, 0x5a);
        OutputUnit {
            data: bytes::Bytes::from(data),
            timestamp: 0,
            keyframe,
            arrived: Instant::now(),
            width: 640,
            height: 480,
        }
    }

    /// A sink whose writer counts packets, and waits for `gate` before each when given one.
    fn sink(id: u64, gate: Option<Arc<tokio::sync::Semaphore>>) -> (Arc<Sink>, Arc<AtomicU64>) {
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        let write: WriteFn = Arc::new(move |_packet| {
            let (gate, count) = (gate.clone(), count.clone());
            Box::pin(async move {
                if let Some(g) = gate {
                    g.acquire().await.unwrap().forget();
                }
                count.fetch_add(1, Ordering::Relaxed);
                true
            })
        });
        let track = crate::rtc::peer::local_track(crate::rtc::peer::MediaKind::Video, "s", "t", 1);
        let s = Arc::new(Sink::with_writer(id, track, 1, write));
        s.activate(102);
        (s, written)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_subscriber_never_delays_the_others_and_resumes_at_a_keyframe() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (stalled, stalled_got) = sink(1, Some(gate.clone()));
        let (healthy, healthy_got) = sink(2, None);
        let fanout = Fanout::default();
        fanout.add(stalled.clone());
        fanout.add(healthy);
        let mut payloader = H264Payloader::default();
        let frames = 300u64;
        let per_frame = 4u64;
        let (mut dropped, mut fell_behind) = (0, 0);
        // Frames at a steady pace (far faster than a camera), timing only the queueing.
        let mut queueing = Duration::ZERO;
        for i in 0..frames {
            let t = Instant::now();
            let sent = fanout.send_video(&mut payloader, &unit(i == 0, per_frame as usize));
            queueing += t.elapsed();
            assert!(sent.first_out.is_some(), "frame {i} reached nobody");
            dropped += sent.dropped_frames;
            fell_behind += sent.fell_behind;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Queueing never waited for the stalled writer.
        assert!(queueing < Duration::from_millis(500), "{queueing:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while healthy_got.load(Ordering::Relaxed) < frames * per_frame && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(healthy_got.load(Ordering::Relaxed), frames * per_frame);
        assert_eq!(stalled_got.load(Ordering::Relaxed), 0);
        // The stalled one took whole frames up to its queue, then dropped until a keyframe.
        let queued = QUEUE_PACKETS as u64 / per_frame;
        assert!(dropped >= frames - queued - 1, "dropped {dropped}");
        assert_eq!(dropped, stalled.dropped_frames.load(Ordering::Relaxed));
        // One keyframe request for it, not one per frame.
        assert_eq!(fell_behind, 1);
        // Its transport recovers: it drains, skips delta frames, and resumes at a keyframe.
        gate.add_permits(1 << 20);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let drained = stalled_got.load(Ordering::Relaxed);
        assert_eq!(drained % per_frame, 0, "whole frames only");
        let sent = fanout.send_video(&mut payloader, &unit(false, per_frame as usize));
        assert_eq!((sent.dropped_frames, sent.fell_behind), (1, 0));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            stalled_got.load(Ordering::Relaxed),
            drained,
            "a delta frame is skipped"
        );
        fanout.send_video(&mut payloader, &unit(true, per_frame as usize));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stalled_got.load(Ordering::Relaxed), drained + per_frame);
    }

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
