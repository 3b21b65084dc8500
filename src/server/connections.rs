//! The listener's side of connections: at most AUTHD_MAX_CONNECTIONS open at once, and at most
//! AUTHD_MAX_CONNECTIONS_PER_SOURCE from one peer address (past either, a new connection is
//! closed as soon as it is accepted), a client that has not completed the TLS handshake (when TLS
//! is on) and sent the HTTP/2 preface within AUTHD_HANDSHAKE_TIMEOUT is disconnected, and so is
//! one that has had no call in flight for AUTHD_IDLE_TIMEOUT or has read nothing of its responses
//! for 10 s. Without these, sockets that never speak held a task and a descriptor each for ever.
//!
//! Calls are seen by the edge layer, bytes by the connection: they meet in [`Activity`], one per
//! connection, found by the peer's address (unique per TCP connection) in a shared registry. Each
//! connection keeps a timer for its idle deadline, moved on while calls come, and is closed when
//! it fires with nothing in flight.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::Sleep,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::tls::{ReloadingTls, Transport};

/// Length of the HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE_BYTES: usize = 24;

/// The limits, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one peer address, so that one host cannot take every slot.
    pub max_connections_per_source: usize,
    /// Time a new connection has to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// Time a connection may stay open without a call in flight.
    pub idle_timeout: Duration,
}

/// What one connection is doing, shared by the connection and the calls on it.
#[derive(Debug)]
pub struct Activity {
    /// Calls in flight.
    calls: AtomicUsize,
    /// When the last call ended (or the connection opened), in ms since `epoch`.
    quiet_since_ms: AtomicI64,
    epoch: Instant,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            calls: AtomicUsize::new(0),
            quiet_since_ms: AtomicI64::new(0),
            epoch: Instant::now(),
        }
    }

    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// How long the connection has had no call in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.calls.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let quiet = self.elapsed_ms() - self.quiet_since_ms.load(Ordering::Acquire);
        Duration::from_millis(u64::try_from(quiet).unwrap_or(0))
    }

    /// Marks a call in flight on this connection until the returned guard is dropped.
    pub(crate) fn call_started(self: &Arc<Self>) -> CallInFlight {
        self.calls.fetch_add(1, Ordering::AcqRel);
        CallInFlight(Some(self.clone()))
    }
}

/// How long a connection's writes may make no progress (its peer reads nothing) before it is
/// closed: a client that never reads its responses would otherwise hold its slot for ever, since
/// the idle deadline is seen only when the connection reads.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's write-stall deadline ([`WRITE_STALL_TIMEOUT`]), armed while writes wait.
#[derive(Default)]
pub(crate) struct WriteStall {
    timer: Option<Pin<Box<Sleep>>>,
}

impl WriteStall {
    /// Passes a write's outcome through; a write that has waited [`WRITE_STALL_TIMEOUT`] since
    /// the last progress fails instead (hyper then closes the connection).
    pub(crate) fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.timer = None;
            return polled;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL_TIMEOUT)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer read nothing for 10 s",
            )));
        }
        Poll::Pending
    }
}

/// A connection's idle deadline: expired once it has had no call in flight for `timeout`.
pub(crate) struct IdleDeadline {
    activity: Arc<Activity>,
    /// Fires at the earliest moment the connection could have been idle for `timeout`.
    timer: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl IdleDeadline {
    pub(crate) fn new(activity: Arc<Activity>, timeout: Duration) -> Self {
        Self {
            activity,
            timer: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }

    /// Whether the connection has been idle for its timeout; re-arms the timer when it fired
    /// early (a call came or is still running).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let idle_for = self.activity.idle_for();
            if idle_for >= self.timeout && self.activity.calls.load(Ordering::Acquire) == 0 {
                return true;
            }
            let rest = self
                .timeout
                .saturating_sub(idle_for)
                .max(Duration::from_millis(10));
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + rest);
        }
        false
    }
}

/// Marks a call in flight on its connection until dropped.
#[derive(Debug)]
pub struct CallInFlight(Option<Arc<Activity>>);

