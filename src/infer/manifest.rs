//! The model files: what `models/manifest.toml` promises (name, size, sha256, public source),
//! `facerelay models check` (what is present and intact) and `facerelay models fetch`
//! (download, resumable, verified).
//!
//! Fetching keeps partial downloads in `<models dir>/.download/` and resumes them with an HTTP
//! Range request, so an interrupted 554 MB download does not start over. Nothing lands under
//! its final name before its sha256 matches the manifest. Some files ship only inside an archive
//! (insightface's `buffalo_l.zip`); the archive is downloaded once and the member inflated out.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The manifest committed in `models/manifest.toml`, embedded in the binary.
pub const MANIFEST_TOML: &str = include_str!("../../models/manifest.toml");

/// One model file the project uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// File name inside the models folder.
    pub name: String,
    /// Role in the pipeline (detector, recognizer, swapper).
    pub role: String,
    /// Size in bytes; absent for a file not pinned (see `sha256`).
    #[serde(default)]
    pub size: Option<u64>,
    /// Lower-case hex sha256 of the file. Absent for a file no copy of which was available to
    /// pin: such a file is fetched from its public URL and kept only if it passes its contract,
    /// and `check` reports its sha256 for the operator to compare with the publisher's.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The deep swapper family (`swap.swapper`) the file serves; absent: every family (the
    /// detector and the recognizer).
    #[serde(default)]
    pub family: Option<String>,
    /// Public URL of the file, or of the zip archive holding it.
    pub url: String,
    /// Name of the file inside the archive at `url`, when it ships in one.
    #[serde(default)]
    pub member: Option<String>,
    /// Licence terms, in a line.
    pub licence: String,
}

/// One file of the packaged set, which `scripts/install-packaged-models.sh` makes from registry
/// packages (the installer reads the same entries; their source fields are its business).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PackagedFile {
    /// Path inside the packaged folder.
    pub name: String,
    /// Role: detector, blazeface, mesh, topology or photo (test pictures).
    pub role: String,
    pub size: u64,
    pub sha256: String,
    /// The registry package and version it comes from.
    pub package: String,
    pub version: String,
    pub licence: String,
}

/// `models/manifest.toml`: the deep models a user places (`[[file]]`) and the packaged set
/// (`[[packaged]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub file: Vec<ManifestFile>,
    #[serde(default)]
    pub packaged: Vec<PackagedFile>,
}

impl Manifest {
    /// The embedded manifest.
    pub fn embedded() -> Result<Self, ModelsError> {
        Self::parse(MANIFEST_TOML)
    }

    pub fn parse(text: &str) -> Result<Self, ModelsError> {
        let manifest: Self =
            toml::from_str(text).map_err(|e| ModelsError::Manifest(e.message().to_owned()))?;
        if let Some(f) = manifest
            .file
            .iter()
            .find(|f| f.size.is_some() != f.sha256.is_some())
        {
            return Err(ModelsError::Manifest(format!(
                "{}: size and sha256 go together (both, or neither for a file not pinned)",
                f.name
            )));
        }
        Ok(manifest)
    }

    /// The files the deep swapper `family` runs with: its own and those every family shares.
    pub fn for_family<'a>(&'a self, family: &'a str) -> impl Iterator<Item = &'a ManifestFile> {
        self.file
            .iter()
            .filter(move |f| f.family.as_deref().is_none_or(|x| x == family))
    }
}

/// What can go wrong with model files.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error("invalid models/manifest.toml: {0}")]
    Manifest(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot reach {url}: {message}. This machine looks offline (or the host is blocked). Download the files named in models/manifest.toml on a machine with internet access, copy them into {dir}, and run `facerelay models check`")]
    Offline {
        url: String,
        message: String,
        dir: PathBuf,
    },
    #[error("downloading {url} failed: {message}")]
    Download { url: String, message: String },
    #[error("{name}: the downloaded file does not match the manifest or its contract ({detail}); the partial download was deleted, run `facerelay models fetch` again")]
    Corrupt { name: String, detail: String },
    #[error("{archive}: {message}")]
    Archive { archive: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ModelsError + '_ {
    move |source| ModelsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// State of one file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Ok,
    Missing,
    WrongSize {
        actual: u64,
    },
    WrongHash {
        actual: String,
    },
    /// Present, of a file the manifest does not pin.
    Unpinned {
        sha256: String,
    },
}

/// One line of `facerelay models check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    pub name: String,
    pub role: String,
    pub path: PathBuf,
    pub state: FileState,
}

