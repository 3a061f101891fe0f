//! One focused test per weakness the issue names, on both backends.

use super::*;

// ------------------------------------------------------------------ focused tests

/// The fixture on SQLite and, when configured, on PostgreSQL.
pub(super) async fn backends() -> Vec<Fixture> {
    let mut out = vec![fixture(None).await];
    if let Some(db) = postgres().await {
        out.push(fixture(Some(db)).await);
    }
    out
}

/// A policy as its input, to change a field of it.
pub(super) fn input_of(p: &Policy) -> PolicyInput {
    PolicyInput {
        name: p.name.clone(),
        group_id: p.group_id,
        resource_id: p.resource_id,
        action: p.action,
        conditions: ConditionsInput {
            posture_profile_id: p.conditions.posture_profile_id,
            time_windows: p.conditions.time_windows.clone(),
            time_zone: p.conditions.time_zone.clone(),
            source_cidrs: p
                .conditions
                .source_cidrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            max_mfa_age_secs: p.conditions.max_mfa_age_secs,
            identity_provider: p.conditions.identity_provider.clone(),
        },
        max_session_secs: Some(p.max_session_secs),
        disabled: p.disabled,
    }
}

impl Fixture {
    pub(super) fn service(&self) -> &Service {
        &self.h.service
    }

