//! Disclosure in an image file's own metadata: an XMP packet that says, in the IPTC vocabulary
//! platforms read, that the picture is a composite with synthetic elements
//! (`Iptc4xmpExt:DigitalSourceType` = `compositeSynthetic`), made by facerelay, when. It holds
//! no photo, no face data and nothing about the person. PNG carries it in an `iTXt` chunk
//! (keyword `XML:com.adobe.xmp`), JPEG in an APP1 segment: where image viewers, editors and
//! upload pipelines look for XMP. It is a declaration, easily stripped: the watermark in the
//! pixels is what survives a re-encode.

use std::time::{SystemTime, UNIX_EPOCH};

/// IPTC's digital source type for a picture that combines captured and generated parts.
pub const COMPOSITE_SYNTHETIC: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic";

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
const PNG_KEYWORD: &[u8] = b"XML:com.adobe.xmp";
const JPEG_XMP_HEADER: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// The packet for a picture made now.
pub fn packet(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n\
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n\
         <rdf:Description rdf:about=\"\"\n \
         xmlns:Iptc4xmpExt=\"http://iptc.org/std/Iptc4xmpExt/2008-02-29/\"\n \
         xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\"\n \
         xmlns:dc=\"http://purl.org/dc/elements/1.1/\"\n \
         Iptc4xmpExt:DigitalSourceType=\"{COMPOSITE_SYNTHETIC}\"\n \
         xmp:CreatorTool=\"facerelay {}\"\n \
         xmp:ModifyDate=\"{}\">\n\
         <dc:description><rdf:Alt><rdf:li xml:lang=\"x-default\">A face in this picture was \
         replaced by facerelay's face swap.</rdf:li></rdf:Alt></dc:description>\n\
         </rdf:Description>\n\
         </rdf:RDF>\n\
         </x:xmpmeta>\n\
         <?xpacket end=\"r\"?>",
        env!("CARGO_PKG_VERSION"),
        utc(secs)
    )
}

