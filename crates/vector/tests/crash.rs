//! Crash recovery: a child process upserts batches in a loop and reports
//! each acknowledged batch; the parent kills it with SIGKILL at a random
//! moment, reopens the collection and checks that every acknowledged point
//! is there with its exact payload, that no batch is half-applied, and that
//! search still works. Twenty cycles over the same directory, so recovery
//! also runs on top of earlier recoveries and checkpoints.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use neocloud_vector::{
    Collection, CollectionConfig, Distance, PointId, PointStruct, SearchRequest,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

const CHILD_ENV: &str = "NEOCLOUD_VECTOR_CRASH_CHILD";
const BATCH: u64 = 10;
const DIM: usize = 8;

fn vector_of(id: u64) -> Vec<f32> {
    (0..DIM)
        .map(|d| ((id * 31 + d as u64) % 97) as f32 / 97.0 + 0.01)
        .collect()
}

fn batch(first_batch: u64) -> Vec<PointStruct> {
    (0..BATCH)
        .map(|i| {
            let id = first_batch * BATCH + i;
            PointStruct {
                id: PointId::Num(id),
                vector: vector_of(id),
                payload: json!({"batch": first_batch, "id": id, "text": format!("point {id}")})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// The child: upserts batch after batch from where the last run left off,
/// printing `ack N` once batch N is acknowledged. Runs until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // only runs as the child of `sigkill_at_random_moments`
    };
    let dir = Path::new(&dir);
    let c = if dir.join("config.json").exists() {
        Collection::open(dir).unwrap()
    } else {
        Collection::create(
            dir,
            CollectionConfig {
                dim: DIM,
                distance: Distance::Cosine,
                hnsw: Default::default(),
                embed: None,
                quantization: None,
            },
        )
        .unwrap()
    };
    let mut next = c.len() as u64 / BATCH;
    loop {
        c.upsert(batch(next)).unwrap();
        println!("ack {next}");
        next += 1;
        if next.is_multiple_of(37) {
            c.checkpoint().unwrap();
        }
    }
}

#[test]
fn sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut acked_total = 0u64;
    for cycle in 0..20 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let kill_after = rng.random_range(1..40u64);
        let mut acked = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("ack ") {
                acked.push(n.trim().parse::<u64>().unwrap());
                if acked.len() as u64 >= kill_after {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the child stalled");
        }
        // Mid-write by now: the child does not wait between batches.
        child.kill().unwrap();
        child.wait().unwrap();
        acked_total += acked.len() as u64;

        let c = Collection::open(dir.path()).unwrap();
        let (points, _) = c.scroll(None, None, usize::MAX);
        let mut by_batch: BTreeMap<u64, usize> = BTreeMap::new();
        for p in &points {
            let PointId::Num(id) = p.id else { panic!() };
            assert_eq!(p.vector.len(), DIM);
            assert_eq!(p.payload["id"], json!(id), "cycle {cycle}");
            assert_eq!(p.payload["text"], json!(format!("point {id}")));
            *by_batch.entry(id / BATCH).or_default() += 1;
        }
        for (b, n) in &by_batch {
            assert_eq!(*n as u64, BATCH, "cycle {cycle}: batch {b} half-applied");
        }
        for b in &acked {
            assert!(
                by_batch.contains_key(b),
                "cycle {cycle}: acknowledged batch {b} lost"
            );
        }
        // Batches are consecutive: no gap before the last one kept.
        let kept: Vec<u64> = by_batch.keys().copied().collect();
        assert_eq!(kept, (0..kept.len() as u64).collect::<Vec<_>>());
        let hits = c
            .search(&SearchRequest {
                vector: vector_of(3),
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        // Point 3 (or one with the same vector) scores 1: the index works.
        assert!(hits[0].score > 0.9999, "cycle {cycle}: {:?}", hits[0]);
    }
    assert!(acked_total >= 20);
}
