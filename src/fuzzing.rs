//! Entry points of the fuzz targets (`fuzz/`): each runs the server's own code on one kind of
//! bytes that come from outside, exactly as the server does, and checks what must hold
//! whatever the bytes. A panic, or an allocation past the fuzzer's limit, is a bug.
//!
//! The unit tests below run every seed of `fuzz/seeds/` through its entry, so the seeds and
//! these functions are checked on every test run, not only when fuzzing.

use std::time::Instant;

use bytes::Bytes;

use crate::rtc::assembler::{Assembler, RtpIn};
use crate::rtc::{parse_remote, screen_candidate};

/// The fuzz targets, by name (the file names under `fuzz/fuzz_targets/` and `fuzz/seeds/`).
pub const TARGETS: [(&str, fn(&[u8])); 8] = [
    ("signalling", signalling),
    ("join_token", join_token),
    ("sdp", sdp),
    ("candidate", candidate),
    ("rtp_h264", rtp_h264),
    ("face_image", face_image),
    ("onnx_initializer", onnx_initializer),
    ("container", container),
];

/// A WebSocket text message from a browser.
pub fn signalling(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::signal::protocol::parse_client_message(text);
    }
}

/// The secret the `join_token` seeds are signed with (`fuzz/make_seeds.py`).
pub const FUZZ_TOKEN_SECRET: &str = "the fuzz targets' join-token secret, 32+ chars";

/// A join token sent with a `join` or `roulette` message, checked as a server with
/// `server.token_secret` does: whatever it holds, a token it accepts opens the room asked.
pub fn join_token(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        for room in [Some("lab"), None] {
            if let Ok(claims) = crate::signal::token::verify(FUZZ_TOKEN_SECRET, text, room) {
                assert_eq!(claims.room.as_deref(), room);
            }
        }
    }
}

/// An offer or answer, up to and including the WebRTC stack's SDP parser.
pub fn sdp(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        for offer in [true, false] {
            if let Ok((_, candidates)) = parse_remote(text, offer) {
                assert!(candidates <= crate::rtc::MAX_REMOTE_CANDIDATES);
            }
        }
    }
}

/// A trickled ICE candidate: the server's screening, then the ICE agent's parser for the
/// candidates it lets through.
pub fn candidate(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(true) = screen_candidate(line) {
        let value = line.strip_prefix("candidate:").unwrap_or(line);
        if let Ok(parsed) = rtc_core::ice::candidate::unmarshal_candidate(value) {
            // What the server screens out never reaches the agent as anything but UDP.
            assert!(
                parsed.network_type().is_udp(),
                "screened as UDP but parsed as {:?}",
                parsed.network_type()
            );
        }
    }
}

/// A stream of RTP packets into the H.264 access-unit assembler, as [`rtp_packets`] reads it.
pub fn rtp_h264(data: &[u8]) {
    let mut assembler = Assembler::new();
    // A decoder can only start on a keyframe: the first frame out, and the first after a
    // resync, must be one.
    let mut starting = true;
    for (resync, packet) in rtp_packets(data) {
        if resync {
            assembler.resync();
            starting = true;
        }
        for unit in assembler.push(packet).units {
            assert!(!unit.data.is_empty());
            assert!(unit.data.len() <= crate::rtc::assembler::MAX_ACCESS_UNIT_BYTES);
            assert!(unit.keyframe || !starting, "a delta frame first");
            starting = false;
        }
    }
}

/// RTP packets out of fuzz input: each is a header byte (bit 0: marker; bits 1-2: how the
/// sequence number moves, -1, +1, +2 or +40; bit 3: a new timestamp; bit 7: the decoder asks
/// for a resync first), a length byte and that many payload bytes.
fn rtp_packets(data: &[u8]) -> impl Iterator<Item = (bool, RtpIn)> + '_ {
    let (mut rest, mut seq, mut timestamp) = (data, 65_500u16, 0u32);
    std::iter::from_fn(move || {
        let [flags, len, tail @ ..] = rest else {
            return None;
        };
        let (payload, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        seq = seq.wrapping_add([u16::MAX, 1, 2, 40][usize::from((flags >> 1) & 3)]);
        if flags & 8 != 0 {
            timestamp = timestamp.wrapping_add(3000);
        }
        let packet = RtpIn {
            sequence_number: seq,
            timestamp,
            marker: flags & 1 != 0,
            payload: Bytes::copy_from_slice(payload),
            arrival: Instant::now(),
        };
        Some((flags & 0x80 != 0, packet))
    })
}

