//! The client's `connect_tcp` against the real agent (forked, as in `tests.rs`): a server
//! listening on 127.0.0.1 only is reached, bytes flow both ways with half-close, a closed
//! port is `port_closed`, and a connection that does not know the agent has `tcp` is refused
//! before anything is sent.

use std::io::{Read, Write};
use std::net::TcpListener;

use super::super::*;
use super::TestAgent;

#[tokio::test]
async fn connect_tcp_relays_a_loopback_service() {
    let agent = TestAgent::start();
    let c = agent.client();
    assert!(c.ping().await.unwrap().has(proto::CAP_TCP));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got).unwrap();
        s.write_all(b"!").unwrap();
    });
    let (mut rd, mut wr) = c.connect_tcp("127.0.0.1", port).await.unwrap().split();
    let sent = vec![42u8; 600_000];
    wr.write(&sent).await.unwrap();
    wr.close().await.unwrap();
    let mut back = Vec::new();
    while let Some(b) = rd.next().await.unwrap() {
        back.extend(b);
    }
    assert_eq!(back.len(), sent.len() + 1);
    assert_eq!(back.last(), Some(&b'!'));
    server.join().unwrap();

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    match c.connect_tcp("127.0.0.1", closed).await {
        Err(AgentError::Remote { code, .. }) => assert_eq!(code, proto::PORT_CLOSED),
        Err(e) => panic!("expected port_closed, got {e}"),
        Ok(_) => panic!("expected port_closed, got a connection"),
    }
    // A connection that has not learnt what the agent speaks sends nothing.
    let bare = AgentConn::new(UnixStream::connect(agent.path()).await.unwrap());
    assert!(matches!(
        bare.connect_tcp("127.0.0.1", port).await,
        Err(AgentError::Unsupported { feature: "tcp", .. })
    ));
}
