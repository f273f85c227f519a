//! The H.264 access units of a video file, as Annex-B byte streams, for `facerelay verify`:
//! a raw H.264 stream (Annex B), MP4 (plain or fragmented, as browsers record it) or
//! WebM/Matroska with H.264 video. Other codecs are refused by name. Every length and offset in
//! the file is checked: a damaged file gives an error or fewer units, never a panic.

use std::fmt;

use super::h264::nal_units;

/// What a file holds, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    H264,
    Mp4,
    Webm,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::H264 => "raw H.264",
            Format::Mp4 => "MP4",
            Format::Webm => "WebM/Matroska",
        })
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ContainerError {
    #[error("the file is damaged: {0}")]
    Damaged(&'static str),
    #[error("the file has no video track")]
    NoVideo,
    #[error("the video is {0}: facerelay verify decodes H.264 video only (record with an H.264 codec, e.g. MediaRecorder's \"video/webm;codecs=h264\" or \"video/mp4;codecs=avc1\", or pass a still frame as PNG or JPEG)")]
    Codec(String),
}

/// The video's access units, in file order.
#[derive(Debug)]
pub struct Video {
    pub format: Format,
    pub units: Vec<Vec<u8>>,
}

/// Which container `data` looks like, by its first bytes.
pub fn sniff(data: &[u8]) -> Option<Format> {
    if data.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        Some(Format::Webm)
    } else if data.len() >= 8 && matches!(&data[4..8], b"ftyp" | b"styp" | b"moov" | b"moof") {
        Some(Format::Mp4)
    } else if data.starts_with(&[0, 0, 0, 1]) || data.starts_with(&[0, 0, 1]) {
        Some(Format::H264)
    } else {
        None
    }
}

/// The access units of a file `sniff` recognised.
pub fn read(data: &[u8], format: Format) -> Result<Video, ContainerError> {
    let units = match format {
        Format::H264 => annex_b_units(data),
        Format::Mp4 => mp4(data)?,
        Format::Webm => webm(data)?,
    };
    Ok(Video { format, units })
}

/// Splits an Annex-B stream into access units: a new one starts at an access unit delimiter,
/// SPS, PPS or SEI after a slice, or at a slice whose first macroblock is 0.
fn annex_b_units(data: &[u8]) -> Vec<Vec<u8>> {
    let mut units = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut has_slice = false;
    for nal in nal_units(data) {
        let kind = nal[0] & 0x1f;
        let first_mb_zero = nal.get(1).is_some_and(|b| b & 0x80 != 0);
        let starts_unit = match kind {
            6..=9 => has_slice,
            1 | 5 => has_slice && first_mb_zero,
            _ => false,
        };
        if starts_unit {
            units.push(std::mem::take(&mut current));
            has_slice = false;
        }
        has_slice |= matches!(kind, 1 | 5);
        current.extend_from_slice(&[0, 0, 0, 1]);
        current.extend_from_slice(nal);
    }
    if !current.is_empty() {
        units.push(current);
    }
    units
}

/// An `avcC` record: parameter sets and the NAL length size of the samples.
#[derive(Debug, Default)]
struct AvcConfig {
    length_size: usize,
    parameter_sets: Vec<u8>,
}

fn avc_config(b: &[u8]) -> Result<AvcConfig, ContainerError> {
    let bad = ContainerError::Damaged("bad avcC record");
    let mut r = Reader::new(b);
    r.skip(4).ok_or(bad.clone())?;
    let length_size = usize::from(r.u8().ok_or(bad.clone())? & 3) + 1;
    let mut parameter_sets = Vec::new();
    let sps = r.u8().ok_or(bad.clone())? & 0x1f;
    for k in 0..2 {
        let count = if k == 0 {
            sps
        } else {
            r.u8().ok_or(bad.clone())?
        };
        for _ in 0..count {
            let len = usize::from(r.u16().ok_or(bad.clone())?);
            parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
            parameter_sets.extend_from_slice(r.take(len).ok_or(bad.clone())?);
        }
    }
    Ok(AvcConfig {
        length_size,
        parameter_sets,
    })
}

