//! Firewall: whether a rule set filters incoming traffic in this network namespace.
//!
//! The source is `nft -j list ruleset` (or `nft list ruleset` when this `nft` has no JSON
//! support), run in the caller's network namespace; iptables-nft rules appear there too.
//! The firewall **passes** when some base chain of type `filter` on the `input` hook, in
//! family `ip`, `ip6` or `inet`, either has policy `drop`, or contains (directly or through
//! `jump`/`goto` to chains of its table) a rule with a `drop` or `reject` verdict. A
//! ruleset that only accepts or only rewrites addresses protects nothing.
//!
//! It **fails** when the rule set can be read and has no such chain (in particular when it
//! is empty). It is **unknown** when `nft` is missing, fails (e.g. not run as root), times
//! out or prints something this probe cannot understand, and also when nftables shows no
//! filtering chain but legacy iptables tables are loaded (`<root>/proc/net/ip_tables_names`
//! or `ip6_tables_names` lists `filter`), whose rules `nft` cannot show.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use model::CheckState;
use serde_json::Value;

use crate::Finding;
use crate::read::{self, under};

const JSON_SOURCE: &str = "nft -j list ruleset";
const TEXT_SOURCE: &str = "nft list ruleset";
/// The most output of `nft` we read: a very large rule set is still well below this.
const MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Whether a firewall rule set filters incoming traffic, asking the `nft` command (in the
/// caller's network namespace) and looking for legacy iptables tables under `root`.
pub fn firewall(nft: Option<&Path>, root: &Path, timeout: Duration) -> Finding {
    let Some(nft) = nft else {
        return Finding::new(
            CheckState::Unknown,
            JSON_SOURCE,
            "the firewall probe is turned off (no nft command configured)",
        );
    };
    let finding = match run(nft, &["-j", "list", "ruleset"], timeout) {
        Ok(out) => firewall_from_nft_json(&out).unwrap_or_else(|| {
            text_fallback(
                nft,
                timeout,
                "nft printed JSON this probe cannot understand",
            )
        }),
        Err(e) => text_fallback(nft, timeout, &e),
    };
    if finding.state == CheckState::Fail
        && let Some(file) = legacy_filter_table(root)
    {
        return Finding::new(
            CheckState::Unknown,
            file,
            format!(
                "{}; but legacy iptables has a filter table loaded, whose rules nft cannot show",
                finding.detail
            ),
        );
    }
    finding
}

/// The verdict from `nft list ruleset` when the JSON listing gave none, for an `nft`
/// built without JSON support; unknown, saying `json_error`, when that fails too.
fn text_fallback(nft: &Path, timeout: Duration, json_error: &str) -> Finding {
    match run(nft, &["list", "ruleset"], timeout) {
        Ok(out) => firewall_from_nft_text(&out).unwrap_or_else(|| {
            Finding::new(
                CheckState::Unknown,
                TEXT_SOURCE,
                "nft printed a rule set this probe cannot understand",
            )
        }),
        Err(_) => Finding::new(CheckState::Unknown, JSON_SOURCE, json_error),
    }
}

/// The legacy iptables table list under `root` that names a `filter` table, if any.
fn legacy_filter_table(root: &Path) -> Option<&'static str> {
    ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"]
        .into_iter()
        .find(|p| {
            read::text(&under(root, p)).is_ok_and(|t| t.lines().any(|l| l.trim() == "filter"))
        })
}

/// Runs `cmd args` with a time limit; its standard output, or why there is none.
fn run(cmd: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let shown = format!("{} {}", cmd.display(), args.join(" "));
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!("{} is not installed", cmd.display()),
            _ => format!("{shown} could not be started: {e}"),
        })?;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {timeout:?}"));
            }
            Err(e) => return Err(format!("{shown} could not be waited for: {e}")),
        }
    };
    let stdout = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        let why = String::from_utf8_lossy(&stderr);
        let why = why
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Err(format!("{shown} failed ({status}): {why}"));
    }
    String::from_utf8(stdout).map_err(|_| format!("{shown} printed invalid UTF-8"))
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut pipe).take(MAX_OUTPUT_BYTES).read_to_end(&mut buf);
        // Keep reading past the limit so that the child never blocks on a full pipe.
        let _ = io::copy(&mut pipe, &mut io::sink());
        buf
    })
}

/// One chain of a rule set, as far as this probe cares.
#[derive(Debug, Default)]
struct Chain {
    type_: Option<String>,
    hook: Option<String>,
    policy: Option<String>,
    /// Some rule of the chain has a `drop` or `reject` verdict.
    drops: bool,
    /// Chains its rules jump or go to.
    targets: BTreeSet<String>,
}

/// Chains by (family, table, chain).
type Chains = BTreeMap<(String, String, String), Chain>;

/// The verdict on the output of `nft -j list ruleset`; `None` when it is not that.
pub fn firewall_from_nft_json(json: &str) -> Option<Finding> {
    let value: Value = serde_json::from_str(json).ok()?;
    let items = value.get("nftables")?.as_array()?;
    let mut chains = Chains::new();
    let mut tables = 0;
    let key = |o: &Value| -> Option<(String, String, String)> {
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
        Some((s("family")?, s("table")?, s("name").or_else(|| s("chain"))?))
    };
    for item in items {
        if item.get("table").is_some() {
            tables += 1;
        } else if let Some(c) = item.get("chain") {
            let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
            let chain = chains.entry(key(c)?).or_default();
            chain.type_ = s("type");
            chain.hook = s("hook");
            chain.policy = s("policy");
        } else if let Some(r) = item.get("rule") {
            let chain = chains.entry(key(r)?).or_default();
            if let Some(expr) = r.get("expr") {
                walk_expr(expr, chain);
            }
        }
    }
    Some(verdict(JSON_SOURCE, tables, &chains))
}

