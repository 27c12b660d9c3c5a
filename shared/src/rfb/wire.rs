//! Reading RFB's big-endian integers and length-prefixed strings out of byte buffers
//! that may not hold the whole field yet. Every helper returns `None` for "not enough
//! bytes" instead of indexing, so no input can make the parsers panic.

/// The big-endian `u16` at `at`, if the buffer reaches that far.
pub(crate) fn be_u16(buf: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    let bytes: [u8; 2] = buf.get(at..end)?.try_into().ok()?;
    Some(u16::from_be_bytes(bytes))
}

/// The big-endian `u32` at `at`, if the buffer reaches that far.
pub(crate) fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let bytes: [u8; 4] = buf.get(at..end)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Removes and returns the first `N` bytes of `buf`, if it holds that many.
pub(crate) fn take_array<const N: usize>(buf: &mut Vec<u8>) -> Option<[u8; N]> {
    let bytes: [u8; N] = buf.get(..N)?.try_into().ok()?;
    buf.drain(..N);
    Some(bytes)
}

/// Removes the first `n` bytes of `buf` (all of it if shorter) and yields them.
pub(crate) fn take_front(buf: &mut Vec<u8>, n: usize) -> std::vec::Drain<'_, u8> {
    let n = n.min(buf.len());
    buf.drain(..n)
}

/// Wire text (a failure reason, a desktop name) as a printable `String`: invalid UTF-8
/// becomes U+FFFD and control characters become spaces, so a server can't forge log
/// lines or terminal escapes through it.
pub(crate) fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian_and_bounded() {
        let buf = [0x12, 0x34, 0x56, 0x78];
        assert_eq!(be_u16(&buf, 0), Some(0x1234));
        assert_eq!(be_u16(&buf, 2), Some(0x5678));
        assert_eq!(be_u16(&buf, 3), None);
        assert_eq!(be_u32(&buf, 0), Some(0x1234_5678));
        assert_eq!(be_u32(&buf, 1), None);
        assert_eq!(be_u32(&buf, usize::MAX), None);
    }

    #[test]
    fn take_array_takes_only_whole_arrays() {
        let mut buf = vec![1, 2, 3];
        assert_eq!(take_array::<4>(&mut buf), None);
        assert_eq!(buf, [1, 2, 3]);
        assert_eq!(take_array::<2>(&mut buf), Some([1, 2]));
        assert_eq!(buf, [3]);
    }

    #[test]
    fn printable_replaces_controls_and_bad_utf8() {
        assert_eq!(printable(b"a\nb\x1b[31m\xff"), "a b [31m\u{fffd}");
    }
}
