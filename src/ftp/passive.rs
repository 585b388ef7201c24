//! Passive data ports: listeners on the configured range that hand each data connection to the
//! session waiting for it, matched by the client's address (the PROXY header's, when a trusted
//! balancer sent one). A session gets a port of its own while the range has one free; past that,
//! sessions from different client addresses share a port, as libunftp's pooled mode and Go's
//! ftpserverlib do, so a range of 5 ports can serve hundreds of transfers. Two sessions from one
//! address never wait on one port at the same time, so a data connection always has exactly one
//! session it can belong to; a connection from an address nobody waits for is closed. A session
//! holds its place only until its data connection arrives (or its wait ends).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;

use super::config::PassiveRange;
use super::metrics::Metrics;
use super::proxy;

/// The passive ports listening now, and who waits on each.
#[derive(Debug)]
pub struct PortPool {
    ports: Mutex<HashMap<u16, OpenPort>>,
    /// Woken whenever a wait ends, so a session waiting for a place can look again.
    freed: Notify,
    next_wait: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
}

/// One listening port.
#[derive(Debug)]
struct OpenPort {
    /// The local address it is bound to; only sessions on that address can use it.
    ip: IpAddr,
    /// Sessions waiting for their data connection, by client address (canonical form).
    waiting: HashMap<IpAddr, Waiter>,
    /// The balancer addresses whose connections carry a PROXY header, as the newest session here
    /// was configured.
    proxy_sources: Vec<IpNet>,
    accept_loop: AbortHandle,
    /// Clients whose wait here ended without their data connection, and when. A connection of
    /// theirs may still sit in this port's backlog (the listener stays open), and would reach
    /// their next wait here: so for [`STALE_GRACE`] they get another port when there is one.
    left_unmet: HashMap<IpAddr, Instant>,
}

/// How long a port is avoided for a client whose wait on it ended unmet.
const STALE_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Waiter {
    id: u64,
    connection: oneshot::Sender<TcpStream>,
}

impl PortPool {
    pub fn new(metrics: Arc<Metrics>) -> Arc<PortPool> {
        Arc::new(PortPool {
            ports: Mutex::new(HashMap::new()),
            freed: Notify::new(),
            next_wait: std::sync::atomic::AtomicU64::new(0),
            metrics,
        })
    }

