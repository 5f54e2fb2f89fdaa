//! `hf://ORG/REPO[@REV]`: a Hugging Face Hub repository, through the hf-hub
//! crate. Only the files a runtime loads are downloaded.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use crate::RegistryError;

/// Files a runtime may need; anything else in the repo (other formats,
/// checkpoints for other frameworks) is skipped.
fn wanted(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    name.ends_with(".gguf")
        || matches!(
            base,
            "config.json"
                | "tokenizer.json"
                | "tokenizer_config.json"
                | "special_tokens_map.json"
                | "model.safetensors"
                | "modules.json"
                | "sentence_bert_config.json"
                | "config_sentence_transformers.json"
        ) && (!name.contains('/')
            || name.starts_with("1_Pooling/")
            || name.starts_with("2_Normalize/"))
}

fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string())
}

/// Fails within seconds when the Hub cannot be reached, instead of waiting
/// on the HTTP client's long timeouts.
fn check_reachable(source: &str) -> Result<(), RegistryError> {
    let ep = endpoint();
    let host = ep
        .split("://")
        .nth(1)
        .unwrap_or(&ep)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let hostport = if host.contains(':') {
        host.clone()
    } else {
        format!("{host}:443")
    };
    let unreachable = |why: String| RegistryError::Fetch {
        uri: source.to_string(),
        reason: format!(
            "the Hugging Face Hub at {ep} is unreachable ({why}); this machine may be offline: \
             use a file:// or pip:// source instead"
        ),
    };
    let addrs: Vec<_> = hostport
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve {host}: {e}")))?
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| unreachable(format!("{host} has no address")))?;
    TcpStream::connect_timeout(addr, Duration::from_secs(5))
        .map_err(|e| unreachable(format!("cannot connect to {addr}: {e}")))?;
    Ok(())
}

pub(crate) fn fetch(
    repo: &str,
    revision: &str,
    hf_cache: &Path,
    tree: &Path,
    progress: bool,
) -> Result<(), RegistryError> {
    let source = format!("hf://{repo}@{revision}");
    let fail = |reason: String| RegistryError::Fetch {
        uri: source.clone(),
        reason,
    };
    check_reachable(&source)?;
    let api = ApiBuilder::from_env()
        .with_cache_dir(hf_cache.to_path_buf())
        .with_progress(progress)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let repo_api = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = repo_api.info().map_err(|e| fail(e.to_string()))?;
    let files: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|f| wanted(f))
        .collect();
    if files.is_empty() {
        return Err(fail(
            "the repository has no model files neocloud can load".into(),
        ));
    }
    for file in files {
        let cached = repo_api
            .get(&file)
            .map_err(|e| fail(format!("{file}: {e}")))?;
        let dest = tree.join(&file);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RegistryError::io(parent, e))?;
        }
        std::fs::copy(&cached, &dest).map_err(|e| RegistryError::io(&dest, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_only_loadable_files() {
        assert!(wanted("model.safetensors"));
        assert!(wanted("1_Pooling/config.json"));
        assert!(wanted("q4/model.Q4_K_M.gguf"));
        assert!(!wanted("pytorch_model.bin"));
        assert!(!wanted("onnx/config.json"));
    }
}
