//! A small HTTP client for the HTTP listener's tests, on hyper-util's legacy client: HTTP/1.1 or
//! h2c (HTTP/2 over cleartext with prior knowledge), answering the status, the headers and the body
//! as text. Every request is bounded, so a hung listener fails the test instead of stalling it.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{HeaderMap, Method, Request, StatusCode, Version};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::TestApp;

/// How long one request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which HTTP the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge, no TLS (h2c).
    H2c,
}

/// What the server answered.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
}

impl HttpResponse {
    /// The one value of header `name`, if sent; panics if it was sent more than once or is not
    /// text.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.get_all(name).iter();
        let value = values.next()?;
        assert!(
            values.next().is_none(),
            "{name} sent more than once: {:?}",
            self.headers
        );
        Some(value.to_str().expect("a text header value"))
    }

    /// The body parsed as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// A client for one HTTP listener.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl HttpClient {
    /// A client of the listener at `address`, speaking `protocol`.
    pub fn new(address: SocketAddr, protocol: Protocol) -> Self {
        let mut builder = Client::builder(TokioExecutor::new());
        if protocol == Protocol::H2c {
            builder.http2_only(true);
        }
        Self {
            client: builder.build_http(),
            base: format!("http://{address}"),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> HttpResponse {
        self.request(Method::GET, path, &[]).await
    }

    /// `method path` with `headers` (a name given twice is sent twice).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        self.send(method, &format!("{}{path}", self.base), headers)
            .await
    }

    /// `GET url`, an absolute `http://` URL (e.g. a `jwks_uri` read from a document).
    pub async fn get_url(&self, url: &str) -> HttpResponse {
        self.send(Method::GET, url, &[]).await
    }

    async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let exchange = async {
            let response = self.client.request(request).await.expect("HTTP request");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("HTTP body").to_bytes();
            HttpResponse {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body: String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("no answer to {url} within {REQUEST_TIMEOUT:?}"))
    }
}

impl TestApp {
    /// An HTTP/1.1 client of this app's HTTP listener.
    pub fn http(&self) -> HttpClient {
        self.http_client(Protocol::Http1)
    }

    /// An h2c client of this app's HTTP listener.
    pub fn h2c(&self) -> HttpClient {
        self.http_client(Protocol::H2c)
    }

    /// A `protocol` client of this app's HTTP listener; panics if the app has none.
    pub fn http_client(&self, protocol: Protocol) -> HttpClient {
        let address = self
            .http_address
            .expect("the app was started with an HTTP listener");
        HttpClient::new(address, protocol)
    }
}
