//! Users and groups, and who is a member of what.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use jiff::Timestamp;
use model::{GroupId, Role, User, UserId};

use super::access::{device_row, postures};
use super::names::Names;
use super::names::confirm_page;
use super::policies::policy_rows;
use super::{
    Ctx, Form, ListQuery, WebError, WebResult, done, form_errors, form_page, matches, parse_id,
};
use crate::app::PasswordInput;
use crate::app::{GroupInput, MemberInput, UserInput, UserPatch};
use crate::http::AppState;

fn user_row(u: &User, groups: String, devices: usize) -> ui::UserRow {
    ui::UserRow {
        id: u.id.to_string(),
        name: u.name.clone(),
        email: u.email.clone(),
        role: u.role.as_str().to_owned(),
        state: if u.disabled {
            ui::Pill::new("disabled", "bad")
        } else {
            ui::Pill::new("active", "ok")
        },
        disabled: u.disabled,
        groups,
        devices,
    }
}

/// Group names per user.
async fn memberships(s: &AppState, ctx: &Ctx) -> Result<HashMap<UserId, Vec<String>>, WebError> {
    let mut out: HashMap<UserId, Vec<String>> = HashMap::new();
    for g in s.service.list_groups(&ctx.actor).await? {
        for u in s.service.group_members(&ctx.actor, g.id).await? {
            out.entry(u.id).or_default().push(g.name.clone());
        }
    }
    Ok(out)
}

fn role(form: &Form) -> Result<Option<Role>, ui::FormErrors> {
    match form.get("role") {
        "" => Ok(None),
        r => Role::parse(r)
            .map(Some)
            .ok_or_else(|| ui::FormErrors::field("role", "choose admin, auditor or user")),
    }
}

// ---------------------------------------------------------------- users

async fn users_page(
    s: &AppState,
    ctx: &Ctx,
    q: &ListQuery,
    values: ui::FormValues,
    errors: ui::FormErrors,
) -> WebResult {
    let groups = memberships(s, ctx).await?;
    let devices = s.service.list_devices(&ctx.actor, None).await?;
    let rows: Vec<ui::UserRow> = s
        .service
        .list_users(&ctx.actor)
        .await?
        .iter()
        .map(|u| {
            user_row(
                u,
                groups.get(&u.id).map(|g| g.join(", ")).unwrap_or_default(),
                devices.iter().filter(|d| d.user_id == u.id).count(),
            )
        })
        .filter(|u| matches(&q.q, &[&u.name, &u.email, &u.role, &u.groups]))
        .collect();
    let (rows, pager) = q.paginate(rows);
    let p = ui::UsersPage {
        chrome: ctx.chrome("Users", "users"),
        rows,
        pager,
        q: q.q.clone(),
        values,
        errors: errors.clone(),
    };
    Ok(form_page(&p, &errors))
}

/// The users.
pub(crate) async fn users(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> WebResult {
    let mut values = ui::FormValues::default();
    values.set("role", "user");
    users_page(&s, &ctx, &q, values, ui::FormErrors::none()).await
}

/// Creates a user, and sets their local password when one is given.
pub(crate) async fn create_user(State(s): State<AppState>, form: Form) -> WebResult {
    let a = &form.ctx.actor;
    let list = ListQuery::default();
    let again = |errors| users_page(&s, &form.ctx, &list, form.values(), errors);
    let role = match role(&form) {
        Ok(r) => r,
        Err(e) => return again(e).await,
    };
    let password = form.get("password").to_owned();
    // The password rule is checked before the user exists, so a bad password leaves nothing
    // half made; the rule itself is the service's (it answers for field `password`).
    if !password.is_empty() && password.chars().count() < crate::app::MIN_PASSWORD_CHARS {
        return again(ui::FormErrors::field(
            "password",
            format!(
                "must be at least {} characters",
                crate::app::MIN_PASSWORD_CHARS
            ),
        ))
        .await;
    }
    let input = UserInput {
        email: form.get("email").to_owned(),
        name: form.get("name").to_owned(),
        role,
    };
    let user = match s.service.create_user(a, input).await {
        Ok(u) => u,
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            return again(errors).await;
        }
    };
    if !password.is_empty()
        && let Err(e) = s
            .service
            .set_password(a, user.id, PasswordInput { password })
            .await
    {
        let errors = form_errors(e, &form.ctx)?;
        return Ok(done(
            &format!("/users/{}", user.id),
            &format!(
                "User {} created, but the password was not set: {}",
                user.email,
                errors.fields.first().map_or("", |(_, m)| m.as_str())
            ),
        ));
    }
    Ok(done(
        &format!("/users/{}", user.id),
        &format!("User {} created. Add them to a group next.", user.email),
    ))
}

