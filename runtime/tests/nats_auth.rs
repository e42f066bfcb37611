#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! Every service connects through `NatsArgs`: user/password, token, nkey and TLS against real
//! nats-servers that demand them, a wrong secret refused with a clear error, and no secret in the
//! config's debug output (what a service logs at start).

use std::path::Path;
use std::process::Command;

use clap::Parser;
use clawline_nats::server::{LocalServer, LocalServerConfig};
use clawline_runtime::{NatsArgs, connect_nats};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    nats: NatsArgs,
}

fn args(url: &str, extra: &[&str]) -> NatsArgs {
    let mut argv = vec!["svc", "--nats-url", url];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().nats
}

fn server(dir: &Path, extra: String) -> LocalServer {
    let mut config = LocalServerConfig::new(dir);
    config.extra = extra;
    LocalServer::start(config).unwrap()
}

/// The connection works for JetStream, not just for the handshake.
async fn usable(nats: &NatsArgs) -> anyhow::Result<()> {
    let client = connect_nats(nats, "auth-test", true).await?;
    let js = async_nats::jetstream::new(client);
    clawline_nats::ensure_topology(&js, &nats.topology()).await?;
    Ok(())
}

#[tokio::test]
async fn user_password_token_and_nkey() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let seed_file = dir.path().join("svc.nk");
    std::fs::write(&seed_file, user.seed().unwrap()).unwrap();
    let s = server(
        &dir.path().join("users"),
        format!(
            "authorization {{\n  users = [\n    {{user: \"svc\", password: \"s3cret-pw\"}}\n    {{nkey: \"{}\"}}\n  ]\n}}\n",
            user.public_key()
        ),
    );
    let url = s.url();
    usable(&args(
        &url,
        &["--nats-user", "svc", "--nats-password", "s3cret-pw"],
    ))
    .await
    .unwrap();
    usable(&args(&url, &["--nats-nkey", seed_file.to_str().unwrap()]))
        .await
        .unwrap();
    let wrong = usable(&args(
        &url,
        &["--nats-user", "svc", "--nats-password", "nope"],
    ))
    .await
    .unwrap_err();
    assert!(
        format!("{wrong:#}").contains("connecting to NATS"),
        "{wrong:#}"
    );
    let none = usable(&args(&url, &[])).await.unwrap_err();
    assert!(
        format!("{none:#}").to_lowercase().contains("author"),
        "{none:#}"
    );

    // A seed that is not a user seed is named by its flag.
    let bad = dir.path().join("bad.nk");
    std::fs::write(&bad, "not a seed").unwrap();
    let err = usable(&args(&url, &["--nats-nkey", bad.to_str().unwrap()]))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("--nats-nkey"), "{err:#}");

    let t = server(
        &dir.path().join("token"),
        "authorization {\n  token: \"tok-123\"\n}\n".into(),
    );
    usable(&args(&t.url(), &["--nats-token", "tok-123"]))
        .await
        .unwrap();
    assert!(
        usable(&args(&t.url(), &["--nats-token", "tok-999"]))
            .await
            .is_err()
    );
}

#[test]
fn secrets_never_show_in_debug_output_and_flags_come_in_pairs() {
    let a = args(
        "nats://127.0.0.1:4222",
        &["--nats-user", "svc", "--nats-password", "s3cret-pw"],
    );
    let shown = format!("{a:?}");
    assert!(
        !shown.contains("s3cret-pw") && shown.contains("<redacted>"),
        "{shown}"
    );
    let t = args("nats://127.0.0.1:4222", &["--nats-token", "tok-123"]);
    assert!(!format!("{t:?}").contains("tok-123"));

    let err = Cli::try_parse_from(["svc", "--nats-user", "svc"])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--nats-password"), "{err}");
    let err = Cli::try_parse_from([
        "svc",
        "--nats-token",
        "a",
        "--nats-user",
        "u",
        "--nats-password",
        "p",
    ])
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("cannot be used with"), "{err}");
    let err = Cli::try_parse_from(["svc", "--nats-url", "nats://a:1,::bad::"])
        .unwrap()
        .nats
        .servers()
        .unwrap_err()
        .to_string();
    assert!(err.contains("--nats-url"), "{err}");
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=clawline test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[tokio::test]
async fn tls_with_the_servers_ca() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let p = |f: &str| dir.path().join(f).display().to_string();
    let s = server(
        &dir.path().join("tls"),
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
            p("server.pem"),
            p("server.key")
        ),
    );
    let url = s.url().replace("nats://", "tls://");
    usable(&args(&url, &["--nats-tls-ca", &p("ca.pem")]))
        .await
        .unwrap();
    // Without the CA the server's certificate is not trusted.
    assert!(usable(&args(&url, &[])).await.is_err());
    let err = usable(&args(&url, &["--nats-tls-ca", &p("missing.pem")]))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("--nats-tls-ca"), "{err:#}");
}
