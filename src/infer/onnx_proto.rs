//! Just enough of the ONNX protobuf format to read one initializer out of a model file: the
//! swapper's `emap` (insightface takes `graph.initializer[-1]`). There is no protoc here and a
//! general protobuf stack would be much more than this needs.
//!
//! The reader streams: it seeks past every field it does not need, so a 554 MB model costs a
//! few hundred small reads, and only the chosen tensor (1 MiB for 512x512 floats) is loaded.
//!
//! Field numbers (onnx.proto3): ModelProto.graph = 7; GraphProto.initializer = 5;
//! TensorProto.dims = 1, data_type = 2, float_data = 4, name = 8, raw_data = 9,
//! data_location = 14.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Why a tensor could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Malformed(String),
}

/// A float tensor read from a model file.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: Vec<f32>,
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;
/// Largest initializer this reader loads (a 512x512 float matrix is 1 MiB).
const MAX_TENSOR_BYTES: u64 = 64 << 20;

/// Reads the last initializer of the model's graph (the position insightface reads `emap` from).
pub fn last_initializer(path: &Path) -> Result<FloatTensor, ProtoError> {
    let io = |source| ProtoError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    read_last_initializer(BufReader::new(file), len)
}

/// [`last_initializer`] of a model of `len` bytes read from `inner`.
pub fn read_last_initializer<R: Read + Seek>(
    inner: R,
    len: u64,
) -> Result<FloatTensor, ProtoError> {
    let mut r = Reader { inner, pos: 0 };
    let (start, glen) = find_last_field(&mut r, 0, len, 7)?
        .ok_or_else(|| ProtoError::Malformed("the model has no graph".into()))?;
    let (tstart, tlen) = find_last_field(&mut r, start, start + glen, 5)?
        .ok_or_else(|| ProtoError::Malformed("the graph has no initializers".into()))?;
    if tlen > MAX_TENSOR_BYTES {
        return Err(ProtoError::Malformed(format!(
            "the last initializer is {tlen} bytes, more than this reader loads"
        )));
    }
    r.seek_to(tstart)?;
    let mut bytes = vec![0u8; tlen as usize];
    r.read_exact(&mut bytes)?;
    parse_tensor(&bytes)
}

struct Reader<R> {
    inner: R,
    pos: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ProtoError> {
        self.inner
            .read_exact(buf)
            .map_err(|e| ProtoError::Malformed(format!("truncated model file: {e}")))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, ProtoError> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::Malformed("varint longer than 10 bytes".into()))
    }

    fn seek_to(&mut self, pos: u64) -> Result<(), ProtoError> {
        // BufReader::seek_relative keeps the buffer for short skips.
        let delta = pos as i64 - self.pos as i64;
        self.inner
            .seek(SeekFrom::Current(delta))
            .map_err(|e| ProtoError::Malformed(format!("seek failed: {e}")))?;
        self.pos = pos;
        Ok(())
    }
}

/// Scans the fields of the message spanning `[start, end)` and returns the offset and length of
/// the last length-delimited field numbered `field`.
fn find_last_field<R: Read + Seek>(
    r: &mut Reader<R>,
    start: u64,
    end: u64,
    field: u64,
) -> Result<Option<(u64, u64)>, ProtoError> {
    r.seek_to(start)?;
    let mut found = None;
    while r.pos < end {
        let key = r.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let skip = match wire {
            WIRE_VARINT => {
                r.varint()?;
                0
            }
            WIRE_I64 => 8,
            WIRE_I32 => 4,
            WIRE_LEN => {
                let len = r.varint()?;
                if r.pos.checked_add(len).is_none_or(|e| e > end) {
                    return Err(ProtoError::Malformed(format!(
                        "field {number} at byte {} runs past its message",
                        r.pos
                    )));
                }
                if number == field {
                    found = Some((r.pos, len));
                }
                len
            }
            other => {
                return Err(ProtoError::Malformed(format!(
                    "unsupported wire type {other} at byte {}",
                    r.pos
                )))
            }
        };
        r.seek_to(r.pos + skip)?;
    }
    Ok(found)
}

