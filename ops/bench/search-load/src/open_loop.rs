//! The open-loop sender: requests due on a fixed schedule, sent over a fixed set of HTTP/1.1
//! keep-alive connections, latency measured from when each was due (as wrk2 does), so a
//! request that waits for a free connection counts the wait.
//!
//! Why one thread, and requests written as ready-made bytes rather than through an HTTP
//! client: on this 2-core machine the generator shares the cores with the api and Postgres
//! it measures, so what it spends per request is taken from them. reqwest (a task per
//! request through its pool) cost 51-56 us of CPU per event at 5,500/s; hyper's connection
//! API, which runs each connection as two tasks (the sender and the connection, woken
//! through a channel for every request and every answer), 31-39 us. Here each connection is
//! one task that takes the next due request, writes its bytes, and reads the answer with
//! `httparse` (hyper's own parser) until its `content-length` is in: one task, no channel,
//! no per-request allocation.
use std::{
    cell::RefCell,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// One answer: the request's index, its status (0: no answer) and its latency from when it
/// was due.
pub type Outcome = (usize, u16, Duration);

/// Sends `requests[n]` (each a whole HTTP/1.1 request, keep-alive) at `started + n *
/// interval` over at most `connections` connections to `addr`, on the calling thread (its
/// own current-thread runtime); `on_due(n)` runs as request `n` falls due, before it is
/// sent. Returns every outcome, in no particular order.
pub fn run(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
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
    requests: RefCell<std::iter::Enumerate<std::vec::IntoIter<Vec<u8>>>>,
    on_due: RefCell<Box<dyn FnMut(usize)>>,
    started: Instant,
    interval: Duration,
}

impl Shared {
    /// The next request not yet taken, and when it is due.
    fn take(&self) -> Option<(usize, Instant, Vec<u8>)> {
        let (n, request) = self.requests.borrow_mut().next()?;
        Some((n, self.started + self.interval * n as u32, request))
    }
}

/// One connection: takes the next due request, waits until it is due, sends it and reads the
/// whole answer; reconnects after an error.
async fn connection(addr: SocketAddr, shared: Rc<Shared>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut stream = None;
    let mut answer = Vec::with_capacity(1024);
    while let Some((n, due, request)) = shared.take() {
        tokio::time::sleep_until(due.into()).await;
        (shared.on_due.borrow_mut())(n);
        if stream.is_none() {
            stream = connect(addr).await.ok();
        }
        let status = match stream.as_mut() {
            Some(s) => exchange(s, &request, &mut answer).await,
            None => None,
        };
        if status.is_none() {
            stream = None;
        }
        outcomes.push((n, status.unwrap_or(0), due.elapsed()));
    }
    outcomes
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes `request` and reads one whole answer into `answer`; its status, or `None` when the
/// connection cannot carry another request (closed, malformed, or an answer without a
/// `content-length`, which the api never sends).
async fn exchange(stream: &mut TcpStream, request: &[u8], answer: &mut Vec<u8>) -> Option<u16> {
    stream.write_all(request).await.ok()?;
    answer.clear();
    loop {
        if answer.len() == answer.capacity() {
            answer.reserve(answer.len());
        }
        if stream.read_buf(answer).await.ok()? == 0 {
            return None;
        }
        if let Some((status, length)) = complete(answer)? {
            if length == answer.len() {
                return Some(status);
            }
            // an answer longer than it said it was: the rest would be taken for the next
            return None;
        }
    }
}

/// The status and whole length of the answer at the start of `bytes`, once its head is in
/// (`Some(None)` until then); `None` when it is malformed.
fn complete(bytes: &[u8]) -> Option<Option<(u16, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes).ok()? {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => return Some(None),
    };
    let length: usize = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())?;
    let status = response.code?;
    Some((bytes.len() >= head + length).then_some((status, head + length)))
}

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn an_answer_is_complete_once_its_head_and_body_are_in() {
        let answer = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"id\": 1234}";
        let whole = answer.len();
        assert_eq!(complete(answer), Some(Some((201, whole))));
        assert_eq!(complete(&answer[..whole - 1]), Some(None));
        assert_eq!(complete(&answer[..20]), Some(None));
    }

    #[test]
    fn an_answer_without_a_length_or_with_a_bad_head_ends_the_connection() {
        assert_eq!(
            complete(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            None
        );
        assert_eq!(complete(b"HTTP/1.1 2x0 OK\r\n\r\n"), None);
    }
}
