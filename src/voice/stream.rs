//! One published audio stream with a voice chosen: its Opus packets are decoded, disguised
//! and encoded on a thread of its own (never on the async threads), one packet out for every
//! packet in, with the same sequence number and timestamp. [`VoiceTap`] is the async side:
//! it forwards the packets of a speaker without a voice untouched, hands the others to the
//! worker, and fails closed: a packet the worker could not disguise (a stage error, a full
//! queue, no answer within [`DEADLINE`]) goes out as silence of the same duration.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opusic_c::{Application, Bitrate, Channels, Decoder, Encoder, SampleRate};

use super::disguise::RATE;
use super::{Voice, VoiceStage, VoiceState, Voices};

/// How long a packet may wait for its disguise before silence goes out in its place.
pub const DEADLINE: Duration = Duration::from_millis(100);
/// Packets queued for the worker at most (160 ms of 20 ms packets); past it, silence.
const QUEUE: usize = 8;
/// The longest Opus packet (120 ms) at the disguise's rate.
const MAX_SAMPLES: usize = RATE as usize * 120 / 1000;
/// The encoder's bit rate: wideband speech.
const BITRATE: u32 = 32_000;

/// An Opus RTP packet as the relay sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioPacket {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

fn opus_error(what: &str, e: opusic_c::ErrorCode) -> String {
    format!("{what}: {e:?}")
}

/// Decode ▸ disguise ▸ encode for one stream.
pub struct VoiceCodec {
    decoder: Decoder,
    encoder: Encoder,
    stage: Box<dyn VoiceStage>,
    samples: Vec<f32>,
    out: Vec<u8>,
}

impl VoiceCodec {
    pub fn new(stage: Box<dyn VoiceStage>) -> Result<Self, String> {
        let decoder = Decoder::new(Channels::Mono, SampleRate::Hz16000)
            .map_err(|e| opus_error("opus decoder", e))?;
        let mut encoder = Encoder::new(Channels::Mono, SampleRate::Hz16000, Application::Voip)
            .map_err(|e| opus_error("opus encoder", e))?;
        encoder
            .set_bitrate(Bitrate::Value(BITRATE))
            .map_err(|e| opus_error("opus bit rate", e))?;
        Ok(Self {
            decoder,
            encoder,
            stage,
            samples: vec![0.0; MAX_SAMPLES],
            out: vec![0; 1500],
        })
    }

    /// A new disguise from the next packet on (the codecs go on).
    pub fn set_stage(&mut self, stage: Box<dyn VoiceStage>) {
        self.stage = stage;
    }

    /// One packet disguised: the same duration, encoded again.
    pub fn disguise(&mut self, payload: &[u8]) -> Result<Bytes, String> {
        let n = self
            .decoder
            .decode_float_to_slice(payload, &mut self.samples, false)
            .map_err(|e| opus_error("undecodable opus packet", e))?;
        let samples = &mut self.samples[..n];
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.stage.process(samples))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the disguise failed: {e}")),
            Err(_) => return Err("the disguise panicked".into()),
        }
        let len = self
            .encoder
            .encode_float_to_slice(samples, &mut self.out)
            .map_err(|e| opus_error("opus encode", e))?;
        Ok(Bytes::copy_from_slice(&self.out[..len]))
    }
}

enum Job {
    Packet { id: u64, payload: Bytes },
    Voice(Voice),
}

/// What the worker made of one packet.
pub struct Done {
    id: u64,
    result: Result<Bytes, String>,
}

struct Worker {
    jobs: SyncSender<Job>,
    done: tokio::sync::mpsc::Receiver<Done>,
    voice: Voice,
}

