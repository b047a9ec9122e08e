//! Frames over tokio streams: a cancel-safe reader (a frame is taken only once all of it has
//! arrived, and what arrived stays in the reader's buffer, so a `select!` that drops a read
//! loses nothing) and the writer.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::{decode_head, Kind, MAX_FRAME};

/// How much one read asks the kernel for.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The next frame; `Ok(None)` when the stream ends between frames. An unknown kind is an
    /// error carrying [`crate::proto::UnknownKind`], after which the reader is still in step.
    pub(crate) async fn next(&mut self) -> io::Result<Option<(Kind, Vec<u8>)>> {
        loop {
            if let Some(f) = self.take()? {
                return Ok(Some(f));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(READ_CHUNK);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the agent closed the connection in the middle of a frame",
                    ))
                };
            }
        }
    }

    fn take(&mut self) -> io::Result<Option<(Kind, Vec<u8>)>> {
        let avail = &self.buf[self.start..];
        let Some(head) = avail.first_chunk::<5>() else {
            return Ok(None);
        };
        let (len, kind) = decode_head(head)?;
        if avail.len() < 5 + len {
            return Ok(None);
        }
        let payload = avail[5..5 + len].to_vec();
        self.start += 5 + len;
        Ok(Some((kind?, payload)))
    }
}

/// Writes `payload` as frames of `kind`, split at [`MAX_FRAME`]; an empty payload is one empty
/// frame (which ends stdin or a copy).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    payload: &[u8],
) -> io::Result<()> {
    for chunk in payload
        .chunks(MAX_FRAME)
        .chain(payload.is_empty().then_some(&[][..]))
    {
        let mut head = [0u8; 5];
        head[..4].copy_from_slice(&((chunk.len() + 1) as u32).to_be_bytes());
        head[4] = kind as u8;
        w.write_all(&head).await?;
        w.write_all(chunk).await?;
    }
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_arrive_whole_however_the_bytes_are_cut() {
        let (a, mut b) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            write_frame(&mut b, Kind::Stdout, &vec![b'x'; 300_000])
                .await
                .unwrap();
            write_frame(&mut b, Kind::Data, &[]).await.unwrap();
            b.write_all(&[0, 0, 0, 3, 99, 1, 2]).await.unwrap();
            write_frame(&mut b, Kind::Stderr, b"e").await.unwrap();
        });
        let mut r = FrameReader::new(a);
        let (k, p) = r.next().await.unwrap().unwrap();
        assert_eq!((k, p.len()), (Kind::Stdout, MAX_FRAME));
        let (k, p) = r.next().await.unwrap().unwrap();
        assert_eq!((k, p.len()), (Kind::Stdout, 300_000 - MAX_FRAME));
        assert_eq!(r.next().await.unwrap().unwrap(), (Kind::Data, vec![]));
        let e = r.next().await.unwrap_err();
        assert_eq!(
            crate::proto::UnknownKind::of(&e),
            Some(crate::proto::UnknownKind(99))
        );
        assert_eq!(
            r.next().await.unwrap().unwrap(),
            (Kind::Stderr, b"e".to_vec())
        );
        writer.await.unwrap();
        assert!(r.next().await.unwrap().is_none());
    }
}
