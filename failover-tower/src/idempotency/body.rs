//! Reading a response body up to a bound without losing the rest.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::{BoxError, IdempotencyBody};

/// A response body read up to a bound.
pub(super) enum Collected<B> {
    /// All of it.
    Whole(Bytes),
    /// The first bytes, over the bound, and the rest unread.
    Over { prefix: Bytes, rest: Pin<Box<B>> },
}

/// Reads `body` until its end or until more than `limit` bytes came.
pub(super) async fn collect_bounded<B>(body: B, limit: usize) -> Result<Collected<B>, BoxError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = Box::pin(body);
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Collected::Over {
                    prefix: buf.freeze(),
                    rest: body,
                });
            }
        }
    }
    Ok(Collected::Whole(buf.freeze()))
}

impl<B> Collected<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// The whole body, if it was within the bound.
    pub(super) fn whole(&self) -> Option<&Bytes> {
        match self {
            Collected::Whole(b) => Some(b),
            Collected::Over { .. } => None,
        }
    }

    /// The body to send to the client: all of it in any case.
    pub(super) fn into_body(self) -> IdempotencyBody {
        match self {
            Collected::Whole(b) => http_body_util::Full::new(b)
                .map_err(|e| match e {})
                .boxed_unsync(),
            Collected::Over { prefix, rest } => Prefixed {
                prefix: Some(prefix),
                rest,
            }
            .boxed_unsync(),
        }
    }
}

/// Bytes already read, then the rest of the body.
struct Prefixed<B> {
    prefix: Option<Bytes>,
    rest: Pin<Box<B>>,
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        self.rest.as_mut().poll_frame(cx).map_err(Into::into)
    }
}
