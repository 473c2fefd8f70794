//! The two reload triggers that nobody waits on: SIGHUP and a change of the
//! config file.
//!
//! The file is watched through its directory (`notify`: inotify on Linux),
//! so an editor that writes a new file and renames it over the old one is
//! seen like an in-place write, and the watch survives the swap. Events for
//! the file are debounced: the reload runs once no event came for
//! [`DEBOUNCE`]. A file read mid-write fails validation, is refused whole,
//! and the write's later events trigger the next try.

use super::ReloadHandle;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Quiet time after a file event before the reload runs.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// Reloads on every SIGHUP, until the task is aborted.
pub fn on_sighup(handle: ReloadHandle) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            handle.trigger("SIGHUP");
        }
    }))
}

/// A watch on the config file; dropping it stops watching.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch").finish_non_exhaustive()
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reloads when `file` changes (debounced by [`DEBOUNCE`]).
pub fn on_change(file: &Path, handle: ReloadHandle) -> notify::Result<FileWatch> {
    let file = std::path::absolute(file).map_err(notify::Error::io)?;
    let dir = file.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let name = file.file_name().map(ToOwned::to_owned);
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the file does not change it.
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Quiet for DEBOUNCE: the editor is done (or the next event retries).
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            handle.trigger("config file changed");
        }
    });
    Ok(FileWatch { _watcher: watcher, task })
}
