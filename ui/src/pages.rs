//! The pages: one template struct per page, and the rows and options they show. The
//! controller fills every field with display-ready text; templates only lay it out.

use askama::Template;

use crate::{FormErrors, FormValues, Pager};

// ---------------------------------------------------------------- the frame

/// One entry of the sidebar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NavItem {
    /// The key pages mark themselves active with.
    pub key: &'static str,
    /// The label.
    pub label: &'static str,
    /// Where it leads.
    pub href: &'static str,
}

/// The frame around every page: title, navigation, the signed-in user, the form token.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// The page title (without the product name).
    pub title: String,
    /// The key of the active sidebar entry.
    pub active: &'static str,
    /// The signed-in user's name; empty on pages before sign-in.
    pub user_name: String,
    /// Their e-mail address.
    pub user_email: String,
    /// Their role: `admin`, `auditor` or `user`.
    pub role: String,
    /// The synchronizer token every form posts back as `_csrf`.
    pub csrf: String,
    /// A one-time notice from the previous action ("Site created").
    pub flash: Option<String>,
    /// The style sheet's path.
    pub css: String,
    /// The script's path.
    pub js: String,
}

impl Chrome {
    /// A frame for a page, with the asset paths filled in.
    pub fn new(title: impl Into<String>, active: &'static str) -> Self {
        Self {
            title: title.into(),
            active,
            css: crate::assets::css_path(),
            js: crate::assets::js_path(),
            ..Self::default()
        }
    }

    /// Whether someone is signed in (the page gets the sidebar).
    pub fn signed_in(&self) -> bool {
        !self.role.is_empty()
    }

    /// Whether the user may change things (admins only): forms and buttons show only then.
    pub fn can_write(&self) -> bool {
        self.role == "admin"
    }

    /// Whether the user may read everything (admins and auditors).
    pub fn is_reader(&self) -> bool {
        self.role == "admin" || self.role == "auditor"
    }

    /// The avatar's initials.
    pub fn initials(&self) -> String {
        crate::initials(&self.user_name)
    }

    /// The sidebar entries the user may open.
    pub fn nav(&self) -> Vec<NavItem> {
        const fn item(key: &'static str, label: &'static str, href: &'static str) -> NavItem {
            NavItem { key, label, href }
        }
        let mut items = Vec::new();
        if self.is_reader() {
            items.extend([
                item("dashboard", "Overview", "/"),
                item("grants", "Live access", "/grants"),
                item("sites", "Sites & gateways", "/sites"),
                item("resources", "Resources", "/resources"),
                item("policies", "Policies", "/policies"),
                item("posture", "Posture", "/posture"),
                item("users", "Users", "/users"),
                item("groups", "Groups", "/groups"),
                item("devices", "Devices", "/devices"),
                item("audit", "Audit log", "/audit"),
                item("settings", "Settings", "/settings"),
            ]);
        }
        items.push(item("my", "My access", "/my"));
        items
    }
}

/// An option of a select box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// The submitted value.
    pub value: String,
    /// What the user sees.
    pub label: String,
}

impl Opt {
    /// An option.
    pub fn new(value: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            label: label.into(),
        }
    }
}

/// A named link to another object's page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The text.
    pub label: String,
    /// The target.
    pub href: String,
}

/// A status shown as a coloured pill: `ok`, `warn`, `bad`, `off` or `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pill {
    /// The text.
    pub label: String,
    /// The colour class.
    pub tone: &'static str,
}

impl Pill {
    /// A pill.
    pub fn new(label: impl Into<String>, tone: &'static str) -> Self {
        Self {
            label: label.into(),
            tone,
        }
    }
}

// ---------------------------------------------------------------- sign-in, setup, errors

/// The sign-in page.
#[derive(Debug, Template)]
#[template(path = "signin.html")]
pub struct SignInPage {
    /// The frame.
    pub chrome: Chrome,
    /// The e-mail address typed so far.
    pub email: String,
    /// What went wrong with the last attempt.
    pub error: Option<String>,
    /// The identity providers: (name, start URL).
    pub providers: Vec<Link>,
    /// Where to go after signing in (a local path).
    pub next: String,
    /// The second step: the password was right, the authenticator code is missing.
    pub totp_step: bool,
    /// The password, carried into the second step only.
    pub password: String,
}

