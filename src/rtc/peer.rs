//! One participant's peer connection on the server side.
//!
//! The `webrtc` crate calls its event handler on the connection's driver task, so the handler
//! only forwards events into a bounded channel read by the participant's session (which owns
//! the [`ServerPeer`]). The handler holds nothing but that sender: no reference back to the
//! connection, so no cycle keeps a closed connection alive.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use rtc_core::ice::mdns::MulticastDnsMode;
use rtc_core::media_stream::MediaStreamTrack;
use rtc_core::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc_core::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCIceConnectionState, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

use super::egress::{self, Fanout, Sink};
use super::interceptor::{self, KeyframeRequests};
use super::ports::PortLease;
use super::RelayMetrics;
use super::{ingest, media_engine, RtcEngine, RtcError, RtcSettings, H264_FMTP};
use crate::media::pipeline::{Pipeline, PipelineControl};
use crate::media::StreamId;
use crate::metrics::Gauge;
use crate::voice::stream::VoiceTap;

/// Events of a peer connection, delivered to whoever owns it.
pub enum PeerEvent {
    LocalCandidate(IceCandidate),
    GatheringComplete,
    Connected,
    /// ICE lost its path; the connection may still recover.
    Disconnected,
    /// ICE gave up (no traffic for the configured timeout): the participant is gone.
    Failed,
    Closed,
    RemoteTrack(RemoteTrack),
    /// The participant's video is larger than `media.max_frame_pixels`: it is not relayed.
    VideoTooLarge {
        width: u32,
        height: u32,
    },
}

/// A track the remote side sends; publish it with [`ServerPeer::publish`].
pub struct RemoteTrack(pub(crate) Arc<dyn TrackRemote>);

/// An ICE candidate as browsers write it (`RTCIceCandidateInit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
    #[serde(default)]
    pub username_fragment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

/// A track a participant publishes, ready to be subscribed to.
pub struct Published {
    pub kind: MediaKind,
    pub stream: StreamId,
    /// The participant it belongs to; subscribers see it as the MediaStream id.
    pub owner: String,
    fanout: Arc<Fanout>,
    /// The video pipeline's control (IDR requests); none for audio.
    control: Option<Arc<PipelineControl>>,
    metrics: Arc<RelayMetrics>,
}