/// A sample of length-prefixed NAL units as Annex B (after `prefix`).
fn to_annex_b(sample: &[u8], length_size: usize, prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    let mut r = Reader::new(sample);
    while let Some(len) = r.uint(length_size) {
        let Some(nal) = usize::try_from(len).ok().and_then(|l| r.take(l)) else {
            break;
        };
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    out
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn uint(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)),
        )
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.uint(2).map(|v| v as u16)
    }
    fn u32(&mut self) -> Option<u32> {
        self.uint(4).map(|v| v as u32)
    }
}

// ---- MP4 (ISO base media file format) ----

/// One box: its type, its body, and the body's offset in the file.
struct Mp4Box<'a> {
    kind: [u8; 4],
    body: &'a [u8],
    start: usize,
}

/// The boxes in `data` (which starts at file offset `base`); stops at the first damaged header.
fn boxes(data: &[u8], base: usize) -> Vec<Mp4Box<'_>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let size = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let kind = [data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]];
        let (header, size) = match size {
            0 => (8, data.len() - pos),
            1 => {
                let Some(large) = data.get(pos + 8..pos + 16) else {
                    break;
                };
                let large = u64::from_be_bytes(large.try_into().unwrap_or([0; 8]));
                (16, usize::try_from(large).unwrap_or(usize::MAX))
            }
            n => (8, n as usize),
        };
        if size < header || pos.saturating_add(size) > data.len() {
            // A truncated last box (a recording cut short): what it holds up to the end.
            if size >= header {
                out.push(Mp4Box {
                    kind,
                    body: &data[pos + header..],
                    start: base + pos + header,
                });
            }
            break;
        }
        out.push(Mp4Box {
            kind,
            body: &data[pos + header..pos + size],
            start: base + pos + header,
        });
        pos += size;
    }
    out
}

fn child<'a>(parent: &'a Mp4Box<'a>, kind: &[u8; 4]) -> Option<Mp4Box<'a>> {
    boxes(parent.body, parent.start)
        .into_iter()
        .find(|b| &b.kind == kind)
}

fn path<'a>(root: &'a Mp4Box<'a>, kinds: &[&[u8; 4]]) -> Option<Mp4Box<'a>> {
    let mut b = Mp4Box {
        kind: root.kind,
        body: root.body,
        start: root.start,
    };
    for k in kinds {
        b = boxes(b.body, b.start).into_iter().find(|c| &c.kind == *k)?;
    }
    Some(b)
}

/// The video track of `moov`: its id, its avcC and its plain sample table (offset, size).
struct Mp4Track {
    id: u32,
    avc: AvcConfig,
    samples: Vec<(usize, usize)>,
}

fn mp4_track(moov: &Mp4Box<'_>, file_len: usize) -> Result<Mp4Track, ContainerError> {
    let damaged = |what| ContainerError::Damaged(what);
    for trak in boxes(moov.body, moov.start)
        .into_iter()
        .filter(|b| &b.kind == b"trak")
    {
        let Some(hdlr) = path(&trak, &[b"mdia", b"hdlr"]) else {
            continue;
        };
        if hdlr.body.get(8..12) != Some(b"vide") {
            continue;
        }
        let tkhd = child(&trak, b"tkhd").ok_or(damaged("no tkhd"))?;
        let mut r = Reader::new(tkhd.body);
        let version = r.u8().ok_or(damaged("bad tkhd"))?;
        r.skip(if version == 1 { 3 + 16 } else { 3 + 8 })
            .ok_or(damaged("bad tkhd"))?;
        let id = r.u32().ok_or(damaged("bad tkhd"))?;
        let stbl = path(&trak, &[b"mdia", b"minf", b"stbl"]).ok_or(damaged("no stbl"))?;
        let stsd = child(&stbl, b"stsd").ok_or(damaged("no stsd"))?;
        let entries = boxes(stsd.body.get(8..).unwrap_or(&[]), stsd.start + 8);
        let entry = entries.first().ok_or(damaged("empty stsd"))?;
        if !matches!(&entry.kind, b"avc1" | b"avc3") {
            return Err(ContainerError::Codec(codec_name(&entry.kind)));
        }
        let avcc = boxes(entry.body.get(78..).unwrap_or(&[]), entry.start + 78)
            .into_iter()
            .find(|b| &b.kind == b"avcC")
            .ok_or(damaged("no avcC"))?;
        let avc = avc_config(avcc.body)?;
        let samples = sample_table(&stbl, file_len).unwrap_or_default();
        return Ok(Mp4Track { id, avc, samples });
    }
    Err(ContainerError::NoVideo)
}

