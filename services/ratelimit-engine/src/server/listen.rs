//! Listeners that hold a bounded number of connections.
//!
//! Each listener takes at most `max` connections at once: one accepted
//! beyond that is closed at once (counted in
//! `ratelimit_engine_connections_refused_total`), so that clients that open
//! connections and never finish a request cannot take every file descriptor
//! the process has, and with them the other listener (the proxies' gRPC
//! calls) or Redis's connection. The HTTP listener also closes a connection
//! whose request head does not arrive whole within its header timeout,
//! idle keep-alive connections included (hyper's `header_read_timeout`).

use crate::metrics::Metrics;
use futures_util::Stream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection that holds one of its listener's places until dropped.
pub struct Held {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl Held {
    /// The peer's address.
    pub fn peer(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.peer_addr()
    }
}

/// Accepts connections while fewer than `max` are open; closes the others.
/// Accept errors (out of descriptors) are retried after a short pause.
pub async fn accept(listener: &TcpListener, places: &Arc<Semaphore>, metrics: &Metrics) -> Held {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        match Arc::clone(places).try_acquire_owned() {
            Ok(place) => {
                // Small answers go out at once (see main.rs on Nagle).
                let _ = stream.set_nodelay(true);
                return Held { stream, _place: place };
            }
            Err(_) => {
                metrics.connection_refused();
                drop(stream);
            }
        }
    }
}

/// The listener's connections as the stream tonic serves.
pub fn incoming(listener: TcpListener, max: usize, metrics: Arc<Metrics>) -> impl Stream<Item = io::Result<Held>> {
    let places = Arc::new(Semaphore::new(max));
    futures_util::stream::unfold((listener, places, metrics), |(l, p, m)| async move {
        let held = accept(&l, &p, &m).await;
        Some((Ok(held), (l, p, m)))
    })
}

impl tonic::transport::server::Connected for Held {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Held {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