/// The first-run page that creates the first admin with the setup code.
#[derive(Debug, Template)]
#[template(path = "setup.html")]
pub struct SetupPage {
    /// The frame.
    pub chrome: Chrome,
    /// What was typed.
    pub values: FormValues,
    /// What was wrong.
    pub errors: FormErrors,
}

/// Setup is done: the admin's API token, shown once.
#[derive(Debug, Template)]
#[template(path = "setup_done.html")]
pub struct SetupDonePage {
    /// The frame.
    pub chrome: Chrome,
    /// The admin's e-mail address.
    pub email: String,
    /// The API token, shown once.
    pub token: String,
}

/// An error page.
#[derive(Debug, Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// The frame.
    pub chrome: Chrome,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, in words a person can act on.
    pub message: String,
}

/// The confirmation of a destructive action (when the script did not ask already).
#[derive(Debug, Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    /// The frame.
    pub chrome: Chrome,
    /// The question.
    pub question: String,
    /// What happens.
    pub detail: String,
    /// Where the confirmed form posts to.
    pub action: String,
    /// The label of the button.
    pub button: String,
    /// Where "cancel" leads.
    pub back: String,
}

// ---------------------------------------------------------------- dashboard

/// A step of the getting-started list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Whether it is done.
    pub done: bool,
    /// What to do.
    pub label: String,
    /// Where to do it.
    pub href: String,
}

/// A recent denied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialRow {
    /// When.
    pub at: String,
    /// Who.
    pub user: String,
    /// What they asked for.
    pub resource: String,
    /// Why it was denied.
    pub reason: String,
}

/// The overview.
#[derive(Debug, Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    /// The frame.
    pub chrome: Chrome,
    /// Gateways with a control connection up.
    pub gateways_online: usize,
    /// All gateways.
    pub gateways_total: usize,
    /// Grants in force now.
    pub live_grants: usize,
    /// Denied requests in the last 24 hours.
    pub denials_24h: String,
    /// Users.
    pub users: usize,
    /// Devices.
    pub devices: usize,
    /// The latest denials.
    pub recent_denials: Vec<DenialRow>,
    /// Getting started, until everything is done.
    pub steps: Vec<Step>,
    /// Gateways that are offline.
    pub offline: Vec<Link>,
}

impl DashboardPage {
    /// Whether the getting-started list still has open steps.
    pub fn setting_up(&self) -> bool {
        self.steps.iter().any(|s| !s.done)
    }
}

// ---------------------------------------------------------------- sites and gateways

/// A site in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Gateways online.
    pub online: usize,
    /// Gateways enrolled.
    pub gateways: usize,
    /// Resources in it.
    pub resources: usize,
    /// When it was created.
    pub created: String,
}

/// The sites.
#[derive(Debug, Template)]
#[template(path = "sites.html")]
pub struct SitesPage {
    /// The frame.
    pub chrome: Chrome,
    /// The rows of this page.
    pub rows: Vec<SiteRow>,
    /// The pager.
    pub pager: Pager,
    /// The filter text.
    pub q: String,
    /// The create form's values.
    pub values: FormValues,
    /// Its errors.
    pub errors: FormErrors,
}

/// An enrolled gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Online, offline or disabled.
    pub status: Pill,
    /// Where clients reach it.
    pub endpoint: String,
    /// Its WireGuard key, shortened.
    pub key: String,
    /// When it was last seen.
    pub last_seen: String,
    /// Grants through it now.
    pub grants: usize,
    /// Whether it is disabled.
    pub disabled: bool,
}

/// A gateway enrollment token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayTokenRow {
    /// Its id.
    pub id: String,
    /// Waiting, used or expired.
    pub status: Pill,
    /// When it was made.
    pub created: String,
    /// When it expires.
    pub expires: String,
}

