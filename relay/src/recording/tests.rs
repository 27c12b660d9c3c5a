//! The recorder and its writer against a real directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::*;
use format::Recording;

fn session(sid: &str) -> SessionRecord {
    SessionRecord {
        jti: "secret-jti".into(),
        ..SessionRecord::for_tests(sid)
    }
}

fn recordings(dir: &Path, max_bytes: u64, total_bytes: u64) -> Arc<Recordings> {
    let config = RecordingConfig {
        dir: dir.to_owned(),
        max_bytes,
        total_bytes,
        scopes: vec![Scope::View],
    };
    Arc::new(Recordings::open(config, "n1").unwrap())
}

/// Names in the directory, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn read(dir: &Path, sid: &str) -> Recording {
    let name = files(dir)
        .into_iter()
        .find(|n| n.ends_with(&format!("-{sid}{}", dir::EXTENSION)))
        .unwrap_or_else(|| panic!("no recording of {sid} in {:?}", files(dir)));
    let path = dir.join(name);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{path:?}");
    format::parse(Bytes::from(std::fs::read(path).unwrap())).unwrap()
}

/// A pooled buffer holding `bytes`, as the raw pump has it after a read.
fn pooled(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = bufpool::take(4096);
    buf[..bytes.len()].copy_from_slice(bytes);
    (buf, bytes.len())
}

/// Polls `check` until it holds (bounded).
async fn eventually(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn finish(tracker: TaskTracker) {
    tracker.close();
    tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .expect("writers finish");
}

#[tokio::test]
async fn a_recording_holds_what_the_session_handed_it_with_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let recs = recordings(dir.path(), 1 << 20, 4 << 20);
    assert!(recs.wants(false, Scope::View) && recs.wants(true, Scope::Control));
    assert!(!recs.wants(false, Scope::Control));
    let tracker = TaskTracker::new();
    let mut rec = recs.start(&session("s1"), &tracker);
    rec.record_slice(b"RFB 003.008\n");
    let (buf, n) = pooled(&[7; 1000]);
    rec.record_pooled(buf, n);
    tokio::time::sleep(Duration::from_millis(120)).await;
    rec.record_bytes(Bytes::from_static(b"after a pause"));
    assert!(rec.is_recording());
    drop(rec);
    finish(tracker).await;

    assert_eq!(files(dir.path()).len(), 1, "no part file is left");
    let read = read(dir.path(), "s1");
    let data: Vec<&[u8]> = read.records.iter().map(|r| &r.data[..]).collect();
    assert_eq!(data, [&b"RFB 003.008\n"[..], &[7; 1000], b"after a pause"]);
    let ms: Vec<u32> = read.records.iter().map(|r| r.ms).collect();
    assert!(ms[0] <= ms[1] && ms[2] - ms[1] >= 120, "{ms:?}");
    assert_eq!(read.ending, Some(Ending::Complete));
    let meta = &read.meta;
    assert_eq!(
        (
            meta.session_id.as_str(),
            meta.container_id.as_str(),
            meta.user_id.as_str()
        ),
        ("s1", "c1", "u1")
    );
    assert_eq!(
        (meta.scope.as_str(), meta.node_id.as_str()),
        ("control", "n1")
    );
    // The token id stays out of the file.
    let raw = std::fs::read(dir.path().join(&files(dir.path())[0])).unwrap();
    assert!(!raw.windows(10).any(|w| w == b"secret-jti"));
}

#[tokio::test]
async fn the_maximum_stops_the_recording_not_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let max = 8192;
    let recs = recordings(dir.path(), max, 1 << 20);
    let tracker = TaskTracker::new();
    let mut rec = recs.start(&session("big"), &tracker);
    for i in 0..20u8 {
        // Every call returns at once, recorded or not.
        let (buf, n) = pooled(&[i; 1000]);
        rec.record_pooled(buf, n);
    }
    assert!(!rec.is_recording());
    drop(rec);
    finish(tracker).await;
    let read = read(dir.path(), "big");
    assert_eq!(read.ending, Some(Ending::Truncated(Truncation::MaxBytes)));
    let kept = read.records.len();
    assert!((5..8).contains(&kept), "{kept} records");
    for (i, r) in read.records.iter().enumerate() {
        assert_eq!(
            &r.data[..],
            &[i as u8; 1000],
            "records are a prefix, in order"
        );
    }
    let size = std::fs::metadata(dir.path().join(&files(dir.path())[0]))
        .unwrap()
        .len();
    assert!(size <= max, "{size} > {max}");
}

#[test]
fn a_recorder_whose_writer_falls_behind_gives_up_the_recording() {
    // No writer drains this queue: a disk that stopped.
    let (mut rec, queue) = Recorder::new(100, 1 << 30);
    for _ in 0..QUEUE {
        rec.record_bytes(Bytes::from_static(b"x"));
        assert!(rec.is_recording());
    }
    rec.record_bytes(Bytes::from_static(b"one too many"));
    assert!(!rec.is_recording(), "a full queue stops the recording");
    assert_eq!(
        queue.end.get().map(|e| e.0),
        Some(Ending::Truncated(Truncation::Behind))
    );
    // Later bytes are not queued behind a gap.
    rec.record_bytes(Bytes::from_static(b"later"));
    drop(rec);
    assert_eq!(queue.chunks.len(), QUEUE);
    // The first reason stays, not the drop's "complete".
    assert_eq!(
        queue.end.get().map(|e| e.0),
        Some(Ending::Truncated(Truncation::Behind))
    );
}

#[tokio::test]
async fn the_total_cap_deletes_the_oldest_and_refuses_what_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let max = 8192;
    let recs = recordings(dir.path(), max, 2 * max);
    let tracker = TaskTracker::new();
    for sid in ["a", "b", "c"] {
        let mut rec = recs.start(&session(sid), &tracker);
        rec.record_bytes(Bytes::from(vec![1; 5000]));
        drop(rec);
        // One at a time, each finished before the next starts.
        let name = sid.to_owned();
        let d = dir.path().to_owned();
        eventually(move || {
            files(&d)
                .iter()
                .any(|f| f.ends_with(&format!("-{name}.vncrec")))
        })
        .await;
    }
    // c's start: a + b (≈ 10 KB) + c's reservation (8 KiB) > 16 KiB, so a went.
    let left = files(dir.path());
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left[0].ends_with("-b.vncrec") && left[1].ends_with("-c.vncrec"),
        "{left:?}"
    );

    // Two recordings being written take the whole cap: a third is not made.
    let _one = recs.start(&session("d"), &tracker);
    let _two = recs.start(&session("e"), &tracker);
    let d = dir.path().to_owned();
    eventually(move || files(&d).iter().filter(|f| f.ends_with(".part")).count() == 2).await;
    let mut three = recs.start(&session("f"), &tracker);
    let d = dir.path().to_owned();
    eventually(move || {
        three.record_bytes(Bytes::from_static(b"x"));
        !three.is_recording() && files(&d).iter().all(|f| !f.contains("-f."))
    })
    .await;
    drop((_one, _two));
    finish(tracker).await;
    assert!(files(dir.path()).iter().all(|f| f.ends_with(".vncrec")));
}
