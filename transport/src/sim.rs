//! A simulated UDP network for deterministic simulation: every node of a
//! simulated cluster binds a [`SimSocket`] instead of an OS socket, and QUIC
//! (with its TLS, streams and timers) runs over it unchanged. Delivery takes
//! virtual time (`tokio::time`, paused), and every random choice — latency,
//! loss, duplication — comes from the network's one seeded generator, so a
//! seed fixes what happens to each datagram.
//!
//! Faults are rules on the network: a host may be crashed (nothing in or
//! out, ever again), paused (datagrams held until it resumes, as a stopped
//! process's socket buffers hold them), or cut off from other hosts one way
//! or both; datagrams may be lost, duplicated, delayed and so reordered.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Datagrams a socket holds unread before it drops more, as a kernel does.
const RECEIVE_QUEUE: usize = 4096;

/// How datagrams fare on every link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkFaults {
    /// Smallest one-way delay.
    pub latency: Duration,
    /// Extra delay, uniform in `0..jitter`; datagrams overtake each other
    /// when it exceeds their spacing.
    pub jitter: Duration,
    /// Chance a datagram is lost.
    pub loss: f64,
    /// Chance a datagram arrives twice.
    pub duplicate: f64,
}

impl Default for LinkFaults {
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(100),
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// What happened to datagrams so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Dropped by a crash or a partition.
    pub cut: u64,
    /// Held while a host was paused.
    pub held: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostState {
    Up,
    Paused,
    Crashed,
}

struct Datagram {
    /// The sending socket, which must still be open when it sends.
    serial: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Bytes,
}

struct NetState {
    rng: ChaCha8Rng,
    /// Open sockets, with the serial of the one bound there now.
    sockets: BTreeMap<SocketAddr, (u64, Weak<SocketShared>)>,
    next_serial: u64,
    next_port: BTreeMap<IpAddr, u16>,
    hosts: BTreeMap<IpAddr, HostState>,
    /// (from, to): datagrams from the first host to the second are dropped.
    blocked: BTreeSet<(IpAddr, IpAddr)>,
    faults: LinkFaults,
    /// Datagrams to or from a paused host, in the order they were sent.
    held: Vec<Datagram>,
    stats: NetStats,
}

/// The network: cheap to clone, shared by every simulated node.
#[derive(Clone)]
pub struct SimNet {
    state: Arc<Mutex<NetState>>,
}

impl fmt::Debug for SimNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimNet")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimNet {
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(NetState {
                rng: ChaCha8Rng::seed_from_u64(seed),
                sockets: BTreeMap::new(),
                next_serial: 0,
                next_port: BTreeMap::new(),
                hosts: BTreeMap::new(),
                blocked: BTreeSet::new(),
                faults: LinkFaults::default(),
                held: Vec::new(),
                stats: NetStats::default(),
            })),
        }
    }

    /// Binds a socket on host `ip` at a port of its own (a port of 0 picks
    /// the next free one, from 40000 up).
    pub fn bind(&self, addr: SocketAddr) -> io::Result<Arc<SimSocket>> {
        let mut state = lock(&self.state);
        let ip = addr.ip();
        if state.hosts.get(&ip) == Some(&HostState::Crashed) {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("host {ip} has crashed"),
            ));
        }
        state.hosts.entry(ip).or_insert(HostState::Up);
        let addr = if addr.port() == 0 {
            let next = state.next_port.entry(ip).or_insert(40000);
            let port = *next;
            *next = next.wrapping_add(1).max(40000);
            SocketAddr::new(ip, port)
        } else {
            addr
        };
        if state
            .sockets
            .get(&addr)
            .is_some_and(|(_, s)| s.strong_count() > 0)
        {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound"),
            ));
        }
        let shared = Arc::new(SocketShared::default());
        let serial = state.next_serial;
        state.next_serial += 1;
        state
            .sockets
            .insert(addr, (serial, Arc::downgrade(&shared)));
        Ok(Arc::new(SimSocket {
            serial,
            addr,
            net: self.clone(),
            shared,
        }))
    }

    pub fn set_faults(&self, faults: LinkFaults) {
        lock(&self.state).faults = faults;
    }

    pub fn faults(&self) -> LinkFaults {
        lock(&self.state).faults
    }

    pub fn stats(&self) -> NetStats {
        lock(&self.state).stats
    }

    /// Nothing reaches `ip` or leaves it again: the host is gone.
    pub fn crash(&self, ip: IpAddr) {
        let mut state = lock(&self.state);
        state.hosts.insert(ip, HostState::Crashed);
        state.sockets.retain(|addr, _| addr.ip() != ip);
        let held = std::mem::take(&mut state.held);
        state.held = held
            .into_iter()
            .filter(|d| d.from.ip() != ip && d.to.ip() != ip)
            .collect();
    }

    /// A crashed host comes back empty (a new process on the same address).
    pub fn restart(&self, ip: IpAddr) {
        lock(&self.state).hosts.insert(ip, HostState::Up);
    }

    /// Datagrams to and from `ip` are held, as for a stopped process.
    pub fn pause(&self, ip: IpAddr) {
        let mut state = lock(&self.state);
        if state.hosts.get(&ip) == Some(&HostState::Up) {
            state.hosts.insert(ip, HostState::Paused);
        }
    }

    /// A paused host runs again: what was held for it goes on its way.
    pub fn resume(&self, ip: IpAddr) {
        let released = {
            let mut state = lock(&self.state);
            if state.hosts.get(&ip) != Some(&HostState::Paused) {
                return;
            }
            state.hosts.insert(ip, HostState::Up);
            let held = std::mem::take(&mut state.held);
            let (go, stay): (Vec<_>, Vec<_>) = held
                .into_iter()
                .partition(|d| state.can_flow(d.from.ip(), d.to.ip()));
            state.held = stay;
            go
        };
        for datagram in released {
            self.route(datagram);
        }
    }

    /// Cuts the links from every host of `a` to every host of `b`, and back
    /// unless `one_way`.
    pub fn partition(&self, a: &[IpAddr], b: &[IpAddr], one_way: bool) {
        let mut state = lock(&self.state);
        for &x in a {
            for &y in b {
                state.blocked.insert((x, y));
                if !one_way {
                    state.blocked.insert((y, x));
                }
            }
        }
    }

    /// Every cut link works again.
    pub fn heal(&self) {
        lock(&self.state).blocked.clear();
    }

    /// Whether any link is cut now.
    pub fn is_partitioned(&self) -> bool {
        !lock(&self.state).blocked.is_empty()
    }

    /// Sends one datagram: decides its fate now, and delivers it after its
    /// delay.
    fn send(&self, datagram: Datagram) {
        let delays = {
            let mut state = lock(&self.state);
            state.stats.sent += 1;
            let (from, to) = (datagram.from.ip(), datagram.to.ip());
            let open = state
                .sockets
                .get(&datagram.from)
                .is_some_and(|(serial, _)| *serial == datagram.serial);
            if !open
                || state.is_crashed(from)
                || state.is_crashed(to)
                || state.blocked.contains(&(from, to))
            {
                state.stats.cut += 1;
                return;
            }
            if state.is_paused(from) || state.is_paused(to) {
                state.stats.held += 1;
                state.held.push(datagram);
                return;
            }
            let faults = state.faults;
            if faults.loss > 0.0 && state.rng.random_bool(faults.loss.clamp(0.0, 1.0)) {
                state.stats.lost += 1;
                return;
            }
            let twice =
                faults.duplicate > 0.0 && state.rng.random_bool(faults.duplicate.clamp(0.0, 1.0));
            if twice {
                state.stats.duplicated += 1;
            }
            let mut each = vec![state.delay()];
            if twice {
                each.push(state.delay());
            }
            each
        };
        for delay in delays {
            let copy = Datagram {
                serial: datagram.serial,
                from: datagram.from,
                to: datagram.to,
                bytes: datagram.bytes.clone(),
            };
            self.deliver_after(copy, delay);
        }
    }

    /// A released datagram: the link's usual delay, no new loss.
    fn route(&self, datagram: Datagram) {
        let delay = lock(&self.state).delay();
        self.deliver_after(datagram, delay);
    }

    fn deliver_after(&self, datagram: Datagram, delay: Duration) {
        let net = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    tokio::time::sleep(delay).await;
                    net.arrive(datagram);
                });
            }
            Err(_) => net.arrive(datagram),
        }
    }

    /// A datagram reaches its host: checked again against faults that began
    /// while it travelled.
    fn arrive(&self, datagram: Datagram) {
        let socket = {
            let mut state = lock(&self.state);
            let (from, to) = (datagram.from.ip(), datagram.to.ip());
            if state.is_crashed(to) || state.blocked.contains(&(from, to)) {
                state.stats.cut += 1;
                return;
            }
            if state.is_paused(to) {
                state.stats.held += 1;
                state.held.push(datagram);
                return;
            }
            state.stats.delivered += 1;
            state
                .sockets
                .get(&datagram.to)
                .and_then(|(_, socket)| socket.upgrade())
        };
        if let Some(socket) = socket {
            socket.push(datagram.from, datagram.bytes);
        }
    }
}

