//! Listening TCP sockets from `/proc/net/tcp` and `/proc/net/tcp6`: the
//! fallback for guest kernels built without `sock_diag` (`CONFIG_INET_DIAG`).
//! Slower (the files list every socket, as text) and without destroy
//! notices, so stopped apps are noticed at the next scan.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const LISTEN: &str = "0A";

/// Local addresses of every listening TCP socket.
pub fn listeners() -> io::Result<Vec<SocketAddr>> {
    let mut out = parse(&std::fs::read_to_string("/proc/net/tcp")?);
    // Without IPv6 the file is missing; that is not an error.
    match std::fs::read_to_string("/proc/net/tcp6") {
        Ok(text) => out.extend(parse(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// The `LISTEN` rows of one file; unparsable rows are skipped.
fn parse(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            (state == LISTEN).then(|| address(local)).flatten()
        })
        .collect()
}

/// `0100007F:1F90` → `127.0.0.1:8080`. Addresses are printed as 32-bit words
/// in host byte order; the port in plain hex.
fn address(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn listen_rows_of_both_files_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1FBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:C34F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1FBB 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";
        assert_eq!(
            parse(tcp),
            [
                "127.0.0.1:8123".parse().unwrap(),
                "0.0.0.0:49999".parse::<SocketAddr>().unwrap()
            ]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1435 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1B58 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";
        assert_eq!(
            parse(tcp6),
            [
                "[::1]:5173".parse::<SocketAddr>().unwrap(),
                "[::ffff:127.0.0.1]:7000".parse().unwrap()
            ]
        );
        assert_eq!(parse("header\n garbage\n 0: zz:1 00:0 0A\n"), []);
    }

    /// Against the running kernel: a listener of this test is listed.
    #[test]
    fn a_real_listener_is_listed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listeners().unwrap().contains(&addr));
    }
}
