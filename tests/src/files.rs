//! Moving files through control's file routes from a test: an upload streamed from a
//! generator (never a whole file in the test's memory either) and a download hashed as
//! it arrives, over plain HTTP/1.1, with the SHA-256 of what went each way.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one transfer in a test: 500 MB over loopback takes seconds.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(300);

/// Chunk the generator writes at a time.
const CHUNK: usize = 256 * 1024;

/// Deterministic bytes: `size` of them from `seed` (xorshift64), chunk by chunk.
pub struct Pattern {
    state: u64,
    left: u64,
}

impl Pattern {
    pub fn new(seed: u64, size: u64) -> Pattern {
        Pattern {
            state: seed | 1,
            left: size,
        }
    }

    /// The next chunk, empty at the end.
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) {
        let n = (self.left as usize).min(CHUNK);
        buf.clear();
        buf.reserve(n);
        while buf.len() < n {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state = x;
            let bytes = x.to_le_bytes();
            let take = (n - buf.len()).min(8);
            buf.extend_from_slice(&bytes[..take]);
        }
        self.left -= n as u64;
    }

    /// The SHA-256 of the whole pattern.
    pub fn sha256(seed: u64, size: u64) -> String {
        let mut p = Pattern::new(seed, size);
        let mut h = Sha256::new();
        let mut buf = Vec::new();
        loop {
            p.next_chunk(&mut buf);
            if buf.is_empty() {
                return hex(&h.finalize());
            }
            h.update(&buf);
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An answer: status, head (status line and headers), body text, and for a
/// download the length and SHA-256 of the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
    pub len: u64,
    pub sha256: String,
}

impl Answer {
    /// A header's value (first of that name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// The request head: `method path`, `Connection: close`, the bearer and `extra`
/// header lines.
fn head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    extra: &[&str],
) -> String {
    let mut h = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = bearer {
        h.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for line in extra {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

/// PUTs `size` bytes of [`Pattern`] `seed` to `path`. Returns the answer and the
/// SHA-256 of what was sent.
pub async fn upload(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    size: u64,
    seed: u64,
) -> anyhow::Result<(Answer, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let length = format!("Content-Length: {size}");
    let h = head(
        addr,
        "PUT",
        path,
        bearer,
        &[&length, "Content-Type: application/octet-stream"],
    );
    let send = async {
        stream.write_all(h.as_bytes()).await?;
        let mut pattern = Pattern::new(seed, size);
        let mut hash = Sha256::new();
        let mut buf = Vec::new();
        loop {
            pattern.next_chunk(&mut buf);
            if buf.is_empty() {
                break;
            }
            hash.update(&buf);
            stream.write_all(&buf).await?;
        }
        anyhow::Ok(hex(&hash.finalize()))
    };
    let sent = tokio::time::timeout(TRANSFER_WAIT, send)
        .await
        .context("the upload took too long")??;
    let answer = read_answer(stream).await?;
    Ok((answer, sent))
}

/// Sends a request with no body (only its head, whatever `Content-Length` `extra`
/// announces) and reads the answer: for refusals that come before any byte is read.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<Answer> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(head(addr, method, path, bearer, extra).as_bytes())
        .await?;
    read_answer(stream).await
}

/// Reads an answer to its end (the connection closes), hashing the body as it comes
/// and keeping at most 64 KiB of it as text.
async fn read_answer(mut stream: TcpStream) -> anyhow::Result<Answer> {
    let read = async {
        let mut raw = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let split = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the connection closed before the headers ended");
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut body: Vec<u8> = raw[split + 4..].to_vec();
        let mut hash = Sha256::new();
        hash.update(&body);
        let mut len = body.len() as u64;
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            hash.update(&chunk[..n]);
            len += n as u64;
            if body.len() < 64 * 1024 {
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        anyhow::Ok(Answer {
            status,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
            len,
            sha256: hex(&hash.finalize()),
        })
    };
    tokio::time::timeout(TRANSFER_WAIT, read)
        .await
        .context("the answer took too long")?
}

/// The file at `path` in container `name` as Docker's own `docker cp` gives it: its
/// owner (`uid/gid`), its size and its SHA-256.
pub fn in_container(name: &str, path: &str) -> (String, u64, String) {
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("out.tar");
    let out = std::process::Command::new("docker")
        .args(["cp", &format!("{name}:{path}"), "-"])
        .stdout(std::fs::File::create(&tarball).unwrap())
        .status()
        .unwrap();
    assert!(out.success(), "docker cp {path} failed");
    let listing = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&tarball)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&listing.stdout).into_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (owner, size) = (fields[1].to_owned(), fields[2].parse().unwrap());
    let data = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&tarball)
        .output()
        .unwrap();
    (owner, size, hex(&Sha256::digest(&data.stdout)))
}

/// Writes `size` bytes of pattern `seed` to `path`; their SHA-256.
pub fn write_pattern(path: &std::path::Path, seed: u64, size: u64) -> String {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let mut p = Pattern::new(seed, size);
    let mut buf = Vec::new();
    loop {
        p.next_chunk(&mut buf);
        if buf.is_empty() {
            break;
        }
        f.write_all(&buf).unwrap();
    }
    Pattern::sha256(seed, size)
}
