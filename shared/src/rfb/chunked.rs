//! Test support for the framers' tests: a stream cut into chunks.

/// Cuts `bytes` into chunks whose sizes cycle through `sizes`.
pub fn chunked<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at((*size).min(rest.len()));
        chunks.push(a);
        rest = b;
    }
    chunks
}
