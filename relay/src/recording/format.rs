//! The recording file format (docs/recording.md), without I/O: the header the writer
//! starts a file with, the record headers it puts before each chunk of bytes the
//! browser received, the end record, and the parser `vnc-relay replay` and the tests
//! read files with.
//!
//! ```text
//! VNC-RELAY-RECORDING 1\n                       magic line (format version 1)
//! {"session_id":"…","container_id":"…",…}\n     metadata, one line of JSON
//! [u32 ms][u32 len][len bytes]  …               data records (big-endian)
//! [u32 ms][u32 0x8000_0000 | len][len bytes]    end record: JSON {"end":…}
//! ```

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// First line of every recording; the number is the format version.
pub const MAGIC: &[u8] = b"VNC-RELAY-RECORDING 1\n";
/// Longest metadata line a reader accepts (the relay writes a few hundred bytes).
pub const MAX_METADATA: usize = 64 * 1024;
/// Bytes before each record's payload: milliseconds and length, both u32 big-endian.
pub const RECORD_HEADER: usize = 8;
/// Set in a record's length field: the record is the end record (JSON), not data.
const END_FLAG: u32 = 0x8000_0000;
/// Largest payload of one record (the length field's other 31 bits).
pub const MAX_RECORD: usize = (END_FLAG - 1) as usize;
/// Room the writer keeps for the end record below the per-recording maximum.
pub const END_RESERVE: u64 = 128;

/// Who and what a recording is of: the metadata line. Never the token or the VNC
/// password. The framebuffer size is in the recorded ServerInit, not here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    pub session_id: String,
    pub container_id: String,
    /// The token's `sub`.
    pub user_id: String,
    pub tenant: String,
    /// `control` or `view`.
    pub scope: String,
    /// `websocket` or `socketio`.
    pub transport: String,
    /// The relay node that recorded it.
    pub node_id: String,
    /// The browser's address (through a trusted load balancer: the one it named).
    pub client_addr: String,
    /// When the recording started (its millisecond 0), Unix milliseconds and RFC 3339.
    pub started_at_ms: u64,
    pub started_at: String,
}

/// Why a recording stopped before its session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truncation {
    /// The file reached the per-recording maximum (`record_max_bytes`).
    MaxBytes,
    /// The disk did not keep up with the session: the recorder dropped the recording
    /// rather than slow the session.
    Behind,
}

/// How a recording ended, as its end record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Everything the browser received until the session ended is in the file.
    Complete,
    /// Only what the browser received until then is in the file.
    Truncated(Truncation),
}

impl Ending {
    /// `complete`, `truncated_max_bytes` or `truncated_behind` (also the label of
    /// `vnc_relay_recordings_total{result}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::Truncated(Truncation::MaxBytes) => "truncated_max_bytes",
            Ending::Truncated(Truncation::Behind) => "truncated_behind",
        }
    }
}

/// The end record's JSON: `{"end":"complete"}` or `{"end":"truncated","reason":…}`.
#[derive(Serialize, Deserialize)]
struct EndJson {
    end: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<Ending> for EndJson {
    fn from(e: Ending) -> EndJson {
        let (end, reason) = match e {
            Ending::Complete => ("complete", None),
            Ending::Truncated(Truncation::MaxBytes) => ("truncated", Some("max_bytes")),
            Ending::Truncated(Truncation::Behind) => ("truncated", Some("behind")),
        };
        EndJson {
            end: end.to_owned(),
            reason: reason.map(str::to_owned),
        }
    }
}

/// The magic line and the metadata line.
pub fn header(meta: &Metadata) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    // A struct of strings and numbers always serializes, on one line.
    out.extend_from_slice(serde_json::to_string(meta).unwrap_or_default().as_bytes());
    out.push(b'\n');
    out
}

/// The header of a data record of `len` bytes (at most [`MAX_RECORD`]) received
/// `ms` milliseconds after the recording started.
pub fn record_header(ms: u32, len: usize) -> [u8; RECORD_HEADER] {
    debug_assert!(len <= MAX_RECORD);
    let mut out = [0; RECORD_HEADER];
    out[..4].copy_from_slice(&ms.to_be_bytes());
    out[4..].copy_from_slice(&(len.min(MAX_RECORD) as u32).to_be_bytes());
    out
}

