//! Unit tests of `forward` (kept apart to keep its module small).
use super::*;

fn v2_tcp4(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[10, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

#[test]
fn parses_v2_tcp4_and_leaves_the_payload() {
    let mut b = v2_tcp4([192, 0, 2, 99], 5555);
    b.extend_from_slice(b"GET /");
    assert_eq!(
        parse_v2(&b),
        Header::Proxy {
            len: 28,
            client: Some("192.0.2.99:5555".parse().unwrap())
        }
    );
    for cut in [1, 12, 15, 20] {
        assert_eq!(parse_v2(&b[..cut]), Header::Incomplete, "cut {cut}");
    }
}

#[test]
fn other_bytes_are_data_and_bad_headers_are_named() {
    assert_eq!(parse_v2(b"GET / HTTP/1.1\r\n"), Header::NotProxy);
    assert_eq!(parse_v2(b"PROXY TCP4 1.2.3.4"), Header::NotProxy);
    assert_eq!(parse_v2(b"\r\n\r\nX"), Header::NotProxy);
    let mut b = v2_tcp4([1, 2, 3, 4], 1);
    b[12] = 0x11;
    assert!(matches!(parse_v2(&b), Header::Invalid(_)));
    let mut local = SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    assert_eq!(
        parse_v2(&local),
        Header::Proxy {
            len: 16,
            client: None
        }
    );
    let mut short = SIGNATURE.to_vec();
    short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
    assert!(matches!(parse_v2(&short), Header::Invalid(_)));
}

/// A forward relays at most `max_connections` at once (more are closed at once, a freed
/// slot is usable again, another forward of the node has its own); a trusted peer's partial PROXY header is data after the
/// timeout. Real sockets on loopback; a local echo server stands in for the node.
#[tokio::test]
async fn relays_are_capped_per_forward_and_the_proxy_wait_is_bounded() {
    let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_port = node.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = node.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let fw = Forwards::new(2, Duration::from_millis(300));
    let req = |proxy: bool| ForwardRequest {
        host_port: 0,
        node_port,
        proxy_protocol: proxy,
        trusted_proxies: if proxy {
            vec!["127.0.0.1/32".into()]
        } else {
            vec![]
        },
        ..Default::default()
    };
    let ip = Ipv4Addr::LOCALHOST;
    let plain = fw
        .open(Forwards::validate("n", ip, &req(false)).unwrap())
        .await
        .unwrap();
    let proxied = fw
        .open(Forwards::validate("n", ip, &req(true)).unwrap())
        .await
        .unwrap();
    async fn echoes(c: &mut TcpStream, msg: &[u8]) -> bool {
        if c.write_all(msg).await.is_err() {
            return false;
        }
        let mut got = vec![0u8; msg.len()];
        matches!(
            tokio::time::timeout(Duration::from_secs(3), c.read_exact(&mut got)).await,
            Ok(Ok(_))
        ) && got == msg
    }
    let mut a = TcpStream::connect(&plain.listen).await.unwrap();
    assert!(echoes(&mut a, b"one").await);
    let mut a2 = TcpStream::connect(&plain.listen).await.unwrap();
    assert!(echoes(&mut a2, b"two").await);
    // The plain forward relays two already: a third is closed without reaching the node.
    let mut c = TcpStream::connect(&plain.listen).await.unwrap();
    assert!(
        !echoes(&mut c, b"three").await,
        "a third connection was relayed"
    );
    // The other forward of the same node has slots of its own; a trusted peer's header
    // wait ends after 300ms and the partial signature is relayed as data.
    let mut b = TcpStream::connect(&proxied.listen).await.unwrap();
    let t = std::time::Instant::now();
    assert!(echoes(&mut b, b"\r\n\r\n").await);
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // A freed slot is taken again.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = TcpStream::connect(&plain.listen).await.unwrap();
    assert!(echoes(&mut d, b"four").await);
    fw.close_node("n");
}

#[test]
fn requests_are_validated() {
    let ip = Ipv4Addr::new(10, 0, 0, 2);
    let ok = ForwardRequest {
        host_port: 8080,
        node_port: 80,
        ..Default::default()
    };
    let s = Forwards::validate("n", ip, &ok).unwrap();
    assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
    for (bad, want) in [
        (
            ForwardRequest {
                node_port: 0,
                ..ok.clone()
            },
            "node_port",
        ),
        (
            ForwardRequest {
                bind: Some("nope".into()),
                ..ok.clone()
            },
            "bind",
        ),
        (
            ForwardRequest {
                proxy_protocol: true,
                ..ok.clone()
            },
            "trusted_proxies",
        ),
        (
            ForwardRequest {
                trusted_proxies: vec!["10.0.0.0/8".into()],
                ..ok.clone()
            },
            "proxy_protocol",
        ),
        (
            ForwardRequest {
                proxy_protocol: true,
                trusted_proxies: vec!["x".into()],
                ..ok.clone()
            },
            "not a CIDR",
        ),
    ] {
        let e = format!("{:?}", Forwards::validate("n", ip, &bad).unwrap_err());
        assert!(e.contains(want), "{e} should name {want}");
    }
}
