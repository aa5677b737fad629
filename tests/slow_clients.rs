//! The HTTP server's limits against slow, many or malicious clients (loopback only, bounded in
//! count and time): clients trickling headers or bodies are cut at the configured limits, and
//! signed webhooks keep being accepted quickly meanwhile.
//!
//! It measures webhook latency, so it is a test binary of its own: cargo runs test binaries one
//! after another, so the other integration tests never run beside it.

#[path = "it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use kassa_ingress::HttpLimits;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{event_body, event_id, TestIngress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Hostile clients at once.
const SLOW_CLIENTS: usize = 500;
/// Each slow client sends one byte this often: always within the body idle time-out.
const TRICKLE: Duration = Duration::from_millis(250);
/// p99 of signed webhooks while the slow clients are connected must stay below this.
const WEBHOOK_P99_LIMIT: Duration = Duration::from_millis(50);

fn limits() -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(4),
        ..HttpLimits::default()
    }
}

fn address(ingress: &TestIngress) -> SocketAddr {
    ingress
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// How one hostile client ended.
#[derive(Debug)]
enum Ending {
    /// The server answered with this status after this long.
    Answered(u16, Duration),
    /// The server closed the connection without an answer after this long (and how it showed).
    Closed(Duration, String),
    /// Still open when the client gave up (the limit did not work).
    GaveUp,
}

/// What a hostile client does.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Sends the request line, then one header byte every TRICKLE, never finishing the headers.
    SlowHeaders,
    /// Sends complete headers of a 4 KiB body, then one body byte every TRICKLE.
    SlowBody,
    /// Sends complete headers and 10 bytes of the body, then nothing.
    StalledBody,
}