async fn user_page(
    s: &AppState,
    ctx: &Ctx,
    id: UserId,
    values: Option<ui::FormValues>,
    errors: ui::FormErrors,
) -> WebResult {
    let now = Timestamp::now();
    let u = s
        .service
        .get_user(&ctx.actor, id)
        .await
        .map_err(|e| WebError::from(e).within(ctx))?;
    let devices = s.service.list_devices(&ctx.actor, Some(id)).await?;
    let totp = s.service.has_totp(&ctx.actor, id).await?;
    let mut groups = Vec::new();
    for g in s.service.list_groups(&ctx.actor).await? {
        if s.service
            .group_members(&ctx.actor, g.id)
            .await?
            .iter()
            .any(|m| m.id == id)
        {
            groups.push(ui::Link {
                label: g.name,
                href: format!("/groups/{}", g.id),
            });
        }
    }
    let postures = postures(s, ctx, &devices).await?;
    let values = values.unwrap_or_else(|| {
        let mut v = ui::FormValues::default();
        v.set("name", u.name.clone());
        v.set("email", u.email.clone());
        v.set("role", u.role.as_str());
        v
    });
    let group_names = groups
        .iter()
        .map(|g| g.label.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let p = ui::UserPage {
        chrome: ctx.chrome(&u.name, "users"),
        user: user_row(&u, group_names, devices.len()),
        groups,
        devices: devices
            .iter()
            .map(|d| device_row(d, &u.name, postures.get(&d.id), now))
            .collect(),
        totp,
        values,
        errors: errors.clone(),
    };
    Ok(form_page(&p, &errors))
}

/// One user.
pub(crate) async fn user(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> WebResult {
    let id = parse_id(&id, "user").map_err(|e| e.within(&ctx))?;
    user_page(&s, &ctx, id, None, ui::FormErrors::none()).await
}

/// Changes a user's name, e-mail address or role.
pub(crate) async fn update_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: UserId = parse_id(&id, "user")?;
    let role = match role(&form) {
        Ok(r) => r,
        Err(e) => return user_page(&s, &form.ctx, id, Some(form.values()), e).await,
    };
    let patch = UserPatch {
        email: Some(form.get("email").to_owned()),
        name: Some(form.get("name").to_owned()),
        role,
        disabled: None,
    };
    match s.service.update_user(&form.ctx.actor, id, patch).await {
        Ok(u) => Ok(done(
            &format!("/users/{id}"),
            &format!("User {} saved.", u.email),
        )),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            user_page(&s, &form.ctx, id, Some(form.values()), errors).await
        }
    }
}

