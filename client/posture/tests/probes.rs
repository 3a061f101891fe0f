#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]
//! Each probe against fixture trees built in a temporary directory: pass, fail, and
//! unreadable or nonsensical sources (a directory where a file should be, a missing file,
//! garbage), which must give unknown and never a pass.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::CheckState;
use posture::{
    Probe, collect, collect_detailed, disk_encryption, firewall, hostname, kernel_version,
    os_release, running_processes, screen_lock, secure_boot, serial_number,
};
use tempfile::TempDir;
use test_case::test_case;

/// A fixture root.
struct Tree(TempDir);

impl Tree {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn root(&self) -> &Path {
        self.0.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel.trim_start_matches('/'))
    }

    /// Writes `content` at `rel`, making the parent directories.
    fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
        self
    }

    /// Makes the directory `rel` (a directory where a file is expected is unreadable).
    fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.path(rel)).unwrap();
        self
    }

    /// Makes a symbolic link at `rel` pointing at `target` (relative, as in sysfs).
    fn link(&self, rel: &str, target: &str) -> &Self {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
        self
    }

    /// An executable shell script at `rel`.
    fn script(&self, rel: &str, body: &str) -> PathBuf {
        self.file(rel, format!("#!/bin/sh\n{body}\n"));
        let p = self.path(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// A block device in sysfs, `/sys/devices/virtual/block/NAME`, reachable as
    /// `/sys/dev/block/MAJ:MIN` and `/sys/class/block/NAME` like on a real system.
    fn block(&self, name: &str, dev: &str, dm_uuid: Option<&str>, slaves: &[&str]) -> &Self {
        let dir = format!("/sys/devices/virtual/block/{name}");
        self.file(&format!("{dir}/dev"), format!("{dev}\n"));
        if let Some(uuid) = dm_uuid {
            self.file(&format!("{dir}/dm/uuid"), format!("{uuid}\n"));
            self.file(&format!("{dir}/dm/name"), format!("{name}-name\n"));
        }
        self.dir(&format!("{dir}/slaves"));
        for slave in slaves {
            self.link(&format!("{dir}/slaves/{slave}"), &format!("../../{slave}"));
        }
        self.link(
            &format!("/sys/dev/block/{dev}"),
            &format!("../../devices/virtual/block/{name}"),
        );
        self.link(
            &format!("/sys/class/block/{name}"),
            &format!("../../devices/virtual/block/{name}"),
        );
        self
    }

    /// A mountinfo whose root mount is `dev` (`MAJ:MIN`), `fstype` from `source`.
    fn root_mount(&self, dev: &str, fstype: &str, source: &str) -> &Self {
        self.file(
            "/proc/self/mountinfo",
            format!(
                "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                 27 1 {dev} / / rw,relatime shared:1 - {fstype} {source} rw\n\
                 30 27 0:27 / /dev/shm rw - tmpfs tmpfs rw\n"
            ),
        )
    }
}

// ---- OS, kernel, host name, serial number -------------------------------------------

#[test]
fn os_release_from_etc() {
    let t = Tree::new();
    t.file(
        "/etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    );
    let os = os_release(t.root()).unwrap();
    assert_eq!(
        (os.id.as_str(), os.version_id.as_deref()),
        ("debian", Some("12"))
    );
}

#[test]
fn os_release_falls_back_to_usr_lib() {
    let t = Tree::new();
    t.dir("/etc/os-release");
    t.file("/usr/lib/os-release", "ID=fedora\nVERSION_ID=41\n");
    let os = os_release(t.root()).unwrap();
    assert_eq!(
        (os.id.as_str(), os.version_id.as_deref()),
        ("fedora", Some("41"))
    );
}

#[test_case(None ; "missing")]
#[test_case(Some(&b"\xff\xfe not text"[..]) ; "not utf-8")]
#[test_case(Some(&b"NAME=nothing useful\n"[..]) ; "no id")]
fn os_release_unknown(content: Option<&[u8]>) {
    let t = Tree::new();
    if let Some(c) = content {
        t.file("/etc/os-release", c);
    }
    assert_eq!(os_release(t.root()), None);
}

#[test]
fn kernel_and_hostname_from_proc() {
    let t = Tree::new();
    t.file("/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n")
        .file("/proc/sys/kernel/hostname", "laptop-42\n")
        .file("/etc/hostname", "stale\n");
    assert_eq!(kernel_version(t.root()).as_deref(), Some("6.1.0-28-amd64"));
    assert_eq!(hostname(t.root()).as_deref(), Some("laptop-42"));
}

#[test]
fn hostname_falls_back_to_etc_and_nothing_is_none() {
    let t = Tree::new();
    t.dir("/proc/sys/kernel/hostname")
        .file("/etc/hostname", "  box  \n");
    assert_eq!(hostname(t.root()).as_deref(), Some("box"));
    let empty = Tree::new();
    empty.file("/proc/sys/kernel/osrelease", "\n\n");
    assert_eq!(hostname(empty.root()), None);
    assert_eq!(kernel_version(empty.root()), None);
}

#[test_case(Some("PF3ABCDE\n"), Some("PF3ABCDE") ; "readable")]
#[test_case(Some("To Be Filled By O.E.M.\n"), None ; "placeholder")]
#[test_case(Some("   \n"), None ; "blank")]
#[test_case(None, None ; "missing or root only")]
fn serial(content: Option<&str>, want: Option<&str>) {
    let t = Tree::new();
    if let Some(c) = content {
        t.file("/sys/class/dmi/id/product_serial", c);
    }
    assert_eq!(serial_number(t.root()).as_deref(), want);
}

#[test]
fn serial_unreadable_is_none() {
    let t = Tree::new();
    t.dir("/sys/class/dmi/id/product_serial");
    assert_eq!(serial_number(t.root()), None);
}

// ---- disk encryption ----------------------------------------------------------------

#[test]
fn disk_luks_root_passes() {
    let t = Tree::new();
    t.root_mount("254:0", "ext4", "/dev/mapper/cryptroot")
        .block("dm-0", "254:0", Some("CRYPT-LUKS2-0123abcd-cryptroot"), &[]);
    let f = disk_encryption(t.root());
    assert_eq!(f.state, CheckState::Pass, "{f:?}");
    assert_eq!(f.source, "/proc/self/mountinfo");
    assert!(f.detail.contains("dm-0 is a dm-crypt device"), "{f:?}");
}

#[test]
fn disk_lvm_on_luks_passes() {
    let t = Tree::new();
    t.root_mount("254:1", "ext4", "/dev/mapper/vg-root")
        .block(
            "dm-0",
            "254:0",
            Some("CRYPT-LUKS2-0123abcd-luks"),
            &["sda3"],
        )
        .block("sda3", "8:3", None, &[])
        .block("dm-1", "254:1", Some("LVM-abcdefgh"), &["dm-0"]);
    let f = disk_encryption(t.root());
    assert_eq!(f.state, CheckState::Pass, "{f:?}");
    assert!(
        f.detail.contains("dm-1 is on dm-0 is a dm-crypt device"),
        "{f:?}"
    );
}

#[test]
fn disk_plain_partition_fails() {
    let t = Tree::new();
    t.root_mount("259:2", "ext4", "/dev/nvme0n1p2")
        .block("nvme0n1p2", "259:2", None, &[]);
    let f = disk_encryption(t.root());
    assert_eq!(f.state, CheckState::Fail, "{f:?}");
    assert!(f.detail.contains("nvme0n1p2 is not on dm-crypt"), "{f:?}");
}

#[test]
fn disk_lvm_on_plain_fails() {
    let t = Tree::new();
    t.root_mount("254:0", "xfs", "/dev/mapper/vg-root")
        .block("sda2", "8:2", None, &[])
        .block("dm-0", "254:0", Some("LVM-xyz"), &["sda2"]);
    assert_eq!(disk_encryption(t.root()).state, CheckState::Fail);
}

#[test]
fn disk_lvm_partly_on_plain_fails() {
    let t = Tree::new();
    t.root_mount("254:2", "ext4", "/dev/mapper/vg-root")
        .block("dm-0", "254:0", Some("CRYPT-LUKS2-aa-one"), &[])
        .block("sdb1", "8:17", None, &[])
        .block("dm-2", "254:2", Some("LVM-xyz"), &["dm-0", "sdb1"]);
    assert_eq!(disk_encryption(t.root()).state, CheckState::Fail);
}

#[test]
fn disk_btrfs_without_device_number_resolves_its_source() {
    let t = Tree::new();
    t.root_mount("0:33", "btrfs", "/dev/mapper/dm-0-name")
        .block("dm-0", "254:0", Some("CRYPT-LUKS2-aa-root"), &[]);
    // The /dev tree is absent: the device-mapper name is matched in sysfs.
    let f = disk_encryption(t.root());
    assert_eq!(f.state, CheckState::Pass, "{f:?}");
}

#[test]
fn disk_falls_back_to_proc_mounts() {
    let t = Tree::new();
    t.dir("/proc/self/mountinfo")
        .file(
            "/proc/mounts",
            "proc /proc proc rw 0 0\n/dev/dm-0 / ext4 rw,relatime 0 0\n",
        )
        .block("dm-0", "254:0", Some("CRYPT-PLAIN-root"), &[]);
    let f = disk_encryption(t.root());
    assert_eq!(
        (f.state, f.source.as_str()),
        (CheckState::Pass, "/proc/mounts"),
        "{f:?}"
    );
}

#[test]
fn disk_dev_symlink_is_followed() {
    let t = Tree::new();
    t.root_mount("0:40", "btrfs", "/dev/disk/by-uuid/1234")
        .link("/dev/disk/by-uuid/1234", "../../sda2")
        .block("sda2", "8:2", None, &[]);
    assert_eq!(disk_encryption(t.root()).state, CheckState::Fail);
}

#[test_case("0:52", "overlay", "overlay" ; "container overlay")]
#[test_case("0:30", "tmpfs", "tmpfs" ; "tmpfs")]
#[test_case("0:60", "nfs4", "server:/export" ; "nfs")]
#[test_case("0:61", "zfs", "rpool/ROOT/debian" ; "zfs")]
fn disk_without_block_device_is_unknown(dev: &str, fstype: &str, source: &str) {
    let t = Tree::new();
    t.root_mount(dev, fstype, source);
    let f = disk_encryption(t.root());
    assert_eq!(f.state, CheckState::Unknown, "{f:?}");
    assert!(f.detail.contains("not a block device"), "{f:?}");
}

#[test]
fn disk_unreadable_sources_are_unknown() {
    // No mount tables at all.
    assert_eq!(
        disk_encryption(Tree::new().root()).state,
        CheckState::Unknown
    );

    // Garbage mount table.
    let t = Tree::new();
    t.file("/proc/self/mountinfo", "\u{0}\u{1} nonsense\n- - -\n");
    assert_eq!(disk_encryption(t.root()).state, CheckState::Unknown);

    // A root device with no sysfs entry.
    let t = Tree::new();
    t.root_mount("8:1", "ext4", "/dev/sda1");
    assert_eq!(disk_encryption(t.root()).state, CheckState::Unknown);

    // A device-mapper uuid that cannot be read.
    let t = Tree::new();
    t.root_mount("254:0", "ext4", "/dev/dm-0")
        .block("dm-0", "254:0", None, &[])
        .dir("/sys/devices/virtual/block/dm-0/dm/uuid");
    assert_eq!(disk_encryption(t.root()).state, CheckState::Unknown);

    // An underlying device that cannot be inspected, and none that fails.
    let t = Tree::new();
    t.root_mount("254:1", "ext4", "/dev/dm-1")
        .block("dm-1", "254:1", Some("LVM-x"), &["dm-9"]);
    assert_eq!(disk_encryption(t.root()).state, CheckState::Unknown);
}

#[test]
fn disk_device_loop_is_unknown() {
    let t = Tree::new();
    t.root_mount("254:0", "ext4", "/dev/dm-0")
        .block("dm-0", "254:0", Some("LVM-a"), &["dm-1"])
        .block("dm-1", "254:1", Some("LVM-b"), &["dm-0"]);
    assert_eq!(disk_encryption(t.root()).state, CheckState::Unknown);
}

// ---- firewall -----------------------------------------------------------------------

const NFT_DROP_POLICY: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "filter", "handle": 1}}, {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 3, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, {"accept": null}]}}]}"#;

