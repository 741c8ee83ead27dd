//! Loopback ports handed to another process, which binds them later (local mode's replicas, the
//! test kit's servers).
//!
//! Binding port 0 and closing the socket leaves a window: until the other process binds, the
//! kernel may give the same port to anyone else's `bind(0)`, and on a busy machine it does (two
//! gateways' replicas on one port; a readiness probe or a call reaching the wrong function). A
//! reserved port is left in TIME_WAIT by a connection to itself, closed from the port's side. For
//! the next 60 s the kernel gives it to no `bind(0)` and no outgoing connection, while a server
//! that binds it by number with `SO_REUSEADDR` (tokio's, Go's, Python's `http.server`, Node's,
//! nginx's: all set it) gets it at once.
//!
//! A function's own server may not set `SO_REUSEADDR` (Python's `socketserver`, a bare socket),
//! so its port is not reserved that way: it is one free now below the kernel's ephemeral range,
//! where no `bind(0)` and no outgoing connection is ever given a port.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
};

use socket2::{Domain, Socket, Type};

/// A loopback port that no other `bind(0)` on this machine will be given for a minute.
pub fn reserve() -> io::Result<u16> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    // Bound without SO_REUSEADDR, so the kernel's pick is exclusive even against another
    // reservation's TIME_WAIT; set afterwards, so that the TIME_WAIT left behind lets the
    // port's real owner bind it.
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    socket.set_reuse_address(true)?;
    socket.listen(1)?;
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr()?;
    let client = TcpStream::connect(addr)?;
    let (ours, _) = listener.accept()?;
    // The side that closes first keeps the TIME_WAIT, and its local port is the reserved one.
    drop(ours);
    drop(client);
    Ok(addr.port())
}

/// A loopback port free now, below the ephemeral range (as long as the sysctl leaves room for one).
pub fn unclaimed() -> io::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOW: u16 = 10_000;
    if ephemeral_low > LOW {
        for _ in 0..100 {
            let port = fastrand::u16(LOW..ephemeral_low);
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            if socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into()).is_ok() {
                return Ok(port);
            }
        }
    }
    reserve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_is_given_to_no_bind_zero_and_to_its_owner_at_once() {
        let reserved: std::collections::HashSet<u16> = (0..100).map(|_| reserve().unwrap()).collect();
        assert_eq!(reserved.len(), 100, "two reservations shared a port");
        // Plain bind(0) and release, as before: in this many picks the kernel gives some of a
        // hundred released ports again (measured: ~300 of 20,000); it gives no reserved one.
        for _ in 0..20_000 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            assert!(!reserved.contains(&port), "bind(0) was given reserved port {port}");
        }
        // The owner binds by number (std sets SO_REUSEADDR, as tokio and Go do) and is reached.
        let port = *reserved.iter().next().unwrap();
        let owner = TcpListener::bind(("127.0.0.1", port)).unwrap();
        TcpStream::connect(("127.0.0.1", port)).unwrap();
        owner.accept().unwrap();
    }

    #[test]
    fn an_unclaimed_port_is_free_and_outside_the_kernels_picks() {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
        for _ in 0..100 {
            let port = unclaimed().unwrap();
            assert!((10_000..low).contains(&port), "{port} is not below the ephemeral range {range}");
            // Free for a server without SO_REUSEADDR.
            Socket::new(Domain::IPV4, Type::STREAM, None)
                .unwrap()
                .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())
                .unwrap();
        }
    }
}
