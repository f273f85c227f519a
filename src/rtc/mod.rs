//! WebRTC transport: the only module that uses the `webrtc` crate.
//!
//! - [`RtcEngine`] holds what all peer connections share (codecs, ICE settings, UDP ports, the
//!   codec pool, the frame stage) and makes [`ServerPeer`]s.
//! - Ingest ([`ingest`]): remote H.264 RTP → access units on the marker bit → the stream's
//!   [`Pipeline`](crate::media::pipeline::Pipeline) (decode, stage, encode). PLIs go back to the
//!   publisher on loss, throttled.
//! - Egress ([`egress`]): one re-encoded access unit is payloaded once and written to every
//!   subscriber's track; Opus RTP is forwarded unchanged (only SSRC and payload type rewritten).
//! - [`ClientPeer`]: the WebRTC half of a participant in Rust, for the test kit (integration
//!   tests and benches); the server never uses it.

pub mod assembler;
mod client_peer;
mod egress;
mod ingest;
mod interceptor;
mod peer;
mod ports;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc_core::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS,
};
use rtc_core::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};

pub use client_peer::{ClientPeer, ClientSender, Publish, Received};
pub use egress::{LatencyRecorder, LatencySummary};
pub use peer::{
    discard, live_connections, parse_remote, screen_candidate, IceCandidate, MediaKind, PeerEvent,
    Published, ServerPeer, SubscriptionId, MAX_REMOTE_CANDIDATES,
};

use crate::config::{Config, IceServer};
use crate::media::pipeline::{CodecPool, PipelineMetrics, PipelineSettings};
use crate::media::{EncoderSettings, FrameStage, StreamId};
use crate::metrics::{series, Counter, Family, Gauge, Histogram, Labels, Registry, Scraped};
use crate::voice::Voices;

/// The H.264 format every browser decodes: constrained baseline, level 3.1, non-interleaved.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_PAYLOAD_TYPE: u8 = 102;
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
const OPUS_PAYLOAD_TYPE: u8 = 111;

#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("the offer has no H.264 (packetization-mode 1) video; this server relays H.264 only")]
    NoH264,
    #[error("invalid session description: {0}")]
    BadSdp(String),
    #[error("invalid ICE candidate: {0}")]
    BadCandidate(String),
    #[error("no free UDP port in the configured media range")]
    NoPorts,
    #[error("cannot start the stream's codec thread: {0}")]
    Thread(String),
    #[error("WebRTC: {0}")]
    WebRtc(String),
}

impl From<webrtc::error::Error> for RtcError {
    fn from(e: webrtc::error::Error) -> Self {
        RtcError::WebRtc(e.to_string())
    }
}

/// What [`RtcEngine`] needs from the configuration.
#[derive(Debug, Clone)]
pub struct RtcSettings {
    pub bind_ip: IpAddr,
    pub public_ip: Option<IpAddr>,
    pub udp_port_range: [u16; 2],
    pub include_loopback: bool,
    pub disconnect_timeout: Duration,
    pub ice_servers: Vec<IceServer>,
    pub pipeline: PipelineSettings,
    pub pli_throttle: Duration,
    pub codec_threads: usize,
}

impl RtcSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            bind_ip: config.ice.bind_ip,
            public_ip: config.ice.public_ip,
            udp_port_range: config.ice.udp_port_range,
            include_loopback: config.ice.include_loopback,
            disconnect_timeout: Duration::from_secs(config.ice.disconnect_timeout_secs.max(1)),
            ice_servers: config.ice.servers.clone(),
            pipeline: PipelineSettings {
                encoder: EncoderSettings {
                    bitrate_bps: config.media.video_bitrate_bps,
                    max_frame_rate: config.media.max_frame_rate,
                    keyframe_interval: config.media.keyframe_interval,
                },
                max_frame_pixels: config.media.max_frame_pixels,
            },
            pli_throttle: Duration::from_millis(config.media.pli_throttle_ms),
            codec_threads: config.codec_threads(),
        }
    }
}

