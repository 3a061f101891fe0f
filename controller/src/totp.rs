//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA-1, 30-second steps,
//! 6 digits, and the base32 secrets authenticator apps read. Pure: time comes in.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per time step.
pub(crate) const STEP_SECS: i64 = 30;
/// Digits of a code.
pub(crate) const DIGITS: u32 = 6;
/// How many steps before and after the current one a code may come from (clock drift).
pub(crate) const WINDOW: i64 = 1;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Encodes bytes as RFC 4648 base32 without padding.
pub(crate) fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes RFC 4648 base32 (case, spaces and padding ignored); `None` when malformed.
pub(crate) fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let c = c.to_ascii_uppercase();
        let v = BASE32.iter().position(|&a| a as char == c)?;
        buffer = (buffer << 5) | u32::try_from(v).ok()?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
        buffer &= (1 << bits) - 1;
    }
    Some(out)
}

/// The time step a Unix time in seconds falls into.
pub(crate) fn step_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

/// The HOTP value (RFC 4226) of `key` at `counter`, with `digits` digits.
pub(crate) fn hotp(key: &[u8], counter: u64, digits: u32) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    let value = u64::from(binary) % 10u64.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// The 6-digit code of a base32 secret at a Unix time in seconds; `None` for a malformed secret.
pub fn code_at(secret_base32: &str, unix_secs: i64) -> Option<String> {
    let key = base32_decode(secret_base32)?;
    let step = u64::try_from(step_of(unix_secs)).ok()?;
    Some(hotp(&key, step, DIGITS))
}

/// The time steps (within the window around `unix_secs`, oldest first) whose code is `code`.
pub(crate) fn matching_steps(key: &[u8], code: &str, unix_secs: i64) -> Vec<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Vec::new();
    }
    let now = step_of(unix_secs);
    (now - WINDOW..=now + WINDOW)
        .filter(|&s| {
            u64::try_from(s)
                .is_ok_and(|c| constant_time_eq(hotp(key, c, DIGITS).as_bytes(), code.as_bytes()))
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 column (8 digits), key "12345678901234567890".
    #[test_case::test_case(59, "94287082")]
    #[test_case::test_case(1_111_111_109, "07081804")]
    #[test_case::test_case(1_111_111_111, "14050471")]
    #[test_case::test_case(1_234_567_890, "89005924")]
    #[test_case::test_case(2_000_000_000, "69279037")]
    #[test_case::test_case(20_000_000_000, "65353130")]
    fn rfc6238_sha1_vectors(t: i64, expected: &str) {
        let key = b"12345678901234567890";
        let step = u64::try_from(step_of(t)).unwrap();
        assert_eq!(hotp(key, step, 8), expected);
        assert_eq!(hotp(key, step, 6), expected[2..]);
    }

    /// RFC 4226 appendix D.
    #[test]
    fn rfc4226_vectors() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(hotp(b"12345678901234567890", i as u64, 6), *e);
        }
    }

    #[test]
    fn base32_round_trips_and_matches_rfc4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("mzxw6ytboi======").unwrap(), b"foobar");
        let key = b"12345678901234567890";
        assert_eq!(base32_decode(&base32_encode(key)).unwrap(), key);
        assert!(base32_decode("not base32!").is_none());
    }

    #[test]
    fn window_accepts_neighbouring_steps_only() {
        let key = b"12345678901234567890";
        let secret = base32_encode(key);
        let t = 1_111_111_111;
        let code = code_at(&secret, t).unwrap();
        assert_eq!(matching_steps(key, &code, t), vec![step_of(t)]);
        assert_eq!(matching_steps(key, &code, t + 30), vec![step_of(t)]);
        assert_eq!(matching_steps(key, &code, t - 30), vec![step_of(t)]);
        assert!(matching_steps(key, &code, t + 90).is_empty());
        assert!(matching_steps(key, "12345", t).is_empty());
        assert!(matching_steps(key, "abcdef", t).is_empty());
    }
}