fn codec_name(fourcc: &[u8; 4]) -> String {
    match fourcc {
        b"vp08" => "VP8".into(),
        b"vp09" => "VP9".into(),
        b"av01" => "AV1".into(),
        b"hvc1" | b"hev1" => "H.265".into(),
        other => format!("'{}'", String::from_utf8_lossy(other)),
    }
}

/// (offset, size) of each sample of a plain (not fragmented) sample table.
/// No sample table may list more samples than the file has bytes (`file_len`).
fn sample_table(stbl: &Mp4Box<'_>, file_len: usize) -> Option<Vec<(usize, usize)>> {
    let mut r = Reader::new(child(stbl, b"stsz")?.body);
    r.skip(4)?;
    let fixed = r.u32()? as usize;
    let count = r.u32()? as usize;
    let sizes: Vec<usize> = if fixed != 0 {
        vec![fixed; count.min(file_len / fixed)]
    } else {
        (0..count)
            .map_while(|_| r.u32().map(|v| v as usize))
            .collect()
    };
    let chunks: Vec<usize> = if let Some(stco) = child(stbl, b"stco") {
        let mut r = Reader::new(stco.body);
        r.skip(4)?;
        let n = r.u32()?;
        (0..n).map_while(|_| r.u32().map(|v| v as usize)).collect()
    } else {
        let co64 = child(stbl, b"co64")?;
        let mut r = Reader::new(co64.body);
        r.skip(4)?;
        let n = r.u32()?;
        (0..n)
            .map_while(|_| r.uint(8).and_then(|v| usize::try_from(v).ok()))
            .collect()
    };
    let mut r = Reader::new(child(stbl, b"stsc")?.body);
    r.skip(4)?;
    let n = r.u32()?;
    let runs: Vec<(usize, usize)> = (0..n)
        .map_while(|_| {
            let first = r.u32()? as usize;
            let per = r.u32()? as usize;
            r.skip(4)?;
            Some((first, per))
        })
        .collect();
    let mut out = Vec::with_capacity(sizes.len());
    let mut sizes = sizes.into_iter();
    for (c, &offset) in chunks.iter().enumerate() {
        let per = runs
            .iter()
            .rev()
            .find(|(first, _)| *first <= c + 1)
            .map_or(0, |r| r.1);
        let mut at = offset;
        for _ in 0..per {
            let Some(size) = sizes.next() else {
                return Some(out);
            };
            out.push((at, size));
            at = at.saturating_add(size);
        }
    }
    Some(out)
}

