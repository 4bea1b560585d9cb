//! An upload written on a thread of its own.
//!
//! Hashing (SHA-256) and sealing (AES-256-GCM) an upload cost more CPU than the transport's own
//! decryption; on the connection's task the two would run one after the other. The writer takes
//! them off that task, so both run at once, and the file's blocking writes stay off tokio's
//! workers. Its thread is not taken from tokio's blocking pool: it lives as long as the upload
//! does, and slow uploads must not use up the pool that commits, fsyncs and password checks
//! need. A write is queued, not done, when [`UploadWriter::write_at`] returns: an error the
//! thread meets comes back from a later write or from [`UploadWriter::commit`].

use std::io;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{BoxError, Committed, FileName, Upload};

/// Writes an upload's pieces may queue before the transport waits for the thread.
const QUEUE: usize = 4;

/// Contiguous pieces of an upload, starting at an offset.
type Pieces = (u64, Vec<Bytes>);

/// An [`Upload`] whose bytes are hashed, sealed and written by a thread of its own. Dropping it
/// without [`UploadWriter::commit`] discards the upload, as dropping the upload does.
#[derive(Debug)]
pub struct UploadWriter {
    pieces: Option<mpsc::Sender<Pieces>>,
    done: Option<oneshot::Receiver<Result<Upload, BoxError>>>,
    name: FileName,
    limit: u64,
    /// Highest byte offset queued so far.
    size: u64,
}

impl UploadWriter {
    /// Starts the thread that writes `upload`.
    pub fn spawn(mut upload: Upload) -> io::Result<UploadWriter> {
        let (tx, mut rx) = mpsc::channel::<Pieces>(QUEUE);
        let (done, written) = oneshot::channel();
        let (name, limit) = (upload.name().clone(), upload.limit);
        std::thread::Builder::new()
            .name("upload".into())
            .spawn(move || {
                while let Some((mut offset, pieces)) = rx.blocking_recv() {
                    for piece in pieces {
                        if let Err(e) = upload.write_at(offset, &piece) {
                            let _ = done.send(Err(e));
                            return;
                        }
                        offset += piece.len() as u64;
                    }
                }
                let _ = done.send(Ok(upload));
            })?;
        Ok(UploadWriter {
            pieces: Some(tx),
            done: Some(written),
            name,
            limit,
            size: 0,
        })
    }

    pub fn name(&self) -> &FileName {
        &self.name
    }

    /// Changes the name the upload will be handed off under (see [`Upload::rename`]).
    pub fn rename(&mut self, name: FileName) {
        self.name = name;
    }

    /// Bytes written so far (the highest offset reached).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Queues `pieces`, contiguous from `offset`, as SFTP writes them. The size limit is
    /// checked here; everything else [`Upload::write_at`] checks comes back from a later call.
    pub async fn write_at(&mut self, offset: u64, pieces: Vec<Bytes>) -> Result<(), BoxError> {
        let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= self.limit)
            .ok_or(BoxError::TooLarge { limit: self.limit })?;
        let Some(queue) = &self.pieces else {
            return Err(failed_earlier());
        };
        if queue.send((offset, pieces)).await.is_err() {
            // The thread stopped at an error: that is the answer.
            self.pieces = None;
            return Err(match self.done.take() {
                Some(done) => done.await.map_or_else(
                    |_| failed_earlier(),
                    |r| r.err().unwrap_or_else(failed_earlier),
                ),
                None => failed_earlier(),
            });
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Appends, as a streamed HTTP body does.
    pub async fn append(&mut self, pieces: Vec<Bytes>) -> Result<(), BoxError> {
        self.write_at(self.size, pieces).await
    }

    /// Waits until everything queued is written, then commits the upload (see
    /// [`Upload::commit`]) on tokio's blocking pool.
    pub async fn commit(mut self) -> Result<Committed, BoxError> {
        self.pieces = None;
        let done = self.done.take().ok_or_else(failed_earlier)?;
        let mut upload = done.await.map_err(|_| failed_earlier())??;
        upload.rename(self.name.clone());
        tokio::task::spawn_blocking(move || upload.commit())
            .await
            .map_err(|_| failed_earlier())?
    }
}

fn failed_earlier() -> BoxError {
    BoxError::Io(io::Error::other("the upload's writer stopped"))
}