impl NetState {
    fn is_crashed(&self, ip: IpAddr) -> bool {
        self.hosts.get(&ip) == Some(&HostState::Crashed)
    }

    fn is_paused(&self, ip: IpAddr) -> bool {
        self.hosts.get(&ip) == Some(&HostState::Paused)
    }

    fn can_flow(&self, from: IpAddr, to: IpAddr) -> bool {
        !self.is_paused(from) && !self.is_paused(to)
    }

    fn delay(&mut self) -> Duration {
        let jitter = self.faults.jitter.as_nanos() as u64;
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.random_range(0..jitter)
        };
        self.faults.latency + Duration::from_nanos(extra)
    }
}

#[derive(Default)]
struct SocketShared {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    datagrams: VecDeque<(SocketAddr, Bytes)>,
    waker: Option<Waker>,
}

impl SocketShared {
    fn push(&self, from: SocketAddr, bytes: Bytes) {
        let mut queue = lock(&self.queue);
        if queue.datagrams.len() >= RECEIVE_QUEUE {
            return;
        }
        queue.datagrams.push_back((from, bytes));
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
    }
}

/// One node's socket on the simulated network.
pub struct SimSocket {
    serial: u64,
    addr: SocketAddr,
    net: SimNet,
    shared: Arc<SocketShared>,
}

