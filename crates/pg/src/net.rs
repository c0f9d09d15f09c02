//! TCP keepalives on every long-lived connection of Ferry's. An NLB and a NAT gateway forget a
//! flow idle for 350 s without telling either side: an app's pooled connection idle for six
//! minutes fails its next request, and a worker's query to Heroku that returns nothing for six
//! minutes never returns. A keepalive probe every minute keeps the flow known to both, and a
//! peer gone silently is noticed within two minutes.

use std::time::Duration;

/// Idle time before the first probe: well under the 350 s the balancers allow.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Between probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered probes before the connection is dropped (60 s + 4 × 15 s = 2 minutes).
pub const KEEPALIVE_RETRIES: u32 = 4;

/// Turns keepalives on for `stream` with Ferry's timings.
pub fn keepalive(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    let probes = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_probes_after_a_minute_idle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        keepalive(&stream).expect("keepalive");
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(sock.tcp_keepalive_time().expect("idle"), KEEPALIVE_IDLE);
        assert_eq!(
            sock.tcp_keepalive_interval().expect("interval"),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(
            sock.tcp_keepalive_retries().expect("retries"),
            KEEPALIVE_RETRIES
        );
    }
}
