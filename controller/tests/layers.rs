//! The controller's layers, checked from its sources (in the spirit of Tailscale's
//! `deptest`): every module path a file names must point down the stack
//!
//! ```text
//! serve (lib.rs, main.rs, config.rs)
//!   shells: http/, control/, cluster,     never each other, never the store
//!           timers
//!   app/                                  never a shell; its kernel only its leaves
//!   bus/                                  nothing above it, not the store
//!   store                                 (SQL only)
//!   leaves: crypto, secrets, totp, tls    nothing of the crate
//! ```
//!
//! Test code (`#[cfg(test)]` modules, `tests.rs` and `*_tests.rs` files, `tests/` and
//! `*_tests/` folders) may reach anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where a file sits in the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Leaf,
    Store,
    Bus,
    App,
    Shell,
    Top,
}

/// The layer of a module path (`["app", "kernel"]`), by its first segment.
fn layer_of(module: &[String]) -> Option<Layer> {
    Some(match module.first().map(String::as_str)? {
        "crypto" | "secrets" | "totp" | "tls" => Layer::Leaf,
        "store" => Layer::Store,
        "bus" => Layer::Bus,
        "app" => Layer::App,
        "http" | "control" | "cluster" | "timers" => Layer::Shell,
        "config" | "main" | "lib" => Layer::Top,
        _ => return None,
    })
}

/// The modules of `app` the kernel may import: they import nothing else of `app`.
const APP_LEAVES: &[&str] = &["addressing", "discovery", "lockout"];

/// The module path of a source file relative to `src/` (`app/kernel.rs` → `app::kernel`,
/// `http/mod.rs` → `http`, `lib.rs` → `lib`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_owned();
    }
    if parts.len() > 1 && parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// Source text without comments, string literals and `#[cfg(test)]` modules.
fn strip(code: &str) -> String {
    let bytes: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == '*' && bytes[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next.is_some_and(|n| n != '\\') && bytes.get(i + 2) == Some(&'\'') {
            // A char literal such as '"' must not open a string.
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    drop_test_modules(&out)
}

fn drop_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        if !trimmed.starts_with("mod ") {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let skipped = after.len() - trimmed.len();
        let Some(open) = trimmed.find(['{', ';']) else {
            rest = "";
            break;
        };
        if trimmed.as_bytes()[open] == b';' {
            rest = &after[skipped + open + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = trimmed.len();
        for (k, ch) in trimmed.char_indices().skip(open) {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[skipped + end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths `code` (stripped, in module `module`) names: `crate::a::b`,
/// `super::x`, and the `store` crate (`store::…`, `::store`).
fn references(module: &[String], code: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let chars: Vec<char> = code.chars().collect();
    let text: String = chars.iter().collect();
    let segments_at = |start: usize| -> Vec<String> {
        let mut segs = Vec::new();
        let mut i = start;
        loop {
            let s = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            if s == i {
                break;
            }
            segs.push(chars[s..i].iter().collect::<String>());
            if i + 1 < chars.len() && chars[i] == ':' && chars[i + 1] == ':' {
                i += 2;
            } else {
                break;
            }
        }
        segs
    };
    for (at, _) in text.match_indices("crate::") {
        if at > 0 && is_ident(chars[at - 1]) {
            continue;
        }
        let segs = segments_at(at + "crate::".len());
        if !segs.is_empty() {
            found.insert(segs);
        }
    }
    for (at, _) in text.match_indices("super::") {
        if at > 0 && (is_ident(chars[at - 1]) || chars[at - 1] == ':') {
            continue;
        }
        let mut ups = 0;
        let mut i = at;
        while text[i..].starts_with("super::") {
            ups += 1;
            i += "super::".len();
        }
        let mut base: Vec<String> = module.to_vec();
        // `mod.rs` files are their folder; a plain file's parent is one level up.
        for _ in 0..ups {
            base.pop();
        }
        base.extend(segments_at(i));
        found.insert(base);
    }
    for (at, _) in text.match_indices("store::") {
        let before = if at > 0 { Some(chars[at - 1]) } else { None };
        if before.is_some_and(|b| is_ident(b) || b == ':' || b == '.') {
            continue;
        }
        found.insert(vec!["store".to_owned()]);
    }
    if text.contains("::store") && text.contains("use ::store") {
        found.insert(vec!["store".to_owned()]);
    }
    if text.contains(".store()") {
        found.insert(vec!["store".to_owned(), "(Service::store())".to_owned()]);
    }
    found
}

/// Why `from` may not name `to`, or `None` when it may.
fn forbidden(from: &[String], to: &[String]) -> Option<&'static str> {
    let (Some(lf), Some(lt)) = (layer_of(from), layer_of(to)) else {
        return None;
    };
    if from.first() == to.first() {
        // Inside one top-level module: only the app kernel is restricted.
        if lf == Layer::App {
            let f = from.get(1).map(String::as_str);
            let t = to.get(1).map(String::as_str);
            let leaf = |m: Option<&str>| m.is_some_and(|m| APP_LEAVES.contains(&m));
            if f == Some("kernel") && t.is_some() && t != Some("kernel") && !leaf(t) {
                return Some("the app kernel imports only app's leaves, never a feature file");
            }
            if leaf(f) && t.is_some() && t != f {
                return Some("an app leaf imports nothing else of app");
            }
        }
        return None;
    }
    if lf == Layer::Top {
        return None;
    }
    if lf == Layer::Shell && lt == Layer::Shell {
        return Some("shells never import each other");
    }
    if lf == Layer::Shell && lt == Layer::Store {
        return Some("shells never touch the store: go through the application services");
    }
    if lf == Layer::Bus && lt == Layer::Store {
        return Some("the bus imports nothing of the store");
    }
    if lt >= lf {
        return Some("imports point down the stack only");
    }
    None
}

fn is_test_file(rel: &Path) -> bool {
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
    name.is_some_and(|n| n == "tests.rs" || n.ends_with("_tests.rs"))
        || rel.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            c == "tests" || c.ends_with("_tests")
        })
}

/// Every forbidden reference in `files` (paths relative to `src/`, and their text).
fn violations(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, text) in files {
        if is_test_file(rel) {
            continue;
        }
        let module = module_of(rel);
        for to in references(&module, &strip(text)) {
            if let Some(why) = forbidden(&module, &to) {
                out.push(format!(
                    "{}: names `{}`: {why}",
                    rel.display(),
                    to.join("::")
                ));
            }
        }
    }
    out
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("reading the controller's sources")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("reading a source file");
            let rel = path.strip_prefix(root).expect("inside src").to_path_buf();
            out.push((rel, text));
        }
    }
}

fn controller_sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    sources(&root, &root, &mut out);
    out
}

