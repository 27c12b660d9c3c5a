//! The bit of tar the file routes need, without I/O: the header of one regular file
//! (with a PAX record when its name is longer than ustar's 100 bytes) and the end of
//! an archive, to stream an upload into Docker's archive API; and a reader that takes
//! an archive from that API in chunks as they come and yields each entry's header
//! and its data in slices of those same chunks, so neither way holds a file in
//! memory.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// A tar block.
pub const BLOCK: usize = 512;

/// Longest PAX record body the reader takes (`path=…`, `size=…`): names are bounded
/// far below it, and an archive is ours or the engine's.
const MAX_PAX: u64 = 64 * 1024;

/// Bytes of zero padding after `size` bytes of data, to the next block.
pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// The header block(s) of a regular file `name` of `size` bytes, owned by `uid:gid`,
/// mode 0644, modified at `mtime` (Unix seconds). A name over 100 bytes goes into a
/// PAX record before the ustar header.
pub fn file_header(name: &str, size: u64, uid: u64, gid: u64, mtime: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * BLOCK);
    if name.len() > 100 {
        let record = pax_record("path", name);
        out.extend(ustar_block(
            "PaxHeader",
            record.len() as u64,
            0,
            0,
            mtime,
            b'x',
        ));
        out.extend_from_slice(record.as_bytes());
        out.resize(out.len() + padding(record.len() as u64), 0);
    }
    let short: String = truncate_to(name, 100);
    out.extend(ustar_block(&short, size, uid, gid, mtime, b'0'));
    out
}

/// The end of an archive: two zero blocks.
pub fn end_of_archive() -> [u8; 2 * BLOCK] {
    [0; 2 * BLOCK]
}

/// `name` cut to at most `max` bytes on a character boundary.
fn truncate_to(name: &str, max: usize) -> String {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// A PAX record `"{len} {key}={value}\n"`, whose length counts itself.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}")
}

fn ustar_block(name: &str, size: u64, uid: u64, gid: u64, mtime: u64, kind: u8) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut b[100..108], 0o644);
    octal(&mut b[108..116], uid);
    octal(&mut b[116..124], gid);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = kind;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    octal(&mut b[148..155], u64::from(sum));
    b
}

/// `value` in octal, zero-padded, NUL-terminated, in `field`; base-256 when it does
/// not fit (sizes of 8 GiB and more).
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() <= digits {
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
        field[0] |= 0x80;
    }
}

fn parse_number(field: &[u8]) -> Result<u64, String> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or("a base-256 number overflows")?;
        }
        return Ok(v);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|e| format!("bad octal number {text:?}: {e}"))
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    /// A link, a device, a FIFO: never served.
    Other,
}

/// One entry's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its path in the archive (`Downloads/report.pdf`, `Uploads/`).
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub uid: u64,
    pub gid: u64,
    /// Unix seconds.
    pub mtime: u64,
}

/// What the reader yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An entry starts; its data (if any) follows as [`Event::Data`].
    Entry(Entry),
    /// A slice of the current entry's data.
    Data(Bytes),
    /// The end of the archive.
    End,
}

#[derive(Debug)]
enum State {
    Header,
    /// A PAX or GNU long-name record of `size` bytes being gathered.
    Meta {
        kind: u8,
        size: u64,
    },
    /// `left` bytes of the current entry's data, then `pad`.
    Data {
        left: u64,
        pad: usize,
    },
    /// Bytes to drop (padding).
    Skip(usize),
    End,
}

/// Reads an archive from chunks ([`TarReader::push`]) as events
/// ([`TarReader::next_event`]); it holds at most a block or a metadata record besides
/// the chunk it was given last. Data comes out as slices of the chunks pushed (no
/// copy); only a header or record split across chunks is copied together.
#[derive(Debug)]
pub struct TarReader {
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    buffered: usize,
    state: State,
    /// From a PAX or GNU long-name record, for the next header.
    long_path: Option<String>,
    long_size: Option<u64>,
}