impl std::fmt::Display for FileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            FileState::Ok => "ok (size and sha256 match)".to_owned(),
            FileState::Missing => "missing".to_owned(),
            FileState::WrongSize { actual } => format!("wrong size ({actual} bytes)"),
            FileState::WrongHash { actual } => format!("wrong sha256 ({actual})"),
            FileState::Unpinned { sha256 } => {
                format!("present, not pinned: sha256 {sha256} (compare with its publisher's)")
            }
        };
        write!(f, "{:<10} {:<24} {state}", self.role, self.name)
    }
}

/// Checks every file of the packaged set in `dir` (test photos aside): present, right size,
/// right sha256.
pub fn check_packaged(manifest: &Manifest, dir: &Path) -> Result<Vec<FileStatus>, ModelsError> {
    manifest
        .packaged
        .iter()
        .filter(|f| f.role != "photo")
        .map(|f| {
            let path = dir.join(&f.name);
            Ok(FileStatus {
                name: f.name.clone(),
                role: f.role.clone(),
                state: state_of(f.size, &f.sha256, &path)?,
                path,
            })
        })
        .collect()
}

/// Checks the manifest files the deep swapper `family` runs with in `dir`: present, right size,
/// right sha256 (only present, for a file not pinned).
pub fn check(
    manifest: &Manifest,
    dir: &Path,
    family: &str,
) -> Result<Vec<FileStatus>, ModelsError> {
    manifest
        .for_family(family)
        .map(|f| {
            let path = dir.join(&f.name);
            Ok(FileStatus {
                name: f.name.clone(),
                role: f.role.clone(),
                state: file_state(f, &path)?,
                path,
            })
        })
        .collect()
}

fn file_state(f: &ManifestFile, path: &Path) -> Result<FileState, ModelsError> {
    match (f.size, &f.sha256) {
        (Some(size), Some(sha256)) => state_of(size, sha256, path),
        _ if path.is_file() => Ok(FileState::Unpinned {
            sha256: sha256_file(path)?,
        }),
        _ => Ok(FileState::Missing),
    }
}

fn state_of(size: u64, sha256: &str, path: &Path) -> Result<FileState, ModelsError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileState::Missing),
        Err(e) => return Err(io_err(path)(e)),
    };
    if meta.len() != size {
        return Ok(FileState::WrongSize { actual: meta.len() });
    }
    let actual = sha256_file(path)?;
    Ok(if actual == sha256 {
        FileState::Ok
    } else {
        FileState::WrongHash { actual }
    })
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, ModelsError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `fetch` did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    AlreadyPresent,
    Downloaded,
}

/// Downloads the manifest files the deep swapper `family` runs with that are missing or damaged
/// in `dir`. A pinned file lands under its name only once its size and sha256 match; a file
/// not pinned, only once `accept` (its contract) takes it. Progress goes to stderr.
pub fn fetch(
    manifest: &Manifest,
    dir: &Path,
    family: &str,
    accept: &dyn Fn(&ManifestFile, &Path) -> Result<(), String>,
) -> Result<Vec<(String, Fetched)>, ModelsError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        // No limit on the body: the swapper is 554 MB. A stalled body surfaces as an I/O error.
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let staging = dir.join(".download");
    let mut done = Vec::new();
    // Several files may come from one archive: download each URL once.
    let mut by_url: BTreeMap<&str, Vec<&ManifestFile>> = BTreeMap::new();
    for f in manifest.for_family(family) {
        if matches!(
            file_state(f, &dir.join(&f.name))?,
            FileState::Ok | FileState::Unpinned { .. }
        ) {
            done.push((f.name.clone(), Fetched::AlreadyPresent));
        } else {
            by_url.entry(f.url.as_str()).or_default().push(f);
        }
    }
    for (url, files) in by_url {
        fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        let part = staging.join(format!("{}.part", url_file_name(url)));
        download(&agent, url, &part, dir)?;
        for f in &files {
            let target = dir.join(&f.name);
            let tmp = staging.join(format!("{}.tmp", f.name));
            match &f.member {
                Some(member) => {
                    extract_member(&part, member, &tmp)?;
                }
                None => fs::copy(&part, &tmp).map(drop).map_err(io_err(&tmp))?,
            }
            let state = file_state(f, &tmp)?;
            let refused = match &state {
                FileState::Ok => None,
                FileState::Unpinned { .. } => accept(f, &tmp).err(),
                other => Some(format!("{other:?}")),
            };
            if let Some(detail) = refused {
                // A wrong download must not be resumed: start over next time.
                let _ = fs::remove_file(&part);
                let _ = fs::remove_file(&tmp);
                return Err(ModelsError::Corrupt {
                    name: f.name.clone(),
                    detail,
                });
            }
            if let FileState::Unpinned { sha256 } = &state {
                eprintln!(
                    "{}: not pinned; sha256 {sha256}: compare it with its publisher's",
                    f.name
                );
            }
            fs::rename(&tmp, &target).map_err(io_err(&target))?;
            done.push((f.name.clone(), Fetched::Downloaded));
        }
        fs::remove_file(&part).map_err(io_err(&part))?;
    }
    let _ = fs::remove_dir(&staging);
    Ok(done)
}

