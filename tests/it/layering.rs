//! The module layering documented in `src/lib.rs`, checked: every `crate::` path in the library's
//! code (unit-test modules aside) names its own module or one of a lower layer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The layers of `src/lib.rs`'s `layers:` line, top first.
fn documented_layers(lib: &str) -> Vec<Vec<String>> {
    let line = lib
        .lines()
        .find_map(|l| l.strip_prefix("//! layers:"))
        .expect("src/lib.rs documents its layers");
    line.split('→')
        .map(|layer| {
            layer
                .split(',')
                .map(|m| m.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments and its unit-test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module named by a `crate::` path in `code`, grouped imports included.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

/// `(file, module it uses)` for every use against the layering.
fn violations(src: &Path, layers: &[Vec<String>]) -> Vec<(String, String)> {
    let layer_of: HashMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let own = *layer_of
            .get(module.as_str())
            .unwrap_or_else(|| panic!("src/lib.rs's layers do not name the module `{module}`"));
        let text = std::fs::read_to_string(&file).unwrap();
        for used in crate_paths(&code(&text)) {
            if used == module {
                continue;
            }
            match layer_of.get(used.as_str()) {
                Some(&layer) if layer > own => {}
                _ => bad.push((rel.display().to_string(), used)),
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = documented_layers(&lib);
    // Every module of the crate is in exactly one layer.
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let mut listed: Vec<&str> = layers.iter().flatten().map(String::as_str).collect();
    listed.sort();
    let mut declared_sorted = declared.clone();
    declared_sorted.sort();
    assert_eq!(
        listed, declared_sorted,
        "src/lib.rs: layers against modules"
    );
    let bad = violations(&src, &layers);
    assert!(
        bad.is_empty(),
        "imports against the layering (file, module used): {bad:#?}"
    );
}

#[test]
fn the_check_catches_an_upward_import() {
    let dir = std::env::temp_dir().join(format!("facerelay-layering-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("media")).unwrap();
    std::fs::write(
        dir.join("media/mod.rs"),
        "use crate::metrics::Registry;\n// crate::rtc in a comment is fine\nfn f() { crate::rtc::x(); }\n\
         #[cfg(test)]\nmod tests { use crate::app; }\n",
    )
    .unwrap();
    std::fs::write(dir.join("rtc.rs"), "use crate::{media::h264, metrics};\n").unwrap();
    std::fs::write(dir.join("metrics.rs"), "use crate::{media};\n").unwrap();
    let layers: Vec<Vec<String>> = [["rtc"], ["media"], ["metrics"]]
        .iter()
        .map(|l| l.iter().map(|m| m.to_string()).collect())
        .collect();
    let bad = violations(&dir, &layers);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        bad,
        vec![
            ("media/mod.rs".to_owned(), "rtc".to_owned()),
            ("metrics.rs".to_owned(), "media".to_owned()),
        ]
    );
}