impl SimSocket {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the socket as a killed process's socket closes: nothing it
    /// sends leaves any more, nothing reaches it, and nobody is told.
    pub fn close(&self) {
        let mut state = lock(&self.net.state);
        if state
            .sockets
            .get(&self.addr)
            .is_some_and(|(serial, _)| *serial == self.serial)
        {
            state.sockets.remove(&self.addr);
        }
    }
}

impl fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimSocket({})", self.addr)
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for SimSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for chunk in transmit.contents.chunks(segment) {
            self.net.send(Datagram {
                serial: self.serial,
                from: self.addr,
                to: transmit.destination,
                bytes: Bytes::copy_from_slice(chunk),
            });
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut queue = lock(&self.shared.queue);
        let mut count = 0;
        while count < bufs.len().min(meta.len()) {
            let Some((from, bytes)) = queue.datagrams.pop_front() else {
                break;
            };
            let len = bytes.len().min(bufs[count].len());
            bufs[count][..len].copy_from_slice(&bytes[..len]);
            meta[count] = RecvMeta {
                addr: from,
                len,
                stride: len,
                dst_ip: Some(self.addr.ip()),
                ..RecvMeta::default()
            };
            count += 1;
        }
        if count > 0 {
            return Poll::Ready(Ok(count));
        }
        queue.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    async fn recv(socket: &SimSocket) -> Option<Bytes> {
        let socket_ref = socket;
        let polled = tokio::time::timeout(
            Duration::from_secs(1),
            std::future::poll_fn(|cx| {
                let mut buf = [0u8; 64];
                let mut bufs = [IoSliceMut::new(&mut buf)];
                let mut meta = [RecvMeta::default()];
                match socket_ref.poll_recv(cx, &mut bufs, &mut meta) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        Poll::Ready(Some(Bytes::copy_from_slice(&buf[..meta[0].len])))
                    }
                    Poll::Ready(_) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }),
        )
        .await;
        polled.ok().flatten()
    }

    fn send(from: &SimSocket, to: SocketAddr, bytes: &[u8]) {
        from.try_send(&Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: None,
        })
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn datagrams_arrive_unless_cut_and_paused_hosts_get_them_late() {
        let net = SimNet::new(7);
        let a = net.bind(SocketAddr::new(ip(1), 0)).unwrap();
        let b = net.bind(SocketAddr::new(ip(2), 0)).unwrap();
        send(&a, b.addr, b"one");
        assert_eq!(recv(&b).await.as_deref(), Some(&b"one"[..]));

        net.partition(&[ip(1)], &[ip(2)], true);
        send(&a, b.addr, b"cut");
        assert_eq!(recv(&b).await, None, "a cut link delivers nothing");
        send(&b, a.addr, b"back");
        assert_eq!(
            recv(&a).await.as_deref(),
            Some(&b"back"[..]),
            "one way only"
        );
        net.heal();

        net.pause(ip(2));
        send(&a, b.addr, b"held");
        assert_eq!(recv(&b).await, None, "held while paused");
        net.resume(ip(2));
        assert_eq!(recv(&b).await.as_deref(), Some(&b"held"[..]));

        net.crash(ip(2));
        send(&a, b.addr, b"gone");
        assert_eq!(recv(&b).await, None);
        assert!(net.bind(SocketAddr::new(ip(2), 0)).is_err());
        let stats = net.stats();
        assert_eq!(stats.cut, 2);
        assert_eq!(stats.held, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_seed_gives_one_fate_to_every_datagram() {
        async fn fates(seed: u64) -> Vec<Option<Bytes>> {
            let net = SimNet::new(seed);
            net.set_faults(LinkFaults {
                loss: 0.3,
                duplicate: 0.2,
                ..LinkFaults::default()
            });
            let a = net.bind(SocketAddr::new(ip(1), 0)).unwrap();
            let b = net.bind(SocketAddr::new(ip(2), 0)).unwrap();
            for i in 0..50u8 {
                send(&a, b.addr, &[i]);
            }
            let mut got = Vec::new();
            while let Some(d) = recv(&b).await {
                got.push(Some(d));
            }
            got
        }
        let first = fates(11).await;
        assert_eq!(first, fates(11).await);
        assert_ne!(first, fates(12).await);
        assert!(first.len() < 60 && first.len() > 20, "{}", first.len());
    }
}
