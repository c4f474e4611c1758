//! `graph-sim`: runs the Microsoft identity and Graph simulator as a process,
//! for local runs and `make demo`.
//!
//! ```text
//! graph-sim [--port 8443] [--cloud-graph-root https://graph.microsoft.com]
//!           [--client-id ID] [--client-secret SECRET] [--tenant TENANT]
//!           [--redirect-uri URL]... [--user UPN]... [--auto-consent]
//! ```
//! Every flag has a demo default; it prints its URL and runs until Ctrl-C.
//! Sign-ins show a consent page unless `--auto-consent` is given.

use graph_sim::{App, Sim, User};

fn usage() -> ! {
    eprintln!(
        "usage: graph-sim [--port N] [--cloud-graph-root URL] [--client-id ID] [--client-secret S] [--tenant T] [--redirect-uri URL]... [--user UPN]... [--auto-consent]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut port = 8443u16;
    let mut graph_root = "https://graph.microsoft.com".to_string();
    let mut app = App {
        client_id: "00000000-0000-0000-0000-0000000d3e30".into(),
        home_tenant: "demo.onmicrosoft.com".into(),
        client_secret: Some("demo-client-secret".into()),
        certificate_der: None,
        redirect_uris: Vec::new(),
    };
    let mut users: Vec<String> = Vec::new();
    let mut interactive = true;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--port" => port = value().parse().unwrap_or_else(|_| usage()),
            "--cloud-graph-root" => graph_root = value(),
            "--client-id" => app.client_id = value(),
            "--client-secret" => app.client_secret = Some(value()),
            "--tenant" => app.home_tenant = value(),
            "--redirect-uri" => app.redirect_uris.push(value()),
            "--user" => users.push(value()),
            "--auto-consent" => interactive = false,
            _ => usage(),
        }
    }
    if users.is_empty() {
        users.push("support@demo.onmicrosoft.com".into());
    }
    let sim = match Sim::start_on(port, &graph_root).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let tenant = app.home_tenant.clone();
    println!(
        "graph-sim listening on {} (app {}, tenant {tenant})",
        sim.url(),
        app.client_id
    );
    sim.register_app(app);
    sim.set_interactive_consent(interactive);
    for (i, upn) in users.iter().enumerate() {
        println!("  user {upn}");
        sim.add_user(User {
            id: format!("user-{i}"),
            upn: upn.clone(),
            display_name: upn.clone(),
            tenant: tenant.clone(),
        });
    }
    let _ = tokio::signal::ctrl_c().await;
}