impl Published {
    fn live_gauge(metrics: &RelayMetrics, kind: MediaKind) -> &Gauge {
        match kind {
            MediaKind::Video => &metrics.video_streams,
            MediaKind::Audio => &metrics.audio_streams,
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        self.fanout.clear();
        Self::live_gauge(&self.metrics, self.kind).dec();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

struct Subscription {
    published: Weak<Published>,
    sender: Arc<dyn RtpSender>,
    sink: Arc<Sink>,
    kind: MediaKind,
}

/// The server's end of one participant's WebRTC session.
pub struct ServerPeer {
    engine: Arc<RtcEngine>,
    pc: Arc<dyn PeerConnection>,
    subscriptions: HashMap<SubscriptionId, Subscription>,
    next_subscription: u64,
    /// Remote candidates that arrived before the remote description.
    early_candidates: Vec<RTCIceCandidateInit>,
    /// Remote candidates taken so far (trickled and in SDPs), against the cap.
    remote_candidates: usize,
    /// The session's event channel, for what the media side has to tell it.
    events: mpsc::Sender<PeerEvent>,
    _port: Option<PortLease>,
}

/// Channel depth of peer events: candidates and state changes are few, tracks fewer.
const EVENT_DEPTH: usize = 256;

struct Handler {
    events: mpsc::Sender<PeerEvent>,
    /// Address advertised instead of the sockets' own in host candidates (1:1 NAT).
    public_ip: Option<IpAddr>,
    /// Where a server connection's failure is counted (none for the test client).
    metrics: Option<Arc<RelayMetrics>>,
    /// ICE reported failure: a failed connection failed in ICE, not in DTLS.
    ice_failed: std::sync::atomic::AtomicBool,
}

/// Event handlers alive now. The `webrtc` crate drops a connection's handler only when the
/// connection itself is freed, so this counts connections that were not (the churn test
/// watches it for reference cycles).
static LIVE_HANDLERS: AtomicUsize = AtomicUsize::new(0);

/// Peer connections (server and client side) whose memory is still held.
pub fn live_connections() -> usize {
    LIVE_HANDLERS.load(Ordering::Relaxed)
}

impl Drop for Handler {
    fn drop(&mut self) {
        LIVE_HANDLERS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handler {
    fn new(
        events: mpsc::Sender<PeerEvent>,
        public_ip: Option<IpAddr>,
        metrics: Option<Arc<RelayMetrics>>,
    ) -> Self {
        LIVE_HANDLERS.fetch_add(1, Ordering::Relaxed);
        Self {
            events,
            public_ip,
            metrics,
            ice_failed: Default::default(),
        }
    }

    fn emit(&self, event: PeerEvent) {
        if self.events.try_send(event).is_err() {
            tracing::debug!("peer event dropped: owner gone or not reading");
        }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self.emit(PeerEvent::LocalCandidate(IceCandidate {
                candidate: match self.public_ip {
                    Some(ip) => advertise_as(&init.candidate, ip),
                    None => init.candidate,
                },
                // The crate writes an empty mid; browsers then fall back to the m-line index.
                sdp_mid: init.sdp_mid.filter(|m| !m.is_empty()),
                sdp_mline_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            })),
            Err(e) => tracing::debug!(error = %e, "cannot serialise local candidate"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.emit(PeerEvent::GatheringComplete);
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if state == RTCIceConnectionState::Failed {
            self.ice_failed.store(true, Ordering::Relaxed);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => self.emit(PeerEvent::Connected),
            RTCPeerConnectionState::Disconnected => self.emit(PeerEvent::Disconnected),
            RTCPeerConnectionState::Failed => {
                if let Some(m) = &self.metrics {
                    if self.ice_failed.load(Ordering::Relaxed) {
                        m.ice_failures.inc();
                    } else {
                        m.dtls_failures.inc();
                    }
                }
                self.emit(PeerEvent::Failed)
            }
            RTCPeerConnectionState::Closed => self.emit(PeerEvent::Closed),
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        self.emit(PeerEvent::RemoteTrack(RemoteTrack(track)));
    }
}

/// Reads a remote track to its end and drops what it carries (a participant whose tracks
/// are not relayed), so that nothing queues up behind it.
pub fn discard(track: RemoteTrack) {
    tokio::spawn(async move {
        while let Some(event) = track.0.poll().await {
            if matches!(event, TrackRemoteEvent::OnEnded) {
                break;
            }
        }
    });
}

/// Rewrites the connection address of a host candidate (`candidate:… udp PRIO IP PORT typ
/// host`) to `public`; other candidates are returned unchanged.
pub(crate) fn advertise_as(candidate: &str, public: IpAddr) -> String {
    let mut fields: Vec<&str> = candidate.split_whitespace().collect();
    let public = public.to_string();
    if fields.len() >= 8 && fields[6] == "typ" && fields[7] == "host" {
        fields[4] = &public;
        fields.join(" ")
    } else {
        candidate.to_owned()
    }
}

/// Remote candidates one peer connection takes at most, trickled or in an SDP (a browser sends a
/// handful); past it a trickled candidate is refused.
pub const MAX_REMOTE_CANDIDATES: usize = 64;

/// Whether a candidate line (`candidate:FOUNDATION COMPONENT TRANSPORT …`, with or without
/// `a=`) is a UDP one. The server never uses ICE-TCP: it gathers no TCP candidates, and a
/// client's TCP candidates are dropped, so no client can make it open TCP connections.
pub(crate) fn is_udp_candidate(line: &str) -> bool {
    let line = line.strip_prefix("a=").unwrap_or(line);
    let line = line.strip_prefix("candidate:").unwrap_or(line);
    line.split_ascii_whitespace()
        .nth(2)
        .is_some_and(|t| t.eq_ignore_ascii_case("udp"))
}

/// A remote SDP with its non-UDP candidates dropped and at most [`MAX_REMOTE_CANDIDATES`]
/// candidate lines kept; returns it and how many candidates it kept.
pub(crate) fn remote_sdp_candidates(sdp: &str) -> (String, usize) {
    let mut kept = 0;
    let out = sdp
        .split_inclusive('\n')
        .filter(|line| {
            let Some(rest) = line.strip_prefix("a=candidate:") else {
                return true;
            };
            let keep = is_udp_candidate(rest) && kept < MAX_REMOTE_CANDIDATES;
            kept += usize::from(keep);
            keep
        })
        .collect();
    (out, kept)
}

/// A participant's SDP (an offer when `offer`, else an answer) as the WebRTC stack takes it:
/// checked for what the server needs (offers), its non-UDP candidates dropped, parsed. Returns
/// it with the number of candidates it carries.
pub fn parse_remote(sdp: &str, offer: bool) -> Result<(RTCSessionDescription, usize), RtcError> {
    if offer {
        super::check_offer(sdp)?;
    }
    let (sdp, candidates) = remote_sdp_candidates(sdp);
    let parsed = if offer {
        RTCSessionDescription::offer(sdp)
    } else {
        RTCSessionDescription::answer(sdp)
    };
    Ok((
        parsed.map_err(|e| RtcError::BadSdp(e.to_string()))?,
        candidates,
    ))
}

/// Whether a trickled candidate line is one to use (`Ok(false)`: not UDP, ignored), or an
/// error when it is too long.
pub fn screen_candidate(line: &str) -> Result<bool, RtcError> {
    if line.len() > 1024 {
        return Err(RtcError::BadCandidate("longer than 1024 bytes".into()));
    }
    Ok(is_udp_candidate(line))
}

/// Applies [`advertise_as`] to every `a=candidate` line of an SDP.
fn advertise_sdp(sdp: String, public: Option<IpAddr>) -> String {
    let Some(public) = public else {
        return sdp;
    };
    sdp.split_inclusive('\n')
        .map(|line| match line.strip_prefix("a=") {
            Some(rest) if rest.starts_with("candidate:") => {
                format!("a={}\r\n", advertise_as(rest.trim_end(), public))
            }
            _ => line.to_owned(),
        })
        .collect()
}

/// Builds a peer connection with facerelay's codecs, ICE settings and interceptors. Shared by
/// the server and the test client so that both speak exactly the same dialect.
pub(crate) async fn build_connection(
    settings: &RtcSettings,
    port: Option<u16>,
    ice_servers: Vec<RTCIceServer>,
    events: mpsc::Sender<PeerEvent>,
    metrics: Option<Arc<RelayMetrics>>,
) -> Result<Arc<dyn PeerConnection>, RtcError> {
    let mut media = media_engine()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?
        .with(interceptor::SLOT.into(), KeyframeRequests::default());
    let half = settings.disconnect_timeout / 2;
    // 1:1 NAT: `SettingEngineBuilder::with_nat_1to1_ips` is accepted but not applied by the
    // `webrtc` 0.21 driver, so the public address is written into candidates here instead
    // (`advertise_as`); the NAT maps the browser's checks back onto our socket.
    let setting = SettingEngineBuilder::new()
        // Browsers' `.local` host candidates are not needed: their checks reach us anyway and
        // we learn them as peer-reflexive. Gathering mDNS per connection would cost a socket.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(settings.include_loopback)
        .with_ice_timeouts(
            Some(half),
            Some(settings.disconnect_timeout),
            Some(half.min(std::time::Duration::from_secs(2))),
        );
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .build();
    let addr = format!("{}:{}", settings.bind_ip, port.unwrap_or(0));
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_setting_engine(setting.build())
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler::new(events, settings.public_ip, metrics)))
        .with_udp_addrs(vec![addr])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

fn to_init(c: IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    }
}

impl ServerPeer {
    pub async fn new(
        engine: Arc<RtcEngine>,
    ) -> Result<(Self, mpsc::Receiver<PeerEvent>), RtcError> {
        let port = match &engine.ports {
            Some(pool) => Some(
                pool.lease_bindable(engine.settings.bind_ip)
                    .ok_or(RtcError::NoPorts)?,
            ),
            None => None,
        };
        let (tx, rx) = mpsc::channel(EVENT_DEPTH);
        // Browsers get the STUN/TURN list in signalling; the server itself needs none on a
        // public address, and a TURN server is the browser's business.
        let pc = build_connection(
            &engine.settings,
            port.as_ref().map(PortLease::port),
            vec![],
            tx.clone(),
            Some(engine.metrics.clone()),
        )
        .await?;
        Ok((
            Self {
                engine,
                pc,
                subscriptions: HashMap::new(),
                next_subscription: 1,
                early_candidates: Vec::new(),
                remote_candidates: 0,
                events: tx,
                _port: port,
            },
            rx,
        ))
    }

    /// Applies the participant's offer and returns the answer.
    pub async fn accept_offer(&mut self, sdp: String) -> Result<String, RtcError> {
        let (offer, candidates) = parse_remote(&sdp, true)?;
        self.remote_candidates += candidates;
        self.apply_remote(offer).await?;
        let answer = self.pc.create_answer(None).await?;
        let sdp = answer.sdp.clone();
        self.pc.set_local_description(answer).await?;
        self.activate_subscriptions().await;
        Ok(advertise_sdp(sdp, self.engine.settings.public_ip))
    }

    /// Creates an offer (server-initiated renegotiation) and returns its SDP.
    pub async fn create_offer(&mut self) -> Result<String, RtcError> {
        let offer = self.pc.create_offer(None).await?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await?;
        Ok(advertise_sdp(sdp, self.engine.settings.public_ip))
    }

    /// Applies the participant's answer to our offer.
    pub async fn accept_answer(&mut self, sdp: String) -> Result<(), RtcError> {
        let (answer, candidates) = parse_remote(&sdp, false)?;
        self.remote_candidates += candidates;
        self.apply_remote(answer).await?;
        self.activate_subscriptions().await;
        Ok(())
    }

    /// Sets the remote description, then adds the candidates that arrived before it.
    async fn apply_remote(&mut self, desc: RTCSessionDescription) -> Result<(), RtcError> {
        self.pc
            .set_remote_description(desc)
            .await
            .map_err(|e| RtcError::BadSdp(e.to_string()))?;
        self.flush_early_candidates().await;
        Ok(())
    }

    pub async fn add_remote_candidate(&mut self, candidate: IceCandidate) -> Result<(), RtcError> {
        if self.remote_candidates >= MAX_REMOTE_CANDIDATES {
            return Err(RtcError::BadCandidate(format!(
                "more than {MAX_REMOTE_CANDIDATES} candidates on one connection"
            )));
        }
        let usable = screen_candidate(&candidate.candidate)?;
        self.remote_candidates += 1;
        if !usable {
            // Browsers offer TCP candidates too; they are simply not used.
            tracing::debug!("remote non-UDP candidate ignored");
            return Ok(());
        }
        let init = to_init(candidate);
        if self.pc.remote_description().await.is_none() {
            if self.early_candidates.len() < 64 {
                self.early_candidates.push(init);
            }
            return Ok(());
        }
        self.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| RtcError::BadCandidate(e.to_string()))
    }

    async fn flush_early_candidates(&mut self) {
        for init in std::mem::take(&mut self.early_candidates) {
            if let Err(e) = self.pc.add_ice_candidate(init).await {
                tracing::debug!(error = %e, "early remote candidate rejected");
            }
        }
    }

    /// Starts relaying a remote track: video through decode → stage → encode, audio as is or,
    /// for a speaker with a voice chosen, through the disguise.
    pub async fn publish(
        &self,
        track: RemoteTrack,
        owner: &str,
    ) -> Result<Arc<Published>, RtcError> {
        let track = track.0;
        let engine = &self.engine;
        let stream = engine.next_stream_id();
        let fanout = Arc::new(Fanout::default());
        let kind = match track.kind().await {
            RtpCodecKind::Video => MediaKind::Video,
            _ => MediaKind::Audio,
        };
        let control = match kind {
            MediaKind::Video => {
                let (tx, rx) = mpsc::channel(4);
                let pipeline = Pipeline::spawn(
                    stream,
                    engine.settings.pipeline,
                    engine.codec_pool.clone(),
                    engine.pipeline_metrics.clone(),
                    engine.stage.open(stream, owner),
                    tx,
                )
                .map_err(|e| RtcError::Thread(e.to_string()))?;
                let control = pipeline.control().clone();
                fanout.set_control(control.clone());
                tokio::spawn(egress::run_video_egress(
                    fanout.clone(),
                    rx,
                    engine.latency.clone(),
                    engine.metrics.clone(),
                ));
                tokio::spawn(ingest::run_video_ingest(
                    track,
                    pipeline,
                    engine.settings.pli_throttle,
                    engine.metrics.clone(),
                    self.events.clone(),
                ));
                Some(control)
            }
            MediaKind::Audio => {
                let tap = VoiceTap::new(owner, engine.voices.clone());
                tokio::spawn(ingest::run_audio_ingest(track, fanout.clone(), tap));
                None
            }
        };
        Published::live_gauge(&engine.metrics, kind).inc();
        Ok(Arc::new(Published {
            kind,
            stream,
            owner: owner.to_owned(),
            fanout,
            control,
            metrics: engine.metrics.clone(),
        }))
    }

    /// Adds a track carrying `published` to this connection. It is sent once the next
    /// negotiation completes; the caller renegotiates.
    pub async fn subscribe(
        &mut self,
        published: &Arc<Published>,
    ) -> Result<SubscriptionId, RtcError> {
        let ssrc = egress::rand_u32();
        let id = SubscriptionId(self.next_subscription);
        self.next_subscription += 1;
        // The track id names the subscription, not only the stream: a stream unsubscribed and
        // subscribed again before the removal is negotiated (the roulette pairing the same two
        // again) must not give two media sections the same `a=msid`, which browsers refuse.
        let track = local_track(
            published.kind,
            &published.owner,
            &format!("{}-{}-{}", published.owner, published.stream, id.0),
            ssrc,
        );
        let sender = self
            .pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await?;
        let sink = Arc::new(Sink::queued(id.0, track, ssrc));
        published.fanout.add(sink.clone());
        self.subscriptions.insert(
            id,
            Subscription {
                published: Arc::downgrade(published),
                sender,
                sink,
                kind: published.kind,
            },
        );
        Ok(id)
    }

    /// Stops sending a subscription; the caller renegotiates.
    pub async fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), RtcError> {
        let Some(sub) = self.subscriptions.remove(&id) else {
            return Ok(());
        };
        if let Some(published) = sub.published.upgrade() {
            published.fanout.remove(sub.sink.id);
        }
        self.pc.remove_track(&sub.sender).await?;
        Ok(())
    }

    /// After a negotiation: learn each new subscription's payload type, start sending, ask the
    /// publisher's encoder for an IDR so the new subscriber can start decoding at once, and
    /// listen for its keyframe requests.
    async fn activate_subscriptions(&mut self) {
        for sub in self.subscriptions.values() {
            if sub.sink.is_active() {
                continue;
            }
            let Some(payload_type) = negotiated_payload_type(&sub.sender, sub.kind).await else {
                continue;
            };
            sub.sink.activate(payload_type);
            let Some(published) = sub.published.upgrade() else {
                continue;
            };
            if let Some(control) = &published.control {
                control.request_idr();
                // A subscriber's PLI/FIR becomes an IDR of the stream it watches.
                let control = Arc::downgrade(control);
                let metrics = self.engine.metrics.clone();
                tokio::spawn(on_keyframe_requests(sub.sink.track().clone(), move || {
                    metrics.keyframe_requests.inc();
                    control.upgrade().map(|c| c.request_idr()).is_some()
                }));
            }
        }
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Closes the connection and detaches every subscription (idempotent).
    pub async fn close(&mut self) {
        for (_, sub) in self.subscriptions.drain() {
            if let Some(published) = sub.published.upgrade() {
                published.fanout.remove(sub.sink.id);
            }
        }
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing peer connection");
        }
    }
}

/// A track we send: `stream_id` groups it on the receiving side (the participant it shows).
pub(crate) fn local_track(
    kind: MediaKind,
    stream_id: &str,
    track_id: &str,
    ssrc: u32,
) -> Arc<TrackLocalStaticRTP> {
    let (codec_kind, codec) = match kind {
        MediaKind::Video => (
            RtpCodecKind::Video,
            RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: H264_FMTP.to_owned(),
                rtcp_feedback: vec![],
            },
        ),
        MediaKind::Audio => (
            RtpCodecKind::Audio,
            RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: super::OPUS_FMTP.to_owned(),
                rtcp_feedback: vec![],
            },
        ),
    };
    let label = format!("{stream_id}-{kind:?}").to_lowercase();
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream_id.to_owned(),
        track_id.to_owned(),
        label,
        codec_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )))
}

