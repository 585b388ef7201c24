//! Passive data ports: listeners from the configured range, shared by all sessions, that accept a
//! data connection only from the control connection's peer address.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::config::PassiveRange;
use super::metrics::Metrics;
use super::proxy;

/// The ports of the passive range that sessions are listening on now.
#[derive(Debug)]
pub struct PortPool {
    in_use: Mutex<HashSet<u16>>,
    metrics: Arc<Metrics>,
}

impl PortPool {
    pub fn new(metrics: Arc<Metrics>) -> Arc<PortPool> {
        Arc::new(PortPool {
            in_use: Mutex::new(HashSet::new()),
            metrics,
        })
    }

    /// Listens on a free port of `range` at `ip`; `None` when every port is busy.
    pub fn open(self: &Arc<Self>, range: &PassiveRange, ip: IpAddr) -> Option<PassiveListener> {
        let count = range.len();
        let start = rand::random_range(0..count);
        for step in 0..count {
            let port = range.min + ((start + step) % count) as u16;
            {
                let Ok(mut in_use) = self.in_use.lock() else {
                    return None;
                };
                if !in_use.insert(port) {
                    continue;
                }
            }
            match bind(SocketAddr::new(ip, port)) {
                Ok(listener) => {
                    self.metrics.passive_ports_in_use.inc();
                    return Some(PassiveListener {
                        listener,
                        port,
                        pool: Arc::clone(self),
                    });
                }
                Err(_) => self.release(port),
            }
        }
        self.metrics.passive_ports_exhausted.inc();
        None
    }

    fn release(&self, port: u16) {
        if let Ok(mut in_use) = self.in_use.lock() {
            in_use.remove(&port);
        }
    }
}

fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets a port whose last data connection is in TIME_WAIT be reused at once.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(8)
}

/// One listening passive port; the port returns to the pool when this is dropped.
#[derive(Debug)]
pub struct PassiveListener {
    listener: TcpListener,
    port: u16,
    pool: Arc<PortPool>,
}

impl PassiveListener {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the data connection from `peer`; connections from any other address are closed
    /// (and counted), the wait goes on until `timeout`. A connection from a PROXY source counts
    /// as coming from its header's address, and without a valid header it is closed.
    pub async fn accept_from(
        &self,
        peer: IpAddr,
        timeout: Duration,
        proxy_sources: &[IpNet],
    ) -> io::Result<TcpStream> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, "no data connection came");
        loop {
            let (mut stream, socket_peer) =
                tokio::time::timeout_at(deadline, self.listener.accept())
                    .await
                    .map_err(timed_out)??;
            let from = match tokio::time::timeout_at(
                deadline,
                proxy::client_address(&mut stream, socket_peer, proxy_sources),
            )
            .await
            .map_err(timed_out)?
            {
                Ok(from) => from,
                Err(error) => {
                    self.pool.metrics.data_connections_refused.inc();
                    tracing::warn!(%socket_peer, %error, "refused a data connection without a valid PROXY header");
                    continue;
                }
            };
            if same_host(from.ip(), peer) {
                return Ok(stream);
            }
            self.pool.metrics.data_connections_refused.inc();
            tracing::warn!(%from, expected = %peer, "refused a data connection from another address");
        }
    }
}

/// Compares addresses, treating IPv4-mapped IPv6 as the IPv4 address it carries.
pub fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

impl Drop for PassiveListener {
    fn drop(&mut self) {
        self.pool.release(self.port);
        self.pool.metrics.passive_ports_in_use.dec();
    }
}

/// The IPv4 address a `227` reply advertises: the configured public address (resolved now if it
/// is a DNS name, so a balancer's changing address is followed), else the control connection's
/// local address. `None` when there is no IPv4 address to give.
pub async fn advertised_ipv4(public_address: Option<&str>, local: IpAddr) -> Option<Ipv4Addr> {
    let v4 = |ip: IpAddr| match ip.to_canonical() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    };
    match public_address {
        Some(host) => {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return v4(ip);
            }
            let addresses = tokio::net::lookup_host((host, 0)).await.ok()?;
            addresses.into_iter().find_map(|address| v4(address.ip()))
        }
        None => v4(local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advertises_the_public_address_or_the_local_one() {
        let local: IpAddr = "10.1.2.3".parse().unwrap();
        let advertised =
            |public: Option<&'static str>, local: IpAddr| advertised_ipv4(public, local);
        assert_eq!(
            advertised(Some("203.0.113.7"), local).await,
            Some(Ipv4Addr::new(203, 0, 113, 7))
        );
        assert_eq!(
            advertised(Some("localhost"), local).await,
            Some(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            advertised(None, local).await,
            Some(Ipv4Addr::new(10, 1, 2, 3))
        );
        assert_eq!(
            advertised(None, "::ffff:10.9.9.9".parse().unwrap()).await,
            Some(Ipv4Addr::new(10, 9, 9, 9))
        );
        assert_eq!(advertised(None, "2001:db8::1".parse().unwrap()).await, None);
        assert_eq!(advertised(Some("2001:db8::1"), local).await, None);
    }

    #[tokio::test]
    async fn exhausts_and_refills() {
        let metrics = Arc::new(Metrics::default());
        let pool = PortPool::new(metrics.clone());
        // Find two adjacent free ports by asking the kernel for one and using its neighbour too.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let range = PassiveRange::new(port, port).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let first = pool.open(&range, ip).expect("one free port");
        assert_eq!(first.port(), port);
        assert!(pool.open(&range, ip).is_none());
        assert_eq!(metrics.passive_ports_exhausted.get(), 1);
        drop(first);
        assert!(pool.open(&range, ip).is_some());
    }
}
