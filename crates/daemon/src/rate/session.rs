//! A tenant's long-lived requests open at once (`config.rate_limits.max_sessions`, #12): one
//! [`Session`] per admitted request of [`super::LONG_LIVED`], held until its response ends,
//! not just its handler. The pipeline (`http/admit.rs`) moves a session into the response's
//! body ([`guard_body`]: released when the body has streamed out or was dropped) and puts a
//! clone in the request's extensions; a WebSocket handler moves that clone into its upgraded
//! connection's task ([`SessionGuard`]), so a shell or a forward counts until it closes.
//!
//! Invariants: the count is the number of live sessions (released once, when the last clone
//! drops); a refused request holds none.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};

struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open session of a tenant; clones share it, the last drop releases it.
#[derive(Clone)]
pub struct Session {
    _held: Arc<Held>,
}

impl Session {
    /// Counts one more in `count` if fewer than `max` are open.
    pub fn open(count: &Arc<AtomicUsize>, max: usize) -> Option<Session> {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let s = Session {
            _held: Arc::new(Held(count.clone())),
        };
        (n < max).then_some(s)
    }
}

/// The request extension a WebSocket handler takes into its upgraded connection
/// (`Option<Extension<SessionGuard>>`: absent where no tenant was counted).
#[derive(Clone)]
pub struct SessionGuard(pub Session);

/// A response body that holds `session` until it is done or dropped.
pub fn guard_body(body: Body, session: Session) -> Body {
    Body::new(Guarded {
        inner: body,
        _session: session,
    })
}

struct Guarded {
    inner: Body,
    _session: Session,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_session_is_held_until_its_streamed_body_ends() {
        let count = Arc::new(AtomicUsize::new(0));
        let s = Session::open(&count, 2).unwrap();
        let _t = Session::open(&count, 2).unwrap();
        assert!(Session::open(&count, 2).is_none(), "at the bound");
        assert_eq!(count.load(Ordering::SeqCst), 2, "a refusal holds nothing");
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let ext = s.clone();
        let mut body = guard_body(
            Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
            s,
        );
        tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
        body.frame().await.unwrap().unwrap();
        drop(ext); // the handler's clone went; the body still streams
        assert_eq!(count.load(Ordering::SeqCst), 2);
        drop(tx);
        assert!(body.frame().await.is_none());
        drop(body);
        assert_eq!(count.load(Ordering::SeqCst), 1, "released with the body");
    }
}
