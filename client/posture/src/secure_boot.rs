//! Secure boot: whether the firmware booted this system with secure boot on.
//!
//! The source is the EFI variable `SecureBoot` in
//! `<root>/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c`:
//! four attribute bytes, then one value byte, 1 meaning on (the older interface
//! `<root>/sys/firmware/efi/vars/SecureBoot-…/data` holds the value byte alone).
//!
//! - **pass**: the value is 1.
//! - **fail**: the value is 0; or the EFI variables are readable and there is no
//!   `SecureBoot` variable (firmware without secure boot); or `<root>/sys/firmware` lists
//!   firmware entries but no `efi`: the system booted through a legacy BIOS, which has no
//!   secure boot, so it is certainly off.
//! - **unknown**: `<root>/sys/firmware` is missing or empty (containers often hide it), the
//!   EFI variables are not mounted, or the variable cannot be read or makes no sense.

use std::fs;
use std::io;
use std::path::Path;

use model::CheckState;

use crate::Finding;
use crate::read::{self, under};

const VAR: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Whether secure boot is on, from the EFI variables under `root`.
pub fn secure_boot(root: &Path) -> Finding {
    let firmware = under(root, "/sys/firmware");
    let efi = firmware.join("efi");
    let efivars = efi.join("efivars");
    let source = format!("/sys/firmware/efi/efivars/{VAR}");
    if !efi.is_dir() {
        let entries = fs::read_dir(&firmware)
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        return if entries > 0 {
            Finding::new(
                CheckState::Fail,
                "/sys/firmware/efi",
                "the system booted through a legacy BIOS (no EFI), which has no secure boot",
            )
        } else {
            Finding::new(
                CheckState::Unknown,
                "/sys/firmware",
                "the firmware information is not visible (e.g. inside a container)",
            )
        };
    }
    match read::bytes(&efivars.join(VAR)) {
        Ok(bytes) => from_value(&source, bytes.get(4).copied(), bytes.len() == 5),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The older sysfs interface, when efivarfs is not mounted.
            let old = efi.join("vars").join(VAR).join("data");
            if let Ok(bytes) = read::bytes(&old) {
                let source = format!("/sys/firmware/efi/vars/{VAR}/data");
                return from_value(&source, bytes.first().copied(), bytes.len() == 1);
            }
            let mounted = fs::read_dir(&efivars).is_ok_and(|mut d| d.next().is_some());
            if mounted {
                Finding::new(
                    CheckState::Fail,
                    source,
                    "the firmware has no SecureBoot variable: it does not support secure boot",
                )
            } else {
                Finding::new(
                    CheckState::Unknown,
                    "/sys/firmware/efi/efivars",
                    "the EFI variables are not available (efivarfs is not mounted)",
                )
            }
        }
        Err(e) => Finding::new(
            CheckState::Unknown,
            source,
            format!("the SecureBoot variable could not be read: {e}"),
        ),
    }
}

fn from_value(source: &str, value: Option<u8>, well_formed: bool) -> Finding {
    match (well_formed, value) {
        (true, Some(1)) => Finding::new(CheckState::Pass, source, "secure boot is on"),
        (true, Some(0)) => Finding::new(CheckState::Fail, source, "secure boot is off"),
        _ => Finding::new(
            CheckState::Unknown,
            source,
            "the SecureBoot variable has an unexpected value",
        ),
    }
}
