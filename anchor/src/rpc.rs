//! The connection to the L2 node: HTTP transport with ring-only TLS, the alloy provider with a
//! signing wallet, and the translation of alloy errors into [`AnchorError`]s that are safe to log.
//!
//! It never decides policy (retries, breaker); it only says whether a failure is worth retrying.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::Http;
use alloy::transports::{RpcError, TransportErrorKind};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use crate::error::AnchorError;

/// How often a pending transaction's receipt is polled on a local node (anvil mines at once).
const LOCAL_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often a pending transaction's receipt is polled on a remote L2 (blocks every ~2 s).
const REMOTE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The outcome of one failed attempt: worth another try, or final.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// A transport-level failure that may pass (connection refused or reset, timeout, 5xx, 429).
    Transient(String),
    /// Retrying cannot help.
    Fatal(AnchorError),
}

impl Attempt {
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    pub(crate) fn into_error(self) -> AnchorError {
        match self {
            Self::Transient(message) => AnchorError::Rpc(message),
            Self::Fatal(error) => error,
        }
    }
}

/// Scrubs secrets out of text that came from alloy, reqwest or the node before it is stored in an
/// error or a log line: the RPC URL becomes its origin (`scheme://host:port`), the private key
/// `[REDACTED]`.
#[derive(Clone)]
pub(crate) struct Redactor {
    urls: Vec<String>,
    origin: String,
    private_key: Option<SecretString>,
}

impl Redactor {
    pub(crate) fn new(rpc_url: &str, private_key: Option<&SecretString>) -> Self {
        let mut urls = vec![rpc_url.to_owned()];
        let origin = match Url::parse(rpc_url) {
            Ok(url) => {
                urls.push(url.as_str().to_owned());
                redacted_url(&url)
            }
            Err(_) => "<invalid url>".to_owned(),
        };
        // Longest first, so that a URL is never half-replaced by a shorter variant of itself.
        urls.sort_by_key(|u| std::cmp::Reverse(u.len()));
        urls.dedup();
        urls.retain(|u| !u.is_empty());
        Self { urls, origin, private_key: private_key.cloned() }
    }

    /// The RPC URL as it may be shown: scheme, host and port only.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    pub(crate) fn clean(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for url in &self.urls {
            text = text.replace(url.as_str(), &self.origin);
        }
        if let Some(key) = &self.private_key {
            let key = key.expose_secret().trim();
            let bare = key.strip_prefix("0x").unwrap_or(key);
            if bare.len() >= 16 {
                text = text.replace(bare, "[REDACTED]");
            }
        }
        text
    }

    /// An error and its chain of causes, one line, scrubbed.
    pub(crate) fn describe(&self, error: &(dyn StdError + 'static)) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        self.clean(&text)
    }

    /// Classifies a failed JSON-RPC request.
    pub(crate) fn rpc_failure(&self, context: &str, error: &RpcError<TransportErrorKind>) -> Attempt {
        let message = format!("{context}: {}", self.describe(error));
        if is_transient(error) { Attempt::Transient(message) } else { Attempt::Fatal(AnchorError::Rpc(message)) }
    }

    /// Classifies a failed contract call or transaction send, recognising registry reverts.
    pub(crate) fn contract_failure(&self, context: &str, error: &alloy::contract::Error) -> Attempt {
        use alloy::contract::Error as E;
        if let Some(reason) = revert_reason(error) {
            return Attempt::Fatal(if reason == "Already anchored" {
                AnchorError::AlreadyAnchored
            } else {
                AnchorError::Reverted(self.clean(&reason))
            });
        }
        match error {
            E::TransportError(rpc) => self.rpc_failure(context, rpc),
            E::ZeroData(..) => Attempt::Fatal(AnchorError::Config(format!(
                "{context}: the registry address has no StateSetAnchor contract on the chain at {} \
                 (the call returned no data); check SET_REGISTRY_ADDRESS and L2_RPC_URL",
                self.origin
            ))),
            other => Attempt::Fatal(AnchorError::Rpc(format!("{context}: {}", self.describe(other)))),
        }
    }
}

/// The revert reason of a reverted call, when the node reported one.
fn revert_reason(error: &alloy::contract::Error) -> Option<String> {
    use alloy::sol_types::SolError;

    if let Some(data) = error.as_revert_data() {
        // require(..., "reason") gives Error(string): the bare reason, as the registry wrote it.
        if let Ok(revert) = alloy::sol_types::Revert::abi_decode(&data) {
            return Some(revert.reason);
        }
        return Some(
            alloy::sol_types::decode_revert_reason(&data)
                .unwrap_or_else(|| format!("revert data 0x{}", alloy::hex::encode(&data))),
        );
    }
    // Some nodes report a revert without data ("execution reverted").
    if let alloy::contract::Error::TransportError(RpcError::ErrorResp(payload)) = error
        && payload.message.contains("revert")
    {
        return Some(payload.message.to_string());
    }
    None
}

