//! The gateway's HTTPS listening socket, bound with `TCP_NODELAY`.
//!
//! Nagle's algorithm holds back a small write until the peer acknowledges the one before, and the
//! peer delays that acknowledgement by up to 40 ms when it has nothing to send. A TLS handshake's
//! last messages, or a response written in two parts, then stall for those 40 ms: a customer's
//! first page took 45 ms instead of 5 (BENCHMARKS.md). Sockets accepted on Linux inherit the
//! listener's `TCP_NODELAY`, so it holds from the handshake's first byte; actix sets it again on
//! each connection after the handshake (`HttpServer::tcp_nodelay`), for systems that do not.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, TcpListener};

/// Connections the kernel queues for a listener before they are accepted: actix's default.
pub const BACKLOG_MAX: i32 = 1_024;

/// A listening socket on `addr` with `SO_REUSEADDR` and `TCP_NODELAY` set.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG_MAX)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;

    #[test]
    fn accepted_connections_start_without_nagle() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(SockRef::from(&listener).tcp_nodelay().unwrap());
        assert!(SockRef::from(&accepted).tcp_nodelay().unwrap());
    }

    #[test]
    fn an_address_in_use_is_an_error() {
        let first = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let taken = first.local_addr().unwrap();
        let second = bind(taken).unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
    }
}