const NFT_REJECT_VIA_JUMP: &str = r#"{"nftables": [{"metainfo": {"json_schema_version": 1}}, {"table": {"family": "inet", "name": "firewalld", "handle": 1}}, {"chain": {"family": "inet", "table": "firewalld", "name": "filter_INPUT", "handle": 1, "type": "filter", "hook": "input", "prio": 10, "policy": "accept"}}, {"chain": {"family": "inet", "table": "firewalld", "name": "filter_IN_public", "handle": 2}}, {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_INPUT", "handle": 3, "expr": [{"jump": {"target": "filter_IN_public"}}]}}, {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_IN_public", "handle": 4, "expr": [{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]}}]}"#;

const NFT_VMAP_DROP: &str = r#"{"nftables": [{"table": {"family": "ip", "name": "f", "handle": 1}}, {"chain": {"family": "ip", "table": "f", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"rule": {"family": "ip", "table": "f", "chain": "in", "handle": 2, "expr": [{"vmap": {"key": {"payload": {"protocol": "tcp", "field": "dport"}}, "data": {"set": [[22, {"accept": null}], [23, {"drop": null}]]}}}]}}]}"#;

const NFT_EMPTY: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}]}"#;

const NFT_NAT_ONLY: &str = r#"{"nftables": [{"table": {"family": "ip", "name": "nat", "handle": 1}}, {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}, {"rule": {"family": "ip", "table": "nat", "chain": "POSTROUTING", "handle": 2, "expr": [{"masquerade": null}]}}]}"#;

