//! Fan-out of one published stream to its subscribers.
//!
//! Video: each re-encoded access unit is payloaded once; every subscriber gets the same
//! payload bytes under its own RTP header (SSRC, payload type and sequence numbers of its
//! negotiated sender). Audio: the publisher's Opus packets go out unchanged but for SSRC,
//! payload type and header extensions (their ids belong to the publisher's session).
//!
//! On the server each subscriber has its own bounded queue and writer task, so a subscriber
//! whose connection cannot take packets (its transport's queue full) delays nobody else: what
//! its queue cannot take is dropped for it alone, and its video resumes at a keyframe, which
//! the encoder is asked for once the queue has drained to half (at most every
//! [`KEYFRAME_REQUEST_EVERY`] for the stream).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc_core::rtp::codec::h264::H264Payloader;
use rtc_core::rtp::packetizer::Payloader;
use rtc_core::rtp::{Header, Packet};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

use super::RelayMetrics;
use crate::media::pipeline::{OutputUnit, PipelineControl};

const MTU: usize = 1200;
const NO_PAYLOAD_TYPE: u32 = u32::MAX;
/// Latency samples kept for the summary (a ring; oldest go first).
const LATENCY_SAMPLES: usize = 20_000;
/// A subscriber's queue, in frames and audio packets: about three seconds of a 30 fps video
/// with its audio. Only a subscriber that stopped taking packets fills it.
pub const SUBSCRIBER_QUEUE: usize = 256;
/// The encoder is asked for a keyframe for subscribers that dropped frames at most this often.
pub const KEYFRAME_REQUEST_EVERY: Duration = Duration::from_millis(500);

/// Takes a subscriber's RTP packets: its local track (or, in tests, a stand-in).
#[async_trait::async_trait]
pub(crate) trait RtpWriter: Send + Sync {
    /// False when the packet was refused (not bound yet, or closing).
    async fn write(&self, packet: Packet) -> bool;
}

#[async_trait::async_trait]
impl RtpWriter for TrackLocalStaticRTP {
    async fn write(&self, packet: Packet) -> bool {
        self.write_rtp(packet).await.is_ok()
    }
}

/// Where one subscriber's packets go.
struct SinkOut {
    writer: Arc<dyn RtpWriter>,
    ssrc: u32,
    /// Negotiated payload type; none until the subscriber's answer has been applied.
    payload_type: AtomicU32,
    next_seq: AtomicU16,
}

/// What a subscriber's writer sends.
enum Job {
    Video(Arc<VideoFrame>),
    Audio(Packet),
}

/// One re-encoded frame, payloaded once for every subscriber.
struct VideoFrame {
    payloads: Vec<Bytes>,
    timestamp: u32,
    /// When the frame's last packet reached the server, and its size: the latency recorded
    /// when the first subscriber sends its first packet.
    arrived: Instant,
    size: (u32, u32),
    latency: Option<Arc<LatencyReport>>,
    sent: AtomicBool,
}

/// Where server latency goes.
pub(crate) struct LatencyReport {
    pub(crate) recorder: Arc<LatencyRecorder>,
    pub(crate) metrics: Arc<RelayMetrics>,
}

/// One subscriber's sending end.
pub(crate) struct Sink {
    pub(crate) id: u64,
    track: Arc<TrackLocalStaticRTP>,
    out: Arc<SinkOut>,
    /// The writer task's queue; `None`: packets are written by the caller (the test client).
    queue: Option<mpsc::Sender<Job>>,
    /// Frames were dropped for this subscriber: it gets nothing until a keyframe.
    resyncing: AtomicBool,
    /// A keyframe was asked for since (once its queue had room for it).
    keyframe_asked: AtomicBool,
}

impl Sink {
    /// A sink written to by its caller, which waits for each packet to be taken.
    pub(crate) fn new(id: u64, track: Arc<TrackLocalStaticRTP>, ssrc: u32) -> Self {
        Self {
            id,
            out: Arc::new(SinkOut {
                writer: track.clone(),
                ssrc,
                payload_type: AtomicU32::new(NO_PAYLOAD_TYPE),
                next_seq: AtomicU16::new(rand_u16()),
            }),
            track,
            queue: None,
            resyncing: AtomicBool::new(false),
            keyframe_asked: AtomicBool::new(false),
        }
    }

