//! Listening TCP sockets, from the kernel's `sock_diag` netlink interface.
//!
//! [`Diag::listeners`] dumps the sockets in state `LISTEN` (IPv4 and IPv6):
//! the kernel walks only its listening hash for that, so a scan costs two
//! netlink round trips however many connections are open. [`Destroyed`]
//! subscribes to the `SKNLGRP_INET{,6}_TCP_DESTROY` multicast groups, which
//! report every TCP socket the kernel frees; a classic BPF filter keeps only
//! sockets without a peer (`dport == 0`: listeners), so established traffic
//! does not wake the forwarder.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use tokio::io::unix::AsyncFd;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` (without attributes).
const MSG_LEN: usize = 72;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u32 = 10;
/// `SKNLGRP_INET_TCP_DESTROY` and `SKNLGRP_INET6_TCP_DESTROY`.
const GROUP_TCP4_DESTROY: u32 = 1;
const GROUP_TCP6_DESTROY: u32 = 3;
/// Offset of `idiag_dport` in a multicast message (header + 6).
const DPORT_OFFSET: u32 = (NLMSG_HDRLEN + 6) as u32;
const BUF_LEN: usize = 64 * 1024;
/// A dump is answered at once; this only keeps a broken kernel from hanging us.
const DUMP_TIMEOUT: Duration = Duration::from_secs(2);

fn netlink_socket(flags: SockFlag) -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        flags | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?)
}

/// A `sock_diag` socket for dumps.
#[derive(Debug)]
pub struct Diag {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Diag {
    pub fn open() -> io::Result<Diag> {
        let fd = netlink_socket(SockFlag::empty())?;
        let timeout = TimeVal::new(DUMP_TIMEOUT.as_secs() as _, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
        Ok(Diag {
            fd,
            seq: 0,
            buf: vec![0; BUF_LEN],
        })
    }

    /// Local addresses of every listening TCP socket, IPv4 and IPv6.
    pub fn listeners(&mut self) -> io::Result<Vec<SocketAddr>> {
        let mut out = Vec::new();
        self.dump(libc::AF_INET as u8, &mut out)?;
        self.dump(libc::AF_INET6 as u8, &mut out)?;
        Ok(out)
    }

    fn dump(&mut self, family: u8, out: &mut Vec<SocketAddr>) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(family, self.seq);
        sendto(
            self.fd.as_raw_fd(),
            &req,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())?;
            for m in messages(&self.buf[..n]) {
                match m {
                    Message::Done => return Ok(()),
                    Message::Error(0) => {}
                    Message::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
                    Message::Socket(s) if s.state == TCP_LISTEN as u8 => out.push(s.local),
                    Message::Socket(_) | Message::Other => {}
                }
            }
        }
    }
}

/// A dump request for the listening TCP sockets of `family`.
fn request(family: u8, seq: u32) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
    let mut b = [0u8; NLMSG_HDRLEN + REQ_LEN];
    b[0..4].copy_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel. Then inet_diag_req_v2: family, protocol,
    // ext, pad, states; the socket id stays zero (match all).
    b[16] = family;
    b[17] = IPPROTO_TCP;
    b[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    b
}

/// One socket as `inet_diag_msg` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagSocket {
    pub state: u8,
    pub local: SocketAddr,
    pub dport: u16,
}

#[derive(Debug, PartialEq, Eq)]
enum Message {
    Done,
    /// `-errno` of an `NLMSG_ERROR`, made positive (0 is an acknowledgement).
    Error(i32),
    Socket(DiagSocket),
    Other,
}

/// Splits a netlink datagram into its messages (a truncated tail is dropped).
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message> + '_ {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(buf[4..6].try_into().ok()?);
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(match kind {
            NLMSG_DONE => Message::Done,
            NLMSG_ERROR => {
                let code = payload
                    .get(0..4)
                    .map_or(-libc::EIO, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                Message::Error(-code)
            }
            SOCK_DIAG_BY_FAMILY => parse_socket(payload).map_or(Message::Other, Message::Socket),
            _ => Message::Other,
        })
    })
}