/// Sets a password, disables, enables, resets TOTP of or deletes a user.
pub(crate) async fn user_action(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> WebResult {
    let id: UserId = parse_id(&id, "user")?;
    let a = &form.ctx.actor;
    let back = format!("/users/{id}");
    let (question, detail, button) = match action.as_str() {
        "disable" => (
            "Disable this user?",
            "Their sessions end and every grant of theirs is revoked at once.",
            "Disable user",
        ),
        "delete" => (
            "Delete this user?",
            "Their devices and memberships go too; their grants are revoked.",
            "Delete user",
        ),
        "totp-reset" => (
            "Reset this user's TOTP?",
            "Their authenticator and recovery codes stop working; they can set up a new one.",
            "Reset TOTP",
        ),
        _ => ("", "", ""),
    };
    if !question.is_empty() && !form.confirmed() {
        return Ok(confirm_page(
            &form,
            question,
            detail,
            format!("/users/{id}/{action}"),
            button,
            back,
        ));
    }
    let result = match action.as_str() {
        "password" => s
            .service
            .set_password(
                a,
                id,
                PasswordInput {
                    password: form.get("password").to_owned(),
                },
            )
            .await
            .map(|()| "Password set; their web sessions ended."),
        "disable" | "enable" => s
            .service
            .update_user(
                a,
                id,
                UserPatch {
                    disabled: Some(action == "disable"),
                    ..Default::default()
                },
            )
            .await
            .map(|_| {
                if action == "disable" {
                    "User disabled; their grants were revoked."
                } else {
                    "User enabled."
                }
            }),
        "totp-reset" => s.service.reset_totp(a, id).await.map(|()| "TOTP reset."),
        "delete" => {
            return match s.service.delete_user(a, id).await {
                Ok(()) => Ok(done("/users", "User deleted.")),
                Err(e) => {
                    let errors = form_errors(e, &form.ctx)?;
                    user_page(&s, &form.ctx, id, None, errors).await
                }
            };
        }
        _ => return Err(WebError::not_found("action").within(&form.ctx)),
    };
    match result {
        Ok(notice) => Ok(done(&back, notice)),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            user_page(&s, &form.ctx, id, None, errors).await
        }
    }
}

// ---------------------------------------------------------------- groups

async fn groups_page(
    s: &AppState,
    ctx: &Ctx,
    q: &ListQuery,
    values: ui::FormValues,
    errors: ui::FormErrors,
) -> WebResult {
    let policies = s.service.list_policies(&ctx.actor).await?;
    let mut rows = Vec::new();
    for g in s.service.list_groups(&ctx.actor).await? {
        if !matches(&q.q, &[&g.name, &g.description]) {
            continue;
        }
        rows.push(ui::GroupRow {
            id: g.id.to_string(),
            members: s.service.group_members(&ctx.actor, g.id).await?.len(),
            policies: policies.iter().filter(|p| p.group_id == g.id).count(),
            name: g.name,
            description: g.description,
        });
    }
    let (rows, pager) = q.paginate(rows);
    let p = ui::GroupsPage {
        chrome: ctx.chrome("Groups", "groups"),
        rows,
        pager,
        q: q.q.clone(),
        values,
        errors: errors.clone(),
    };
    Ok(form_page(&p, &errors))
}

/// The groups.
pub(crate) async fn groups(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> WebResult {
    groups_page(
        &s,
        &ctx,
        &q,
        ui::FormValues::default(),
        ui::FormErrors::none(),
    )
    .await
}

/// Creates a group.
pub(crate) async fn create_group(State(s): State<AppState>, form: Form) -> WebResult {
    let input = GroupInput {
        name: form.get("name").to_owned(),
        description: form.get("description").to_owned(),
    };
    match s.service.create_group(&form.ctx.actor, input).await {
        Ok(g) => Ok(done(
            &format!("/groups/{}", g.id),
            &format!("Group {} created. Add its members.", g.name),
        )),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            groups_page(&s, &form.ctx, &ListQuery::default(), form.values(), errors).await
        }
    }
}

