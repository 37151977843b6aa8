//! Files read again when they change (tokens, TLS certificates). The
//! content is compared rather than the modification time: Kubernetes
//! updates a mounted Secret by swapping a symlink, and a file rewritten
//! within the same second keeps its time on some filesystems.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::sync;

/// How often the watched files are looked at.
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A file and what was last seen of it.
pub struct Watched {
    path: PathBuf,
    last: Mutex<Seen>,
}

enum Seen {
    Nothing,
    Content(Vec<u8>),
    /// The last read failed (reported once, until a read succeeds).
    Failed,
}

impl Watched {
    /// Watches `path`; nothing seen yet.
    pub fn new(path: &Path) -> Watched {
        Watched { path: path.into(), last: Mutex::new(Seen::Nothing) }
    }

    /// The file's content, now remembered as seen.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        let content = std::fs::read(&self.path)?;
        *sync::lock(&self.last) = Seen::Content(content.clone());
        Ok(content)
    }

    /// The file's content if it changed since last seen; a read error is
    /// returned once, then nothing until the file reads again.
    pub fn changed(&self) -> std::io::Result<Option<Vec<u8>>> {
        let mut last = sync::lock(&self.last);
        match std::fs::read(&self.path) {
            Ok(content) => {
                if matches!(&*last, Seen::Content(c) if *c == content) {
                    return Ok(None);
                }
                *last = Seen::Content(content.clone());
                Ok(Some(content))
            }
            Err(_) if matches!(*last, Seen::Failed) => Ok(None),
            Err(e) => {
                *last = Seen::Failed;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_once_and_a_failure_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a").unwrap();
        let w = Watched::new(&path);
        assert_eq!(w.read().unwrap(), b"a");
        assert_eq!(w.changed().unwrap(), None);
        std::fs::write(&path, "b").unwrap();
        assert_eq!(w.changed().unwrap().as_deref(), Some(&b"b"[..]));
        assert_eq!(w.changed().unwrap(), None);
        std::fs::remove_file(&path).unwrap();
        assert!(w.changed().is_err());
        assert_eq!(w.changed().unwrap(), None, "reported once");
        std::fs::write(&path, "b").unwrap();
        assert_eq!(w.changed().unwrap().as_deref(), Some(&b"b"[..]), "back: read again");
    }
}