const NFT_ACCEPT_ONLY: &str = r#"{"nftables": [{"table": {"family": "inet", "name": "filter", "handle": 1}}, {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"chain": {"family": "inet", "table": "filter", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 3, "expr": [{"accept": null}]}}]}"#;

const NFT_BRIDGE_DROP: &str = r#"{"nftables": [{"table": {"family": "bridge", "name": "b", "handle": 1}}, {"chain": {"family": "bridge", "table": "b", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}]}"#;

/// An `nft` stand-in that prints `json` for `-j list ruleset`.
fn fake_nft(t: &Tree, json: &str) -> PathBuf {
    t.file("/fixture/ruleset.json", json);
    let file = t.path("/fixture/ruleset.json");
    t.script(
        "/fixture/nft",
        &format!(
            "[ \"$*\" = '-j list ruleset' ] || exit 2\ncat '{}'",
            file.display()
        ),
    )
}

fn check_firewall(t: &Tree, nft: &Path) -> posture::Finding {
    firewall(Some(nft), t.root(), Duration::from_secs(5))
}

#[test_case(NFT_DROP_POLICY, CheckState::Pass, "has policy drop" ; "input policy drop")]
#[test_case(NFT_REJECT_VIA_JUMP, CheckState::Pass, "drops or rejects" ; "firewalld reject through a jump")]
#[test_case(NFT_VMAP_DROP, CheckState::Pass, "drops or rejects" ; "drop in a verdict map")]
#[test_case(NFT_EMPTY, CheckState::Fail, "no nftables rule set" ; "empty ruleset")]
#[test_case(NFT_NAT_ONLY, CheckState::Fail, "none filters incoming" ; "nat only")]
#[test_case(NFT_ACCEPT_ONLY, CheckState::Fail, "none drops or rejects" ; "input accepts everything")]
#[test_case(NFT_BRIDGE_DROP, CheckState::Fail, "none filters incoming" ; "bridge family does not count")]
#[test_case("{\"nftables\": 3}", CheckState::Unknown, "cannot understand" ; "unexpected json")]
#[test_case("table ip x {\n", CheckState::Unknown, "cannot understand" ; "garbage")]
fn firewall_json(json: &str, state: CheckState, detail: &str) {
    let t = Tree::new();
    let nft = fake_nft(&t, json);
    let f = check_firewall(&t, &nft);
    assert_eq!(f.state, state, "{f:?}");
    assert!(f.detail.contains(detail), "{f:?}");
}

