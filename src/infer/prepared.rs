//! The variants `facerelay models prepare` writes beside a model file, as recorded in
//! `models.dir/prepared.json`: which one a role runs, and only while both files are the ones
//! checked.

use std::path::{Path, PathBuf};

use super::{ModelsConfig, Provider};

#[derive(Debug, serde::Deserialize)]
struct Prepared {
    variants: Vec<Variant>,
}

#[derive(Debug, serde::Deserialize)]
struct Variant {
    /// `dynamic-batch` or `fp16`.
    kind: String,
    file: String,
    source: String,
    source_sha256: String,
    sha256: String,
}

/// The file `role` runs in place of `original`: with `models.prepared`, a variant of it that
/// `prepared.json` lists and whose sha256 and whose original's still match (the fp16 one on the
/// GPU providers, else the dynamic-batch one); otherwise `original` itself. Says in the log
/// which, and why a listed variant is passed over.
pub fn runtime_path(models: &ModelsConfig, original: PathBuf, role: &str) -> PathBuf {
    if !models.prepared {
        return original;
    }
    let Ok(text) = std::fs::read_to_string(models.dir.join("prepared.json")) else {
        return original;
    };
    let prepared: Prepared = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, role, "models.dir/prepared.json does not read: the model runs its own file");
            return original;
        }
    };
    // Variants live beside their original, in models.dir.
    if original.parent() != Some(models.dir.as_path()) {
        return original;
    }
    let name = original.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let gpu = models.provider != Provider::Cpu;
    let mut listed: Vec<&Variant> = prepared
        .variants
        .iter()
        .filter(|v| v.source == name && (v.kind == "dynamic-batch" || (gpu && v.kind == "fp16")))
        .collect();
    // fp16 first where it applies.
    listed.sort_by_key(|v| v.kind != "fp16");
    if listed.is_empty() {
        return original;
    }
    let sha = |p: &Path| super::manifest::sha256_file(p).ok();
    if sha(&original).as_deref() != Some(listed[0].source_sha256.as_str()) {
        tracing::warn!(file = %original.display(), role, "the file changed since `facerelay models prepare`: it runs as it is (prepare it again)");
        return original;
    }
    for v in listed {
        let path = models.dir.join(&v.file);
        if v.file.contains('/') || sha(&path).as_deref() != Some(v.sha256.as_str()) {
            tracing::warn!(file = %path.display(), role, "a prepared variant is missing or changed: passed over");
            continue;
        }
        tracing::info!(file = %path.display(), kind = %v.kind, role, "running the prepared variant");
        return path;
    }
    original
}
