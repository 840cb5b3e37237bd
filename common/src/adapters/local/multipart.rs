//! Multipart uploads on the file system, under `{data}/blobs/.multipart/{bucket}/{uploadId}/`.
//!
//! Parts that arrive in order (part 1, then 2, …), as a resumable upload sends them, are appended to one
//! assembly file, and an index line records each (`number start length etag`). Completing an upload whose
//! parts are the assembly's first parts then only truncates the file to them and renames it into place: the
//! bytes are written once. Parts that arrive out of order, or again, or while another part is being
//! appended, are files of their own and take precedence over the assembly's; completing with them joins
//! the pieces into a new file (in the kernel, with `copy_file_range`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::blobs::{BlobError, CompletedPart};

const ASSEMBLY: &str = "assembly";
const INDEX: &str = "assembly.idx";
const LOCK: &str = "assembly.lock";
/// Writes to disk go in pieces of about this size.
const WRITE_SIZE: usize = 1024 * 1024;

/// One multipart upload's directory.
pub(super) struct Upload {
    dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    number: u32,
    start: u64,
    len: u64,
    etag: String,
}

/// Where a completed object's bytes are.
pub(super) enum Joined {
    /// The assembly file, truncated to the listed parts.
    Assembly(PathBuf),
    /// A new file joining the pieces.
    Temp(tempfile::TempPath),
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(BlobError::backend)?
        .map_err(BlobError::backend)
}

/// Writes `body` to `file` from `offset` on; returns the bytes written.
async fn write_stream<S, E>(file: Arc<File>, mut offset: u64, max: u64, mut body: S) -> Result<u64, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let start = offset;
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0usize;
    loop {
        let next = body.next().await;
        let done = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk.map_err(|e| BlobError::Backend(format!("reading the body failed: {e}")))?;
            if offset - start + (pending_len + chunk.len()) as u64 > max {
                return Err(BlobError::InvalidParts(format!(
                    "an object or part may hold at most {max} bytes"
                )));
            }
            pending_len += chunk.len();
            pending.push(chunk);
        }
        if pending_len >= WRITE_SIZE || (done && pending_len > 0) {
            let pieces = std::mem::take(&mut pending);
            let len = pending_len as u64;
            pending_len = 0;
            let file = file.clone();
            let at = offset;
            blocking(move || {
                let mut position = at;
                for piece in &pieces {
                    file.write_all_at(piece, position)?;
                    position += piece.len() as u64;
                }
                Ok(())
            })
            .await?;
            offset += len;
        }
        if done {
            return Ok(offset - start);
        }
    }
}

impl Upload {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn part_path(&self, number: u32) -> PathBuf {
        self.dir.join(format!("{number:05}.part"))
    }

    /// Stores part `number` and returns its ETag: appended to the assembly when it is the next part and
    /// no other part is being appended, else as a file of its own (staged in `tmp`).
    pub(super) async fn put<S, E>(&self, number: u32, body: S, tmp: &Path, max: u64) -> Result<String, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let etag = format!("\"{}\"", uuid::Uuid::new_v4().simple());
        let dir = self.dir.clone();
        let separate = self.part_path(number);
        // Take the assembly if it is free and this is its next part.
        let appending = blocking(move || {
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(LOCK))?;
            if lock.try_lock().is_err() {
                return Ok(None);
            }
            let entries = read_index(&dir)?;
            if number as usize != entries.len() + 1 {
                return Ok(None);
            }
            match std::fs::remove_file(&separate) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            let end = entries.last().map_or(0, |e| e.start + e.len);
            let assembly = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(ASSEMBLY))?;
            // Bytes past the last indexed part belong to an append that did not finish.
            assembly.set_len(end)?;
            Ok(Some((lock, Arc::new(assembly), end)))
        })
        .await?;

        if let Some((lock, assembly, end)) = appending {
            let written = write_stream(assembly.clone(), end, max, body).await;
            let dir = self.dir.clone();
            let line = written
                .as_ref()
                .map(|len| format!("{number} {end} {len} {}\n", etag.trim_matches('"')))
                .ok();
            blocking(move || {
                match line {
                    Some(line) => append_index(&dir, &line)?,
                    None => assembly.set_len(end)?,
                }
                drop(lock);
                Ok(())
            })
            .await?;
            written?;
            return Ok(etag);
        }

        let temp = tempfile::NamedTempFile::new_in(tmp).map_err(BlobError::backend)?;
        let (file, temp) = temp.into_parts();
        write_stream(Arc::new(file), 0, max, body).await?;
        let part = self.part_path(number);
        let sidecar = super::blobs::sidecar(&part);
        let tag = etag.clone();
        blocking(move || {
            temp.persist(&part).map_err(|e| e.error)?;
            std::fs::write(sidecar, tag)
        })
        .await?;
        Ok(etag)
    }

    /// Checks `parts` against what was uploaded and joins them; returns where the object's bytes are and
    /// its size.
    pub(super) async fn join(
        &self,
        parts: Vec<CompletedPart>,
        tmp: PathBuf,
        min_part: u64,
        sync: bool,
    ) -> Result<(Joined, u64), BlobError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || join(&dir, &parts, &tmp, min_part, sync))
            .await
            .map_err(BlobError::backend)?
    }
}

