//! Image data: IDX files (the MNIST family's format) and folders of class sub-folders.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::IngestError;

/// Images of one size, 8-bit grey, as stored in an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub height: u32,
    /// Columns per image.
    pub width: u32,
    /// `count * height * width` bytes, image after image, row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = (self.height * self.width) as usize;
        &self.pixels[i * size..(i + 1) * size]
    }
}

fn bad(path: &Path, message: impl Into<String>) -> IngestError {
    IngestError::Parse {
        path: path.to_path_buf(),
        line: 0,
        message: message.into(),
    }
}

/// The bytes of an IDX file, gunzipped if it is a `.gz`.
fn read_idx_bytes(path: &Path) -> Result<Vec<u8>, IngestError> {
    let raw = std::fs::read(path).map_err(|_| IngestError::NotFound {
        path: path.to_path_buf(),
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks an IDX header (`0 0 0x08 ndim`, then big-endian sizes) and returns the sizes and the data.
fn idx_body<'a>(
    path: &Path,
    bytes: &'a [u8],
    ndim: u8,
) -> Result<(Vec<u32>, &'a [u8]), IngestError> {
    let header = 4 + 4 * usize::from(ndim);
    if bytes.len() < header || bytes[0..3] != [0, 0, 0x08] || bytes[3] != ndim {
        return Err(bad(
            path,
            format!("not an IDX file of unsigned bytes with {ndim} dimension(s)"),
        ));
    }
    let dims: Vec<u32> = (0..usize::from(ndim))
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")))
        .collect();
    let expected: usize = dims.iter().map(|&d| d as usize).product();
    let body = &bytes[header..];
    if body.len() != expected {
        return Err(bad(
            path,
            format!(
                "the header announces {expected} bytes of data ({dims:?}), the file has {}",
                body.len()
            ),
        ));
    }
    Ok((dims, body))
}

/// Reads an IDX image file (`idx3-ubyte`, optionally gzipped).
pub fn read_idx_images(path: &Path) -> Result<IdxImages, IngestError> {
    let bytes = read_idx_bytes(path)?;
    let (dims, body) = idx_body(path, &bytes, 3)?;
    Ok(IdxImages {
        count: dims[0] as usize,
        height: dims[1],
        width: dims[2],
        pixels: body.to_vec(),
    })
}

/// Reads an IDX label file (`idx1-ubyte`, optionally gzipped).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, IngestError> {
    let bytes = read_idx_bytes(path)?;
    let (_, body) = idx_body(path, &bytes, 1)?;
    Ok(body.to_vec())
}

/// The images of a folder with one sub-folder per class (`root/<class>/*.png|jpg|jpeg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// Image files, sorted by class, then by file name.
    pub files: Vec<PathBuf>,
    /// Class index of each file, into `classes`.
    pub labels: Vec<usize>,
    /// Sub-folder names, sorted.
    pub classes: Vec<String>,
    /// Files skipped because their extension is not an image's.
    pub skipped: usize,
}

/// Lists `root/<class>/*.{png,jpg,jpeg}` (extensions in any case); other files are counted and skipped.
pub fn image_folder(root: &Path) -> Result<ImageFolder, IngestError> {
    let list = |dir: &Path| -> Result<Vec<PathBuf>, IngestError> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|_| IngestError::NotFound {
                path: dir.to_path_buf(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        Ok(entries)
    };
    let class_dirs: Vec<PathBuf> = list(root)?.into_iter().filter(|p| p.is_dir()).collect();
    let mut folder = ImageFolder {
        files: Vec::new(),
        labels: Vec::new(),
        classes: Vec::new(),
        skipped: 0,
    };
    for dir in class_dirs {
        let class = folder.classes.len();
        let mut found = 0;
        for file in list(&dir)? {
            let is_image = file.is_file()
                && file
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase())
                    .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg"));
            if is_image {
                folder.files.push(file);
                folder.labels.push(class);
                found += 1;
            } else {
                folder.skipped += 1;
            }
        }
        if found > 0 {
            folder.classes.push(
                dir.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    if folder.classes.len() < 2 {
        return Err(IngestError::ImageFolder {
            path: root.to_path_buf(),
            classes: folder.classes.len(),
        });
    }
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::fixture;

    #[test]
    fn idx_images_and_labels_read_plain_and_gzipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        images.extend(0u8..12);
        let plain = dir.path().join("i.idx");
        std::fs::write(&plain, &images).unwrap();
        let gz = dir.path().join("i.idx.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&images).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        for path in [&plain, &gz] {
            let read = read_idx_images(path).unwrap();
            assert_eq!((read.count, read.height, read.width), (2, 2, 3));
            assert_eq!(read.image(1), &[6, 7, 8, 9, 10, 11]);
        }
        let labels = dir.path().join("l.idx");
        std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 3, 9, 0, 4]).unwrap();
        assert_eq!(read_idx_labels(&labels).unwrap(), [9, 0, 4]);
        let err = read_idx_images(&labels).unwrap_err().to_string();
        assert!(
            err.contains("not an IDX file of unsigned bytes with 3 dimension(s)"),
            "{err}"
        );
        std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 5, 9]).unwrap();
        let err = read_idx_labels(&labels).unwrap_err().to_string();
        assert!(err.contains("announces 5 bytes of data"), "{err}");
    }

    #[test]
    fn image_folder_lists_classes_in_order_and_skips_other_files() {
        let folder = image_folder(&fixture("tiny-images")).unwrap();
        assert_eq!(folder.classes, ["dark", "light"]);
        assert_eq!(folder.files.len(), 8);
        assert_eq!(folder.labels, [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(folder.skipped, 1);
        let err = image_folder(&fixture("tiny-images/dark"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs at least two class sub-folders"),
            "{err}"
        );
    }
}