/// What the relay counts, over all peer connections.
#[derive(Debug)]
pub struct RelayMetrics {
    /// Frames dropped for one subscriber (its queue full, or waiting for a keyframe after).
    pub egress_dropped: Counter,
    /// PLIs sent to publishers.
    pub plis_sent: Counter,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests: Counter,
    /// Published tracks alive now.
    pub video_streams: Gauge,
    pub audio_streams: Gauge,
    /// Last RTP packet of a frame in → first RTP packet of its re-encoded frame out.
    pub server_latency: Histogram,
    /// Server peer connections that failed, by where: connectivity checks (`ice`), or the
    /// DTLS handshake and later with ICE connected (`dtls`).
    failures: Family<Labels, Counter>,
    pub ice_failures: Counter,
    pub dtls_failures: Counter,
    streams: Family<Labels, Gauge>,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        let failures = Family::default();
        let streams = Family::default();
        Self {
            egress_dropped: Counter::default(),
            plis_sent: Counter::default(),
            keyframe_requests: Counter::default(),
            video_streams: series(&streams, "kind", "video"),
            audio_streams: series(&streams, "kind", "audio"),
            server_latency: Histogram::default(),
            ice_failures: series(&failures, "stage", "ice"),
            dtls_failures: series(&failures, "stage", "dtls"),
            failures,
            streams,
        }
    }
}

impl RelayMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "facerelay_published_streams",
            "Tracks being relayed",
            self.streams.clone(),
        );
        for (name, help, counter) in [
            (
                "facerelay_egress_dropped_frames",
                "Video frames dropped for one subscriber whose queue was full (or that waited for a keyframe after)",
                &self.egress_dropped,
            ),
            ("facerelay_plis_sent", "Picture loss indications sent to publishers", &self.plis_sent),
            (
                "facerelay_keyframe_requests",
                "PLI/FIR received from subscribers",
                &self.keyframe_requests,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "facerelay_peer_failures",
            "Server peer connections that failed: in ICE connectivity checks (stage=ice) or with ICE connected, in DTLS (stage=dtls)",
            self.failures.clone(),
        );
        registry.register(
            "facerelay_server_latency_seconds",
            "Last RTP packet of a frame in to first RTP packet of its re-encoded frame out",
            self.server_latency.clone(),
        );
    }
}

/// Shared by every peer connection of the server.
pub struct RtcEngine {
    settings: RtcSettings,
    ports: Option<ports::PortPool>,
    codec_pool: Arc<CodecPool>,
    stage: Arc<dyn FrameStage>,
    voices: Arc<Voices>,
    next_stream: AtomicU64,
    latency: Arc<LatencyRecorder>,
    metrics: Arc<RelayMetrics>,
    pipeline_metrics: Arc<PipelineMetrics>,
}

impl RtcEngine {
    pub fn new(
        settings: RtcSettings,
        stage: Arc<dyn FrameStage>,
        voices: Arc<Voices>,
    ) -> Arc<Self> {
        let [lo, hi] = settings.udp_port_range;
        let ports = (lo != 0).then(|| ports::PortPool::new(lo, hi));
        Arc::new(Self {
            codec_pool: CodecPool::new(settings.codec_threads),
            settings,
            ports,
            stage,
            voices,
            next_stream: AtomicU64::new(1),
            latency: Arc::new(LatencyRecorder::default()),
            metrics: Arc::default(),
            pipeline_metrics: Arc::default(),
        })
    }

    /// Server-added latency of every relayed video frame (arrival of its last RTP packet to
    /// the first RTP packet of its re-encoded frame leaving).
    pub fn latency(&self) -> &Arc<LatencyRecorder> {
        &self.latency
    }

    /// What the relay counts over every connection.
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        &self.metrics
    }

    /// What the video pipelines count over every stream.
    pub fn pipeline_metrics(&self) -> &Arc<PipelineMetrics> {
        &self.pipeline_metrics
    }

    /// Registers the relay's and the pipelines' metrics, and the peer connections alive.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
        self.pipeline_metrics.register(registry);
        let mut scraped = Scraped::default();
        scraped.gauge(
            "facerelay_peer_connections",
            "WebRTC peer connections alive.",
            || live_connections() as u64,
        );
        scraped.register(registry);
    }

    fn next_stream_id(&self) -> StreamId {
        StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed))
    }
}

/// The codecs facerelay speaks: H.264 constrained baseline and Opus.
fn media_engine() -> Result<MediaEngine, RtcError> {
    let mut engine = MediaEngine::default();
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: H264_FMTP.to_owned(),
                rtcp_feedback: vec![
                    feedback("ccm", "fir"),
                    feedback("nack", ""),
                    feedback("nack", "pli"),
                ],
            },
            payload_type: H264_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: OPUS_FMTP.to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: OPUS_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    Ok(engine)
}