enum Piece {
    Assembly(Entry),
    Separate(PathBuf, u64),
}

fn join(
    dir: &Path,
    parts: &[CompletedPart],
    tmp: &Path,
    min_part: u64,
    sync: bool,
) -> Result<(Joined, u64), BlobError> {
    if parts.is_empty() {
        return Err(BlobError::InvalidParts("name at least one part".into()));
    }
    if parts.windows(2).any(|pair| pair[0].part_number >= pair[1].part_number) {
        return Err(BlobError::InvalidParts(
            "parts must be listed in ascending order".into(),
        ));
    }
    // Hold the assembly while reading it, so that no append runs meanwhile.
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))
        .map_err(BlobError::backend)?;
    lock.lock().map_err(BlobError::backend)?;
    let entries = read_index(dir).map_err(BlobError::backend)?;
    let mut pieces = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let separate = dir.join(format!("{:05}.part", part.part_number));
        let (piece, etag) = match std::fs::metadata(&separate) {
            Ok(meta) => {
                let etag = std::fs::read_to_string(super::blobs::sidecar(&separate)).unwrap_or_default();
                (Piece::Separate(separate, meta.len()), etag)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                match entries.iter().find(|e| e.number == part.part_number) {
                    Some(entry) => (Piece::Assembly(entry.clone()), entry.etag.clone()),
                    None => {
                        return Err(BlobError::InvalidParts(format!(
                            "part {} was not uploaded",
                            part.part_number
                        )));
                    }
                }
            }
            Err(err) => return Err(BlobError::backend(err)),
        };
        if etag.trim_matches('"') != part.etag.trim_matches('"') {
            return Err(BlobError::InvalidParts(format!(
                "part {}'s ETag does not match",
                part.part_number
            )));
        }
        let len = match &piece {
            Piece::Assembly(entry) => entry.len,
            Piece::Separate(_, len) => *len,
        };
        if index + 1 < parts.len() && len < min_part {
            return Err(BlobError::InvalidParts(format!(
                "part {} is smaller than 5 MiB",
                part.part_number
            )));
        }
        pieces.push(piece);
    }

    // The first parts of the assembly, in order: the object is the assembly's beginning.
    let in_place = pieces
        .iter()
        .enumerate()
        .all(|(i, piece)| matches!(piece, Piece::Assembly(entry) if entries.get(i) == Some(entry)));
    let result = if in_place {
        let size: u64 = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Assembly(entry) => entry.len,
                Piece::Separate(_, len) => *len,
            })
            .sum();
        let path = dir.join(ASSEMBLY);
        let file = OpenOptions::new().write(true).open(&path).map_err(BlobError::backend)?;
        file.set_len(size).map_err(BlobError::backend)?;
        if sync {
            file.sync_all().map_err(BlobError::backend)?;
        }
        (Joined::Assembly(path), size)
    } else {
        let temp = tempfile::NamedTempFile::new_in(tmp).map_err(BlobError::backend)?;
        let (mut out, temp) = temp.into_parts();
        let mut size = 0u64;
        let assembly = dir.join(ASSEMBLY);
        for piece in &pieces {
            size += match piece {
                Piece::Separate(path, _) => std::io::copy(&mut File::open(path).map_err(BlobError::backend)?, &mut out)
                    .map_err(BlobError::backend)?,
                Piece::Assembly(entry) => {
                    let mut input = File::open(&assembly).map_err(BlobError::backend)?;
                    input.seek(SeekFrom::Start(entry.start)).map_err(BlobError::backend)?;
                    std::io::copy(&mut input.take(entry.len), &mut out).map_err(BlobError::backend)?
                }
            };
        }
        if sync {
            out.sync_all().map_err(BlobError::backend)?;
        }
        (Joined::Temp(temp), size)
    };
    drop(lock);
    Ok(result)
}

/// The index's complete lines; a line cut short by a crash is dropped from the file.
fn read_index(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let path = dir.join(INDEX);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        OpenOptions::new().write(true).open(&path)?.set_len(whole as u64)?;
    }
    let mut entries = Vec::new();
    for line in text[..whole].lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let parsed = match fields.as_slice() {
            [number, start, len, etag] => (|| {
                Some(Entry {
                    number: number.parse().ok()?,
                    start: start.parse().ok()?,
                    len: len.parse().ok()?,
                    etag: (*etag).to_owned(),
                })
            })(),
            _ => None,
        };
        match parsed {
            Some(entry) => entries.push(entry),
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is corrupt", path.display()),
                ));
            }
        }
    }
    Ok(entries)
}

fn append_index(dir: &Path, line: &str) -> std::io::Result<()> {
    let mut index = OpenOptions::new().create(true).append(true).open(dir.join(INDEX))?;
    index.write_all(line.as_bytes())
}