/// True for failures of the transport (not of the request): worth retrying.
fn is_transient(error: &RpcError<TransportErrorKind>) -> bool {
    match error {
        RpcError::Transport(kind) => match kind {
            TransportErrorKind::HttpError(http) => http.status >= 500 || http.status == 429 || http.status == 408,
            TransportErrorKind::HttpErrorWithRetryAfter { .. }
            | TransportErrorKind::MissingBatchResponse(_)
            | TransportErrorKind::BackendGone
            // reqwest failures: connect refused or reset, timeouts, broken connections.
            | TransportErrorKind::Custom(_) => true,
            _ => false,
        },
        RpcError::ErrorResp(payload) => payload.is_retry_err(),
        _ => false,
    }
}

/// `scheme://host[:port]` of a URL: what may be logged of an RPC URL.
pub(crate) fn redacted_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// Parses the signing key; the error never echoes any part of the key.
pub(crate) fn signer(private_key: &SecretString) -> Result<PrivateKeySigner, AnchorError> {
    private_key.expose_secret().trim().parse::<PrivateKeySigner>().map_err(|_| {
        AnchorError::Config(
            "SEQUENCER_PRIVATE_KEY is not a valid secp256k1 private key (expected 32 bytes as hex, \
             with or without 0x)"
                .to_owned(),
        )
    })
}

/// An HTTP provider that fills gas, nonce and chain id and signs with `signer`.
///
/// NB: the nonce is fetched from the node for every transaction (`SimpleNonceManager`) rather than
/// cached: a cached nonce is consumed even when sending fails, leaving a gap that stalls every later
/// transaction, and it goes stale when the node restarts or another replica uses the same key.
pub(crate) fn provider(
    rpc_url: &str,
    signer: PrivateKeySigner,
    timeout: Duration,
    redactor: &Redactor,
) -> Result<DynProvider, AnchorError> {
    let url = Url::parse(rpc_url).map_err(|e| AnchorError::Config(format!("L2_RPC_URL is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(AnchorError::Config(format!(
            "L2_RPC_URL must be an http:// or https:// URL, got {}",
            redactor.origin()
        )));
    }
    let http = http_client(timeout)?;
    let is_local = alloy::transports::utils::guess_local_url(rpc_url);
    let poll_interval = if is_local { LOCAL_POLL_INTERVAL } else { REMOTE_POLL_INTERVAL };
    let client = RpcClient::new(Http::with_client(http, url), is_local).with_poll_interval(poll_interval);
    Ok(ProviderBuilder::default()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_client(client)
        .erased())
}

/// A reqwest client whose TLS is rustls with the ring provider, configured explicitly.
///
/// NB: reqwest is built with `rustls-no-provider`; without a preconfigured TLS backend it would look
/// for a process-wide default provider and panic when there is none. Passing a ring-backed config
/// keeps this crate independent of what else the process installs, and keeps aws-lc-rs out.
fn http_client(timeout: Duration) -> Result<reqwest::Client, AnchorError> {
    use rustls_platform_verifier::BuilderVerifierExt;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| AnchorError::Config(format!("cannot set up TLS for the L2 RPC: {e}")))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| AnchorError::Config(format!("cannot build the HTTP client for the L2 RPC: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redactor_reduces_rpc_urls_to_their_origin_and_hides_the_private_key() {
        let key = SecretString::from("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80");
        let r = Redactor::new("https://base.example.com/v2/SECRET_API_KEY?x=1", Some(&key));
        let text = r.clean(
            "error sending request for url (https://base.example.com/v2/SECRET_API_KEY?x=1): \
             key ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        );
        assert_eq!(text, "error sending request for url (https://base.example.com): key [REDACTED]");
    }

    #[test]
    fn the_redactor_also_matches_the_normalised_form_of_the_url() {
        let r = Redactor::new("http://127.0.0.1:8545", None);
        assert_eq!(r.clean("url (http://127.0.0.1:8545/)"), "url (http://127.0.0.1:8545)");
        assert_eq!(r.origin(), "http://127.0.0.1:8545");
    }

    #[test]
    fn a_bad_private_key_is_reported_without_echoing_it() {
        let secret = "0xnot-a-key-but-still-secret-0123456789";
        let err = signer(&SecretString::from(secret)).unwrap_err();
        assert!(matches!(err, AnchorError::Config(_)));
        assert!(!err.to_string().contains("still-secret"), "{err}");
    }

    #[test]
    fn transport_failures_are_transient_and_node_errors_are_not() {
        let refused = TransportErrorKind::custom_str("connection refused");
        assert!(is_transient(&refused));
        let unavailable = RpcError::Transport(TransportErrorKind::HttpError(alloy::transports::HttpError {
            status: 503,
            body: String::new(),
        }));
        assert!(is_transient(&unavailable));
        let forbidden = RpcError::Transport(TransportErrorKind::HttpError(alloy::transports::HttpError {
            status: 403,
            body: String::new(),
        }));
        assert!(!is_transient(&forbidden));
        let null: RpcError<TransportErrorKind> = RpcError::NullResp;
        assert!(!is_transient(&null));
    }

    #[test]
    fn https_clients_build_without_a_process_wide_crypto_provider() {
        // Would panic inside reqwest if the ring config were not passed explicitly.
        http_client(Duration::from_secs(5)).expect("client builds");
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }
}
