//! What the binary end-to-end tests share: the demo's own test helpers
//! (where the release binaries are, a browser-like client, the sign-in a
//! person does), signing as the CLI signs, and the source files of the
//! crates this build compiled.
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::path::PathBuf;

// The demo's tests find the binaries and sign in as these do: one copy.
#[path = "../../../../demo/tests/common/mod.rs"]
mod demo_tests;

pub use demo_tests::*;

/// The headers that sign a request to the demo's API with the demo's key,
/// as the `relay365` CLI signs (the front verifies the signature).
pub fn signed(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<(String, String)> {
    signed_with(relay365_demo::DEMO_SECRET_ACCESS_KEY, method, url, headers, body)
}

/// [`signed`] with another secret key (a forgery the front must refuse).
pub fn signed_with(
    secret: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<(String, String)> {
    let creds =
        aws_credential_types::Credentials::new(relay365_demo::DEMO_ACCESS_KEY_ID, secret, None, None, "test");
    relay365_cli::sigv4::sign_headers(
        method,
        url,
        headers,
        body,
        &creds,
        relay365_demo::DEMO_REGION,
        std::time::SystemTime::now(),
    )
    .unwrap()
}

/// A customer's mail asking for a refund arrives at the demo's mailbox, and
/// (within a minute) the demo's local Amazon Connect has started a contact
/// for it. Returns the mail's id.
pub async fn refund_mail_reaches_connect(demo: &relay365_demo::Demo) -> String {
    let id = demo.sim.as_ref().unwrap().deliver_message(
        relay365_demo::DEMO_USER,
        graph_sim::Message {
            from: ("Customer".into(), "customer@example.org".into()),
            subject: "Refund for order 1234".into(),
            body_html: "<p>Please refund the broken kettle.</p>".into(),
            ..Default::default()
        },
    );
    assert!(
        eventually(60, || !demo.connect.contacts().is_empty()).await,
        "no task reached the local Connect; it refused: {:?}",
        demo.connect.refused()
    );
    id
}

/// A file from the source of a crate this build compiled, e.g.
/// `dependency_file("aws_lambda_events", "src/fixtures/x.json")`.
///
/// Found without depending on what a package cache happens to hold: first
/// through the dep-info files cargo wrote next to this test binary (they name
/// every source file the compiler read, so they point at the very copy the
/// build used), then through `cargo metadata --locked`, which may download
/// from the registry. A failure is a sentence naming the file and both ways it
/// was looked for.
pub fn dependency_file(krate: &str, file: &str) -> PathBuf {
    let version = locked_version(krate);
    let mut tried = Vec::new();
    match from_dep_info(krate, version.as_deref(), file) {
        Ok(p) => return p,
        Err(why) => tried.push(format!("in the dep-info files beside the test binary: {why}")),
    }
    match from_cargo_metadata(krate, file) {
        Ok(p) => return p,
        Err(why) => tried.push(format!("through `cargo metadata --locked`: {why}")),
    }
    panic!(
        "could not find {file} of the crate {krate} {}; looked {}. Build the tests with cargo \
         (so the crate's source is unpacked) or make the registry reachable for `cargo metadata`.",
        version.as_deref().unwrap_or("(not in Cargo.lock)"),
        tried.join("; and ")
    )
}

/// The version of `krate` in the workspace's Cargo.lock.
fn locked_version(krate: &str) -> Option<String> {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).ok()?;
    let needle = format!("name = \"{krate}\"\nversion = \"");
    let at = lock.find(&needle)? + needle.len();
    Some(lock[at..].split('"').next()?.to_string())
}

fn from_dep_info(krate: &str, version: Option<&str>, file: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("the test binary's path is unknown ({e})"))?;
    let deps = exe.parent().ok_or("the test binary has no folder")?;
    let lib = krate.replace('-', "_");
    let dir_name = version.map(|v| format!("{krate}-{v}"));
    let entries = std::fs::read_dir(deps).map_err(|e| format!("{} cannot be read ({e})", deps.display()))?;
    let mut seen = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(&format!("{lib}-")) && name.ends_with(".d")) {
            continue;
        }
        seen += 1;
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        // Make syntax: "out: src1 src2 …", spaces in paths escaped as "\ ".
        let sources = text
            .lines()
            .next()
            .and_then(|l| l.split_once(": "))
            .map(|(_, s)| s)
            .unwrap_or("");
        for source in sources.replace("\\ ", "\u{0}").split(' ') {
            let source = source.replace('\u{0}', " ");
            let Some((root, _)) = source.split_once("/src/") else {
                continue;
            };
            let root = PathBuf::from(root);
            let folder = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let matches = match &dir_name {
                Some(d) => folder == *d,
                None => folder.starts_with(&format!("{krate}-")),
            };
            if matches && root.join(file).is_file() {
                return Ok(root.join(file));
            }
        }
    }
    Err(if seen == 0 {
        format!("no {lib}-*.d in {}", deps.display())
    } else {
        format!(
            "{seen} {lib}-*.d in {} name no source folder holding {file}",
            deps.display()
        )
    })
}

fn from_cargo_metadata(krate: &str, file: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|e| format!("{cargo} could not be run ({e})"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        return Err(format!("it exited with {} ({})", out.status, last.trim()));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("its output is not JSON ({e})"))?;
    let manifest = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == krate))
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or_else(|| format!("it lists no package {krate}"))?;
    let path = PathBuf::from(manifest)
        .parent()
        .map(|d| d.join(file))
        .ok_or("the manifest path has no folder")?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} does not exist", path.display()))
    }
}
