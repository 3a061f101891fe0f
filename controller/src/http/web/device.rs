//! `/device`: a signed-in person approves (or denies) a Postern client's sign-in, after
//! checking the device name and key fingerprint the client showed them.

use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::{Ctx, Form, WebError, WebResult, form_errors, page};
use crate::app::ServiceError;
use crate::http::AppState;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeviceQuery {
    #[serde(default)]
    code: String,
}

fn approve_page(ctx: &Ctx, code: &str) -> ui::DeviceApprovePage {
    ui::DeviceApprovePage {
        chrome: ctx.chrome("Approve a device", "my"),
        user_code: code.to_owned(),
        device_name: None,
        fingerprint: String::new(),
        source: String::new(),
        outcome: None,
        errors: ui::FormErrors::none(),
    }
}

/// The approval page: asks for the code, or shows the waiting sign-in it names.
async fn show_code(s: &AppState, ctx: &Ctx, code: &str) -> WebResult {
    let code = code.trim();
    let mut p = approve_page(ctx, code);
    if code.is_empty() {
        return Ok(page(&p));
    }
    match s.service.device_authorization(&ctx.me, code).await {
        Ok(pending) if pending.state == "waiting" => {
            p.user_code = pending.user_code;
            p.device_name = Some(pending.name);
            p.fingerprint = pending.fingerprint;
            p.source = pending.source.unwrap_or_else(|| "unknown".into());
        }
        Ok(pending) => {
            p.errors = ui::FormErrors::field(
                "user_code",
                match pending.state.as_str() {
                    "expired" => "this sign-in expired: run `postern login` again",
                    _ => "this sign-in was already answered",
                },
            );
        }
        Err(e) => p.errors = form_errors(e, ctx)?,
    }
    Ok(page(&p))
}

/// `GET /device?code=…`.
pub(crate) async fn show(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<DeviceQuery>,
) -> WebResult {
    show_code(&s, &ctx, &q.code).await
}

/// Approves or denies the sign-in.
pub(crate) async fn decide(
    State(s): State<AppState>,
    Path(decision): Path<String>,
    form: Form,
) -> WebResult {
    let approve = match decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return Err(WebError::not_found("decision").within(&form.ctx)),
    };
    let code = form.get("user_code").to_owned();
    match s
        .service
        .approve_device_authorization(&form.ctx.me, &code, approve)
        .await
    {
        Ok(()) => {
            let mut p = approve_page(&form.ctx, &code);
            p.outcome = Some(if approve {
                "Device approved. Your Postern client signs in now; you can close this page.".into()
            } else {
                "Sign-in denied. The client was told no.".into()
            });
            Ok(page(&p))
        }
        Err(ServiceError::Invalid(f)) => {
            let mut p = approve_page(&form.ctx, &code);
            p.errors = ui::FormErrors::field(f.field, f.message);
            Ok(super::invalid_page(&p))
        }
        Err(e) => Err(WebError::from(e).within(&form.ctx)),
    }
}
