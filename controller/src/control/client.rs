//! One client daemon's control connection (ALPN `postern-client/1`); see
//! [`proto::client`] for the protocol. Access requests run in their own tasks, so a request
//! waiting for a gateway's acknowledgement never delays a revocation push.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use model::GrantId;
use proto::client::{ClientGrant, ClientMessage, DenyReason, RefusalCode, ServerMessage, Welcome};
use rand::RngCore;
use tokio::sync::{broadcast, mpsc};

use super::describe;
use super::{FrameReader, FrameWriter, HANDSHAKE_TIMEOUT, ReadFailure};
use crate::app::{AccessOutcome, ClientContext, Service, ServiceError, SessionProblem};
use crate::bus::ControlEvent;

/// How often a connection re-checks its session and the user's resources.
const RECHECK: Duration = Duration::from_secs(10);

fn refusal(problem: SessionProblem) -> (RefusalCode, &'static str) {
    match problem {
        SessionProblem::Ended => (
            RefusalCode::SessionEnded,
            "the device session is unknown, ended or expired: run `postern login`",
        ),
        SessionProblem::DeviceDisabled => (
            RefusalCode::DeviceDisabled,
            "this device is disabled: ask an admin",
        ),
        SessionProblem::UserDisabled => (
            RefusalCode::UserDisabled,
            "your account is disabled: ask an admin",
        ),
    }
}

async fn refuse(writer: &mut FrameWriter, code: RefusalCode, reason: &str) {
    let msg = ServerMessage::Refused {
        code,
        reason: reason.to_owned(),
    };
    if writer.write(&msg).await.is_ok() {
        writer.finish().await;
    }
}

/// Hello → Challenge → Proof: the session's context, or the refusal to send.
async fn handshake(
    service: &Service,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Result<ClientContext, (RefusalCode, String)> {
    let protocol = |m: &str| (RefusalCode::Protocol, m.to_owned());
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next::<ClientMessage>())
        .await
        .map_err(|_| protocol("no hello in time"))?
        .map_err(|_| protocol("expected a hello"))?;
    let ClientMessage::Hello {
        device_id, session, ..
    } = hello
    else {
        return Err(protocol("the first message must be a hello"));
    };
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    writer
        .write(&ServerMessage::Challenge {
            nonce: STANDARD.encode(nonce),
        })
        .await
        .map_err(|_| protocol("could not send the challenge"))?;
    let proof = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next::<ClientMessage>())
        .await
        .map_err(|_| protocol("no proof in time"))?
        .map_err(|_| protocol("expected a proof"))?;
    let ClientMessage::Proof { signature } = proof else {
        return Err(protocol("the second message must be a proof"));
    };
    let ctx = match service.device_session(device_id, &session).await {
        Ok(Ok(ctx)) => ctx,
        Ok(Err(problem)) => {
            let (code, reason) = refusal(problem);
            return Err((code, reason.to_owned()));
        }
        Err(e) => {
            tracing::error!(error = %e, "checking a device session");
            return Err(protocol(
                "the controller could not check the session; try again",
            ));
        }
    };
    proto::device::verify_challenge(&ctx.device.public_key, device_id, &nonce, &signature)
        .map_err(|e| {
            (
                RefusalCode::BadProof,
                format!("the device key proof failed: {e}"),
            )
        })?;
    Ok(ctx)
}

pub(super) async fn serve_client(service: Service, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Ok(Ok((send, recv))) = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await
    else {
        conn.close(quinn::VarInt::from_u32(1), b"no stream");
        return;
    };
    let mut reader = FrameReader::new(recv);
    let mut writer = FrameWriter {
        send,
        buf: Vec::new(),
    };
    // Subscribed before the session check, so nothing that ends it can slip in between.
    let events = service.subscribe();
    let mut ctx = match handshake(&service, &mut reader, &mut writer).await {
        Ok(ctx) => ctx,
        Err((code, reason)) => {
            tracing::info!(%remote, ?code, %reason, "client refused");
            refuse(&mut writer, code, &reason).await;
            conn.close(quinn::VarInt::from_u32(2), b"refused");
            return;
        }
    };
    let welcome = match welcome(&service, &ctx).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "preparing a client's welcome");
            refuse(
                &mut writer,
                RefusalCode::Protocol,
                "the controller could not prepare the connection; try again",
            )
            .await;
            conn.close(quinn::VarInt::from_u32(2), b"refused");
            return;
        }
    };
    let resources = welcome.resources.clone();
    if writer
        .write(&ServerMessage::Welcome(welcome))
        .await
        .is_err()
    {
        return;
    }
    let device = ctx.device.id;
    let span = tracing::info_span!("client", device = %device, user = %ctx.user.id);
    let _enter = span.enter();
    tracing::info!(%remote, "client connected");
    drop(_enter);
    let (messages_tx, messages) = mpsc::channel(64);
    let read_task = tokio::spawn(async move {
        loop {
            let msg = reader.next::<ClientMessage>().await;
            let end = msg.is_err();
            if messages_tx.send(msg).await.is_err() || end {
                break;
            }
        }
    });
    let mut link = ClientLink {
        service: service.clone(),
        remote,
        writer,
        issued: HashSet::new(),
        resources,
        answers: mpsc::channel(64),
    };
    let why = tracing::Instrument::instrument(link.run(&mut ctx, events, messages), span).await;
    read_task.abort();
    conn.close(quinn::VarInt::from_u32(0), b"closed");
    tracing::info!(device = %device, reason = %why, "client disconnected");
}

