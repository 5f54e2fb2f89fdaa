//! `GET /apis/neocloud.dev/v1/services/{name}/logs?tail=N`: the last lines
//! of each replica's log file under `DATA/logs/services/{name}/` (one file
//! per replica, `replica-0.log`, written by the orchestrator), each line
//! prefixed with `[replica-0] `.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path as FsPath;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ControlState, StatusError, blocking, kind_of, path_error, query_error};
use crate::kind::Kind;
use crate::store::ControlError;

/// Lines per replica when `tail` is not given.
pub const DEFAULT_TAIL: usize = 100;
/// Most lines per replica one request may ask for.
pub const MAX_TAIL: usize = 100_000;
/// Most bytes read from the end of one file.
const MAX_TAIL_BYTES: usize = 16 << 20;

pub(super) async fn service_logs(
    State(state): State<ControlState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Response, StatusError> {
    let Path((plural, name)) = path.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    if kind_of(&plural)? != Kind::Service {
        return Err(StatusError::not_found(format!(
            "logs are kept for services only, not {plural}"
        )));
    }
    let tail = match query.get("tail") {
        None => DEFAULT_TAIL,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|&n| n <= MAX_TAIL)
            .ok_or_else(|| {
                StatusError::bad_request(format!(
                    "tail: {t:?} is not a line count between 0 and {MAX_TAIL}"
                ))
            })?,
    };
    let store = state.store;
    let dir = state.data_dir.join("logs").join("services").join(&name);
    let text = blocking(move || {
        store.get(Kind::Service, &name)?;
        read_tails(&dir, tail)
            .map_err(|e| ControlError::Storage(format!("reading {}: {e}", dir.display())))
    })
    .await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response())
}

/// The last `n` lines of every file in `dir` (sorted by name), prefixed
/// with the file's stem. A missing directory has no lines yet.
fn read_tails(dir: &FsPath, n: usize) -> std::io::Result<String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    let mut out = String::new();
    for file in files {
        let replica = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for line in tail_lines(&file, n)? {
            out.push_str(&format!("[{replica}] {line}\n"));
        }
    }
    Ok(out)
}

/// The last `n` lines of a file, reading backwards from its end.
fn tail_lines(path: &FsPath, n: usize) -> std::io::Result<Vec<String>> {
    const BLOCK: u64 = 64 << 10;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut file = std::fs::File::open(path)?;
    let mut pos = file.metadata()?.len();
    let mut buf: Vec<u8> = Vec::new();
    // More than n newlines means n whole lines (the first may be cut).
    while pos > 0 && bytecount(&buf) <= n && buf.len() < MAX_TAIL_BYTES {
        let start = pos.saturating_sub(BLOCK);
        let mut chunk = vec![0; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..].iter().map(|l| l.to_string()).collect())
}

fn bytecount(buf: &[u8]) -> usize {
    buf.iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_whole_lines_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("replica-0.log");
        let lines: Vec<String> = (0..20_000).map(|i| format!("line {i}")).collect();
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let tail = tail_lines(&file, 3).unwrap();
        assert_eq!(tail, ["line 19997", "line 19998", "line 19999"]);
        let tail = tail_lines(&file, 15_000).unwrap();
        assert_eq!(tail.len(), 15_000);
        assert_eq!(tail[0], "line 5000");
        assert_eq!(tail_lines(&file, 50_000).unwrap().len(), 20_000);
        assert!(tail_lines(&file, 0).unwrap().is_empty());
        // No trailing newline: the last line still counts.
        std::fs::write(&file, "a\nb\nc").unwrap();
        assert_eq!(tail_lines(&file, 2).unwrap(), ["b", "c"]);
    }

    #[test]
    fn prefixes_each_replica() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("replica-1.log"), "x\ny\n").unwrap();
        std::fs::write(dir.path().join("replica-0.log"), "hello\n").unwrap();
        let text = read_tails(dir.path(), 1).unwrap();
        assert_eq!(text, "[replica-0] hello\n[replica-1] y\n");
        assert_eq!(read_tails(&dir.path().join("none"), 5).unwrap(), "");
    }
}
