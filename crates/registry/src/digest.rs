//! Content digests: sha256 of a file, and of a directory tree.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::RegistryError;

/// sha256 of one file, as lowercase hex.
pub fn file_sha256(path: &Path) -> Result<String, RegistryError> {
    let mut file = File::open(path).map_err(|e| RegistryError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| RegistryError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The digest of a tree given each file's relative path and sha256: the
/// sha256 of the sorted lines `PATH\0FILE_SHA256\n`. A tree of exactly one
/// file at its root has that file's own digest, so a single-file artifact
/// can be pinned by the sha256 its publisher prints.
pub fn digest_of_entries(mut entries: Vec<(String, String)>) -> String {
    if entries.len() == 1 && !entries[0].0.contains('/') {
        return entries.remove(0).1;
    }
    entries.sort();
    let mut hasher = Sha256::new();
    for (path, digest) in &entries {
        hasher.update(path.as_bytes());
        hasher.update([0u8]);
        hasher.update(digest.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// Digest of a directory tree (see [`digest_of_entries`]) and its total size.
pub fn tree_digest(root: &Path) -> Result<(String, u64), RegistryError> {
    if root.is_file() {
        let size = root
            .metadata()
            .map_err(|e| RegistryError::io(root, e))?
            .len();
        return Ok((file_sha256(root)?, size));
    }
    let mut entries = Vec::new();
    let mut size = 0;
    for path in walk_files(root).map_err(|e| RegistryError::io(root, e))? {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        size += path
            .metadata()
            .map_err(|e| RegistryError::io(&path, e))?
            .len();
        entries.push((rel, file_sha256(&path)?));
    }
    Ok((digest_of_entries(entries), size))
}

/// Every regular file under `root`, recursively.
pub(crate) fn walk_files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_digest_is_order_independent_and_content_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.txt"), "alpha").unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "beta").unwrap();
        let (d1, size) = tree_digest(dir.path()).unwrap();
        assert_eq!(size, 9);
        std::fs::write(dir.path().join("sub/b.txt"), "betA").unwrap();
        let (d2, _) = tree_digest(dir.path()).unwrap();
        assert_ne!(d1, d2);
    }

    #[test]
    fn single_file_tree_has_the_file_digest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.gguf"), "weights").unwrap();
        let (d, _) = tree_digest(dir.path()).unwrap();
        assert_eq!(d, file_sha256(&dir.path().join("m.gguf")).unwrap());
        assert_eq!(d, hex::encode(Sha256::digest(b"weights")));
    }
}
