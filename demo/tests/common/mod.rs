//! What the demo's own end-to-end tests share: where the release binaries
//! are, a browser-like client, and the sign-in a person does.
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::path::PathBuf;

/// The release binaries (`make test` builds them first): `RELAY365_BIN_DIR`,
/// else `$CARGO_TARGET_DIR/release`, else the workspace's `target/release`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("RELAY365_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release")
}

pub fn http() -> reqwest::Client {
    relay365::https::client().unwrap()
}

/// [`relay365_demo::browser::sign_in`], which must get to the callback.
pub async fn sign_in(connect_url: &str) -> (u16, String) {
    relay365_demo::browser::sign_in(connect_url).await.unwrap()
}

pub use relay365_testkit::eventually;