impl Drop for CallInFlight {
    fn drop(&mut self) {
        if let Some(activity) = self.0.take() {
            activity
                .quiet_since_ms
                .store(activity.elapsed_ms(), Ordering::Release);
            activity.calls.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The activity of every open connection, by peer address.
#[derive(Debug, Clone, Default)]
pub struct ActivityRegistry(Arc<Mutex<HashMap<SocketAddr, Arc<Activity>>>>);

impl ActivityRegistry {
    /// Marks a call in flight on the connection from `peer` (nothing when unknown).
    pub fn call_started(&self, peer: Option<SocketAddr>) -> CallInFlight {
        match peer.and_then(|peer| self.0.lock().ok()?.get(&peer).cloned()) {
            Some(activity) => activity.call_started(),
            None => CallInFlight(None),
        }
    }

    fn register(&self, peer: SocketAddr) -> Arc<Activity> {
        let activity = Arc::new(Activity::new());
        if let Ok(mut map) = self.0.lock() {
            map.insert(peer, activity.clone());
        }
        activity
    }

    /// Forgets `activity`'s entry, unless a newer connection from the same address holds it.
    fn forget(&self, peer: SocketAddr, activity: &Arc<Activity>) {
        if let Ok(mut map) = self.0.lock()
            && map
                .get(&peer)
                .is_some_and(|held| Arc::ptr_eq(held, activity))
        {
            map.remove(&peer);
        }
    }
}

/// Open connections per peer address.
#[derive(Debug, Clone, Default)]
pub(crate) struct PerSource(Arc<Mutex<HashMap<std::net::IpAddr, usize>>>);

impl PerSource {
    /// A place for one more connection from `source`, if it has fewer than `max`.
    pub(crate) fn take(&self, source: std::net::IpAddr, max: usize) -> Option<SourceSlot> {
        let mut counts = self.0.lock().ok()?;
        let count = counts.entry(source).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            counts: self.clone(),
            source,
        })
    }
}

/// One connection's place in its source's count, given back when dropped.
pub(crate) struct SourceSlot {
    counts: PerSource,
    source: std::net::IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.0.lock()
            && let Some(count) = counts.get_mut(&self.source)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// Accepts connections from `listener` within `limits`, as the stream tonic serves; with `tls`,
/// each completes its TLS handshake (on a task of its own, within the handshake timeout) first.
/// The accept loop ends when the server stops taking connections (the stream is dropped).
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    registry: ActivityRegistry,
    tls: Option<Arc<ReloadingTls>>,
) -> ReceiverStream<io::Result<LimitedConnection>> {
    let (accepted, stream) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_source = PerSource::default();
    tokio::spawn(async move {
        let mut refused = 0u64;
        loop {
            let connection = tokio::select! {
                _ = accepted.closed() => return,
                connection = listener.accept() => connection,
            };
            let (stream, peer) = match connection {
                Ok(connection) => connection,
                Err(error) => {
                    // Out of descriptors and the like: back off a moment rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(source_slot) = per_source.take(peer.ip(), limits.max_connections_per_source)
            else {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(
                        refused,
                        peer = %peer.ip(),
                        max = limits.max_connections_per_source,
                        "AUTHD_MAX_CONNECTIONS_PER_SOURCE reached: closing new connections"
                    );
                }
                drop(stream);
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(
                        refused,
                        max = limits.max_connections,
                        "AUTHD_MAX_CONNECTIONS reached: closing new connections"
                    );
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handshake = Box::pin(tokio::time::sleep(limits.handshake_timeout));
            let Some(tls) = &tls else {
                let connection = LimitedConnection::new(
                    Transport::Plain(stream),
                    peer,
                    (slot, source_slot),
                    &registry,
                    limits.idle_timeout,
                    handshake,
                );
                if accepted.send(Ok(connection)).await.is_err() {
                    return;
                }
                continue;
            };
            let acceptor = tls.acceptor();
            let accepted = accepted.clone();
            let registry = registry.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(
                    limits.handshake_timeout,
                    acceptor.accept(stream),
                )
                .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no TLS handshake within AUTHD_HANDSHAKE_TIMEOUT");
                        return;
                    }
                };
                let connection = LimitedConnection::new(
                    Transport::Tls(Box::new(stream)),
                    peer,
                    (slot, source_slot),
                    &registry,
                    limits.idle_timeout,
                    handshake,
                );
                let _ = accepted.send(Ok(connection)).await;
            });
        }
    });
    ReceiverStream::new(stream)
}

/// One accepted connection, holding its slot until closed.
pub struct LimitedConnection {
    guarded: Guarded,
    peer: SocketAddr,
    _slots: (OwnedSemaphorePermit, SourceSlot),
    registry: ActivityRegistry,
    activity: Arc<Activity>,
    /// Preface bytes still expected; 0 once the handshake is done.
    preface_left: usize,
    handshake: Pin<Box<Sleep>>,
}

impl LimitedConnection {
    fn new(
        stream: Transport,
        peer: SocketAddr,
        slots: (OwnedSemaphorePermit, SourceSlot),
        registry: &ActivityRegistry,
        idle_timeout: Duration,
        handshake: Pin<Box<Sleep>>,
    ) -> Self {
        let activity = registry.register(peer);
        Self {
            guarded: Guarded::new(stream, activity.clone(), idle_timeout),
            peer,
            _slots: slots,
            registry: registry.clone(),
            activity,
            preface_left: PREFACE_BYTES,
            handshake,
        }
    }
}

/// A connection's stream under its deadlines: reads fail once it has had no call in flight for
/// its idle timeout, writes once its peer has read nothing for [`WRITE_STALL_TIMEOUT`]; hyper
/// then closes it.
pub(crate) struct Guarded {
    stream: Transport,
    idle: IdleDeadline,
    write_stall: WriteStall,
}

impl Guarded {
    pub(crate) fn new(stream: Transport, activity: Arc<Activity>, idle_timeout: Duration) -> Self {
        Self {
            stream,
            idle: IdleDeadline::new(activity, idle_timeout),
            write_stall: WriteStall::default(),
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.idle.poll_expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no call within AUTHD_IDLE_TIMEOUT",
            )));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl Drop for LimitedConnection {
    fn drop(&mut self) {
        self.registry.forget(self.peer, &self.activity);
    }
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.guarded.stream.tcp().connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.preface_left > 0 && this.handshake.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within AUTHD_HANDSHAKE_TIMEOUT",
            )));
        }
        if this.preface_left == 0 {
            return Pin::new(&mut this.guarded).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.guarded.stream).poll_read(cx, buf);
        if read.is_ready() {
            let received = buf.filled().len() - before;
            this.preface_left = this.preface_left.saturating_sub(received);
        }
        read
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.guarded).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.guarded).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.guarded).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.guarded).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.guarded.is_write_vectored()
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.write_stall.check(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.write_stall.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.write_stall.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