const NFT_TEXT_IPTABLES_NFT: &str = "\
# Warning: table ip filter is managed by iptables-nft, do not touch!
table ip filter {
\tchain INPUT {
\t\ttype filter hook input priority filter; policy accept;
\t\tiifname \"lo\" counter packets 0 bytes 0 accept
\t\tcounter packets 0 bytes 0 jump ufw-before-input
\t}

\tchain ufw-before-input {
\t\tct state established,related counter packets 0 bytes 0 accept
\t\tmeta l4proto tcp tcp dport { 22, 80 } counter packets 0 bytes 0 reject with tcp reset
\t}
}
table ip nat {
\tset blocked {
\t\ttype ipv4_addr
\t\telements = { 10.0.0.1, 10.0.0.2 }
\t}
\tchain POSTROUTING {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tcomment \"drop nothing\" masquerade
\t}
}
";

const NFT_TEXT_ACCEPT: &str = "\
table inet filter {
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\ttcp dport 22 accept comment \"drop is only a word here\"
\t}
}
";

#[test_case(NFT_TEXT_IPTABLES_NFT, CheckState::Pass ; "iptables-nft rules")]
#[test_case(NFT_TEXT_ACCEPT, CheckState::Fail ; "accept only")]
#[test_case("", CheckState::Fail ; "empty")]
fn firewall_text_when_nft_has_no_json(text: &str, state: CheckState) {
    let t = Tree::new();
    t.file("/fixture/ruleset.txt", text);
    let file = t.path("/fixture/ruleset.txt");
    let nft = t.script(
        "/fixture/nft",
        &format!(
            "if [ \"$1\" = -j ]; then echo 'Error: JSON support not compiled-in' >&2; exit 1; fi\n\
             [ \"$*\" = 'list ruleset' ] || exit 2\ncat '{}'",
            file.display()
        ),
    );
    let f = check_firewall(&t, &nft);
    assert_eq!(
        (f.state, f.source.as_str()),
        (state, "nft list ruleset"),
        "{f:?}"
    );
}

