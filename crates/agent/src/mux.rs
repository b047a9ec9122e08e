//! Many agent streams over one byte stream: how a microVM's agent is reached. The host side
//! (the node's supervisor) accepts connections on the node's `agent.sock`, exactly as for a
//! jail, and carries each one as a stream over the guest's virtio-serial port; the guest side
//! hands each stream to the agent's ordinary per-connection handler through a socket pair. So
//! the daemon, the API and the agent protocol are the same for both drivers.
//!
//! Frame: `u32 stream | u8 op | u32 length | payload` (big-endian). Ops: OPEN (host → guest),
//! DATA, EOF (the sender will send no more on this stream), CLOSE (the stream is gone),
//! CREDIT (`u32`: the receiver has passed on that many more bytes of the stream).
//!
//! Flow control per stream: a sender has [`WINDOW`] bytes of credit per stream and sends DATA
//! only against credit; the receiver queues DATA for the stream's own writer thread and grants
//! credit back as that thread passes it on. So the loop reading the link never waits for one
//! stream's reader: a stream whose reader stalls (a client that never reads an exec's output)
//! stalls only itself, and the others keep flowing. A peer that sends beyond its credit (a
//! guest's root can take the agent's place) gets that stream closed; nothing is buffered
//! beyond the window.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};

pub const OPEN: u8 = 1;
pub const DATA: u8 = 2;
pub const EOF: u8 = 3;
pub const CLOSE: u8 = 4;
pub const CREDIT: u8 = 5;
/// Largest payload of one frame.
pub const MAX_FRAME: usize = 64 * 1024;
/// Bytes a sender may have in flight on one stream before the receiver grants more.
pub const WINDOW: usize = 256 * 1024;
/// What one read of a local stream sends at most (well below the window).
const CHUNK: usize = 32 * 1024;

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the link delivered for a stream, in order, for its writer thread.
enum Chunk {
    Data(Vec<u8>),
    Eof,
}

/// One stream's state, shared by the link reader, its pump and its writer.
#[derive(Default)]
struct Shared {
    state: Mutex<StreamState>,
    cv: Condvar,
}

#[derive(Default)]
struct StreamState {
    /// Received, not yet written to the local end.
    queue: VecDeque<Chunk>,
    queued: usize,
    /// What we may still send to the peer.
    credit: usize,
    closed: bool,
}

/// A local end, and which directions have ended (the entry goes when both have).
struct Entry {
    local: UnixStream,
    shared: Arc<Shared>,
    sent_eof: bool,
    got_eof: bool,
}

/// One end of the multiplexed link.
pub struct Mux<W: Write + Send + 'static> {
    writer: Mutex<W>,
    streams: Mutex<HashMap<u32, Entry>>,
}