/// `YYYY-MM-DDThh:mm:ssZ` of a Unix time.
fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// `file` (a whole PNG or JPEG) with `xmp` added; `None` for other formats (and for a PNG or
/// JPEG too damaged to find where it goes).
pub fn insert(file: &[u8], xmp: &str) -> Option<Vec<u8>> {
    if file.starts_with(PNG_SIGNATURE) {
        // After IHDR, which must come first: signature, then IHDR's length, type, 13 bytes, CRC.
        let ihdr_end = PNG_SIGNATURE.len() + 8 + 13 + 4;
        if file.len() < ihdr_end || &file[12..16] != b"IHDR" {
            return None;
        }
        let mut data = Vec::with_capacity(PNG_KEYWORD.len() + 5 + xmp.len());
        data.extend_from_slice(PNG_KEYWORD);
        // Keyword end, not compressed, method 0, no language tag, no translated keyword.
        data.extend_from_slice(&[0, 0, 0, 0, 0]);
        data.extend_from_slice(xmp.as_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(b"iTXt");
        crc.update(&data);
        let mut out = Vec::with_capacity(file.len() + data.len() + 12);
        out.extend_from_slice(&file[..ihdr_end]);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(b"iTXt");
        out.extend_from_slice(&data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
        out.extend_from_slice(&file[ihdr_end..]);
        Some(out)
    } else if file.starts_with(&[0xFF, 0xD8]) {
        // An APP1 segment right after the start of image; its length counts itself.
        let len = 2 + JPEG_XMP_HEADER.len() + xmp.len();
        let len = u16::try_from(len).ok()?;
        let mut out = Vec::with_capacity(file.len() + len as usize + 2);
        out.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(JPEG_XMP_HEADER);
        out.extend_from_slice(xmp.as_bytes());
        out.extend_from_slice(&file[2..]);
        Some(out)
    } else {
        None
    }
}

/// What a file's XMP says about where its picture came from: its digital source type and the
/// tool that declared it, if the file carries a packet that names one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Declared {
    pub digital_source_type: String,
    pub creator_tool: Option<String>,
}

/// Finds an XMP packet in a PNG's text chunks or a JPEG's APP1 segments and reads it. Reads
/// only the container's own structure (chunk and segment lengths, bounds checked), so that a
/// packet is never taken from the compressed picture data.
pub fn read(file: &[u8]) -> Option<Declared> {
    packets(file).iter().find_map(|p| parse(p))
}

fn packets(file: &[u8]) -> Vec<&[u8]> {
    let mut found = Vec::new();
    if file.starts_with(PNG_SIGNATURE) {
        let mut at = PNG_SIGNATURE.len();
        while at + 12 <= file.len() {
            let len = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
            let kind = &file[at + 4..at + 8];
            let Some(data) = file.get(at + 8..(at + 8).saturating_add(len)) else {
                break;
            };
            if kind == b"iTXt" && data.starts_with(PNG_KEYWORD) {
                // Keyword, NUL, compression flag (0 only), method, language NUL, translated NUL.
                let rest = &data[PNG_KEYWORD.len()..];
                if rest.len() >= 3 && rest[0] == 0 && rest[1] == 0 {
                    let mut nuls = rest[3..].splitn(3, |b| *b == 0);
                    if let (Some(_), Some(_), Some(text)) = (nuls.next(), nuls.next(), nuls.next())
                    {
                        found.push(text);
                    }
                }
            }
            if kind == b"IEND" {
                break;
            }
            at += 12 + len;
        }
    } else if file.starts_with(&[0xFF, 0xD8]) {
        let mut at = 2;
        // Markers with a length, up to the start of scan (the picture data follows).
        while at + 4 <= file.len() && file[at] == 0xFF {
            let marker = file[at + 1];
            if marker == 0xDA || marker == 0xD9 {
                break;
            }
            let len = u16::from_be_bytes([file[at + 2], file[at + 3]]) as usize;
            let Some(body) = file.get(at + 4..(at + 2).saturating_add(len)) else {
                break;
            };
            if marker == 0xE1 && body.starts_with(JPEG_XMP_HEADER) {
                found.push(&body[JPEG_XMP_HEADER.len()..]);
            }
            at += 2 + len.max(2);
        }
    }
    found
}

/// The value of `name` in a packet, as an attribute (`name="…"`) or an element
/// (`<name>…</name>`).
fn value(xmp: &str, name: &str) -> Option<String> {
    if let Some(i) = xmp.find(&format!("{name}=\"")) {
        let rest = &xmp[i + name.len() + 2..];
        return rest.find('"').map(|end| rest[..end].to_owned());
    }
    let open = format!("<{name}>");
    let i = xmp.find(&open)?;
    let rest = &xmp[i + open.len()..];
    rest.find('<').map(|end| rest[..end].trim().to_owned())
}

fn parse(packet: &[u8]) -> Option<Declared> {
    let xmp = std::str::from_utf8(packet).ok()?;
    Some(Declared {
        digital_source_type: value(xmp, "Iptc4xmpExt:DigitalSourceType")?,
        creator_tool: value(xmp, "xmp:CreatorTool"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: image::ImageFormat) -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 90]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn png_and_jpeg_carry_the_declaration_and_still_decode_as_before() {
        let xmp = packet(UNIX_EPOCH + std::time::Duration::from_secs(1_796_639_442));
        assert!(xmp.contains("2026-12-07T10:30:42Z"), "{xmp}");
        for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
            let plain = encoded(format);
            assert_eq!(read(&plain), None, "{format:?} without a packet");
            let marked = insert(&plain, &xmp).expect("PNG and JPEG take a packet");
            let declared = read(&marked).expect("the packet is found");
            assert_eq!(declared.digital_source_type, COMPOSITE_SYNTHETIC);
            assert_eq!(
                declared.creator_tool.as_deref(),
                Some(concat!("facerelay ", env!("CARGO_PKG_VERSION")))
            );
            // The picture is untouched: the decoder reads the same pixels.
            let a = image::load_from_memory(&plain).unwrap().to_rgb8();
            let b = image::load_from_memory(&marked).unwrap().to_rgb8();
            assert_eq!(a, b, "{format:?}");
        }
        assert_eq!(insert(&encoded(image::ImageFormat::WebP), &xmp), None);
    }

    #[test]
    fn damaged_files_are_read_without_a_panic() {
        let xmp = packet(SystemTime::now());
        let marked = insert(&encoded(image::ImageFormat::Png), &xmp).unwrap();
        let jpeg = insert(&encoded(image::ImageFormat::Jpeg), &xmp).unwrap();
        for file in [marked, jpeg] {
            for cut in (0..file.len()).step_by(7) {
                let _ = read(&file[..cut]);
                let mut bad = file.clone();
                bad[cut] ^= 0xFF;
                let _ = read(&bad);
            }
        }
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
