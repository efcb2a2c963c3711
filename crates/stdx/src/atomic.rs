//! Files and folders that appear whole or not at all.
//!
//! Every file graft writes for others to read (run folders, heads, cache entries, extraction output) goes
//! through here: the content is written under a hidden temporary name in the destination's folder, fsynced,
//! made readable like any other file (a temporary file starts private), renamed over the destination, and the
//! rename is made durable by syncing the folder. A crash leaves at worst a hidden temporary file, never a
//! half-written destination.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file being written; it replaces its destination on [`AtomicFile::commit`] and vanishes if dropped.
#[derive(Debug)]
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    destination: PathBuf,
}

impl AtomicFile {
    /// Starts a file that will become `destination` (its folder must exist).
    pub fn create(destination: &Path) -> io::Result<AtomicFile> {
        let dir = parent_dir(destination);
        let name = destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // tempfile's error names its random temporary (callers name the destination) and hides the OS error
        // number: a missing folder is reported from the folder itself, anything else by its kind.
        std::fs::metadata(dir)?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|e| io::Error::from(e.kind()))?;
        Ok(AtomicFile {
            temp,
            destination: destination.to_path_buf(),
        })
    }

    /// The file being written (e.g. to hand to a Parquet writer).
    pub fn file_mut(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Where the content goes on commit.
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// Flushes, fsyncs and renames the file into place.
    pub fn commit(mut self) -> io::Result<()> {
        self.temp.as_file_mut().flush()?;
        self.temp.as_file().sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.temp.path(), std::fs::Permissions::from_mode(0o644))?;
        }
        self.temp.persist(&self.destination).map_err(|e| e.error)?;
        sync_dir(parent_dir(&self.destination));
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.as_file_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.as_file_mut().flush()
    }
}

/// Writes `content` to `path` atomically.
pub fn write(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(content)?;
    file.commit()
}

/// Copies the file `from` to `path` atomically.
pub fn copy(from: &Path, path: &Path) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    io::copy(&mut File::open(from)?, file.file_mut())?;
    file.commit()
}

/// A folder filled under a hidden name beside its destination, renamed into place when complete.
#[derive(Debug)]
pub struct StagedDir {
    staging: PathBuf,
    destination: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Creates the hidden staging folder for `destination` (whose parent is created if missing); the
    /// destination must not exist yet.
    pub fn create(destination: &Path) -> io::Result<StagedDir> {
        let parent = parent_dir(destination);
        std::fs::create_dir_all(parent)?;
        let name = destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir(&staging)?;
        Ok(StagedDir {
            staging,
            destination: destination.to_path_buf(),
            committed: false,
        })
    }

    /// The folder to write into.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Where the folder goes on commit.
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// Renames the staged folder into place.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        std::fs::rename(&self.staging, &self.destination)?;
        sync_dir(parent_dir(&self.destination));
        self.committed = true;
        Ok(self.destination.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: an abandoned staging folder is hidden and never read.
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Removes temporary files that an interrupted writer of `destination` left beside it (never the
/// destination itself); returns how many it removed.
pub fn remove_stale(destination: &Path) -> usize {
    let (Some(name), dir) = (destination.file_name(), parent_dir(destination)) else {
        return 0;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix)
            && file.ends_with(".partial")
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename durable; not every file system allows syncing a folder, so failure is ignored.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_no_temporary_file() {
        // On main `export` reported `… at path "/dir/.x.onnx.Vc2L8S.partial"`: the caller names the target.
        let dir = tempfile::tempdir().unwrap();
        let err = write(&dir.path().join("missing/x.onnx"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!err.to_string().contains("partial"), "{err}");
    }

    #[test]
    fn a_committed_file_replaces_its_destination_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        std::fs::write(&path, "old").unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_dropped_file_never_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn stale_temporaries_are_recognised_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let abandoned = AtomicFile::create(&path).unwrap();
        let (_, kept) = abandoned.temp.keep().unwrap();
        std::fs::write(dir.path().join("other.parquet"), "x").unwrap();
        assert!(kept.exists());
        assert_eq!(remove_stale(&path), 1);
        assert!(!kept.exists());
        assert!(dir.path().join("other.parquet").exists());
    }

    #[test]
    fn a_staged_folder_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("runs/x/1");
        let staged = StagedDir::create(&dest).unwrap();
        std::fs::write(staged.path().join("a"), "1").unwrap();
        assert!(!dest.exists());
        let path = staged.commit().unwrap();
        assert_eq!(std::fs::read_to_string(path.join("a")).unwrap(), "1");
        let abandoned = StagedDir::create(&dir.path().join("runs/x/2")).unwrap();
        let staging = abandoned.path().to_path_buf();
        drop(abandoned);
        assert!(!staging.exists());
    }
}