/// One site with its gateways, tokens and resources.
#[derive(Debug, Template)]
#[template(path = "site.html")]
pub struct SitePage {
    /// The frame.
    pub chrome: Chrome,
    /// The site.
    pub site: SiteRow,
    /// Its gateways.
    pub gateways: Vec<GatewayRow>,
    /// Its gateway tokens.
    pub tokens: Vec<GatewayTokenRow>,
    /// Its resources.
    pub resources: Vec<Link>,
    /// The rename form's values.
    pub values: FormValues,
    /// Its errors.
    pub errors: FormErrors,
}

/// A new gateway token with the commands that use it, shown once.
#[derive(Debug, Template)]
#[template(path = "gateway_token.html")]
pub struct GatewayTokenPage {
    /// The frame.
    pub chrome: Chrome,
    /// The site's id.
    pub site_id: String,
    /// The site's name.
    pub site_name: String,
    /// The token.
    pub token: String,
    /// When it expires.
    pub expires: String,
    /// The `docker run` command.
    pub docker_run: String,
    /// The compose file.
    pub compose: String,
    /// Whether the controller's fingerprint is known (else the commands hold a placeholder).
    pub fingerprint_known: bool,
}

// ---------------------------------------------------------------- resources

/// A resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its site's name.
    pub site: String,
    /// Its site's id.
    pub site_id: String,
    /// Its addresses, comma-separated.
    pub addresses: String,
    /// Its port rules, comma-separated, or "all".
    pub ports: String,
    /// Policies naming it.
    pub policies: usize,
}

/// The resources.
#[derive(Debug, Template)]
#[template(path = "resources.html")]
pub struct ResourcesPage {
    /// The frame.
    pub chrome: Chrome,
    /// The rows of this page.
    pub rows: Vec<ResourceRow>,
    /// The pager.
    pub pager: Pager,
    /// The filter text.
    pub q: String,
    /// The sites to choose from.
    pub sites: Vec<Opt>,
    /// The create form's values.
    pub values: FormValues,
    /// Its errors.
    pub errors: FormErrors,
}

/// Someone who can reach a resource, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachRow {
    /// The user's name.
    pub user: String,
    /// Their e-mail address.
    pub email: String,
    /// Their page.
    pub user_id: String,
    /// The allowing policy.
    pub policy: String,
    /// Its id.
    pub policy_id: String,
    /// Through which group.
    pub group: String,
    /// The policy's conditions in words.
    pub conditions: Vec<String>,
    /// Why it may still be blocked (a deny policy, a disabled account).
    pub caveats: Vec<String>,
}

/// A policy in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The group's name.
    pub group: String,
    /// The group's id.
    pub group_id: String,
    /// The resource's name.
    pub resource: String,
    /// The resource's id.
    pub resource_id: String,
    /// Allow or deny.
    pub action: Pill,
    /// The conditions in words.
    pub conditions: Vec<String>,
    /// The longest session.
    pub session: String,
    /// Enabled or disabled.
    pub state: Pill,
}

/// One resource: its definition, its policies and who can reach it.
#[derive(Debug, Template)]
#[template(path = "resource.html")]
pub struct ResourcePage {
    /// The frame.
    pub chrome: Chrome,
    /// The resource.
    pub resource: ResourceRow,
    /// The sites to choose from.
    pub sites: Vec<Opt>,
    /// The edit form's values.
    pub values: FormValues,
    /// Its errors.
    pub errors: FormErrors,
    /// Policies naming it.
    pub policies: Vec<PolicyRow>,
    /// Who can reach it.
    pub reach: Vec<ReachRow>,
    /// Grants to it now.
    pub live_grants: usize,
}

// ---------------------------------------------------------------- users and groups

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Their id.
    pub id: String,
    /// Their name.
    pub name: String,
    /// Their e-mail address.
    pub email: String,
    /// Their role.
    pub role: String,
    /// Active or disabled.
    pub state: Pill,
    /// Whether they are disabled.
    pub disabled: bool,
    /// Their groups' names.
    pub groups: String,
    /// How many devices they have.
    pub devices: usize,
}

