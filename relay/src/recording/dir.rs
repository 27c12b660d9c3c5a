//! The recording directory: file names that sort oldest first, and the total cap.
//! Blocking file-system calls: run them off the async workers.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// Suffix of a finished recording.
pub const EXTENSION: &str = ".vncrec";
/// Added to [`EXTENSION`] while a recording is written; renamed away when it ends.
pub const PART: &str = ".part";

/// `20260315T101502.123Z-{sid}.vncrec`: the UTC start time first, so names sort
/// oldest first.
pub fn file_name(started_at_ms: u64, sid: &str) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(started_at_ms);
    let stamp: String = humantime::format_rfc3339_millis(at)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{stamp}-{sid}{EXTENSION}")
}

/// The name of `name` while it is written.
pub fn part_name(name: &str) -> String {
    format!("{name}{PART}")
}

/// The directory's budget.
#[derive(Clone, Copy, Debug)]
pub struct Cap {
    /// Most bytes all recordings together may take.
    pub total: u64,
    /// Most bytes one recording takes; reserved in full for each being written.
    pub per_recording: u64,
}

/// What [`make_room`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Recordings deleted, oldest first.
    pub deleted: Vec<String>,
    /// Whether every recording being written fits now (at its maximum).
    pub fits: bool,
}

/// Deletes recordings oldest first until the files plus a full reservation for each
/// recording being written (`writing`: their [`PART`] names, the one about to start
/// included) fit in the cap. Files being written are never deleted; parts nobody
/// writes (left by a relay that died) are, like finished ones. Other files in the
/// directory are neither counted nor touched.
pub fn make_room(dir: &Path, cap: Cap, writing: &HashSet<String>) -> io::Result<Room> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let ours = name.ends_with(EXTENSION) || name.ends_with(&part_name(EXTENSION));
        if !ours || writing.contains(&name) {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_file() {
            files.push((name, meta.len()));
        }
    }
    files.sort();
    let reserved = cap.per_recording.saturating_mul(writing.len() as u64);
    let mut used = reserved.saturating_add(files.iter().map(|(_, size)| size).sum());
    let mut room = Room::default();
    for (name, size) in files {
        if used <= cap.total {
            break;
        }
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => {}
            // Someone else deleted it first: it is gone either way.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        used -= size;
        room.deleted.push(name);
    }
    room.fits = used <= cap.total;
    Ok(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, name: &str, size: usize) {
        std::fs::write(dir.join(name), vec![0u8; size]).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn names_sort_by_start_time() {
        let a = file_name(1_700_000_000_000, "zz");
        let b = file_name(1_700_000_000_001, "aa");
        let c = file_name(1_800_000_000_000, "00");
        assert_eq!(a, "20231114T221320.000Z-zz.vncrec");
        assert!(a < b && b < c);
    }

    #[test]
    fn the_oldest_recordings_go_first_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = file_name(1_000, "a");
        let mid = file_name(2_000, "b");
        let new = file_name(3_000, "c");
        let live = part_name(&file_name(500, "live"));
        let stale = part_name(&file_name(2_500, "dead-relay"));
        put(d, &old, 100);
        put(d, &mid, 100);
        put(d, &stale, 100);
        put(d, &new, 100);
        put(d, &live, 100);
        put(d, "notes.txt", 10_000);
        let starting = part_name(&file_name(4_000, "d"));
        let writing: HashSet<String> = [live.clone(), starting].into();
        let cap = Cap {
            total: 600,
            per_recording: 200,
        };
        // 400 finished or stale + 2 × 200 reserved = 800: two of the oldest go.
        let room = make_room(d, cap, &writing).unwrap();
        assert_eq!(room.deleted, [old.clone(), mid.clone()]);
        assert!(room.fits);
        assert_eq!(
            names(d),
            [live.clone(), stale.clone(), new.clone(), "notes.txt".into()]
        );
        // Already within: nothing goes.
        assert_eq!(
            make_room(d, cap, &writing).unwrap().deleted,
            Vec::<String>::new()
        );
        // More writers than the cap holds: everything deletable goes, still no room.
        let crowd: HashSet<String> = (0..4).map(|i| format!("w{i}{EXTENSION}{PART}")).collect();
        let room = make_room(d, cap, &crowd).unwrap();
        assert!(!room.fits);
        assert_eq!(room.deleted, [live, stale, new]);
        assert_eq!(names(d), ["notes.txt"]);
    }
}