impl Worker {
    fn spawn(voices: &Arc<Voices>, voice: Voice) -> Result<Self, String> {
        let preset = voice.preset().ok_or("no disguise for this voice")?;
        let mut codec = VoiceCodec::new(voices.stage(preset))?;
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let (tx, done) = tokio::sync::mpsc::channel(QUEUE * 2);
        let voices = voices.clone();
        std::thread::Builder::new()
            .name("facerelay-voice".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Packet { id, payload } => {
                            let result = codec.disguise(&payload);
                            if tx.blocking_send(Done { id, result }).is_err() {
                                break;
                            }
                        }
                        Job::Voice(voice) => {
                            if let Some(preset) = voice.preset() {
                                codec.set_stage(voices.stage(preset));
                            }
                        }
                    }
                }
            })
            .map_err(|e| format!("no voice thread: {e}"))?;
        Ok(Self { jobs, done, voice })
    }
}

struct Pending {
    id: u64,
    packet: AudioPacket,
    due: Instant,
}

/// Counts of what a tap sent, for the metrics and the bench.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TapCounts {
    pub forwarded: u64,
    pub disguised: u64,
    pub silenced: u64,
}

/// The async side of one published audio stream (see the module doc).
pub struct VoiceTap {
    owner: String,
    voices: Arc<Voices>,
    worker: Option<Worker>,
    pending: VecDeque<Pending>,
    next_id: u64,
    state: VoiceState,
    silence: Option<Encoder>,
    silences: HashMap<usize, Bytes>,
    pub counts: TapCounts,
}

impl VoiceTap {
    pub fn new(owner: &str, voices: Arc<Voices>) -> Self {
        Self {
            owner: owner.to_owned(),
            voices,
            worker: None,
            pending: VecDeque::new(),
            next_id: 0,
            state: VoiceState::None,
            silence: None,
            silences: HashMap::new(),
            counts: TapCounts::default(),
        }
    }

    fn tell(&mut self, state: VoiceState, reason: Option<&'static str>) {
        if state != self.state {
            self.state = state;
            self.voices.report(&self.owner, state, reason);
        }
    }

    /// Silence as long as `packet` (20 ms if its length cannot be read).
    fn silenced(&mut self, mut packet: AudioPacket, reason: &'static str) -> AudioPacket {
        let samples = opusic_c::utils::get_nb_samples(&packet.payload, SampleRate::Hz16000)
            .ok()
            .filter(|n| *n > 0 && *n <= MAX_SAMPLES)
            .unwrap_or(RATE as usize / 50);
        if !self.silences.contains_key(&samples) {
            if self.silence.is_none() {
                self.silence =
                    Encoder::new(Channels::Mono, SampleRate::Hz16000, Application::Voip).ok();
            }
            let mut out = [0u8; 256];
            let zeros = vec![0.0f32; samples];
            let encoded = self
                .silence
                .as_mut()
                .and_then(|e| e.encode_float_to_slice(&zeros, &mut out).ok())
                .map(|len| Bytes::copy_from_slice(&out[..len]))
                // Opus's own "no audio" frame (a 20 ms CELT frame of silence) if the encoder
                // could not be had.
                .unwrap_or_else(|| Bytes::from_static(&[0xf8, 0xff, 0xfe]));
            self.silences.insert(samples, encoded);
        }
        packet.payload = self.silences[&samples].clone();
        self.counts.silenced += 1;
        self.tell(VoiceState::Silenced, Some(reason));
        packet
    }

