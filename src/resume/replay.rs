//! Which requests may be sent again ([`Replay`]) and which responses can be continued.

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;

use crate::detect::is_event_stream;

/// What a request that may be sent again is rebuilt from.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

impl Replay {
    /// The parts of `request` when it may be sent again: `GET` or `HEAD` without a body.
    pub(crate) fn of<B: Body>(request: &Request<B>) -> Option<Self> {
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let body = request.body();
        if !body.is_end_stream() && body.size_hint().exact() != Some(0) {
            return None;
        }
        Some(Self {
            method: method.clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    /// The request again, with an empty body.
    pub(crate) fn request<B: Default>(&self) -> Request<B> {
        let mut request = Request::new(B::default());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Whether a response is an event stream that can be continued.
pub(crate) fn is_stream<B>(response: &Response<B>) -> bool {
    let status = response.status();
    status.is_success()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::RESET_CONTENT
        && is_event_stream(response.headers())
}