#[test]
fn firewall_text_parser_directly() {
    let f = posture::firewall_from_nft_text(NFT_TEXT_IPTABLES_NFT).unwrap();
    assert_eq!(f.state, CheckState::Pass);
    assert!(f.detail.contains("ip filter INPUT"), "{f:?}");
    assert_eq!(posture::firewall_from_nft_text("table ip x {\n"), None);
    assert_eq!(posture::firewall_from_nft_text("not nft output\n"), None);
}

#[test]
fn firewall_nft_failing_is_unknown() {
    let t = Tree::new();
    let nft = t.script(
        "/fixture/nft",
        "echo 'Error: Operation not permitted (you must be root)' >&2; exit 1",
    );
    let f = check_firewall(&t, &nft);
    assert_eq!(f.state, CheckState::Unknown, "{f:?}");
    assert!(f.detail.contains("Operation not permitted"), "{f:?}");
}

#[test]
fn firewall_nft_missing_is_unknown() {
    let t = Tree::new();
    let f = check_firewall(&t, &t.path("/usr/sbin/nft"));
    assert_eq!(f.state, CheckState::Unknown, "{f:?}");
    assert!(f.detail.contains("is not installed"), "{f:?}");
}

#[test]
fn firewall_not_configured_is_unknown() {
    let f = firewall(None, Path::new("/"), Duration::from_secs(1));
    assert_eq!(f.state, CheckState::Unknown, "{f:?}");
}

