//! Test traffic on the loopback interface: UDP datagrams between chosen 127.0.0.0/8 (or ::1)
//! addresses and ports, each carrying a tag to recognise it in a capture.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};

/// Sends one UDP datagram from `from` to `to` whose payload is `tag` padded with '.' to `size`.
pub fn udp(from: &str, to: &str, tag: &str, size: usize) {
    let from: SocketAddr = from.parse().expect("from");
    let to: SocketAddr = to.parse().expect("to");
    let s = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let mut payload = tag.as_bytes().to_vec();
    payload.resize(size.max(tag.len()), b'.');
    s.send_to(&payload, to)
        .unwrap_or_else(|e| panic!("send {from} -> {to}: {e}"));
}

/// A TCP connection to a listener at `to` that sends `tag` and closes (the kernel picks the
/// source address).
pub fn tcp(to: &str, tag: &str) {
    use std::io::{Read, Write};
    let to: SocketAddr = to.parse().expect("to");
    let listener = TcpListener::bind(to).unwrap_or_else(|e| panic!("listen {to}: {e}"));
    let mut c = TcpStream::connect(to).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    c.write_all(tag.as_bytes()).expect("write");
    let mut buf = vec![0; tag.len()];
    server.read_exact(&mut buf).expect("read");
}