fn url_file_name(url: &str) -> String {
    let last = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .rsplit('/')
        .next()
        .unwrap_or("download");
    let clean: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    if clean.is_empty() {
        "download".to_owned()
    } else {
        clean
    }
}

/// Downloads `url` into `part`, resuming from what `part` already holds.
pub fn download(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    models_dir: &Path,
) -> Result<(), ModelsError> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        // The part already holds the whole file: nothing left to fetch.
        Err(ureq::Error::StatusCode(416)) if have > 0 => return Ok(()),
        Err(e) => return Err(classify(url, e, models_dir)),
    };
    let status = response.status().as_u16();
    let resumed = status == 206;
    if !resumed && status != 200 {
        return Err(ModelsError::Download {
            url: url.to_owned(),
            message: format!("HTTP status {status}"),
        });
    }
    let body = response.into_body();
    let total = body
        .content_length()
        .map(|n| if resumed { n + have } else { n });
    let mut file = OpenOptions::new()
        .create(true)
        .append(resumed)
        .write(true)
        .truncate(!resumed)
        .open(part)
        .map_err(io_err(part))?;
    let mut reader = body.into_reader();
    let mut bar = ProgressBar::new(url_file_name(url), if resumed { have } else { 0 }, total);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.finish();
                return Err(ModelsError::Download {
                    url: url.to_owned(),
                    message: format!("{e} (run `facerelay models fetch` again to resume)"),
                });
            }
        };
        file.write_all(&buf[..n]).map_err(io_err(part))?;
        bar.advance(n as u64);
    }
    bar.finish();
    file.sync_all().map_err(io_err(part))
}

fn classify(url: &str, e: ureq::Error, models_dir: &Path) -> ModelsError {
    match e {
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Timeout(_)
        | ureq::Error::Io(_) => ModelsError::Offline {
            url: url.to_owned(),
            message: e.to_string(),
            dir: models_dir.to_owned(),
        },
        other => ModelsError::Download {
            url: url.to_owned(),
            message: other.to_string(),
        },
    }
}

/// A one-line progress bar on stderr; on a non-terminal it prints every 10 %.
struct ProgressBar {
    label: String,
    done: u64,
    total: Option<u64>,
    tty: bool,
    last_draw: Option<Instant>,
    last_decile: u64,
}