/// A cursor over an in-memory message.
struct Bytes<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| ProtoError::Malformed("truncated varint".into()))?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::Malformed("varint longer than 10 bytes".into()))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], ProtoError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| ProtoError::Malformed("field runs past the tensor".into()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

const DATA_TYPE_FLOAT: u64 = 1;
const DATA_LOCATION_EXTERNAL: u64 = 1;

fn parse_tensor(buf: &[u8]) -> Result<FloatTensor, ProtoError> {
    let mut b = Bytes { buf, pos: 0 };
    let (mut name, mut dims, mut data_type) = (String::new(), Vec::new(), 0u64);
    let (mut raw, mut floats): (Option<&[u8]>, Vec<f32>) = (None, Vec::new());
    while b.pos < buf.len() {
        let key = b.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        match (number, wire) {
            (1, WIRE_VARINT) => dims.push(b.varint()? as i64),
            (1, WIRE_LEN) => {
                let len = b.varint()?;
                let mut packed = Bytes {
                    buf: b.take(len)?,
                    pos: 0,
                };
                while packed.pos < packed.buf.len() {
                    dims.push(packed.varint()? as i64);
                }
            }
            (2, WIRE_VARINT) => data_type = b.varint()?,
            (4, WIRE_LEN) => {
                let len = b.varint()?;
                floats.extend(le_floats(b.take(len)?)?);
            }
            (4, WIRE_I32) => floats.extend(le_floats(b.take(4)?)?),
            (8, WIRE_LEN) => {
                let len = b.varint()?;
                name = String::from_utf8_lossy(b.take(len)?).into_owned();
            }
            (9, WIRE_LEN) => {
                let len = b.varint()?;
                raw = Some(b.take(len)?);
            }
            (14, WIRE_VARINT) if b.varint()? == DATA_LOCATION_EXTERNAL => {
                return Err(ProtoError::Malformed(
                    "the initializer is stored in an external data file; use a single-file model"
                        .into(),
                ));
            }
            (_, WIRE_VARINT) => {
                b.varint()?;
            }
            (_, WIRE_I64) => {
                b.take(8)?;
            }
            (_, WIRE_I32) => {
                b.take(4)?;
            }
            (_, WIRE_LEN) => {
                let len = b.varint()?;
                b.take(len)?;
            }
            (_, other) => {
                return Err(ProtoError::Malformed(format!(
                    "unsupported wire type {other} in a tensor"
                )))
            }
        }
    }
    if data_type != DATA_TYPE_FLOAT {
        return Err(ProtoError::Malformed(format!(
            "initializer `{name}` has data type {data_type}, expected 1 (float)"
        )));
    }
    let data = match raw {
        Some(raw) => le_floats(raw)?,
        None => floats,
    };
    let expected = dims.iter().try_fold(1u64, |acc, &d| {
        u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    });
    if expected != Some(data.len() as u64) {
        return Err(ProtoError::Malformed(format!(
            "initializer `{name}` has dims {dims:?} but {} values",
            data.len()
        )));
    }
    Ok(FloatTensor { name, dims, data })
}

fn le_floats(bytes: &[u8]) -> Result<Vec<f32>, ProtoError> {
    if bytes.len() % 4 != 0 {
        return Err(ProtoError::Malformed(
            "float data length is not a multiple of 4".into(),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(number: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn tensor(name: &str, dims: &[u64], values: &[f32], raw: bool) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            varint(1 << 3, &mut t);
            varint(d, &mut t);
        }
        varint(2 << 3, &mut t);
        varint(1, &mut t);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        len_field(if raw { 9 } else { 4 }, &bytes, &mut t);
        len_field(8, name.as_bytes(), &mut t);
        t
    }

    #[test]
    fn reads_the_last_initializer_of_a_hand_built_model() {
        let mut graph = Vec::new();
        len_field(1, b"node bytes we skip", &mut graph);
        len_field(5, &tensor("first", &[2], &[9.0, 9.0], true), &mut graph);
        len_field(
            5,
            &tensor("emap", &[2, 2], &[1.0, -2.0, 0.5, 4.0], false),
            &mut graph,
        );
        len_field(11, b"graph input we skip", &mut graph);
        let mut model = Vec::new();
        varint(1 << 3, &mut model); // ir_version = 6
        varint(6, &mut model);
        len_field(7, &graph, &mut model);
        let dir = std::env::temp_dir().join(format!("facerelay-proto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.onnx");
        std::fs::write(&path, &model).unwrap();
        let t = last_initializer(&path).unwrap();
        assert_eq!(t.name, "emap");
        assert_eq!(t.dims, vec![2, 2]);
        assert_eq!(t.data, vec![1.0, -2.0, 0.5, 4.0]);

        // Truncations anywhere are errors, never panics.
        for cut in 0..model.len() {
            std::fs::write(&path, &model[..cut]).unwrap();
            assert!(last_initializer(&path).is_err(), "cut at {cut}");
        }
        // Corrupted bytes anywhere: an error or some tensor, never a panic or a huge allocation.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bad = model.clone();
            let at = (seed as usize) % bad.len();
            bad[at] = (seed >> 32) as u8;
            std::fs::write(&path, &bad).unwrap();
            let _ = last_initializer(&path);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
