//! `facerelay models fetch` against a tiny HTTP server on loopback: whole downloads, resume
//! after an interrupted transfer (HTTP Range), sha256 refusal, members of a zip archive, and the
//! message when the source cannot be reached.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use facerelay::infer::manifest::{self, Fetched, FileState, Manifest, ManifestFile, ModelsError};
use sha2::{Digest, Sha256};

/// What the server saw and how it misbehaves.
#[derive(Default)]
struct ServerState {
    /// `Range` header of each request (empty string when none).
    ranges: Vec<String>,
    /// Cut the body of the next full (non-range) response after this many bytes.
    cut_next_after: Option<usize>,
}

/// Serves `body` at every path; honours `Range: bytes=N-`.
fn serve(body: Vec<u8>) -> (String, Arc<Mutex<ServerState>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(Mutex::new(ServerState::default()));
    let st = state.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            handle(stream, &body, &st);
        }
    });
    (format!("http://{addr}"), state)
}

fn handle(mut stream: TcpStream, body: &[u8], state: &Mutex<ServerState>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut range = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
            range = v.trim().to_owned();
        }
    }
    let mut st = state.lock().unwrap();
    st.ranges.push(range.clone());
    let start: usize = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let (status, part) = if range.is_empty() {
        ("200 OK", body)
    } else if start >= body.len() {
        let head = format!(
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        return;
    } else {
        ("206 Partial Content", &body[start..])
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        part.len()
    );
    if !range.is_empty() {
        head += &format!(
            "Content-Range: bytes {start}-{}/{}\r\n",
            body.len() - 1,
            body.len()
        );
    }
    head += "\r\n";
    let cut = if range.is_empty() {
        st.cut_next_after.take()
    } else {
        None
    };
    drop(st);
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&part[..cut.unwrap_or(part.len()).min(part.len())]);
    let _ = stream.flush();
    // Dropping the stream closes it; a cut body ends early.
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn blob(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn entry(name: &str, bytes: &[u8], url: String, member: Option<&str>) -> ManifestFile {
    ManifestFile {
        name: name.into(),
        role: "test".into(),
        size: Some(bytes.len() as u64),
        sha256: Some(sha(bytes)),
        family: None,
        url,
        member: member.map(str::to_owned),
        licence: "test data".into(),
    }
}

/// `fetch` for the inswapper family, with no file left unpinned to accept.
fn fetch(m: &Manifest, dir: &Path) -> Result<Vec<(String, Fetched)>, ModelsError> {
    manifest::fetch(m, dir, "inswapper_128", &|f, _| {
        Err(format!("{} is pinned: nothing to accept", f.name))
    })
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("facerelay-fetch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn fetch_downloads_verifies_and_skips_what_is_present() {
    let data = blob(300_000);
    let (base, state) = serve(data.clone());
    let dir = tempdir("whole");
    let m = Manifest {
        file: vec![entry("a.onnx", &data, format!("{base}/a.onnx"), None)],
        packaged: Vec::new(),
    };
    assert_eq!(
        manifest::check(&m, &dir, "inswapper_128").unwrap()[0].state,
        FileState::Missing
    );
    let done = fetch(&m, &dir).unwrap();
    assert_eq!(done, [("a.onnx".to_owned(), Fetched::Downloaded)]);
    assert_eq!(std::fs::read(dir.join("a.onnx")).unwrap(), data);
    assert_eq!(
        manifest::check(&m, &dir, "inswapper_128").unwrap()[0].state,
        FileState::Ok
    );
    assert!(!dir.join(".download").exists());
    // Second run: nothing to download.
    assert_eq!(
        fetch(&m, &dir).unwrap(),
        [("a.onnx".to_owned(), Fetched::AlreadyPresent)]
    );
    assert_eq!(state.lock().unwrap().ranges, [""]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_tells_wrong_size_from_wrong_content() {
    let data = blob(1000);
    let dir = tempdir("check");
    let m = Manifest {
        file: vec![entry(
            "e.onnx",
            &data,
            "http://127.0.0.1:1/e.onnx".into(),
            None,
        )],
        packaged: Vec::new(),
    };
    std::fs::write(dir.join("e.onnx"), &data[..999]).unwrap();
    let s = &manifest::check(&m, &dir, "inswapper_128").unwrap()[0];
    assert_eq!(s.state, FileState::WrongSize { actual: 999 });
    assert!(s.to_string().contains("wrong size (999 bytes)"), "{s}");
    let mut other = data.clone();
    other[500] ^= 1;
    std::fs::write(dir.join("e.onnx"), &other).unwrap();
    let s = &manifest::check(&m, &dir, "inswapper_128").unwrap()[0];
    assert_eq!(
        s.state,
        FileState::WrongHash {
            actual: sha(&other)
        }
    );
    std::fs::write(dir.join("e.onnx"), &data).unwrap();
    assert_eq!(
        manifest::check(&m, &dir, "inswapper_128").unwrap()[0].state,
        FileState::Ok
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let data = blob(1_000_000);
    let (base, state) = serve(data.clone());
    state.lock().unwrap().cut_next_after = Some(400_000);
    let dir = tempdir("resume");
    let m = Manifest {
        file: vec![entry("b.onnx", &data, format!("{base}/b.onnx"), None)],
        packaged: Vec::new(),
    };
    let e = fetch(&m, &dir).unwrap_err();
    assert!(
        e.to_string().contains("run `facerelay models fetch` again"),
        "{e}"
    );
    let part = dir.join(".download/b.onnx.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 400_000);
    assert!(
        !dir.join("b.onnx").exists(),
        "nothing lands before it is verified"
    );

    fetch(&m, &dir).unwrap();
    assert_eq!(std::fs::read(dir.join("b.onnx")).unwrap(), data);
    assert_eq!(state.lock().unwrap().ranges, ["", "bytes=400000-"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_complete_part_file_is_not_downloaded_again() {
    let data = blob(5000);
    let (base, state) = serve(data.clone());
    let dir = tempdir("complete");
    std::fs::create_dir_all(dir.join(".download")).unwrap();
    std::fs::write(dir.join(".download/c.onnx.part"), &data).unwrap();
    let m = Manifest {
        file: vec![entry("c.onnx", &data, format!("{base}/c.onnx"), None)],
        packaged: Vec::new(),
    };
    fetch(&m, &dir).unwrap();
    assert_eq!(std::fs::read(dir.join("c.onnx")).unwrap(), data);
    assert_eq!(state.lock().unwrap().ranges, ["bytes=5000-"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_download_with_the_wrong_sha256_is_refused_and_discarded() {
    let data = blob(10_000);
    let (base, _state) = serve(data.clone());
    let dir = tempdir("corrupt");
    let mut e = entry("d.onnx", &data, format!("{base}/d.onnx"), None);
    e.sha256 = Some(sha(b"something else"));
    let m = Manifest {
        file: vec![e],
        packaged: Vec::new(),
    };
    let err = fetch(&m, &dir).unwrap_err();
    assert!(matches!(err, ModelsError::Corrupt { .. }), "{err}");
    assert!(!dir.join("d.onnx").exists());
    assert!(
        !dir.join(".download/d.onnx.part").exists(),
        "a bad download must not be resumed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A zip archive with the given members (stored, no compression), laid out by hand.
fn zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let le16 = |v: usize| (v as u16).to_le_bytes();
    let le32 = |v: usize| (v as u32).to_le_bytes();
    for (name, data) in members {
        let offset = out.len();
        out.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&[0; 4]); // CRC (unused by the reader; sha256 decides)
        out.extend_from_slice(&le32(data.len()));
        out.extend_from_slice(&le32(data.len()));
        out.extend_from_slice(&le16(name.len()));
        out.extend_from_slice(&le16(0));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&[0; 4]);
        central.extend_from_slice(&le32(data.len()));
        central.extend_from_slice(&le32(data.len()));
        central.extend_from_slice(&le16(name.len()));
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
        central.extend_from_slice(&le32(offset));
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len();
    out.extend_from_slice(&central);
    out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0]);
    out.extend_from_slice(&le16(members.len()));
    out.extend_from_slice(&le16(members.len()));
    out.extend_from_slice(&le32(central.len()));
    out.extend_from_slice(&le32(cd_offset));
    out.extend_from_slice(&le16(0));
    out
}

#[test]
fn members_of_one_archive_come_from_one_download() {
    let (det, rec) = (blob(7000), blob(9000).into_iter().rev().collect::<Vec<_>>());
    let archive = zip(&[("pack/det.onnx", &det), ("pack/rec.onnx", &rec)]);
    let (base, state) = serve(archive);
    let dir = tempdir("zip");
    let url = format!("{base}/pack.zip");
    let m = Manifest {
        file: vec![
            entry("det.onnx", &det, url.clone(), Some("det.onnx")),
            entry("rec.onnx", &rec, url, Some("rec.onnx")),
        ],
        packaged: Vec::new(),
    };
    fetch(&m, &dir).unwrap();
    assert_eq!(std::fs::read(dir.join("det.onnx")).unwrap(), det);
    assert_eq!(std::fs::read(dir.join("rec.onnx")).unwrap(), rec);
    assert_eq!(state.lock().unwrap().ranges.len(), 1);
    // A member the archive lacks.
    let e = manifest::extract_member(&dir.join("det.onnx"), "x", &dir.join("y")).unwrap_err();
    assert!(e.to_string().contains("not a zip archive"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreachable_source_says_the_machine_looks_offline() {
    let dir = tempdir("offline");
    for url in [
        "http://models.facerelay.invalid/det_10g.onnx", // no such host
        "http://127.0.0.1:1/det_10g.onnx",              // nothing listens
    ] {
        let m = Manifest {
            file: vec![entry("det_10g.onnx", b"x", url.into(), None)],
            packaged: Vec::new(),
        };
        let e = fetch(&m, &dir).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ModelsError::Offline { .. }), "{text}");
        assert!(text.contains("looks offline"), "{text}");
        assert!(text.contains("facerelay models check"), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file the manifest does not pin is fetched for its family only, kept only when its contract
/// accepts it (else deleted, partial download included), and reported with its sha256.
#[test]
fn a_file_not_pinned_is_kept_only_when_its_contract_accepts_it() {
    let data = blob(50_000);
    let (base, _state) = serve(data.clone());
    let dir = tempdir("unpinned");
    let mut unpinned = entry("h.onnx", &data, format!("{base}/h.onnx"), None);
    unpinned.size = None;
    unpinned.sha256 = None;
    unpinned.family = Some("hyperswap_1a_256".into());
    let mut shared = entry("d.onnx", &data, format!("{base}/d.onnx"), None);
    shared.family = None;
    let m = Manifest {
        file: vec![shared, unpinned],
        packaged: Vec::new(),
    };
    // Another family's file is neither checked nor fetched.
    let names = |list: Vec<manifest::FileStatus>| -> Vec<String> {
        list.into_iter().map(|s| s.name).collect()
    };
    assert_eq!(
        names(manifest::check(&m, &dir, "inswapper_128").unwrap()),
        ["d.onnx"]
    );
    assert_eq!(
        names(manifest::check(&m, &dir, "hyperswap_1a_256").unwrap()),
        ["d.onnx", "h.onnx"]
    );
    // Refused by its contract: not kept, and said why.
    let refuse = |_: &ManifestFile, _: &Path| Err("not the hyperswap contract".to_owned());
    let e = manifest::fetch(&m, &dir, "hyperswap_1a_256", &refuse).unwrap_err();
    assert!(e.to_string().contains("not the hyperswap contract"), "{e}");
    assert!(!dir.join("h.onnx").exists());
    assert!(!dir.join(".download/h.onnx.part").exists());
    // Accepted: kept, and reported present with its sha256.
    let accept = |f: &ManifestFile, path: &Path| {
        assert_eq!(f.name, "h.onnx");
        assert_eq!(std::fs::read(path).unwrap(), blob(50_000));
        Ok(())
    };
    let done = manifest::fetch(&m, &dir, "hyperswap_1a_256", &accept).unwrap();
    assert!(
        done.contains(&("h.onnx".to_owned(), Fetched::Downloaded)),
        "{done:?}"
    );
    let states = manifest::check(&m, &dir, "hyperswap_1a_256").unwrap();
    assert_eq!(states[1].state, FileState::Unpinned { sha256: sha(&data) });
    assert!(states[1].to_string().contains(&sha(&data)));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The committed manifest pins every file it can and names each family's files.
#[test]
fn the_manifest_names_every_family_s_files() {
    let m = Manifest::embedded().unwrap();
    for family in facerelay::swap::swapper::CONTRACTS.iter() {
        let files: Vec<&str> = m.for_family(family.name).map(|f| f.name.as_str()).collect();
        assert!(files.contains(&"det_10g.onnx") && files.contains(&"w600k_r50.onnx"));
        assert!(
            files.contains(&family.file().as_str()),
            "{}: {files:?}",
            family.name
        );
        if let Some(converter) = family.converter() {
            assert!(files.contains(&converter), "{}: {files:?}", family.name);
        }
    }
    assert!(m
        .file
        .iter()
        .filter(|f| f.sha256.is_none())
        .all(|f| f.family.is_some()));
    let e = Manifest::parse(
        "[[file]]\nname = \"x\"\nrole = \"swapper\"\nsize = 1\nurl = \"u\"\nlicence = \"l\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("size and sha256 go together"), "{e}");
}
