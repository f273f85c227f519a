//! The video path of one published stream, on its own thread: decode every access unit, keep
//! only the newest picture (a one-slot mailbox: stale frames are dropped and counted, never
//! queued), run the frame stage on it, encode once, hand the access unit to egress.
//!
//! Every stream has its own thread because decoder and encoder state belong to the stream; a
//! shared [`CodecPool`] bounds how many of them do codec work at once (one per CPU by default),
//! so the machine degrades by dropping frames rather than by piling up latency.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use bytes::Bytes;

use super::codec::CodecError;
use super::{EncoderSettings, I420Frame, StreamId, StreamProcessor, VideoDecoder, VideoEncoder};
use crate::metrics::{series, Counter, Histogram, HistogramFamily, Registry};

/// What the video pipelines count, summed over all streams.
#[derive(Debug, Clone)]
pub struct PipelineMetrics {
    /// Access units handed to a pipeline.
    pub units_in: Counter,
    /// Access units refused because a pipeline's input was full (decoder far behind).
    pub units_rejected: Counter,
    pub frames_decoded: Counter,
    /// Decoded pictures replaced by a newer one before the stage took them.
    pub frames_dropped: Counter,
    pub frames_out: Counter,
    /// Encoded frames egress could not take.
    pub output_dropped: Counter,
    pub decode_errors: Counter,
    pub encode_errors: Counter,
    pub stage_panics: Counter,
    stages: HistogramFamily,
    pub decode: Histogram,
    pub stage: Histogram,
    pub encode: Histogram,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        let stages = HistogramFamily::default();
        Self {
            units_in: Counter::default(),
            units_rejected: Counter::default(),
            frames_decoded: Counter::default(),
            frames_dropped: Counter::default(),
            frames_out: Counter::default(),
            output_dropped: Counter::default(),
            decode_errors: Counter::default(),
            encode_errors: Counter::default(),
            stage_panics: Counter::default(),
            decode: series(&stages, "stage", "decode"),
            stage: series(&stages, "stage", "process"),
            encode: series(&stages, "stage", "encode"),
            stages,
        }
    }
}

impl PipelineMetrics {
    pub fn register(&self, registry: &mut Registry) {
        for (name, help, counter) in [
            (
                "facerelay_units_in",
                "H.264 access units received from publishers",
                &self.units_in,
            ),
            (
                "facerelay_units_rejected",
                "Access units refused because the decoder was a whole queue behind",
                &self.units_rejected,
            ),
            (
                "facerelay_frames_decoded",
                "Pictures decoded",
                &self.frames_decoded,
            ),
            (
                "facerelay_frames_dropped",
                "Decoded pictures dropped because a newer one arrived before the stage was free",
                &self.frames_dropped,
            ),
            (
                "facerelay_frames_out",
                "Frames re-encoded and sent to subscribers",
                &self.frames_out,
            ),
            (
                "facerelay_output_dropped",
                "Encoded frames dropped because egress was full",
                &self.output_dropped,
            ),
            (
                "facerelay_decode_errors",
                "Access units the decoder rejected",
                &self.decode_errors,
            ),
            (
                "facerelay_encode_errors",
                "Frames the encoder failed on",
                &self.encode_errors,
            ),
            (
                "facerelay_stage_panics",
                "Frames on which the frame stage panicked (dropped)",
                &self.stage_panics,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "facerelay_stage_seconds",
            "Time per frame in each pipeline stage",
            self.stages.clone(),
        );
    }
}

/// Access units waiting for the decoder before ingest starts dropping them.
const INPUT_DEPTH: usize = 64;

/// Bounds concurrent codec work across all streams (a counting semaphore).
#[derive(Debug)]
pub struct CodecPool {
    free: Mutex<usize>,
    available: Condvar,
}

impl CodecPool {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(slots.max(1)),
            available: Condvar::new(),
        })
    }

    fn acquire(self: &Arc<Self>) -> CodecSlot {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.available.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        CodecSlot(self.clone())
    }
}

struct CodecSlot(Arc<CodecPool>);

impl Drop for CodecSlot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.available.notify_one();
    }
}

