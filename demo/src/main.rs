//! `relay365-demo` (what `make demo` runs): starts the whole stack with the
//! function binaries, prints the walk-through, and runs until Ctrl-C.
//!
//! ```text
//! relay365-demo [--bin-dir target/debug] [--api-port 9365] [--sim-port 9366]
//!               [--receiver-port 9367] [--log-dir target/demo/logs] [--verbose]
//!               [--renew-every SECONDS] [--stack-file target/demo/stack.json]
//! ```
//! With `RELAY365_DEMO_CLIENT_ID`, `RELAY365_DEMO_TENANT_ID` and
//! `RELAY365_DEMO_CLIENT_SECRET` set, it talks to that real tenant instead of
//! the simulator (`RELAY365_CLOUD` picks the cloud; `RELAY365_PUBLIC_URL`
//! should be an HTTPS tunnel to the API port, which Graph needs to notify).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use relay365::model::cloud::Cloud;
use relay365_demo::{DEMO_CONNECT_FLOW_ID, DEMO_CONNECT_INSTANCE_ID, DEMO_USER, Demo, Microsoft, Options};

fn usage(why: &str) -> ! {
    eprintln!(
        "{why}\nusage: relay365-demo [--bin-dir DIR] [--api-port N] [--sim-port N] [--receiver-port N] [--log-dir DIR] [--stack-file FILE] [--verbose] [--renew-every SECONDS]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut sim_port = 9366;
    let mut opts = Options {
        bin_dir: PathBuf::from("target/debug"),
        api_port: 9365,
        receiver_port: 9367,
        public_url: std::env::var("RELAY365_PUBLIC_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        microsoft: Microsoft::Simulated {
            port: 0,
            interactive: true,
        },
        log_dir: Some(PathBuf::from("target/demo/logs")),
        echo_logs: false,
        print_events: true,
        renew_every: Duration::from_secs(15 * 60),
        stack_file: Some(
            std::env::var_os("RELAY365_DEMO_STACK")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target/demo/stack.json")),
        ),
        retry_after_seconds: 10,
        fixed_deadline_ms: None,
        seal_tokens: true,
        separate_dynamodb: false,
        dispatch_event_source: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let port = |v: String| {
            v.parse::<u16>()
                .unwrap_or_else(|_| usage(&format!("{v:?} is not a port")))
        };
        match flag.as_str() {
            "--bin-dir" => opts.bin_dir = PathBuf::from(value()),
            "--api-port" => opts.api_port = port(value()),
            "--sim-port" => sim_port = port(value()),
            "--receiver-port" => opts.receiver_port = port(value()),
            "--log-dir" => opts.log_dir = Some(PathBuf::from(value())),
            "--stack-file" => opts.stack_file = Some(PathBuf::from(value())),
            "--verbose" => opts.echo_logs = true,
            "--renew-every" => {
                let secs = value()
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .unwrap_or_else(|| usage("--renew-every takes a number of seconds"));
                opts.renew_every = Duration::from_secs(secs);
            }
            "-h" | "--help" => {
                println!(
                    "relay365-demo: the whole stack on this machine (docs/demo.md)\nusage: relay365-demo [--bin-dir DIR] [--api-port N] [--sim-port N] [--receiver-port N] [--log-dir DIR] [--stack-file FILE] [--verbose] [--renew-every SECONDS]"
                );
                std::process::exit(0)
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    let real = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    opts.microsoft = match (
        real("RELAY365_DEMO_CLIENT_ID"),
        real("RELAY365_DEMO_TENANT_ID"),
        real("RELAY365_DEMO_CLIENT_SECRET"),
    ) {
        (Some(client_id), Some(tenant_id), Some(client_secret)) => {
            let cloud = match real("RELAY365_CLOUD") {
                Some(c) => c
                    .parse::<Cloud>()
                    .unwrap_or_else(|e| usage(&format!("RELAY365_CLOUD: {e}"))),
                None => Cloud::Global,
            };
            Microsoft::Real {
                client_id,
                tenant_id,
                client_secret,
                cloud,
            }
        }
        (None, None, None) => Microsoft::Simulated {
            port: sim_port,
            interactive: true,
        },
        _ => usage(
            "for a real tenant set all three of RELAY365_DEMO_CLIENT_ID, RELAY365_DEMO_TENANT_ID and RELAY365_DEMO_CLIENT_SECRET",
        ),
    };
    opts
}

/// How each step's curl signs its call: SigV4 with the demo's key.
const SIGN: &str = "--aws-sigv4 aws:amz:us-east-1:execute-api --user demo:demo";

/// What `make demo` prints once the stack is up: where everything is, then
/// the steps of a walk through it.
fn walkthrough(demo: &Demo, opts: &Options, started: Instant) -> String {
    let (mut out, mailbox) = where_everything_is(demo, opts, started);
    out += &mail_steps(demo, &mailbox);
    out += &connect_steps(demo, opts);
    out += "Ctrl-C stops everything.\n";
    out
}

/// The table of endpoints, and the mailbox the steps use.
fn where_everything_is(demo: &Demo, opts: &Options, started: Instant) -> (String, String) {
    let api = &demo.api_url;
    let logs = opts
        .log_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "(not kept)".into());
    let mut out = format!(
        "\nrelay365 demo: ready in {:.1} s (the five functions from {}, each under a local Lambda Runtime API)\n\n\
         \x20 API (as API Gateway)   {api}\n",
        started.elapsed().as_secs_f64(),
        opts.bin_dir.display()
    );
    let mailbox = match (&demo.sim, &opts.microsoft) {
        (Some(sim), _) => {
            out += &format!("  Microsoft (simulated)  {}   mailbox {DEMO_USER}\n", sim.url());
            DEMO_USER.to_string()
        }
        (None, Microsoft::Real { tenant_id, cloud, .. }) => {
            out += &format!(
                "  Microsoft              {} tenant {tenant_id}\n",
                cloud.display_name()
            );
            "<your mailbox>".to_string()
        }
        (None, _) => String::new(),
    };
    out += &format!(
        "  flow receiver          {}\n  AWS (moto)             {}\n  Amazon Connect (local) {}   instance {DEMO_CONNECT_INSTANCE_ID}\n  function logs          {logs}\n",
        demo.receiver.url,
        demo.aws.url(),
        demo.connect.url()
    );
    if demo.public_url != demo.api_url {
        out += &format!("  public URL             {}\n", demo.public_url);
    }
    (out, mailbox)
}

/// Steps 1 to 4: connect the mailbox, get its mail as events, reply.
fn mail_steps(demo: &Demo, mailbox: &str) -> String {
    let api = &demo.api_url;
    let mut out = String::new();
    out += &format!(
        "\n1. Create a connection for the mailbox (routes with IAM auth need a SigV4 signature; the demo's key is demo:demo):\n\n\
         \x20 $ curl -sS {api}/connections {SIGN} \\\n\
         \x20     -H 'content-type: application/json' \\\n\
         \x20     -d '{{\"id\":\"support\",\"auth\":\"delegated\",\"scopes\":[\"Mail.ReadOnly\",\"Mail.Send\"],\"mailbox\":\"{mailbox}\",\"subscriptions\":[{{\"resource\":\"mail\"}}]}}'\n\n\
         2. Open the \"connect_url\" of the answer in a browser and accept the consent page.\n\
         \x20  The connection turns \"active\" and a mail subscription is created (Graph validates the webhook first):\n\n\
         \x20 $ curl -sS {api}/connections/support {SIGN}\n\n"
    );
    match &demo.sim {
        Some(sim) => {
            out += &format!(
                "3. Send a test mail into the mailbox; the event appears below, signed, and at GET {}:\n\n\
                 \x20 $ curl -sS {}/_sim/mailboxes/{DEMO_USER}/messages \\\n\
                 \x20     -H 'content-type: application/json' \\\n\
                 \x20     -d '{{\"from\":\"customer@example.org\",\"subject\":\"Where is my order?\",\"body\":\"<p>Order 1234 has not arrived.</p>\"}}'\n\n",
                demo.receiver.url,
                sim.url()
            );
        }
        None => {
            out += &format!(
                "3. Send a mail to the mailbox from any other account; the event appears below and at GET {}.\n\n",
                demo.receiver.url
            );
        }
    }
    out += &format!(
        "4. Reply with one curl line:\n\n\
         \x20 $ curl -sS {api}/mail/send {SIGN} \\\n\
         \x20     -H 'content-type: application/json' \\\n\
         \x20     -d '{{\"connection_id\":\"support\",\"to\":[\"customer@example.org\"],\"subject\":\"Re: Where is my order?\",\"body\":{{\"text\":\"It ships today.\"}}}}'\n\n"
    );
    if let Some(sim) = &demo.sim {
        out += &format!(
            "   What the mailbox sent:\n\n\
             \x20 $ curl -sS {}/_sim/mailboxes/{DEMO_USER}/sent\n\n",
            sim.url()
        );
    }
    out
}

/// Step 5, Amazon Connect tasks, and the operator CLI on this stack.
fn connect_steps(demo: &Demo, opts: &Options) -> String {
    let api = &demo.api_url;
    let cli = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("relay365")))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "relay365".into());
    let mut out = String::new();
    let task_target = format!("connect-task:{DEMO_CONNECT_INSTANCE_ID}/{DEMO_CONNECT_FLOW_ID}");
    out += &format!(
        "5. Turn the mailbox's new mail into Amazon Connect tasks as well (a second flow on the mailbox;\n\
         \x20  the local Connect has instance {DEMO_CONNECT_INSTANCE_ID} with the inbound flow {DEMO_CONNECT_FLOW_ID}):\n\n\
         \x20 $ {cli} subscribe support mail --target {task_target}\n\n"
    );
    match &demo.sim {
        Some(sim) => {
            out += &format!(
                "   Send another mail; it becomes a task, printed below (==> Amazon Connect) and listed by the local Connect:\n\n\
                 \x20 $ curl -sS {}/_sim/mailboxes/{DEMO_USER}/messages \\\n\
                 \x20     -H 'content-type: application/json' \\\n\
                 \x20     -d '{{\"from\":\"customer@example.org\",\"subject\":\"Refund for order 1234\",\"body\":\"<p>Please refund the broken kettle.</p>\"}}'\n\n",
                sim.url()
            );
        }
        None => {
            out += "   Send the mailbox another mail; it becomes a task, printed below (==> Amazon Connect) and listed by the local Connect:\n\n";
        }
    }
    out += &format!(
        "\x20 $ curl -sS {api}/_demo/connect/contacts\n\n\
         \x20  `{cli} doctor` checks each Connect target: the stack's permission, the instance, the flow\n\
         \x20  (and for connect-email:{{instance}}/{{flow}}/{DEMO_USER}, the instance's address).\n\n"
    );
    let stack_file = opts
        .stack_file
        .as_ref()
        .map(|f| format!(" (it finds this stack through {})", f.display()))
        .unwrap_or_default();
    out += &format!(
        "The operator CLI works on this stack too{stack_file}, signing its calls as the steps above do:\n\n\
         \x20 {cli} list          {cli} show support\n\
         \x20 {cli} doctor        {cli} events tail\n\n"
    );
    out
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let opts = options();
    if let Some(dir) = &opts.log_dir {
        // One run's logs at a time.
        let _ = std::fs::remove_dir_all(dir);
    }
    let demo = match Demo::start(opts.clone()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("relay365 demo could not start: {e}");
            std::process::exit(1);
        }
    };
    println!("{}", walkthrough(&demo, &opts, started));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    println!("\nstopping: functions, simulator, moto, the local Amazon Connect");
    drop(demo);
}
