//! Health probes: one HTTP/1.1 GET on a fresh connection, status code only.
//! Kept dependency-free and bounded by a timeout, so a hung worker costs a
//! probe its timeout and nothing more.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status code of `GET path` on `addr`, or `None` if the worker did
/// not answer within `timeout` (refused, reset, hung, or not HTTP).
pub async fn http_status(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        // "HTTP/1.1 200 OK": the code is bytes 9..12.
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        if !head.starts_with(b"HTTP/1.") {
            return None;
        }
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    })
    .await
    .ok()
    .flatten()
}

/// `GET path` on `addr`: the status and the body (read to the end of the
/// connection, de-chunked), or `None` on any failure or after `timeout`.
pub async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, Vec<u8>)> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.ok()?;
        let end = all.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&all[..end]).ok()?;
        let status: u16 = head.get(9..12)?.parse().ok()?;
        let body = &all[end + 4..];
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        Some((
            status,
            if chunked {
                dechunk(body)?
            } else {
                body.to_vec()
            },
        ))
    })
    .await
    .ok()
    .flatten()
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&data[..line_end]).ok()?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..n)?);
        data = data.get(n + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_status_and_gives_up_on_silence() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // First connection: a 503. Second: accept and say nothing.
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            let (_silent, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let t = Duration::from_millis(300);
        assert_eq!(http_status(addr, "/v2/health/ready", t).await, Some(503));
        assert_eq!(http_status(addr, "/v2/health/ready", t).await, None);
        // Nothing listening.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(http_status(closed, "/", t).await, None);
    }

    #[tokio::test]
    async fn reads_whole_and_chunked_bodies() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"[..],
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"[..],
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                s.write_all(answer).await.unwrap();
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(
            http_get(addr, "/metrics", t).await,
            Some((200, b"hello".to_vec()))
        );
        assert_eq!(
            http_get(addr, "/metrics", t).await,
            Some((200, b"hello".to_vec()))
        );
    }
}
