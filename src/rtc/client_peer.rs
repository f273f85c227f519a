//! The WebRTC half of a participant written in Rust: a peer connection built exactly like the
//! server's ([`build_connection`]), which publishes H.264 (encoded with openh264) and raw Opus
//! packets and decodes what it receives. The test kit's signalling client
//! (`crate::testkit::Client`) drives it; nothing on the server uses it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rtc_core::rtp::codec::h264::H264Payloader;
use rtc_core::rtp::{Header, Packet};
use rtc_core::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc_core::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpSender;

use super::assembler::{Assembler, RtpIn};
use super::egress::{rand_u32, Fanout, Sink};
use super::peer::{
    build_connection, local_track, negotiated_payload_type, on_keyframe_requests, IceCandidate,
    MediaKind, PeerEvent, RemoteTrack,
};
use super::{RtcError, RtcSettings};
use crate::media::pipeline::OutputUnit;
use crate::media::{EncoderSettings, I420Frame, VideoDecoder, VideoEncoder};

/// What a client receives from the others.
#[derive(Debug)]
pub enum Received {
    /// A decoded picture from participant `owner`, and when its last packet arrived.
    Video {
        owner: String,
        frame: I420Frame,
        arrived: Instant,
        /// The access unit was an IDR.
        keyframe: bool,
        /// The payload of facerelay's SEI mark in the access unit (a swapped face), if any.
        mark: Option<Vec<u8>>,
    },
    /// An RTP audio packet from participant `owner`.
    Audio { owner: String, payload: Bytes },
}

/// What a client sends.
#[derive(Debug, Clone, Copy)]
pub struct Publish {
    pub video: bool,
    pub audio: bool,
}

struct Outgoing {
    kind: MediaKind,
    sender: Arc<dyn RtpSender>,
    sink: Arc<Sink>,
    fanout: Arc<Fanout>,
}

/// The negotiation side of a client's peer connection; clones share it.
#[derive(Clone)]
pub struct ClientPeer {
    inner: Arc<Inner>,
}

struct Inner {
    pc: Arc<dyn PeerConnection>,
    outgoing: Vec<Outgoing>,
    /// Set when the server asks for a keyframe (PLI/FIR), or the connection comes up.
    keyframe_wanted: Arc<AtomicBool>,
    remote_tracks: Mutex<Vec<Arc<dyn TrackRemote>>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

/// The sending side: encodes and sends frames and audio packets on the published tracks.
pub struct ClientSender {
    video: Option<Arc<Fanout>>,
    audio: Option<Arc<Fanout>>,
    audio_seq: u16,
    encoder: Option<VideoEncoder>,
    payloader: H264Payloader,
    keyframe_wanted: Arc<AtomicBool>,
}

impl ClientPeer {
    /// A connection that publishes what `publish` asks for as participant `id`, with
    /// receive-only sections for the rest (an offer needs at least one m-line for ICE to
    /// start, and the server's later offers reuse them). Returns its events (local candidates,
    /// state, remote tracks) beside.
    pub async fn new(
        settings: &RtcSettings,
        id: &str,
        publish: Publish,
        encoder: EncoderSettings,
    ) -> Result<(Self, ClientSender, mpsc::Receiver<PeerEvent>), RtcError> {
        let (events_tx, events) = mpsc::channel(256);
        let pc = build_connection(settings, None, vec![], events_tx, None).await?;
        let mut outgoing = Vec::new();
        for (kind, wanted) in [
            (MediaKind::Video, publish.video),
            (MediaKind::Audio, publish.audio),
        ] {
            if !wanted {
                continue;
            }
            let ssrc = rand_u32();
            let track = local_track(kind, id, &format!("{id}-{kind:?}"), ssrc);
            let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
            let sink = Arc::new(Sink::new(1, track, ssrc));
            let fanout = Arc::new(Fanout::default());
            fanout.add(sink.clone());
            outgoing.push(Outgoing {
                kind,
                sender,
                sink,
                fanout,
            });
        }
        for (kind, published) in [
            (RtpCodecKind::Video, publish.video),
            (RtpCodecKind::Audio, publish.audio),
        ] {
            if !published {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                };
                pc.add_transceiver_from_kind(kind, Some(init)).await?;
            }
        }
        let fanout_of = |kind| {
            outgoing
                .iter()
                .find(|o: &&Outgoing| o.kind == kind)
                .map(|o| o.fanout.clone())
        };
        let keyframe_wanted = Arc::new(AtomicBool::new(true));
        let sender = ClientSender {
            video: fanout_of(MediaKind::Video),
            audio: fanout_of(MediaKind::Audio),
            audio_seq: 0,
            encoder: publish
                .video
                .then(|| VideoEncoder::new(encoder))
                .transpose()
                .map_err(|e| RtcError::WebRtc(e.to_string()))?,
            payloader: H264Payloader::default(),
            keyframe_wanted: keyframe_wanted.clone(),
        };
        let peer = Self {
            inner: Arc::new(Inner {
                pc,
                outgoing,
                keyframe_wanted,
                remote_tracks: Mutex::default(),
                readers: Mutex::default(),
            }),
        };
        Ok((peer, sender, events))
    }

    /// Makes the offer and sets it as the local description; returns its SDP.
    pub async fn offer(&self) -> Result<String, RtcError> {
        let pc = &self.inner.pc;
        let offer = pc.create_offer(None).await?;
        let sdp = offer.sdp.clone();
        pc.set_local_description(offer).await?;
        Ok(sdp)
    }

