//! H.264 Annex-B bitstreams: where the NAL units of a buffer are, and what they are. Shared by
//! RTP assembly, the bitstream mark and the recordings `facerelay verify` reads.

/// NAL unit types used here.
pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;

/// The 4-byte Annex-B start code.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Where one NAL unit lies in an Annex-B buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NalSpan {
    /// First byte of its start code (with the zero byte of a 4-byte one).
    pub code: usize,
    /// Its header byte.
    pub header: usize,
    /// Just past its last byte (zero bytes before the next start code are not part of it).
    pub end: usize,
}

/// The NAL units of an Annex-B buffer, empty ones left out.
pub fn nal_spans(data: &[u8]) -> Vec<NalSpan> {
    let mut headers = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            headers.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut spans = Vec::with_capacity(headers.len());
    for (k, &header) in headers.iter().enumerate() {
        let code = if header > 3 && data[header - 4] == 0 {
            header - 4
        } else {
            header - 3
        };
        let mut end = headers.get(k + 1).map_or(data.len(), |&next| next - 3);
        while end > header && data[end - 1] == 0 {
            end -= 1;
        }
        if end > header {
            spans.push(NalSpan { code, header, end });
        }
    }
    spans
}

/// The NAL units of an Annex-B buffer (without start codes).
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    nal_spans(data)
        .into_iter()
        .map(move |s| &data[s.header..s.end])
}

/// The type of a NAL unit (from its header byte).
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Whether the Annex-B buffer holds a NAL unit of this type.
pub fn contains_nal(data: &[u8], kind: u8) -> bool {
    nal_units(data).any(|nal| nal_type(nal) == kind)
}

/// Whether an Annex-B access unit can start decoding (has an SPS or an IDR slice).
pub fn is_keyframe(data: &[u8]) -> bool {
    nal_units(data).any(|nal| matches!(nal_type(nal), NAL_IDR | NAL_SPS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nal_units_are_found_after_both_start_codes_without_trailing_zeros() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 0, 1, 0x65, 3,
        ];
        let units: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(units, vec![&[0x67, 1][..], &[0x68, 2][..], &[0x65, 3][..]]);
        let spans = nal_spans(&data);
        assert_eq!(
            spans[0],
            NalSpan {
                code: 0,
                header: 4,
                end: 6
            }
        );
        assert_eq!((spans[2].code, spans[2].header), (12, 16));
        assert!(is_keyframe(&data));
        assert!(contains_nal(&data, NAL_IDR));
        assert!(!is_keyframe(&[0, 0, 1, 0x41, 1]));
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        // A start code with nothing after it is no unit.
        assert_eq!(nal_units(&[0, 0, 1, 0, 0, 1, 0x41]).count(), 1);
    }
}