#[test]
fn the_controller_is_a_one_way_stack() {
    let files = controller_sources();
    assert!(files.len() > 30, "found only {} source files", files.len());
    let found = violations(&files);
    assert!(found.is_empty(), "forbidden imports:\n{}", found.join("\n"));
}

#[test]
fn every_source_file_has_a_layer() {
    for (rel, _) in controller_sources() {
        if is_test_file(&rel) {
            continue;
        }
        assert!(
            layer_of(&module_of(&rel)).is_some(),
            "{} is in no layer: add it to tests/layers.rs",
            rel.display()
        );
    }
}

fn one(path: &str, text: &str) -> Vec<String> {
    violations(&[(PathBuf::from(path), text.to_owned())])
}

#[test]
fn an_app_file_importing_a_shell_is_refused() {
    let found = one("app/access.rs", "use crate::control::ControlEndpoint;\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("down the stack"), "{found:?}");
    assert_eq!(
        one("app/access.rs", "use crate::http::AppState;\n").len(),
        1
    );
}

#[test]
fn sideways_and_upward_edges_are_refused() {
    // A shell naming another shell, the store, or the store through the service.
    assert_eq!(
        one("http/api/mod.rs", "use crate::control::describe;\n").len(),
        1
    );
    assert_eq!(one("control/mod.rs", "use store::GrantFilter;\n").len(), 1);
    assert_eq!(
        one("control/client.rs", "use store::GrantFilter;\n").len(),
        1
    );
    assert_eq!(
        one("http/web/access.rs", "fn f(s: &S) { s.service.store(); }\n").len(),
        1
    );
    // The bus naming the application services; a leaf naming anything.
    assert_eq!(one("bus/mod.rs", "use crate::app::Service;\n").len(), 1);
    assert_eq!(one("bus/replicas.rs", "use store::Store;\n").len(), 1);
    assert_eq!(one("crypto.rs", "use crate::bus::Bus;\n").len(), 1);
    // The kernel naming a feature file, through `super` too.
    assert_eq!(
        one("app/kernel.rs", "use super::access::AccessOutcome;\n").len(),
        1
    );
    assert_eq!(
        one("app/kernel.rs", "use crate::app::sso::Failure;\n").len(),
        1
    );
    assert_eq!(
        one("app/lockout.rs", "use super::kernel::Service;\n").len(),
        1
    );
}

#[test]
fn downward_edges_comments_strings_and_tests_are_allowed() {
    for (path, text) in [
        (
            "http/web/mod.rs",
            "use crate::app::ServiceError;\nuse super::error::classify;\n",
        ),
        (
            "control/mod.rs",
            "use crate::bus::Command;\nuse crate::tls::TlsIdentity;\n",
        ),
        (
            "app/kernel.rs",
            "use super::lockout::UnknownSignIns;\nuse crate::bus::Bus;\n",
        ),
        (
            "app/access.rs",
            "use super::decisions::DecisionRequest;\nuse store::Conn;\n",
        ),
        ("bus/mod.rs", "use super::gateways::Registry;\n"),
        (
            "lib.rs",
            "use crate::control::ControlEndpoint; use store::Store;\n",
        ),
        (
            "app/access.rs",
            "// use crate::control::X;\nconst S: &str = \"crate::http\";\n",
        ),
        (
            "app/access.rs",
            "#[cfg(test)]\nmod tests {\n    use crate::control::X;\n}\n",
        ),
        ("control/tests.rs", "use store::Store;\n"),
        ("control/live_model_tests/mod.rs", "use store::Store;\n"),
    ] {
        assert_eq!(one(path, text), Vec::<String>::new(), "{path}: {text}");
    }
}
