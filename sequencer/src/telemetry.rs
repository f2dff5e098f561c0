//! Logging: `tracing` with `RUST_LOG` filtering, plain text or JSON (`LOG_FORMAT=json`).
//!
//! Every line passes through a redacting writer: the secrets the process was configured with (the
//! passwords of the database and of its read replica, the L2 RPC URL's credentials, path and query,
//! where hosted providers put their API key, the JWT secret, the bootstrap admin key, private keys)
//! are replaced by `[REDACTED]` at every log level, whatever library wrote the line.

use std::io::Write;
use std::sync::RwLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// The secrets to scrub, longest first (so a secret is never half-replaced by a shorter one).
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Environment variables whose values are secrets as a whole.
const SECRET_VARS: &[&str] =
    &["JWT_SECRET", "BOOTSTRAP_ADMIN_API_KEY", "SEQUENCER_PRIVATE_KEY", "VES_SEQUENCER_SIGNING_KEY", "PGPASSWORD"];
/// Environment variables holding URLs whose credentials, path and query are secret.
const SECRET_URL_VARS: &[&str] = &["L2_RPC_URL", "DATABASE_URL", "READ_DATABASE_URL", "TEST_DATABASE_URL"];

/// The parts of a URL that may carry a credential: the user and password, and for non-database URLs
/// the path and query (and their longer pieces).
pub fn url_secrets(url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return vec![url.to_owned()];
    };
    let database = parsed.scheme().starts_with("postgres");
    let mut out = Vec::new();
    if let Some(password) = parsed.password() {
        out.push(password.to_owned());
        out.extend(percent_encoding::percent_decode_str(password).decode_utf8().ok().map(|p| p.into_owned()));
    }
    if !database {
        if !parsed.username().is_empty() {
            out.push(parsed.username().to_owned());
        }
        let path = parsed.path();
        if path.len() > 1 {
            out.push(path.to_owned());
            out.extend(path.split('/').filter(|s| s.len() >= 8).map(str::to_owned));
        }
        if let Some(query) = parsed.query().filter(|q| !q.is_empty()) {
            out.push(query.to_owned());
            out.extend(parsed.query_pairs().map(|(_, v)| v.into_owned()).filter(|v| v.len() >= 8));
        }
    }
    out
}

/// Adds secrets to scrub from every log line and [`redact`]ed text.
pub fn add_secrets(secrets: impl IntoIterator<Item = String>) {
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for s in secrets {
        let s = s.trim().to_owned();
        // Very short values would scrub ordinary words; no real credential is this short.
        if s.len() >= 4 && !all.contains(&s) {
            all.push(s.clone());
            if let Some(bare) = s.strip_prefix("0x").filter(|b| b.len() >= 16) {
                all.push(bare.to_owned());
            }
        }
    }
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the secrets found in this process's environment.
pub fn add_env_secrets() {
    let mut secrets = Vec::new();
    for var in SECRET_VARS {
        secrets.extend(std::env::var(var).ok());
    }
    for var in SECRET_URL_VARS {
        if let Ok(url) = std::env::var(var) {
            secrets.extend(url_secrets(&url));
        }
    }
    add_secrets(secrets);
}

/// `text` with every registered secret replaced by `[REDACTED]`.
pub fn redact(text: &str) -> String {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut text = text.to_owned();
    for s in secrets.iter() {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), "[REDACTED]");
        }
    }
    text
}

/// A writer that scrubs each write (the formatter writes one event per write) before passing it on.
pub struct Redacting<W>(W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Makes [`Redacting`] writers over stdout or stderr.
#[derive(Clone, Copy)]
pub struct RedactingWriter {
    stderr: bool,
}

impl<'a> MakeWriter<'a> for RedactingWriter {
    type Writer = Redacting<Box<dyn Write + 'a>>;

    fn make_writer(&'a self) -> Self::Writer {
        if self.stderr {
            Redacting(Box::new(std::io::stderr().lock()))
        } else {
            Redacting(Box::new(std::io::stdout().lock()))
        }
    }
}

/// Installs a subscriber for command-line tools: logs go to stderr, so stdout carries only the
/// command's answer (e.g. the address `deploy-registry` prints).
pub fn init_cli() {
    add_env_secrets();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(RedactingWriter { stderr: true })
        .try_init();
}

/// Installs the global subscriber (once; later calls are ignored, which suits tests).
pub fn init(format: LogFormat) {
    add_env_secrets();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(RedactingWriter { stderr: false });
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosted_rpc_urls_key_and_a_database_password_are_secrets_but_hosts_are_not() {
        let rpc = url_secrets("https://user:pw-secret-1@eth.example.com/v2/AbCdEf0123456789?apikey=QqQq12345678");
        assert!(rpc.contains(&"/v2/AbCdEf0123456789".to_string()));
        assert!(rpc.contains(&"AbCdEf0123456789".to_string()));
        assert!(rpc.contains(&"QqQq12345678".to_string()));
        assert!(rpc.contains(&"pw-secret-1".to_string()));
        assert!(!rpc.iter().any(|s| s.contains("example.com")));
        let db = url_secrets("postgres://app:s3cr%40t-pass@db:5432/seq");
        assert!(db.contains(&"s3cr@t-pass".to_string()));
        assert!(!db.contains(&"app".to_string()), "the database user is not a secret");
    }

    #[test]
    fn registered_secrets_are_redacted_from_text() {
        add_secrets(["0xdeadbeefdeadbeefdeadbeef".to_string(), "tok-123456".to_string()]);
        let text = redact("key deadbeefdeadbeefdeadbeef and tok-123456 at https://x/");
        assert_eq!(text, "key [REDACTED] and [REDACTED] at https://x/");
    }
}