    /// The harness's group `eng` (Ann's) and its policy `eng-ssh`, which lets it reach the
    /// harness's resource.
    pub(super) async fn eng(&self) -> (GroupId, Policy) {
        let group = self
            .service()
            .list_groups(&admin())
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.name == "eng")
            .unwrap()
            .id;
        let policy = self
            .service()
            .list_policies(&admin())
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.name == "eng-ssh")
            .unwrap();
        (group, policy)
    }

    /// A group with Ann in it (or not) and a policy of `action` for it to the resource.
    pub(super) async fn group_with_policy(
        &self,
        name: &str,
        with_ann: bool,
        action: PolicyAction,
    ) -> (GroupId, Policy) {
        let a = admin();
        let group = self
            .service()
            .create_group(
                &a,
                GroupInput {
                    name: name.into(),
                    description: String::new(),
                },
            )
            .await
            .unwrap()
            .id;
        if with_ann {
            self.service()
                .add_member(
                    &a,
                    group,
                    MemberInput {
                        user_id: self.h.user,
                    },
                )
                .await
                .unwrap();
        }
        let policy = self
            .service()
            .create_policy(
                &a,
                PolicyInput {
                    name: format!("{name}-ssh"),
                    group_id: group,
                    resource_id: self.h.resource,
                    action,
                    conditions: ConditionsInput::default(),
                    max_session_secs: None,
                    disabled: false,
                },
            )
            .await
            .unwrap();
        (group, policy)
    }

    /// Ann's access to the resource from `source`, granted.
    pub(super) async fn issue(&self, source: &str, last_mfa_at: Option<Timestamp>) -> AccessGrant {
        let outcome = self
            .service()
            .request_access(
                &admin(),
                AccessRequest {
                    user_id: self.h.user,
                    device_id: self.h.device,
                    resource_id: self.h.resource,
                    source: source.into(),
                    public_key: key(),
                    identity_provider: None,
                    last_mfa_at,
                },
            )
            .await
            .unwrap();
        let AccessOutcome::Granted(g) = outcome else {
            panic!("denied: {outcome:?}");
        };
        g
    }

    /// The grant as stored.
    pub(super) async fn grant(&self, id: GrantId) -> Grant {
        self.service()
            .list_grants(&admin(), GrantFilter::for_grant(id), false)
            .await
            .unwrap()
            .pop()
            .unwrap()
    }

    pub(super) async fn is_live(&self, id: GrantId) -> bool {
        !self
            .service()
            .list_grants(&admin(), GrantFilter::for_grant(id), true)
            .await
            .unwrap()
            .is_empty()
    }

    /// Forgets the messages the gateway got so far.
    pub(super) fn drain(&mut self) {
        while self.gw.messages.try_recv().is_ok() {}
    }

    /// The first message the gateway gets that `wanted` picks, within 1 s of `since`.
    pub(super) async fn gateway_gets(
        &mut self,
        since: Instant,
        wanted: impl Fn(&ControllerMessage) -> bool,
    ) -> ControllerMessage {
        let deadline = since + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.gw.messages.recv()).await {
                Ok(Some(msg)) if wanted(&msg) => return msg,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the gateway's connection ended"),
                Err(_) => panic!("the gateway was not told within 1 s"),
            }
        }
    }

    /// The one audit event of `kind` about grant `id`.
    pub(super) async fn audited(&self, kind: &str, id: GrantId) -> store::AuditEvent {
        let mut events = self
            .service()
            .audit_log(
                &admin(),
                AuditFilter {
                    kind: Some(kind.into()),
                    subject: Some(format!("grant:{id}")),
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{kind} of grant {id}: {events:?}");
        events.pop().unwrap()
    }

    /// Asserts that `g` was revoked after the change made at `since` (`cause`, made to
    /// `changed` by `by`): not live, its gateway told within 1 s, and audited with the
    /// cause, the reason code `code`, and the grant's device, resource and gateway.
    pub(super) async fn assert_revoked(
        &mut self,
        g: &AccessGrant,
        since: Instant,
        (cause, changed, by): (&str, &str, &str),
        code: &str,
    ) {
        assert!(!self.is_live(g.grant_id).await, "grant still live");
        let id = g.grant_id;
        self.gateway_gets(
            since,
            |m| matches!(m, ControllerMessage::GrantRevoked { id: r, .. } if *r == id),
        )
        .await;
        let stored = self.grant(id).await;
        let e = self.audited("grant.revoked", id).await;
        let d = &e.details;
        assert_eq!(e.actor, by, "{e:?}");
        assert_eq!(d["cause"], json!(cause), "{e:?}");
        assert_eq!(d["changed"], json!(changed), "{e:?}");
        assert_eq!(d["by"], json!(by), "{e:?}");
        assert_eq!(d["device"], json!(stored.device_id), "{e:?}");
        assert_eq!(d["user"], json!(stored.user_id), "{e:?}");
        assert_eq!(d["resource"], json!(stored.resource_id), "{e:?}");
        assert_eq!(d["gateway"], json!(g.gateway_id), "{e:?}");
        assert_eq!(d["policy"], json!(stored.policy_id), "{e:?}");
        let codes: Vec<&str> = d["reason_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(codes.contains(&code), "{code} not in {codes:?}");
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains(cause), "{reason}");
        assert_eq!(
            self.service()
                .grant_revoke_reason(id)
                .await
                .unwrap()
                .as_deref(),
            Some(reason)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn live_joining_a_group_with_a_deny_policy_revokes_the_grant() {
    for mut f in backends().await {
        let g = f.issue("192.0.2.7", None).await;
        let (contractors, _) = f
            .group_with_policy("contractors", false, PolicyAction::Deny)
            .await;
        // The deny policy does not cover Ann yet.
        assert!(f.is_live(g.grant_id).await);
        f.drain();
        let since = Instant::now();
        f.service()
            .add_member(&admin(), contractors, MemberInput { user_id: f.h.user })
            .await
            .unwrap();
        f.assert_revoked(
            &g,
            since,
            ("group.member_added", &format!("group:{contractors}"), "cli"),
            "denied_by_policy",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn live_leaving_the_group_revokes_the_grant() {
    for mut f in backends().await {
        let (eng, _) = f.eng().await;
        let g = f.issue("192.0.2.7", None).await;
        f.drain();
        let since = Instant::now();
        f.service()
            .remove_member(&admin(), eng, f.h.user)
            .await
            .unwrap();
        f.assert_revoked(
            &g,
            since,
            ("group.member_removed", &format!("group:{eng}"), "cli"),
            "no_policy",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn live_deleting_a_policy_revokes_unless_another_allow_covers_the_grant() {
    for mut f in backends().await {
        let (_, eng_ssh) = f.eng().await;
        let (_, ops_ssh) = f.group_with_policy("ops", true, PolicyAction::Allow).await;
        let g = f.issue("192.0.2.7", None).await;
        // Both allow it as long; the older policy has the smaller id and is chosen.
        assert_eq!(f.grant(g.grant_id).await.policy_id, eng_ssh.id);

        // Another allow still covers it: it stays, attributed to that one.
        f.service()
            .delete_policy(&admin(), eng_ssh.id)
            .await
            .unwrap();
        assert!(
            f.is_live(g.grant_id).await,
            "revoked while ops-ssh allows it"
        );
        let stored = f.grant(g.grant_id).await;
        assert_eq!(stored.policy_id, ops_ssh.id, "not re-attributed");
        assert_eq!(stored.expires_at, g.expires_at);

        // Nothing covers it any more: revoked.
        f.drain();
        let since = Instant::now();
        f.service()
            .delete_policy(&admin(), ops_ssh.id)
            .await
            .unwrap();
        f.assert_revoked(
            &g,
            since,
            ("policy.deleted", &format!("policy:{}", ops_ssh.id), "cli"),
            "no_policy",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn live_narrowing_a_policys_source_ranges_revokes_grants_from_outside() {
    for mut f in backends().await {
        let (_, eng_ssh) = f.eng().await;
        let inside = f.issue("192.0.2.7", None).await;
        let outside = f.issue("198.51.100.9", None).await;
        let changed = format!("policy:{}", eng_ssh.id);

        let mut input = input_of(&eng_ssh);
        input.conditions.source_cidrs = vec!["192.0.2.0/24".into()];
        f.drain();
        let since = Instant::now();
        f.service()
            .update_policy(&admin(), eng_ssh.id, input.clone())
            .await
            .unwrap();
        f.assert_revoked(
            &outside,
            since,
            ("policy.updated", &changed, "cli"),
            "source_not_allowed",
        )
        .await;
        assert!(
            f.is_live(inside.grant_id).await,
            "192.0.2.7 is still inside"
        );

        input.conditions.source_cidrs = vec!["192.0.2.128/25".into()];
        f.drain();
        let since = Instant::now();
        f.service()
            .update_policy(&admin(), eng_ssh.id, input)
            .await
            .unwrap();
        f.assert_revoked(
            &inside,
            since,
            ("policy.updated", &changed, "cli"),
            "source_not_allowed",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn live_lowering_max_session_shortens_the_grant_and_tells_its_gateway() {
    for mut f in backends().await {
        let (_, eng_ssh) = f.eng().await;
        let g = f.issue("192.0.2.7", None).await;
        assert!(g.expires_at > ms_now() + secs(7 * 3600), "{g:?}");
        let mut input = input_of(&eng_ssh);
        input.max_session_secs = Some(60);
        f.drain();
        let since = Instant::now();
        let t0 = ms_now();
        f.service()
            .update_policy(&admin(), eng_ssh.id, input)
            .await
            .unwrap();
        let t1 = ms_now();
        let stored = f.grant(g.grant_id).await;
        assert!(f.is_live(g.grant_id).await);
        assert!(
            t0 + secs(60) <= stored.expires_at && stored.expires_at <= t1 + secs(60),
            "{stored:?}"
        );
        assert_eq!(stored.policy_id, eng_ssh.id);
        let id = g.grant_id;
        let msg = f
            .gateway_gets(
                since,
                |m| matches!(m, ControllerMessage::GrantAdded { grant, .. } if grant.id == id),
            )
            .await;
        let ControllerMessage::GrantAdded { grant, .. } = msg else {
            unreachable!()
        };
        assert_eq!(grant.expires_at, stored.expires_at);
        assert_eq!(grant.tunnel_address, g.tunnel_address);
        assert_eq!(grant.preshared_key, g.preshared_key);
        assert_eq!(f.gw.grants()[&id].expires_at, stored.expires_at);
        let e = f.audited("grant.shortened", id).await;
        assert_eq!(e.details["expires_at"], json!(stored.expires_at), "{e:?}");
        assert_eq!(e.details["was"], json!(g.expires_at), "{e:?}");
        assert_eq!(e.details["cause"], json!("policy.updated"), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn live_grants_end_at_their_expiry_with_the_reasons() {
    for mut f in backends().await {
        let (_, eng_ssh) = f.eng().await;
        // A session of one second.
        let mut input = input_of(&eng_ssh);
        input.max_session_secs = Some(1);
        f.service()
            .update_policy(&admin(), eng_ssh.id, input.clone())
            .await
            .unwrap();
        let session = f.issue("192.0.2.7", None).await;
        // And MFA that is 60 s old a second from now.
        input.max_session_secs = Some(3600);
        input.conditions.max_mfa_age_secs = Some(60);
        f.service()
            .update_policy(&admin(), eng_ssh.id, input)
            .await
            .unwrap();
        assert!(!f.is_live(session.grant_id).await, "no MFA: revoked");
        f.service().end_due_grants(100).await.unwrap();
        let mfa = f
            .issue("192.0.2.7", Some(ms_now() - secs(60) + millis(1000)))
            .await;
        assert_eq!(
            f.service().next_grant_end().await.unwrap(),
            Some(mfa.expires_at)
        );
        // Not due yet: nothing ends.
        f.service().end_due_grants(100).await.unwrap();
        assert!(f.is_live(mfa.grant_id).await);
        assert!(f.grant(mfa.grant_id).await.revoked_at.is_none());

        let wait = mfa.expires_at.duration_since(Timestamp::now());
        tokio::time::sleep(wait.unsigned_abs() + Duration::from_millis(5)).await;
        assert!(!f.is_live(mfa.grant_id).await, "past its expiry");
        f.drain();
        let since = Instant::now();
        assert_eq!(f.service().end_due_grants(100).await.unwrap(), 1);
        let id = mfa.grant_id;
        f.gateway_gets(
            since,
            |m| matches!(m, ControllerMessage::GrantRevoked { id: r, .. } if *r == id),
        )
        .await;
        let stored = f.grant(id).await;
        assert_eq!(stored.revoked_at, Some(stored.expires_at));
        let e = f.audited("grant.expired", id).await;
        assert_eq!(e.actor, "system");
        assert_eq!(e.details["cause"], json!("time"), "{e:?}");
        assert_eq!(e.details["reason_codes"], json!(["mfa_too_old"]), "{e:?}");
        assert_eq!(e.details["gateway"], json!(mfa.gateway_id), "{e:?}");
        assert_eq!(e.details["expires_at"], json!(mfa.expires_at), "{e:?}");

        // The one-second session, ended at its expiry.
        let mut input = input_of(&eng_ssh);
        input.max_session_secs = Some(1);
        f.service()
            .update_policy(&admin(), eng_ssh.id, input)
            .await
            .unwrap();
        let short = f.issue("192.0.2.7", None).await;
        let wait = short.expires_at.duration_since(Timestamp::now());
        tokio::time::sleep(wait.unsigned_abs() + Duration::from_millis(5)).await;
        assert_eq!(f.service().end_due_grants(100).await.unwrap(), 1);
        let e = f.audited("grant.expired", short.grant_id).await;
        assert_eq!(e.details["reason_codes"], json!(["session_ended"]), "{e:?}");
        let stored = f.grant(short.grant_id).await;
        assert_eq!(stored.revoked_at, Some(short.expires_at));
        assert_eq!(
            f.service()
                .grant_revoke_reason(short.grant_id)
                .await
                .unwrap()
                .as_deref(),
            e.details["reason"].as_str()
        );
        // Ended once: nothing is due any more.
        assert_eq!(f.service().end_due_grants(100).await.unwrap(), 0);
        assert_eq!(f.service().next_grant_end().await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn live_revocations_by_posture_are_audited_with_their_cause() {
    for mut f in backends().await {
        let a = admin();
        let (_, eng_ssh) = f.eng().await;
        let profile = f
            .service()
            .create_profile(
                &a,
                PostureProfileInput {
                    name: "firewalled".into(),
                    require_firewall: true,
                    ..serde_json::from_value(json!({"name": "x"})).unwrap()
                },
            )
            .await
            .unwrap();
        let mut input = input_of(&eng_ssh);
        input.conditions.posture_profile_id = Some(profile.id);
        f.service()
            .update_policy(&a, eng_ssh.id, input)
            .await
            .unwrap();
        // Ann's second device, enrolled with a key: a session and a posture signing key.
        let enrollment = f
            .service()
            .create_enrollment_key(
                &a,
                EnrollmentKeyInput {
                    user_id: f.h.user,
                    reusable: false,
                    expires_in_secs: None,
                },
            )
            .await
            .unwrap();
        let device_key = DeviceKey::generate();
        let enrolled = f
            .service()
            .enroll_with_key(&enrollment.secret, "ann-desktop", &device_key.public_key())
            .await
            .unwrap();
        let device = enrolled.device_id;
        let ctx = f
            .service()
            .device_session(device, &enrolled.session)
            .await
            .unwrap()
            .unwrap();
        let report = |firewall, os: &str| PostureReport {
            collected_at: ms_now(),
            os_name: Some("debian".into()),
            os_version: Some(os.into()),
            kernel_version: None,
            disk_encryption: CheckState::Pass,
            firewall,
            secure_boot: CheckState::Unknown,
            screen_lock: CheckState::Unknown,
            processes: Vec::new(),
            client_version: Some("0.1.0".into()),
            hostname: None,
            serial: None,
        };
        let source: IpAddr = "192.0.2.7".parse().unwrap();
        let request = async |f: &Fixture, seq| {
            let signed = device_key.sign_report(device, seq, report(CheckState::Pass, "12"));
            let outcome = f
                .service()
                .client_request_access(&ctx, f.h.resource, &key(), Some(&signed), source)
                .await
                .unwrap();
            let AccessOutcome::Granted(g) = outcome else {
                panic!("denied: {outcome:?}");
            };
            g
        };

        // The device's own report: its firewall went off.
        let g = request(&f, 1).await;
        f.drain();
        let since = Instant::now();
        let off = device_key.sign_report(device, 2, report(CheckState::Fail, "12"));
        f.service().accept_posture(&ctx, &off).await.unwrap();
        let by = format!("device:{device}");
        f.assert_revoked(
            &g,
            since,
            ("posture.reported", &format!("device:{device}"), &by),
            "firewall_off",
        )
        .await;
        assert_eq!(f.grant(g.grant_id).await.device_id, device);

        // The profile now wants a newer OS than the device runs.
        let g = request(&f, 3).await;
        f.drain();
        let since = Instant::now();
        f.service()
            .update_profile(
                &a,
                profile.id,
                PostureProfileInput {
                    name: "firewalled".into(),
                    require_firewall: true,
                    min_os_versions: [("debian".to_owned(), "13".to_owned())].into(),
                    ..serde_json::from_value(json!({"name": "x"})).unwrap()
                },
            )
            .await
            .unwrap();
        f.assert_revoked(
            &g,
            since,
            (
                "posture_profile.updated",
                &format!("posture_profile:{}", profile.id),
                "cli",
            ),
            "os_outdated",
        )
        .await;
    }
}

/// Found by the model: a report stored through `Service::record_posture` (not signed by
/// the device) did not re-evaluate the device's grants (it does since `posture.recorded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn live_recorded_posture_reports_revoke_like_signed_ones() {
    for mut f in backends().await {
        let a = admin();
        let (_, eng_ssh) = f.eng().await;
        let profile = f
            .service()
            .create_profile(
                &a,
                PostureProfileInput {
                    name: "firewalled".into(),
                    require_firewall: true,
                    ..serde_json::from_value(json!({"name": "x"})).unwrap()
                },
            )
            .await
            .unwrap();
        let mut input = input_of(&eng_ssh);
        input.conditions.posture_profile_id = Some(profile.id);
        f.service()
            .update_policy(&a, eng_ssh.id, input)
            .await
            .unwrap();
        let report = |firewall| PostureReport {
            collected_at: ms_now(),
            firewall,
            ..serde_json::from_value(json!({"collected_at": ms_now()})).unwrap()
        };
        f.service()
            .record_posture(f.h.device, &report(CheckState::Pass))
            .await
            .unwrap();
        let g = f.issue("192.0.2.7", None).await;
        f.drain();
        let since = Instant::now();
        f.service()
            .record_posture(f.h.device, &report(CheckState::Fail))
            .await
            .unwrap();
        let device = format!("device:{}", f.h.device);
        f.assert_revoked(
            &g,
            since,
            ("posture.recorded", &device, "system"),
            "firewall_off",
        )
        .await;
    }
}

/// Found while writing the model, and not fixed here: a deny policy whose time window opens
/// while a grant is live does not end the grant. The decision bounds a grant's expiry by the
/// limits of the allow policy only, and nothing re-evaluates when the window opens, so the
/// grant stays live against a decision that now denies. Waits for the next whole minute
/// (up to a minute), hence ignored; run it with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known gap: a deny policy's window opening does not bound or end live grants"]
pub(super) async fn live_a_deny_window_that_opens_ends_the_grant() {
    let f = fixture(None).await;
    let a = admin();
    let (eng, _) = f.eng().await;
    // Denied from the next whole minute to the end of the day (UTC).
    let now = ms_now();
    let local = now.to_zoned(TimeZone::UTC);
    let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
    assert!(
        minute < 1438,
        "too close to midnight for this test: run it again"
    );
    let opens = now + secs(60 - i64::from(local.second())) - millis(i64::from(local.millisecond()));
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [local.weekday().to_monday_zero_offset() as usize];
    let window: TimeWindow = serde_json::from_value(json!({
        "days": [day],
        "start": format!("{:02}:{:02}", (minute + 1) / 60, (minute + 1) % 60),
        "end": "24:00",
    }))
    .unwrap();
    f.service()
        .create_policy(
            &a,
            PolicyInput {
                name: "after-hours".into(),
                group_id: eng,
                resource_id: f.h.resource,
                action: PolicyAction::Deny,
                conditions: ConditionsInput {
                    time_windows: vec![window],
                    ..Default::default()
                },
                max_session_secs: None,
                disabled: false,
            },
        )
        .await
        .unwrap();
    let g = f.issue("192.0.2.7", None).await;
    tokio::time::sleep(
        opens.duration_since(Timestamp::now()).unsigned_abs() + Duration::from_millis(200),
    )
    .await;
    f.service().end_due_grants(100).await.unwrap();
    // The decision now denies ...
    let decision = f
        .service()
        .decide(
            &a,
            DecisionRequest {
                user_id: f.h.user,
                device_id: f.h.device,
                resource_id: f.h.resource,
                source: "192.0.2.7".into(),
                identity_provider: None,
                last_mfa_at: None,
            },
        )
        .await
        .unwrap();
    assert!(!decision.is_allow(), "{decision:?}");
    // ... so the grant must not be live.
    assert!(
        !f.is_live(g.grant_id).await,
        "granted until {} across the deny window opening at {opens}",
        g.expires_at
    );
}