    /// A sink with its own queue and writer task (which ends with the sink).
    pub(crate) fn queued(id: u64, track: Arc<TrackLocalStaticRTP>, ssrc: u32) -> Self {
        Self::new(id, track, ssrc).with_queue()
    }

    fn with_queue(mut self) -> Self {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        tokio::spawn(write_queue(self.out.clone(), rx));
        self.queue = Some(tx);
        self
    }

    pub(crate) fn track(&self) -> &Arc<TrackLocalStaticRTP> {
        &self.track
    }

    pub(crate) fn activate(&self, payload_type: u8) {
        self.out
            .payload_type
            .store(payload_type as u32, Ordering::Release);
    }

    pub(crate) fn is_active(&self) -> bool {
        self.out.payload_type.load(Ordering::Acquire) != NO_PAYLOAD_TYPE
    }
}

impl SinkOut {
    fn payload_type(&self) -> Option<u8> {
        match self.payload_type.load(Ordering::Acquire) {
            NO_PAYLOAD_TYPE => None,
            pt => Some(pt as u8),
        }
    }

    /// Writes one frame's packets; false when the track refused one (not bound yet, or
    /// closing: the subscriber's session cleans up).
    async fn write_video(&self, frame: &VideoFrame) -> bool {
        let Some(payload_type) = self.payload_type() else {
            return false;
        };
        let last = frame.payloads.len().saturating_sub(1);
        for (i, payload) in frame.payloads.iter().enumerate() {
            let packet = Packet {
                header: Header {
                    version: 2,
                    marker: i == last,
                    payload_type,
                    sequence_number: self.next_seq.fetch_add(1, Ordering::Relaxed),
                    timestamp: frame.timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: payload.clone(),
            };
            if !self.writer.write(packet).await {
                return false;
            }
            if !frame.sent.swap(true, Ordering::AcqRel) {
                if let Some(report) = &frame.latency {
                    let held = frame.arrived.elapsed();
                    report.recorder.record(frame.size.0, frame.size.1, held);
                    report.metrics.server_latency.record(held);
                }
            }
        }
        true
    }

    async fn write_audio(&self, mut packet: Packet) {
        let Some(payload_type) = self.payload_type() else {
            return;
        };
        packet.header.payload_type = payload_type;
        packet.header.ssrc = self.ssrc;
        self.writer.write(packet).await;
    }
}

/// A subscriber's writer: sends what its queue holds, in order, until the sink is gone.
async fn write_queue(out: Arc<SinkOut>, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Video(frame) => {
                out.write_video(&frame).await;
            }
            Job::Audio(packet) => out.write_audio(packet).await,
        }
    }
}

/// The subscribers of one published stream.
#[derive(Default)]
pub(crate) struct Fanout {
    sinks: Mutex<Vec<Arc<Sink>>>,
    /// The stream's encoder, asked for a keyframe when a subscriber dropped frames.
    control: Mutex<Option<Arc<PipelineControl>>>,
    last_keyframe_request: Mutex<Option<Instant>>,
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

