//! Moving file bytes over a data connection: `sendfile(2)` on plain connections, large buffers
//! through TLS, and uploads written as they arrive.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::stream::MaybeTls;

const BUFFER: usize = 256 * 1024;
const SENDFILE_CHUNK: usize = 16 * 1024 * 1024;
/// Files at least this large are sent from a blocking thread.
const BLOCKING_THRESHOLD: u64 = 8 * 1024 * 1024;

/// Sends `file` from `offset` to the end, then closes the connection cleanly.
///
/// Plain connections use `sendfile(2)`: large files on a blocking thread (fastest), small ones on
/// the runtime (no thread per session when hundreds download at once). `stall` bounds how long a
/// connection may make no progress.
pub async fn send_file(
    stream: MaybeTls,
    mut file: File,
    offset: u64,
    stall: Duration,
) -> io::Result<u64> {
    match stream {
        MaybeTls::Plain(tcp) => {
            let remaining = file.metadata()?.len().saturating_sub(offset);
            if remaining < BLOCKING_THRESHOLD {
                let sent = tokio::time::timeout(stall, sendfile_async(&tcp, &file, offset))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "data connection stalled")
                    })??;
                let mut tcp = tcp;
                tcp.shutdown().await?;
                Ok(sent)
            } else {
                sendfile_blocking(tcp, file, offset, stall).await
            }
        }
        mut stream @ MaybeTls::Tls(_) => {
            io::Seek::seek(&mut file, io::SeekFrom::Start(offset))?;
            let mut buffer = vec![0u8; BUFFER];
            let mut total = 0u64;
            loop {
                let read = file.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                within(stall, stream.write_all(&buffer[..read])).await?;
                total += read as u64;
            }
            within(stall, stream.shutdown()).await?;
            Ok(total)
        }
    }
}

/// Runs one I/O step, failing it when the connection makes no progress for `stall`.
async fn within<T>(stall: Duration, step: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(stall, step)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "data connection stalled"))?
}

/// Non-blocking `sendfile(2)` driven by the runtime's readiness events.
async fn sendfile_async(tcp: &TcpStream, file: &File, mut offset: u64) -> io::Result<u64> {
    let start = offset;
    loop {
        tcp.writable().await?;
        let sent = tcp.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(tcp.as_fd(), file.as_fd(), Some(&mut offset), SENDFILE_CHUNK)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => return Ok(offset - start),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

/// Shuts a socket down when dropped, which ends a blocking `sendfile` on another thread; that is
/// how an `ABOR` (which drops the transfer future) stops a plain download.
struct ShutdownOnDrop(Option<std::net::TcpStream>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(socket) = self.0.take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// `sendfile(2)` on a blocking socket, on a blocking thread: the kernel moves page-cache pages to
/// the socket with no copy and no readiness round trips, which is how vsftpd reaches its speed.
async fn sendfile_blocking(
    tcp: TcpStream,
    file: File,
    mut offset: u64,
    stall: Duration,
) -> io::Result<u64> {
    let socket = tcp.into_std()?;
    socket.set_nonblocking(false)?;
    socket.set_write_timeout(Some(stall))?;
    let mut abort = ShutdownOnDrop(Some(socket.try_clone()?));
    let start = offset;
    let result = tokio::task::spawn_blocking(move || {
        loop {
            match rustix::fs::sendfile(
                socket.as_fd(),
                file.as_fd(),
                Some(&mut offset),
                SENDFILE_CHUNK,
            ) {
                Ok(0) => break,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(error) => return Err(io::Error::from(error)),
            }
        }
        socket.shutdown(std::net::Shutdown::Write)?;
        Ok(offset - start)
    })
    .await
    .map_err(io::Error::other)?;
    // Finished on its own: nothing to interrupt.
    abort.0 = None;
    result
}

/// Sends bytes made in memory (listings), then closes.
pub async fn send_bytes(stream: &mut MaybeTls, bytes: &[u8]) -> io::Result<u64> {
    stream.write_all(bytes).await?;
    stream.shutdown().await?;
    Ok(bytes.len() as u64)
}

/// Writes everything the client sends into `file` until it closes the connection.
pub async fn receive_file(stream: MaybeTls, mut file: File, stall: Duration) -> io::Result<u64> {
    let mut stream = match stream {
        MaybeTls::Plain(tcp) => return receive_blocking(tcp, file, stall).await,
        tls @ MaybeTls::Tls(_) => tls,
    };
    let mut buffer = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let read = match within(stall, stream.read(&mut buffer)).await {
            Ok(read) => read,
            // Many clients close a TLS data channel without close_notify; the byte stream is
            // complete all the same, exactly as on a plain connection.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(error) => return Err(error),
        };
        if read == 0 {
            break;
        }
        file.write_all(&buffer[..read])?;
        total += read as u64;
    }
    file.flush()?;
    // Answer the client's close_notify with ours: ftplib waits for it (SSL unwrap).
    let _ = within(stall, stream.shutdown()).await;
    Ok(total)
}

/// A plain upload on a blocking thread: socket reads and file writes with no readiness round
/// trips and no blocking of the runtime's workers by disk writes.
async fn receive_blocking(tcp: TcpStream, mut file: File, stall: Duration) -> io::Result<u64> {
    let mut socket = tcp.into_std()?;
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(stall))?;
    let mut abort = ShutdownOnDrop(Some(socket.try_clone()?));
    let result = tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; BUFFER];
        let mut total = 0u64;
        loop {
            let read = match socket.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            file.write_all(&buffer[..read])?;
            total += read as u64;
        }
        file.flush()?;
        Ok(total)
    })
    .await
    .map_err(io::Error::other)?;
    abort.0 = None;
    result
}
