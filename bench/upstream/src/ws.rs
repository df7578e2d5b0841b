//! The WebSocket side (RFC 6455, server role): echo and a paced stream.

use std::io;
use std::time::Duration;

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const OP_BINARY: u8 = 0x2;
/// Largest frame accepted from a client.
const MAX_FRAME: usize = 16 << 20;

/// What an upgraded connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every data frame goes back as it came (unmasked).
    Echo,
    /// A `size`-byte binary message every `every`, until the client closes.
    Stream { size: usize, every: Duration },
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// One frame from the client, unmasked.
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// Parses one frame at the start of `buf`; `Ok(None)` when incomplete.
fn parse(buf: &[u8]) -> io::Result<Option<(Frame, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0F);
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let mut payload = buf[at..at + len].to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        at + len,
    )))
}

/// Appends an unmasked frame to `out`.
fn frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8]) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Serves an upgraded connection; `buf` holds bytes read past the request.
pub async fn serve(mut tcp: TcpStream, mut buf: Vec<u8>, mode: Mode) -> io::Result<()> {
    let mut tick = match mode {
        Mode::Stream { every, .. } => Some(tokio::time::interval(every)),
        Mode::Echo => None,
    };
    let message = match mode {
        Mode::Stream { size, .. } => {
            let mut m = Vec::with_capacity(size + 10);
            frame(&mut m, true, OP_BINARY, &vec![b'w'; size]);
            m
        }
        Mode::Echo => Vec::new(),
    };
    let mut out = Vec::with_capacity(4096);
    loop {
        // Answer every complete frame buffered so far in one write.
        let mut used = 0;
        while let Some((f, n)) = parse(&buf[used..])? {
            used += n;
            match f.opcode {
                OP_CLOSE => {
                    frame(&mut out, true, OP_CLOSE, &f.payload);
                    tcp.write_all(&out).await?;
                    let _ = tcp.shutdown().await;
                    return Ok(());
                }
                OP_PING => frame(&mut out, true, OP_PONG, &f.payload),
                OP_PONG => {}
                op if mode == Mode::Echo => frame(&mut out, f.fin, op, &f.payload),
                _ => {}
            }
        }
        buf.drain(..used);
        if !out.is_empty() {
            tcp.write_all(&out).await?;
            out.clear();
        }
        let read = match tick.as_mut() {
            Some(t) => {
                tokio::select! {
                    r = tcp.read_buf(&mut buf) => r?,
                    _ = t.tick() => {
                        tcp.write_all(&message).await?;
                        continue;
                    }
                }
            }
            None => tcp.read_buf(&mut buf).await?,
        };
        if read == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_frames_parse_and_unmasked_frames_round_trip() {
        // "Hello", masked, from RFC 6455 §5.7.
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (f, n) = parse(&masked).unwrap().unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload.as_slice(), n),
            (true, 1, &b"Hello"[..], 11)
        );
        assert!(parse(&masked[..6]).unwrap().is_none());
        let mut out = Vec::new();
        frame(&mut out, true, OP_BINARY, &[7u8; 300]);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        let (f, n) = parse(&out).unwrap().unwrap();
        assert_eq!((f.payload.len(), n), (300, 304));
    }
}
