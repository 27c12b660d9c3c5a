//! Chunking shared by the targets that compare one-piece and chunked parsing.

/// Cuts `bytes` into chunks of 1 to `max` bytes, sizes from a xorshift seeded by `seed`.
pub fn chunks(bytes: &[u8], seed: u8, max: usize) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x100;
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let (a, b) = rest.split_at((1 + state as usize % max).min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}