async fn hostile_client(
    address: SocketAddr,
    behaviour: Behaviour,
    start_after: Duration,
    give_up: Duration,
) -> Ending {
    tokio::time::sleep(start_after).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = match behaviour {
        Behaviour::SlowHeaders => "POST /webhooks/stripe HTTP/1.1\r\nHost: kassa\r\nX-Slow: ".to_owned(),
        Behaviour::SlowBody | Behaviour::StalledBody => "POST /webhooks/stripe HTTP/1.1\r\nHost: kassa\r\n\
             Content-Type: application/json\r\nStripe-Signature: t=1,v1=00\r\nContent-Length: 4096\r\n\r\n{\"id\":\"evt"
            .to_owned(),
    };
    if let Err(error) = stream.write_all(head.as_bytes()).await {
        return Ending::Closed(started.elapsed(), error.to_string());
    }
    let (mut reader, mut writer) = stream.split();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let mut tick = tokio::time::interval(TRICKLE);
    let deadline = tokio::time::sleep(give_up);
    tokio::pin!(deadline);
    let how = loop {
        tokio::select! {
            _ = &mut deadline => return Ending::GaveUp,
            read = reader.read(&mut buffer) => match read {
                Ok(0) => break "end of stream".to_owned(),
                Err(error) => break format!("read: {error}"),
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            },
            _ = tick.tick(), if !matches!(behaviour, Behaviour::StalledBody) => {
                if let Err(error) = writer.write_all(b"a").await {
                    break format!("write: {error}");
                }
            }
        }
    };
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
    {
        Some(status) => Ending::Answered(status, elapsed),
        None => Ending::Closed(elapsed, how),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_clients_do_not_hold_up_signed_webhooks() {
    let limits = limits();
    let ingress = TestIngress::builder().http_limits(limits).spawn().await;
    let address = address(&ingress);

    // Half trickle headers, a quarter trickle bodies, a quarter stall in the body.
    let give_up = limits.request_timeout + Duration::from_secs(6);
    let mut clients = Vec::new();
    for i in 0..SLOW_CLIENTS {
        let behaviour = match i % 4 {
            0 | 1 => Behaviour::SlowHeaders,
            2 => Behaviour::SlowBody,
            _ => Behaviour::StalledBody,
        };
        // 25 new connections every 10 ms: a burst of 500 SYNs at once overflows the loopback
        // listen queue of a busy 2-core machine, which resets connections before the server
        // ever sees them.
        let start_after = Duration::from_millis(10 * (i / 25) as u64);
        clients.push((
            behaviour,
            tokio::spawn(hostile_client(address, behaviour, start_after, give_up)),
        ));
    }
    // Let them all connect and start trickling.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Signed webhooks, one after another, while the slow clients hold their connections.
    let mut latencies = Vec::new();
    let sending = Instant::now();
    while sending.elapsed() < Duration::from_millis(1500) {
        let started = Instant::now();
        let (status, body) = ingress
            .post_signed(event_body(&event_id(), "customer.updated"))
            .await;
        latencies.push(started.elapsed());
        assert_eq!(status, 200, "{body}");
    }

    let mut endings = Vec::new();
    for (behaviour, client) in clients {
        endings.push((behaviour, client.await.expect("client task")));
    }

    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    println!(
        "{} signed webhooks during {SLOW_CLIENTS} slow clients: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
    );
    let accepted = ingress.drain_fulfillment().await.len();
    assert_eq!(
        accepted,
        latencies.len(),
        "every accepted webhook is on the queue"
    );
    assert!(
        p99 < WEBHOOK_P99_LIMIT,
        "p99 {p99:?} of signed webhooks during {SLOW_CLIENTS} slow clients (limit {WEBHOOK_P99_LIMIT:?})"
    );

    // Each hostile client was cut at its limit (plus scheduling slack), not left open.
    let slack = Duration::from_millis(1500);
    for (behaviour, ending) in &endings {
        match (behaviour, ending) {
            (Behaviour::SlowHeaders, Ending::Closed(after, how)) => assert!(
                *after >= limits.header_read_timeout && *after < limits.header_read_timeout + slack,
                "slow headers cut after {after:?} ({how})"
            ),
            (Behaviour::StalledBody, Ending::Answered(408, after)) => assert!(
                *after < limits.body_timeout + slack,
                "stalled body answered after {after:?}"
            ),
            (Behaviour::SlowBody, Ending::Answered(503, after)) => assert!(
                *after >= limits.request_timeout && *after < limits.request_timeout + slack,
                "slow body answered after {after:?}"
            ),
            (behaviour, ending) => panic!("{behaviour:?} client ended as {ending:?}"),
        }
    }
    ingress.cleanup().await;
}

/// Headers and 10 bytes of a body, then nothing: holds one request in flight until dropped.
async fn stalled_request(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: kassa\r\nContent-Length: 4096\r\n\r\n{\"id\":\"ev",
        )
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_are_answered_503_at_once() {
    let ingress = TestIngress::builder()
        .http_limits(HttpLimits {
            max_in_flight: 2,
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            ..HttpLimits::default()
        })
        .spawn()
        .await;
    let address = address(&ingress);
    let first = stalled_request(address).await;
    let second = stalled_request(address).await;

    // Both slots are taken (eventually: the stalled requests reach the handler first).
    let shed = support::eventually(Duration::from_secs(5), "a 503 overloaded", || async {
        let started = Instant::now();
        let (status, body) = ingress
            .post_signed(event_body(&event_id(), "customer.updated"))
            .await;
        (status == 503).then_some((body, started.elapsed()))
    })
    .await;
    assert_eq!(shed.0["error"]["code"], "overloaded", "{}", shed.0);
    assert!(
        shed.1 < Duration::from_secs(1),
        "answered after {:?}",
        shed.1
    );

    // The stalled clients leave: their slots free up and webhooks are accepted again.
    drop((first, second));
    support::eventually(
        Duration::from_secs(5),
        "a 200 after the slots freed",
        || async {
            let (status, _) = ingress
                .post_signed(event_body(&event_id(), "customer.updated"))
                .await;
            (status == 200).then_some(())
        },
    )
    .await;
    ingress.cleanup().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_idle_ones_are_closed() {
    let header_read_timeout = Duration::from_secs(1);
    let ingress = TestIngress::builder()
        .http_limits(HttpLimits {
            max_connections: 2,
            header_read_timeout,
            ..HttpLimits::default()
        })
        .spawn()
        .await;
    let address = address(&ingress);
    // Two connections that never send a byte take both slots…
    let idle = (
        TcpStream::connect(address).await.unwrap(),
        TcpStream::connect(address).await.unwrap(),
    );
    // …so a webhook on a third connection waits in the accept queue until the header time-out
    // closes them, then goes through.
    let started = Instant::now();
    let (status, body) = ingress
        .post_signed(event_body(&event_id(), "customer.updated"))
        .await;
    let waited = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        waited >= header_read_timeout - Duration::from_millis(200),
        "the third connection was served after {waited:?}, before a slot was free"
    );
    assert!(
        waited < header_read_timeout + Duration::from_secs(3),
        "{waited:?}"
    );
    drop(idle);
    ingress.cleanup().await;
}
