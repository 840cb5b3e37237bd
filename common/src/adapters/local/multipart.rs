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

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::runtime::Handle;

use crate::blobs::{BlobError, CompletedPart};

/// The object key the upload was started for.
const KEY: &str = "key";
const ASSEMBLY: &str = "assembly";
const INDEX: &str = "assembly.idx";
const LOCK: &str = "assembly.lock";

/// One multipart upload's directory.
pub(super) struct Upload {
    dir: PathBuf,
    /// Whether the object is synced to the disk when the upload completes (the store's setting).
    sync: bool,
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

/// Writes `body` to `file` from `offset` on, waiting for each chunk on this (blocking) thread; returns
/// the bytes written.
fn write_chunks<S, E>(handle: &Handle, file: &File, offset: u64, max: u64, body: &mut S) -> Result<u64, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut position = offset;
    while let Some(chunk) = handle.block_on(body.next()) {
        let chunk = chunk.map_err(|e| BlobError::Backend(format!("reading the body failed: {e}")))?;
        if position - offset + chunk.len() as u64 > max {
            return Err(BlobError::InvalidParts(format!(
                "an object or part may hold at most {max} bytes"
            )));
        }
        file.write_all_at(&chunk, position).map_err(BlobError::backend)?;
        position += chunk.len() as u64;
    }
    Ok(position - offset)
}

/// Writes a part of `size` bytes, when known, from `offset` on: its blocks are allocated at once, so that
/// each write only copies (a third less work than allocating as it writes). The file ends where the
/// written bytes do.
fn write_part<S, E>(
    handle: &Handle,
    file: &File,
    offset: u64,
    size: Option<u64>,
    max: u64,
    body: &mut S,
) -> Result<u64, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let allocated = size.filter(|&size| size > 0 && size <= MAX_ALLOCATION && allocate(file, offset, size));
    let written = write_chunks(handle, file, offset, max, body)?;
    if allocated.is_some_and(|size| size != written) {
        file.set_len(offset + written).map_err(BlobError::backend)?;
    }
    Ok(written)
}

/// Parts larger than this are allocated as they are written: a client's claimed size alone does not
/// reserve more disk.
const MAX_ALLOCATION: u64 = 64 * 1024 * 1024;

/// Allocates `size` bytes from `offset` on (the file grows to hold them); false where the file system
/// cannot, which then allocates as it writes.
#[cfg(target_os = "linux")]
fn allocate(file: &File, offset: u64, size: u64) -> bool {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, size).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn allocate(_: &File, _: u64, _: u64) -> bool {
    false
}

/// Write-behind and drop-behind for the first `end` bytes of an assembly, called as each part is
/// appended: starts writing its dirty pages to the disk without waiting for them, and drops from the page
/// cache those already written (only clean pages are dropped). An upload then streams through a few
/// megabytes of cache rather than filling it with bytes read once, later, by the pipeline (and evicting
/// what playback reads), and the fsync that completes a synced upload waits for its last part only. On a
/// virtual machine it also keeps the writes in memory the host already backs, rather than in free pages
/// it may have to fault in again, which made the pace of large uploads uneven.
///
/// On Linux, `POSIX_FADV_DONTNEED` starts the write-back of a range's dirty pages and drops its clean
/// ones; `sync_file_range(2)`, the other way to start a write-back, is offered by neither rustix nor nix.
/// A failure costs only cache: the fsync at completion is what makes an object durable.
#[cfg(target_os = "linux")]
fn write_behind(file: &File, end: u64) {
    if let Err(err) = rustix::fs::fadvise(file, 0, std::num::NonZeroU64::new(end), rustix::fs::Advice::DontNeed) {
        tracing::debug!(error = %err, "starting the write-back of a part failed");
    }
}

#[cfg(not(target_os = "linux"))]
fn write_behind(_: &File, _: u64) {}

