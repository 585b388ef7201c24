//! Moving file bytes over a data connection: `sendfile(2)` on plain connections, large buffers
//! through TLS, listings as they are read, and uploads written as they arrive. A file's bytes
//! pass the session's [`Throttle`] in pieces; a limited plain download still uses `sendfile(2)`,
//! a piece at a time.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::listing::Listing;
use super::storage::{Download, UploadBody};
use super::stream::MaybeTls;
use super::throttle::Throttle;

const BUFFER: usize = 256 * 1024;
const SENDFILE_CHUNK: usize = 16 * 1024 * 1024;
const LISTING_CHUNK: usize = super::listing::CHUNK;

/// Sends a download to its end, then closes the connection cleanly.
///
/// A file goes with `sendfile(2)` on plain connections, on a blocking thread; TLS reads the file
/// on blocking threads too, as a stream is read. No storage call runs on the runtime's workers,
/// where a slow disk would stall every session. `stall` bounds how long a connection may make no
/// progress.
pub async fn send_file(
    stream: MaybeTls,
    download: Download,
    stall: Duration,
    throttle: Throttle,
) -> io::Result<u64> {
    match download {
        Download::File { file, offset } => {
            send_disk_file(stream, file, offset, stall, throttle).await
        }
        Download::Stream(reader) => send_stream(stream, reader, stall, throttle).await,
    }
}

/// Sends what `reader` gives, a buffer at a time read on a blocking thread.
async fn send_stream(
    mut stream: MaybeTls,
    mut reader: Box<dyn Read + Send>,
    stall: Duration,
    throttle: Throttle,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; throttle.piece(BUFFER)];
    let mut total = 0u64;
    loop {
        let (back, read, filled) = tokio::task::spawn_blocking(move || {
            let read = read_some(&mut reader, &mut buffer);
            (reader, read, buffer)
        })
        .await
        .map_err(io::Error::other)?;
        reader = back;
        buffer = filled;
        let read = read?;
        if read == 0 {
            break;
        }
        within(stall, stream.write_all(&buffer[..read])).await?;
        total += read as u64;
        throttle.pace(read).await;
    }
    within(stall, stream.shutdown()).await?;
    delivered(&stream, stall).await?;
    Ok(total)
}

/// One read that retries when interrupted.
fn read_some(reader: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buffer) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

async fn send_disk_file(
    stream: MaybeTls,
    file: File,
    offset: u64,
    stall: Duration,
    throttle: Throttle,
) -> io::Result<u64> {
    match stream {
        MaybeTls::Plain(tcp) => sendfile_blocking(tcp, file, offset, stall, throttle).await,
        mut stream @ MaybeTls::Tls(_) => {
            let mut file = tokio::fs::File::from_std(file);
            file.seek(io::SeekFrom::Start(offset)).await?;
            let mut buffer = vec![0u8; throttle.piece(BUFFER)];
            let mut total = 0u64;
            loop {
                let read = file.read(&mut buffer).await?;
                if read == 0 {
                    break;
                }
                within(stall, stream.write_all(&buffer[..read])).await?;
                total += read as u64;
                throttle.pace(read).await;
            }
            within(stall, stream.shutdown()).await?;
            delivered(&stream, stall).await?;
            Ok(total)
        }
    }
}

/// Sends a listing as it is read from the directory (on blocking threads, a chunk at a time),
/// bounded by `stall` like a file transfer, then closes.
pub async fn send_listing(
    mut stream: MaybeTls,
    mut listing: Listing,
    stall: Duration,
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let (back, chunk) = tokio::task::spawn_blocking(move || {
            let chunk = listing.next_chunk(LISTING_CHUNK);
            (listing, chunk)
        })
        .await
        .map_err(io::Error::other)?;
        listing = back;
        let Some(chunk) = chunk? else { break };
        within(stall, stream.write_all(&chunk)).await?;
        total += chunk.len() as u64;
    }
    within(stall, stream.shutdown()).await?;
    delivered(&stream, stall).await?;
    Ok(total)
}

