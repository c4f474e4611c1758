//! What the end-to-end tests on the release binaries share: where the
//! binaries are, a browser-like client, and the sign-in a person does. The
//! demo's own tests `mod` it, and the whole-system tests (tests/system)
//! include it in theirs by path, so both find the binaries alike.
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};

/// The release binaries (`make test` builds them first): `RELAY365_BIN_DIR`,
/// else `$CARGO_TARGET_DIR/release`, else the workspace's `target/release`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("RELAY365_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    target.join("release")
}

/// The workspace's folder: the nearest one above the crate that compiles
/// this file (the demo, or the system tests) holding Cargo.lock.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .expect("the crate is inside the workspace")
        .to_path_buf()
}

pub fn http() -> reqwest::Client {
    relay365::https::client().unwrap()
}

/// [`relay365_demo::browser::sign_in`], which must get to the callback.
pub async fn sign_in(connect_url: &str) -> (u16, String) {
    relay365_demo::browser::sign_in(connect_url).await.unwrap()
}

pub use relay365_testkit::eventually;
