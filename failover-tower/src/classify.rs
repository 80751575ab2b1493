//! Which requests mutate, and how important a request is.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri};

/// The parts of a request a classifier may look at.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The request's URI (path and query).
    pub uri: &'a Uri,
    /// The request's headers.
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// The head of `req`.
    pub fn of<B>(req: &'a http::Request<B>) -> Self {
        RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
        }
    }
}

/// Whether a method mutates by default: everything but `GET`, `HEAD`,
/// `OPTIONS` and `TRACE` (the methods RFC 9110 defines as safe).
pub fn is_mutating(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Decides which requests mutate: by method ([`is_mutating`]) unless a
/// closure of the service's own says otherwise.
#[derive(Clone, Default)]
pub struct MutationClassifier {
    custom: Option<Mutates>,
}

type Mutates = Arc<dyn Fn(RequestHead<'_>) -> bool + Send + Sync>;

impl MutationClassifier {
    /// By method ([`is_mutating`]).
    pub fn by_method() -> Self {
        MutationClassifier { custom: None }
    }

    /// By `f`: `true` for a request that mutates (for example a `POST
    /// /search` that only reads can say `false`).
    pub fn with(f: impl Fn(RequestHead<'_>) -> bool + Send + Sync + 'static) -> Self {
        MutationClassifier {
            custom: Some(Arc::new(f)),
        }
    }

    /// Whether `head` mutates.
    pub fn mutates(&self, head: RequestHead<'_>) -> bool {
        match &self.custom {
            Some(f) => f(head),
            None => is_mutating(head.method),
        }
    }
}

impl fmt::Debug for MutationClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.custom {
            Some(_) => "MutationClassifier(custom)",
            None => "MutationClassifier(by method)",
        })
    }
}

/// How important a request is, lowest first; the [`ShedLayer`](crate::ShedLayer)
/// sheds those below its threshold while the serving regions are over
/// capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Work that can wait (prefetch, batch, analytics).
    Low,
    /// Ordinary traffic.
    Normal,
    /// Important traffic (a user waiting on a page).
    High,
    /// Paths that must always pass (checkout, login, health).
    Critical,
}

impl Priority {
    /// Its name, as in the header (`low`, `normal`, `high`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header value that names no [`Priority`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {0:?}: expected low, normal, high or critical")]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    /// `low`, `normal`, `high` or `critical`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Critical,
        ]
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}
