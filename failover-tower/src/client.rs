//! The one HTTP/1.1 exchange this crate makes with a controller's admin
//! API: a fresh connection per request (plain HTTP), a bearer token, a
//! size-limited answer. Used by [`RemoteStatus`](crate::RemoteStatus) and
//! [`AdminTrafficSink`](crate::AdminTrafficSink).

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::Error;

/// An admin API endpoint: where to connect and what to ask for.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) uri: Uri,
    authority: String,
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parses `url` (`http://host:port/path`); a setting error names `field`.
    pub(crate) fn parse(url: &str, field: &'static str) -> Result<Endpoint, Error> {
        let bad = |rule: String| Error::Config { field, rule };
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad(format!(
                "{url:?}: only http:// is supported (reach a TLS admin API through a local proxy)"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| bad(format!("{url:?} has no host")))?
            .to_string();
        let host = uri.host().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        Ok(Endpoint {
            uri,
            authority,
            host,
            port,
        })
    }

    /// The same server, another path (`/traffic` next to `/status`).
    pub(crate) fn with_path(&self, path: &str) -> Endpoint {
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path)
            .build()
            .unwrap_or_else(|_| self.uri.clone());
        Endpoint {
            uri,
            ..self.clone()
        }
    }

    /// One request; the status and at most `limit` bytes of the body, or
    /// what failed. The caller bounds the time.
    pub(crate) async fn exchange(
        &self,
        method: Method,
        token: Option<&str>,
        json: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), String> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let connection = tokio::spawn(connection);
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if json.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(json.unwrap_or_default())))
            .map_err(|e| format!("request: {e}"))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        connection.abort();
        result
    }
}

/// The start of an error answer's body, for a message.
pub(crate) fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}
