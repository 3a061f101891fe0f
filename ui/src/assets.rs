//! The static files: one style sheet and one script, embedded in the binary and served under
//! paths that carry a hash of their content, so browsers may cache them forever.

/// The style sheet.
pub const CSS: &str = include_str!("../static/app.css");
/// The script: confirmation dialogs, copy buttons, auto-submitting filters.
pub const JS: &str = include_str!("../static/app.js");

/// FNV-1a, 64 bit: enough to tell versions of our own files apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const CSS_HASH: u64 = fnv1a(CSS.as_bytes());
const JS_HASH: u64 = fnv1a(JS.as_bytes());

/// The URL path of the style sheet, e.g. `/static/app.3f2a….css`.
pub fn css_path() -> String {
    format!("/static/app.{CSS_HASH:016x}.css")
}

/// The URL path of the script.
pub fn js_path() -> String {
    format!("/static/app.{JS_HASH:016x}.js")
}

/// The content type and body of the static file named `file` (the last path segment), or
/// `None` when there is no such file (or it names an old version).
pub fn lookup(file: &str) -> Option<(&'static str, &'static str)> {
    if file == css_path().trim_start_matches("/static/") {
        Some(("text/css; charset=utf-8", CSS))
    } else if file == js_path().trim_start_matches("/static/") {
        Some(("text/javascript; charset=utf-8", JS))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_carry_the_content_hash_and_resolve() {
        assert!(css_path().starts_with("/static/app.") && css_path().ends_with(".css"));
        let (ct, body) = lookup(css_path().trim_start_matches("/static/")).unwrap();
        assert!(ct.starts_with("text/css"));
        assert_eq!(body, CSS);
        let (ct, _) = lookup(js_path().trim_start_matches("/static/")).unwrap();
        assert!(ct.starts_with("text/javascript"));
        assert!(lookup("app.0000000000000000.css").is_none());
        assert!(lookup("../Cargo.toml").is_none());
    }

    #[test]
    fn hash_changes_with_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
