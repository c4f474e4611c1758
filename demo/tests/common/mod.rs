//! What the end-to-end tests on the release binaries share: where the
//! binaries are, a browser-like client, and the sign-in a person does. The
//! demo's own tests `mod` it, and the whole-system tests (tests/system)
//! include it in theirs by path, so both find the binaries alike.
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};

/// The function binaries: `RELAY365_BIN_DIR` (`make test` sets it to the
/// debug ones `make build-tests` makes, `make e2e-release` to the release
/// ones), else this build's own: the folder above this test binary's
/// `deps/`, where `cargo build --workspace --bins` puts them.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("RELAY365_BIN_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .expect("the test binary is in a profile's deps/ folder")
}

/// A folder removed at the end of the test.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("relay365-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
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