/// An access unit entering the pipeline.
#[derive(Debug, Clone)]
pub struct InputUnit {
    pub data: Bytes,
    /// RTP timestamp (90 kHz), carried through to the re-encoded frame.
    pub timestamp: u32,
    pub keyframe: bool,
    /// When the last packet of the frame arrived.
    pub arrived: Instant,
}

/// A re-encoded access unit leaving the pipeline.
#[derive(Debug, Clone)]
pub struct OutputUnit {
    pub data: Bytes,
    pub timestamp: u32,
    pub keyframe: bool,
    /// Arrival of the source frame's last packet: the start of server-added latency.
    pub arrived: Instant,
    pub width: u32,
    pub height: u32,
}

/// Shared between the pipeline thread and the network side.
#[derive(Debug, Default)]
pub struct PipelineControl {
    /// Next encoded frame must be an IDR (a subscriber joined, or sent PLI/FIR).
    force_idr: AtomicBool,
    /// The decoder lost sync: the publisher must be asked for a keyframe.
    keyframe_wanted: AtomicBool,
    /// The publisher's picture is past `max_frame_pixels`: `width << 32 | height`, 0 = none
    /// to report.
    oversize: std::sync::atomic::AtomicU64,
}

impl PipelineControl {
    pub fn request_idr(&self) {
        self.force_idr.store(true, Ordering::Relaxed);
    }

    /// Whether a keyframe was asked of the encoder (not taken yet).
    #[cfg(test)]
    pub(crate) fn idr_requested(&self) -> bool {
        self.force_idr.load(Ordering::Relaxed)
    }

    /// Whether the publisher should be sent a PLI (clears the request).
    pub fn take_keyframe_request(&self) -> bool {
        self.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    /// The size of a picture refused for `max_frame_pixels` since the last call, if any: the
    /// publisher must be told (asking it for keyframes would not help).
    pub fn take_oversize(&self) -> Option<(u32, u32)> {
        let v = self.oversize.swap(0, Ordering::Relaxed);
        (v != 0).then_some(((v >> 32) as u32, v as u32))
    }
}

/// Where encoded frames go: called on the pipeline thread, must not block.
pub trait OutputSink: Send + 'static {
    /// Returns false when the frame could not be taken (it is then counted as dropped).
    fn send(&mut self, unit: OutputUnit) -> bool;
}

impl OutputSink for tokio::sync::mpsc::Sender<OutputUnit> {
    fn send(&mut self, unit: OutputUnit) -> bool {
        self.try_send(unit).is_ok()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings {
    pub encoder: EncoderSettings,
    pub max_frame_pixels: u32,
}

/// The network side's handle on a running pipeline. Dropping it stops the thread.
pub struct Pipeline {
    input: SyncSender<InputUnit>,
    control: Arc<PipelineControl>,
    metrics: Arc<PipelineMetrics>,
}

impl Pipeline {
    pub fn spawn(
        stream: StreamId,
        settings: PipelineSettings,
        pool: Arc<CodecPool>,
        metrics: Arc<PipelineMetrics>,
        processor: Box<dyn StreamProcessor>,
        output: impl OutputSink,
    ) -> std::io::Result<Self> {
        let (input, rx) = mpsc::sync_channel(INPUT_DEPTH);
        let control = Arc::new(PipelineControl::default());
        let worker = Worker {
            settings,
            pool,
            processor,
            control: control.clone(),
            metrics: metrics.clone(),
            waiting_for_keyframe: true,
            reported_oversize: None,
        };
        std::thread::Builder::new()
            .name(format!("codec-{stream}"))
            .spawn(move || worker.run(rx, output))?;
        Ok(Self {
            input,
            control,
            metrics,
        })
    }

    pub fn control(&self) -> &Arc<PipelineControl> {
        &self.control
    }

    /// Queues an access unit for decoding. Returns false if the pipeline is saturated or gone;
    /// the unit is then lost and the caller must resynchronise on a keyframe.
    pub fn push(&self, unit: InputUnit) -> bool {
        self.metrics.units_in.inc();
        match self.input.try_send(unit) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.units_rejected.inc();
                false
            }
        }
    }
}

