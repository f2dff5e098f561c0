//! The StateSetAnchor registry contract: its Rust binding and its creation bytecode.
//!
//! Both come from the artifacts checked in under `contracts/out/` by `contracts/build.sh`, so the
//! binding cannot drift from the deployed code and building this crate needs neither solc nor npm.

// The generated `anchor`/`anchorBatch` builders mirror the contract's eight-argument functions.
#![allow(clippy::too_many_arguments)]

use alloy::primitives::Bytes;

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    StateSetAnchor,
    "contracts/out/StateSetAnchor.abi.json"
);

/// Creation bytecode of StateSetAnchor (hex, no `0x`), as compiled by `contracts/build.sh`.
pub const BYTECODE_HEX: &str = include_str!("../contracts/out/StateSetAnchor.bin");

/// Creation bytecode of StateSetAnchor; append the ABI-encoded constructor argument
/// (`bool permissionless`) to deploy it.
pub fn bytecode() -> Bytes {
    // NB: the artifact is produced by our own build script and checked by a test; a decode failure
    // means the file was corrupted in the repository, which no caller can handle.
    alloy::hex::decode(BYTECODE_HEX.trim()).expect("contracts/out/StateSetAnchor.bin is valid hex").into()
}
