//! TCP keepalive on every control and data socket, set on the socket itself so it works whatever
//! the node's or pod's `net.ipv4.tcp_keepalive_*` sysctls say.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use super::config::Keepalive;

/// Turns keepalive on with the configured timings, or off when `idle_seconds` is 0.
pub fn apply<S>(socket: &S, keepalive: &Keepalive) -> io::Result<()>
where
    for<'a> SockRef<'a>: From<&'a S>,
{
    let socket = SockRef::from(socket);
    if !keepalive.enabled() {
        return socket.set_keepalive(false);
    }
    let params = TcpKeepalive::new()
        .with_time(Duration::from_secs(keepalive.idle_seconds.into()))
        .with_interval(Duration::from_secs(keepalive.interval_seconds.into()))
        .with_retries(keepalive.probes);
    socket.set_tcp_keepalive(&params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_clears_the_socket_options() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let keepalive = Keepalive {
            idle_seconds: 37,
            interval_seconds: 7,
            probes: 3,
        };
        apply(&stream, &keepalive).unwrap();
        let socket = SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(37)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(7)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        apply(
            &stream,
            &Keepalive {
                idle_seconds: 0,
                ..keepalive
            },
        )
        .unwrap();
        assert!(!socket.keepalive().unwrap());
    }
}