/// The end record (shorter than [`END_RESERVE`]).
pub fn end_record(ms: u32, ending: Ending) -> Vec<u8> {
    let json = serde_json::to_vec(&EndJson::from(ending)).unwrap_or_default();
    let mut out = Vec::with_capacity(RECORD_HEADER + json.len());
    out.extend_from_slice(&ms.to_be_bytes());
    out.extend_from_slice(&(END_FLAG | json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// One chunk of bytes the browser received, `ms` after the recording started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ms: u32,
    pub data: Bytes,
}

/// A whole recording, read.
#[derive(Clone, Debug)]
pub struct Recording {
    pub meta: Metadata,
    pub records: Vec<Record>,
    /// `None`: the file has no end record (the relay stopped, or failed to write,
    /// before closing it); every record in it is whole.
    pub ending: Option<Ending>,
}

impl Recording {
    /// Milliseconds from the start to the last record.
    pub fn duration_ms(&self) -> u32 {
        self.records.last().map_or(0, |r| r.ms)
    }

    /// Bytes of recorded data.
    pub fn data_len(&self) -> usize {
        self.records.iter().map(|r| r.data.len()).sum()
    }
}

/// Why a file can't be read as a recording.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "not a vnc-relay recording: it does not start with {:?}",
        String::from_utf8_lossy(MAGIC)
    )]
    NotARecording,
    #[error("the metadata line has no end within {MAX_METADATA} bytes")]
    MetadataUnterminated,
    #[error("the metadata line is not valid: {0}")]
    Metadata(serde_json::Error),
    #[error(
        "the file is cut short: record {index} at byte {offset} needs {missing} more byte(s) \
         than the file has (the first {index} records are whole)"
    )]
    Truncated {
        index: usize,
        offset: usize,
        missing: usize,
    },
    #[error("the end record at byte {offset} is not valid: {why}")]
    BadEnd { offset: usize, why: String },
    #[error("{extra} byte(s) after the end record at byte {offset}")]
    AfterEnd { offset: usize, extra: usize },
}

/// Reads a whole recording. Record payloads are slices of `file` (no copies).
pub fn parse(file: Bytes) -> Result<Recording, FormatError> {
    let rest = file.strip_prefix(MAGIC).ok_or(FormatError::NotARecording)?;
    let line_end = rest
        .iter()
        .take(MAX_METADATA)
        .position(|&b| b == b'\n')
        .ok_or(FormatError::MetadataUnterminated)?;
    let meta = serde_json::from_slice(&rest[..line_end]).map_err(FormatError::Metadata)?;
    let mut at = MAGIC.len() + line_end + 1;
    let mut records = Vec::new();
    let mut ending = None;
    while at < file.len() {
        let index = records.len();
        let cut = |needed: usize| FormatError::Truncated {
            index,
            offset: at,
            missing: needed - (file.len() - at),
        };
        if file.len() - at < RECORD_HEADER {
            return Err(cut(RECORD_HEADER));
        }
        let field = |i: usize| u32::from_be_bytes([file[i], file[i + 1], file[i + 2], file[i + 3]]);
        let (ms, len) = (field(at), field(at + 4));
        let payload_len = (len & !END_FLAG) as usize;
        if file.len() - at < RECORD_HEADER + payload_len {
            return Err(cut(RECORD_HEADER + payload_len));
        }
        let payload = at + RECORD_HEADER..at + RECORD_HEADER + payload_len;
        if len & END_FLAG == 0 {
            records.push(Record {
                ms,
                data: file.slice(payload.clone()),
            });
            at = payload.end;
            continue;
        }
        ending = Some(
            parse_end(&file[payload.clone()])
                .map_err(|why| FormatError::BadEnd { offset: at, why })?,
        );
        if payload.end != file.len() {
            return Err(FormatError::AfterEnd {
                offset: at,
                extra: file.len() - payload.end,
            });
        }
        break;
    }
    Ok(Recording {
        meta,
        records,
        ending,
    })
}