/// What the server needs of an offer before the WebRTC stack sees it, checked so that the user
/// gets a clear error instead of a silently rejected section or an internal one:
///
/// - H.264 with packetization-mode 1 in some video section (or no video at all);
/// - when there are several media sections, every section that sends a track (`a=msid`) says
///   which stream carries it, by `a=ssrc` or `a=rid`: with several sections the stack cannot
///   otherwise tell whose packets arrive.
pub fn check_offer(sdp: &str) -> Result<(), RtcError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(RtcError::BadSdp("does not start with v=0".into()));
    }
    /// One `m=audio` or `m=video` section.
    #[derive(Default)]
    struct Section {
        kind: String,
        h264_pts: Vec<String>,
        h264_mode1: bool,
        sends: bool,
        msid: bool,
        ssrc: bool,
        rid: bool,
    }
    let mut sections: Vec<Section> = Vec::new();
    let mut other = true;
    for line in sdp.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            let kind = media.split(' ').next().unwrap_or_default();
            other = kind != "audio" && kind != "video";
            if !other {
                sections.push(Section {
                    kind: kind.to_owned(),
                    sends: true,
                    ..Section::default()
                });
            }
            continue;
        }
        let Some(s) = sections.last_mut().filter(|_| !other) else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            if let Some((pt, codec)) = rest.split_once(' ') {
                if codec.to_ascii_uppercase().starts_with("H264/90000") {
                    s.h264_pts.push(pt.to_owned());
                }
            }
        } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
            if let Some((pt, params)) = rest.split_once(' ') {
                s.h264_mode1 |=
                    s.h264_pts.iter().any(|p| p == pt) && params.contains("packetization-mode=1");
            }
        } else if line == "a=recvonly" || line == "a=inactive" {
            s.sends = false;
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            s.msid = msid.split(' ').count() == 2;
        } else {
            s.ssrc |= line.starts_with("a=ssrc:");
            s.rid |= line.starts_with("a=rid:");
        }
    }
    let video: Vec<&Section> = sections.iter().filter(|s| s.kind == "video").collect();
    if !video.is_empty() && !video.iter().any(|s| s.h264_mode1) {
        return Err(RtcError::NoH264);
    }
    if sections.len() > 1 {
        if let Some((i, s)) = sections
            .iter()
            .enumerate()
            .find(|(_, s)| s.sends && s.msid && !s.ssrc && !s.rid)
        {
            return Err(RtcError::BadSdp(format!(
                "media section {} ({}) sends a track (a=msid) but has no a=ssrc or a=rid line; \
                 with several media sections each sent track needs one",
                i + 1,
                s.kind
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_check() {
        let h264 = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                    m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\n\
                    a=rtpmap:102 H264/90000\r\n\
                    a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";
        assert!(check_offer(h264).is_ok());
        let vp8 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(matches!(check_offer(vp8), Err(RtcError::NoH264)));
        let mode0 = "v=0\r\nm=video 9 RTP 102\r\na=rtpmap:102 H264/90000\r\n\
                     a=fmtp:102 packetization-mode=0;profile-level-id=42e01f\r\n";
        assert!(matches!(check_offer(mode0), Err(RtcError::NoH264)));
        let audio_only = "v=0\r\nm=audio 9 RTP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(check_offer(audio_only).is_ok());
        assert!(matches!(check_offer("hello"), Err(RtcError::BadSdp(_))));
        assert!(check_offer("").is_err());

        // Several sections: a sent track needs an SSRC or a RID to be told apart.
        let video = "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\na=rtpmap:102 H264/90000\r\n\
                     a=fmtp:102 packetization-mode=1\r\n";
        let audio = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                     a=rtpmap:111 opus/48000/2\r\na=msid:s a\r\n";
        let no_ssrc = format!("{audio}{video}a=msid:s v\r\n");
        let Err(RtcError::BadSdp(why)) = check_offer(&no_ssrc) else {
            panic!("an msid without ssrc in two sections passed");
        };
        assert!(why.contains("media section 1 (audio)"), "{why}");
        let with_ssrc =
            format!("{audio}a=ssrc:1 cname:x\r\n{video}a=msid:s v\r\na=ssrc:2 cname:x\r\n");
        assert!(check_offer(&with_ssrc).is_ok());
        let with_rid = format!("{audio}a=ssrc:1 cname:x\r\n{video}a=msid:s v\r\na=rid:h send\r\n");
        assert!(check_offer(&with_rid).is_ok());
        let receive_only =
            format!("{audio}a=ssrc:1 cname:x\r\n{video}a=recvonly\r\na=msid:s v\r\n");
        assert!(check_offer(&receive_only).is_ok());
        // One section alone is fine without: its packets can only be its own.
        let alone = format!("v=0\r\n{video}a=msid:s v\r\n");
        assert!(check_offer(&alone).is_ok());
    }
}
