//! Many agent streams over one byte stream: how a microVM's agent is reached. The host side
//! (the node's supervisor) accepts connections on the node's `agent.sock`, exactly as for a
//! jail, and carries each one as a stream over the guest's virtio-serial port; the guest side
//! hands each stream to the agent's ordinary per-connection handler through a socket pair. So
//! the daemon, the API and the agent protocol are the same for both drivers.
//!
//! Frame: `u32 stream | u8 op | u32 length | payload` (big-endian). Ops: OPEN (host → guest),
//! DATA, EOF (the sender will send no more on this stream), CLOSE (the stream is gone).
//!
//! Streams share the port without flow control: a stream whose reader stalls stalls the
//! others. Agent operations always read what they are sent, so this only delays them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

pub const OPEN: u8 = 1;
pub const DATA: u8 = 2;
pub const EOF: u8 = 3;
pub const CLOSE: u8 = 4;
/// Largest payload of one frame.
pub const MAX_FRAME: usize = 64 * 1024;

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, stream: u32, op: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut head = [0u8; 9];
    head[..4].copy_from_slice(&stream.to_be_bytes());
    head[4] = op;
    head[5..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    w.write_all(&head)?;
    w.write_all(payload)
}

/// Reads one frame; `None` at a clean end of the byte stream.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<Option<(u32, u8)>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("mux frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(Some((stream, head[4])))
}

/// One end of the multiplexed link.
pub struct Mux<W: Write + Send + 'static> {
    writer: Mutex<W>,
    streams: Mutex<HashMap<u32, Entry>>,
}

/// A local end, and which directions have ended (the entry goes when both have).
struct Entry {
    local: UnixStream,
    sent_eof: bool,
    got_eof: bool,
}

impl<W: Write + Send + 'static> Mux<W> {
    pub fn new(writer: W) -> Arc<Self> {
        Arc::new(Mux {
            writer: Mutex::new(writer),
            streams: Mutex::new(HashMap::new()),
        })
    }

    fn send(&self, stream: u32, op: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *w, stream, op, payload)?;
        w.flush()
    }

    /// Registers `local` as stream `id` and pumps what it reads out as DATA frames.
    pub fn attach(
        self: &Arc<Self>,
        id: u32,
        local: UnixStream,
        announce: bool,
    ) -> std::io::Result<()> {
        let reader = local.try_clone()?;
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Entry {
                    local,
                    sent_eof: false,
                    got_eof: false,
                },
            );
        if announce {
            self.send(id, OPEN, &[])?;
        }
        let me = self.clone();
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || me.pump(id, reader))?;
        Ok(())
    }

    fn pump(&self, id: u32, mut from: UnixStream) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = self.send(id, EOF, &[]);
                    self.half_close(id, true);
                    return;
                }
                Ok(n) => {
                    if self.send(id, DATA, &buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = self.send(id, CLOSE, &[]);
                    self.forget(id);
                    return;
                }
            }
        }
    }

    fn forget(&self, id: u32) -> Option<UnixStream> {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .map(|e| e.local)
    }

    /// Records that one direction of a stream ended; forgets the stream once both have.
    fn half_close(&self, id: u32, sent: bool) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let done = match streams.get_mut(&id) {
            Some(e) => {
                if sent {
                    e.sent_eof = true;
                } else {
                    e.got_eof = true;
                    let _ = e.local.shutdown(std::net::Shutdown::Write);
                }
                e.sent_eof && e.got_eof
            }
            None => false,
        };
        if done {
            streams.remove(&id);
        }
    }

    /// Streams currently open (for tests and diagnostics).
    pub fn open_streams(&self) -> usize {
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Reads frames from the link until it ends. `on_open` is called for OPEN frames (guest
    /// side) with the stream id.
    pub fn run(
        self: &Arc<Self>,
        mut link: impl Read,
        mut on_open: impl FnMut(u32),
    ) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(MAX_FRAME);
        while let Some((id, op)) = read_frame(&mut link, &mut buf)? {
            match op {
                OPEN => on_open(id),
                DATA => {
                    let target = self
                        .streams
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&id)
                        .and_then(|e| e.local.try_clone().ok());
                    if let Some(mut s) = target {
                        if s.write_all(&buf).is_err() {
                            let _ = self.send(id, CLOSE, &[]);
                            self.forget(id);
                        }
                    }
                }
                EOF => self.half_close(id, false),
                CLOSE => {
                    if let Some(s) = self.forget(id) {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                }
                _ => {}
            }
        }
        // The link is gone: so is every stream on it.
        for (_, e) in self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            let _ = e.local.shutdown(std::net::Shutdown::Both);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_cross_one_link_both_ways() {
        // host <-> guest over a socket pair standing in for the serial port.
        let (h_link, g_link) = UnixStream::pair().unwrap();
        let host = Mux::new(h_link.try_clone().unwrap());
        let guest = Mux::new(g_link.try_clone().unwrap());
        let g2 = guest.clone();
        std::thread::spawn(move || {
            let g3 = g2.clone();
            g2.run(g_link, move |id| {
                // An echo service per stream, upper-casing what it reads.
                let (a, mut b) = UnixStream::pair().unwrap();
                g3.attach(id, a, false).unwrap();
                std::thread::spawn(move || {
                    let mut v = Vec::new();
                    b.read_to_end(&mut v).unwrap();
                    b.write_all(&v.to_ascii_uppercase()).unwrap();
                });
            })
        });
        let h2 = host.clone();
        std::thread::spawn(move || h2.run(h_link, |_| {}));
        let handles: Vec<_> = (1..=8u32)
            .map(|id| {
                let host = host.clone();
                std::thread::spawn(move || {
                    let (mut mine, theirs) = UnixStream::pair().unwrap();
                    host.attach(id, theirs, true).unwrap();
                    let msg = format!("stream {id} ").repeat(5000);
                    mine.write_all(msg.as_bytes()).unwrap();
                    mine.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut back = String::new();
                    mine.read_to_string(&mut back).unwrap();
                    assert_eq!(back, msg.to_uppercase());
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Finished streams are forgotten on both sides.
        for _ in 0..100 {
            if host.open_streams() == 0 && guest.open_streams() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!((host.open_streams(), guest.open_streams()), (0, 0));
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut v = Vec::new();
        write_frame(&mut v, 1, DATA, &[]).unwrap();
        v[5..9].copy_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        let e = read_frame(&mut v.as_slice(), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("exceeds"));
    }
}
