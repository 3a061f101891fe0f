//! The client control channel and client sign-in end to end on loopback: the real HTTP
//! API for the device authorization flow, the real QUIC endpoint, a minimal client daemon
//! written here, and the test gateway of the parent module acknowledging grants.

use proto::client::{ClientMessage, RefusalCode, ServerMessage, Welcome};
use proto::device::DeviceKey;

use super::*;
use crate::app::{LoginInput, PasswordInput, SignedIn};

const PASSWORD: &str = "correct horse battery";

/// A minimal client daemon: one connection, one stream.
struct TestClient {
    _endpoint: quinn::Endpoint,
    _conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: Vec<u8>,
}

impl TestClient {
    async fn open(h: &Harness) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(h.cert.clone()).unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![proto::client::CLIENT_ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint
            .connect(h.quic, "localhost")
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        Self {
            _endpoint: endpoint,
            _conn: conn,
            send,
            recv,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, msg: &ClientMessage) {
        let mut buf = Vec::new();
        proto::encode(msg, &mut buf);
        self.send.write_all(&buf).await.unwrap();
    }

    async fn next(&mut self) -> Option<ServerMessage> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some((msg, used)) = proto::decode(&self.buf).unwrap() {
                    self.buf.drain(..used);
                    return Some(msg);
                }
                let mut chunk = [0u8; 4096];
                match self.recv.read(&mut chunk).await {
                    Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await
        .expect("no message from the controller within 5 s")
    }

    async fn recv(&mut self) -> ServerMessage {
        self.next().await.expect("the stream ended")
    }

    /// Hello and proof with `key` (which may not be the device's); the controller's answer.
    async fn authenticate(
        &mut self,
        device: DeviceId,
        session: &str,
        key: &DeviceKey,
    ) -> ServerMessage {
        self.send(&ClientMessage::Hello {
            device_id: device,
            session: session.into(),
            client_version: "0.1.0".into(),
        })
        .await;
        let ServerMessage::Challenge { nonce } = self.recv().await else {
            panic!("expected a challenge");
        };
        let nonce = STANDARD.decode(nonce).unwrap();
        self.send(&ClientMessage::Proof {
            signature: key.sign_challenge(device, &nonce),
        })
        .await;
        self.recv().await
    }

    async fn connect(h: &Harness, s: &SignedInDevice) -> (Self, Welcome) {
        let mut c = Self::open(h).await;
        match c.authenticate(s.device, &s.session, &s.key).await {
            ServerMessage::Welcome(w) => (c, w),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }
}

/// A device that went through the browser sign-in.
struct SignedInDevice {
    key: DeviceKey,
    device: DeviceId,
    session: String,
}

/// Gives the harness's user a password and signs them in to the web.
async fn web_sign_in(h: &Harness) -> (SignedIn, String) {
    h.service
        .set_password(
            &Actor::cli(),
            h.user,
            PasswordInput {
                password: PASSWORD.into(),
            },
        )
        .await
        .unwrap();
    let session = h
        .service
        .login(LoginInput {
            email: "ann@example.com".into(),
            password: PASSWORD.into(),
            totp: None,
            recovery_code: None,
        })
        .await
        .unwrap();
    let signed_in = h.service.web_session(&session.token).await.unwrap();
    (signed_in, session.token)
}

async fn post(h: &Harness, path: &str, body: Value, cookie: Option<&str>) -> (u16, Value) {
    let mut req = h
        .client
        .post(format!("{}/api/v1{path}", h.http))
        .json(&body);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{}={c}", crate::app::SESSION_COOKIE));
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The whole browser sign-in for a fresh device key, over HTTP.
async fn sign_in_device(h: &Harness) -> SignedInDevice {
    let (_, cookie) = web_sign_in(h).await;
    let key = DeviceKey::generate();
    let (status, start) = post(
        h,
        "/device-auth",
        json!({"public_key": key.public_key(), "name": "ann-laptop"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{start}");
    let (status, approved) = post(
        h,
        "/device-auth/approve",
        json!({"user_code": start["user_code"], "approve": true}),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 204, "{approved}");
    let (status, session) = post(
        h,
        "/device-auth/token",
        json!({"device_code": start["device_code"]}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{session}");
    SignedInDevice {
        key,
        device: session["device_id"].as_str().unwrap().parse().unwrap(),
        session: session["session"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn the_device_flow_waits_for_approval_and_yields_one_session() {
    let h = harness().await;
    let (_, cookie) = web_sign_in(&h).await;
    let key = DeviceKey::generate();
    let (status, start) = post(
        &h,
        "/device-auth",
        json!({"public_key": key.public_key(), "name": "ann-laptop"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{start}");
    let user_code = start["user_code"].as_str().unwrap().to_owned();
    assert!(
        start["verification_uri_complete"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/device?code={user_code}")),
        "{start}"
    );
    let poll = json!({"device_code": start["device_code"]});
    let (status, pending) = post(&h, "/device-auth/token", poll.clone(), None).await;
    assert_eq!(
        (status, pending["error"]["code"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (status, fast) = post(&h, "/device-auth/token", poll.clone(), None).await;
    assert_eq!(
        (status, fast["error"]["code"].as_str()),
        (400, Some("slow_down"))
    );
    // The approval needs a signed-in person and a JSON body.
    let approve = json!({"user_code": user_code.to_lowercase(), "approve": true});
    let (status, _) = post(&h, "/device-auth/approve", approve.clone(), None).await;
    assert_eq!(status, 401);
    let res = h
        .client
        .post(format!("{}/api/v1/device-auth/approve", h.http))
        .header("cookie", format!("{}={cookie}", crate::app::SESSION_COOKIE))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("user_code={user_code}&approve=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        415,
        "a cross-site form post is refused"
    );
    let pending_page = h
        .client
        .get(format!("{}/api/v1/device-auth/{user_code}", h.http))
        .header("cookie", format!("{}={cookie}", crate::app::SESSION_COOKIE))
        .send()
        .await
        .unwrap();
    let pending_page: Value = pending_page.json().await.unwrap();
    assert_eq!(pending_page["state"], "waiting");
    assert_eq!(pending_page["fingerprint"], json!(key.fingerprint()));
    let (status, _) = post(&h, "/device-auth/approve", approve.clone(), Some(&cookie)).await;
    assert_eq!(status, 204);
    let (status, again) = post(&h, "/device-auth/approve", approve, Some(&cookie)).await;
    assert_eq!(status, 422, "answered twice: {again}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, session) = post(&h, "/device-auth/token", poll.clone(), None).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user_id"], json!(h.user));
    assert!(session["session"].as_str().unwrap().starts_with("pds_"));
    let device: DeviceId = session["device_id"].as_str().unwrap().parse().unwrap();
    let registered = h.service.get_device(&Actor::cli(), device).await.unwrap();
    assert_eq!(registered.public_key, key.public_key());
    assert_eq!(registered.user_id, h.user);
    // The device code is single use.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, used) = post(&h, "/device-auth/token", poll, None).await;
    assert_eq!(
        (status, used["error"]["code"].as_str()),
        (400, Some("expired_token"))
    );
    let audit = h.get("/audit?kind=device.").await;
    let kinds: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"device.sign_in_approved"), "{kinds:?}");
    assert!(kinds.contains(&"device.signed_in"), "{kinds:?}");
    let log = serde_json::to_string(&audit).unwrap();
    assert!(!log.contains(session["session"].as_str().unwrap()));
}

#[tokio::test]
async fn denied_unknown_and_malformed_sign_ins_fail_clearly() {
    let h = harness().await;
    let (signed_in, _) = web_sign_in(&h).await;
    let key = DeviceKey::generate();
    let start = h
        .service
        .start_device_authorization(
            crate::app::DeviceAuthorizationInput {
                public_key: key.public_key(),
                name: "x".into(),
            },
            None,
            "https://ctrl",
        )
        .await
        .unwrap();
    h.service
        .approve_device_authorization(&signed_in, &start.user_code, false)
        .await
        .unwrap();
    let err = h
        .service
        .poll_device_authorization(&start.device_code)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::DeviceFlow {
                code: "access_denied",
                ..
            }
        ),
        "{err:?}"
    );
    let (status, unknown) = post(
        &h,
        "/device-auth/token",
        json!({"device_code": "pdc_nope"}),
        None,
    )
    .await;
    assert_eq!(
        (status, unknown["error"]["code"].as_str()),
        (400, Some("expired_token"))
    );
    let (status, bad) = post(
        &h,
        "/device-auth",
        json!({"public_key": "AAAA", "name": "x"}),
        None,
    )
    .await;
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (422, Some("public_key"))
    );
    let (status, _) = post(
        &h,
        "/device-auth",
        json!({"public_key": key.public_key()}),
        None,
    )
    .await;
    assert_eq!(status, 422, "the name is required");
    let err = h
        .service
        .approve_device_authorization(&signed_in, "BBBB-BBBB", true)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn a_connection_proves_the_device_key_and_gets_its_resources() {
    let h = harness().await;
    let d = sign_in_device(&h).await;
    let (_c, welcome) = TestClient::connect(&h, &d).await;
    assert_eq!(welcome.user_id, h.user);
    assert_eq!(welcome.device_id, d.device);
    assert_eq!(welcome.resources.len(), 1);
    assert_eq!(welcome.resources[0].id, h.resource);
    assert!(h.service.tunnel_network().contains(&welcome.tunnel_address));

    // Another key cannot use the session.
    let mut c = TestClient::open(&h).await;
    let answer = c
        .authenticate(d.device, &d.session, &DeviceKey::generate())
        .await;
    assert!(
        matches!(
            answer,
            ServerMessage::Refused {
                code: RefusalCode::BadProof,
                ..
            }
        ),
        "{answer:?}"
    );
    // The session belongs to one device.
    let other = sign_in_device(&h).await;
    let mut c = TestClient::open(&h).await;
    let answer = c.authenticate(other.device, &d.session, &other.key).await;
    assert!(
        matches!(
            answer,
            ServerMessage::Refused {
                code: RefusalCode::SessionEnded,
                ..
            }
        ),
        "{answer:?}"
    );
    // An unknown session.
    let mut c = TestClient::open(&h).await;
    let answer = c.authenticate(d.device, "pds_unknown", &d.key).await;
    assert!(
        matches!(
            answer,
            ServerMessage::Refused {
                code: RefusalCode::SessionEnded,
                ..
            }
        ),
        "{answer:?}"
    );
    // A first message that is not a hello.
    let mut c = TestClient::open(&h).await;
    c.send(&ClientMessage::SignOut).await;
    assert!(matches!(
        c.recv().await,
        ServerMessage::Refused {
            code: RefusalCode::Protocol,
            ..
        }
    ));
}

#[tokio::test]
async fn access_is_granted_after_the_gateway_ack_and_revocations_are_pushed() {
    let h = harness().await;
    let mut gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    let d = sign_in_device(&h).await;
    let (mut c, welcome) = TestClient::connect(&h, &d).await;
    let wg_key = key();
    c.send(&ClientMessage::RequestAccess {
        request: 7,
        resource_id: h.resource,
        public_key: wg_key.clone(),
        posture: None,
    })
    .await;
    let msg = gw.recv().await;
    let ControllerMessage::GrantAdded { seq, grant } = &msg else {
        panic!("expected grant_added, got {msg:?}");
    };
    assert_eq!(grant.public_key.to_string(), wg_key);
    assert_eq!(grant.tunnel_address, welcome.tunnel_address);
    let seq = *seq;
    gw.apply(msg);
    gw.ack(seq).await;
    let ServerMessage::Granted { request: 7, grant } = c.recv().await else {
        panic!("expected granted");
    };
    assert_eq!(grant.resource_id, h.resource);
    assert_eq!(grant.gateway_endpoint, "gw1.example.com:51820");
    assert_eq!(grant.tunnel_address, welcome.tunnel_address);

    // Revoked through the API: the gateway and the client hear at once.
    let res = h
        .req(
            reqwest::Method::DELETE,
            &format!("/grants/{}", grant.grant_id),
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert!(matches!(
        gw.recv().await,
        ControllerMessage::GrantRevoked { .. }
    ));
    let ServerMessage::Revoked { grant_id, reason } = c.recv().await else {
        panic!("expected revoked");
    };
    assert_eq!(grant_id, grant.grant_id);
    assert!(!reason.is_empty());

    // A denial carries reasons: the user leaves the group.
    let groups = h.service.list_groups(&Actor::cli()).await.unwrap();
    h.service
        .remove_member(&Actor::cli(), groups[0].id, h.user)
        .await
        .unwrap();
    c.send(&ClientMessage::RequestAccess {
        request: 8,
        resource_id: h.resource,
        public_key: key(),
        posture: None,
    })
    .await;
    let ServerMessage::Denied {
        request: 8,
        reasons,
    } = c.recv().await
    else {
        panic!("expected denied");
    };
    assert!(!reasons.is_empty());
    assert!(!reasons[0].message.is_empty());
}

#[tokio::test]
async fn disabling_the_device_ends_the_connection_and_the_session() {
    let h = harness().await;
    let d = sign_in_device(&h).await;
    let (mut c, _) = TestClient::connect(&h, &d).await;
    h.service
        .update_device(
            &Actor::cli(),
            d.device,
            DevicePatch {
                name: None,
                disabled: Some(true),
            },
        )
        .await
        .unwrap();
    let msg = c.recv().await;
    assert!(
        matches!(
            msg,
            ServerMessage::Refused {
                code: RefusalCode::DeviceDisabled,
                ..
            }
        ),
        "{msg:?}"
    );
    h.service
        .update_device(
            &Actor::cli(),
            d.device,
            DevicePatch {
                name: None,
                disabled: Some(false),
            },
        )
        .await
        .unwrap();
    let mut c = TestClient::open(&h).await;
    let answer = c.authenticate(d.device, &d.session, &d.key).await;
    assert!(
        matches!(
            answer,
            ServerMessage::Refused {
                code: RefusalCode::SessionEnded,
                ..
            }
        ),
        "a disabled device's session stays ended: {answer:?}"
    );
}

#[tokio::test]
async fn renewal_replaces_the_secret_and_sign_out_ends_it() {
    let h = harness().await;
    let d = sign_in_device(&h).await;
    let (mut c, _) = TestClient::connect(&h, &d).await;
    c.send(&ClientMessage::RenewSession { request: 1 }).await;
    let ServerMessage::SessionRenewed {
        request: 1,
        session,
        ..
    } = c.recv().await
    else {
        panic!("expected a renewed session");
    };
    assert_ne!(session, d.session);
    let mut old = TestClient::open(&h).await;
    assert!(matches!(
        old.authenticate(d.device, &d.session, &d.key).await,
        ServerMessage::Refused {
            code: RefusalCode::SessionEnded,
            ..
        }
    ));
    let renewed = SignedInDevice {
        key: d.key.clone(),
        device: d.device,
        session,
    };
    let (mut c2, _) = TestClient::connect(&h, &renewed).await;
    c2.send(&ClientMessage::SignOut).await;
    assert!(matches!(
        c2.recv().await,
        ServerMessage::Refused {
            code: RefusalCode::SessionEnded,
            ..
        }
    ));
    let mut again = TestClient::open(&h).await;
    assert!(matches!(
        again.authenticate(d.device, &renewed.session, &d.key).await,
        ServerMessage::Refused {
            code: RefusalCode::SessionEnded,
            ..
        }
    ));
}

fn report(at: jiff::Timestamp, firewall: model::CheckState) -> model::PostureReport {
    model::PostureReport {
        collected_at: at,
        os_name: Some("debian".into()),
        os_version: Some("12".into()),
        kernel_version: None,
        disk_encryption: model::CheckState::Pass,
        firewall,
        secure_boot: model::CheckState::Unknown,
        screen_lock: model::CheckState::Unknown,
        processes: vec![],
        client_version: Some("0.1.0".into()),
        hostname: Some("ann-laptop".into()),
        serial: None,
    }
}

#[tokio::test]
async fn posture_reports_must_be_signed_fresh_and_new_and_failures_revoke() {
    let h = harness().await;
    let admin = Actor::cli();
    let profile = h
        .service
        .create_profile(
            &admin,
            PostureProfileInput {
                name: "firewalled".into(),
                require_firewall: true,
                ..serde_json::from_value(json!({"name": "x"})).unwrap()
            },
        )
        .await
        .unwrap();
    let policies = h.service.list_policies(&admin).await.unwrap();
    let conditions = ConditionsInput {
        posture_profile_id: Some(profile.id),
        ..Default::default()
    };
    h.service
        .update_policy(
            &admin,
            policies[0].id,
            PolicyInput {
                name: policies[0].name.clone(),
                group_id: policies[0].group_id,
                resource_id: policies[0].resource_id,
                action: model::PolicyAction::Allow,
                conditions,
                max_session_secs: None,
                disabled: false,
            },
        )
        .await
        .unwrap();
    let mut gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    let d = sign_in_device(&h).await;
    let (mut c, _) = TestClient::connect(&h, &d).await;
    let now = jiff::Timestamp::now();

    // Unsigned, foreign-signed, stale: refused.
    let mut unsigned = d
        .key
        .sign_report(d.device, 1, report(now, model::CheckState::Pass));
    unsigned.signature.clear();
    let foreign =
        DeviceKey::generate().sign_report(d.device, 2, report(now, model::CheckState::Pass));
    let stale = d.key.sign_report(
        d.device,
        3,
        report(
            now - jiff::SignedDuration::from_mins(10),
            model::CheckState::Pass,
        ),
    );
    for (seq, bad) in [(1, unsigned), (2, foreign), (3, stale)] {
        c.send(&ClientMessage::Posture { report: bad }).await;
        let ServerMessage::PostureAck { seq: s, error } = c.recv().await else {
            panic!("expected a posture ack");
        };
        assert_eq!(s, seq);
        assert!(error.is_some(), "report {seq} was accepted");
    }
    // A passing report with the request: granted.
    let good = d
        .key
        .sign_report(d.device, 10, report(now, model::CheckState::Pass));
    c.send(&ClientMessage::RequestAccess {
        request: 1,
        resource_id: h.resource,
        public_key: key(),
        posture: Some(good.clone()),
    })
    .await;
    let msg = gw.recv().await;
    let seq = gw.apply(msg).unwrap();
    gw.ack(seq).await;
    let ServerMessage::Granted { grant, .. } = c.recv().await else {
        panic!("expected granted");
    };
    // The same report again is a replay.
    c.send(&ClientMessage::Posture { report: good }).await;
    let ServerMessage::PostureAck { error, .. } = c.recv().await else {
        panic!("expected a posture ack");
    };
    assert!(error.unwrap().contains("replay"));
    // The firewall goes off: the grant is revoked at once, with the reason.
    let started = Instant::now();
    let off = d.key.sign_report(
        d.device,
        11,
        report(jiff::Timestamp::now(), model::CheckState::Fail),
    );
    c.send(&ClientMessage::Posture { report: off }).await;
    let mut revoked = None;
    let mut acked = false;
    while revoked.is_none() || !acked {
        match c.recv().await {
            ServerMessage::Revoked { grant_id, reason } => revoked = Some((grant_id, reason)),
            ServerMessage::PostureAck { error: None, .. } => acked = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    let (grant_id, reason) = revoked.unwrap();
    assert_eq!(grant_id, grant.grant_id);
    assert!(reason.contains("firewall"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        gw.recv().await,
        ControllerMessage::GrantRevoked { .. }
    ));
    // And access is denied with the reason until it is fixed.
    c.send(&ClientMessage::RequestAccess {
        request: 2,
        resource_id: h.resource,
        public_key: key(),
        posture: None,
    })
    .await;
    let ServerMessage::Denied { reasons, .. } = c.recv().await else {
        panic!("expected denied");
    };
    assert!(
        reasons.iter().any(|r| r.code == "firewall_off"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn enrollment_keys_yield_a_session_too() {
    let h = harness().await;
    let key = DeviceKey::generate();
    let ek = h
        .service
        .create_enrollment_key(
            &Actor::cli(),
            serde_json::from_value(json!({"user_id": h.user})).unwrap(),
        )
        .await
        .unwrap();
    let (status, enrolled) = post(
        &h,
        "/devices/enroll",
        json!({"enrollment_key": ek.secret, "name": "build-server", "public_key": key.public_key()}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{enrolled}");
    assert_eq!(enrolled["id"], enrolled["device_id"]);
    let d = SignedInDevice {
        key,
        device: enrolled["device_id"].as_str().unwrap().parse().unwrap(),
        session: enrolled["session"].as_str().unwrap().to_owned(),
    };
    let (_c, welcome) = TestClient::connect(&h, &d).await;
    assert_eq!(welcome.device_name, "build-server");
}

#[tokio::test]
async fn a_database_failure_reaches_the_device_as_words_without_database_text() {
    let h = harness().await;
    let _gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    let d = sign_in_device(&h).await;
    let (mut c, _) = TestClient::connect(&h, &d).await;
    // The store fails in the middle of an access request.
    let mut conn = h.service.store().conn().await.unwrap();
    sqlx::query("DROP TABLE tunnel_addresses")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    c.send(&ClientMessage::RequestAccess {
        request: 9,
        resource_id: h.resource,
        public_key: key(),
        posture: None,
    })
    .await;
    let ServerMessage::Failed { request, message } = c.recv().await else {
        panic!("expected failed");
    };
    assert_eq!(request, 9);
    assert_eq!(message, "internal error; see the controller's log");
    assert!(!message.contains("tunnel_addresses"), "{message}");
}
