//! Machine-readable marking of swapped frames in the bitstream: an H.264 SEI message of type
//! "user data unregistered" (payload type 5) with facerelay's own UUID and a small JSON payload
//! (`{"facerelay":1,"swapped":true,"server":"…","t":…}`), placed in every re-encoded access
//! unit whose picture carries a swapped face, before its first slice. Decoders skip SEI they do
//! not know, so players are unaffected; any recording of the stream keeps the mark.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use super::h264::{nal_spans, nal_type, NalSpan, NAL_IDR, NAL_SEI, NAL_SLICE};

/// facerelay's UUID for its user-data SEI messages.
pub const UUID: [u8; 16] = [
    0x66, 0x61, 0x63, 0x65, 0x72, 0x65, 0x6c, 0x61, 0x79, 0x2d, 0x73, 0x77, 0x61, 0x70, 0x01, 0x01,
];

/// This server's id in the marks: random, fixed for the process.
pub fn server_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// The payload of the mark of a swapped frame, now.
pub fn swapped_payload() -> Vec<u8> {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        r#"{{"facerelay":1,"swapped":true,"server":"{}","t":{t}}}"#,
        server_id()
    )
    .into_bytes()
}

/// One SEI NAL unit (with its 4-byte start code) carrying `payload` after facerelay's UUID.
pub fn nal(payload: &[u8]) -> Vec<u8> {
    let mut rbsp = vec![5u8]; // payload type: user data unregistered
    let mut size = UUID.len() + payload.len();
    while size >= 255 {
        rbsp.push(255);
        size -= 255;
    }
    rbsp.push(size as u8);
    rbsp.extend_from_slice(&UUID);
    rbsp.extend_from_slice(payload);
    rbsp.push(0x80); // rbsp_trailing_bits
    let mut out = vec![0, 0, 0, 1, NAL_SEI];
    // Emulation prevention: no 00 00 0x (x ≤ 3) inside a NAL unit.
    let mut zeros = 0;
    for b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// `au` with `sei` (from [`nal`]) inserted before its first slice.
pub fn insert(au: &[u8], sei: &[u8]) -> Vec<u8> {
    let at = nal_spans(au)
        .into_iter()
        .find(|s| matches!(nal_type(&au[s.header..]), NAL_SLICE | NAL_IDR))
        .map_or(au.len(), |s| s.code);
    let mut out = Vec::with_capacity(au.len() + sei.len());
    out.extend_from_slice(&au[..at]);
    out.extend_from_slice(sei);
    out.extend_from_slice(&au[at..]);
    out
}

/// The payload of facerelay's mark in an access unit, if it carries one.
pub fn find(au: &[u8]) -> Option<Vec<u8>> {
    for NalSpan { header, end, .. } in nal_spans(au) {
        if nal_type(&au[header..]) != NAL_SEI {
            continue;
        }
        // Undo emulation prevention.
        let mut rbsp = Vec::with_capacity(end - header);
        let mut zeros = 0;
        for &b in &au[header + 1..end] {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            rbsp.push(b);
            zeros = if b == 0 { zeros + 1 } else { 0 };
        }
        // SEI messages until the trailing bits.
        let mut i = 0;
        while i < rbsp.len() && rbsp[i] != 0x80 {
            let read = |i: &mut usize| {
                let mut v = 0usize;
                while *i < rbsp.len() {
                    let b = rbsp[*i];
                    *i += 1;
                    v += usize::from(b);
                    if b != 255 {
                        break;
                    }
                }
                v
            };
            let kind = read(&mut i);
            let size = read(&mut i);
            let body = rbsp.get(i..i + size)?;
            if kind == 5 && body.len() >= 16 && body[..16] == UUID {
                return Some(body[16..].to_vec());
            }
            i += size;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{EncoderSettings, I420Frame, VideoDecoder, VideoEncoder};

    #[test]
    fn marks_round_trip_through_emulation_prevention() {
        let payload = b"a\x00\x00\x01b\x00\x00\x00\x03c".repeat(40);
        let sei = nal(&payload);
        // No start code pattern inside the unit.
        assert!(!sei[4..].windows(3).any(|w| w == [0, 0, 1]));
        let au = [
            &[0u8, 0, 0, 1, 0x65, 0x88, 0x84][..],
            &[0, 0, 1, 0x41, 0x9a][..],
        ]
        .concat();
        let marked = insert(&au, &sei);
        assert_eq!(&marked[..sei.len()], &sei[..], "before the first slice");
        assert_eq!(find(&marked).as_deref(), Some(&payload[..]));
        assert_eq!(find(&au), None);
        // Another SEI with another UUID is not ours.
        let mut other = sei.clone();
        // The UUID's last byte (after the start code, header, type and two size bytes).
        other[4 + 1 + 1 + 2 + 15] ^= 0xff;
        assert_eq!(find(&insert(&au, &other)), None);
    }

    #[test]
    fn a_marked_stream_still_decodes() {
        let mut enc = VideoEncoder::new(EncoderSettings {
            bitrate_bps: 1_000_000,
            max_frame_rate: 30.0,
            keyframe_interval: 0,
        })
        .unwrap();
        let mut dec = VideoDecoder::new(64 * 48).unwrap();
        for i in 0..5u8 {
            let frame = I420Frame::filled(64, 48, 40 + 30 * i, 128, 128).unwrap();
            let e = enc.encode(&frame, i == 0).unwrap();
            let marked = insert(&e.data, &nal(&swapped_payload()));
            let payload = String::from_utf8(find(&marked).unwrap()).unwrap();
            assert!(payload.contains(r#""swapped":true"#) && payload.contains(server_id()));
            let pic = dec.decode(&marked).unwrap().expect("a picture");
            assert_eq!((pic.width(), pic.height()), (64, 48));
        }
    }
}