    /// The encoder of the stream, for keyframes after drops.
    pub(crate) fn set_control(&self, control: Arc<PipelineControl>) {
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(control);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Sink>>> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribers that can be written to now (the lock is not held across the writes).
    fn active(&self) -> Vec<Arc<Sink>> {
        self.lock()
            .iter()
            .filter(|s| s.is_active())
            .cloned()
            .collect()
    }

    /// Sends one re-encoded access unit to every subscriber: queued for those with a queue,
    /// written before returning for the others. Returns for how many subscribers it was
    /// dropped (their queue full, or waiting for a keyframe).
    pub(crate) async fn send_video(
        &self,
        payloader: &mut H264Payloader,
        unit: &OutputUnit,
        latency: Option<Arc<LatencyReport>>,
    ) -> u64 {
        let sinks = self.active();
        if sinks.is_empty() {
            return 0;
        }
        let payloads = match payloader.payload(MTU, &unit.data) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return 0,
            Err(e) => {
                tracing::warn!(error = %e, "cannot packetize an encoded frame");
                return 0;
            }
        };
        let frame = Arc::new(VideoFrame {
            payloads,
            timestamp: unit.timestamp,
            arrived: unit.arrived,
            size: (unit.width, unit.height),
            latency,
            sent: AtomicBool::new(false),
        });
        let mut dropped = 0;
        for sink in sinks {
            let Some(queue) = &sink.queue else {
                sink.out.write_video(&frame).await;
                continue;
            };
            if sink.resyncing.load(Ordering::Relaxed) && !unit.keyframe {
                dropped += 1;
                // Ask for the keyframe once the queue has drained enough to take it: a
                // subscriber that stays stalled costs the others no keyframes.
                if queue.capacity() > SUBSCRIBER_QUEUE / 2
                    && !sink.keyframe_asked.swap(true, Ordering::Relaxed)
                {
                    self.request_keyframe();
                }
                continue;
            }
            if queue.try_send(Job::Video(frame.clone())).is_ok() {
                sink.resyncing.store(false, Ordering::Relaxed);
            } else {
                // Full (or the writer is gone): this subscriber misses the frame, and the ones
                // after it until a keyframe, which it would need to decode them.
                dropped += 1;
                sink.keyframe_asked.store(false, Ordering::Relaxed);
                if !sink.resyncing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(
                        subscriber = sink.id,
                        "subscriber queue full: frames dropped until a keyframe"
                    );
                }
            }
        }
        dropped
    }

    fn request_keyframe(&self) {
        let now = Instant::now();
        let mut last = self
            .last_keyframe_request
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_EVERY) {
            return;
        }
        *last = Some(now);
        if let Some(control) = &*self.control.lock().unwrap_or_else(|e| e.into_inner()) {
            control.request_idr();
        }
    }

    /// Forwards one Opus packet to every subscriber (dropped for one whose queue is full).
    pub(crate) async fn send_audio(&self, packet: &Packet) {
        if packet.payload.is_empty() {
            return;
        }
        for sink in self.active() {
            let out = Packet {
                header: Header {
                    version: 2,
                    marker: packet.header.marker,
                    sequence_number: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    ..Default::default()
                },
                payload: packet.payload.clone(),
            };
            match &sink.queue {
                Some(queue) => {
                    let _ = queue.try_send(Job::Audio(out));
                }
                None => sink.out.write_audio(out).await,
            }
        }
    }
}