/// Waits until the client has acknowledged every byte sent and the closing FIN, so `226` is only
/// ever said of data the client has. A server that exits right after its last transfer (a drained
/// pod) would otherwise lose the tail still queued in the kernel when the pod's network namespace
/// goes. Fails like a stalled write when the queue makes no progress for `stall`.
async fn delivered(stream: &MaybeTls, stall: Duration) -> io::Result<()> {
    let socket = match stream {
        MaybeTls::Plain(tcp) => tcp,
        MaybeTls::Tls(tls) => tls.get_ref().0,
    };
    let mut pause = FIRST_PAUSE;
    let mut progress = (unacknowledged(socket)?, Instant::now());
    while progress.0 > 0 {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
        progress = delivery_step(socket, progress, stall)?;
    }
    Ok(())
}

/// `delivered` for a blocking socket, on the blocking thread that wrote to it.
fn delivered_blocking(socket: &std::net::TcpStream, stall: Duration) -> io::Result<()> {
    let mut pause = FIRST_PAUSE;
    let mut progress = (unacknowledged(socket)?, Instant::now());
    while progress.0 > 0 {
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
        progress = delivery_step(socket, progress, stall)?;
    }
    Ok(())
}

/// How often the delivery wait looks at the queue: soon at first (most queues are empty within a
/// round trip), then no more than every 50 ms.
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(50);

/// One look at a socket being drained, for both waits: its error if it was reset (a reset leaves
/// the queue as it was), else the queue's progress.
fn delivery_step(
    socket: &(impl AsFd + AsRawFd),
    progress: (usize, Instant),
    stall: Duration,
) -> io::Result<(usize, Instant)> {
    if let Some(error) = socket2::SockRef::from(socket).take_error()? {
        return Err(error);
    }
    next_progress(progress, unacknowledged(socket)?, stall)
}

/// The queue length and when it last shrank; an error once it has not shrunk for `stall`.
fn next_progress(
    (queued, since): (usize, Instant),
    now_queued: usize,
    stall: Duration,
) -> io::Result<(usize, Instant)> {
    if now_queued < queued {
        Ok((now_queued, Instant::now()))
    } else if since.elapsed() >= stall {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "data connection stalled: the client acknowledged nothing more",
        ))
    } else {
        Ok((queued, since))
    }
}

/// Bytes (and the FIN) written to the socket that the peer has not acknowledged yet
/// (`SIOCOUTQ`, which Linux names `TIOCOUTQ` for sockets too).
fn unacknowledged(socket: &impl AsRawFd) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one c_int through the pointer, which outlives the call; the fd is
    // borrowed from a live socket.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// Runs one I/O step, failing it when the connection makes no progress for `stall`.
async fn within<T>(stall: Duration, step: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(stall, step)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "data connection stalled"))?
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
    throttle: Throttle,
) -> io::Result<u64> {
    let chunk = throttle.piece(SENDFILE_CHUNK);
    let socket = tcp.into_std()?;
    socket.set_nonblocking(false)?;
    socket.set_write_timeout(Some(stall))?;
    let mut abort = ShutdownOnDrop(Some(socket.try_clone()?));
    let start = offset;
    let result = tokio::task::spawn_blocking(move || {
        loop {
            match rustix::fs::sendfile(socket.as_fd(), file.as_fd(), Some(&mut offset), chunk) {
                Ok(0) => break,
                Ok(sent) => throttle.pace_blocking(sent),
                Err(rustix::io::Errno::INTR) => {}
                Err(error) => return Err(io::Error::from(error)),
            }
        }
        socket.shutdown(std::net::Shutdown::Write)?;
        delivered_blocking(&socket, stall)?;
        Ok(offset - start)
    })
    .await
    .map_err(io::Error::other)?;
    // Finished on its own: nothing to interrupt.
    abort.0 = None;
    result
}

/// Writes everything the client sends into the upload's body until it closes the connection.
pub async fn receive_file(
    stream: MaybeTls,
    body: UploadBody,
    stall: Duration,
    throttle: Throttle,
) -> io::Result<u64> {
    match (stream, body) {
        (MaybeTls::Plain(tcp), UploadBody::File(file)) => {
            receive_blocking(tcp, file, stall, throttle).await
        }
        (MaybeTls::Plain(tcp), UploadBody::Stream(writer)) => {
            receive_blocking(tcp, writer, stall, throttle).await
        }
        (tls @ MaybeTls::Tls(_), UploadBody::File(file)) => {
            receive_tls(tls, file, stall, throttle).await
        }
        (tls @ MaybeTls::Tls(_), UploadBody::Stream(writer)) => {
            receive_tls_stream(tls, writer, stall, throttle).await
        }
    }
}

