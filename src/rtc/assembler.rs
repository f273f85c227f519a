//! RTP → H.264 access units (RFC 6184), emitted on the marker bit.
//!
//! An access unit is complete when the packet carrying the RTP marker bit has arrived and every
//! sequence number since the previous access unit is present: no waiting for the next frame's
//! first packet, so no extra frame of latency. Packets may arrive out of order within a small
//! window (NACK retransmissions, path reordering). A gap that outlives the window means loss:
//! everything up to the next frame is dropped, the caller is told to ask for a keyframe, and
//! only a keyframe resumes the stream (a P-frame over a hole would decode as garbage).
//!
//! The depacketizer is ours rather than the webrtc crate's because it parses bytes straight
//! from the network: every length is checked, nothing here can panic.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::h264::{contains_nal, NAL_IDR, START_CODE};

/// Packets a missing sequence number may be overtaken by before it counts as lost.
pub const REORDER_WINDOW: u64 = 48;
/// Largest access unit accepted, bytes; a larger one is malformed or hostile.
pub const MAX_ACCESS_UNIT_BYTES: usize = 4 << 20;

const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// What the assembler needs of an RTP packet.
#[derive(Debug, Clone)]
pub struct RtpIn {
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub arrival: Instant,
}

/// One complete H.264 frame in Annex-B form.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessUnit {
    pub data: Bytes,
    /// RTP timestamp (90 kHz) of the frame.
    pub timestamp: u32,
    /// Holds an IDR slice (and so can start decoding).
    pub keyframe: bool,
    /// When the packet that completed the frame arrived.
    pub completed_at: Instant,
}

