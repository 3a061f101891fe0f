//! One handler per endpoint; each is a thin call into the services.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use model::{
    Device, DeviceId, EnrollmentKeyId, Gateway, GatewayId, Grant, GrantId, Group, GroupId, Policy,
    PolicyId, PostureProfile, PostureProfileId, Resource, ResourceId, Site, SiteId, TokenId, User,
    UserId,
};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Body, BodyOrDefault, Id, Query, Session};
use super::reply::{
    cleared_session_cookie, created, no_content, no_store, session_cookie_header, with_cookie,
};
use super::{ApiError, AppState, Auth, ErrorBody};
use crate::app::{AccessGrant, AccessOutcome, AccessRequest};
use crate::app::{ApiToken, AuditEvent, AuditFilter, EnrollmentKey, GatewayToken, GrantFilter};
use crate::app::{
    DecisionRequest, DevicePatch, EnrollmentKeyInput, GatewayPatch, GatewayTokenInput, GroupInput,
    Issued, LoginInput, Me, MemberInput, PasswordChange, PasswordInput, PolicyInput,
    PostureProfileInput, RecoveryCodes, ResourceInput, SetupInput, SetupResult, SiteInput,
    TokenInput, TotpCode, TotpEnrollment, UserInput, UserPatch, now,
};

type Res<T> = Result<Json<T>, ApiError>;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(setup))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_sites, create_site))
        .routes(routes!(get_site, update_site, delete_site))
        .routes(routes!(list_gateway_tokens, create_gateway_token))
        .routes(routes!(list_gateways))
        .routes(routes!(get_gateway, update_gateway, delete_gateway))
        .routes(routes!(list_resources, create_resource))
        .routes(routes!(get_resource, update_resource, delete_resource))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(list_user_identities, link_identity))
        .routes(routes!(unlink_identity))
        .routes(routes!(set_password))
        .routes(routes!(reset_totp))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(start_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(new_recovery_codes))
        .routes(routes!(list_identity_providers, create_identity_provider))
        .routes(routes!(delete_identity_provider))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(list_members, add_member))
        .routes(routes!(remove_member))
        .routes(routes!(list_devices))
        .routes(routes!(get_device, update_device, delete_device))
        .routes(routes!(list_enrollment_keys, create_enrollment_key))
        .routes(routes!(revoke_enrollment_key))
        .routes(routes!(list_profiles, create_profile))
        .routes(routes!(get_profile, update_profile, delete_profile))
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, update_policy, delete_policy))
        .routes(routes!(decide))
        .routes(routes!(request_access))
        .routes(routes!(list_grants))
        .routes(routes!(revoke_grant))
        .routes(routes!(audit_log))
}

// ---------------------------------------------------------------- setup and tokens

