//! The control connection as a byte stream: command lines in (bounded in length, cancel-safe),
//! replies out (bounded in time), and the in-place upgrade to TLS that `AUTH TLS` asks for.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::reply::Reply;
use super::stream::MaybeTls;

/// Result of reading one command line.
pub enum Line {
    Command(Vec<u8>),
    TooLong,
    Closed,
}

pub struct ControlConnection {
    /// `None` once `upgrade` has taken the socket and failed: there is nothing left to talk to.
    stream: Option<MaybeTls>,
    buffer: Vec<u8>,
    discarding: bool,
    max_line: usize,
}

impl ControlConnection {
    pub fn new(stream: TcpStream, max_line: usize) -> Self {
        ControlConnection {
            stream: Some(MaybeTls::Plain(stream)),
            buffer: Vec::with_capacity(512),
            discarding: false,
            max_line,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Some(MaybeTls::Tls(_)))
    }

    /// Writes a reply; a client that stops reading must not hold the session forever.
    pub async fn send(&mut self, reply: &Reply, limit: Duration) -> io::Result<()> {
        let write = async {
            let stream = self.stream.as_mut().ok_or(io::ErrorKind::NotConnected)?;
            stream.write_all(&reply.to_bytes()).await?;
            stream.flush().await
        };
        tokio::time::timeout(limit, write).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "client stopped reading replies")
        })?
    }

    /// Reads one line ending in LF. Cancel-safe: a partial line stays buffered, so this can be
    /// raced against a transfer in `select!`. A line over the limit is reported once and skipped.
    pub async fn read_line(&mut self) -> io::Result<Line> {
        let max = self.max_line;
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if std::mem::take(&mut self.discarding) {
                    continue;
                }
                if line.len() > max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Command(line));
            }
            if self.buffer.len() > max {
                self.buffer.clear();
                if !self.discarding {
                    self.discarding = true;
                    return Ok(Line::TooLong);
                }
            }
            let mut chunk = [0u8; 1024];
            let read = match &mut self.stream {
                Some(stream) => stream.read(&mut chunk).await?,
                None => 0,
            };
            if read == 0 {
                return Ok(Line::Closed);
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Runs the server side of the TLS handshake on the connection.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor, limit: Duration) -> io::Result<()> {
        // Anything pipelined after AUTH in plain text must not be run as if it were protected.
        self.buffer.clear();
        self.discarding = false;
        let Some(MaybeTls::Plain(tcp)) = self.stream.take() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let stream = tokio::time::timeout(limit, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.stream = Some(MaybeTls::Tls(Box::new(stream)));
        Ok(())
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Some(stream) => stream.shutdown().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(max_line: usize) -> (ControlConnection, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (ControlConnection::new(server, max_line), client)
    }

    fn command(line: Line) -> Vec<u8> {
        match line {
            Line::Command(bytes) => bytes,
            Line::TooLong => panic!("too long"),
            Line::Closed => panic!("closed"),
        }
    }

    #[tokio::test]
    async fn splits_lines_and_skips_overlong_ones() {
        let (mut control, mut client) = pair(64).await;
        client.write_all(b"NOOP\r\nUSER a").await.unwrap();
        assert_eq!(command(control.read_line().await.unwrap()), b"NOOP\r\n");
        client.write_all(b"\r\n").await.unwrap();
        assert_eq!(command(control.read_line().await.unwrap()), b"USER a\r\n");
        client.write_all(&[b'x'; 200]).await.unwrap();
        assert!(matches!(control.read_line().await.unwrap(), Line::TooLong));
        client.write_all(b"yyy\r\nQUIT\r\n").await.unwrap();
        assert_eq!(command(control.read_line().await.unwrap()), b"QUIT\r\n");
        drop(client);
        assert!(matches!(control.read_line().await.unwrap(), Line::Closed));
    }

    #[tokio::test]
    async fn a_cancelled_read_loses_nothing() {
        let (mut control, mut client) = pair(64).await;
        client.write_all(b"PA").await.unwrap();
        let cancelled = tokio::time::timeout(Duration::from_millis(50), control.read_line()).await;
        assert!(cancelled.is_err());
        client.write_all(b"SV\r\n").await.unwrap();
        assert_eq!(command(control.read_line().await.unwrap()), b"PASV\r\n");
    }
}
