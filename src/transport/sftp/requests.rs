//! The SFTP request loop of one channel: read a request, answer it through the box view, write
//! the reply, until the client or the session ends.
//!
//! It does what russh-sftp's own loop does, with one difference that uploads pay for: that loop
//! reads every request into a freshly zeroed buffer and decodes a write's data into a vector of
//! its own, two passes over every uploaded byte; here a request is cut from the channel's
//! messages ([`SftpStream::next_frame`]) and a write's data stays a slice of it
//! ([`packets::decode`]) on its way to the upload writer.

use bytes::Bytes;
use russh_sftp::protocol::{Packet, Status, StatusCode};
use russh_sftp::server::{Handler, StatusReply};
use tokio::io::AsyncWriteExt;

use super::packets::{self, Request};
use super::stream::{Frame, SftpStream};
use super::view::{MAX_SFTP_PACKET, SftpView};

/// Serves the channel's requests on a task of its own.
pub fn spawn(stream: SftpStream, view: SftpView) {
    tokio::spawn(run(stream, view));
}

async fn run(mut stream: SftpStream, mut view: SftpView) {
    loop {
        let frame = match stream.next_frame(MAX_SFTP_PACKET).await {
            Ok(Frame::Request(frame)) => frame,
            Ok(Frame::TooLong(len)) => {
                // As russh-sftp: no answer; the next four bytes are read as a length.
                tracing::warn!(len, "SFTP request over the packet limit");
                continue;
            }
            Ok(Frame::End) | Err(_) => break,
        };
        let reply = match packets::decode(frame) {
            Some(request) => answer(request, &mut view).await,
            None => Packet::error(0, StatusCode::BadMessage),
        };
        let sent = match Bytes::try_from(reply) {
            Ok(bytes) => stream.write_all(&bytes).await.is_ok() && stream.flush().await.is_ok(),
            Err(e) => {
                tracing::warn!(error = %e, "encoding an SFTP reply");
                true
            }
        };
        if !sent {
            break;
        }
    }
    tracing::debug!("sftp stream ended");
}

/// A handler's refusal as the status reply the client gets.
fn refused(id: u32, err: impl Into<StatusReply>) -> Packet {
    let StatusReply {
        status_code,
        error_message,
        language_tag,
    } = err.into();
    Packet::Status(Status {
        id,
        status_code,
        error_message: error_message.unwrap_or_else(|| status_code.to_string()),
        language_tag: language_tag.unwrap_or_else(|| "en-US".to_owned()),
    })
}

/// Answers one request through the view.
async fn answer(request: Request, view: &mut SftpView) -> Packet {
    macro_rules! call {
        ($id:expr, $fut:expr) => {
            match $fut.await {
                Ok(reply) => reply.into(),
                Err(e) => refused($id, e),
            }
        };
    }
    let packet = match request {
        Request::Write {
            id,
            handle,
            offset,
            data,
        } => return call!(id, view.write_bytes(id, handle, offset, data)),
        Request::Other(packet) => packet,
    };
    let id = packet.get_request_id();
    match packet {
        Packet::Init(p) => call!(id, view.init(p.version, p.extensions)),
        Packet::Open(p) => call!(id, view.open(p.id, p.filename, p.pflags, p.attrs)),
        Packet::Close(p) => call!(id, view.close(p.id, p.handle)),
        Packet::Read(p) => call!(id, view.read(p.id, p.handle, p.offset, p.len)),
        Packet::Write(p) => call!(
            id,
            view.write_bytes(p.id, p.handle, p.offset, Bytes::from(p.data))
        ),
        Packet::Lstat(p) => call!(id, view.lstat(p.id, p.path)),
        Packet::Fstat(p) => call!(id, view.fstat(p.id, p.handle)),
        Packet::SetStat(p) => call!(id, view.setstat(p.id, p.path, p.attrs)),
        Packet::FSetStat(p) => call!(id, view.fsetstat(p.id, p.handle, p.attrs)),
        Packet::OpenDir(p) => call!(id, view.opendir(p.id, p.path)),
        Packet::ReadDir(p) => call!(id, view.readdir(p.id, p.handle)),
        Packet::Remove(p) => call!(id, view.remove(p.id, p.filename)),
        Packet::MkDir(p) => call!(id, view.mkdir(p.id, p.path, p.attrs)),
        Packet::RmDir(p) => call!(id, view.rmdir(p.id, p.path)),
        Packet::RealPath(p) => call!(id, view.realpath(p.id, p.path)),
        Packet::Stat(p) => call!(id, view.stat(p.id, p.path)),
        Packet::Rename(p) => call!(id, view.rename(p.id, p.oldpath, p.newpath)),
        Packet::ReadLink(p) => call!(id, view.readlink(p.id, p.path)),
        Packet::Symlink(p) => call!(id, view.symlink(p.id, p.linkpath, p.targetpath)),
        Packet::Extended(p) => call!(id, view.extended(p.id, p.request, p.data)),
        // Replies and anything else a client has no business sending.
        _ => Packet::error(0, StatusCode::BadMessage),
    }
}