async fn welcome(service: &Service, ctx: &ClientContext) -> Result<Welcome, ServiceError> {
    Ok(Welcome {
        user_id: ctx.user.id,
        user_name: ctx.user.email.clone(),
        device_id: ctx.device.id,
        device_name: ctx.device.name.clone(),
        tunnel_address: service.client_tunnel_address(ctx).await?,
        resources: service.client_resources(ctx.user.id).await?,
        session_expires_at: ctx.expires_at(),
        posture_interval_secs: service.posture_interval().as_secs(),
        posture_processes: service.posture_processes().await?,
    })
}

/// An answer from a task, with the grant it issued (to remember for revocations).
type Answer = (ServerMessage, Option<GrantId>);

struct ClientLink {
    service: Service,
    remote: SocketAddr,
    writer: FrameWriter,
    /// Grants handed out on this connection (and still live as far as it knows).
    issued: HashSet<GrantId>,
    resources: Vec<proto::client::ClientResource>,
    answers: (mpsc::Sender<Answer>, mpsc::Receiver<Answer>),
}

impl ClientLink {
    async fn run(
        &mut self,
        ctx: &mut ClientContext,
        mut events: broadcast::Receiver<ControlEvent>,
        mut messages: mpsc::Receiver<Result<ClientMessage, ReadFailure>>,
    ) -> String {
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            let step: Result<(), String> = tokio::select! {
                biased;
                event = events.recv() => match event {
                    Ok(ControlEvent::GrantRevoked(g)) if g.device_id == ctx.device.id => {
                        self.issued.remove(&g.id);
                        let reason = self.revoke_reason(g.id).await;
                        self.send(&ServerMessage::Revoked { grant_id: g.id, reason }).await
                    }
                    Ok(ControlEvent::SessionsEnded { device, user, reason })
                        if device.is_none_or(|d| d == ctx.device.id)
                            && user.is_none_or(|u| u == ctx.user.id) =>
                    {
                        let code = if reason.starts_with("device") {
                            RefusalCode::DeviceDisabled
                        } else if reason.starts_with("user") {
                            RefusalCode::UserDisabled
                        } else {
                            RefusalCode::SessionEnded
                        };
                        refuse(&mut self.writer, code, &format!("the session ended: {reason}")).await;
                        Err(format!("session ended: {reason}"))
                    }
                    Ok(ControlEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.resync(ctx).await
                    }
                    Ok(_) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => Err("the controller is stopping".into()),
                },
                Some((answer, grant)) = self.answers.1.recv() => {
                    if let Some(g) = grant {
                        self.issued.insert(g);
                    }
                    self.send(&answer).await
                }
                msg = messages.recv() => match msg {
                    Some(Ok(m)) => self.handle(ctx, m).await,
                    Some(Err(ReadFailure::Malformed)) => {
                        refuse(&mut self.writer, RefusalCode::Protocol, "malformed message").await;
                        Err("malformed message".into())
                    }
                    Some(Err(ReadFailure::Closed)) | None => Err("the client closed the connection".into()),
                },
                _ = recheck.tick() => self.recheck(ctx).await,
            };
            if let Err(why) = step {
                return why;
            }
        }
    }

    async fn send(&mut self, msg: &ServerMessage) -> Result<(), String> {
        self.writer
            .write(msg)
            .await
            .map_err(|e| format!("writing to the client: {e:#}"))
    }

    async fn revoke_reason(&self, grant: GrantId) -> String {
        self.service
            .grant_revoke_reason(grant)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "revoked".into())
    }

    /// After missing events: tell the client about every grant of this connection that is
    /// no longer live.
    async fn resync(&mut self, ctx: &ClientContext) -> Result<(), String> {
        let live: HashSet<GrantId> = self
            .service
            .live_grant_ids(ctx.device.id)
            .await
            .map_err(|e| describe(&e))?;
        let gone: Vec<GrantId> = self.issued.difference(&live).copied().collect();
        for id in gone {
            self.issued.remove(&id);
            let reason = self.revoke_reason(id).await;
            self.send(&ServerMessage::Revoked {
                grant_id: id,
                reason,
            })
            .await?;
        }
        Ok(())
    }

    /// The session may have expired or the user's resources changed.
    async fn recheck(&mut self, ctx: &mut ClientContext) -> Result<(), String> {
        match self.service.device_session_by_id(ctx).await {
            Ok(Ok(())) => {}
            Ok(Err(problem)) => {
                let (code, reason) = refusal(problem);
                refuse(&mut self.writer, code, reason).await;
                return Err(reason.to_owned());
            }
            Err(e) => tracing::warn!(error = %e, "re-checking a device session"),
        }
        match self.service.client_resources(ctx.user.id).await {
            Ok(resources) if resources != self.resources => {
                self.resources = resources.clone();
                self.send(&ServerMessage::Resources { resources }).await
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "listing a client's resources");
                Ok(())
            }
        }
    }

    async fn handle(&mut self, ctx: &mut ClientContext, msg: ClientMessage) -> Result<(), String> {
        match msg {
            ClientMessage::RequestAccess {
                request,
                resource_id,
                public_key,
                posture,
            } => {
                let service = self.service.clone();
                let ctx = ctx.clone();
                let source = self.remote.ip();
                let answers = self.answers.0.clone();
                tokio::spawn(async move {
                    let outcome = service
                        .client_request_access(
                            &ctx,
                            resource_id,
                            &public_key,
                            posture.as_ref(),
                            source,
                        )
                        .await;
                    let answer = match outcome {
                        Ok(AccessOutcome::Granted(g)) => {
                            let id = g.grant_id;
                            (
                                ServerMessage::Granted {
                                    request,
                                    grant: ClientGrant {
                                        grant_id: g.grant_id,
                                        resource_id,
                                        gateway_id: g.gateway_id,
                                        gateway_public_key: g.gateway_public_key,
                                        gateway_endpoint: g.gateway_endpoint,
                                        preshared_key: g.preshared_key,
                                        tunnel_address: g.tunnel_address,
                                        addresses: g.addresses,
                                        ports: g.ports,
                                        expires_at: g.expires_at,
                                    },
                                },
                                Some(id),
                            )
                        }
                        Ok(AccessOutcome::Denied { reasons }) => (
                            ServerMessage::Denied {
                                request,
                                reasons: reasons
                                    .into_iter()
                                    .map(|r| DenyReason {
                                        code: r.code.as_str().to_owned(),
                                        message: r.message,
                                    })
                                    .collect(),
                            },
                            None,
                        ),
                        Err(e) => (
                            ServerMessage::Failed {
                                request,
                                message: describe(&e),
                            },
                            None,
                        ),
                    };
                    let _ = answers.send(answer).await;
                });
                Ok(())
            }
            ClientMessage::Release { grant_id } => {
                self.issued.remove(&grant_id);
                if let Err(e) = self.service.release_grant(ctx, grant_id).await {
                    tracing::warn!(grant = %grant_id, error = %e, "releasing a grant");
                }
                Ok(())
            }
            ClientMessage::Posture { report } => {
                let seq = report.seq;
                let error = match self.service.accept_posture(ctx, &report).await {
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "posture report refused");
                        Some(describe(&e))
                    }
                };
                self.send(&ServerMessage::PostureAck { seq, error }).await
            }
            ClientMessage::RenewSession { request } => {
                match self.service.renew_device_session(ctx).await {
                    Ok((session, expires_at)) => {
                        self.send(&ServerMessage::SessionRenewed {
                            request,
                            session,
                            expires_at,
                        })
                        .await
                    }
                    Err(e) => {
                        refuse(&mut self.writer, RefusalCode::SessionEnded, &describe(&e)).await;
                        Err(format!("renewal failed: {e}"))
                    }
                }
            }
            ClientMessage::SignOut => {
                if let Err(e) = self.service.sign_out_device(ctx).await {
                    tracing::error!(error = %e, "signing a device out");
                }
                refuse(&mut self.writer, RefusalCode::SessionEnded, "signed out").await;
                Err("signed out".into())
            }
            ClientMessage::Hello { .. } | ClientMessage::Proof { .. } => {
                refuse(
                    &mut self.writer,
                    RefusalCode::Protocol,
                    "unexpected message",
                )
                .await;
                Err("protocol violation".into())
            }
        }
    }
}