/// Reads one buffer from a protected data connection; `0` at its end.
async fn read_tls(stream: &mut MaybeTls, buffer: &mut [u8], stall: Duration) -> io::Result<usize> {
    match within(stall, stream.read(buffer)).await {
        Ok(read) => Ok(read),
        // Many clients close a TLS data channel without close_notify; the byte stream is
        // complete all the same, exactly as on a plain connection.
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(error) => Err(error),
    }
}

/// A protected upload into a stream: each buffer written on a blocking thread.
async fn receive_tls_stream(
    mut stream: MaybeTls,
    mut writer: Box<dyn Write + Send>,
    stall: Duration,
    throttle: Throttle,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; throttle.piece(BUFFER)];
    let mut total = 0u64;
    loop {
        let read = read_tls(&mut stream, &mut buffer, stall).await?;
        if read == 0 {
            break;
        }
        let (back, written, used) = tokio::task::spawn_blocking(move || {
            let written = writer.write_all(&buffer[..read]);
            (writer, written, buffer)
        })
        .await
        .map_err(io::Error::other)?;
        (writer, buffer) = (back, used);
        written?;
        total += read as u64;
        throttle.pace(read).await;
    }
    tokio::task::spawn_blocking(move || writer.flush())
        .await
        .map_err(io::Error::other)??;
    let _ = within(stall, stream.shutdown()).await;
    Ok(total)
}

async fn receive_tls(
    mut stream: MaybeTls,
    file: File,
    stall: Duration,
    throttle: Throttle,
) -> io::Result<u64> {
    // Writes go to blocking threads (tokio's File); flush waits for the last one.
    let mut file = tokio::fs::File::from_std(file);
    let mut buffer = vec![0u8; throttle.piece(BUFFER)];
    let mut total = 0u64;
    loop {
        let read = read_tls(&mut stream, &mut buffer, stall).await?;
        if read == 0 {
            break;
        }
        file.write_all(&buffer[..read]).await?;
        total += read as u64;
        throttle.pace(read).await;
    }
    file.flush().await?;
    // Answer the client's close_notify with ours: ftplib waits for it (SSL unwrap).
    let _ = within(stall, stream.shutdown()).await;
    Ok(total)
}

/// A plain upload on a blocking thread: socket reads and file writes with no readiness round
/// trips and no blocking of the runtime's workers by disk writes.
async fn receive_blocking(
    tcp: TcpStream,
    mut file: impl Write + Send + 'static,
    stall: Duration,
    throttle: Throttle,
) -> io::Result<u64> {
    let mut socket = tcp.into_std()?;
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(stall))?;
    let mut abort = ShutdownOnDrop(Some(socket.try_clone()?));
    let result = tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; throttle.piece(BUFFER)];
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
            throttle.pace_blocking(read);
        }
        file.flush()?;
        Ok(total)
    })
    .await
    .map_err(io::Error::other)?;
    abort.0 = None;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shrinking_queue_is_progress_and_a_still_one_stalls_after_the_limit() {
        let stall = Duration::from_millis(50);
        let start = Instant::now();
        let (queued, since) = next_progress((100, start), 40, stall).unwrap();
        assert_eq!(queued, 40);
        assert!(since >= start);
        // No change within the limit: still waiting, from the same moment.
        assert_eq!(next_progress((40, since), 40, stall).unwrap(), (40, since));
        std::thread::sleep(stall);
        let error = next_progress((40, since), 40, stall).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_transfer_is_delivered_once_the_peer_has_acknowledged_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut peer = TcpStream::connect(address).await.unwrap();
            let mut received = Vec::new();
            peer.read_to_end(&mut received).await.unwrap();
            received
        });
        let (mut server, _) = listener.accept().await.unwrap();
        server.write_all(&[7u8; 1 << 20]).await.unwrap();
        server.shutdown().await.unwrap();
        let stream = MaybeTls::Plain(server);
        delivered(&stream, Duration::from_secs(10)).await.unwrap();
        let MaybeTls::Plain(server) = &stream else {
            unreachable!()
        };
        assert_eq!(unacknowledged(server).unwrap(), 0);
        assert_eq!(client.await.unwrap().len(), 1 << 20);
    }
}
