//! The security audit log: a scripted sequence of actions through the real binary produces
//! exactly the expected events, in order, in AUTHD_AUDIT_LOG and on the `authd::audit` log
//! target; neither holds a password, a token or a refresh token; SIGHUP reopens the file.

use std::time::Duration;

use authd::pb;
use serde_json::Value;
use tonic::Request;

use super::process::{Process, embedded_args};
use crate::common::PASSWORD;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const USER_AGENT: &str = "audit-test/1.0";

/// `message` with the metadata every call of the script carries.
fn traced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    metadata.insert("user-agent", USER_AGENT.parse().unwrap());
    request
}

fn read_events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every audit line is JSON"))
        .collect()
}

/// The events of `path` once there are at least `count` (the writer thread flushes shortly).
async fn events_at_least(path: &std::path::Path, count: usize) -> Vec<Value> {
    for _ in 0..100 {
        let events = read_events(path);
        if events.len() >= count {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read_events(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_sequence_produces_exactly_the_expected_events_and_no_secret() {
    let data_dir = tempfile::tempdir().unwrap();
    let audit_file = data_dir.path().join("audit.jsonl");
    let mut args = embedded_args(data_dir.path());
    args.extend([
        format!("--audit-log={}", audit_file.display()),
        "--instance-id=audit-test-1".to_owned(),
        "--audit-hash-key=0123456789abcdef0123456789abcdef-test-key".to_owned(),
        "--login-failures-before-backoff=2".to_owned(),
    ]);
    let process = Process::start(&args);
    let mut client = process.client().await;
    let email = "audited@example.com";
    let wrong_password = "wrong-Pa55word-for-audit";
    let new_password = "a brand new Pa55phrase for audit";

    // 1. Register.
    let registered = client
        .register(traced(pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            username: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let user_id = registered.user_id.clone();
    let first = registered.tokens.unwrap();
    // 2. A wrong password, 3. an unknown email.
    for (who, password) in [
        (email, wrong_password),
        ("nobody@example.com", wrong_password),
    ] {
        client
            .login(traced(pb::LoginRequest {
                email: who.into(),
                password: password.into(),
            }))
            .await
            .unwrap_err();
    }
    // 4. Login.
    let login = |client: &mut pb::auth_service_client::AuthServiceClient<_>, password: &str| {
        let request = traced(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        });
        let mut client = client.clone();
        async move {
            client
                .login(request)
                .await
                .unwrap()
                .into_inner()
                .tokens
                .unwrap()
        }
    };
    let second = login(&mut client, PASSWORD).await;
    // 5. Refresh, 6. the spent token again: reuse.
    let refreshed = client
        .refresh(traced(pb::RefreshRequest {
            refresh_token: second.refresh_token.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    client
        .refresh(traced(pb::RefreshRequest {
            refresh_token: second.refresh_token.clone(),
        }))
        .await
        .unwrap_err();
    // 7. Two logins; the second session revokes the first.
    let third = login(&mut client, PASSWORD).await;
    let fourth = login(&mut client, PASSWORD).await;
    client
        .revoke_session(traced(pb::RevokeSessionRequest {
            access_token: fourth.access_token.clone(),
            session_id: third.session_id.clone(),
        }))
        .await
        .unwrap();
    // 8. Change the password.
    let changed = client
        .change_password(traced(pb::ChangePasswordRequest {
            access_token: fourth.access_token.clone(),
            current_password: PASSWORD.into(),
            new_password: new_password.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    // 9. Logout.
    client
        .logout(traced(pb::LogoutRequest {
            access_token: changed.access_token.clone(),
            refresh_token: String::new(),
        }))
        .await
        .unwrap();
    // A retry of that Logout ends nothing more, and records nothing more.
    client
        .logout(traced(pb::LogoutRequest {
            access_token: changed.access_token.clone(),
            refresh_token: changed.refresh_token.clone(),
        }))
        .await
        .unwrap();
    // 10. Login and LogoutAll.
    let fifth = login(&mut client, new_password).await;
    client
        .logout_all(traced(pb::LogoutAllRequest {
            access_token: fifth.access_token.clone(),
        }))
        .await
        .unwrap();
    // 11. Wrong passwords until the throttle makes the next attempt wait, then one more.
    for _ in 0..3 {
        client
            .login(traced(pb::LoginRequest {
                email: email.into(),
                password: wrong_password.into(),
            }))
            .await
            .unwrap_err();
    }

    let events = events_at_least(&audit_file, 20).await;
    let summary: Vec<String> = events
        .iter()
        .map(|event| {
            let mut text = event["event"].as_str().unwrap().to_owned();
            for key in ["reason", "by"] {
                if let Some(value) = event[key].as_str() {
                    text.push_str(&format!(" {key}={value}"));
                }
            }
            text
        })
        .collect();
    assert_eq!(
        summary,
        [
            "user.registered",
            "login.failed reason=invalid_credentials",
            "login.failed reason=invalid_credentials",
            "login.succeeded",
            "session.refreshed",
            "session.refresh_reuse_detected",
            "session.ended by=reuse",
            "login.succeeded",
            "login.succeeded",
            "session.ended by=revoke_session",
            "password.changed",
            "session.ended by=password_change",
            "token.revoked by=logout",
            "session.ended by=logout",
            "login.succeeded",
            "session.ended by=logout_all",
            "login.failed reason=invalid_credentials",
            "login.failed reason=invalid_credentials",
            "login.throttled",
            "login.failed reason=throttled",
        ],
        "{events:#?}"
    );
    // Every event: time, outcome, instance, caller and trace.
    for event in &events {
        let time = event["time"].as_str().unwrap();
        assert!(
            humantime::parse_rfc3339(time).is_ok(),
            "not RFC 3339: {time}"
        );
        assert_eq!(event["instance_id"], "audit-test-1");
        assert_eq!(event["source_address"], "127.0.0.1");
        assert!(
            event["user_agent"]
                .as_str()
                .unwrap()
                .starts_with(USER_AGENT),
            "{event}"
        );
        assert_eq!(event["trace_id"], TRACE_ID);
        let failed = event["event"].as_str().is_some_and(|name| {
            name.starts_with("login.failed")
                || name.ends_with("throttled")
                || name.ends_with("detected")
        });
        assert_eq!(
            event["outcome"],
            if failed { "failure" } else { "success" },
            "{event}"
        );
    }
    // Users and sessions named where known.
    let unknown = &events[2];
    assert!(unknown.get("user_id").is_none(), "{unknown}");
    let known = &events[1];
    assert_eq!(known["user_id"], user_id.as_str());
    for event in events
        .iter()
        .filter(|event| event["event"] != "login.failed" || event.get("user_id").is_some())
    {
        if event == unknown {
            continue;
        }
        assert_eq!(event["user_id"], user_id.as_str(), "{event}");
    }
    assert_eq!(events[0]["session_id"], first.session_id.as_str());
    assert_eq!(events[3]["session_id"], second.session_id.as_str());
    assert_eq!(events[4]["session_id"], second.session_id.as_str());
    assert_eq!(events[6]["session_id"], second.session_id.as_str());
    assert_eq!(events[9]["session_id"], third.session_id.as_str());
    assert_eq!(events[15]["sessions_ended"], 1);
    assert!(events[18]["retry_after_seconds"].as_u64().unwrap() >= 1);
    // Failed logins carry a keyed hash of the email, the same for the same email, never the email.
    let hash = events[1]["email_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 32);
    assert_eq!(events[16]["email_hash"], hash);
    assert_ne!(events[2]["email_hash"], hash);

    // SIGHUP reopens the file: after logrotate moves it, new events go to a new file.
    let rotated = data_dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit_file, &rotated).unwrap();
    process.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .login(traced(pb::LoginRequest {
            email: "someone-else@example.com".into(),
            password: wrong_password.into(),
        }))
        .await
        .unwrap_err();
    let after = events_at_least(&audit_file, 1).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["event"], "login.failed");
    assert_eq!(read_events(&rotated).len(), events.len());

    process.signal("TERM");
    let (_, output) = tokio::task::spawn_blocking(|| process.wait())
        .await
        .unwrap();
    let logs = output.join("\n");
    // The same events on the authd::audit target of the JSON logs.
    let logged: Vec<Value> = output
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "authd::audit")
        .collect();
    assert_eq!(logged.len(), events.len() + 1, "{logs}");
    for (logged, written) in logged.iter().zip(&events) {
        assert_eq!(logged["event"], written["event"]);
        assert_eq!(logged["user_id"], written["user_id"]);
        assert_eq!(logged["trace_id"], TRACE_ID);
    }
    let audit_text = format!(
        "{}\n{}",
        std::fs::read_to_string(&rotated).unwrap(),
        std::fs::read_to_string(&audit_file).unwrap()
    );
    let mut secrets = vec![
        PASSWORD.to_owned(),
        wrong_password.to_owned(),
        new_password.to_owned(),
        email.to_owned(),
        "nobody@example.com".to_owned(),
    ];
    for tokens in [
        &first, &second, &refreshed, &third, &fourth, &changed, &fifth,
    ] {
        secrets.push(tokens.access_token.clone());
        secrets.push(tokens.access_token.rsplit('.').next().unwrap().to_owned());
        secrets.push(tokens.refresh_token.clone());
        // A long substring of the refresh token, too.
        secrets.push(tokens.refresh_token[..tokens.refresh_token.len() / 2].to_owned());
    }
    for secret in &secrets {
        assert!(
            !audit_text.contains(secret.as_str()),
            "a secret is in the audit file"
        );
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_path_that_is_not_a_regular_file_is_refused_and_never_hangs_the_service() {
    let data_dir = tempfile::tempdir().unwrap();
    let fifo = data_dir.path().join("audit.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // At start-up: refused at once, naming the setting.
    let mut args = embedded_args(data_dir.path());
    args.push(format!("--audit-log={}", fifo.display()));
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_authd"))
                .args(&args)
                .output()
        }),
    )
    .await
    .expect("start-up hung on a FIFO as AUTHD_AUDIT_LOG")
    .unwrap()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AUTHD_AUDIT_LOG") && stderr.contains("not a regular file"),
        "{stderr}"
    );

    // Swapped in while serving, then SIGHUP: calls go on, and SIGTERM still stops the process.
    let audit_file = data_dir.path().join("audit.jsonl");
    let mut args = embedded_args(data_dir.path());
    args.push(format!("--audit-log={}", audit_file.display()));
    let process = Process::start(&args);
    let mut client = process.client().await;
    let login = |email: &str| pb::LoginRequest {
        email: email.into(),
        password: "wrong-Pa55word-for-audit".into(),
    };
    client.login(login("one@example.com")).await.unwrap_err();
    assert_eq!(events_at_least(&audit_file, 1).await.len(), 1);
    std::fs::remove_file(&audit_file).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&audit_file)
        .status()
        .unwrap();
    assert!(made.success());
    process.signal("HUP");
    for i in 0..20 {
        tokio::time::timeout(
            Duration::from_secs(10),
            client.login(login(&format!("user{i}@example.com"))),
        )
        .await
        .expect("a call hung while the audit file was a FIFO")
        .unwrap_err();
        process.signal("HUP");
    }
    // The file comes back: the writer reopens it by itself and goes on.
    std::fs::remove_file(&audit_file).unwrap();
    std::fs::write(&audit_file, "").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    client.login(login("back@example.com")).await.unwrap_err();
    client.login(login("back2@example.com")).await.unwrap_err();
    let after = events_at_least(&audit_file, 1).await;
    assert!(
        !after.is_empty(),
        "no event reached the file once it was back"
    );
    process.signal("TERM");
    let (status, output) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(|| process.wait()),
    )
    .await
    .expect("SIGTERM did not stop authd while its audit file had been a FIFO")
    .unwrap();
    assert!(status.success(), "{output:?}");
}