/// A face photo upload, with the server's limits (4 Mpx here, to keep runs fast).
pub fn face_image(data: &[u8]) {
    if let Ok(img) = crate::swap::decode_image(data, 4 << 20, "fuzz") {
        assert!(u64::from(img.width()) * u64::from(img.height()) <= 4 << 20);
    }
}

/// A model file's last initializer (the swapper's `emap`).
pub fn onnx_initializer(data: &[u8]) {
    let cursor = std::io::Cursor::new(data);
    if let Ok(t) = crate::infer::onnx_proto::read_last_initializer(cursor, data.len() as u64) {
        assert!(t.data.len() * 4 <= data.len());
    }
}

/// A recording given to `facerelay verify`: the container parsers and the SEI reader (not the
/// H.264 decoder, which is OpenH264's).
pub fn container(data: &[u8]) {
    use crate::media::{container, sei};
    if let Some(format) = container::sniff(data) {
        if let Ok(video) = container::read(data, format) {
            for unit in &video.units {
                let _ = sei::find(unit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::is_keyframe;

    /// Every committed seed goes through its target without a panic.
    #[test]
    fn every_seed_runs_through_its_target() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        for (name, target) in TARGETS {
            let dir = seeds.join(name);
            let entries: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            assert!(entries.len() >= 2, "{name}: at least two seeds");
            for path in entries {
                target(&std::fs::read(&path).unwrap());
            }
        }
    }

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target)
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The seeds are what they claim to be: each reaches the end of its parser, so the fuzzer
    /// starts deep inside it.
    #[test]
    fn the_seeds_are_valid_inputs() {
        use crate::media::{container, sei};
        for (name, room) in [("lab.jwt", Some("lab")), ("roulette.jwt", None)] {
            let token = String::from_utf8(seed("join_token", name)).unwrap();
            let claims = crate::signal::token::verify(FUZZ_TOKEN_SECRET, &token, room)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(claims.name, "Fuzz", "{name}");
        }
        for name in [
            "stream.h264",
            "plain.mp4",
            "fragmented.mp4",
            "in-band.webm",
            "avcc.webm",
        ] {
            let data = seed("container", name);
            let format = container::sniff(&data).unwrap_or_else(|| panic!("{name}: no format"));
            let video = container::read(&data, format).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(video.units.len(), 2, "{name}");
            assert!(sei::find(&video.units[0]).is_some(), "{name}: the SEI mark");
            assert!(
                is_keyframe(&video.units[0]) && !is_keyframe(&video.units[1]),
                "{name}"
            );
        }
        // A sample table that would copy the file a thousand times is refused.
        let data = seed("container", "overlapping-samples.mp4");
        assert!(matches!(
            container::read(&data, container::Format::Mp4),
            Err(container::ContainerError::Damaged(_))
        ));
        for (name, values) in [
            ("raw-data.onnx", vec![1.0, 0.0, 0.0, 1.0]),
            ("float-data.onnx", vec![0.5, -0.5, 0.25]),
        ] {
            let data = seed("onnx_initializer", name);
            let t = crate::infer::onnx_proto::read_last_initializer(
                std::io::Cursor::new(&data),
                data.len() as u64,
            )
            .unwrap();
            assert_eq!((t.name.as_str(), t.data), ("emap", values), "{name}");
        }
        for (name, size) in [("grey.png", (16, 12)), ("grey-baseline.jpg", (8, 8))] {
            let img = crate::swap::decode_image(&seed("face_image", name), 1 << 20, name).unwrap();
            assert_eq!(img.dimensions(), size, "{name}");
        }
        let (_, candidates) = parse_remote(
            std::str::from_utf8(&seed("sdp", "browser-offer.sdp")).unwrap(),
            true,
        )
        .unwrap();
        assert_eq!(candidates, 1, "the UDP candidate kept, the TCP one dropped");
        assert!(parse_remote(
            std::str::from_utf8(&seed("sdp", "simulcast-offer.sdp")).unwrap(),
            true
        )
        .is_ok());
        assert!(parse_remote(
            std::str::from_utf8(&seed("sdp", "answer.sdp")).unwrap(),
            false
        )
        .is_ok());
        for (name, usable) in [
            ("host-udp.txt", true),
            ("ipv6.txt", true),
            ("tcp-passive.txt", false),
        ] {
            let line = String::from_utf8(seed("candidate", name)).unwrap();
            assert_eq!(screen_candidate(&line).unwrap(), usable, "{name}");
        }
        for name in ["join.json", "candidate.json", "leave.json"] {
            let text = String::from_utf8(seed("signalling", name)).unwrap();
            assert!(
                crate::signal::protocol::parse_client_message(&text).is_ok(),
                "{name}"
            );
        }
    }

    /// The RTP seeds assemble into the frames they were cut from.
    #[test]
    fn the_rtp_seeds_assemble() {
        for (name, frames) in [
            ("keyframe-then-delta.bin", 2),
            ("reordered.bin", 2),
            ("single-nal.bin", 1),
        ] {
            let data = seed("rtp_h264", name);
            let mut assembler = Assembler::new();
            let units: Vec<_> = rtp_packets(&data)
                .flat_map(|(_, packet)| assembler.push(packet).units)
                .collect();
            assert_eq!(units.len(), frames, "{name}");
            assert!(units[0].keyframe, "{name}");
        }
    }

    /// A repeatable pseudo-random sequence (xorshift64) for the tests' generated inputs.
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// The fuzz smoke run of the test command: every committed seed, and whatever a long
    /// `scripts/fuzz.sh` run left in `fuzz/corpus/TARGET/` on this machine, replayed, then
    /// mutated the way libFuzzer starts (bit flips, byte changes, cuts, repeats, splices of two
    /// inputs), a fixed number of times per target so that a run is repeatable. Not coverage
    /// guided, and built as the server is (no overflow checks): the long runs are
    /// `scripts/fuzz.sh` (docs/fuzzing.md).
    #[test]
    fn fuzz_smoke_every_target_replays_its_inputs_and_survives_mutations_of_them() {
        const MUTATIONS: usize = 200_000;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || xorshift(&mut x);
        for (name, target) in TARGETS {
            let mut inputs = Vec::new();
            for dir in [
                root.join("seeds").join(name),
                root.join("corpus").join(name),
            ] {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    if path.is_file() {
                        inputs.push(std::fs::read(&path).unwrap());
                    }
                }
            }
            assert!(!inputs.is_empty(), "{name}: no seeds");
            for input in &inputs {
                target(input);
            }
            for _ in 0..MUTATIONS {
                let mut data = inputs[next() as usize % inputs.len()].clone();
                for _ in 0..1 + next() % 4 {
                    let len = data.len().max(1);
                    let at = next() as usize % len;
                    match next() % 6 {
                        0 if !data.is_empty() => data[at] ^= 1 << (next() % 8),
                        1 if !data.is_empty() => data[at] = next() as u8,
                        2 => data.truncate(at),
                        3 => {
                            let end = (at + 1 + next() as usize % 16).min(data.len());
                            let piece = data.get(at..end).unwrap_or_default().to_vec();
                            data.splice(at.min(data.len())..at.min(data.len()), piece);
                        }
                        4 => {
                            let other = &inputs[next() as usize % inputs.len()];
                            let from = next() as usize % other.len().max(1);
                            data.truncate(at);
                            data.extend_from_slice(other.get(from..).unwrap_or_default());
                        }
                        _ => {
                            let interesting = [0u8, 0xff, 0x7f, 0x80, 1];
                            if !data.is_empty() {
                                data[at] = interesting[next() as usize % interesting.len()];
                            }
                        }
                    }
                }
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    let path = std::env::temp_dir().join(format!("facerelay-fuzz-smoke-{name}"));
                    let _ = std::fs::write(&path, &data);
                    panic!(
                        "{name}: a mutated input panicked; it is in {} (replay it with \
                         `cargo fuzz run -s none -O {name} FILE`)",
                        path.display()
                    );
                }
            }
        }
    }

    #[test]
    fn the_targets_take_empty_and_random_input() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096).map(|_| xorshift(&mut x) as u8).collect();
        for (_, target) in TARGETS {
            target(&[]);
            target(&noise);
        }
    }
}
