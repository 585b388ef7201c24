//! The SFTP packet stream of one channel: packets read (at most `max_outstanding_requests`, and
//! at most [`QUEUED_BYTES`], ahead of the one being served, none larger than
//! `max_packet_bytes`), answered in order. A packet
//! that is too large or does not decode is a broken or hostile client: the error ends the
//! session, and only that session.
//!
//! The channel's bytes are taken as they arrive, whatever the read-ahead: russh hands them over
//! in its connection's one loop and, while a channel does not take them, stops that loop, and
//! with it the replies and the client's window updates the replies wait for. A client with many
//! requests outstanding (paramiko's `get` asks for a whole file at once) would hang there. What
//! is not parsed yet waits in a buffer of at most [`UNREAD_BYTES`]; a client that sends more
//! than that unanswered ends its session.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use russh_sftp::protocol::{Packet, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Semaphore, mpsc};

/// Bytes of requests a channel reads ahead of the one being served, and the SSH window it
/// grants: with the one packet in service, a channel holds at most about twice this, whatever
/// the client sends.
pub const QUEUED_BYTES: u32 = 2 * 1024 * 1024;

/// Bytes a channel holds that it has received and not parsed yet: about 70,000 read requests,
/// the requests for a 2 GiB file in 32 KiB reads.
pub const UNREAD_BYTES: usize = 2 * 1024 * 1024;

use super::files::Files;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("SFTP packet of {length} bytes is larger than the {max} allowed")]
    TooLarge { length: u32, max: u32 },
    #[error("malformed SFTP packet: {0}")]
    Malformed(String),
    #[error("the first SFTP packet was not INIT")]
    NoInit,
    #[error("more than {max} bytes of SFTP requests unanswered")]
    Backlog { max: usize },
    #[error("SFTP channel: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    /// Whether the client broke the protocol (rather than the connection going away).
    pub fn is_protocol_violation(&self) -> bool {
        !matches!(self, ProtocolError::Io(_))
    }
}

/// How far one channel may read ahead.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_packet_bytes: u32,
    pub max_outstanding_requests: u32,
}

/// One packet and its length, or `None` at the end of the stream; its bytes are taken from
/// `budget` before they are read.
async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
    budget: &Semaphore,
) -> Result<Option<(Packet, u32)>, ProtocolError> {
    let length = match reader.read_u32().await {
        Ok(length) => length,
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    if length > max {
        return Err(ProtocolError::TooLarge { length, max });
    }
    if length == 0 {
        return Err(ProtocolError::Malformed("empty packet".into()));
    }
    // Given back when the packet has been answered.
    budget
        .acquire_many(length.min(QUEUED_BYTES))
        .await
        .map_err(|_| ProtocolError::Malformed("channel closed".into()))?
        .forget();
    let mut body = vec![0; length as usize];
    reader.read_exact(&mut body).await?;
    let mut body = Bytes::from(body);
    let packet =
        Packet::try_from(&mut body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if !body.is_empty() {
        return Err(ProtocolError::Malformed(format!(
            "{} bytes after the packet's fields",
            body.len()
        )));
    }
    Ok(Some((packet, length)))
}

/// Serves the channel until the client closes it; an error ends the whole session.
pub async fn serve<S>(
    stream: S,
    mut files: Files,
    limits: RequestLimits,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut channel, mut writer) = tokio::io::split(stream);
    let unread = Arc::new(AtomicUsize::new(0));
    let (chunks, received_chunks) = mpsc::unbounded_channel::<Bytes>();
    let mut reader = Unread {
        chunks: received_chunks,
        current: Bytes::new(),
        unread: Arc::clone(&unread),
    };
    let take = async move {
        let mut buffer = BytesMut::new();
        loop {
            // Chunks share the buffer's allocations, so what is held is about what is unread.
            buffer.reserve(64 * 1024);
            if channel.read_buf(&mut buffer).await? == 0 {
                return Ok(());
            }
            let chunk = buffer.split().freeze();
            if unread.fetch_add(chunk.len(), Ordering::SeqCst) + chunk.len() > UNREAD_BYTES {
                return Err(ProtocolError::Backlog { max: UNREAD_BYTES });
            }
            if chunks.send(chunk).is_err() {
                return Ok(());
            }
        }
    };
    let queue = usize::try_from(limits.max_outstanding_requests)
        .unwrap_or(1)
        .max(1);
    let (sender, mut received) = mpsc::channel::<(Packet, u32)>(queue);
    let budget = std::sync::Arc::new(Semaphore::new(QUEUED_BYTES as usize));
    let read_budget = std::sync::Arc::clone(&budget);
    let read = async move {
        while let Some(packet) =
            read_packet(&mut reader, limits.max_packet_bytes, &read_budget).await?
        {
            if sender.send(packet).await.is_err() {
                break;
            }
        }
        Ok::<(), ProtocolError>(())
    };
    let answer = async move {
        match received.recv().await {
            Some((Packet::Init(_), length)) => {
                budget.add_permits(length.min(QUEUED_BYTES) as usize)
            }
            Some(_) => return Err(ProtocolError::NoInit),
            None => return Ok(()),
        }
        write_packet(&mut writer, Packet::Version(Version::new())).await?;
        while let Some((packet, length)) = received.recv().await {
            if matches!(packet, Packet::Init(_)) {
                return Err(ProtocolError::Malformed("a second INIT".into()));
            }
            let reply = files.serve(packet).await;
            budget.add_permits(length.min(QUEUED_BYTES) as usize);
            write_packet(&mut writer, reply).await?;
        }
        // The client may have closed its end already: nothing is lost if this fails.
        let _ = writer.shutdown().await;
        Ok(())
    };
    tokio::try_join!(take, read, answer).map(drop)
}

/// The channel's bytes as [`serve`] took them, in order; the end of the channel is the end of
/// the stream.
struct Unread {
    chunks: mpsc::UnboundedReceiver<Bytes>,
    current: Bytes,
    unread: Arc<AtomicUsize>,
}

impl AsyncRead for Unread {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.current.is_empty() {
            match self.chunks.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => self.current = chunk,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let count = buf.remaining().min(self.current.len());
        let taken = self.current.split_to(count);
        buf.put_slice(&taken);
        self.unread.fetch_sub(count, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }
}

async fn write_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packet: Packet,
) -> Result<(), ProtocolError> {
    let bytes = Bytes::try_from(packet).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}