impl Default for TarReader {
    fn default() -> Self {
        TarReader {
            chunks: VecDeque::new(),
            buffered: 0,
            state: State::Header,
            long_path: None,
            long_size: None,
        }
    }
}

impl TarReader {
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.buffered += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Up to `n` bytes from the front chunk, without copying.
    fn take_some(&mut self, n: usize) -> Bytes {
        let Some(front) = self.chunks.front_mut() else {
            return Bytes::new();
        };
        let out = if front.len() <= n {
            self.chunks.pop_front().unwrap_or_default()
        } else {
            front.split_to(n)
        };
        self.buffered -= out.len();
        out
    }

    /// Exactly `n` bytes (the caller checked `buffered`), copied together only when
    /// they span chunks.
    fn take(&mut self, n: usize) -> Bytes {
        if self.chunks.front().is_some_and(|f| f.len() >= n) {
            return self.take_some(n);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let part = self.take_some(n - out.len());
            out.extend_from_slice(&part);
        }
        out.freeze()
    }

    /// The next event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, String> {
        loop {
            match &mut self.state {
                State::End => return Ok(Some(Event::End)),
                State::Skip(n) => {
                    let n = *n;
                    let dropped = self.take_some(n).len();
                    if dropped < n {
                        self.state = State::Skip(n - dropped);
                        if self.buffered == 0 {
                            return Ok(None);
                        }
                        continue;
                    }
                    self.state = State::Header;
                }
                State::Data { left, pad } => {
                    if *left == 0 {
                        self.state = State::Skip(*pad);
                        continue;
                    }
                    if self.buffered == 0 {
                        return Ok(None);
                    }
                    let want = (*left).min(usize::MAX as u64) as usize;
                    let (left_now, pad) = (*left, *pad);
                    let data = self.take_some(want);
                    self.state = State::Data {
                        left: left_now - data.len() as u64,
                        pad,
                    };
                    return Ok(Some(Event::Data(data)));
                }
                State::Meta { kind, size } => {
                    let (kind, size) = (*kind, *size);
                    let whole = size as usize + padding(size);
                    if self.buffered < whole {
                        return Ok(None);
                    }
                    let record = self.take(whole);
                    let record = &record[..size as usize];
                    if kind == b'L' {
                        let name = record.split(|&b| b == 0).next().unwrap_or_default();
                        self.long_path = Some(String::from_utf8_lossy(name).into_owned());
                    } else if kind == b'x' {
                        self.pax(record)?;
                    }
                    self.state = State::Header;
                }
                State::Header => {
                    if self.buffered < BLOCK {
                        return Ok(None);
                    }
                    let block = self.take(BLOCK);
                    if block.iter().all(|&b| b == 0) {
                        self.state = State::End;
                        continue;
                    }
                    let kind = block[156];
                    let size = parse_number(&block[124..136])?;
                    if matches!(kind, b'x' | b'g' | b'L') {
                        if size > MAX_PAX {
                            return Err(format!("a metadata record of {size} bytes"));
                        }
                        self.state = State::Meta { kind, size };
                        continue;
                    }
                    let entry = self.entry(&block, kind, size)?;
                    let data = match entry.kind {
                        Kind::File => entry.size,
                        // Links and directories carry no data; other kinds' sizes are
                        // skipped as data would be.
                        Kind::Directory => 0,
                        Kind::Other => entry.size,
                    };
                    self.state = State::Data {
                        left: data,
                        pad: padding(data),
                    };
                    return Ok(Some(Event::Entry(entry)));
                }
            }
        }
    }

    fn entry(&mut self, block: &[u8], kind: u8, size: u64) -> Result<Entry, String> {
        let cstr = |f: &[u8]| {
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let path = match self.long_path.take() {
            Some(p) => p,
            None => {
                let name = cstr(&block[..100]);
                let prefix = if &block[257..262] == b"ustar" {
                    cstr(&block[345..500])
                } else {
                    String::new()
                };
                if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            }
        };
        Ok(Entry {
            path,
            kind: match kind {
                b'0' | 0 | b'7' => Kind::File,
                b'5' => Kind::Directory,
                _ => Kind::Other,
            },
            size: self.long_size.take().unwrap_or(size),
            uid: parse_number(&block[108..116])?,
            gid: parse_number(&block[116..124])?,
            mtime: parse_number(&block[136..148])?,
        })
    }

    /// Takes `path` and `size` from a PAX record set.
    fn pax(&mut self, mut records: &[u8]) -> Result<(), String> {
        while !records.is_empty() {
            let space = records
                .iter()
                .position(|&b| b == b' ')
                .ok_or("a PAX record without a length")?;
            let len: usize = std::str::from_utf8(&records[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|&l| l > space && l <= records.len())
                .ok_or("a PAX record with a bad length")?;
            let body = &records[space + 1..len];
            let body = body.strip_suffix(b"\n").unwrap_or(body);
            if let Some(eq) = body.iter().position(|&b| b == b'=') {
                let (key, value) = (&body[..eq], &body[eq + 1..]);
                match key {
                    b"path" => self.long_path = Some(String::from_utf8_lossy(value).into_owned()),
                    b"size" => {
                        self.long_size =
                            std::str::from_utf8(value).ok().and_then(|s| s.parse().ok())
                    }
                    _ => {}
                }
            }
            records = &records[len..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(name: &str, data: &[u8]) -> Vec<u8> {
        let mut a = file_header(name, data.len() as u64, 1000, 1001, 1_700_000_000);
        a.extend_from_slice(data);
        a.resize(a.len() + padding(data.len() as u64), 0);
        a.extend_from_slice(&end_of_archive());
        a
    }

    /// Reads `bytes` fed in chunks of `step`: entries and their data.
    fn read(bytes: &[u8], step: usize) -> Vec<(Entry, Vec<u8>)> {
        let mut r = TarReader::default();
        let mut out: Vec<(Entry, Vec<u8>)> = Vec::new();
        let mut chunks = bytes.chunks(step);
        loop {
            match r.next_event().unwrap() {
                Some(Event::Entry(e)) => out.push((e, Vec::new())),
                Some(Event::Data(d)) => out.last_mut().unwrap().1.extend_from_slice(&d),
                Some(Event::End) => return out,
                None => r.push(Bytes::copy_from_slice(
                    chunks.next().expect("archive ended early"),
                )),
            }
        }
    }

    #[test]
    fn what_is_written_reads_back_in_any_chunking() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let long = "ü".repeat(120);
        for name in ["a.txt", long.as_str()] {
            let a = archive(name, &data);
            assert_eq!(a.len() % BLOCK, 0);
            for step in [1, 7, 512, 100_000] {
                let got = read(&a, step);
                assert_eq!(got.len(), 1);
                let (e, d) = &got[0];
                assert_eq!(e.path, name);
                assert_eq!(
                    (e.kind, e.size, e.uid, e.gid),
                    (Kind::File, 3000, 1000, 1001)
                );
                assert_eq!(e.mtime, 1_700_000_000);
                assert_eq!(d, &data);
            }
        }
    }

    #[test]
    fn gnu_tar_output_reads() {
        // A directory with a file, as `tar` writes it (ustar header, GNU magic).
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("Downloads");
        std::fs::create_dir(&top).unwrap();
        std::fs::write(top.join("x.bin"), vec![7u8; 1025]).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .args(["-cf", "-", "Downloads"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let got = read(&out.stdout, 333);
        let kinds: Vec<_> = got
            .iter()
            .map(|(e, d)| (e.path.as_str(), e.kind, d.len()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("Downloads/", Kind::Directory, 0),
                ("Downloads/x.bin", Kind::File, 1025)
            ]
        );
    }

    #[test]
    fn numbers_too_big_for_octal_go_base_256() {
        let mut field = [0u8; 12];
        let big = 1u64 << 40;
        octal(&mut field, big);
        assert_eq!(parse_number(&field).unwrap(), big);
        octal(&mut field, 0o777);
        assert_eq!(parse_number(&field).unwrap(), 0o777);
        assert!(parse_number(b"9\0").is_err());
        assert_eq!(pax_record("path", "abc"), "12 path=abc\n");
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
    }
}