/// What pushing one packet produced.
#[derive(Debug, Default, PartialEq)]
pub struct Assembled {
    pub units: Vec<AccessUnit>,
    /// Loss or corruption was detected: ask the sender for a keyframe.
    pub need_keyframe: bool,
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AssemblerStats {
    pub packets: u64,
    pub padding_packets: u64,
    pub duplicate_or_late: u64,
    pub gaps: u64,
    pub malformed: u64,
    /// Complete frames dropped while waiting for a keyframe.
    pub dropped_units: u64,
}

#[derive(Debug)]
pub struct Assembler {
    /// Extended sequence number the next access unit starts at.
    next: Option<u64>,
    /// Highest extended sequence number seen (for unwrapping).
    highest: Option<u64>,
    pending: BTreeMap<u64, RtpIn>,
    waiting_for_keyframe: bool,
    /// RTP timestamp of the last frame taken off `pending`.
    last_timestamp: Option<u32>,
    stats: AssemblerStats,
}

impl Default for Assembler {
    fn default() -> Self {
        Self::new()
    }
}

impl Assembler {
    pub fn new() -> Self {
        Self {
            next: None,
            highest: None,
            pending: BTreeMap::new(),
            // A decoder can only start on a keyframe.
            waiting_for_keyframe: true,
            last_timestamp: None,
            stats: AssemblerStats::default(),
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// Whether frames are being dropped until a keyframe arrives.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Tells the assembler that a downstream consumer (the decoder) lost sync: drop frames
    /// until the next keyframe.
    pub fn resync(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// Maps a 16-bit sequence number onto a 64-bit counter that never wraps.
    fn extend(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            // Start well above zero so that slightly older packets still fit below.
            let ext = (1u64 << 32) + seq as u64;
            self.highest = Some(ext);
            return ext;
        };
        let base = highest & !0xFFFF;
        let candidates = [
            base.wrapping_sub(0x1_0000) | seq as u64,
            base | seq as u64,
            (base + 0x1_0000) | seq as u64,
        ];
        let ext = candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(highest))
            .unwrap_or(base | seq as u64);
        if ext > highest {
            self.highest = Some(ext);
        }
        ext
    }

    pub fn push(&mut self, packet: RtpIn) -> Assembled {
        let mut out = Assembled::default();
        self.stats.packets += 1;
        let seq = self.extend(packet.sequence_number);
        let next = *self.next.get_or_insert(seq);
        if seq < next || self.pending.contains_key(&seq) {
            self.stats.duplicate_or_late += 1;
            return out;
        }
        if packet.payload.is_empty() {
            self.stats.padding_packets += 1;
        }
        self.pending.insert(seq, packet);
        loop {
            match self.take_complete() {
                Some(Ok(unit)) => self.deliver(unit, &mut out),
                Some(Err(())) => {
                    self.stats.malformed += 1;
                    self.lost(&mut out);
                }
                None => break,
            }
        }
        // A hole overtaken by too many later packets is loss.
        if let (Some(next), Some(&last)) = (self.next, self.pending.keys().next_back()) {
            if !self.pending.contains_key(&next) && last.saturating_sub(next) > REORDER_WINDOW {
                self.stats.gaps += 1;
                self.skip_to_next_frame_after_gap();
                self.lost(&mut out);
                // The packets after the hole may already hold complete frames.
                while let Some(result) = self.take_complete() {
                    match result {
                        Ok(unit) => self.deliver(unit, &mut out),
                        Err(()) => {
                            self.stats.malformed += 1;
                            self.lost(&mut out);
                        }
                    }
                }
            }
        }
        out
    }

    fn lost(&mut self, out: &mut Assembled) {
        self.waiting_for_keyframe = true;
        out.need_keyframe = true;
    }

    fn deliver(&mut self, unit: AccessUnit, out: &mut Assembled) {
        if self.waiting_for_keyframe {
            if !unit.keyframe {
                self.stats.dropped_units += 1;
                return;
            }
            self.waiting_for_keyframe = false;
        }
        out.units.push(unit);
    }

    /// After a gap: drop pending packets up to the first one known to start a frame, i.e. one
    /// that follows a marker or a timestamp change, or whose predecessor is missing but which
    /// opens a NAL unit of a frame newer than the last one delivered.
    fn skip_to_next_frame_after_gap(&mut self) {
        let mut previous: Option<(u64, u32, bool)> = None;
        let mut start = None;
        for (&seq, p) in &self.pending {
            let starts = match previous {
                Some((prev_seq, ts, marker)) if prev_seq + 1 == seq => marker || ts != p.timestamp,
                _ => Some(p.timestamp) != self.last_timestamp && opens_nal_unit(&p.payload),
            };
            if starts {
                start = Some(seq);
                break;
            }
            previous = Some((seq, p.timestamp, p.marker));
        }
        match start {
            Some(start) => {
                self.pending = self.pending.split_off(&start);
                self.next = Some(start);
            }
            None => {
                // No frame start in view: wait for the one after the newest packet.
                let after = self.pending.keys().next_back().map_or(0, |s| s + 1);
                self.pending.clear();
                self.next = Some(after);
            }
        }
    }

    /// Removes and depacketizes the frame at the head of `pending` if it is complete.
    fn take_complete(&mut self) -> Option<Result<AccessUnit, ()>> {
        let next = self.next?;
        let mut end = None;
        let mut expected = next;
        for (&seq, p) in self.pending.range(next..) {
            if seq != expected {
                return None;
            }
            if p.marker {
                end = Some(seq);
                break;
            }
            expected += 1;
        }
        let end = end?;
        let rest = self.pending.split_off(&(end + 1));
        let frame = std::mem::replace(&mut self.pending, rest);
        self.next = Some(end + 1);
        self.last_timestamp = frame.values().next_back().map(|p| p.timestamp);
        Some(depacketize_frame(frame.into_values()))
    }
}

/// Whether a payload begins a NAL unit (anything but an FU-A continuation or end).
fn opens_nal_unit(payload: &[u8]) -> bool {
    match payload {
        [] => false,
        [h, rest @ ..] if h & 0x1F == FU_A => rest.first().is_some_and(|fu| fu & 0x80 != 0),
        _ => true,
    }
}

/// Turns the RTP payloads of one frame into an Annex-B access unit.
fn depacketize_frame(packets: impl Iterator<Item = RtpIn>) -> Result<AccessUnit, ()> {
    let mut data = BytesMut::new();
    let mut fu: Option<BytesMut> = None;
    let mut timestamp = 0;
    let mut completed_at = None;
    for p in packets {
        timestamp = p.timestamp;
        completed_at = Some(p.arrival);
        if p.payload.is_empty() {
            continue; // padding-only packet (bandwidth probing)
        }
        depacketize_payload(&p.payload, &mut data, &mut fu)?;
        if data.len() > MAX_ACCESS_UNIT_BYTES {
            return Err(());
        }
    }
    if fu.is_some() || data.is_empty() {
        // A fragmented NAL unit never ended, or the frame carried nothing.
        return Err(());
    }
    let data = data.freeze();
    Ok(AccessUnit {
        keyframe: contains_nal(&data, NAL_IDR),
        data,
        timestamp,
        completed_at: completed_at.ok_or(())?,
    })
}

fn depacketize_payload(
    payload: &[u8],
    out: &mut BytesMut,
    fu: &mut Option<BytesMut>,
) -> Result<(), ()> {
    let header = *payload.first().ok_or(())?;
    if header & 0x80 != 0 {
        return Err(()); // forbidden_zero_bit
    }
    match header & 0x1F {
        1..=23 => {
            if fu.is_some() {
                return Err(());
            }
            out.put_slice(&START_CODE);
            out.put_slice(payload);
        }
        STAP_A => {
            if fu.is_some() {
                return Err(());
            }
            let mut rest = &payload[1..];
            if rest.is_empty() {
                return Err(());
            }
            while !rest.is_empty() {
                if rest.len() < 2 {
                    return Err(());
                }
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let nal = rest.get(2..2 + size).ok_or(())?;
                if nal.is_empty() {
                    return Err(());
                }
                out.put_slice(&START_CODE);
                out.put_slice(nal);
                rest = &rest[2 + size..];
            }
        }
        FU_A => {
            let fu_header = *payload.get(1).ok_or(())?;
            let body = &payload[2..];
            let start = fu_header & 0x80 != 0;
            let end = fu_header & 0x40 != 0;
            if start {
                if fu.is_some() {
                    return Err(());
                }
                let mut buf = BytesMut::with_capacity(body.len() * 4);
                buf.put_u8((header & 0xE0) | (fu_header & 0x1F));
                *fu = Some(buf);
            }
            let buf = fu.as_mut().ok_or(())?;
            buf.put_slice(body);
            if buf.len() > MAX_ACCESS_UNIT_BYTES {
                return Err(());
            }
            if end {
                let nal = fu.take().ok_or(())?;
                out.put_slice(&START_CODE);
                out.put_slice(&nal);
            }
        }
        _ => return Err(()), // STAP-B, MTAP, FU-B: not used by WebRTC
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> RtpIn {
        RtpIn {
            sequence_number: seq,
            timestamp: ts,
            marker,
            payload: Bytes::copy_from_slice(payload),
            arrival: Instant::now(),
        }
    }

    const IDR: &[u8] = &[0x65, 1, 2, 3];
    const P: &[u8] = &[0x41, 9, 9];

    #[test]
    fn emits_on_marker_without_waiting_for_next_frame() {
        let mut a = Assembler::new();
        assert!(a.push(pkt(10, 0, false, &[0x67, 0x42])).units.is_empty());
        let out = a.push(pkt(11, 0, true, IDR));
        assert_eq!(out.units.len(), 1);
        let unit = &out.units[0];
        assert!(unit.keyframe);
        assert_eq!(
            unit.data.as_ref(),
            &[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x65, 1, 2, 3]
        );
        assert_eq!(a.push(pkt(12, 3000, true, P)).units.len(), 1);
    }

    #[test]
    fn reassembles_fu_a_and_stap_a() {
        let mut a = Assembler::new();
        // STAP-A with SPS (2 bytes) and PPS (2 bytes).
        a.push(pkt(
            1,
            0,
            false,
            &[0x78, 0, 2, 0x67, 0xAA, 0, 2, 0x68, 0xBB],
        ));
        // IDR (type 5, nri 3) split in three FU-A fragments.
        a.push(pkt(2, 0, false, &[0x7C, 0x85, 1, 2]));
        a.push(pkt(3, 0, false, &[0x7C, 0x05, 3]));
        let out = a.push(pkt(4, 0, true, &[0x7C, 0x45, 4]));
        assert_eq!(
            out.units[0].data.as_ref(),
            &[0, 0, 0, 1, 0x67, 0xAA, 0, 0, 0, 1, 0x68, 0xBB, 0, 0, 0, 1, 0x65, 1, 2, 3, 4]
        );
    }

    #[test]
    fn reordered_packets_inside_the_window_are_fine() {
        let mut a = Assembler::new();
        a.push(pkt(100, 0, true, IDR));
        assert!(a.push(pkt(102, 90, true, P)).units.is_empty());
        let out = a.push(pkt(101, 90, false, P));
        assert_eq!(out.units.len(), 1, "frame completes when the hole fills");
        assert!(!out.need_keyframe);
    }

    #[test]
    fn gap_drops_until_keyframe_and_asks_for_one() {
        let mut a = Assembler::new();
        a.push(pkt(0, 0, true, IDR));
        // Packet 1 (frame ts=90) is lost; later P frames pile up past the window.
        let mut need = false;
        let mut delivered = 0;
        for i in 0..(REORDER_WINDOW as u16 + 4) {
            let out = a.push(pkt(2 + i, 180 + i as u32 * 90, true, P));
            need |= out.need_keyframe;
            delivered += out.units.len();
        }
        assert!(need, "a PLI must be requested");
        assert_eq!(delivered, 0, "no P-frame may follow a hole");
        let out = a.push(pkt(200, 99_999, true, IDR));
        assert_eq!(out.units.len(), 1);
        assert!(out.units[0].keyframe);
        assert!(a.stats().gaps >= 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut a = Assembler::new();
        a.push(pkt(65534, 0, true, IDR));
        assert_eq!(a.push(pkt(65535, 90, true, P)).units.len(), 1);
        assert_eq!(a.push(pkt(0, 180, true, P)).units.len(), 1);
        assert_eq!(a.push(pkt(1, 270, true, P)).units.len(), 1);
    }

    #[test]
    fn padding_packets_are_skipped_but_keep_the_sequence() {
        let mut a = Assembler::new();
        a.push(pkt(5, 0, true, IDR));
        a.push(pkt(6, 0, false, &[])); // padding-only probe
        let out = a.push(pkt(7, 90, true, P));
        assert_eq!(out.units.len(), 1);
        assert_eq!(out.units[0].data.as_ref(), &[0, 0, 0, 1, 0x41, 9, 9]);
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut a = Assembler::new();
        a.push(pkt(5, 0, true, IDR));
        assert!(a.push(pkt(5, 0, true, IDR)).units.is_empty());
        assert_eq!(a.stats().duplicate_or_late, 1);
    }

    #[test]
    fn malformed_payloads_never_panic_and_request_keyframes() {
        let cases: &[&[u8]] = &[
            &[0x78],             // STAP-A with nothing
            &[0x78, 0],          // STAP-A truncated length
            &[0x78, 0, 9, 0x65], // STAP-A length past the end
            &[0x78, 0, 0],       // STAP-A empty unit
            &[0x7C],             // FU-A without header
            &[0x7C, 0x05, 1],    // FU-A continuation without start
            &[0x7C, 0x85, 1],    // FU-A start that never ends (marker follows)
            &[0x80, 1, 2],       // forbidden bit
            &[0x59, 1],          // FU-B
            &[0x1E, 1],          // reserved type 30
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut a = Assembler::new();
            a.push(pkt(1, 0, true, IDR));
            let out = a.push(pkt(2, 90, true, case));
            assert!(out.units.is_empty(), "case {i}");
            assert!(out.need_keyframe, "case {i}");
            assert!(a.waiting_for_keyframe());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // Deterministic xorshift so a failure reproduces.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut a = Assembler::new();
        for _ in 0..20_000 {
            let r = next();
            let len = (r % 40) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = a.push(pkt(
                (r >> 8) as u16 % 300,
                (r >> 24) as u32 % 5,
                r & 1 == 1,
                &payload,
            ));
        }
    }
}
