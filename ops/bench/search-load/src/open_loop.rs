//! The open-loop sender: requests due on a fixed schedule, sent over a fixed set of HTTP/1.1
//! keep-alive connections, latency measured from when each was due (as wrk2 does), so a
//! request that waits for a free connection counts the wait.
//!
//! Why hyper's connection API and one thread, not reqwest on the multi-threaded runtime: on
//! this 2-core machine the generator shares the cores with the api and Postgres it measures.
//! Spawning a task per request through reqwest's pool cost 51-56 us of CPU per event
//! (ops/bench/search, 5,500/s); here each connection is one task that takes the next due
//! request itself, with no pool, no per-request task and no lock.
use std::{
    cell::RefCell,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// One answer: the request's index, its status (0: no answer) and its latency from when it
/// was due.
pub type Outcome = (usize, u16, Duration);

/// Sends `requests[n]` at `started + n * interval` over at most `connections` connections to
/// `addr`, on the calling thread (its own current-thread runtime); `on_due(n)` runs as
/// request `n` falls due, before it is sent. Returns every outcome, in no particular order.
pub fn run(
    addr: SocketAddr,
    requests: Vec<Request<Full<Bytes>>>,
    interval: Duration,
    connections: usize,
    on_due: impl FnMut(usize) + 'static,
) -> anyhow::Result<Vec<Outcome>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let total = requests.len();
        let shared = Rc::new(Shared {
            requests: RefCell::new(requests.into_iter().enumerate()),
            on_due: RefCell::new(Box::new(on_due)),
            started: Instant::now(),
            interval,
        });
        let tasks: Vec<_> = (0..connections.clamp(1, total.max(1)))
            .map(|_| tokio::task::spawn_local(connection(addr, shared.clone())))
            .collect();
        let mut outcomes = Vec::with_capacity(total);
        for task in tasks {
            outcomes.extend(task.await?);
        }
        Ok(outcomes)
    })
}

struct Shared {
    /// The requests not yet taken, each with its index.
    requests: RefCell<std::iter::Enumerate<std::vec::IntoIter<Request<Full<Bytes>>>>>,
    on_due: RefCell<Box<dyn FnMut(usize)>>,
    started: Instant,
    interval: Duration,
}

impl Shared {
    /// The next request not yet taken, and when it is due.
    fn take(&self) -> Option<(usize, Instant, Request<Full<Bytes>>)> {
        let (n, request) = self.requests.borrow_mut().next()?;
        Some((n, self.started + self.interval * n as u32, request))
    }
}

/// One connection: takes the next due request, waits until it is due, sends it and reads the
/// whole answer; reconnects after an error.
async fn connection(addr: SocketAddr, shared: Rc<Shared>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut sender = None;
    while let Some((n, due, request)) = shared.take() {
        tokio::time::sleep_until(due.into()).await;
        (shared.on_due.borrow_mut())(n);
        if sender.is_none() {
            sender = connect(addr).await.ok();
        }
        let status = match sender.as_mut() {
            Some(s) => send(s, request).await,
            None => None,
        };
        if status.is_none() {
            sender = None;
        }
        outcomes.push((n, status.unwrap_or(0), due.elapsed()));
    }
    outcomes
}

async fn connect(
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(conn);
    Ok(sender)
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Option<u16> {
    sender.ready().await.ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    // the whole body read, or the connection cannot carry the next request
    response.into_body().collect().await.ok()?;
    Some(status)
}
