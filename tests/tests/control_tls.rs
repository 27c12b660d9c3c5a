//! TLS on control's API with client certificates, and SIGHUP reloading control's
//! certificate and limits.
#![forbid(unsafe_code)]

use std::path::Path;

use serde_json::json;
use vnc_shared::tls::load_certs;
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;
use vnc_tests::tls::{CertFiles, TestCa, Validity, connect};

/// A static-runtime control config with one container (`c1` of alice), serving `tls`
/// to clients of `client_ca`, plus `extra` lines.
fn write_config(file: &Path, tls: &CertFiles, client_ca: &Path, extra: &str) {
    std::fs::write(
        file,
        format!(
            "runtime = \"static\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n{extra}\n\
             [[static_containers]]\ncid = \"c1\"\nowner = \"alice\"\ntenant = \"t1\"\nhost = \"127.0.0.1\"\nport = 5900\n",
            tls.cert.display(),
            tls.key.display(),
            client_ca.display(),
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn the_api_speaks_tls_to_clients_with_certificates_and_reloads_on_sighup() {
    let redis = RedisServer::start().await.unwrap();
    let (keys, identity) = (TestKeys::new(), Identity::new());
    let (servers, clients, strangers) = (
        TestCa::new("server-ca"),
        TestCa::new("client-ca"),
        TestCa::new("stranger-ca"),
    );
    let operator = clients.issue("operator", Validity::Current);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("control.toml");
    let first = servers.issue("control", Validity::Current);
    write_config(&config, &first, &clients.cert, "token_max_ttl = \"10m\"");
    let control = ControlProcess::start(
        &redis.url(),
        &keys,
        &identity,
        &["--config", config.to_str().unwrap()],
    )
    .await
    .unwrap();
    let trusted = servers.client(Some(&operator));
    eventually("control ready over TLS", vnc_tests::WAIT, || async {
        let answer = control
            .call_over(Some(trusted.clone()), "GET", "/readyz", None, None)
            .await;
        matches!(answer, Ok((200, _))).then_some(())
    })
    .await;

    // No client certificate, one from another CA, or plain HTTP: no answer.
    let stranger = strangers.issue("stranger", Validity::Current);
    for (what, tls) in [
        ("no client certificate", Some(servers.client(None))),
        (
            "a stranger's certificate",
            Some(servers.client(Some(&stranger))),
        ),
        ("plain HTTP", None),
    ] {
        let answer = control.call_over(tls, "GET", "/readyz", None, None).await;
        assert!(answer.is_err(), "{what}: {answer:?}");
    }

    let alice = identity.token("alice", "t1", false);
    let mint = |ttl: u64| {
        let control = &control;
        let (trusted, alice) = (trusted.clone(), alice.clone());
        async move {
            control
                .call_over(
                    Some(trusted),
                    "POST",
                    "/v1/containers/c1/vnc-tokens",
                    Some(&alice),
                    Some(&json!({"scope": "control", "ttl_seconds": ttl})),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(mint(300).await.0, 200);

    // Reload: a renewed certificate and a shorter token TTL limit.
    let renewed = servers.issue("control-renewed", Validity::Current);
    write_config(&config, &renewed, &clients.cert, "token_max_ttl = \"1m\"");
    control.proc.signal("HUP");
    eventually("reload counted", vnc_tests::WAIT, || async {
        (control
            .metric("vnc_control_config_reloads_total{result=\"ok\"}")
            .await
            == Some(1.0))
        .then_some(())
    })
    .await;
    let (status, body) = mint(300).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("between 1 and 60"),
        "the new limit: {body}"
    );
    assert_eq!(mint(60).await.0, 200);
    let tls = connect(control.api, trusted.clone()).await.unwrap();
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        served,
        load_certs(&renewed.cert).unwrap()[0],
        "the renewed certificate is served"
    );

    // A config naming a key that doesn't exist is refused; the renewed one stays.
    let missing = CertFiles {
        cert: renewed.cert.clone(),
        key: dir.path().join("missing.key"),
    };
    write_config(&config, &missing, &clients.cert, "");
    control.proc.signal("HUP");
    eventually("refusal counted", vnc_tests::WAIT, || async {
        (control
            .metric("vnc_control_config_reloads_total{result=\"refused\"}")
            .await
            == Some(1.0))
        .then_some(())
    })
    .await;
    assert_eq!(
        mint(300).await.0,
        400,
        "the limit of the last good config stays"
    );
}