    /// A place to wait for `client`'s data connection on a port of `range` at `ip`: a port of
    /// its own if one is free, else a port no other session from `client` waits on. When there is
    /// none, waits up to `patience` for one to come free; `None` after that.
    pub async fn open(
        self: &Arc<Self>,
        range: &PassiveRange,
        ip: IpAddr,
        client: IpAddr,
        proxy_sources: &[IpNet],
        patience: Duration,
    ) -> Option<PassiveListener> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // Registered before looking, so a place freed in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(listener) = self.try_open(range, ip, client, proxy_sources) {
                return Some(listener);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                self.metrics.passive_ports_exhausted.inc();
                return None;
            }
        }
    }

    fn try_open(
        self: &Arc<Self>,
        range: &PassiveRange,
        ip: IpAddr,
        client: IpAddr,
        proxy_sources: &[IpNet],
    ) -> Option<PassiveListener> {
        let client = client.to_canonical();
        let mut ports = self.ports.lock().ok()?;
        // Listeners stay open once made (closing one races with binding it again); those a
        // reload took out of the range go when nobody waits on them.
        ports.retain(|port, open| {
            let keep = range.contains(*port) || !open.waiting.is_empty();
            if !keep {
                open.accept_loop.abort();
            }
            keep
        });
        let now = Instant::now();
        for open in ports.values_mut() {
            open.left_unmet
                .retain(|_, at| now.duration_since(*at) < STALE_GRACE);
        }
        let usable = |port: &u16, open: &OpenPort, avoid_stale: bool| {
            range.contains(*port)
                && open.ip == ip
                && !open.waiting.contains_key(&client)
                && !(avoid_stale && open.left_unmet.contains_key(&client))
        };
        let idle = |ports: &HashMap<u16, OpenPort>, avoid_stale: bool| {
            ports
                .iter()
                .find(|(port, open)| usable(port, open, avoid_stale) && open.waiting.is_empty())
                .map(|(port, _)| *port)
        };
        let shared = |ports: &HashMap<u16, OpenPort>, avoid_stale: bool| {
            ports
                .iter()
                .filter(|(port, open)| usable(port, open, avoid_stale))
                .min_by_key(|(_, open)| open.waiting.len())
                .map(|(port, _)| *port)
        };
        // A port nobody waits on, open already or opened now; else the least busy shared one;
        // a port this client left unmet a moment ago only when there is no other.
        let port = match idle(&ports, true) {
            Some(port) => port,
            None => match self.open_new(&mut ports, range, ip) {
                Some(port) => port,
                None => shared(&ports, true)
                    .or_else(|| idle(&ports, false))
                    .or_else(|| shared(&ports, false))?,
            },
        };
        let open = ports.get_mut(&port)?;
        if open.waiting.is_empty() {
            self.metrics.passive_ports_in_use.inc();
        }
        let id = self
            .next_wait
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        open.waiting.insert(
            client,
            Waiter {
                id,
                connection: sender,
            },
        );
        open.proxy_sources = proxy_sources.to_vec();
        Some(PassiveListener {
            port,
            client,
            id,
            connection: receiver,
            pool: Arc::clone(self),
        })
    }

    /// Binds a port of `range` no listener has yet, starting at a random one.
    fn open_new(
        self: &Arc<Self>,
        ports: &mut HashMap<u16, OpenPort>,
        range: &PassiveRange,
        ip: IpAddr,
    ) -> Option<u16> {
        let count = range.len();
        let start = rand::random_range(0..count);
        let (port, listener) = (0..count)
            .map(|step| range.min + ((start + step) % count) as u16)
            .filter(|port| !ports.contains_key(port))
            .find_map(|port| bind(SocketAddr::new(ip, port)).ok().map(|l| (port, l)))?;
        let accept_loop = tokio::spawn(accept_loop(Arc::clone(self), port, listener));
        ports.insert(
            port,
            OpenPort {
                ip,
                waiting: HashMap::new(),
                proxy_sources: Vec::new(),
                accept_loop: accept_loop.abort_handle(),
                left_unmet: HashMap::new(),
            },
        );
        Some(port)
    }

    /// Gives a connection that came in on `port` to the session waiting for its client address.
    async fn deliver(&self, port: u16, mut stream: TcpStream, socket_peer: SocketAddr) {
        let sources = match self.ports.lock() {
            Ok(ports) => match ports.get(&port) {
                Some(open) => open.proxy_sources.clone(),
                None => return,
            },
            Err(_) => return,
        };
        let from = match proxy::client_address(&mut stream, socket_peer, &sources).await {
            Ok(from) => from.ip().to_canonical(),
            Err(error) => {
                self.metrics.data_connections_refused.inc();
                tracing::warn!(%socket_peer, %error, "refused a data connection without a valid PROXY header");
                return;
            }
        };
        let waiter = self.ports.lock().ok().and_then(|mut ports| {
            let open = ports.get_mut(&port)?;
            let Some(waiter) = open.waiting.remove(&from) else {
                // Likely the connection an earlier, unmet wait of this client left behind.
                open.left_unmet.remove(&from);
                return None;
            };
            if open.waiting.is_empty() {
                self.metrics.passive_ports_in_use.dec();
            }
            Some(waiter)
        });
        match waiter {
            // The session may have given up this very moment; then the connection just closes.
            Some(waiter) => {
                let _ = waiter.connection.send(stream);
            }
            None => {
                self.metrics.data_connections_refused.inc();
                tracing::warn!(%from, port, "refused a data connection no session waits for");
            }
        }
        self.freed.notify_waiters();
    }

    /// Ends a wait (if its connection has not already ended it).
    fn leave(&self, port: u16, client: IpAddr, id: u64) {
        if let Ok(mut ports) = self.ports.lock()
            && let Some(open) = ports.get_mut(&port)
            && open.waiting.get(&client).is_some_and(|w| w.id == id)
        {
            open.waiting.remove(&client);
            open.left_unmet.insert(client, Instant::now());
            if open.waiting.is_empty() {
                self.metrics.passive_ports_in_use.dec();
            }
        }
        self.freed.notify_waiters();
    }
}