/// The users.
#[derive(Debug, Template)]
#[template(path = "users.html")]
pub struct UsersPage {
    /// The frame.
    pub chrome: Chrome,
    /// The rows of this page.
    pub rows: Vec<UserRow>,
    /// The pager.
    pub pager: Pager,
    /// The filter text.
    pub q: String,
    /// The create form's values.
    pub values: FormValues,
    /// Its errors.
    pub errors: FormErrors,
}

/// One user: groups, devices, account actions.
#[derive(Debug, Template)]
#[template(path = "user.html")]
pub struct UserPage {
    /// The frame.
    pub chrome: Chrome,
    /// The user.
    pub user: UserRow,
    /// Their groups.
    pub groups: Vec<Link>,
    /// Their devices.
    pub devices: Vec<DeviceRow>,
    /// Whether TOTP is set up for them.
    pub totp: bool,
    /// The forms' values.
    pub values: FormValues,
    /// Their errors.
    pub errors: FormErrors,
}

/// A group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// How many members.
    pub members: usize,
    /// How many policies name it.
    pub policies: usize,
}

/// The groups.
#[derive(Debug, Template)]
#[template(path = "groups.html")]
pub struct GroupsPage {
    /// The frame.
    pub chrome: Chrome,
    /// The rows of this page.
    pub rows: Vec<GroupRow>,
    /// The pager.
    pub pager: Pager,
    /// The filter text.
    pub q: String,
    /// The create form's values.
    pub values: FormValues,
    /// Its errors.
    pub errors: FormErrors,
}

/// One group: members and the policies naming it.
#[derive(Debug, Template)]
#[template(path = "group.html")]
pub struct GroupPage {
    /// The frame.
    pub chrome: Chrome,
    /// The group.
    pub group: GroupRow,
    /// Its members.
    pub members: Vec<UserRow>,
    /// Users who could be added.
    pub candidates: Vec<Opt>,
    /// Policies naming it.
    pub policies: Vec<PolicyRow>,
    /// The forms' values.
    pub values: FormValues,
    /// Their errors.
    pub errors: FormErrors,
}

// ---------------------------------------------------------------- policies and posture

/// The choices of the policy form.
#[derive(Debug, Clone, Default)]
pub struct PolicyForm {
    /// Groups.
    pub groups: Vec<Opt>,
    /// Resources.
    pub resources: Vec<Opt>,
    /// Posture profiles.
    pub profiles: Vec<Opt>,
    /// The days of the week.
    pub days: Vec<Opt>,
    /// The values.
    pub values: FormValues,
    /// The errors.
    pub errors: FormErrors,
}

/// The policies.
#[derive(Debug, Template)]
#[template(path = "policies.html")]
pub struct PoliciesPage {
    /// The frame.
    pub chrome: Chrome,
    /// The rows of this page.
    pub policies: Vec<PolicyRow>,
    /// The pager.
    pub pager: Pager,
    /// The filter text.
    pub q: String,
    /// The create form.
    pub form: PolicyForm,
}

/// One policy, to edit.
#[derive(Debug, Template)]
#[template(path = "policy.html")]
pub struct PolicyPage {
    /// The frame.
    pub chrome: Chrome,
    /// The policy.
    pub policy: PolicyRow,
    /// The edit form.
    pub form: PolicyForm,
    /// Grants issued under it now.
    pub live_grants: usize,
}

/// A posture profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its requirements in words.
    pub requirements: Vec<String>,
    /// Policies using it.
    pub policies: usize,
}

/// The posture profiles.
#[derive(Debug, Template)]
#[template(path = "posture.html")]
pub struct PosturePage {
    /// The frame.
    pub chrome: Chrome,
    /// The profiles.
    pub rows: Vec<ProfileRow>,
    /// The create form's values.
    pub values: FormValues,
    /// Its errors.
    pub errors: FormErrors,
}