#[test]
fn firewall_nft_hanging_is_unknown() {
    let t = Tree::new();
    let nft = t.script("/fixture/nft", "exec sleep 30");
    let start = std::time::Instant::now();
    let f = firewall(Some(&nft), t.root(), Duration::from_millis(200));
    assert_eq!(f.state, CheckState::Unknown, "{f:?}");
    assert!(f.detail.contains("did not finish"), "{f:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn firewall_empty_nftables_but_legacy_iptables_is_unknown() {
    let t = Tree::new();
    let nft = fake_nft(&t, NFT_EMPTY);
    t.file("/proc/net/ip_tables_names", "nat\nfilter\n");
    let f = check_firewall(&t, &nft);
    assert_eq!(f.state, CheckState::Unknown, "{f:?}");
    assert!(f.detail.contains("legacy iptables"), "{f:?}");

    // Legacy tables do not make a passing nftables rule set unknown.
    let t = Tree::new();
    let nft = fake_nft(&t, NFT_DROP_POLICY);
    t.file("/proc/net/ip_tables_names", "filter\n");
    assert_eq!(check_firewall(&t, &nft).state, CheckState::Pass);
}

#[test]
fn firewall_large_output_does_not_block() {
    let t = Tree::new();
    // About 1 MiB of rules, well past a pipe's buffer.
    let mut items = vec![
        r#"{"table": {"family": "inet", "name": "f", "handle": 1}}"#.to_owned(),
        r#"{"chain": {"family": "inet", "table": "f", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}"#.to_owned(),
    ];
    for i in 0..10_000 {
        items.push(format!(
            r#"{{"rule": {{"family": "inet", "table": "f", "chain": "input", "handle": {i}, "expr": [{{"accept": null}}]}}}}"#
        ));
    }
    items.push(r#"{"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 99999, "expr": [{"drop": null}]}}"#.to_owned());
    let nft = fake_nft(&t, &format!("{{\"nftables\": [{}]}}", items.join(", ")));
    assert_eq!(check_firewall(&t, &nft).state, CheckState::Pass);
}

// ---- secure boot --------------------------------------------------------------------

const SB: &str = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

fn efi_tree() -> Tree {
    let t = Tree::new();
    t.file(
        "/sys/firmware/efi/efivars/BootCurrent-8be4df61-93ca-11d2-aa0d-00e098032b8c",
        [6, 0, 0, 0, 1, 0],
    );
    t
}

#[test_case(&[6, 0, 0, 0, 1], CheckState::Pass ; "on")]
#[test_case(&[6, 0, 0, 0, 0], CheckState::Fail ; "off")]
#[test_case(&[6, 0, 0, 0], CheckState::Unknown ; "too short")]
#[test_case(&[6, 0, 0, 0, 7], CheckState::Unknown ; "nonsense value")]
#[test_case(&[6, 0, 0, 0, 1, 1], CheckState::Unknown ; "too long")]
fn secure_boot_variable(bytes: &[u8], state: CheckState) {
    let t = efi_tree();
    t.file(SB, bytes);
    let f = secure_boot(t.root());
    assert_eq!(f.state, state, "{f:?}");
}

#[test]
fn secure_boot_old_sysfs_interface() {
    let t = Tree::new();
    t.file(
        "/sys/firmware/efi/vars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c/data",
        [1],
    );
    assert_eq!(secure_boot(t.root()).state, CheckState::Pass);
}

#[test]
fn secure_boot_variable_absent_on_efi_is_off() {
    let f = secure_boot(efi_tree().root());
    assert_eq!(f.state, CheckState::Fail, "{f:?}");
}

#[test]
fn secure_boot_legacy_bios_is_off() {
    let t = Tree::new();
    t.dir("/sys/firmware/acpi/tables")
        .dir("/sys/firmware/memmap");
    let f = secure_boot(t.root());
    assert_eq!(f.state, CheckState::Fail, "{f:?}");
    assert!(f.detail.contains("legacy BIOS"), "{f:?}");
}

#[test]
fn secure_boot_unreadable_is_unknown() {
    // No /sys/firmware at all, or an empty one (a container's masked view).
    assert_eq!(secure_boot(Tree::new().root()).state, CheckState::Unknown);
    let t = Tree::new();
    t.dir("/sys/firmware");
    assert_eq!(secure_boot(t.root()).state, CheckState::Unknown);
    // efivarfs not mounted.
    let t = Tree::new();
    t.dir("/sys/firmware/efi/efivars");
    assert_eq!(secure_boot(t.root()).state, CheckState::Unknown);
    // The variable cannot be read.
    let t = efi_tree();
    t.dir(SB);
    assert_eq!(secure_boot(t.root()).state, CheckState::Unknown);
}

// ---- screen lock --------------------------------------------------------------------

fn dconf(profile: &str, keys: &str, locks: &str) -> Tree {
    let t = Tree::new();
    t.file("/etc/dconf/profile/user", profile)
        .file("/etc/dconf/db/local.d/00-screensaver", keys)
        .file("/etc/dconf/db/local.d/locks/screensaver", locks);
    t
}

const PROFILE: &str = "user-db:user\nsystem-db:local\n";
const LOCKED: &str =
    "/org/gnome/desktop/screensaver/lock-enabled\n/org/gnome/desktop/session/idle-delay\n";

#[test_case(PROFILE, "[org/gnome/desktop/screensaver]\nlock-enabled=true\n", LOCKED, CheckState::Pass ; "enabled and locked")]
#[test_case(PROFILE, "[org/gnome/desktop/screensaver]\nlock-enabled=false\n", LOCKED, CheckState::Fail ; "disabled and locked")]
#[test_case(PROFILE, "[org/gnome/desktop/screensaver]\nlock-enabled=true\n[org/gnome/desktop/session]\nidle-delay=uint32 0\n", LOCKED, CheckState::Fail ; "never idle")]
#[test_case(PROFILE, "[org/gnome/desktop/screensaver]\nlock-enabled=true\n[org/gnome/desktop/lockdown]\ndisable-lock-screen=true\n", "/org/gnome/desktop/lockdown/disable-lock-screen\n/org/gnome/desktop/screensaver/lock-enabled\n", CheckState::Fail ; "lock screen disabled")]
#[test_case(PROFILE, "[org/gnome/desktop/screensaver]\nlock-enabled=true\n", "", CheckState::Unknown ; "enabled but not locked")]
#[test_case("user-db:user\n", "[org/gnome/desktop/screensaver]\nlock-enabled=true\n", LOCKED, CheckState::Unknown ; "database not in the profile")]
#[test_case(PROFILE, "\u{0}garbage[[[\n=", LOCKED, CheckState::Unknown ; "garbage key file")]
fn screen_lock_dconf(profile: &str, keys: &str, locks: &str, state: CheckState) {
    let t = dconf(profile, keys, locks);
    let f = screen_lock(t.root());
    assert_eq!(f.state, state, "{f:?}");
}

#[test]
fn screen_lock_unreadable_is_unknown() {
    assert_eq!(screen_lock(Tree::new().root()).state, CheckState::Unknown);
    let t = Tree::new();
    t.dir("/etc/dconf/profile/user");
    assert_eq!(screen_lock(t.root()).state, CheckState::Unknown);
    let t = dconf(PROFILE, "", LOCKED);
    fs::remove_file(t.path("/etc/dconf/db/local.d/00-screensaver")).unwrap();
    t.dir("/etc/dconf/db/local.d/00-screensaver");
    assert_eq!(screen_lock(t.root()).state, CheckState::Unknown);
}

// ---- processes ----------------------------------------------------------------------

fn proc_tree() -> Tree {
    let t = Tree::new();
    t.file("/proc/1/comm", "systemd\n")
        .file("/proc/1/cmdline", "/sbin/init\0splash\0")
        .file("/proc/200/comm", "falcon-sensor\n")
        .file("/proc/300/comm", "very-long-agen\n") // not the first 15 bytes
        .file("/proc/301/comm", "another-long-ag\n") // the first 15 bytes of a long name
        .file("/proc/400/comm", "osqueryd-worker\n")
        .file(
            "/proc/400/cmdline",
            "/opt/osquery/bin/osqueryd\0--flagfile\0x\0",
        )
        .dir("/proc/500/comm") // unreadable
        .file("/proc/self/comm", "impostor\n") // not a pid
        .file("/proc/net/comm", "impostor2\n");
    t
}

#[test]
fn processes_found_by_comm_and_argv0() {
    let t = proc_tree();
    let want: Vec<String> = [
        "falcon-sensor",
        "osqueryd",
        "missing",
        "another-long-agent",
        "very-long-agent-name",
        "falcon-sensor",
        "impostor",
        "init",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        running_processes(t.root(), &want),
        ["falcon-sensor", "osqueryd", "another-long-agent", "init"]
    );
}

#[test]
fn processes_without_proc_are_none() {
    let want = vec!["falcon-sensor".to_owned()];
    assert!(running_processes(Tree::new().root(), &want).is_empty());
    assert!(running_processes(proc_tree().root(), &[]).is_empty());
}

// ---- the whole report ---------------------------------------------------------------

#[test]
fn collects_a_full_report_from_a_fixture_tree() {
    let t = proc_tree();
    t.file("/etc/os-release", "ID=ubuntu\nVERSION_ID=\"24.04\"\n")
        .file("/proc/sys/kernel/osrelease", "6.8.0-45-generic\n")
        .file("/proc/sys/kernel/hostname", "laptop\n")
        .file("/sys/class/dmi/id/product_serial", "SN-123\n")
        .root_mount("254:0", "ext4", "/dev/mapper/root")
        .block("dm-0", "254:0", Some("CRYPT-LUKS2-x-root"), &[]);
    t.file(
        "/sys/firmware/efi/efivars/BootCurrent-8be4df61-93ca-11d2-aa0d-00e098032b8c",
        [6, 0, 0, 0, 1, 0],
    )
    .file(SB, [6, 0, 0, 0, 1]);
    let nft = fake_nft(&t, NFT_DROP_POLICY);
    let probe = Probe {
        root: t.root().to_path_buf(),
        nft: Some(nft),
        nft_timeout: Duration::from_secs(5),
        required_processes: vec!["falcon-sensor".into(), "osqueryd".into(), "nope".into()],
        client_version: "0.3.1".into(),
    };
    let now: jiff::Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
    let collected = collect_detailed(&probe, now);
    let r = &collected.report;
    assert_eq!(r.collected_at, now);
    assert_eq!(r.os_name.as_deref(), Some("ubuntu"));
    assert_eq!(r.os_version.as_deref(), Some("24.04"));
    assert_eq!(r.kernel_version.as_deref(), Some("6.8.0-45-generic"));
    assert_eq!(r.disk_encryption, CheckState::Pass);
    assert_eq!(r.firewall, CheckState::Pass);
    assert_eq!(r.secure_boot, CheckState::Pass);
    assert_eq!(r.screen_lock, CheckState::Unknown);
    assert_eq!(r.processes, ["falcon-sensor", "osqueryd"]);
    assert_eq!(r.client_version.as_deref(), Some("0.3.1"));
    assert_eq!(r.hostname.as_deref(), Some("laptop"));
    assert_eq!(r.serial.as_deref(), Some("SN-123"));
    assert_eq!(collected.findings.firewall.state, r.firewall);
    // The report round-trips through JSON, findings too.
    let json = serde_json::to_string(&collected).unwrap();
    assert_eq!(
        serde_json::from_str::<posture::Collected>(&json).unwrap(),
        collected
    );
}

#[test]
fn an_empty_root_reports_nothing_as_passing() {
    let t = Tree::new();
    let probe = Probe {
        root: t.root().to_path_buf(),
        nft: None,
        nft_timeout: Duration::from_secs(1),
        required_processes: vec!["falcon-sensor".into()],
        client_version: "0.1.0".into(),
    };
    let r = collect(&probe, jiff::Timestamp::UNIX_EPOCH);
    for state in [r.disk_encryption, r.firewall, r.secure_boot, r.screen_lock] {
        assert_eq!(state, CheckState::Unknown);
    }
    assert_eq!(
        (
            r.os_name,
            r.os_version,
            r.kernel_version,
            r.hostname,
            r.serial
        ),
        (None, None, None, None, None)
    );
    assert!(r.processes.is_empty());
    assert_eq!(r.client_version.as_deref(), Some("0.1.0"));
}

#[test]
fn this_machine_can_be_probed() {
    let probe = Probe::system("0.1.0", vec!["definitely-not-running-xyz".into()]);
    let c = collect_detailed(&probe, jiff::Timestamp::now());
    // Whatever this machine is, the probes finish and name their sources.
    for f in [
        &c.findings.disk_encryption,
        &c.findings.firewall,
        &c.findings.secure_boot,
        &c.findings.screen_lock,
    ] {
        assert!(!f.source.is_empty() && !f.detail.is_empty(), "{f:?}");
    }
    assert!(c.report.processes.is_empty());
    assert!(c.report.kernel_version.is_some());
}