impl Upload {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir, sync: true }
    }

    /// With `false`, the completed object is not synced to the disk.
    pub(super) fn with_sync(self, sync: bool) -> Self {
        Self { sync, ..self }
    }

    /// Starts an upload of `key` in `dir`.
    pub(super) async fn create(dir: PathBuf, key: &str) -> Result<Self, BlobError> {
        tokio::fs::create_dir_all(&dir).await.map_err(BlobError::backend)?;
        tokio::fs::write(dir.join(KEY), key).await.map_err(BlobError::backend)?;
        Ok(Self::new(dir))
    }

    /// Whether this upload is under way and was started for `key`.
    pub(super) async fn is_of(&self, key: &str) -> Result<bool, BlobError> {
        let dir = self.dir.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || Ok(read_key(&dir)?.as_deref() == Some(key.as_str())))
            .await
            .map_err(BlobError::backend)?
    }

    fn part_path(&self, number: u32) -> PathBuf {
        self.dir.join(format!("{number:05}.part"))
    }

    /// Stores part `number` of the upload of `key` and returns its ETag: appended to the assembly when it
    /// is the next part and no other part is being appended, else as a file of its own (staged in `tmp`).
    ///
    /// The part is written on one blocking thread that waits for the body's chunks itself, so a chunk
    /// goes to disk as soon as it arrives, without a hand-over to the blocking pool for every write. A
    /// part of known `size` gets its blocks allocated at once, before its bytes arrive. An appended part's
    /// write-back starts as soon as it is written (see [`write_behind`]).
    pub(super) async fn put<S, E>(
        &self,
        key: String,
        number: u32,
        size: Option<u64>,
        body: S,
        tmp: &Path,
        max: u64,
    ) -> Result<String, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: std::fmt::Display,
    {
        let etag = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.dir.clone();
        let separate = self.part_path(number);
        let tmp = tmp.to_owned();
        let handle = Handle::current();
        let tag = etag.clone();
        tokio::task::spawn_blocking(move || {
            let mut body = body;
            if read_key(&dir)?.as_deref() != Some(key.as_str()) {
                let id = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(BlobError::NoSuchUpload(id));
            }
            if let Some((lock, assembly, end)) = take_assembly(&dir, number, &separate).map_err(BlobError::backend)? {
                let written = write_part(&handle, &assembly, end, size, max, &mut body);
                match &written {
                    Ok(len) => {
                        write_behind(&assembly, end + *len);
                        append_index(&dir, &format!("{number} {end} {len} {tag}\n"))
                    }
                    // Bytes past the last indexed part are dropped, now or by the next append.
                    Err(_) => assembly.set_len(end),
                }
                .map_err(BlobError::backend)?;
                drop(lock);
                return written.map(|_| ());
            }
            let temp = tempfile::NamedTempFile::new_in(&tmp).map_err(BlobError::backend)?;
            let (file, temp) = temp.into_parts();
            write_part(&handle, &file, 0, size, max, &mut body)?;
            temp.persist(&separate).map_err(|e| BlobError::backend(e.error))?;
            std::fs::write(super::blobs::sidecar(&separate), format!("\"{tag}\"")).map_err(BlobError::backend)
        })
        .await
        .map_err(BlobError::backend)??;
        Ok(format!("\"{etag}\""))
    }

    /// Checks `parts` against what was uploaded and joins them; returns where the object's bytes are and
    /// its size.
    pub(super) async fn join(
        &self,
        parts: Vec<CompletedPart>,
        tmp: PathBuf,
        min_part: u64,
    ) -> Result<(Joined, u64), BlobError> {
        let dir = self.dir.clone();
        let sync = self.sync;
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

/// The object key the upload was started for; `None` once it is gone.
fn read_key(dir: &Path) -> Result<Option<String>, BlobError> {
    match std::fs::read_to_string(dir.join(KEY)) {
        Ok(key) => Ok(Some(key)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(BlobError::backend(err)),
    }
}

/// The assembly, locked, and where part `number` starts in it, when the part is its next one and no
/// other part is being appended. A separate file of the part from an earlier try is removed.
fn take_assembly(dir: &Path, number: u32, separate: &Path) -> std::io::Result<Option<(File, File, u64)>> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))?;
    if lock.try_lock().is_err() {
        return Ok(None);
    }
    let entries = read_index(dir)?;
    if number as usize != entries.len() + 1 {
        return Ok(None);
    }
    match std::fs::remove_file(separate) {
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
    Ok(Some((lock, assembly, end)))
}

fn append_index(dir: &Path, line: &str) -> std::io::Result<()> {
    let mut index = OpenOptions::new().create(true).append(true).open(dir.join(INDEX))?;
    index.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;

    use super::{Joined, Upload};
    use crate::blobs::CompletedPart;

    fn body(bytes: &[u8]) -> futures::stream::Iter<std::array::IntoIter<Result<Bytes, Infallible>, 1>> {
        futures::stream::iter([Ok(Bytes::copy_from_slice(bytes))])
    }

    /// A scratch directory holding an upload's directory, started for the key `k`.
    async fn upload_of_key_k() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("upload");
        Upload::create(dir.clone(), "k").await.expect("create");
        (tmp, dir)
    }

    #[tokio::test]
    async fn an_upload_is_of_the_key_it_was_created_for_while_it_lasts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("upload");
        let upload = Upload::create(dir.clone(), "sources/a").await.expect("create");
        assert!(upload.is_of("sources/a").await.expect("read"));
        assert!(!upload.is_of("sources/b").await.expect("read"));
        std::fs::remove_dir_all(&dir).expect("remove");
        assert!(!upload.is_of("sources/a").await.expect("gone, not an error"));
    }

    #[tokio::test]
    async fn parts_shorter_than_announced_end_where_their_bytes_do() {
        let (tmp, dir) = upload_of_key_k().await;
        // Synced, as by default: the joined object is synced.
        let upload = Upload::new(dir.clone());
        // Appended to the assembly, then a separate part (out of order), each announced longer.
        let first = upload
            .put("k".into(), 1, Some(100), body(&[1; 60]), tmp.path(), 1 << 20)
            .await
            .expect("part 1");
        let third = upload
            .put("k".into(), 3, Some(50), body(&[3; 5]), tmp.path(), 1 << 20)
            .await
            .expect("part 3");
        let second = upload
            .put("k".into(), 2, Some(8), body(&[2; 8]), tmp.path(), 1 << 20)
            .await
            .expect("part 2");
        assert_eq!(std::fs::metadata(dir.join("00003.part")).expect("part 3").len(), 5);

        let parts =
            [(1, first), (2, second), (3, third)].map(|(part_number, etag)| CompletedPart { part_number, etag });
        assert_eq!(
            std::fs::read(dir.join("assembly")).expect("assembly"),
            [[1; 60].as_slice(), &[2; 8]].concat()
        );
        let (joined, size) = upload
            .join(parts.to_vec(), tmp.path().to_owned(), 0)
            .await
            .expect("join");
        assert_eq!(size, 73);
        let Joined::Temp(path) = joined else {
            panic!("a separate part is joined into a new file");
        };
        let object = std::fs::read(&path).expect("object");
        assert_eq!(object, [[1; 60].as_slice(), &[2; 8], &[3; 5]].concat());
    }

    #[tokio::test]
    async fn a_part_for_another_key_is_refused() {
        let (tmp, dir) = upload_of_key_k().await;
        let refused = Upload::new(dir)
            .put("other".into(), 1, None, body(b"x"), tmp.path(), 1 << 20)
            .await;
        assert!(
            matches!(refused, Err(crate::blobs::BlobError::NoSuchUpload(_))),
            "{refused:?}"
        );
    }
}
