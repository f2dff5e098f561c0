//! TLS to PostgreSQL: a private server with `ssl=on`, a CA and server certificate made here, and
//! `hostssl`-only access. `DATABASE_URL`'s `sslmode`/`sslrootcert` and the `PGSSLMODE`/`PGSSLROOTCERT`
//! variables (what the operator sets) are honoured, URL parameters win, and a certificate from another
//! CA is refused with an error that says so.

#[path = "common/private_pg.rs"]
mod private_pg;

use std::path::PathBuf;
use std::process::{Command, Output};

use private_pg::PrivatePg;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sqlx::{Connection, PgConnection};

/// A CA: its certificate (PEM) and the issuer that signs server certificates.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A private PostgreSQL that accepts TLS connections only, with the CA that signed its certificate and
/// another CA.
struct TlsPg {
    pg: PrivatePg,
    ca_pem: PathBuf,
    other_ca_pem: PathBuf,
}

impl TlsPg {
    fn start() -> Self {
        let pg = PrivatePg::init();
        let data = PathBuf::from(pg.data());
        let issuer = ca("sequencer test CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let server_cert = params.signed_by(&server_key, &issuer).unwrap();
        let (ca_pem, other_ca_pem) = (pg.dir.join("ca.pem"), pg.dir.join("other-ca.pem"));
        std::fs::write(&ca_pem, issuer.pem()).unwrap();
        std::fs::write(&other_ca_pem, ca("some other CA").pem()).unwrap();
        pg.write_private(&data.join("server.crt"), &server_cert.pem());
        pg.write_private(&data.join("server.key"), &server_key.serialize_pem());
        // TLS only: a plain connection matches no line and is refused by the server.
        pg.write_private(&data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n");
        pg.start("-c ssl=on");
        TlsPg { pg, ca_pem, other_ca_pem }
    }

    fn url(&self, query: &str) -> String {
        self.pg.url(query)
    }
}

/// Connects through the sequencer's own URL parsing; on success, whether the session uses TLS.
async fn connect(url: &str) -> Result<bool, String> {
    let options = sequencer::store::connect_options(url).map_err(|e| e.to_string())?;
    let mut conn = PgConnection::connect_with(&options).await.map_err(|e| e.to_string())?;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    conn.close().await.map_err(|e| e.to_string())?;
    Ok(ssl)
}

/// `stateset-sequencer-admin migrate` against `url`, with extra environment.
fn admin_migrate(url: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stateset-sequencer-admin"));
    cmd.args(["migrate", "--wait-secs", "5"])
        .env("DATABASE_URL", url)
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run stateset-sequencer-admin")
}

#[tokio::test]
async fn tls_connections_follow_sslmode_and_sslrootcert_and_refuse_a_certificate_from_another_ca() {
    let pg = tokio::task::spawn_blocking(TlsPg::start).await.unwrap();
    let ca = pg.ca_pem.display().to_string();
    let other = pg.other_ca_pem.display().to_string();

    assert_eq!(connect(&pg.url("")).await, Ok(true), "the default (prefer) uses TLS when the server offers it");
    assert_eq!(connect(&pg.url("?sslmode=prefer")).await, Ok(true));
    assert_eq!(connect(&pg.url("?sslmode=require")).await, Ok(true), "require: encrypted, certificate not checked");
    assert_eq!(connect(&pg.url(&format!("?sslmode=verify-ca&sslrootcert={ca}"))).await, Ok(true));
    assert_eq!(connect(&pg.url(&format!("?sslmode=verify-full&sslrootcert={ca}"))).await, Ok(true));

    let err = connect(&pg.url(&format!("?sslmode=verify-full&sslrootcert={other}"))).await.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("certificate"), "another CA is refused as such: {err}");

    let err = connect(&pg.url("?sslmode=disable")).await.unwrap_err();
    assert!(err.contains("no pg_hba.conf entry") && err.contains("no encryption"), "the server refuses plain: {err}");

    // The operator's way: PGSSLMODE and PGSSLROOTCERT (the migration Job runs this binary).
    let out = admin_migrate(&pg.url(""), &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)]);
    assert!(out.status.success(), "migrate over verify-full: {}", String::from_utf8_lossy(&out.stderr));
    let out = admin_migrate(&pg.url(""), &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &other)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("UnknownIssuer"), "PGSSLROOTCERT is honoured: {stderr}");
    let out = admin_migrate(&pg.url(""), &[("PGSSLMODE", "disable")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no encryption"), "PGSSLMODE is honoured: {stderr}");
    // URL parameters win over the variables.
    let out = admin_migrate(&pg.url(&format!("?sslmode=verify-full&sslrootcert={ca}")), &[("PGSSLMODE", "disable")]);
    assert!(out.status.success(), "the URL's sslmode wins: {}", String::from_utf8_lossy(&out.stderr));
    // A misspelt mode is an error, not a silent fall-back to `prefer`.
    let out = admin_migrate(&pg.url(""), &[("PGSSLMODE", "verify_full")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("PGSSLMODE"), "{stderr}");
}

#[test]
fn no_second_tls_crypto_provider_can_enter_the_build() {
    // Cargo.lock lists every package any feature combination could build, so aws-lc-rs absent from
    // it means ring is the only rustls provider (a second one makes rustls panic in the kube client).
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    assert!(!lock.contains("name = \"aws-lc-rs\"") && !lock.contains("name = \"aws-lc-sys\""), "aws-lc in Cargo.lock");
    assert!(lock.contains("name = \"ring\""));
}
