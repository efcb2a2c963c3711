//! The hidden work folder beside the output: one file per finished chunk with its checksum, the lock that
//! keeps two jobs off one output, and the clean-up of what an interrupted job left.

use std::path::{Path, PathBuf};

use graft_ingest::count_rows;

use super::job::{JobIdentity, PartManifest, Shard};
use crate::JobError;
use crate::write_atomic;

/// Rows in chunk `c` of an input of `rows` rows.
pub(crate) fn chunk_len(c: u64, rows: u64, chunk_rows: usize) -> usize {
    rows.saturating_sub(c * chunk_rows as u64)
        .min(chunk_rows as u64) as usize
}

pub(crate) fn chunk_path(work: &Path, c: u64) -> PathBuf {
    work.join(format!("chunk-{c:09}.parquet"))
}

/// The sha256 of a finished chunk, written after the chunk: a chunk without one, or whose bytes no longer
/// match it, is extracted again on resume.
pub(crate) fn checksum_path(work: &Path, c: u64) -> PathBuf {
    work.join(format!("verify-{c:09}.sha256"))
}

/// The work folder: resumed if it belongs to this very job; an abandoned one made with other settings or
/// another input is of no use and is discarded. The caller holds the output's [`OutputLock`].
pub(crate) fn claim_work_dir(output: &Path, identity: &JobIdentity) -> Result<PathBuf, JobError> {
    let work = work_dir(output);
    let identity_file = work.join("job.json");
    if work.exists() {
        let theirs: Option<JobIdentity> = std::fs::read(&identity_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if theirs.as_ref() != Some(identity) {
            tracing::warn!(
                work = %work.display(),
                "discarding an interrupted job made with other settings or another input"
            );
            std::fs::remove_dir_all(&work).map_err(JobError::io(&work))?;
        }
    }
    if !work.exists() {
        std::fs::create_dir_all(&work).map_err(JobError::io(&work))?;
        write_atomic(
            &identity_file,
            &serde_json::to_vec_pretty(identity).expect("identity serialises"),
        )?;
    }
    Ok(work)
}

/// An interrupted job's work folder that holds no finished chunk is of no use to a resume: removed when
/// the job fails, so that a failed start leaves nothing behind.
pub(crate) fn discard_if_no_chunks(work: &Path, e: JobError) -> JobError {
    let has_chunks = std::fs::read_dir(work).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with("chunk-"))
    });
    if !has_chunks {
        let _ = std::fs::remove_dir_all(work);
    }
    e
}

/// One process per output, decided before anything is read or written: a lock file beside the output,
/// created if missing, locked for the whole job and removed (while still held) when the job ends.
/// (Locking `job.json` inside the work folder raced: a second process could find the folder before its
/// `job.json` existed and discard it.)
pub(crate) struct OutputLock {
    pub(crate) path: PathBuf,
    pub(crate) file: std::fs::File,
}

impl OutputLock {
    pub(crate) fn take(output: &Path) -> Result<OutputLock, JobError> {
        let path = lock_path(output);
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(JobError::io(&path))?;
            if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
                return Err(JobError::invalid(
                    format!("another extract is writing {} right now", output.display()),
                    "wait for it to finish (running the same command afterwards is a no-op), or stop it and run again to resume",
                ));
            }
            // The holder before us removes the file as it ends: a lock on a removed file guards nothing,
            // so it counts only while the path still names the file we locked.
            if same_file(&file, &path) {
                return Ok(OutputLock { path, file });
            }
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while held: a process waiting on this file sees it gone and opens a fresh one.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(unix)]
pub(crate) fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
pub(crate) fn same_file(_: &std::fs::File, path: &Path) -> bool {
    path.exists()
}

/// The hidden lock file beside an output: held while a job writes it.
pub(crate) fn lock_path(output: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(output.file_name().unwrap_or_default());
    name.push(".lock");
    output.with_file_name(name)
}

/// Chunks finished by an earlier, interrupted run. A file exists only once complete (it is renamed into
/// place); one whose row count is off is recomputed.
pub(crate) fn finished_chunks(
    work: &Path,
    mine: &[u64],
    input_rows: u64,
    chunk_rows: usize,
) -> Result<std::collections::BTreeSet<u64>, JobError> {
    let mut done = std::collections::BTreeSet::new();
    for &c in mine {
        let path = chunk_path(work, c);
        if !path.exists() {
            continue;
        }
        let recorded = std::fs::read_to_string(checksum_path(work, c)).ok();
        let intact = recorded
            .is_some_and(|r| graft_stdx::sha256_file(&path).is_ok_and(|actual| actual == r.trim()))
            && count_rows(&path).is_ok_and(|n| n == chunk_len(c, input_rows, chunk_rows) as u64);
        if intact {
            done.insert(c);
        } else {
            tracing::warn!(
                chunk = %path.display(),
                "a finished chunk is damaged or unverified; extracting it again"
            );
            std::fs::remove_file(&path).map_err(JobError::io(&path))?;
        }
    }
    Ok(done)
}

/// Removes temporary files that a killed run of this job left beside the output (`.<name>.tmp-<pid>`,
/// `.<name>.json.tmp-<pid>`); the caller holds the job's lock, so no live process is writing them.
pub(crate) fn remove_stale_temporaries(output: &Path) {
    let removed = graft_stdx::atomic::remove_stale(output)
        + graft_stdx::atomic::remove_stale(&sidecar(output));
    if removed > 0 {
        tracing::info!(
            removed,
            "removed temporary files left by an interrupted run"
        );
    }
}

/// `<output>.json`: the manifest beside a finished file.
pub(crate) fn sidecar(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    output.with_file_name(name)
}

/// The hidden folder where an unfinished job keeps its chunks.
pub(crate) fn work_dir(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    output.with_file_name(format!(".{name}.partial"))
}

/// The manifest of `output` if it is complete and was made by this job.
pub(crate) fn finished_manifest(
    output: &Path,
    identity: &JobIdentity,
    shard: Shard,
) -> Result<Option<PartManifest>, JobError> {
    let Ok(bytes) = std::fs::read(sidecar(output)) else {
        return Ok(None);
    };
    let Ok(manifest) = serde_json::from_slice::<PartManifest>(&bytes) else {
        return Ok(None);
    };
    if manifest.identity != *identity || manifest.shard != shard || !output.exists() {
        return Ok(None);
    }
    let actual = graft_assets::sha256_file(output).map_err(JobError::io(output))?;
    Ok((actual == manifest.file_sha256).then_some(manifest))
}
