//! Shared by the benchmarks and cross-process tests of this crate.

pub mod cpu;
pub mod spawn;

use anyhow::{Context, Result, ensure};

/// Registers `key` as key 1 of `agent_id` in `tenant_id` (`POST /api/v1/agents/keys`, with the admin
/// API key `api_key`), as every benchmark does before it signs anything.
pub async fn register_agent_key(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    tenant_id: uuid::Uuid,
    agent_id: uuid::Uuid,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<()> {
    let response = http
        .post(format!("{base}/api/v1/agents/keys"))
        .header("authorization", format!("ApiKey {api_key}"))
        .json(&serde_json::json!({
            "tenantId": tenant_id,
            "agentId": agent_id,
            "keyId": 1,
            "publicKey": format!("0x{}", hex::encode(key.to_bytes())),
        }))
        .send()
        .await
        .context("registering an agent key")?;
    let status = response.status();
    ensure!(status.is_success(), "registering an agent key: {status} {}", response.text().await.unwrap_or_default());
    Ok(())
}