/// Runs until the pipeline stops: hands each encoded frame to the subscribers; the server's
/// latency is recorded when the first of them sends its first packet.
pub(crate) async fn run_video_egress(
    fanout: Arc<Fanout>,
    mut frames: mpsc::Receiver<OutputUnit>,
    latency: Arc<LatencyRecorder>,
    metrics: Arc<RelayMetrics>,
) {
    let mut payloader = H264Payloader::default();
    let report = Arc::new(LatencyReport {
        recorder: latency,
        metrics: metrics.clone(),
    });
    while let Some(unit) = frames.recv().await {
        let dropped = fanout
            .send_video(&mut payloader, &unit, Some(report.clone()))
            .await;
        metrics.egress_dropped.inc_by(dropped);
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

    /// A subscriber's transport: takes packets, or blocks while it is closed.
    struct FakeTransport {
        open: tokio::sync::watch::Sender<bool>,
        frames: std::sync::atomic::AtomicUsize,
    }

    impl FakeTransport {
        fn new(open: bool) -> Arc<Self> {
            Arc::new(Self {
                open: tokio::sync::watch::Sender::new(open),
                frames: Default::default(),
            })
        }

        fn frames(&self) -> usize {
            self.frames.load(Ordering::Relaxed)
        }

        async fn wait_for_frames(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.frames() < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    #[async_trait::async_trait]
    impl RtpWriter for FakeTransport {
        async fn write(&self, packet: Packet) -> bool {
            let _ = self.open.subscribe().wait_for(|open| *open).await;
            if packet.header.marker {
                self.frames.fetch_add(1, Ordering::Relaxed);
            }
            true
        }
    }

    fn unit(n: u32, keyframe: bool) -> OutputUnit {
        let nal = if keyframe { 0x65 } else { 0x41 };
        OutputUnit {
            data: Bytes::from(vec![0, 0, 0, 1, nal, 0x88, n as u8, 1, 2, 3]),
            timestamp: n * 3000,
            keyframe,
            arrived: Instant::now(),
            width: 64,
            height: 48,
        }
    }

    fn fake_sink(id: u64, transport: Arc<FakeTransport>) -> Arc<Sink> {
        let track = crate::rtc::peer::local_track(
            crate::rtc::MediaKind::Video,
            &format!("s{id}"),
            &format!("t{id}"),
            id as u32,
        );
        let mut sink = Sink::new(id, track, id as u32);
        sink.out = Arc::new(SinkOut {
            writer: transport,
            ssrc: id as u32,
            payload_type: AtomicU32::new(NO_PAYLOAD_TYPE),
            next_seq: AtomicU16::new(0),
        });
        let sink = Arc::new(sink.with_queue());
        sink.activate(102);
        sink
    }

    /// One subscriber whose transport takes nothing delays nobody else: the other gets every
    /// frame; the stalled one's frames are dropped once its queue is full, the encoder is asked
    /// for a keyframe, and when it takes packets again it resumes at a keyframe.
    #[tokio::test]
    async fn a_stalled_subscriber_delays_nobody_and_resumes_at_a_keyframe() {
        let (stalled, healthy) = (FakeTransport::new(false), FakeTransport::new(true));
        let fanout = Fanout::default();
        let control = Arc::new(PipelineControl::default());
        fanout.set_control(control.clone());
        fanout.add(fake_sink(1, stalled.clone()));
        fanout.add(fake_sink(2, healthy.clone()));
        let mut payloader = H264Payloader::default();
        let frames = 2 * SUBSCRIBER_QUEUE;
        let mut dropped = 0;
        for n in 0..frames {
            let sent = tokio::time::timeout(
                Duration::from_millis(100),
                fanout.send_video(&mut payloader, &unit(n as u32, n == 0), None),
            )
            .await
            .expect("sending never waits for a subscriber");
            dropped += sent as usize;
            tokio::task::yield_now().await;
        }
        healthy.wait_for_frames(frames).await;
        assert_eq!(healthy.frames(), frames);
        // The stalled one took what its queue holds (and the frame its writer is on); every
        // later frame was dropped for it alone. No keyframe is asked for while its queue is
        // full (it could not take one, and the others would pay for it).
        assert!(
            dropped >= frames - SUBSCRIBER_QUEUE - 1,
            "{dropped} dropped"
        );
        assert_eq!(stalled.frames(), 0);
        assert!(!control.idr_requested());
        // Its transport takes packets again: what it queued goes out; delta frames stay
        // dropped for it, and now a keyframe is asked for.
        stalled.open.send_replace(true);
        let taken = frames - dropped;
        stalled.wait_for_frames(taken).await;
        assert_eq!(stalled.frames(), taken);
        let next = frames as u32;
        assert_eq!(
            fanout
                .send_video(&mut payloader, &unit(next, false), None)
                .await,
            1
        );
        assert!(control.idr_requested());
        assert_eq!(
            fanout
                .send_video(&mut payloader, &unit(next + 1, true), None)
                .await,
            0
        );
        assert_eq!(
            fanout
                .send_video(&mut payloader, &unit(next + 2, false), None)
                .await,
            0
        );
        stalled.wait_for_frames(taken + 2).await;
        healthy.wait_for_frames(frames + 3).await;
        assert_eq!(
            (stalled.frames(), healthy.frames()),
            (taken + 2, frames + 3)
        );
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
