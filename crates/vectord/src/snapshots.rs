//! Snapshots: create, list, recover.

use super::*;

pub(crate) fn snapshot_info(path: &std::path::Path) -> Option<Value> {
    let meta = std::fs::metadata(path).ok()?;
    let created = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Some(json!({
        "name": path.file_name()?.to_string_lossy(),
        "creation_time": unix_to_iso(created),
        "size": meta.len(),
    }))
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) from Unix seconds.
pub(crate) fn unix_to_iso(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

pub(crate) async fn create_snapshot(
    State(state): State<VectorState>,
    Path(name): Path<String>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let dir = state.snapshots.join(&name);
        std::fs::create_dir_all(&dir).map_err(|err| VectorError::Io {
            path: dir.clone(),
            err,
        })?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let path = dir.join(format!("{name}-{stamp}.snapshot"));
        c.snapshot_to(&path)?;
        snapshot_info(&path).ok_or_else(|| VectorError::bad("the snapshot vanished"))
    })
    .await
}

pub(crate) async fn list_snapshots(
    State(state): State<VectorState>,
    Path(name): Path<String>,
) -> Reply {
    blocking(move || {
        collection(&state, &name)?;
        let dir = state.snapshots.join(&name);
        let mut out: Vec<Value> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
                    .filter_map(|p| snapshot_info(&p))
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Ok(json!(out))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct RecoverBody {
    location: String,
}

/// `PUT .../snapshots/recover {"location": "file:///path"}` (or a snapshot
/// name this server made for the collection). Replaces the collection.
pub(crate) async fn recover_snapshot(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let req: RecoverBody = parse(body)?;
        let path = if let Some(p) = req.location.strip_prefix("file://") {
            PathBuf::from(p)
        } else if req.location.contains("://") {
            return Err(VectorError::bad(format!(
                "location {:?}: only file:// locations on this server are supported",
                req.location
            )));
        } else {
            let file = std::path::Path::new(&req.location);
            match file.file_name() {
                Some(f) if file.components().count() == 1 => state.snapshots.join(&name).join(f),
                _ => PathBuf::from(&req.location),
            }
        };
        if !path.is_file() {
            return Err(VectorError::bad(format!(
                "location {:?}: no snapshot file at {}",
                req.location,
                path.display()
            )));
        }
        state.store.restore(&name, &path)?;
        Ok(json!(true))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(unix_to_iso(0), "1970-01-01T00:00:00");
        assert_eq!(unix_to_iso(1_795_943_043), "2026-11-29T09:04:03");
        assert_eq!(unix_to_iso(951_782_400), "2000-02-29T00:00:00");
    }
}
