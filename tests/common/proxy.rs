//! A TCP proxy the test can cut, stall and restore: stands between authd and Postgres or Redis so
//! that an outage or a hung back end can be injected without touching the machine's shared servers.

use std::net::SocketAddr;

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward everything.
    Pass,
    /// Drop every connection, refuse new ones (the back end is down).
    Cut,
    /// Keep connections open but forward nothing (the back end hangs).
    Stall,
}

/// Forwards connections to `upstream` until cut or stalled.
pub struct Proxy {
    pub address: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (mode, watch_mode) = watch::channel(Mode::Pass);
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(inbound, upstream, watch_mode.clone()));
            }
        });
        Self { address, mode }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Keeps connections open but forwards nothing, like a hung server.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Forwards again (connections held during a stall are dropped).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Pass);
    }

    /// A URL like `template` but pointing at the proxy.
    pub fn url(&self, template: &str) -> String {
        let upstream = super::host_port(template).to_string();
        template.replacen(&upstream, &self.address.to_string(), 1)
    }
}

async fn serve(mut inbound: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Cut => return,
        Mode::Stall => {
            // Hold the connection silently until the mode changes, then drop it.
            let _ = mode.changed().await;
            return;
        }
        Mode::Pass => {}
    }
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let changed_to = tokio::select! {
        _ = copy_bidirectional(&mut inbound, &mut outbound) => return,
        changed = mode.wait_for(|m| *m != Mode::Pass) => changed.map(|m| *m).unwrap_or(Mode::Cut),
    };
    if changed_to == Mode::Stall {
        // Keep both sockets open, forwarding nothing, until restored or cut.
        let _ = mode.wait_for(|m| *m != Mode::Stall).await;
    }
}