impl ProgressBar {
    fn new(label: String, done: u64, total: Option<u64>) -> Self {
        Self {
            label,
            done,
            total,
            tty: io::stderr().is_terminal(),
            last_draw: None,
            last_decile: 0,
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        let due = self
            .last_draw
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
        if self.tty && due {
            self.draw("\r");
            self.last_draw = Some(Instant::now());
        } else if !self.tty {
            if let Some(total) = self.total.filter(|&t| t > 0) {
                let decile = self.done * 10 / total;
                if decile > self.last_decile {
                    self.last_decile = decile;
                    self.draw("");
                    eprintln!();
                }
            }
        }
    }

    fn draw(&self, prefix: &str) {
        let mb = |b: u64| b as f64 / 1e6;
        match self.total.filter(|&t| t > 0) {
            Some(total) => {
                let frac = (self.done as f64 / total as f64).min(1.0);
                let filled = (frac * 30.0) as usize;
                eprint!(
                    "{prefix}{} [{}{}] {:>3.0}% {:.1}/{:.1} MB",
                    self.label,
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    frac * 100.0,
                    mb(self.done),
                    mb(total)
                );
            }
            None => eprint!("{prefix}{} {:.1} MB", self.label, mb(self.done)),
        }
    }

    fn finish(&mut self) {
        if self.tty {
            self.draw("\r");
            eprintln!();
        }
    }
}

/// Inflates `member` (matched by its file name, in any folder of the archive) out of a zip file.
pub fn extract_member(archive: &Path, member: &str, out: &Path) -> Result<(), ModelsError> {
    let bad = |message: String| ModelsError::Archive {
        archive: archive.to_owned(),
        message,
    };
    let mut file = BufReader::new(File::open(archive).map_err(io_err(archive))?);
    let len = file.seek(SeekFrom::End(0)).map_err(io_err(archive))?;
    // End of central directory: 22 bytes plus a comment of up to 64 KiB, at the very end.
    let tail_len = len.min(22 + 65535);
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(len - tail_len))
        .map_err(io_err(archive))?;
    file.read_exact(&mut tail).map_err(io_err(archive))?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| bad("not a zip archive (no end of central directory)".into()))?;
    let le16 = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as u64;
    let le32 =
        |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64;
    let entries = le16(&tail, eocd + 10);
    let cd_size = le32(&tail, eocd + 12);
    let cd_offset = le32(&tail, eocd + 16);
    if cd_offset == 0xffff_ffff || cd_offset.saturating_add(cd_size) > len {
        return Err(bad("zip64 or damaged central directory".into()));
    }
    let mut cd = vec![0u8; cd_size as usize];
    file.seek(SeekFrom::Start(cd_offset))
        .map_err(io_err(archive))?;
    file.read_exact(&mut cd).map_err(io_err(archive))?;
    let mut at = 0usize;
    for _ in 0..entries {
        if at + 46 > cd.len() || cd[at..at + 4] != [0x50, 0x4b, 0x01, 0x02] {
            return Err(bad("damaged central directory entry".into()));
        }
        let method = le16(&cd, at + 10);
        let csize = le32(&cd, at + 20);
        let name_len = le16(&cd, at + 28) as usize;
        let extra_len = le16(&cd, at + 30) as usize;
        let comment_len = le16(&cd, at + 32) as usize;
        let local = le32(&cd, at + 42);
        let name_end = at + 46 + name_len;
        if name_end > cd.len() {
            return Err(bad("damaged central directory entry".into()));
        }
        let name = String::from_utf8_lossy(&cd[at + 46..name_end]).into_owned();
        at = name_end + extra_len + comment_len;
        if name.rsplit('/').next() != Some(member) {
            continue;
        }
        let mut header = [0u8; 30];
        file.seek(SeekFrom::Start(local)).map_err(io_err(archive))?;
        file.read_exact(&mut header).map_err(io_err(archive))?;
        if header[..4] != [0x50, 0x4b, 0x03, 0x04] {
            return Err(bad(format!("damaged local header of {name}")));
        }
        let skip = le16(&header, 26) + le16(&header, 28);
        file.seek(SeekFrom::Current(skip as i64))
            .map_err(io_err(archive))?;
        let data = (&mut file).take(csize);
        let mut dst = File::create(out).map_err(io_err(out))?;
        let copied = match method {
            0 => io::copy(&mut { data }, &mut dst),
            8 => io::copy(&mut flate2::read::DeflateDecoder::new(data), &mut dst),
            m => return Err(bad(format!("{name} uses compression method {m}"))),
        };
        copied.map_err(|e| bad(format!("cannot inflate {name}: {e}")))?;
        return Ok(());
    }
    Err(bad(format!("no member named {member}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifest_pins_the_inswapper_set() {
        let m = Manifest::embedded().unwrap();
        let pinned: Vec<_> = m
            .file
            .iter()
            .filter(|f| f.sha256.is_some())
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            pinned,
            ["det_10g.onnx", "w600k_r50.onnx", "inswapper_128.onnx"]
        );
        for sha256 in m.file.iter().filter_map(|f| f.sha256.as_deref()) {
            assert_eq!(sha256.len(), 64);
            assert!(sha256
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn url_file_names_are_safe() {
        assert_eq!(
            url_file_name("https://h/a/b/buffalo_l.zip?x=1"),
            "buffalo_l.zip"
        );
        assert_eq!(url_file_name("https://h/../..//"), "download");
    }

    #[test]
    fn sha256_of_a_known_string() {
        let dir = std::env::temp_dir().join(format!("facerelay-sha-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("abc");
        fs::write(&p, b"abc").unwrap();
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
