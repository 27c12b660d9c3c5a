//! VNC Authentication (RFC 6143 §7.2.2): DES-encrypt a 16-byte challenge with the
//! password as key, where VNC reverses the bits of every key byte.

pub use vnc_shared::rfb::{VNC_AUTH_CHALLENGE_LEN as CHALLENGE_LEN, vnc_auth_response as response};

/// A fresh random challenge.
pub fn challenge() -> [u8; CHALLENGE_LEN] {
    rand::random()
}

/// Whether `answer` is the right response; compares in constant time.
pub fn verify(
    password: &[u8],
    challenge: &[u8; CHALLENGE_LEN],
    answer: &[u8; CHALLENGE_LEN],
) -> bool {
    let expected = response(password, challenge);
    expected
        .iter()
        .zip(answer)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_only_the_right_answer() {
        let challenge = challenge();
        let good = response(b"secret", &challenge);
        assert!(verify(b"secret", &challenge, &good));
        assert!(!verify(b"Secret", &challenge, &good));
        let mut bad = good;
        bad[15] ^= 1;
        assert!(!verify(b"secret", &challenge, &bad));
    }
}
