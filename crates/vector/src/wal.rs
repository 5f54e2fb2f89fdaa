//! The write-ahead log: every acknowledged write is here, fsynced, before
//! the caller answers.
//!
//! A record is `[body length: u32 LE][crc32 of seq and body: u32 LE]
//! [seq: u64 LE][body]`. Sequence numbers increase by one per record and
//! survive [`Wal::reset`], so a snapshot can say "everything through seq N"
//! and recovery replays only what follows.
//!
//! **Group commit.** [`Wal::append`] only buffers (callers hold their own
//! lock to give records the order they apply them in); [`Wal::sync`] makes a
//! record durable. The first waiter whose record is not yet durable becomes
//! the leader: it writes everything buffered so far and fsyncs once, for
//! every writer whose record was in that buffer, while new records gather
//! for the next round.
//!
//! **Recovery.** [`Wal::open`] reads records until the first one that is
//! torn (shorter than its header says) or fails its checksum, and cuts the
//! file there: a crash can only lose a record that was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::VectorError;

const HEADER: usize = 16;

/// A record read back: its seq and body.
pub type Record = (u64, Vec<u8>);
/// A record larger than this is treated as corruption (no single write is
/// anywhere near it).
const MAX_BODY: usize = 1 << 30;

struct State {
    /// Encoded records not yet written.
    buf: Vec<u8>,
    /// The seq the next append gets.
    next_seq: u64,
    /// Every record with seq < `durable` is on disk and fsynced.
    durable: u64,
    /// A leader is writing and syncing.
    syncing: bool,
    /// Set when a write or fsync failed: what reached the disk is unknown,
    /// so the log refuses further writes until reopened.
    failed: Option<String>,
}

/// An append-only, checksummed, group-committed log file.
pub struct Wal {
    path: PathBuf,
    file: Mutex<File>,
    state: Mutex<State>,
    synced: Condvar,
}