/// One posture profile, to edit.
#[derive(Debug, Template)]
#[template(path = "posture_profile.html")]
pub struct PostureProfilePage {
    /// The frame.
    pub chrome: Chrome,
    /// The profile.
    pub profile: ProfileRow,
    /// The edit form's values.
    pub values: FormValues,
    /// Its errors.
    pub errors: FormErrors,
}

// ---------------------------------------------------------------- devices and grants

/// A device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its user's name.
    pub user: String,
    /// Its user's id.
    pub user_id: String,
    /// Its key, shortened.
    pub key: String,
    /// Active or disabled.
    pub state: Pill,
    /// Whether it is disabled.
    pub disabled: bool,
    /// When it was last seen.
    pub last_seen: String,
    /// The last posture report in a few words.
    pub posture: Vec<Pill>,
    /// When that report was made.
    pub posture_at: String,
}

/// The devices.
#[derive(Debug, Template)]
#[template(path = "devices.html")]
pub struct DevicesPage {
    /// The frame.
    pub chrome: Chrome,
    /// The rows of this page.
    pub devices: Vec<DeviceRow>,
    /// The pager.
    pub pager: Pager,
    /// The filter text.
    pub q: String,
    /// The state filter: ``, `active` or `disabled`.
    pub state: String,
}

/// A grant in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    /// Its id.
    pub id: String,
    /// The user's name.
    pub user: String,
    /// The user's id.
    pub user_id: String,
    /// The device's name.
    pub device: String,
    /// The resource's name.
    pub resource: String,
    /// The resource's id.
    pub resource_id: String,
    /// The gateway's name.
    pub gateway: String,
    /// The device's tunnel address.
    pub tunnel_address: String,
    /// Since when, relative.
    pub since: String,
    /// Since when, exact.
    pub since_at: String,
    /// When it expires, relative.
    pub expires: String,
    /// When it expires, exact.
    pub expires_at: String,
}

/// The live grants.
#[derive(Debug, Template)]
#[template(path = "grants.html")]
pub struct GrantsPage {
    /// The frame.
    pub chrome: Chrome,
    /// The rows of this page.
    pub rows: Vec<GrantRow>,
    /// The pager.
    pub pager: Pager,
    /// The filter text.
    pub q: String,
}

// ---------------------------------------------------------------- audit

/// An audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// When, exact.
    pub at: String,
    /// When, relative.
    pub ago: String,
    /// Who acted.
    pub actor: String,
    /// Their id (`user:…`).
    pub actor_id: String,
    /// What happened.
    pub kind: String,
    /// Its colour.
    pub tone: &'static str,
    /// What it happened to (`resource:<id>`), for filtering.
    pub subject: String,
    /// What it happened to, named where the name is known (`resource app`).
    pub subject_label: String,
    /// The particulars, `key: value` with ids named where known.
    pub details: String,
}

/// The audit log.
#[derive(Debug, Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    /// The frame.
    pub chrome: Chrome,
    /// The events of this page.
    pub rows: Vec<AuditRow>,
    /// The filters.
    pub values: FormValues,
    /// The kinds to filter by.
    pub kinds: Vec<Opt>,
    /// The time ranges to filter by.
    pub ranges: Vec<Opt>,
    /// The link to older events, if any.
    pub older: Option<String>,
    /// The link to the newest events, when not on the first page.
    pub newest: Option<String>,
    /// The export link with the same filters.
    pub export: String,
    /// A filter error.
    pub errors: FormErrors,
}

// ---------------------------------------------------------------- settings and my access

/// An identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its issuer.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The groups claim.
    pub groups_claim: String,
    /// The redirect URI to register at the provider.
    pub redirect_uri: String,
}

/// An API token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRow {
    /// Its id.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Active or revoked.
    pub state: Pill,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When it was last used.
    pub last_used: String,
}

/// Settings: identity providers and API tokens.
#[derive(Debug, Template)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    /// The frame.
    pub chrome: Chrome,
    /// The identity providers.
    pub providers: Vec<ProviderRow>,
    /// The API tokens.
    pub tokens: Vec<ApiTokenRow>,
    /// A token just created, shown once.
    pub new_token: Option<String>,
    /// The forms' values.
    pub values: FormValues,
    /// Their errors.
    pub errors: FormErrors,
    /// The redirect URI pattern for new providers.
    pub redirect_base: String,
}