/// The payload type a negotiated sender uses for our codec of that kind (H.264 must be
/// packetization-mode 1), or none before negotiation completes.
pub(crate) async fn negotiated_payload_type(
    sender: &Arc<dyn RtpSender>,
    kind: MediaKind,
) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    let wanted = match kind {
        MediaKind::Video => MIME_TYPE_H264,
        MediaKind::Audio => MIME_TYPE_OPUS,
    };
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| {
            c.rtp_codec.mime_type.eq_ignore_ascii_case(wanted)
                && (kind == MediaKind::Audio
                    || c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
        })
        .map(|c| c.payload_type)
}

/// Calls `on_request` for each PLI/FIR the remote side sends about `track`, until the track
/// is unbound (unsubscribed, connection closed) or `on_request` returns false.
pub(crate) async fn on_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    on_request: impl Fn() -> bool + Send + 'static,
) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        if packets
            .iter()
            .any(|p| interceptor::is_keyframe_request(p.as_ref()))
            && !on_request()
        {
            break;
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_udp_candidates_are_taken_from_an_sdp_and_at_most_64() {
        let mut sdp = String::from("v=0\r\na=group:BUNDLE 0\r\n");
        for i in 0..70 {
            sdp.push_str(&format!(
                "a=candidate:{i} 1 udp 2122260223 10.0.0.1 {} typ host\r\n",
                5000 + i
            ));
            sdp.push_str(&format!(
                "a=candidate:t{i} 1 TCP 1518280447 10.0.0.1 9 typ host tcptype active\r\n"
            ));
        }
        let (out, kept) = remote_sdp_candidates(&sdp);
        assert_eq!(kept, MAX_REMOTE_CANDIDATES);
        assert!(!out.to_ascii_lowercase().contains(" tcp "));
        assert_eq!(out.matches("a=candidate:").count(), MAX_REMOTE_CANDIDATES);
        assert!(out.starts_with("v=0\r\na=group:BUNDLE 0\r\n"));
        assert!(is_udp_candidate("candidate:1 1 UDP 1 1.2.3.4 5 typ host"));
        assert!(!is_udp_candidate(
            "a=candidate:1 1 tcp 1 1.2.3.4 5 typ host"
        ));
        assert!(!is_udp_candidate("garbage"));
    }

    use super::*;

    #[test]
    fn host_candidates_advertise_the_public_address() {
        let public: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(
            advertise_as(
                "candidate:1 1 udp 2130706431 10.0.0.5 40001 typ host",
                public
            ),
            "candidate:1 1 udp 2130706431 203.0.113.10 40001 typ host"
        );
        let relay = "candidate:2 1 udp 16777215 198.51.100.1 3478 typ relay raddr 0.0.0.0 rport 0";
        assert_eq!(advertise_as(relay, public), relay);
        assert_eq!(advertise_as("garbage", public), "garbage");
        let sdp = "v=0\r\na=candidate:1 1 udp 1 10.0.0.5 40001 typ host\r\na=mid:0\r\n".to_owned();
        assert_eq!(
            advertise_sdp(sdp, Some(public)),
            "v=0\r\na=candidate:1 1 udp 1 203.0.113.10 40001 typ host\r\na=mid:0\r\n"
        );
    }
}