fn parse_end(json: &[u8]) -> Result<Ending, String> {
    let end: EndJson = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    match (end.end.as_str(), end.reason.as_deref()) {
        ("complete", _) => Ok(Ending::Complete),
        ("truncated", Some("max_bytes")) => Ok(Ending::Truncated(Truncation::MaxBytes)),
        // A reason this reader doesn't know still means the file stops early.
        ("truncated", _) => Ok(Ending::Truncated(Truncation::Behind)),
        (other, _) => Err(format!("unknown end {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        Metadata {
            session_id: "s1".into(),
            container_id: "c1".into(),
            user_id: "u1".into(),
            tenant: "t1".into(),
            scope: "control".into(),
            transport: "websocket".into(),
            node_id: "n1".into(),
            client_addr: "192.0.2.7".into(),
            started_at_ms: 1_700_000_000_000,
            started_at: "2023-11-14T22:13:20.000Z".into(),
        }
    }

    fn file(records: &[(u32, &[u8])], ending: Option<Ending>) -> Vec<u8> {
        let mut out = header(&meta());
        for (ms, data) in records {
            out.extend_from_slice(&record_header(*ms, data.len()));
            out.extend_from_slice(data);
        }
        if let Some(e) = ending {
            out.extend_from_slice(&end_record(999, e));
        }
        out
    }

    #[test]
    fn what_is_written_reads_back_with_its_timestamps() {
        let records: [(u32, &[u8]); 3] = [(0, b"RFB 003.008\n"), (5, &[1, 1]), (312, &[0; 300])];
        for ending in [
            Ending::Complete,
            Ending::Truncated(Truncation::MaxBytes),
            Ending::Truncated(Truncation::Behind),
        ] {
            let read = parse(Bytes::from(file(&records, Some(ending)))).unwrap();
            assert_eq!(read.meta, meta());
            assert_eq!(read.ending, Some(ending));
            let got: Vec<(u32, &[u8])> = read.records.iter().map(|r| (r.ms, &r.data[..])).collect();
            assert_eq!(got, records);
            assert_eq!((read.duration_ms(), read.data_len()), (312, 314));
        }
        // No end record: every record whole, ending unknown.
        let read = parse(Bytes::from(file(&records, None))).unwrap();
        assert_eq!((read.records.len(), read.ending), (3, None));
        // An empty session.
        let read = parse(Bytes::from(file(&[], Some(Ending::Complete)))).unwrap();
        assert!(read.records.is_empty());
    }

    #[test]
    fn the_end_record_fits_its_reserve() {
        for e in [Ending::Complete, Ending::Truncated(Truncation::Behind)] {
            assert!((end_record(u32::MAX, e).len() as u64) < END_RESERVE);
        }
    }

    #[test]
    fn a_file_cut_inside_a_record_is_a_clear_error() {
        let whole = file(&[(0, b"hello"), (10, b"world!")], Some(Ending::Complete));
        let second = header(&meta()).len() + RECORD_HEADER + 5;
        // Cut inside the second record's header, then inside its payload.
        for (cut, missing) in [(second + 3, 5), (second + RECORD_HEADER + 2, 4)] {
            let err = parse(Bytes::copy_from_slice(&whole[..cut])).unwrap_err();
            match err {
                FormatError::Truncated {
                    index,
                    offset,
                    missing: m,
                } => assert_eq!((index, offset, m), (1, second, missing)),
                other => panic!("{other}"),
            }
            let text = parse(Bytes::copy_from_slice(&whole[..cut]))
                .unwrap_err()
                .to_string();
            assert!(
                text.contains("cut short") && text.contains("record 1"),
                "{text}"
            );
        }
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        let not = parse(Bytes::from_static(b"RFB 003.008\n")).unwrap_err();
        assert!(matches!(not, FormatError::NotARecording), "{not}");
        let mut endless = MAGIC.to_vec();
        endless.extend(std::iter::repeat_n(b'x', MAX_METADATA + 1));
        assert!(matches!(
            parse(Bytes::from(endless)),
            Err(FormatError::MetadataUnterminated)
        ));
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(b"{not json\n");
        assert!(matches!(
            parse(Bytes::from(bad)),
            Err(FormatError::Metadata(_))
        ));
        let mut after = file(&[(0, b"x")], Some(Ending::Complete));
        after.extend_from_slice(b"junk");
        assert!(matches!(
            parse(Bytes::from(after)),
            Err(FormatError::AfterEnd { extra: 4, .. })
        ));
    }

    mod props {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_bytes_after_the_magic_never_panic(tail in vec(any::<u8>(), 0..512)) {
                let mut f = MAGIC.to_vec();
                f.extend(tail);
                let _ = parse(Bytes::from(f));
            }

            #[test]
            fn a_cut_file_reads_as_whole_records_or_says_it_is_cut(
                records in vec((any::<u16>(), vec(any::<u8>(), 1..64)), 0..8),
                cut in any::<prop::sample::Index>(),
            ) {
                let records: Vec<(u32, &[u8])> =
                    records.iter().map(|(ms, d)| (u32::from(*ms), &d[..])).collect();
                let whole = file(&records, Some(Ending::Complete));
                let at = cut.index(whole.len() + 1);
                match parse(Bytes::copy_from_slice(&whole[..at])) {
                    Ok(read) => {
                        let got: Vec<(u32, &[u8])> =
                            read.records.iter().map(|r| (r.ms, &r.data[..])).collect();
                        prop_assert_eq!(&got[..], &records[..got.len()]);
                        prop_assert_eq!(read.ending.is_some(), at == whole.len());
                    }
                    Err(FormatError::Truncated { .. }) => {
                        prop_assert!(at > header(&meta()).len());
                    }
                    Err(FormatError::NotARecording | FormatError::MetadataUnterminated) => {
                        prop_assert!(at < header(&meta()).len());
                    }
                    Err(other) => prop_assert!(false, "{other}"),
                }
            }
        }
    }

    #[test]
    fn metadata_from_newer_writers_is_read() {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(br#"{"session_id":"s9","width":1280}"#);
        f.push(b'\n');
        let read = parse(Bytes::from(f)).unwrap();
        assert_eq!(read.meta.session_id, "s9");
    }
}