    /// Takes one packet from the publisher; returns what goes out now.
    pub fn on_packet(&mut self, packet: AudioPacket, now: Instant) -> Vec<AudioPacket> {
        let voice = self.voices.get(&self.owner);
        if voice == Voice::None {
            // No disguise (any more): what was queued for one is dropped, never sent as is.
            self.worker = None;
            self.pending.clear();
            self.tell(VoiceState::None, None);
            self.counts.forwarded += 1;
            return vec![packet];
        }
        if self.worker.is_none() {
            match Worker::spawn(&self.voices, voice) {
                Ok(worker) => self.worker = Some(worker),
                Err(e) => {
                    tracing::warn!(participant = %self.owner, error = %e, "voice disguise unavailable");
                    return vec![self.silenced(packet, "error")];
                }
            }
        }
        let worker = self.worker.as_mut().expect("worker started above");
        if worker.voice != voice {
            // The queue keeps order: packets before the change keep the old disguise.
            if worker.jobs.try_send(Job::Voice(voice)).is_ok() {
                worker.voice = voice;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        match worker.jobs.try_send(Job::Packet {
            id,
            payload: packet.payload.clone(),
        }) {
            Ok(()) => {
                self.pending.push_back(Pending {
                    id,
                    packet,
                    due: now + DEADLINE,
                });
                Vec::new()
            }
            Err(TrySendError::Full(_)) => vec![self.silenced(packet, "busy")],
            Err(TrySendError::Disconnected(_)) => {
                self.worker = None;
                vec![self.silenced(packet, "error")]
            }
        }
    }

    /// The worker's next answer (pending forever while there is no worker). Cancel-safe.
    pub async fn done(&mut self) -> Option<Done> {
        match &mut self.worker {
            Some(w) => w.done.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Takes one answer of the worker (`None`: the worker is gone); returns what goes out.
    pub fn on_done(&mut self, done: Option<Done>) -> Vec<AudioPacket> {
        let Some(done) = done else {
            self.worker = None;
            return self.expire(None);
        };
        let mut out = Vec::new();
        // Answers come in order; one whose packet already went out as silence is dropped.
        while let Some(head) = self.pending.front() {
            if head.id > done.id {
                break;
            }
            let head = self.pending.pop_front().expect("front exists");
            if head.id < done.id {
                out.push(self.silenced(head.packet, "stalled"));
                continue;
            }
            match &done.result {
                Ok(payload) => {
                    let mut packet = head.packet;
                    packet.payload = payload.clone();
                    self.counts.disguised += 1;
                    self.tell(VoiceState::Disguised, None);
                    out.push(packet);
                }
                Err(e) => {
                    tracing::debug!(participant = %self.owner, error = %e, "packet not disguised");
                    out.push(self.silenced(head.packet, "error"));
                }
            }
        }
        out
    }

    /// When the oldest waiting packet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.front().map(|p| p.due)
    }

    /// Silence for every waiting packet that is due at `now`.
    pub fn on_tick(&mut self, now: Instant) -> Vec<AudioPacket> {
        self.expire(Some(now))
    }

    /// Silence for the waiting packets due by `now` (all of them with `None`).
    fn expire(&mut self, now: Option<Instant>) -> Vec<AudioPacket> {
        let mut out = Vec::new();
        while let Some(head) = self.pending.front() {
            if now.is_some_and(|now| head.due > now) {
                break;
            }
            let head = self.pending.pop_front().expect("front exists");
            out.push(self.silenced(head.packet, "stalled"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::analysis::tests::vowel;
    use crate::voice::StageFactory;

    /// Twenty-millisecond Opus packets of a vowel, numbered from 1.
    fn packets(seconds: f32) -> Vec<AudioPacket> {
        let x = vowel(seconds, RATE, |_| 120.0);
        let mut enc = Encoder::new(Channels::Mono, SampleRate::Hz16000, Application::Voip).unwrap();
        let mut out = [0u8; 1500];
        x.chunks_exact(320)
            .enumerate()
            .map(|(i, frame)| {
                let len = enc.encode_float_to_slice(frame, &mut out).unwrap();
                AudioPacket {
                    sequence: i as u16 + 1,
                    timestamp: i as u32 * 960,
                    marker: false,
                    payload: Bytes::copy_from_slice(&out[..len]),
                }
            })
            .collect()
    }

    fn decoded_level(payload: &[u8], decoder: &mut Decoder) -> f32 {
        let mut s = vec![0.0f32; MAX_SAMPLES];
        let n = decoder
            .decode_float_to_slice(payload, &mut s, false)
            .unwrap();
        (s[..n].iter().map(|v| v * v).sum::<f32>() / n as f32).sqrt()
    }

    /// Runs `input` through a tap for a speaker with `voice`, each packet waiting for its
    /// answer (or its deadline); returns what went out and the states reported.
    async fn run(
        voices: Arc<Voices>,
        voice: Voice,
        input: &[AudioPacket],
    ) -> (Vec<AudioPacket>, Vec<VoiceState>) {
        let states = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = states.clone();
        voices.watch(Arc::new(move |_, s, _| seen.lock().unwrap().push(s)));
        voices.set("ann", voice);
        let mut tap = VoiceTap::new("ann", voices);
        let mut out = Vec::new();
        for p in input {
            out.extend(tap.on_packet(p.clone(), Instant::now()));
            while let Some(due) = tap.next_due() {
                tokio::select! {
                    done = tap.done() => out.extend(tap.on_done(done)),
                    _ = tokio::time::sleep_until(due.into()) => out.extend(tap.on_tick(Instant::now())),
                }
            }
        }
        let states = states.lock().unwrap().clone();
        (out, states)
    }

    #[tokio::test]
    async fn without_a_voice_every_packet_goes_out_as_it_came() {
        let input = packets(0.5);
        let (out, states) = run(Arc::new(Voices::default()), Voice::None, &input).await;
        assert_eq!(out, input);
        assert!(states.is_empty(), "{states:?}");
    }

    #[tokio::test]
    async fn a_disguised_voice_keeps_every_packet_in_place_with_new_audio() {
        let input = packets(1.0);
        let (out, states) = run(Arc::new(Voices::default()), Voice::Lower, &input).await;
        assert_eq!(out.len(), input.len());
        for (a, b) in input.iter().zip(&out) {
            assert_eq!((a.sequence, a.timestamp), (b.sequence, b.timestamp));
        }
        assert!(
            input
                .iter()
                .zip(&out)
                .filter(|(a, b)| a.payload != b.payload)
                .count()
                > 40
        );
        let mut dec = Decoder::new(Channels::Mono, SampleRate::Hz16000).unwrap();
        let loud = out[10..]
            .iter()
            .filter(|p| decoded_level(&p.payload, &mut dec) > 0.02)
            .count();
        assert!(
            loud > 30,
            "{loud} of {} disguised packets carry sound",
            out.len() - 10
        );
        assert_eq!(states, vec![VoiceState::Disguised]);
    }

    fn failing(stage: impl Fn() -> Box<dyn VoiceStage> + Send + Sync + 'static) -> Arc<Voices> {
        let factory: StageFactory = Arc::new(move |_| stage());
        Arc::new(Voices::with_stage(factory))
    }

    struct Erring;
    impl VoiceStage for Erring {
        fn process(&mut self, _: &mut [f32]) -> Result<(), String> {
            Err("broken on purpose".into())
        }
    }

    /// Stalls until the test ends: it waits for a lock the test holds.
    struct Stalling(Arc<std::sync::Mutex<()>>);
    impl VoiceStage for Stalling {
        fn process(&mut self, _: &mut [f32]) -> Result<(), String> {
            drop(self.0.lock());
            Ok(())
        }
    }

    struct Panicking;
    impl VoiceStage for Panicking {
        fn process(&mut self, _: &mut [f32]) -> Result<(), String> {
            panic!("broken on purpose")
        }
    }

    #[tokio::test]
    async fn a_disguise_that_fails_sends_silence_never_the_voice() {
        let input = packets(0.4);
        let stall = Arc::new(std::sync::Mutex::new(()));
        let _held = stall.lock().unwrap();
        let stalled = stall.clone();
        let stages: [(&str, Arc<Voices>); 3] = [
            ("erring", failing(|| Box::new(Erring))),
            (
                "stalling",
                failing(move || Box::new(Stalling(stalled.clone()))),
            ),
            ("panicking", failing(|| Box::new(Panicking))),
        ];
        let mut dec = Decoder::new(Channels::Mono, SampleRate::Hz16000).unwrap();
        for (name, voices) in stages {
            let (out, states) = run(voices, Voice::Robot, &input).await;
            assert_eq!(out.len(), input.len(), "{name}");
            for (a, b) in input.iter().zip(&out) {
                assert_eq!(a.sequence, b.sequence, "{name}");
                assert_ne!(a.payload, b.payload, "{name}: the voice went out");
                let level = decoded_level(&b.payload, &mut dec);
                assert!(level < 1e-3, "{name}: packet {} level {level}", b.sequence);
            }
            assert_eq!(states, vec![VoiceState::Silenced], "{name}");
        }
    }
}