/// Accepts on one port for as long as it is open; each connection is matched on a task of its
/// own, so a balancer slow to send its PROXY header holds up no one else.
async fn accept_loop(pool: Arc<PortPool>, port: u16, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, socket_peer)) => {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { pool.deliver(port, stream, socket_peer).await });
            }
            Err(error) => {
                tracing::warn!(%error, port, "passive accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A passive listener queues as many connections as tokio's `bind` would.
const PASSIVE_BACKLOG: u32 = 128;

fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    listen(address, PASSIVE_BACKLOG)
}

/// A listener on `address` queueing `backlog` connections, for the control and passive ports
/// alike. SO_REUSEADDR lets a port whose last connection is in TIME_WAIT be reused at once.
pub(super) fn listen(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// A session's wait for its data connection on a passive port; dropping it ends the wait.
#[derive(Debug)]
pub struct PassiveListener {
    port: u16,
    client: IpAddr,
    id: u64,
    connection: oneshot::Receiver<TcpStream>,
    pool: Arc<PortPool>,
}

impl PassiveListener {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits up to `timeout` for the data connection from the client this wait was opened for;
    /// connections from other addresses never reach it (they are closed and counted).
    pub async fn accept(mut self, timeout: Duration) -> io::Result<TcpStream> {
        match tokio::time::timeout(timeout, &mut self.connection).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(_)) => Err(io::Error::other("passive port closed")),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no data connection came",
            )),
        }
    }
}

impl Drop for PassiveListener {
    fn drop(&mut self) {
        self.pool.leave(self.port, self.client, self.id);
    }
}

/// Compares addresses, treating IPv4-mapped IPv6 as the IPv4 address it carries.
pub fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
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
    async fn shares_a_port_between_addresses_but_never_within_one() {
        let metrics = Arc::new(Metrics::default());
        let pool = PortPool::new(metrics.clone());
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let range = PassiveRange::new(port, port).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "::ffff:198.51.100.2".parse().unwrap();
        let open = |client| pool.open(&range, ip, client, &[], Duration::ZERO);
        let first = open(a).await.expect("a free port");
        assert_eq!(first.port(), port);
        let second = open(b).await.expect("shared with another address");
        assert_eq!(second.port(), port);
        assert!(open(a).await.is_none(), "two waits from one address");
        assert!(open("198.51.100.1".parse().unwrap()).await.is_none());
        assert_eq!(metrics.passive_ports_exhausted.get(), 2);
        assert_eq!(metrics.passive_ports_in_use.get(), 1);
        drop(first);
        let again = open(a).await.expect("a's place is free again");
        drop((second, again));
        assert_eq!(metrics.passive_ports_in_use.get(), 0);
        // Nobody waits: the next session gets the port to itself.
        assert!(open(b).await.is_some());
    }

    /// Two consecutive free ports on 127.0.0.1.
    fn free_pair() -> u16 {
        for _ in 0..100 {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = probe.local_addr().unwrap().port();
            if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                return port;
            }
        }
        panic!("no two consecutive free ports");
    }

    #[tokio::test]
    async fn a_connection_an_unmet_wait_left_behind_does_not_reach_the_next_wait() {
        let pool = PortPool::new(Arc::new(Metrics::default()));
        let first_port = free_pair();
        let range = PassiveRange::new(first_port, first_port + 1).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let first = pool
            .open(&range, ip, ip, &[], Duration::ZERO)
            .await
            .unwrap();
        // Connected, but not yet taken by the port's accept loop (this runtime has not run it):
        // as under load, or a client that gave up on this wait.
        let left = std::net::TcpStream::connect((ip, first.port())).unwrap();
        let left_port = first.port();
        drop(first);
        let second = pool
            .open(&range, ip, ip, &[], Duration::ZERO)
            .await
            .unwrap();
        assert_ne!(
            second.port(),
            left_port,
            "the next wait got the port with the old connection"
        );
        let fresh = tokio::net::TcpStream::connect((ip, second.port()))
            .await
            .unwrap();
        let got = second.accept(Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.peer_addr().unwrap(), fresh.local_addr().unwrap());
        drop(left);
    }

    #[tokio::test]
    async fn a_wait_for_a_place_ends_when_one_comes_free() {
        let metrics = Arc::new(Metrics::default());
        let pool = PortPool::new(metrics);
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let range = PassiveRange::new(port, port).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let client: IpAddr = "198.51.100.1".parse().unwrap();
        let first = pool
            .open(&range, ip, client, &[], Duration::ZERO)
            .await
            .unwrap();
        let waiting = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.open(&range, ip, client, &[], Duration::from_secs(10))
                    .await
                    .map(|l| l.port())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.unwrap(), Some(port));
    }
}
