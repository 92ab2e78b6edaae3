//! Needs root (CAP_NET_ADMIN) for SO_MARK.

use meshgate_netns::connect_tcp;

fn mark(stream: &tokio::net::TcpStream) -> u32 {
    socket2::SockRef::from(stream).mark().unwrap()
}

#[tokio::test]
async fn marked_connections_carry_the_mark() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let marked = connect_tcp(&addr.to_string(), 0x80000, "test")
        .await
        .unwrap();
    assert_eq!(mark(&marked), 0x80000);
    // Through name resolution too.
    let by_name = connect_tcp(&format!("localhost:{}", addr.port()), 0x80000, "test")
        .await
        .unwrap();
    assert_eq!(mark(&by_name), 0x80000);
    let plain = connect_tcp(&addr.to_string(), 0, "test").await.unwrap();
    assert_eq!(mark(&plain), 0);
}

#[tokio::test]
async fn a_refused_connection_is_an_error_naming_no_mark_trouble() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = connect_tcp(&addr.to_string(), 0x80000, "test")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}