impl<W: Write + Send + 'static> Mux<W> {
    pub fn new(writer: W) -> Arc<Self> {
        Arc::new(Mux {
            writer: Mutex::new(writer),
            streams: Mutex::new(HashMap::new()),
        })
    }

    fn send(&self, stream: u32, op: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut w = lock(&self.writer);
        write_frame(&mut *w, stream, op, payload)?;
        w.flush()
    }

    /// Registers `local` as stream `id`, pumps what it reads out as DATA frames (against
    /// credit) and writes what arrives for it from its own thread.
    pub fn attach(
        self: &Arc<Self>,
        id: u32,
        local: UnixStream,
        announce: bool,
    ) -> std::io::Result<()> {
        let reader = local.try_clone()?;
        let writer = local.try_clone()?;
        let shared = Arc::new(Shared::default());
        lock(&shared.state).credit = WINDOW;
        lock(&self.streams).insert(
            id,
            Entry {
                local,
                shared: shared.clone(),
                sent_eof: false,
                got_eof: false,
            },
        );
        if announce {
            self.send(id, OPEN, &[])?;
        }
        let me = self.clone();
        let sh = shared.clone();
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || me.pump(id, reader, &sh))?;
        let me = self.clone();
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || me.drain(id, writer, &shared))?;
        Ok(())
    }

    /// Local end → link, within the credit the peer granted.
    fn pump(&self, id: u32, mut from: UnixStream, sh: &Shared) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = self.send(id, EOF, &[]);
                    self.half_close(id, true);
                    return;
                }
                Ok(n) => {
                    {
                        let mut st = lock(&sh.state);
                        while st.credit < n && !st.closed {
                            st = sh.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                        if st.closed {
                            return;
                        }
                        st.credit -= n;
                    }
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

    /// Link → local end, from the stream's own thread; grants credit back as it writes.
    fn drain(&self, id: u32, mut to: UnixStream, sh: &Shared) {
        loop {
            let chunk = {
                let mut st = lock(&sh.state);
                loop {
                    if let Some(c) = st.queue.pop_front() {
                        break c;
                    }
                    if st.closed {
                        return;
                    }
                    st = sh.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            match chunk {
                Chunk::Data(b) => {
                    if to.write_all(&b).is_err() {
                        let _ = self.send(id, CLOSE, &[]);
                        self.forget(id);
                        return;
                    }
                    lock(&sh.state).queued -= b.len();
                    let _ = self.send(id, CREDIT, &(b.len() as u32).to_be_bytes());
                }
                Chunk::Eof => {
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    self.half_close(id, false);
                    return;
                }
            }
        }
    }

    fn forget(&self, id: u32) -> Option<UnixStream> {
        let e = lock(&self.streams).remove(&id)?;
        lock(&e.shared.state).closed = true;
        e.shared.cv.notify_all();
        Some(e.local)
    }

    /// Records that one direction of a stream ended; forgets the stream once both have.
    fn half_close(&self, id: u32, sent: bool) {
        let done = match lock(&self.streams).get_mut(&id) {
            Some(e) => {
                if sent {
                    e.sent_eof = true;
                } else {
                    e.got_eof = true;
                }
                e.sent_eof && e.got_eof
            }
            None => false,
        };
        if done {
            self.forget(id);
        }
    }

    /// Streams currently open (for tests and diagnostics).
    pub fn open_streams(&self) -> usize {
        lock(&self.streams).len()
    }

    fn shared(&self, id: u32) -> Option<Arc<Shared>> {
        lock(&self.streams).get(&id).map(|e| e.shared.clone())
    }

    /// Reads frames from the link until it ends; never waits for a stream's local end.
    /// `on_open` is called for OPEN frames (guest side) with the stream id.
    pub fn run(
        self: &Arc<Self>,
        mut link: impl Read,
        mut on_open: impl FnMut(u32),
    ) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(MAX_FRAME);
        while let Some((id, op)) = read_frame(&mut link, &mut buf)? {
            match op {
                OPEN => on_open(id),
                DATA | EOF => {
                    let Some(sh) = self.shared(id) else { continue };
                    let mut st = lock(&sh.state);
                    if op == DATA && st.queued + buf.len() > WINDOW {
                        // The peer ignored its credit: end the stream rather than buffer.
                        drop(st);
                        if let Some(s) = self.forget(id) {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                        }
                        let _ = self.send(id, CLOSE, &[]);
                        continue;
                    }
                    if op == DATA {
                        st.queued += buf.len();
                        st.queue.push_back(Chunk::Data(buf.clone()));
                    } else {
                        st.queue.push_back(Chunk::Eof);
                    }
                    drop(st);
                    sh.cv.notify_all();
                }
                CREDIT if buf.len() == 4 => {
                    if let Some(sh) = self.shared(id) {
                        let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                        let mut st = lock(&sh.state);
                        st.credit = st.credit.saturating_add(n).min(WINDOW);
                        drop(st);
                        sh.cv.notify_all();
                    }
                }
                CLOSE => {
                    if let Some(s) = self.forget(id) {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                }
                _ => {}
            }
        }
        // The link is gone: so is every stream on it.
        let ids: Vec<u32> = lock(&self.streams).keys().copied().collect();
        for id in ids {
            if let Some(s) = self.forget(id) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host mux and a guest mux over a socket pair standing in for the serial port; every
    /// stream the host opens is served on the guest side by `service(id, its end)` in a thread.
    fn linked(service: fn(u32, UnixStream)) -> (Arc<Mux<UnixStream>>, Arc<Mux<UnixStream>>) {
        let (h_link, g_link) = UnixStream::pair().unwrap();
        let host = Mux::new(h_link.try_clone().unwrap());
        let guest = Mux::new(g_link.try_clone().unwrap());
        let g2 = guest.clone();
        std::thread::spawn(move || {
            let g3 = g2.clone();
            g2.run(g_link, move |id| {
                let (a, b) = UnixStream::pair().unwrap();
                g3.attach(id, a, false).unwrap();
                std::thread::spawn(move || service(id, b));
            })
        });
        let h2 = host.clone();
        std::thread::spawn(move || h2.run(h_link, |_| {}));
        (host, guest)
    }

    #[test]
    fn streams_cross_one_link_both_ways() {
        // An echo service per stream, upper-casing what it reads.
        let (host, guest) = linked(|_, mut b| {
            let mut v = Vec::new();
            b.read_to_end(&mut v).unwrap();
            b.write_all(&v.to_ascii_uppercase()).unwrap();
        });
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
    fn a_stalled_reader_stalls_only_its_own_stream() {
        let (host, _guest) = linked(|id, mut b| {
            if id == 1 {
                // Like `yes`: writes until the stream ends.
                let chunk = vec![b'y'; 64 * 1024];
                while b.write_all(&chunk).is_ok() {}
            } else {
                let mut v = Vec::new();
                b.read_to_end(&mut v).unwrap();
                b.write_all(&v).unwrap();
            }
        });
        // Stream 1's client never reads.
        let (_never_read, theirs) = UnixStream::pair().unwrap();
        host.attach(1, theirs, true).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (tx, rx) = std::sync::mpsc::channel();
        for id in 2..=5u32 {
            let (host, tx) = (host.clone(), tx.clone());
            std::thread::spawn(move || {
                let (mut mine, theirs) = UnixStream::pair().unwrap();
                host.attach(id, theirs, true).unwrap();
                let msg = format!("stream {id} ").repeat(20_000);
                mine.write_all(msg.as_bytes()).unwrap();
                mine.shutdown(std::net::Shutdown::Write).unwrap();
                let mut back = String::new();
                mine.read_to_string(&mut back).unwrap();
                tx.send(back == msg).unwrap();
            });
        }
        for _ in 2..=5 {
            let ok = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("a stream stalled behind one whose reader stalls");
            assert!(ok);
        }
    }

    #[test]
    fn data_beyond_the_window_closes_the_stream() {
        let (h_link, mut peer) = UnixStream::pair().unwrap();
        let host = Mux::new(h_link.try_clone().unwrap());
        let h2 = host.clone();
        std::thread::spawn(move || h2.run(h_link, |_| {}));
        let (_never_read, theirs) = UnixStream::pair().unwrap();
        host.attach(7, theirs, true).unwrap();
        // A hostile peer ignores its credit.
        let mut w = peer.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![0u8; MAX_FRAME];
            for _ in 0..(4 * WINDOW / MAX_FRAME) {
                if write_frame(&mut w, 7, DATA, &chunk).is_err() {
                    return;
                }
            }
        });
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = Vec::new();
        loop {
            let (id, op) = read_frame(&mut peer, &mut buf).unwrap().unwrap();
            if (id, op) == (7, CLOSE) {
                break;
            }
        }
        assert_eq!(host.open_streams(), 0);
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
