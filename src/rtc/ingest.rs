//! Reading a publisher's tracks: H.264 RTP into the stream's pipeline, Opus RTP into its
//! fan-out (through the voice disguise for a speaker who chose one). Each runs as one task per track and ends when the track does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_core::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::assembler::{Assembler, RtpIn};
use super::egress::Fanout;
use super::RelayMetrics;
use crate::media::pipeline::{InputUnit, Pipeline};
use crate::voice::stream::{AudioPacket, VoiceTap};
use rtc_core::rtp::{Header, Packet};

/// How often a stream that waits for a keyframe re-checks whether to ask again.
const KEYFRAME_RETRY_TICK: Duration = Duration::from_millis(100);

/// Sends PLIs to one publisher, at most one per `throttle`.
struct PliSender {
    track: Arc<dyn TrackRemote>,
    media_ssrc: u32,
    throttle: Duration,
    last: Option<Instant>,
    metrics: Arc<RelayMetrics>,
}

impl PliSender {
    async fn request(&mut self) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.throttle)
        {
            return;
        }
        self.last = Some(now);
        self.metrics.plis_sent.inc();
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: self.media_ssrc,
        };
        if let Err(e) = self.track.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!(error = %e, "cannot send PLI");
        }
    }
}

pub(crate) async fn run_video_ingest(
    track: Arc<dyn TrackRemote>,
    pipeline: Pipeline,
    pli_throttle: Duration,
    metrics: Arc<RelayMetrics>,
    events: tokio::sync::mpsc::Sender<super::peer::PeerEvent>,
) {
    let media_ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let mut pli = PliSender {
        track: track.clone(),
        media_ssrc,
        throttle: pli_throttle,
        last: None,
        metrics,
    };
    let mut assembler = Assembler::new();
    let mut tick = tokio::time::interval(KEYFRAME_RETRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = track.poll() => {
                let packet = match event {
                    Some(TrackRemoteEvent::OnRtpPacket(packet)) => packet,
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => continue,
                };
                let out = assembler.push(RtpIn {
                    sequence_number: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    marker: packet.header.marker,
                    payload: packet.payload,
                    arrival: Instant::now(),
                });
                let mut need_keyframe = out.need_keyframe;
                for unit in out.units {
                    let accepted = pipeline.push(InputUnit {
                        data: unit.data,
                        timestamp: unit.timestamp,
                        keyframe: unit.keyframe,
                        arrived: unit.completed_at,
                    });
                    if !accepted {
                        // The decoder is behind by a whole queue: start over on a keyframe.
                        assembler.resync();
                        need_keyframe = true;
                    }
                }
                if need_keyframe || pipeline.control().take_keyframe_request() {
                    pli.request().await;
                }
            }
            _ = tick.tick() => {
                if let Some((width, height)) = pipeline.control().take_oversize() {
                    let _ = events.try_send(super::peer::PeerEvent::VideoTooLarge { width, height });
                }
                // Until a keyframe arrives (stream start, loss), keep asking: PLIs get lost too.
                if assembler.waiting_for_keyframe() || pipeline.control().take_keyframe_request() {
                    pli.request().await;
                }
            }
        }
    }
    tracing::debug!(ssrc = media_ssrc, stats = ?assembler.stats(), "video ingest ended");
}

/// Relays one audio track: each Opus packet through `tap`, which forwards a speaker's own
/// voice untouched and hands a disguised one to its worker (silence in its place when the
/// disguise fails or is late).
pub(crate) async fn run_audio_ingest(
    track: Arc<dyn TrackRemote>,
    fanout: Arc<Fanout>,
    mut tap: VoiceTap,
) {
    loop {
        let due = tap.next_due();
        let out = tokio::select! {
            event = track.poll() => match event {
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    if packet.payload.is_empty() {
                        continue;
                    }
                    let packet = AudioPacket {
                        sequence: packet.header.sequence_number,
                        timestamp: packet.header.timestamp,
                        marker: packet.header.marker,
                        payload: packet.payload,
                    };
                    tap.on_packet(packet, Instant::now())
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => continue,
            },
            done = tap.done() => tap.on_done(done),
            _ = sleep_until(due), if due.is_some() => tap.on_tick(Instant::now()),
        };
        for packet in out {
            let packet = Packet {
                header: Header {
                    version: 2,
                    marker: packet.marker,
                    sequence_number: packet.sequence,
                    timestamp: packet.timestamp,
                    ..Default::default()
                },
                payload: packet.payload,
            };
            fanout.send_audio(&packet).await;
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}
