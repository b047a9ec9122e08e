//! A background exec's log: a bounded ring of frames, each with an id (from 1, in order, never
//! reused). Output and error text count against the bound, and the number of frames is
//! bounded too (`cap / 64`, at least 1024): past either, the oldest frames go (a single chunk
//! larger than the ring keeps its tail). A reader asks from an id;
//! frames it can no longer get are reported as one gap (how many frames, and how many bytes
//! the ring has dropped since the exec began).
//!
//! Pure data: the exec's task pushes, the log readers read under the exec's lock.

use std::collections::VecDeque;

/// One entry of the log, raw: encoded for the wire only when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Started { pid: i32, at: String },
    Output { stderr: bool, data: Vec<u8> },
    Exit(End),
    Error { code: String, message: String },
}

/// What an entry counts against the ring's bound: output's bytes and an error's text (the
/// agent's, so bounded only by its frame size otherwise).
fn held_by(e: &Entry) -> u64 {
    match e {
        Entry::Output { data, .. } => data.len() as u64,
        Entry::Error { code, message } => (code.len() + message.len()) as u64,
        _ => 0,
    }
}

/// How a background exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The exit code, or 128 + the signal, or -1 when the connection to the agent broke.
    pub exit_code: i32,
    pub signal: Option<String>,
    pub timed_out: bool,
    pub ended_at: String,
}

/// Frames a reader missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The first id the reader asked for.
    pub from: u64,
    pub frames: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Ring {
    cap: u64,
    frames: VecDeque<(u64, Entry)>,
    /// Output bytes held.
    held: u64,
    next_id: u64,
    written: u64,
    dropped: u64,
}

impl Ring {
    pub fn new(cap: u64) -> Self {
        Ring {
            cap: cap.max(1),
            frames: VecDeque::new(),
            held: 0,
            next_id: 1,
            written: 0,
            dropped: 0,
        }
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }
    /// The id the next frame gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
    /// Output bytes the command wrote.
    pub fn written(&self) -> u64 {
        self.written
    }
    /// Output bytes the ring dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The most frames the ring keeps, whatever their size: tiny output chunks (or a hostile
    /// agent's empty frames) cost memory beyond their bytes.
    fn max_frames(&self) -> usize {
        (self.cap / 64).max(1024) as usize
    }

    /// Appends an entry; returns its id.
    pub fn push(&mut self, mut e: Entry) -> u64 {
        if let Entry::Output { data, .. } = &mut e {
            let n = data.len() as u64;
            self.written += n;
            if n > self.cap {
                let cut = (n - self.cap) as usize;
                data.drain(..cut);
                self.dropped += cut as u64;
            }
        }
        self.held += held_by(&e);
        let id = self.next_id;
        self.next_id += 1;
        self.frames.push_back((id, e));
        while self.held > self.cap || self.frames.len() > self.max_frames() {
            match self.frames.pop_front() {
                Some((_, e)) => {
                    self.held -= held_by(&e);
                    if let Entry::Output { data, .. } = e {
                        self.dropped += data.len() as u64;
                    }
                }
                None => break,
            }
        }
        id
    }

    /// The frames from id `from` on (0 reads as 1), and the gap before them when some of
    /// those frames were dropped.
    pub fn read(&self, from: u64) -> (Option<Gap>, Vec<(u64, Entry)>) {
        let from = from.max(1);
        let first = self.frames.front().map(|f| f.0).unwrap_or(self.next_id);
        let gap = (from < first).then(|| Gap {
            from,
            frames: first - from,
            bytes: self.dropped,
        });
        let frames = self
            .frames
            .iter()
            .filter(|(id, _)| *id >= from)
            .cloned()
            .collect();
        (gap, frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(s: &str) -> Entry {
        Entry::Output {
            stderr: false,
            data: s.as_bytes().to_vec(),
        }
    }

    #[test]
    fn keeps_everything_within_the_bound() {
        let mut r = Ring::new(10);
        r.push(Entry::Started {
            pid: 7,
            at: "t".into(),
        });
        assert_eq!(r.push(out("hello")), 2);
        r.push(out("world"));
        let (gap, f) = r.read(0);
        assert_eq!(gap, None);
        assert_eq!(f.len(), 3);
        assert_eq!((r.written(), r.dropped(), r.next_id()), (10, 0, 4));
        // A cursor in the middle, and one past the end.
        assert_eq!(r.read(3).1, vec![(3, out("world"))]);
        assert!(r.read(9).1.is_empty() && r.read(9).0.is_none());
    }

    #[test]
    fn overflow_drops_the_oldest_and_reports_a_gap() {
        let mut r = Ring::new(8);
        r.push(Entry::Started {
            pid: 7,
            at: "t".into(),
        });
        for s in ["aaaa", "bbbb", "cccc"] {
            r.push(out(s));
        }
        // started and "aaaa" went: 8 bytes held, 4 dropped.
        let (gap, f) = r.read(0);
        assert_eq!(
            gap,
            Some(Gap {
                from: 1,
                frames: 2,
                bytes: 4
            })
        );
        assert_eq!(f, vec![(3, out("bbbb")), (4, out("cccc"))]);
        assert_eq!((r.written(), r.dropped()), (12, 4));
        // A reader that already had frame 2 misses nothing.
        assert_eq!(r.read(3).0, None);
        assert_eq!(r.read(2).0.map(|g| g.frames), Some(1));
    }

    #[test]
    fn a_chunk_larger_than_the_ring_keeps_its_tail() {
        let mut r = Ring::new(4);
        r.push(out("0123456789"));
        let (gap, f) = r.read(1);
        assert_eq!(gap, None);
        assert_eq!(f, vec![(1, out("6789"))]);
        assert_eq!((r.written(), r.dropped()), (10, 6));
        // The exit is never pushed out by later output: nothing comes after it.
        let end = End {
            exit_code: 0,
            signal: None,
            timed_out: false,
            ended_at: "t".into(),
        };
        r.push(Entry::Exit(end.clone()));
        assert_eq!(r.read(2).1, vec![(2, Entry::Exit(end))]);
    }

    /// Empty or one-byte frames cannot grow the ring past its frame bound, and an agent's
    /// error text counts like output.
    #[test]
    fn tiny_frames_and_errors_are_bounded_too() {
        let mut r = Ring::new(8);
        for _ in 0..5000 {
            r.push(out(""));
        }
        assert_eq!(r.frames.len(), 1024);
        assert_eq!(r.read(0).0.map(|g| g.frames), Some(5000 - 1024));
        r.push(Entry::Error {
            code: "x".into(),
            message: "y".repeat(100),
        });
        assert!(r.held <= r.cap, "{} held", r.held);
    }
}
