//! Bounded, never-panicking reads of small text files.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// The most we read of any one file: the files we read are a few bytes to a few KiB, and a
/// broken or hostile one must not make us allocate without bound.
pub(crate) const MAX_FILE_BYTES: u64 = 256 * 1024;

/// Reads at most [`MAX_FILE_BYTES`] of `path`.
pub(crate) fn bytes(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Reads at most [`MAX_FILE_BYTES`] of `path` as text; invalid UTF-8 is an error.
pub(crate) fn text(path: &Path) -> io::Result<String> {
    String::from_utf8(bytes(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The first line of `path`, trimmed; `None` when unreadable or blank.
pub(crate) fn line(path: &Path) -> Option<String> {
    let text = text(path).ok()?;
    let first = text.lines().next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// `root` joined with an absolute path such as `/proc/self/mountinfo`: the path's leading
/// `/` does not replace the root, and `..` cannot climb above it.
pub(crate) fn under(root: &Path, abs: impl AsRef<Path>) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in abs.as_ref().components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                if out != root {
                    out.pop();
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_keeps_the_root() {
        let root = Path::new("/fixture");
        assert_eq!(
            under(root, "/etc/os-release"),
            Path::new("/fixture/etc/os-release")
        );
        assert_eq!(under(root, "/../../etc/x"), Path::new("/fixture/etc/x"));
        assert_eq!(
            under(root, "dev/mapper/../dm-0"),
            Path::new("/fixture/dev/dm-0")
        );
    }

    #[test]
    fn a_directory_is_not_a_line() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(line(dir.path()), None);
    }
}