struct Worker {
    settings: PipelineSettings,
    pool: Arc<CodecPool>,
    processor: Box<dyn StreamProcessor>,
    control: Arc<PipelineControl>,
    metrics: Arc<PipelineMetrics>,
    waiting_for_keyframe: bool,
    /// The oversize picture size last reported (reported once per size).
    reported_oversize: Option<u64>,
}

impl Worker {
    fn run(mut self, rx: Receiver<InputUnit>, mut output: impl OutputSink) {
        let (mut decoder, mut encoder) = match (
            VideoDecoder::new(self.settings.max_frame_pixels),
            VideoEncoder::new(self.settings.encoder),
        ) {
            (Ok(d), Ok(e)) => (d, e),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot create codec; stream will not be relayed");
                return;
            }
        };
        let m = self.metrics.clone();
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            batch.extend(rx.try_iter());
            let _slot = self.pool.acquire();
            // Every access unit must be decoded (later frames reference it); only the newest
            // picture goes on.
            let mut newest: Option<(I420Frame, InputUnit)> = None;
            for unit in batch.drain(..) {
                if self.waiting_for_keyframe && !unit.keyframe {
                    continue;
                }
                let started = Instant::now();
                let decoded = decoder.decode(&unit.data);
                m.decode.record(started.elapsed());
                match decoded {
                    Ok(Some(frame)) => {
                        self.waiting_for_keyframe = false;
                        m.frames_decoded.inc();
                        if newest.replace((frame, unit)).is_some() {
                            m.frames_dropped.inc();
                        }
                    }
                    Ok(None) => {}
                    Err(CodecError::TooLarge { width, height, .. }) => {
                        // Keyframes would be as large: no PLI; the publisher is told once
                        // per size and its next keyframe at a smaller size goes through.
                        m.decode_errors.inc();
                        self.waiting_for_keyframe = true;
                        let size = u64::from(width) << 32 | u64::from(height);
                        if self.reported_oversize != Some(size) {
                            self.reported_oversize = Some(size);
                            self.control.oversize.store(size, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "decode failed; waiting for a keyframe");
                        m.decode_errors.inc();
                        self.waiting_for_keyframe = true;
                        self.control.keyframe_wanted.store(true, Ordering::Relaxed);
                    }
                }
            }
            let Some((mut frame, unit)) = newest else {
                continue;
            };
            let started = Instant::now();
            let processed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.processor.process(&mut frame);
            }));
            m.stage.record(started.elapsed());
            if processed.is_err() {
                // A bug in the stage must not kill the stream, nor send a frame the stage may
                // not have made safe (a face it was to hide): this frame is dropped.
                m.stage_panics.inc();
                continue;
            }
            let force = self.control.force_idr.swap(false, Ordering::Relaxed);
            let started = Instant::now();
            let encoded = encoder.encode(&frame, force);
            m.encode.record(started.elapsed());
            match encoded {
                Ok(mut encoded) => {
                    if self.processor.swapped() {
                        encoded.data = super::sei::insert(
                            &encoded.data,
                            &super::sei::nal(&super::sei::swapped_payload()),
                        );
                    }
                    let sent = output.send(OutputUnit {
                        data: Bytes::from(encoded.data),
                        timestamp: unit.timestamp,
                        keyframe: encoded.keyframe,
                        arrived: unit.arrived,
                        width: frame.width(),
                        height: frame.height(),
                    });
                    if sent {
                        m.frames_out.inc();
                    } else {
                        // Subscribers miss a reference frame: restart them on an IDR.
                        m.output_dropped.inc();
                        self.control.request_idr();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "encode failed");
                    m.encode_errors.inc();
                    self.control.request_idr();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::y_psnr;
    use std::time::Duration;

    fn count(c: &Counter) -> u64 {
        c.get()
    }

    struct Collect(std::sync::mpsc::Sender<OutputUnit>);
    impl OutputSink for Collect {
        fn send(&mut self, unit: OutputUnit) -> bool {
            self.0.send(unit).is_ok()
        }
    }

    /// Slow stage: lets the test pile up input while one frame is being processed.
    struct Slow(Arc<std::sync::Barrier>, bool);
    impl StreamProcessor for Slow {
        fn process(&mut self, frame: &mut I420Frame) {
            if !self.1 {
                self.1 = true;
                self.0.wait();
                self.0.wait();
            }
            let (y, _, _) = frame.planes_mut();
            y[0] = 255;
        }
    }

    struct Panics;
    impl StreamProcessor for Panics {
        fn process(&mut self, _frame: &mut I420Frame) {
            panic!("stage bug");
        }
    }

    fn settings() -> PipelineSettings {
        PipelineSettings {
            encoder: EncoderSettings {
                bitrate_bps: 1_000_000,
                max_frame_rate: 30.0,
                keyframe_interval: 0,
            },
            max_frame_pixels: 1920 * 1080,
        }
    }

    fn encoded_stream(n: usize) -> Vec<(I420Frame, InputUnit)> {
        let mut enc = VideoEncoder::new(settings().encoder).unwrap();
        (0..n)
            .map(|i| {
                let f = I420Frame::filled(64, 48, (i * 20) as u8 + 16, 128, 128).unwrap();
                let e = enc.encode(&f, false).unwrap();
                let unit = InputUnit {
                    data: Bytes::from(e.data),
                    timestamp: i as u32 * 3000,
                    keyframe: e.keyframe,
                    arrived: Instant::now(),
                };
                (f, unit)
            })
            .collect()
    }

    #[test]
    fn newest_frame_replaces_waiting_ones_and_drops_are_counted() {
        let metrics = Arc::new(PipelineMetrics::default());
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (tx, rx) = std::sync::mpsc::channel();
        let p = Pipeline::spawn(
            StreamId(1),
            settings(),
            CodecPool::new(1),
            metrics.clone(),
            Box::new(Slow(barrier.clone(), false)),
            Collect(tx),
        )
        .unwrap();
        let stream = encoded_stream(5);
        assert!(p.push(stream[0].1.clone()));
        barrier.wait(); // frame 0 is in the stage
        for (_, unit) in &stream[1..] {
            assert!(p.push(unit.clone()));
        }
        barrier.wait(); // let frame 0 finish
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(first.timestamp, 0);
        assert_eq!(second.timestamp, 4 * 3000, "the newest frame wins");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        assert_eq!(count(&metrics.frames_decoded), 5);
        assert_eq!(count(&metrics.frames_dropped), 3);
        assert_eq!(count(&metrics.frames_out), 2);
        assert_eq!(metrics.decode.count(), 5);
        assert_eq!(metrics.encode.count(), 2);
        // The stage ran on what went out.
        let mut dec = VideoDecoder::new(1 << 20).unwrap();
        let pic = dec.decode(&first.data).unwrap().unwrap();
        assert!(pic.y()[0] > 200);
        assert!(y_psnr(&pic, &stream[0].0).unwrap() > 20.0);
    }

    #[test]
    fn a_panicking_stage_drops_its_frames() {
        let metrics = Arc::new(PipelineMetrics::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let p = Pipeline::spawn(
            StreamId(2),
            settings(),
            CodecPool::new(1),
            metrics.clone(),
            Box::new(Panics),
            Collect(tx),
        )
        .unwrap();
        for (i, (_, unit)) in encoded_stream(3).into_iter().enumerate() {
            p.push(unit);
            // One at a time: the mailbox keeps only the newest frame.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while count(&metrics.stage_panics) <= i as u64 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert_eq!(count(&metrics.stage_panics), 3);
        // A frame the stage may not have made safe is never sent.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        assert_eq!(count(&metrics.frames_out), 0);
    }

    #[test]
    fn garbage_asks_for_a_keyframe_and_p_frames_wait_for_one() {
        let metrics = Arc::new(PipelineMetrics::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let p = Pipeline::spawn(
            StreamId(3),
            settings(),
            CodecPool::new(1),
            metrics.clone(),
            Box::new(crate::media::stage::tests_support::Nop),
            Collect(tx),
        )
        .unwrap();
        let stream = encoded_stream(3);
        // A P-frame first: nothing can be decoded yet, nothing comes out.
        p.push(stream[1].1.clone());
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        p.push(InputUnit {
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x03]),
            keyframe: true,
            ..stream[0].1.clone()
        });
        p.push(stream[0].1.clone());
        let out = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(out.timestamp, 0);
        if count(&metrics.decode_errors) > 0 {
            assert!(p.control().take_keyframe_request());
        }
    }
}