    /// Takes the server's answer: the published tracks start flowing, and a PLI/FIR from the
    /// server makes the next frame a keyframe.
    pub async fn on_answer(&self, sdp: String) -> Result<(), RtcError> {
        let inner = &self.inner;
        inner
            .pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        for o in &inner.outgoing {
            if let Some(pt) = negotiated_payload_type(&o.sender, o.kind).await {
                o.sink.activate(pt);
                if o.kind == MediaKind::Video {
                    let wanted = inner.keyframe_wanted.clone();
                    tokio::spawn(on_keyframe_requests(o.sink.track().clone(), move || {
                        wanted.store(true, Ordering::Relaxed);
                        true
                    }));
                }
            }
        }
        Ok(())
    }

    /// Takes an offer of the server (it adds or removes tracks); returns the answer's SDP.
    pub async fn on_offer(&self, sdp: String) -> Result<String, RtcError> {
        let pc = &self.inner.pc;
        pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
            .await?;
        let answer = pc.create_answer(None).await?;
        let sdp = answer.sdp.clone();
        pc.set_local_description(answer).await?;
        Ok(sdp)
    }

    pub async fn add_candidate(&self, candidate: IceCandidate) -> Result<(), RtcError> {
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            username_fragment: candidate.username_fragment,
            ..Default::default()
        };
        self.inner.pc.add_ice_candidate(init).await?;
        Ok(())
    }

    /// The connection is up: the first frames may have gone out before DTLS was, so the next
    /// one is a keyframe.
    pub fn on_connected(&self) {
        self.inner.keyframe_wanted.store(true, Ordering::Relaxed);
    }

    /// Reads a track the server sends: video is reassembled and decoded, audio handed on as
    /// it came. What `out`'s reader does not take is dropped (it never stalls the connection).
    pub fn on_remote_track(&self, track: RemoteTrack, out: mpsc::Sender<Received>) {
        let inner = &self.inner;
        if let Ok(mut tracks) = inner.remote_tracks.lock() {
            tracks.push(track.0.clone());
        }
        let reader = tokio::spawn(read_track(track.0, out));
        if let Ok(mut readers) = inner.readers.lock() {
            readers.push(reader);
        }
    }

    /// Sends a PLI for every video track received, as a browser does after loss.
    pub async fn request_keyframes(&self) {
        let tracks = self
            .inner
            .remote_tracks
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        for track in tracks {
            let Some(&media_ssrc) = track.ssrcs().await.first() else {
                continue;
            };
            let pli =
                rtc_core::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
            let _ = track.write_rtcp(vec![Box::new(pli)]).await;
        }
    }

    /// Stops reading the received tracks; the connection stays up.
    pub fn stop_reading(&self) {
        if let Ok(mut readers) = self.inner.readers.lock() {
            for reader in readers.drain(..) {
                reader.abort();
            }
        }
    }

    /// Stops the connection and its track readers.
    pub async fn close(&self) {
        self.stop_reading();
        let _ = self.inner.pc.close().await;
    }
}

impl ClientSender {
    /// Encodes and sends one video frame with the given RTP timestamp (90 kHz).
    pub async fn send_video(&mut self, frame: &I420Frame, timestamp: u32) -> Result<(), RtcError> {
        let (Some(fanout), Some(encoder)) = (&self.video, &mut self.encoder) else {
            return Err(RtcError::WebRtc(
                "this client does not publish video".into(),
            ));
        };
        let encoded = encoder
            .encode(frame, self.keyframe_wanted.swap(false, Ordering::Relaxed))
            .map_err(|e| RtcError::WebRtc(e.to_string()))?;
        let unit = OutputUnit {
            data: Bytes::from(encoded.data),
            timestamp,
            keyframe: encoded.keyframe,
            arrived: Instant::now(),
            width: frame.width(),
            height: frame.height(),
        };
        fanout.send_video(&mut self.payloader, &unit, None).await;
        Ok(())
    }

    /// Sends one Opus packet (any payload: the relay forwards it untouched).
    pub async fn send_audio(&mut self, payload: Bytes, timestamp: u32) -> Result<(), RtcError> {
        let Some(fanout) = &self.audio else {
            return Err(RtcError::WebRtc(
                "this client does not publish audio".into(),
            ));
        };
        self.audio_seq = self.audio_seq.wrapping_add(1);
        let packet = Packet {
            header: Header {
                version: 2,
                sequence_number: self.audio_seq,
                timestamp,
                ..Default::default()
            },
            payload,
        };
        fanout.send_audio(&packet).await;
        Ok(())
    }
}

async fn read_track(track: Arc<dyn TrackRemote>, out: mpsc::Sender<Received>) {
    let owner = track.stream_id().await;
    let is_video = matches!(track.kind().await, RtpCodecKind::Video);
    let mut assembler = Assembler::new();
    let mut decoder = match VideoDecoder::new(u32::MAX) {
        Ok(d) => d,
        Err(_) => return,
    };
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            if matches!(event, TrackRemoteEvent::OnEnded) {
                break;
            }
            continue;
        };
        // `try_send`: a caller that stops reading must not stall this track (and with it the
        // connection's driver); what it does not read is dropped.
        if !is_video {
            let _ = out.try_send(Received::Audio {
                owner: owner.clone(),
                payload: packet.payload,
            });
            continue;
        }
        let assembled = assembler.push(RtpIn {
            sequence_number: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            payload: packet.payload,
            arrival: Instant::now(),
        });
        for unit in assembled.units {
            match decoder.decode(&unit.data) {
                Ok(Some(frame)) => {
                    let _ = out.try_send(Received::Video {
                        owner: owner.clone(),
                        frame,
                        arrived: unit.completed_at,
                        keyframe: unit.keyframe,
                        mark: crate::media::sei::find(&unit.data),
                    });
                }
                Ok(None) => {}
                Err(_) => assembler.resync(),
            }
        }
    }
}
