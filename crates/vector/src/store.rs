//! The set of collections under one data directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::{Collection, CollectionConfig, VectorError};

/// Collections by name, each in `ROOT/<name>/`.
pub struct Store {
    root: PathBuf,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
}

/// Collection names: what a URL path segment and a directory name can
/// both hold without escaping.
pub fn validate_name(name: &str) -> Result<(), VectorError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(VectorError::bad(format!(
            "collection name {name:?}: use 1-255 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

impl Store {
    /// Opens every collection under `root` (created if absent).
    pub fn open(root: &Path) -> Result<Store, VectorError> {
        let io = |err| VectorError::Io {
            path: root.to_path_buf(),
            err,
        };
        fs::create_dir_all(root).map_err(io)?;
        let mut collections = BTreeMap::new();
        for entry in fs::read_dir(root).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() && validate_name(&name).is_ok() && path.join("config.json").exists() {
                collections.insert(name, Arc::new(Collection::open(&path)?));
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
            collections: RwLock::new(collections),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn names(&self) -> Vec<String> {
        let c = self.collections.read().unwrap_or_else(|p| p.into_inner());
        c.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Result<Arc<Collection>, VectorError> {
        let c = self.collections.read().unwrap_or_else(|p| p.into_inner());
        c.get(name)
            .cloned()
            .ok_or_else(|| VectorError::NotFound(format!("Collection `{name}` doesn't exist!")))
    }

    /// Creates a collection; an existing one of that name is an error.
    pub fn create(
        &self,
        name: &str,
        config: CollectionConfig,
    ) -> Result<Arc<Collection>, VectorError> {
        validate_name(name)?;
        config.validate()?;
        let mut c = self.collections.write().unwrap_or_else(|p| p.into_inner());
        if c.contains_key(name) {
            return Err(VectorError::bad(format!(
                "Wrong input: Collection `{name}` already exists!"
            )));
        }
        let dir = self.root.join(name);
        // Leftovers of a collection deleted mid-way are not a collection.
        let _ = fs::remove_dir_all(&dir);
        let col = Arc::new(Collection::create(&dir, config)?);
        c.insert(name.to_string(), col.clone());
        Ok(col)
    }

    /// Creates a collection from a snapshot file, replacing any of that name.
    pub fn restore(&self, name: &str, snapshot: &Path) -> Result<Arc<Collection>, VectorError> {
        validate_name(name)?;
        let mut c = self.collections.write().unwrap_or_else(|p| p.into_inner());
        let staging = self.root.join(format!(".restore-{name}"));
        let _ = fs::remove_dir_all(&staging);
        let restored = Collection::restore(&staging, snapshot)?;
        drop(restored);
        let dir = self.root.join(name);
        c.remove(name);
        let io = |err| VectorError::Io {
            path: dir.clone(),
            err,
        };
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io)?;
        }
        fs::rename(&staging, &dir).map_err(io)?;
        let col = Arc::new(Collection::open(&dir)?);
        c.insert(name.to_string(), col.clone());
        Ok(col)
    }

    /// Deletes a collection and its files; false if there was none.
    pub fn delete(&self, name: &str) -> Result<bool, VectorError> {
        let mut c = self.collections.write().unwrap_or_else(|p| p.into_inner());
        let Some(col) = c.remove(name) else {
            return Ok(false);
        };
        let dir = col.dir().to_path_buf();
        drop(col);
        // Rename first so a crash mid-delete leaves no half collection.
        let trash = self.root.join(format!(".deleted-{name}"));
        let _ = fs::remove_dir_all(&trash);
        fs::rename(&dir, &trash).map_err(|err| VectorError::Io {
            path: dir.clone(),
            err,
        })?;
        let _ = fs::remove_dir_all(&trash);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Distance;

    #[test]
    fn collections_persist_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let config = CollectionConfig {
            dim: 4,
            distance: Distance::Dot,
            hnsw: Default::default(),
            embed: None,
            quantization: None,
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.create("a", config.clone()).unwrap();
            s.create("b", config.clone()).unwrap();
            assert!(s.create("a", config.clone()).is_err());
            assert!(s.create("../x", config.clone()).is_err());
            assert!(s.delete("b").unwrap());
            assert!(!s.delete("b").unwrap());
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.names(), vec!["a".to_string()]);
        assert!(matches!(s.get("b"), Err(VectorError::NotFound(_))));
    }
}