impl Wal {
    /// Opens (or creates) the log at `path`, returning it and the intact
    /// records as (seq, body), oldest first. A torn or corrupt tail is cut
    /// off. `first_seq` numbers the first record of an empty log.
    pub fn open(path: &Path, first_seq: u64) -> Result<(Wal, Vec<Record>), VectorError> {
        let io = |err| VectorError::Io {
            path: path.to_path_buf(),
            err,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (records, good_len) = decode_all(&bytes);
        if good_len < bytes.len() {
            file.set_len(good_len as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let next_seq = records.last().map_or(first_seq, |(s, _)| s + 1);
        let wal = Wal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            state: Mutex::new(State {
                buf: Vec::new(),
                next_seq,
                durable: next_seq,
                syncing: false,
                failed: None,
            }),
            synced: Condvar::new(),
        };
        Ok((wal, records))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buffers a record; returns its seq. Not durable until [`Wal::sync`].
    pub fn append(&self, body: &[u8]) -> Result<u64, VectorError> {
        if body.len() > MAX_BODY {
            return Err(VectorError::bad(format!(
                "a write of {} bytes is over the {} byte limit",
                body.len(),
                MAX_BODY
            )));
        }
        let mut s = self.state();
        if let Some(e) = &s.failed {
            return Err(self.failed_error(e));
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        encode(&mut s.buf, seq, body);
        Ok(seq)
    }

    /// Returns once record `seq` (and all before it) is fsynced.
    pub fn sync(&self, seq: u64) -> Result<(), VectorError> {
        let mut s = self.state();
        loop {
            if s.durable > seq {
                return Ok(());
            }
            if let Some(e) = &s.failed {
                return Err(self.failed_error(e));
            }
            if s.syncing {
                s = self.synced.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead a round: write and fsync everything buffered so far.
            s.syncing = true;
            let data = std::mem::take(&mut s.buf);
            let upto = s.next_seq;
            drop(s);
            let result = {
                let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
                f.write_all(&data).and_then(|()| f.sync_data())
            };
            s = self.state();
            s.syncing = false;
            match result {
                Ok(()) => s.durable = upto,
                Err(e) => s.failed = Some(e.to_string()),
            }
            self.synced.notify_all();
        }
    }

    /// Appends and syncs one record.
    pub fn write(&self, body: &[u8]) -> Result<u64, VectorError> {
        let seq = self.append(body)?;
        self.sync(seq)?;
        Ok(seq)
    }

    /// The seq the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.state().next_seq
    }

    /// Empties the log once a snapshot holds everything in it. The caller
    /// must make sure no record is appended meanwhile and that every record
    /// so far is durable in the snapshot. Numbering continues.
    pub fn reset(&self) -> Result<(), VectorError> {
        let mut s = self.state();
        if let Some(e) = &s.failed {
            return Err(self.failed_error(e));
        }
        s.buf.clear();
        s.durable = s.next_seq;
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // The file is not in append mode: move the cursor back too, or the
        // next write would leave a hole of zeros before it.
        let r = f
            .set_len(0)
            .and_then(|()| f.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| f.sync_all());
        if let Err(e) = r {
            s.failed = Some(e.to_string());
            return Err(VectorError::Io {
                path: self.path.clone(),
                err: e,
            });
        }
        Ok(())
    }

    fn failed_error(&self, e: &str) -> VectorError {
        VectorError::Io {
            path: self.path.clone(),
            err: std::io::Error::other(format!("the log failed earlier ({e}); reopen it")),
        }
    }
}

fn checksum(seq: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(body);
    h.finalize()
}

fn encode(out: &mut Vec<u8>, seq: u64, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(seq, body).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
}

/// The intact records of `bytes` and the length they span.
fn decode_all(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    let mut expect_seq = None;
    while bytes.len() - at >= HEADER {
        let word =
            |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap_or([0; 4]));
        let len = word(0) as usize;
        let crc = word(4);
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap_or([0; 8]));
        if len > MAX_BODY || bytes.len() - at - HEADER < len {
            break;
        }
        let body = &bytes[at + HEADER..at + HEADER + len];
        if checksum(seq, body) != crc || expect_seq.is_some_and(|e| e != seq) {
            break;
        }
        records.push((seq, body.to_vec()));
        expect_seq = Some(seq + 1);
        at += HEADER + len;
    }
    (records, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn records_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (wal, old) = Wal::open(&path, 1).unwrap();
        assert!(old.is_empty());
        assert_eq!(wal.write(b"one").unwrap(), 1);
        assert_eq!(wal.write(b"").unwrap(), 2);
        assert_eq!(wal.write(b"three").unwrap(), 3);
        drop(wal);
        let (wal, got) = Wal::open(&path, 1).unwrap();
        assert_eq!(
            got,
            vec![(1, b"one".to_vec()), (2, vec![]), (3, b"three".to_vec())]
        );
        assert_eq!(wal.next_seq(), 4);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (wal, _) = Wal::open(&path, 1).unwrap();
        for i in 0..5u8 {
            wal.write(&[i; 10]).unwrap();
        }
        drop(wal);
        let full = std::fs::metadata(&path).unwrap().len();
        // Torn: the last record lost 3 bytes.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        drop(f);
        let (wal, got) = Wal::open(&path, 1).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * 26);
        // Appending after recovery continues the numbering cleanly.
        assert_eq!(wal.write(b"new").unwrap(), 5);
        drop(wal);
        // Corrupt: flip a body byte of record 2.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[26 + HEADER] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, got) = Wal::open(&path, 1).unwrap();
        assert_eq!(
            got.len(),
            1,
            "everything from the corrupt record on is dropped"
        );
    }

    #[test]
    fn concurrent_writers_share_fsyncs_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (wal, _) = Wal::open(&path, 1).unwrap();
        let wal = Arc::new(wal);
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| {
                            let body = format!("{t}:{i}");
                            (wal.write(body.as_bytes()).unwrap(), body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut acked: Vec<(u64, String)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        acked.sort();
        drop(wal);
        let (_, got) = Wal::open(&path, 1).unwrap();
        let got: Vec<(u64, String)> = got
            .into_iter()
            .map(|(s, b)| (s, String::from_utf8(b).unwrap()))
            .collect();
        assert_eq!(got, acked);
        assert_eq!(got.len(), 400);
    }

    #[test]
    fn reset_empties_the_log_but_keeps_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (wal, _) = Wal::open(&path, 10).unwrap();
        assert_eq!(wal.write(b"a").unwrap(), 10);
        wal.reset().unwrap();
        assert_eq!(wal.write(b"b").unwrap(), 11);
        drop(wal);
        let (_, got) = Wal::open(&path, 1).unwrap();
        assert_eq!(got, vec![(11, b"b".to_vec())]);
    }
}