async fn group_page(
    s: &AppState,
    ctx: &Ctx,
    id: GroupId,
    values: Option<ui::FormValues>,
    errors: ui::FormErrors,
) -> WebResult {
    let g = s
        .service
        .get_group(&ctx.actor, id)
        .await
        .map_err(|e| WebError::from(e).within(ctx))?;
    let members = s.service.group_members(&ctx.actor, id).await?;
    let names = Names::load(s, ctx).await?;
    let mut candidates: Vec<ui::Opt> = names
        .users
        .values()
        .filter(|u| !members.iter().any(|m| m.id == u.id))
        .map(|u| ui::Opt::new(u.id.to_string(), format!("{} <{}>", u.name, u.email)))
        .collect();
    candidates.sort_by_key(|a| a.label.to_lowercase());
    let policies: Vec<model::Policy> = s
        .service
        .list_policies(&ctx.actor)
        .await?
        .into_iter()
        .filter(|p| p.group_id == id)
        .collect();
    let values = values.unwrap_or_else(|| {
        let mut v = ui::FormValues::default();
        v.set("name", g.name.clone());
        v.set("description", g.description.clone());
        v
    });
    let p = ui::GroupPage {
        chrome: ctx.chrome(&g.name, "groups"),
        group: ui::GroupRow {
            id: g.id.to_string(),
            name: g.name.clone(),
            description: g.description.clone(),
            members: members.len(),
            policies: policies.len(),
        },
        members: members
            .iter()
            .map(|u| user_row(u, String::new(), 0))
            .collect(),
        candidates,
        policies: policy_rows(&policies, &names),
        values,
        errors: errors.clone(),
    };
    Ok(form_page(&p, &errors))
}

/// One group.
pub(crate) async fn group(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> WebResult {
    let id = parse_id(&id, "group").map_err(|e| e.within(&ctx))?;
    group_page(&s, &ctx, id, None, ui::FormErrors::none()).await
}

/// Renames or re-describes a group.
pub(crate) async fn update_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: GroupId = parse_id(&id, "group")?;
    let input = GroupInput {
        name: form.get("name").to_owned(),
        description: form.get("description").to_owned(),
    };
    match s.service.update_group(&form.ctx.actor, id, input).await {
        Ok(g) => Ok(done(
            &format!("/groups/{id}"),
            &format!("Group {} saved.", g.name),
        )),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            group_page(&s, &form.ctx, id, Some(form.values()), errors).await
        }
    }
}

/// Deletes a group (after confirmation).
pub(crate) async fn delete_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: GroupId = parse_id(&id, "group")?;
    if !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Delete this group?",
            "No policy may name it.",
            format!("/groups/{id}/delete"),
            "Delete group",
            format!("/groups/{id}"),
        ));
    }
    match s.service.delete_group(&form.ctx.actor, id).await {
        Ok(()) => Ok(done("/groups", "Group deleted.")),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            group_page(&s, &form.ctx, id, None, errors).await
        }
    }
}

/// Adds a member.
pub(crate) async fn add_member(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: GroupId = parse_id(&id, "group")?;
    let Ok(user_id) = form.get("user_id").parse() else {
        return group_page(
            &s,
            &form.ctx,
            id,
            None,
            ui::FormErrors::field("user_id", "choose a user"),
        )
        .await;
    };
    match s
        .service
        .add_member(&form.ctx.actor, id, MemberInput { user_id })
        .await
    {
        Ok(()) => Ok(done(&format!("/groups/{id}"), "Member added.")),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            group_page(&s, &form.ctx, id, None, errors).await
        }
    }
}

/// Removes a member (after confirmation).
pub(crate) async fn remove_member(
    State(s): State<AppState>,
    Path((id, user)): Path<(String, String)>,
    form: Form,
) -> WebResult {
    let id: GroupId = parse_id(&id, "group")?;
    let user: UserId = parse_id(&user, "user")?;
    if !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Remove this member?",
            "Grants they hold through this group's policies are revoked.",
            format!("/groups/{id}/members/{user}/remove"),
            "Remove member",
            format!("/groups/{id}"),
        ));
    }
    s.service
        .remove_member(&form.ctx.actor, id, user)
        .await
        .map_err(|e| WebError::from(e).within(&form.ctx))?;
    Ok(done(&format!("/groups/{id}"), "Member removed."))
}