/// The samples of the track's fragments (`moof` boxes), in order.
/// Samples that would start past the end of the file (`file_len`) end a run.
fn fragment_samples(
    top: &[Mp4Box<'_>],
    track: u32,
    default_size: u32,
    file_len: usize,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for moof in top.iter().filter(|b| &b.kind == b"moof") {
        // The moof's own start (its header is 8 bytes before the body).
        let moof_start = moof.start.saturating_sub(8);
        for traf in boxes(moof.body, moof.start)
            .into_iter()
            .filter(|b| &b.kind == b"traf")
        {
            let Some(tfhd) = child(&traf, b"tfhd") else {
                continue;
            };
            let mut r = Reader::new(tfhd.body);
            let Some(flags) = r.u32().map(|v| v & 0xff_ffff) else {
                continue;
            };
            if r.u32() != Some(track) {
                continue;
            }
            let mut base = moof_start;
            if flags & 0x1 != 0 {
                match r.uint(8).and_then(|v| usize::try_from(v).ok()) {
                    Some(b) => base = b,
                    None => continue,
                }
            }
            if flags & 0x2 != 0 && r.skip(4).is_none() {
                continue;
            }
            if flags & 0x8 != 0 && r.skip(4).is_none() {
                continue;
            }
            let mut size_default = default_size;
            if flags & 0x10 != 0 {
                match r.u32() {
                    Some(s) => size_default = s,
                    None => continue,
                }
            }
            for trun in boxes(traf.body, traf.start)
                .into_iter()
                .filter(|b| &b.kind == b"trun")
            {
                let mut r = Reader::new(trun.body);
                let Some(flags) = r.u32().map(|v| v & 0xff_ffff) else {
                    continue;
                };
                let Some(count) = r.u32() else { continue };
                let mut at = base;
                if flags & 0x1 != 0 {
                    let Some(off) = r.u32() else { continue };
                    at = (base as i64 + i64::from(off as i32)).max(0) as usize;
                }
                if flags & 0x4 != 0 && r.skip(4).is_none() {
                    continue;
                }
                for _ in 0..count {
                    if at >= file_len {
                        break;
                    }
                    if flags & 0x100 != 0 && r.skip(4).is_none() {
                        break;
                    }
                    let size = if flags & 0x200 != 0 {
                        match r.u32() {
                            Some(s) => s,
                            None => break,
                        }
                    } else {
                        size_default
                    };
                    if size == 0 || flags & 0x400 != 0 && r.skip(4).is_none() {
                        break;
                    }
                    if flags & 0x800 != 0 && r.skip(4).is_none() {
                        break;
                    }
                    out.push((at, size as usize));
                    at = at.saturating_add(size as usize);
                }
            }
        }
    }
    out
}

fn mp4(data: &[u8]) -> Result<Vec<Vec<u8>>, ContainerError> {
    let top = boxes(data, 0);
    let moov = top
        .iter()
        .find(|b| &b.kind == b"moov")
        .ok_or(ContainerError::Damaged("no moov box"))?;
    let track = mp4_track(moov, data.len())?;
    // trex: the default sample size of fragments.
    let default_size = path(moov, &[b"mvex", b"trex"])
        .and_then(|t| {
            t.body
                .get(16..20)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        })
        .unwrap_or(0);
    let mut samples = track.samples;
    samples.extend(fragment_samples(&top, track.id, default_size, data.len()));
    let mut units = Vec::with_capacity(samples.len());
    // Samples do not overlap, so together they hold no more than the file: a table that says
    // otherwise would have the reader copy the file over and over.
    let mut total = 0usize;
    for (i, (at, size)) in samples.into_iter().enumerate() {
        total = total.saturating_add(size);
        if total > data.len() {
            return Err(ContainerError::Damaged(
                "the samples add up to more than the file",
            ));
        }
        let Some(sample) = at.checked_add(size).and_then(|end| data.get(at..end)) else {
            // Samples past the end: a recording cut short.
            break;
        };
        let prefix = if i == 0 {
            &track.avc.parameter_sets[..]
        } else {
            &[]
        };
        units.push(to_annex_b(sample, track.avc.length_size, prefix));
    }
    Ok(units)
}

// ---- WebM / Matroska (EBML) ----

const SEGMENT: u32 = 0x1853_8067;
const CLUSTER: u32 = 0x1F43_B675;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const BLOCK_GROUP: u32 = 0xA0;
const TRACK_NUMBER: u32 = 0xD7;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const TRACK_TYPE: u32 = 0x83;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK: u32 = 0xA1;

/// A variable-length integer: its value (`None` for "unknown") and its length. `keep_marker`
/// for element ids.
fn vint(data: &[u8], keep_marker: bool) -> Option<(Option<u64>, usize)> {
    let first = *data.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let bytes = data.get(..len)?;
    // The length marker is the first byte's bit `len`; an 8-byte integer's is its whole first
    // byte (a shift by 8 would overflow).
    let mask = if keep_marker {
        0xff
    } else {
        0xffu8.checked_shr(len as u32).unwrap_or(0)
    };
    let mut v = u64::from(first & mask);
    for &b in &bytes[1..] {
        v = (v << 8) | u64::from(b);
    }
    let all_ones = (1u64 << (7 * len)) - 1;
    let unknown = !keep_marker && v == all_ones;
    Some(((!unknown).then_some(v), len))
}

#[derive(Default)]
struct WebmTrack {
    number: u64,
    video: bool,
    codec: String,
    private: Vec<u8>,
}

fn webm(data: &[u8]) -> Result<Vec<Vec<u8>>, ContainerError> {
    let mut tracks: Vec<WebmTrack> = Vec::new();
    let mut blocks: Vec<(u64, &[u8])> = Vec::new();
    let mut pos = 0usize;
    // Master elements are entered (their children read in sequence); everything else is
    // skipped by its size. An element of unknown size can only be a master.
    while pos < data.len() {
        let Some((Some(id), id_len)) = vint(&data[pos..], true) else {
            break;
        };
        let Some((size, size_len)) = vint(&data[pos + id_len..], false) else {
            break;
        };
        let body = pos + id_len + size_len;
        let id = id as u32;
        if matches!(id, SEGMENT | CLUSTER | TRACKS | TRACK_ENTRY | BLOCK_GROUP) {
            if id == TRACK_ENTRY {
                tracks.push(WebmTrack::default());
            }
            pos = body;
            continue;
        }
        let Some(size) = size.and_then(|s| usize::try_from(s).ok()) else {
            break;
        };
        let end = body.saturating_add(size).min(data.len());
        let value = &data[body.min(end)..end];
        match id {
            TRACK_NUMBER | TRACK_TYPE => {
                let v = value.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b));
                if let Some(t) = tracks.last_mut() {
                    if id == TRACK_NUMBER {
                        t.number = v;
                    } else {
                        t.video = v == 1;
                    }
                }
            }
            CODEC_ID => {
                if let Some(t) = tracks.last_mut() {
                    t.codec = String::from_utf8_lossy(value).trim_end_matches('\0').into();
                    t.video |= t.codec.starts_with("V_");
                }
            }
            CODEC_PRIVATE => {
                if let Some(t) = tracks.last_mut() {
                    t.private = value.to_vec();
                }
            }
            SIMPLE_BLOCK | BLOCK => {
                if let Some((Some(track), n)) = vint(value, false) {
                    // Timecode (2 bytes) and flags; laced blocks (bits 1-2) carry several
                    // frames and are not used for video by recorders: skipped.
                    if let Some(&flags) = value.get(n + 2) {
                        if flags & 0x06 == 0 {
                            blocks.push((track, &value[n + 3..]));
                        }
                    }
                }
            }
            _ => {}
        }
        pos = body.saturating_add(size);
    }
    let track = tracks
        .iter()
        .find(|t| t.video)
        .ok_or(ContainerError::NoVideo)?;
    if track.codec != "V_MPEG4/ISO/AVC" {
        let name = match track.codec.as_str() {
            "V_VP8" => "VP8".to_string(),
            "V_VP9" => "VP9".to_string(),
            "V_AV1" => "AV1".to_string(),
            "V_MPEGH/ISO/HEVC" => "H.265".to_string(),
            other => format!("'{other}'"),
        };
        return Err(ContainerError::Codec(name));
    }
    // Without CodecPrivate (Chromium's recorder), the blocks are Annex B, parameter sets
    // in-band.
    let avc = if track.private.is_empty() {
        None
    } else {
        Some(avc_config(&track.private)?)
    };
    let mut first = true;
    let mut units = Vec::new();
    for (_, frame) in blocks.into_iter().filter(|(t, _)| *t == track.number) {
        if frame.starts_with(&[0, 0, 0, 1]) || frame.starts_with(&[0, 0, 1]) {
            units.push(frame.to_vec());
        } else if let Some(avc) = &avc {
            let prefix = if first { &avc.parameter_sets[..] } else { &[] };
            units.push(to_annex_b(frame, avc.length_size, prefix));
        } else {
            continue;
        }
        first = false;
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vints_of_every_length() {
        assert_eq!(vint(&[0x81], false), Some((Some(1), 1)));
        assert_eq!(vint(&[0x40, 0x02], false), Some((Some(2), 2)));
        // Eight bytes: the whole first byte is the marker.
        assert_eq!(
            vint(&[0x01, 0, 0, 0, 0, 0, 0, 0xc4], false),
            Some((Some(0xc4), 8))
        );
        assert_eq!(
            vint(&[0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], false),
            Some((None, 8))
        );
        assert_eq!(
            vint(&[0x1a, 0x45, 0xdf, 0xa3], true),
            Some((Some(0x1a45_dfa3), 4))
        );
        assert_eq!(vint(&[0x00], false), None);
        assert_eq!(vint(&[0x40], false), None);
    }

    #[test]
    fn annex_b_splits_into_access_units() {
        // SPS, PPS, IDR slice (first_mb 0), slice (first_mb 0), a second slice of the same
        // picture (first_mb ≠ 0), SEI, slice.
        let nals: [&[u8]; 7] = [
            &[0x67, 1],
            &[0x68, 2],
            &[0x65, 0x88],
            &[0x41, 0x9a],
            &[0x41, 0x40],
            &[0x06, 5],
            &[0x41, 0x9b],
        ];
        let mut stream = Vec::new();
        for n in nals {
            stream.extend_from_slice(&[0, 0, 0, 1]);
            stream.extend_from_slice(n);
        }
        let units = annex_b_units(&stream);
        assert_eq!(units.len(), 3);
        assert_eq!(nal_units(&units[0]).count(), 3);
        assert_eq!(nal_units(&units[1]).count(), 2);
        assert_eq!(nal_units(&units[2]).count(), 2);
    }

    #[test]
    fn damaged_and_foreign_files_are_errors_not_panics() {
        assert_eq!(sniff(b"hello"), None);
        let mut webm_vp8 = vec![0x1a, 0x45, 0xdf, 0xa3, 0x80];
        // Segment (unknown size) > Tracks > TrackEntry > TrackNumber 1, CodecID V_VP8.
        webm_vp8.extend_from_slice(&[
            0x18, 0x53, 0x80, 0x67, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        webm_vp8.extend_from_slice(&[0x16, 0x54, 0xae, 0x6b, 0x8c, 0xae, 0x8a]);
        webm_vp8.extend_from_slice(&[0xd7, 0x81, 0x01, 0x86, 0x85]);
        webm_vp8.extend_from_slice(b"V_VP8");
        assert_eq!(sniff(&webm_vp8), Some(Format::Webm));
        assert_eq!(
            read(&webm_vp8, Format::Webm).unwrap_err(),
            ContainerError::Codec("VP8".into())
        );
        // Every prefix of it: an error or nothing, never a panic.
        for n in 0..webm_vp8.len() {
            let _ = read(&webm_vp8[..n], Format::Webm);
        }
        let mp4 = [
            0, 0, 0, 12, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm', 0xff, 0xff, 0xff,
        ];
        assert_eq!(sniff(&mp4), Some(Format::Mp4));
        assert_eq!(
            read(&mp4, Format::Mp4).unwrap_err(),
            ContainerError::Damaged("no moov box")
        );
    }
}