/// Creates the first admin with the setup code the controller printed at its first start.
#[utoipa::path(post, path = "/setup", tag = "setup", security(()), request_body = SetupInput,
    responses((status = 201, body = SetupResult), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn setup(
    State(s): State<AppState>,
    Body(input): Body<SetupInput>,
) -> Result<Response, ApiError> {
    Ok(created(s.service.complete_setup(input).await?))
}

/// Lists API tokens (secrets are never shown again).
#[utoipa::path(get, path = "/tokens", tag = "tokens", responses((status = 200, body = Vec<ApiToken>)))]
async fn list_tokens(State(s): State<AppState>, Auth(a): Auth) -> Res<Vec<ApiToken>> {
    Ok(Json(s.service.list_tokens(&a).await?))
}

/// Creates an API token; the response carries its secret once.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = TokenInput,
    responses((status = 201, body = Issued<ApiToken>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_token(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<TokenInput>,
) -> Result<Response, ApiError> {
    Ok(created(s.service.create_token(&a, input).await?))
}

/// Revokes an API token.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<TokenId>,
) -> Result<Response, ApiError> {
    s.service.revoke_token(&a, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- sites and gateways

/// Lists sites.
#[utoipa::path(get, path = "/sites", tag = "sites", responses((status = 200, body = Vec<Site>)))]
async fn list_sites(State(s): State<AppState>, Auth(a): Auth) -> Res<Vec<Site>> {
    Ok(Json(s.service.list_sites(&a).await?))
}

/// Creates a site.
#[utoipa::path(post, path = "/sites", tag = "sites", request_body = SiteInput,
    responses((status = 201, body = Site), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_site(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<SiteInput>,
) -> Result<Response, ApiError> {
    Ok(created(s.service.create_site(&a, input).await?))
}

/// One site.
#[utoipa::path(get, path = "/sites/{id}", tag = "sites", params(("id" = String, Path)), responses((status = 200, body = Site), (status = 404, body = ErrorBody)))]
async fn get_site(State(s): State<AppState>, Auth(a): Auth, Id(id): Id<SiteId>) -> Res<Site> {
    Ok(Json(s.service.get_site(&a, id).await?))
}

/// Renames a site.
#[utoipa::path(put, path = "/sites/{id}", tag = "sites", params(("id" = String, Path)), request_body = SiteInput, responses((status = 200, body = Site)))]
async fn update_site(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<SiteId>,
    Body(input): Body<SiteInput>,
) -> Res<Site> {
    Ok(Json(s.service.update_site(&a, id, input).await?))
}

/// Deletes an empty site.
#[utoipa::path(delete, path = "/sites/{id}", tag = "sites", params(("id" = String, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn delete_site(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<SiteId>,
) -> Result<Response, ApiError> {
    s.service.delete_site(&a, id).await?;
    Ok(no_content())
}

/// Lists a site's gateway enrollment tokens.
#[utoipa::path(get, path = "/sites/{id}/gateway-tokens", tag = "gateways", params(("id" = String, Path)), responses((status = 200, body = Vec<GatewayToken>)))]
async fn list_gateway_tokens(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<SiteId>,
) -> Res<Vec<GatewayToken>> {
    Ok(Json(s.service.list_gateway_tokens(&a, id).await?))
}

/// Creates a one-time gateway enrollment token; the response carries it once.
#[utoipa::path(post, path = "/sites/{id}/gateway-tokens", tag = "gateways", params(("id" = String, Path)), request_body = Option<GatewayTokenInput>,
    responses((status = 201, body = Issued<GatewayToken>), (status = 404, body = ErrorBody)))]
async fn create_gateway_token(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<SiteId>,
    BodyOrDefault(input): BodyOrDefault<GatewayTokenInput>,
) -> Result<Response, ApiError> {
    Ok(created(
        s.service.create_gateway_token(&a, id, input).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct SiteQuery {
    /// Only this site's.
    site_id: Option<SiteId>,
}

/// Lists gateways.
#[utoipa::path(get, path = "/gateways", tag = "gateways", params(SiteQuery), responses((status = 200, body = Vec<Gateway>)))]
async fn list_gateways(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<SiteQuery>,
) -> Res<Vec<Gateway>> {
    Ok(Json(s.service.list_gateways(&a, q.site_id).await?))
}

/// One gateway.
#[utoipa::path(get, path = "/gateways/{id}", tag = "gateways", params(("id" = String, Path)), responses((status = 200, body = Gateway)))]
async fn get_gateway(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<GatewayId>,
) -> Res<Gateway> {
    Ok(Json(s.service.get_gateway(&a, id).await?))
}

/// Renames, disables or enables a gateway.
#[utoipa::path(patch, path = "/gateways/{id}", tag = "gateways", params(("id" = String, Path)), request_body = GatewayPatch, responses((status = 200, body = Gateway)))]
async fn update_gateway(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<GatewayId>,
    Body(p): Body<GatewayPatch>,
) -> Res<Gateway> {
    Ok(Json(s.service.update_gateway(&a, id, p).await?))
}

/// Deletes a gateway, revoking its grants.
#[utoipa::path(delete, path = "/gateways/{id}", tag = "gateways", params(("id" = String, Path)), responses((status = 204)))]
async fn delete_gateway(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<GatewayId>,
) -> Result<Response, ApiError> {
    s.service.delete_gateway(&a, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- resources

/// Lists resources.
#[utoipa::path(get, path = "/resources", tag = "resources", params(SiteQuery), responses((status = 200, body = Vec<Resource>)))]
async fn list_resources(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<SiteQuery>,
) -> Res<Vec<Resource>> {
    Ok(Json(s.service.list_resources(&a, q.site_id).await?))
}

/// Creates a resource.
#[utoipa::path(post, path = "/resources", tag = "resources", request_body = ResourceInput,
    responses((status = 201, body = Resource), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_resource(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<ResourceInput>,
) -> Result<Response, ApiError> {
    Ok(created(s.service.create_resource(&a, input).await?))
}

/// One resource.
#[utoipa::path(get, path = "/resources/{id}", tag = "resources", params(("id" = String, Path)), responses((status = 200, body = Resource)))]
async fn get_resource(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<ResourceId>,
) -> Res<Resource> {
    Ok(Json(s.service.get_resource(&a, id).await?))
}

/// Replaces a resource, revoking its live grants if it changed.
#[utoipa::path(put, path = "/resources/{id}", tag = "resources", params(("id" = String, Path)), request_body = ResourceInput, responses((status = 200, body = Resource)))]
async fn update_resource(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<ResourceId>,
    Body(input): Body<ResourceInput>,
) -> Res<Resource> {
    Ok(Json(s.service.update_resource(&a, id, input).await?))
}

/// Deletes a resource no policy names.
#[utoipa::path(delete, path = "/resources/{id}", tag = "resources", params(("id" = String, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn delete_resource(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<ResourceId>,
) -> Result<Response, ApiError> {
    s.service.delete_resource(&a, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- identity providers

/// Lists the OpenID identity providers (client secrets are never shown).
#[utoipa::path(get, path = "/identity-providers", tag = "identity-providers",
    responses((status = 200, body = Vec<crate::app::IdentityProvider>)))]
async fn list_identity_providers(
    State(s): State<AppState>,
    Auth(a): Auth,
) -> Res<Vec<crate::app::IdentityProvider>> {
    Ok(Json(s.service.list_identity_providers(&a).await?))
}

/// Adds an OpenID identity provider by its issuer (discovery URL), client id and secret.
#[utoipa::path(post, path = "/identity-providers", tag = "identity-providers", request_body = crate::app::IdentityProviderInput,
    responses((status = 201, body = crate::app::IdentityProvider), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_identity_provider(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<crate::app::IdentityProviderInput>,
) -> Result<Response, ApiError> {
    Ok(created(
        s.service.create_identity_provider(&a, input).await?,
    ))
}

/// Removes an identity provider; its users stay but can no longer sign in through it.
#[utoipa::path(delete, path = "/identity-providers/{id}", tag = "identity-providers", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_identity_provider(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<uuid::Uuid>,
) -> Result<Response, ApiError> {
    s.service.delete_identity_provider(&a, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- local accounts and web sessions

/// Sets or resets a user's local password (admins only); their web sessions end.
#[utoipa::path(put, path = "/users/{id}/password", tag = "users", params(("id" = String, Path)), request_body = PasswordInput,
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_password(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<UserId>,
    Body(input): Body<PasswordInput>,
) -> Result<Response, ApiError> {
    s.service.set_password(&a, id, input).await?;
    Ok(no_content())
}

/// Removes a user's TOTP and recovery codes (admins only), e.g. after a lost phone.
#[utoipa::path(delete, path = "/users/{id}/totp", tag = "users", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn reset_totp(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<UserId>,
) -> Result<Response, ApiError> {
    s.service.reset_totp(&a, id).await?;
    Ok(no_content())
}

/// Signs in with a local account (password, and a TOTP or recovery code when TOTP is set up);
/// sets the `__Host-postern_session` cookie.
#[utoipa::path(post, path = "/auth/login", tag = "auth", security(()), request_body = LoginInput,
    responses((status = 200, body = Me), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(s): State<AppState>,
    Body(input): Body<LoginInput>,
) -> Result<Response, ApiError> {
    let session = s.service.login(input).await?;
    Ok(with_cookie(
        Json(session.me).into_response(),
        session_cookie_header(&session.token),
    ))
}

/// Signs out: ends the web session and clears its cookie.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("session" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(State(s): State<AppState>, Session(me): Session) -> Result<Response, ApiError> {
    s.service.logout(&me).await?;
    Ok(with_cookie(no_content(), cleared_session_cookie()))
}

/// The signed-in user and their session.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("session" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(State(s): State<AppState>, Session(me): Session) -> Res<Me> {
    Ok(Json(s.service.me(&me).await?))
}

/// Changes the signed-in user's own password; their other web sessions end.
#[utoipa::path(put, path = "/auth/password", tag = "auth", security(("session" = [])), request_body = PasswordChange,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn change_password(
    State(s): State<AppState>,
    Session(me): Session,
    Body(input): Body<PasswordChange>,
) -> Result<Response, ApiError> {
    s.service.change_password(&me, input).await?;
    Ok(no_content())
}

/// Starts TOTP enrollment: a new secret, its otpauth URI and a QR code, shown once.
#[utoipa::path(post, path = "/auth/totp", tag = "auth", security(("session" = [])),
    responses((status = 201, body = TotpEnrollment), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn start_totp(State(s): State<AppState>, Session(me): Session) -> Result<Response, ApiError> {
    let enrollment = s.service.start_totp(&me).await?;
    Ok(no_store(created(enrollment)))
}

/// Confirms TOTP enrollment with a current code; answers with recovery codes, shown once.
#[utoipa::path(post, path = "/auth/totp/confirm", tag = "auth", security(("session" = [])), request_body = TotpCode,
    responses((status = 200, body = RecoveryCodes), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn confirm_totp(
    State(s): State<AppState>,
    Session(me): Session,
    Body(input): Body<TotpCode>,
) -> Result<Response, ApiError> {
    let codes = s.service.confirm_totp_at(&me, input, now()).await?;
    Ok(no_store(Json(codes).into_response()))
}

/// Replaces the recovery codes, proven with a current TOTP code; the new ones are shown once.
#[utoipa::path(post, path = "/auth/recovery-codes", tag = "auth", security(("session" = [])), request_body = TotpCode,
    responses((status = 200, body = RecoveryCodes), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn new_recovery_codes(
    State(s): State<AppState>,
    Session(me): Session,
    Body(input): Body<TotpCode>,
) -> Result<Response, ApiError> {
    let codes = s.service.new_recovery_codes_at(&me, input, now()).await?;
    Ok(no_store(Json(codes).into_response()))
}

// ---------------------------------------------------------------- users and groups

/// Lists users.
#[utoipa::path(get, path = "/users", tag = "users", responses((status = 200, body = Vec<User>)))]
async fn list_users(State(s): State<AppState>, Auth(a): Auth) -> Res<Vec<User>> {
    Ok(Json(s.service.list_users(&a).await?))
}

/// Creates a user.
#[utoipa::path(post, path = "/users", tag = "users", request_body = UserInput, responses((status = 201, body = User), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<UserInput>,
) -> Result<Response, ApiError> {
    Ok(created(s.service.create_user(&a, input).await?))
}

/// One user.
#[utoipa::path(get, path = "/users/{id}", tag = "users", params(("id" = String, Path)), responses((status = 200, body = User)))]
async fn get_user(State(s): State<AppState>, Auth(a): Auth, Id(id): Id<UserId>) -> Res<User> {
    Ok(Json(s.service.get_user(&a, id).await?))
}

/// Changes a user; disabling revokes every grant of theirs.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", params(("id" = String, Path)), request_body = UserPatch, responses((status = 200, body = User)))]
async fn update_user(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<UserId>,
    Body(p): Body<UserPatch>,
) -> Res<User> {
    Ok(Json(s.service.update_user(&a, id, p).await?))
}

/// Deletes a user with their devices.
#[utoipa::path(delete, path = "/users/{id}", tag = "users", params(("id" = String, Path)), responses((status = 204)))]
async fn delete_user(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<UserId>,
) -> Result<Response, ApiError> {
    s.service.delete_user(&a, id).await?;
    Ok(no_content())
}

/// Lists the OpenID identities that sign in as a user (admins and auditors).
#[utoipa::path(get, path = "/users/{id}/identities", tag = "users", params(("id" = String, Path)),
    responses((status = 200, body = Vec<crate::app::Identity>), (status = 404, body = ErrorBody)))]
async fn list_user_identities(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<UserId>,
) -> Res<Vec<crate::app::Identity>> {
    Ok(Json(s.service.list_user_identities(&a, id).await?))
}

/// Links an existing identity (of another user) to this user: it signs in as this user from
/// now on. The same e-mail address at two providers is two users until an admin links them.
#[utoipa::path(post, path = "/users/{id}/identities", tag = "users", params(("id" = String, Path)),
    request_body = crate::app::LinkIdentityInput,
    responses((status = 200, body = crate::app::IdentityLink), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn link_identity(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<UserId>,
    Body(input): Body<crate::app::LinkIdentityInput>,
) -> Res<crate::app::IdentityLink> {
    Ok(Json(
        s.service.link_identity(&a, id, input.identity_id).await?,
    ))
}

/// Unlinks an identity from a user: it is forgotten, and its next sign-in makes a new user.
/// Refused (409) when it is the user's only way to sign in.
#[utoipa::path(delete, path = "/users/{id}/identities/{identity_id}", tag = "users",
    params(("id" = String, Path), ("identity_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn unlink_identity(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id((user, identity)): Id<(UserId, uuid::Uuid)>,
) -> Result<Response, ApiError> {
    s.service.unlink_identity(&a, user, identity).await?;
    Ok(no_content())
}

/// Lists groups.
#[utoipa::path(get, path = "/groups", tag = "groups", responses((status = 200, body = Vec<Group>)))]
async fn list_groups(State(s): State<AppState>, Auth(a): Auth) -> Res<Vec<Group>> {
    Ok(Json(s.service.list_groups(&a).await?))
}

/// Creates a group.
#[utoipa::path(post, path = "/groups", tag = "groups", request_body = GroupInput, responses((status = 201, body = Group), (status = 409, body = ErrorBody)))]
async fn create_group(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<GroupInput>,
) -> Result<Response, ApiError> {
    Ok(created(s.service.create_group(&a, input).await?))
}

/// One group.
#[utoipa::path(get, path = "/groups/{id}", tag = "groups", params(("id" = String, Path)), responses((status = 200, body = Group)))]
async fn get_group(State(s): State<AppState>, Auth(a): Auth, Id(id): Id<GroupId>) -> Res<Group> {
    Ok(Json(s.service.get_group(&a, id).await?))
}

/// Renames a group.
#[utoipa::path(put, path = "/groups/{id}", tag = "groups", params(("id" = String, Path)), request_body = GroupInput, responses((status = 200, body = Group)))]
async fn update_group(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<GroupId>,
    Body(input): Body<GroupInput>,
) -> Res<Group> {
    Ok(Json(s.service.update_group(&a, id, input).await?))
}

/// Deletes a group no policy names.
#[utoipa::path(delete, path = "/groups/{id}", tag = "groups", params(("id" = String, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn delete_group(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<GroupId>,
) -> Result<Response, ApiError> {
    s.service.delete_group(&a, id).await?;
    Ok(no_content())
}

/// Lists a group's members.
#[utoipa::path(get, path = "/groups/{id}/members", tag = "groups", params(("id" = String, Path)), responses((status = 200, body = Vec<User>)))]
async fn list_members(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<GroupId>,
) -> Res<Vec<User>> {
    Ok(Json(s.service.group_members(&a, id).await?))
}

/// Adds a user to a group.
#[utoipa::path(post, path = "/groups/{id}/members", tag = "groups", params(("id" = String, Path)), request_body = MemberInput, responses((status = 204), (status = 422, body = ErrorBody)))]
async fn add_member(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<GroupId>,
    Body(input): Body<MemberInput>,
) -> Result<Response, ApiError> {
    s.service.add_member(&a, id, input).await?;
    Ok(no_content())
}

/// Removes a user from a group, revoking the grants they held through it.
#[utoipa::path(delete, path = "/groups/{id}/members/{user_id}", tag = "groups", params(("id" = String, Path), ("user_id" = String, Path)), responses((status = 204)))]
async fn remove_member(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id((group, user)): Id<(GroupId, UserId)>,
) -> Result<Response, ApiError> {
    s.service.remove_member(&a, group, user).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- devices and enrollment keys

#[derive(Deserialize, utoipa::IntoParams)]
struct UserQuery {
    /// Only this user's.
    user_id: Option<UserId>,
}

/// Lists devices.
#[utoipa::path(get, path = "/devices", tag = "devices", params(UserQuery), responses((status = 200, body = Vec<Device>)))]
async fn list_devices(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<UserQuery>,
) -> Res<Vec<Device>> {
    Ok(Json(s.service.list_devices(&a, q.user_id).await?))
}

/// One device.
#[utoipa::path(get, path = "/devices/{id}", tag = "devices", params(("id" = String, Path)), responses((status = 200, body = Device)))]
async fn get_device(State(s): State<AppState>, Auth(a): Auth, Id(id): Id<DeviceId>) -> Res<Device> {
    Ok(Json(s.service.get_device(&a, id).await?))
}

/// Renames, disables or enables a device; disabling revokes its grants.
#[utoipa::path(patch, path = "/devices/{id}", tag = "devices", params(("id" = String, Path)), request_body = DevicePatch, responses((status = 200, body = Device)))]
async fn update_device(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<DeviceId>,
    Body(p): Body<DevicePatch>,
) -> Res<Device> {
    Ok(Json(s.service.update_device(&a, id, p).await?))
}

/// Removes a device, revoking its grants.
#[utoipa::path(delete, path = "/devices/{id}", tag = "devices", params(("id" = String, Path)), responses((status = 204)))]
async fn delete_device(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<DeviceId>,
) -> Result<Response, ApiError> {
    s.service.delete_device(&a, id).await?;
    Ok(no_content())
}

/// Lists enrollment keys.
#[utoipa::path(get, path = "/enrollment-keys", tag = "devices", responses((status = 200, body = Vec<EnrollmentKey>)))]
async fn list_enrollment_keys(State(s): State<AppState>, Auth(a): Auth) -> Res<Vec<EnrollmentKey>> {
    Ok(Json(s.service.list_enrollment_keys(&a).await?))
}

/// Creates an enrollment key; the response carries it once.
#[utoipa::path(post, path = "/enrollment-keys", tag = "devices", request_body = EnrollmentKeyInput, responses((status = 201, body = Issued<EnrollmentKey>)))]
async fn create_enrollment_key(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<EnrollmentKeyInput>,
) -> Result<Response, ApiError> {
    Ok(created(s.service.create_enrollment_key(&a, input).await?))
}

/// Revokes an enrollment key.
#[utoipa::path(delete, path = "/enrollment-keys/{id}", tag = "devices", params(("id" = String, Path)), responses((status = 204)))]
async fn revoke_enrollment_key(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<EnrollmentKeyId>,
) -> Result<Response, ApiError> {
    s.service.revoke_enrollment_key(&a, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- posture profiles

/// Lists posture profiles.
#[utoipa::path(get, path = "/posture-profiles", tag = "posture", responses((status = 200, body = Vec<PostureProfile>)))]
async fn list_profiles(State(s): State<AppState>, Auth(a): Auth) -> Res<Vec<PostureProfile>> {
    Ok(Json(s.service.list_profiles(&a).await?))
}

/// Creates a posture profile.
#[utoipa::path(post, path = "/posture-profiles", tag = "posture", request_body = PostureProfileInput, responses((status = 201, body = PostureProfile)))]
async fn create_profile(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<PostureProfileInput>,
) -> Result<Response, ApiError> {
    Ok(created(s.service.create_profile(&a, input).await?))
}

/// One posture profile.
#[utoipa::path(get, path = "/posture-profiles/{id}", tag = "posture", params(("id" = String, Path)), responses((status = 200, body = PostureProfile)))]
async fn get_profile(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<PostureProfileId>,
) -> Res<PostureProfile> {
    Ok(Json(s.service.get_profile(&a, id).await?))
}

/// Replaces a posture profile.
#[utoipa::path(put, path = "/posture-profiles/{id}", tag = "posture", params(("id" = String, Path)), request_body = PostureProfileInput, responses((status = 200, body = PostureProfile)))]
async fn update_profile(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<PostureProfileId>,
    Body(input): Body<PostureProfileInput>,
) -> Res<PostureProfile> {
    Ok(Json(s.service.update_profile(&a, id, input).await?))
}

/// Deletes a posture profile no policy uses.
#[utoipa::path(delete, path = "/posture-profiles/{id}", tag = "posture", params(("id" = String, Path)), responses((status = 204)))]
async fn delete_profile(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<PostureProfileId>,
) -> Result<Response, ApiError> {
    s.service.delete_profile(&a, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- policies

/// Lists policies.
#[utoipa::path(get, path = "/policies", tag = "policies", responses((status = 200, body = Vec<Policy>)))]
async fn list_policies(State(s): State<AppState>, Auth(a): Auth) -> Res<Vec<Policy>> {
    Ok(Json(s.service.list_policies(&a).await?))
}

/// Creates a policy.
#[utoipa::path(post, path = "/policies", tag = "policies", request_body = PolicyInput, responses((status = 201, body = Policy), (status = 422, body = ErrorBody)))]
async fn create_policy(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<PolicyInput>,
) -> Result<Response, ApiError> {
    Ok(created(s.service.create_policy(&a, input).await?))
}

/// One policy.
#[utoipa::path(get, path = "/policies/{id}", tag = "policies", params(("id" = String, Path)), responses((status = 200, body = Policy)))]
async fn get_policy(State(s): State<AppState>, Auth(a): Auth, Id(id): Id<PolicyId>) -> Res<Policy> {
    Ok(Json(s.service.get_policy(&a, id).await?))
}

/// Replaces a policy, revoking the grants issued under it.
#[utoipa::path(put, path = "/policies/{id}", tag = "policies", params(("id" = String, Path)), request_body = PolicyInput, responses((status = 200, body = Policy)))]
async fn update_policy(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<PolicyId>,
    Body(input): Body<PolicyInput>,
) -> Res<Policy> {
    Ok(Json(s.service.update_policy(&a, id, input).await?))
}

/// Deletes a policy, revoking the grants issued under it.
#[utoipa::path(delete, path = "/policies/{id}", tag = "policies", params(("id" = String, Path)), responses((status = 204)))]
async fn delete_policy(
    State(s): State<AppState>,
    Auth(a): Auth,
    Id(id): Id<PolicyId>,
) -> Result<Response, ApiError> {
    s.service.delete_policy(&a, id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- decisions, grants, audit

/// Evaluates whether a user's device may reach a resource now; the decision is audited.
#[utoipa::path(post, path = "/decisions", tag = "access", request_body = DecisionRequest, responses((status = 200, body = policy::Decision), (status = 422, body = ErrorBody)))]
async fn decide(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<DecisionRequest>,
) -> Res<policy::Decision> {
    Ok(Json(s.service.decide(&a, input).await?))
}

/// A denied access request: the decision's reasons, in words the user can act on.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct DeniedBody {
    error: DeniedDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct DeniedDetail {
    /// Always `denied`.
    code: &'static str,
    /// The reasons joined into one sentence.
    message: String,
    /// Why access was denied; never empty.
    reasons: Vec<policy::Reason>,
}

/// Asks for access: decides, picks an online gateway of the resource's site, pushes the grant
/// and waits for the gateway's acknowledgement, then answers with the WireGuard peer
/// configuration (shown once: it holds the preshared key). Denial is 403 with the reasons;
/// no gateway online or no acknowledgement in time is 503.
#[utoipa::path(post, path = "/access", tag = "access", request_body = AccessRequest,
    responses((status = 201, body = AccessGrant), (status = 403, body = DeniedBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn request_access(
    State(s): State<AppState>,
    Auth(a): Auth,
    Body(input): Body<AccessRequest>,
) -> Result<Response, ApiError> {
    match s.service.request_access(&a, input).await? {
        AccessOutcome::Granted(grant) => Ok(created(grant)),
        AccessOutcome::Denied { reasons } => {
            let message = format!(
                "access denied: {}",
                reasons
                    .iter()
                    .map(|r| r.message.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            Ok((
                StatusCode::FORBIDDEN,
                Json(DeniedBody {
                    error: DeniedDetail {
                        code: "denied",
                        message,
                        reasons,
                    },
                }),
            )
                .into_response())
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
struct GrantQuery {
    /// Only grants in force now (default true).
    live: Option<bool>,
    /// Only this device's.
    device_id: Option<DeviceId>,
    /// Only this user's.
    user_id: Option<UserId>,
    /// Only to this resource.
    resource_id: Option<ResourceId>,
    /// Only through this gateway.
    gateway_id: Option<GatewayId>,
    /// Only under this policy.
    policy_id: Option<PolicyId>,
}

/// Lists grants.
#[utoipa::path(get, path = "/grants", tag = "access", params(GrantQuery), responses((status = 200, body = Vec<Grant>)))]
async fn list_grants(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<GrantQuery>,
) -> Res<Vec<Grant>> {
    let filter = GrantFilter {
        device: q.device_id,
        user: q.user_id,
        resource: q.resource_id,
        gateway: q.gateway_id,
        policy: q.policy_id,
        ..Default::default()
    };
    Ok(Json(
        s.service
            .list_grants(&a, filter, q.live.unwrap_or(true))
            .await?,
    ))
}

/// Revokes a grant; its gateway drops the peer.
#[utoipa::path(delete, path = "/grants/{id}", tag = "access", params(("id" = String, Path)), responses((status = 200, body = Grant), (status = 409, body = ErrorBody)))]
async fn revoke_grant(State(s): State<AppState>, Auth(a): Auth, Id(id): Id<GrantId>) -> Res<Grant> {
    Ok(Json(s.service.revoke_grant(&a, id).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct AuditQuery {
    /// Only events by this actor (`user:<id>`, `token:<id>`, …).
    actor: Option<String>,
    /// Only events about this subject (`resource:<id>`, …).
    subject: Option<String>,
    /// Only this kind; a trailing `.` selects a family (`decision.`).
    kind: Option<String>,
    /// At or after this time (RFC 3339).
    since: Option<String>,
    /// Before this time (RFC 3339).
    until: Option<String>,
    /// At most this many, newest first (default 100, at most 10000).
    limit: Option<u32>,
    /// `json` (default) or `jsonl` for export.
    format: Option<String>,
}

fn time_param(field: &str, v: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    v.map(|s| {
        s.parse::<Timestamp>().map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                Some(field.to_owned()),
                format!("{field}: `{s}` is not an RFC 3339 time such as 2026-11-25T09:00:00Z"),
            )
        })
    })
    .transpose()
}

/// Reads the audit log, newest first; `?format=jsonl` exports one event per line.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEvent>), (status = 200, content_type = "application/x-ndjson", description = "with format=jsonl")))]
async fn audit_log(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            Some("limit".into()),
            "limit: must be from 1 to 10000",
        ));
    }
    let filter = AuditFilter {
        actor: q.actor,
        subject: q.subject,
        kind: q.kind,
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
        limit,
    };
    let events = s.service.audit_log(&a, filter).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(events).into_response()),
        Some("jsonl") => {
            let mut out = String::new();
            for e in &events {
                out.push_str(&serde_json::to_string(e).unwrap_or_default());
                out.push('\n');
            }
            Ok((
                [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
                out,
            )
                .into_response())
        }
        Some(other) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            Some("format".into()),
            format!("format: `{other}` is not json or jsonl"),
        )),
    }
}
