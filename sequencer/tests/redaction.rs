//! Secrets never reach a log line, an error, the CLI's help or an answer: the real binaries run at
//! `RUST_LOG=trace` with every secret configured, every route of the route table is called, the admin
//! commands are run, and all their output is searched for each secret.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sequencer::api::routes::route_table;
use serde_json::json;
use uuid::Uuid;

const DB_PASSWORD: &str = "DbPassw0rd-Secret-7731";
const REPLICA_PASSWORD: &str = "ReplicaPassw0rd-Secret-4417";
const RPC_USER: &str = "rpcuser-Secret-5521";
const RPC_PASSWORD: &str = "RpcPassw0rd-Secret-9912";
const RPC_PATH_KEY: &str = "RpcPathKey0123456789abcdef";
const RPC_QUERY_KEY: &str = "RpcQueryKey9876543210fedcba";
const JWT_SECRET: &str = "JwtSecret-For-Redaction-Test-0987654321";
const PRIVATE_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

fn secrets() -> Vec<&'static str> {
    vec![
        DB_PASSWORD,
        REPLICA_PASSWORD,
        RPC_USER,
        RPC_PASSWORD,
        RPC_PATH_KEY,
        RPC_QUERY_KEY,
        JWT_SECRET,
        PRIVATE_KEY,
        ADMIN_KEY,
        SEQUENCER_SEED_HEX,
    ]
}

fn collect(child: &mut Child) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let readers: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().expect("piped stdout")),
        Box::new(child.stderr.take().expect("piped stderr")),
    ];
    for mut r in readers {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    out
}

fn environment(db: &TestDb, rpc_port: u16) -> Vec<(String, String)> {
    let (user, rest) = db.url.split_once('@').unwrap();
    vec![
        ("DATABASE_URL".into(), format!("{user}:{DB_PASSWORD}@{rest}")),
        // The same database as the read replica: not a standby, so reads stay on the primary, but its
        // checks connect with this password.
        ("READ_DATABASE_URL".into(), format!("{user}:{REPLICA_PASSWORD}@{rest}")),
        ("BOOTSTRAP_ADMIN_API_KEY".into(), ADMIN_KEY.into()),
        ("VES_SEQUENCER_SIGNING_KEY".into(), SEQUENCER_SEED_HEX.into()),
        ("JWT_SECRET".into(), JWT_SECRET.into()),
        (
            "L2_RPC_URL".into(),
            format!("http://{RPC_USER}:{RPC_PASSWORD}@127.0.0.1:{rpc_port}/v2/{RPC_PATH_KEY}?apikey={RPC_QUERY_KEY}"),
        ),
        ("SET_REGISTRY_ADDRESS".into(), "0x5FbDB2315678afecb367f032d93F642f64180aa3".into()),
        ("SEQUENCER_PRIVATE_KEY".into(), format!("0x{PRIVATE_KEY}")),
        ("RUST_LOG".into(), "trace".into()),
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
    ]
}

#[tokio::test]
async fn no_configured_secret_appears_in_any_output_of_the_server_or_the_admin_cli_at_trace_level() {
    let db = TestDb::migrated().await;
    // An RPC endpoint that accepts connections and never answers a JSON-RPC call usefully.
    let rpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rpc_port = rpc.local_addr().unwrap().port();
    let env = environment(&db, rpc_port);

    let mut server = Command::new(env!("CARGO_BIN_EXE_stateset-sequencer"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let output = collect(&mut server);
    let deadline = Instant::now() + Duration::from_secs(90);
    let base = loop {
        let text = output.lock().unwrap().clone();
        if let Some(i) = text.find("listening on http://") {
            let rest = &text[i + "listening on ".len()..];
            break rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect::<String>();
        }
        assert!(Instant::now() < deadline, "the server did not start:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let api = Api::new(base.clone(), ADMIN_KEY);
    let agent = Agent::random();
    api.register_key(&agent).await;
    api.ingest(agent.agent_id, &[agent.event(1)]).await;
    let (t, s) = (agent.tenant_id, agent.store_id);
    for route in route_table() {
        let path = route
            .path
            .replace("{tenant_id}", &t.to_string())
            .replace("{store_id}", &s.to_string())
            .replace("{agent_id}", &agent.agent_id.to_string())
            .replace("{key_id}", "1")
            .replace("{entity_type}", "InventoryItem")
            .replace("{entity_id}", "WIDGET-001")
            .replace("{sequence_number}", "1")
            .replace("{batch_id}", &Uuid::new_v4().to_string())
            .replace("{id}", &Uuid::new_v4().to_string())
            .replace("{*path}", "0/000");
        let body = (route.method == reqwest::Method::POST)
            .then(|| json!({"tenant_id": t, "store_id": s, "tenantId": t, "storeId": s, "max_events": 10}));
        let (_, answer) = api.send(route.method.clone(), &format!("{path}?tenant_id={t}&store_id={s}"), body).await;
        for secret in secrets().iter().filter(|x| **x != ADMIN_KEY) {
            assert!(!answer.to_string().contains(secret), "{} {}: the answer shows a secret", route.method, route.path);
        }
    }
    // A JWT signed with the configured secret, and a wrong one.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": t.to_string(), "iss": "stateset-sequencer", "aud": "stateset-api",
            "exp": chrono::Utc::now().timestamp() + 60, "perms": "read"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let http = reqwest::Client::new();
    http.get(format!("{base}/api/v1/head?tenant_id={t}&store_id={s}")).bearer_auth(&token).send().await.unwrap();
    http.get(format!("{base}/api/v1/head?tenant_id={t}&store_id={s}")).bearer_auth("x.y.z").send().await.unwrap();
    // Give the anchoring worker a moment to fail against the RPC endpoint (its errors are logged).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: kill sends SIGTERM to the child this test started.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    drop(rpc);

    let mut all = output.lock().unwrap().clone();
    assert!(all.contains("TRACE") || all.contains("DEBUG"), "the server logged at trace level");
    let admin = env!("CARGO_BIN_EXE_stateset-sequencer-admin");
    for args in [
        vec!["--help"],
        vec!["deploy-registry", "--help"],
        vec!["verify"],
        vec!["api-keys", "list"],
        vec!["dead-letters", "list"],
        vec!["deploy-registry"],
    ] {
        let out = Command::new(admin)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(&args)
            .output()
            .expect("run the admin CLI");
        all.push_str(&String::from_utf8_lossy(&out.stdout));
        all.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(all.contains("L2_RPC_URL"), "the CLI help was captured");
    for secret in secrets() {
        if let Some(i) = all.find(secret) {
            let from = i.saturating_sub(200);
            panic!("{secret} appears in the output: ...{}...", &all[from..(i + secret.len() + 100).min(all.len())]);
        }
    }
}
