//! The node's state file: what [`Output::Persist`](meshproxy_core::io::Output)
//! asks to keep across restarts, written atomically (temporary file, fsync,
//! rename, fsync of the directory) so a crash leaves the old or the new
//! snapshot, never a torn one.
//!
//! Format: the 8 bytes `MPSTATE1`, then the client's sticky pool bytes as the
//! core encodes them.

use meshproxy_core::io::StateSnapshot;
use meshproxy_core::selection::sticky::{self, SavedPin, SnapshotError};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a state file.
const MAGIC: &[u8; 8] = b"MPSTATE1";
/// A state file larger than this is refused rather than read into memory.
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read, written or renamed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file does not start with the expected magic bytes.
    #[error("state file {path} is not a meshproxy state file")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file holds a sticky pool snapshot that does not read back.
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with the snapshot.
        source: SnapshotError,
    },
    /// There is no file at the path.
    #[error("state file {path} does not exist (a node writes it once it holds a sticky pin)")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_STATE_BYTES`].
    #[error("state file {path} is too large ({len} bytes)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_owned(), source }
}

/// Reads the snapshot, `None` if there is no file yet.
pub fn load(path: &Path) -> Result<Option<StateSnapshot>, StateError> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    if len > MAX_STATE_BYTES {
        return Err(StateError::TooLarge { path: path.to_owned(), len });
    }
    let bytes = fs::read(path).map_err(io_err(path))?;
    let sticky = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| StateError::BadMagic { path: path.to_owned() })?;
    Ok(Some(StateSnapshot { sticky: sticky.to_vec() }))
}

/// The sticky pins the file at `path` holds, least recently used first
/// (`meshproxy state show`), read by the same loader and snapshot reader as
/// a starting node uses.
pub fn pins(path: &Path) -> Result<Vec<SavedPin>, StateError> {
    let snapshot = load(path)?.ok_or_else(|| StateError::Missing { path: path.to_owned() })?;
    sticky::decode(&snapshot.sticky)
        .map_err(|source| StateError::Corrupt { path: path.to_owned(), source })
}

/// Replaces the snapshot atomically.
pub fn save(path: &Path, snapshot: &StateSnapshot) -> Result<(), StateError> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + snapshot.sticky.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&snapshot.sticky);
    write_atomic(path, &bytes, false).map_err(io_err(path))
}

/// Writes `bytes` to `path` through a temporary file in the same directory:
/// write, fsync, rename over the old file, fsync the directory. With `private`
/// the file is created readable by its owner only (unix mode 0600).
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename itself must survive a crash: sync the directory entry.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_replace_atomically_and_reject_foreign_files() {
        let dir = std::env::temp_dir().join(format!("meshproxy-state-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("state");
        assert!(load(&path).expect("no file is fine").is_none());
        let first = StateSnapshot { sticky: vec![1, 2, 3] };
        save(&path, &first).expect("saved");
        assert_eq!(load(&path).expect("loads"), Some(first));
        let second = StateSnapshot { sticky: Vec::new() };
        save(&path, &second).expect("saved");
        assert_eq!(load(&path).expect("loads"), Some(second));
        let leftovers: Vec<_> = fs::read_dir(&dir).expect("list").collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
        fs::write(&path, b"not a state file").expect("write");
        assert!(matches!(load(&path), Err(StateError::BadMagic { .. })));
        let _ = fs::remove_dir_all(&dir);
    }
}