/// Notes the verdicts found anywhere in a rule's expression (verdict maps included).
fn walk_expr(v: &Value, chain: &mut Chain) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk_expr(i, chain)),
        Value::Object(map) => {
            for (k, inner) in map {
                match k.as_str() {
                    "drop" | "reject" => chain.drops = true,
                    "jump" | "goto" => {
                        if let Some(t) = inner.get("target").and_then(Value::as_str) {
                            chain.targets.insert(t.to_owned());
                        }
                    }
                    _ => walk_expr(inner, chain),
                }
            }
        }
        _ => {}
    }
}

/// The verdict on the output of `nft list ruleset`; `None` when it is not that.
pub fn firewall_from_nft_text(text: &str) -> Option<Finding> {
    let mut chains = Chains::new();
    let mut tables = 0;
    let mut depth = 0usize;
    let mut table: Option<(String, String)> = None;
    let mut chain: Option<(String, String, String)> = None;
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let tokens = tokens(line);
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        match (depth, tokens.as_slice()) {
            (0, [t, family, name, ..]) if t == "table" => {
                tables += 1;
                table = Some((family.clone(), name.clone()));
            }
            (0, [t, name, ..]) if t == "table" => {
                // `table NAME {` means family ip.
                tables += 1;
                table = Some(("ip".to_owned(), name.clone()));
            }
            (0, [_, ..]) => return None,
            (1, [t, name, ..]) if t == "chain" => {
                if let Some((family, tname)) = &table {
                    let k = (family.clone(), tname.clone(), name.clone());
                    chains.entry(k.clone()).or_default();
                    chain = Some(k);
                }
            }
            (d, tokens) if d >= 2 && !tokens.is_empty() => {
                if let Some(c) = chain.as_ref().and_then(|k| chains.get_mut(k)) {
                    text_statement(tokens, c);
                }
            }
            _ => {}
        }
        depth = (depth + opens).checked_sub(closes)?;
        if depth < 2 {
            chain = None;
        }
        if depth == 0 {
            table = None;
        }
    }
    (depth == 0).then(|| verdict(TEXT_SOURCE, tables, &chains))
}

/// Reads one statement line inside a chain of `nft list ruleset` output.
fn text_statement(tokens: &[String], chain: &mut Chain) {
    let after = |word: &str| {
        tokens
            .iter()
            .position(|t| t == word)
            .and_then(|i| tokens.get(i + 1))
            .cloned()
    };
    if tokens.first().is_some_and(|t| t == "type") && tokens.iter().any(|t| t == "hook") {
        chain.type_ = tokens.get(1).cloned();
        chain.hook = after("hook");
        chain.policy = after("policy");
        return;
    }
    if tokens.first().is_some_and(|t| t == "policy") {
        chain.policy = tokens.get(1).cloned();
        return;
    }
    for (i, t) in tokens.iter().enumerate() {
        match t.as_str() {
            "drop" | "reject" => chain.drops = true,
            "jump" | "goto" => {
                if let Some(target) = tokens.get(i + 1) {
                    chain.targets.insert(target.clone());
                }
            }
            _ => {}
        }
    }
}

/// The words of a line, without quoted strings (comments, interface names) and
/// punctuation.
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        if c == '"' {
            quoted = !quoted;
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        } else if quoted {
        } else if c.is_whitespace() || "{},:;".contains(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() && !quoted {
        out.push(word);
    }
    out
}

/// The finding for a parsed rule set.
fn verdict(source: &str, tables: usize, chains: &Chains) -> Finding {
    let mut inputs = 0;
    for ((family, table, name), c) in chains {
        if !matches!(family.as_str(), "ip" | "ip6" | "inet")
            || c.type_.as_deref() != Some("filter")
            || c.hook.as_deref() != Some("input")
        {
            continue;
        }
        inputs += 1;
        let what = format!("chain {family} {table} {name} (input hook)");
        if c.policy.as_deref() == Some("drop") {
            return Finding::new(CheckState::Pass, source, format!("{what} has policy drop"));
        }
        if drops(chains, family, table, name) {
            return Finding::new(
                CheckState::Pass,
                source,
                format!("{what} drops or rejects some traffic"),
            );
        }
    }
    let detail = match (tables, inputs) {
        (0, _) => "no nftables rule set is loaded".to_owned(),
        (_, 0) => {
            format!("{tables} table(s) loaded, but none filters incoming traffic (no input chain)")
        }
        (_, n) => format!(
            "{n} input chain(s) loaded, but none drops or rejects anything (policy accept and no drop or reject rule)"
        ),
    };
    Finding::new(CheckState::Fail, source, detail)
}

/// Whether the chain, or a chain it jumps or goes to in its table, drops or rejects.
fn drops(chains: &Chains, family: &str, table: &str, name: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(c) = chains.get(&(family.to_owned(), table.to_owned(), name)) else {
            continue;
        };
        if c.drops {
            return true;
        }
        todo.extend(c.targets.iter().cloned());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_skip_quotes_and_punctuation() {
        assert_eq!(
            tokens(r#"iif "lo" tcp dport { 22, 80 } accept comment "drop it";"#),
            ["iif", "tcp", "dport", "22", "80", "accept", "comment"]
        );
    }

    proptest::proptest! {
        #[test]
        fn text_never_panics(text in "(\\PC{0,30}[{}]?\n){0,8}") {
            let _ = firewall_from_nft_text(&text);
        }

        #[test]
        fn json_never_panics(text in "\\PC{0,200}") {
            let _ = firewall_from_nft_json(&text);
        }
    }
}
