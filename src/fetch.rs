//! What inkan asks of other servers over HTTP: a time-stamp authority (a
//! `POST`), a CRL distribution point (a `GET`). One exchange at a time per
//! connection, bounded: the caller's timeout covers the whole of it (connect,
//! TLS, request, the answer's body), and the body is read up to a limit.
//! `https://` trusts the system's web roots.

use std::sync::{Arc, OnceLock};

use http_body_util::{BodyExt, Full};

/// A server's address, from an `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// The URL as given.
    pub url: String,
    host: String,
    port: u16,
    path: String,
    tls: bool,
}

impl Url {
    /// Reads `url`; anything but `http://` and `https://` is refused.
    pub fn parse(url: &str) -> Result<Url, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        if authority.contains('@') {
            return Err(format!("{url:?}: credentials in a URL are not accepted"));
        }
        let default = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            // [::1] or [::1]:8080
            let (h, rest) = v6.split_once(']').ok_or_else(|| format!("{url:?}: an unclosed IPv6 address"))?;
            let port = match rest.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url:?}: the port is not a number"))?,
                None if rest.is_empty() => default,
                None => return Err(format!("{url:?}: bytes after the IPv6 address")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| format!("{url:?}: the port is not a number"))?),
                None => (authority.to_owned(), default),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(Url { url: url.to_owned(), host, port, path, tls })
    }

    /// The `Host` header: the host, and the port when it is not the scheme's.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A request: `POST` with a body of a content type, or `GET`.
pub enum Request<'a> {
    /// `GET`.
    Get,
    /// `POST` this body of this content type, accepting that type back.
    Post {
        /// `Content-Type`.
        content_type: &'static str,
        /// `Accept`.
        accept: &'static str,
        /// The body.
        body: &'a [u8],
        /// `Authorization`, if any.
        authorization: Option<&'a str>,
    },
}

/// One exchange with `url`: the body of a `200` answer, at most `limit`
/// bytes, or why there is none. The caller bounds its time
/// (`tokio::time::timeout`): every await here is cancelled with it.
pub async fn exchange(url: &Url, request: Request<'_>, limit: usize) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let req = match request {
        Request::Get => hyper::Request::get(&url.path)
            .header(hyper::header::HOST, url.authority())
            .body(Full::new(bytes::Bytes::new())),
        Request::Post { content_type, accept, body, authorization } => {
            let mut r = hyper::Request::post(&url.path)
                .header(hyper::header::HOST, url.authority())
                .header(hyper::header::CONTENT_TYPE, content_type)
                .header(hyper::header::ACCEPT, accept);
            if let Some(auth) = authorization {
                r = r.header(hyper::header::AUTHORIZATION, auth);
            }
            r.body(Full::new(bytes::Bytes::copy_from_slice(body)))
        }
    }
    .map_err(|e| e.to_string())?;
    // The connection's task lives as long as this exchange (`_connection`
    // aborts it when the exchange ends or is given up).
    let (resp, _connection) = if url.tls {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|e| e.to_string())?;
        let tls = web_tls()?.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        send(hyper_util::rt::TokioIo::new(tls), req).await?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), req).await?
    };
    if resp.status() != hyper::StatusCode::OK {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return Err(format!("the answer is larger than {limit} bytes"));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

/// One request on a new HTTP/1.1 connection: the answer, and the guard of
/// the connection's task.
async fn send<I>(
    io: I,
    req: hyper::Request<Full<bytes::Bytes>>,
) -> Result<(hyper::Response<hyper::body::Incoming>, AbortOnDrop), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    let connection = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
    Ok((resp, connection))
}

/// Aborts a connection's task when dropped: a server that stops answering
/// holds no task once its exchange is over or given up.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// TLS with the system's web roots (`/etc/ssl/certs/ca-certificates.crt`),
/// read once.
fn web_tls() -> Result<tokio_rustls::TlsConnector, String> {
    static TLS: OnceLock<Result<tokio_rustls::TlsConnector, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        let bundle = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
        let mut roots = rustls::RootCertStore::empty();
        for der in crate::pki::read_certificates(bundle).map_err(|e| format!("the system's web roots: {e}"))? {
            let _ = roots.add(rustls::pki_types::CertificateDer::from(der));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_with_their_ports_and_paths() {
        let e = Url::parse("http://127.0.0.1:9000/testpki/tsa/tsa").expect("url");
        assert_eq!((e.host.as_str(), e.port, e.path.as_str(), e.tls), ("127.0.0.1", 9000, "/testpki/tsa/tsa", false));
        let e = Url::parse("https://tsa.example.jp").expect("url");
        assert_eq!((e.host.as_str(), e.port, e.path.as_str(), e.tls), ("tsa.example.jp", 443, "/", true));
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://user:pw@host/").is_err());
        let e = Url::parse("http://[::1]/tsa").expect("v6");
        assert_eq!((e.host.as_str(), e.port, e.authority()), ("::1", 80, "[::1]".to_owned()));
        let e = Url::parse("http://[::1]:8080/tsa").expect("v6");
        assert_eq!((e.port, e.authority()), (8080, "[::1]:8080".to_owned()));
        assert_eq!(Url::parse("http://127.0.0.1:9000/x").expect("url").authority(), "127.0.0.1:9000");
    }
}