/// A resource the signed-in user may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyResourceRow {
    /// Its name.
    pub name: String,
    /// Its addresses.
    pub addresses: String,
    /// Its ports.
    pub ports: String,
    /// Through which policy and group.
    pub via: String,
    /// The conditions in words.
    pub conditions: Vec<String>,
}

/// "My access": the signed-in user's devices, the resources they may reach, their grants.
#[derive(Debug, Template)]
#[template(path = "my.html")]
pub struct MyPage {
    /// The frame.
    pub chrome: Chrome,
    /// Their devices.
    pub devices: Vec<DeviceRow>,
    /// What they may reach.
    pub resources: Vec<MyResourceRow>,
    /// Their grants in force.
    pub grants: Vec<GrantRow>,
}

/// The approval of a client device's sign-in.
#[derive(Debug, Template)]
#[template(path = "device_approve.html")]
pub struct DeviceApprovePage {
    /// The frame.
    pub chrome: Chrome,
    /// The code the device showed, as typed or from the link.
    pub user_code: String,
    /// The device's name, once the code is known.
    pub device_name: Option<String>,
    /// The fingerprint of the device's key.
    pub fingerprint: String,
    /// Where the request came from.
    pub source: String,
    /// The outcome after a decision.
    pub outcome: Option<String>,
    /// What was wrong.
    pub errors: FormErrors,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome(role: &str) -> Chrome {
        Chrome {
            role: role.into(),
            user_name: "Ann Lee".into(),
            csrf: "tok\"en".into(),
            ..Chrome::new("Sites", "sites")
        }
    }

    #[test]
    fn navigation_follows_the_role() {
        assert!(chrome("admin").nav().iter().any(|i| i.key == "audit"));
        assert!(chrome("auditor").nav().iter().any(|i| i.key == "audit"));
        let user = chrome("user").nav();
        assert_eq!(user.len(), 1);
        assert_eq!(user[0].href, "/my");
        assert!(chrome("admin").can_write());
        assert!(!chrome("auditor").can_write());
        assert!(!Chrome::new("Sign in", "").signed_in());
    }

    fn sites(role: &str, name: &str) -> String {
        SitesPage {
            chrome: chrome(role),
            rows: vec![SiteRow {
                id: "s1".into(),
                name: name.into(),
                online: 1,
                gateways: 2,
                resources: 3,
                created: "today".into(),
            }],
            pager: Pager::new(1, 1, 25, ""),
            q: String::new(),
            values: FormValues::default(),
            errors: FormErrors::field("name", "already exists"),
        }
        .render()
        .unwrap()
    }

    #[test]
    fn pages_escape_what_they_show() {
        let html = sites("admin", "<script>alert(1)</script>");
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
        assert!(!html.contains("tok\"en"), "attribute values are escaped");
    }

    #[test]
    fn pages_have_no_inline_script_or_style() {
        let html = sites("admin", "hq");
        assert!(!html.contains("<script>"), "only external scripts");
        assert!(!html.contains("style="), "no inline styles");
        assert!(!html.contains("onclick"), "no inline handlers");
        assert!(html.contains(&crate::assets::js_path()));
    }

    #[test]
    fn auditors_get_no_forms() {
        let admin = sites("admin", "hq");
        let auditor = sites("auditor", "hq");
        assert!(admin.contains("method=\"post\" action=\"/sites\""));
        assert!(!auditor.contains("action=\"/sites\""));
        assert!(admin.contains("already exists"), "the field error shows");
    }

    #[test]
    fn empty_states_say_what_to_do() {
        let html = SitesPage {
            chrome: chrome("admin"),
            rows: vec![],
            pager: Pager::new(0, 1, 25, ""),
            q: String::new(),
            values: FormValues::default(),
            errors: FormErrors::none(),
        }
        .render()
        .unwrap();
        assert!(html.contains("No sites yet"));
    }
}