/// `struct inet_diag_msg`: family, state, timer, retrans, then the socket id
/// (sport, dport big-endian; src, dst as 16 bytes each).
fn parse_socket(p: &[u8]) -> Option<DiagSocket> {
    if p.len() < MSG_LEN {
        return None;
    }
    let sport = u16::from_be_bytes([p[4], p[5]]);
    let dport = u16::from_be_bytes([p[6], p[7]]);
    let ip = match i32::from(p[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(p[8], p[9], p[10], p[11])),
        libc::AF_INET6 => {
            let octets: [u8; 16] = p[8..24].try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(DiagSocket {
        state: p[1],
        local: SocketAddr::new(ip, sport),
        dport,
    })
}

/// Notices of freed listening sockets (see the module docs).
#[derive(Debug)]
pub struct Destroyed {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl Destroyed {
    pub fn subscribe() -> io::Result<Destroyed> {
        let fd = netlink_socket(SockFlag::SOCK_NONBLOCK)?;
        attach_listener_filter(&fd)?;
        let groups = (1 << (GROUP_TCP4_DESTROY - 1)) | (1 << (GROUP_TCP6_DESTROY - 1));
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        let fd = crate::sys::register(fd).map_err(io::Error::from)?;
        Ok(Destroyed {
            fd,
            buf: vec![0; BUF_LEN],
        })
    }

    /// Waits until at least one socket without a peer (a listener) was freed;
    /// returns the local addresses of those read. An overrun returns an empty
    /// list: the caller rescans anyway.
    pub async fn next(&mut self) -> io::Result<Vec<SocketAddr>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut gone = Vec::new();
            let mut overrun = false;
            loop {
                match recv(
                    guard.get_inner().as_raw_fd(),
                    &mut self.buf,
                    MsgFlags::empty(),
                ) {
                    Ok(n) => gone.extend(messages(&self.buf[..n]).filter_map(|m| match m {
                        Message::Socket(s) => Some(s.local),
                        _ => None,
                    })),
                    Err(nix::Error::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(nix::Error::ENOBUFS) => overrun = true,
                    Err(e) => return Err(e.into()),
                }
            }
            if overrun || !gone.is_empty() {
                return Ok(gone);
            }
        }
    }
}

/// Drops every multicast message whose `idiag_dport` is not 0, in the kernel.
fn attach_listener_filter(fd: &OwnedFd) -> io::Result<()> {
    // BPF_LD | BPF_H | BPF_ABS, BPF_JMP | BPF_JEQ | BPF_K, BPF_RET | BPF_K.
    const BPF_LD_H_ABS: u16 = 0x28;
    const BPF_JMP_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    let program = [
        libc::sock_filter {
            code: BPF_LD_H_ABS,
            jt: 0,
            jf: 0,
            k: DPORT_OFFSET,
        },
        libc::sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: u32::MAX,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    crate::sys::attach_filter(fd.as_fd(), &program)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDRLEN + payload.len()) as u32)
            .to_ne_bytes()
            .to_vec();
        m.extend(kind.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(payload);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        m
    }

    fn diag_msg(family: u8, state: u8, src: &[u8], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![family, state, 0, 0];
        p.extend(sport.to_be_bytes());
        p.extend(dport.to_be_bytes());
        let mut addr = [0u8; 16];
        addr[..src.len()].copy_from_slice(src);
        p.extend(addr);
        p.extend([0u8; MSG_LEN - 24]);
        p
    }

    #[test]
    fn a_dump_reply_parses_into_sockets_then_done() {
        let mut buf = message(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(libc::AF_INET as u8, 10, &[127, 0, 0, 1], 8123, 0),
        );
        let v6 = "::1".parse::<Ipv6Addr>().unwrap().octets();
        buf.extend(message(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(libc::AF_INET6 as u8, 10, &v6, 5173, 0),
        ));
        buf.extend(message(NLMSG_DONE, &[0; 4]));
        let got: Vec<Message> = messages(&buf).collect();
        assert_eq!(
            got,
            [
                Message::Socket(DiagSocket {
                    state: 10,
                    local: "127.0.0.1:8123".parse().unwrap(),
                    dport: 0
                }),
                Message::Socket(DiagSocket {
                    state: 10,
                    local: "[::1]:5173".parse().unwrap(),
                    dport: 0
                }),
                Message::Done,
            ]
        );
    }

    #[test]
    fn errors_and_truncated_messages() {
        let buf = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            messages(&buf).collect::<Vec<_>>(),
            [Message::Error(libc::EPERM)]
        );
        let mut short = message(SOCK_DIAG_BY_FAMILY, &[2, 10, 0, 0]);
        assert_eq!(messages(&short).collect::<Vec<_>>(), [Message::Other]);
        short.truncate(10);
        assert_eq!(messages(&short).count(), 0);
    }

    #[test]
    fn the_request_asks_for_listening_tcp_sockets() {
        let r = request(libc::AF_INET6 as u8, 7);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!((r[16], r[17]), (libc::AF_INET6 as u8, 6));
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 10);
    }

    /// Against the running kernel (root: multicast groups): a closed listener
    /// is reported, closed connections are filtered out in the kernel.
    #[tokio::test]
    async fn freed_listeners_are_reported_and_connections_are_not() {
        use std::net::{TcpListener, TcpStream};
        let mut events = Destroyed::subscribe().expect("subscribing (needs root)");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let client_addr = client.local_addr().unwrap();
        drop(accepted);
        drop(client);
        let sentinel = TcpListener::bind("127.0.0.1:0").unwrap();
        let sentinel_addr = sentinel.local_addr().unwrap();
        drop(sentinel);
        let mut seen = Vec::new();
        while !seen.contains(&sentinel_addr) {
            let got = tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("the closed listener is reported")
                .unwrap();
            seen.extend(got);
        }
        assert!(
            !seen.contains(&client_addr),
            "a connection got through: {seen:?}"
        );
        assert!(
            !seen.contains(&listener.local_addr().unwrap()),
            "the accepted socket (same local address as its open listener) got through"
        );
    }

    /// Against the running kernel: a listener of this test shows up.
    #[test]
    fn a_real_listener_is_dumped() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut d = Diag::open().unwrap();
        let found = d.listeners().unwrap();
        assert!(found.contains(&addr), "{addr} not in {found:?}");
        drop(l);
        assert!(!d.listeners().unwrap().contains(&addr));
    }
}
