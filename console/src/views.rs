//! The HTML pages, rendered on the server with `maud` (which escapes
//! every value). No inline scripts or styles: the Content-Security-Policy
//! allows only this console's own stylesheet. Charts are SVG drawn here.

use maud::{DOCTYPE, Markup, html};

use crate::auth::{Role, User};
use crate::data::{
    AUDIT_ROWS, AgentsView, CampaignDetail, CampaignView, EpisodeView, HostView, Overview,
    SCAN_TYPES, SearchForm, SearchResult, SourceView,
};
use doorwatch_store::{AuditRow, TimeBucket};

/// What every page needs about the request.
#[derive(Debug, Clone)]
pub struct PageContext {
    pub user: User,
    pub csrf: String,
}

/// Unix seconds as "2026-11-26 01:02 UTC".
pub fn when(unix: u32) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::from(unix))
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

/// The page frame: navigation, who is signed in, sign-out.
pub fn layout(ctx: Option<&PageContext>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · doorwatch" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header {
                    a.brand href="/" { "doorwatch" }
                    @if let Some(ctx) = ctx {
                        nav {
                            a href="/" { "Overview" }
                            a href="/campaigns" { "Campaigns" }
                            a href="/search" { "Search" }
                            @if ctx.user.role >= Role::Admin {
                                a href="/agents" { "Agents" }
                                a href="/audit" { "Audit log" }
                            }
                        }
                        form.signout method="post" action="/logout" {
                            span.who { (ctx.user.name) " (" (ctx.user.role.label()) ")" }
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in page.
pub fn login(sso: bool, local: bool, browser: &str, next: &str, error: Option<&str>) -> Markup {
    layout(
        None,
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p.error { (e) } }
            @if sso {
                p { a #sso .button href={ "/auth/start?next=" (urlencode(next)) } { "Sign in with your campus account" } }
            }
            @if local {
                details open[!sso] {
                    summary { "Local administrator (first setup and emergencies)" }
                    form #local-login method="post" action="/login/local" {
                        input type="hidden" name="browser" value=(browser);
                        input type="hidden" name="next" value=(next);
                        label { "User name " input name="username" autocomplete="username" required; }
                        label { "Password " input name="password" type="password" autocomplete="current-password" required; }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        },
    )
}

/// A generic error page; details are in the log under `reference`.
pub fn error_page(title: &str, message: &str, reference: Option<&str>) -> Markup {
    layout(
        None,
        title,
        html! {
            h1 { (title) }
            p { (message) }
            @if let Some(r) = reference { p.small { "Reference for your administrator: " code { (r) } } }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

fn severity_badge(label: &str) -> Markup {
    html! { span class={ "sev sev-" (label) } { (label) } }
}

fn campaign_table(campaigns: &[CampaignView]) -> Markup {
    html! {
        @if campaigns.is_empty() {
            p.empty { "No campaigns." }
        } @else {
            table.campaigns {
                thead { tr { th { "Severity" } th { "Kind" } th { "What" } th { "PCs" } th { "Sources" } th { "Last seen" } th { "State" } th { "Triage" } } }
                tbody {
                    @for c in campaigns {
                        tr {
                            td { (severity_badge(c.severity)) }
                            td { (c.kind) }
                            td { a.campaign-link href={ "/campaigns/" (c.id) } { (c.key) } }
                            td { (c.pcs) }
                            td { (c.sources) }
                            td { (when(c.last_seen)) }
                            td { (c.state) }
                            td { (c.triage) }
                        }
                    }
                }
            }
        }
    }
}

/// A bar chart of counts over time, as SVG.
fn bar_chart(buckets: &[TimeBucket], label: &str) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    let max = buckets.iter().map(|b| b.scans).max().unwrap_or(0).max(1) as f64;
    let n = buckets.len().max(1) as f64;
    let bar = (W / n).max(1.0);
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (W) " " (H + 20.0) } role="img" aria-label=(label) {
                @for (i, b) in buckets.iter().enumerate() {
                    @let h = (b.scans as f64 / max * H).max(1.0);
                    rect x=(format!("{:.1}", i as f64 * bar)) y=(format!("{:.1}", H - h))
                        width=(format!("{:.1}", (bar - 2.0).max(1.0))) height=(format!("{h:.1}")) {
                        title { (when(b.at)) ": " (b.scans) }
                    }
                }
                line x1="0" y1=(H) x2=(W) y2=(H) {}
                @if let (Some(first), Some(last)) = (buckets.first(), buckets.last()) {
                    text x="0" y=(H + 16.0) { (when(first.at)) }
                    text x=(W) y=(H + 16.0) text-anchor="end" { (when(last.at)) }
                }
            }
            figcaption { (label) " (highest: " (max as u64) ")" }
        }
    }
}

pub fn overview(ctx: &PageContext, o: &Overview) -> Markup {
    let labels = ["low", "medium", "high", "critical"];
    layout(
        Some(ctx),
        "Overview",
        html! {
            h1 { "Overview" }
            section.cards {
                @for (i, label) in labels.iter().enumerate().rev() {
                    div class={ "card sev-" (label) } { span.big { (o.open_by_severity[i]) } " open " (label) }
                }
                div.card { span.big { (o.agents.online) } " agents online" }
                div.card { span.big { (o.agents.stale) } " stale" }
                div.card { span.big { (o.agents.offline) } " offline" }
            }
            h2 { "Scans per hour, last " (o.hours) " hours" }
            p.small { "Counts as of " (when(o.aggregates.computed_at)) "; campaigns and agents are live." }
            (bar_chart(&o.aggregates.scans_per_hour, "scan episodes started per hour"))
            h2 { "Open campaigns" }
            (campaign_table(&o.campaigns))
            div.columns {
                section {
                    h2 { "Top scanners" }
                    table { thead { tr { th { "Source" } th { "PCs" } th { "Scans" } } }
                        tbody { @for s in &o.aggregates.top_scanners { tr {
                            td { a.source-link href={ "/sources/" (s.source) } { (s.source) } }
                            td { (s.pcs) } td { (s.scans) } } } } }
                }
                section {
                    h2 { "Top targeted ports" }
                    table { thead { tr { th { "Port" } th { "Sources" } th { "PCs" } } }
                        tbody { @for p in &o.aggregates.top_ports { tr {
                            td { a href={ "/search?port=" (p.port) } { (p.port) } }
                            td { (p.sources) } td { (p.pcs) } } } } }
                }
                section {
                    h2 { "PCs hit" }
                    table { thead { tr { th { "PC" } th { "Sources" } th { "Scans" } } }
                        tbody { @for p in &o.aggregates.pcs_hit { tr {
                            td { a.host-link href={ "/hosts/" (p.agent_id) } { (p.agent_id) } }
                            td { (p.sources) } td { (p.scans) } } } } }
                }
            }
        },
    )
}

pub fn campaigns(ctx: &PageContext, list: &[CampaignView]) -> Markup {
    layout(
        Some(ctx),
        "Campaigns",
        html! {
            h1 { "Campaigns, last 30 days" }
            (campaign_table(list))
        },
    )
}

pub fn campaign(ctx: &PageContext, d: &CampaignDetail) -> Markup {
    let c = &d.campaign;
    layout(
        Some(ctx),
        "Campaign",
        html! {
            h1 { "Campaign: " (c.key) " " (severity_badge(c.severity)) }
            p.explanation { (c.explanation) }
            dl.facts {
                dt { "Kind" } dd { (c.kind) }
                dt { "State" } dd { (c.state) }
                dt { "First seen" } dd { (when(c.first_seen)) }
                dt { "Last seen" } dd { (when(c.last_seen)) }
                dt { "Triage" } dd.triage-state { (c.triage) }
            }
            @if !d.timeline.is_empty() {
                h2 { "Timeline" }
                (bar_chart(&d.timeline, "scans and knocks per five minutes"))
            }
            h2 { "Triage" }
            @if ctx.user.role >= Role::Analyst {
                form #triage method="post" action={ "/campaigns/" (c.id) "/triage" } {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    label { "State "
                        select name="state" {
                            @for s in ["new", "acknowledged", "resolved", "false_positive"] {
                                option value=(s) selected[s == c.triage] { (s.replace('_', " ")) }
                            }
                        }
                    }
                    label { "Note " textarea name="note" rows="2" maxlength="2000" {} }
                    button #triage-submit type="submit" { "Save" }
                }
            } @else {
                p.small { "Viewers cannot change the triage state." }
            }
            @if !d.triage_history.is_empty() {
                table.history { thead { tr { th { "When" } th { "Who" } th { "State" } th { "Note" } } }
                    tbody { @for t in d.triage_history.iter().rev() { tr {
                        td { (when(t.at)) } td { (t.actor) } td { (t.state) } td { (t.note) } } } } }
            }
            div.columns {
                section { h2 { "Sources (" (d.sources.len()) ")" }
                    ul { @for s in d.sources.iter().take(200) { li { a.source-link href={ "/sources/" (s) } { (s) } } } } }
                section { h2 { "Target PCs (" (d.pcs.len()) ")" }
                    ul { @for p in d.pcs.iter().take(200) { li { a.host-link href={ "/hosts/" (p) } { (p) } } } } }
                section { h2 { "Ports (" (d.ports.len()) ")" }
                    p { @for (i, p) in d.ports.iter().take(200).enumerate() { @if i > 0 { ", " } (p) } } }
            }
            h2 { "Open ports found" }
            @if d.open_ports.is_empty() { p.empty { "None: the scanners found no open door." } }
            @else { table { thead { tr { th { "PC" } th { "Open ports" } } }
                tbody { @for (pc, ports) in &d.open_ports { tr { td { (pc) }
                    td { @for (i, p) in ports.iter().enumerate() { @if i > 0 { ", " } (p) } } } } } } }
            h2 { "Alerts sent" }
            @if d.alerts.is_empty() { p.empty { "No alert was sent for this campaign." } }
            @else { table { thead { tr { th { "When" } th { "Channel" } th { "Severity" } th { "Result" } th { "Attempts" } } }
                tbody { @for a in &d.alerts { tr { td { (when(a.at)) } td { (a.channel) } td { (a.severity) }
                    td { (a.status) @if !a.error.is_empty() { ": " (a.error) } } td { (a.attempts) } } } } } }
        },
    )
}

fn episodes_table(episodes: &[EpisodeView]) -> Markup {
    html! {
        @if episodes.is_empty() { p.empty { "No scans." } }
        @else {
            table.episodes {
                thead { tr { th { "Last seen" } th { "Source" } th { "PC" } th { "Ports tried" } th { "Open" } th { "Severity" } th { "What happened" } } }
                tbody { @for e in episodes { tr {
                    td { (when(e.last_seen)) }
                    td { a.source-link href={ "/sources/" (e.scanner) } { (e.scanner) } }
                    td { a.host-link href={ "/hosts/" (e.agent_id) } { (e.agent_id) } }
                    td { (e.ports_probed) }
                    td { @for (i, p) in e.open_ports.iter().enumerate() { @if i > 0 { ", " } (p) } }
                    td { (severity_badge(e.severity)) }
                    td.explanation { (e.explanation) }
                } } }
            }
        }
    }
}

pub fn host(ctx: &PageContext, h: &HostView) -> Markup {
    layout(
        Some(ctx),
        "PC",
        html! {
            h1 { "PC " (h.agent_id) }
            h2 { "Agent health" }
            @match &h.health {
                Some(a) => dl.facts {
                    dt { "Status" } dd { (a.status) }
                    dt { "Last heard" } dd { (when(a.last_seen)) }
                    dt { "Version" } dd { (a.version) }
                    dt { "Host name (as the PC says)" } dd { (a.hostname) }
                    dt { "Events waiting on the PC" } dd { (a.pending_events) }
                    dt { "Events dropped" } dd { (a.events_dropped) }
                    dt { "Packets the kernel dropped" } dd { (a.kernel_drops) }
                },
                None => p.empty { "No heartbeat from this agent yet." },
            }
            h2 { "Open ports" }
            @if h.listening.is_empty() { p.empty { "No listening ports reported: none are open, or the agent has not sent its inventory yet." } }
            @else { table { thead { tr { th { "Port" } th { "Address" } th { "Program" } th { "User" } th { "Risk" } } }
                tbody { @for l in &h.listening { tr { td { (l.port) "/" (l.protocol) } td { (l.address) }
                    td { (l.process) } td { (l.user) } td.risk { (l.risk) } } } } } }
            h2 { "Top talkers, last 24 hours" }
            @if h.top_talkers.is_empty() { p.empty { "No outbound traffic recorded." } }
            @else { table { thead { tr { th { "Program" } th { "Sent" } th { "Received" } } }
                tbody { @for t in &h.top_talkers { tr { td { (t.process) } td { (bytes(t.bytes_out)) } td { (bytes(t.bytes_in)) } } } } } }
            h2 { "Recent scans against this PC" }
            (episodes_table(&h.scans))
        },
    )
}

pub fn source(ctx: &PageContext, s: &SourceView) -> Markup {
    layout(
        Some(ctx),
        "Source",
        html! {
            h1 { "Source " (s.source) }
            p {
                @match s.blocklisted_until_quiet_since {
                    Some(t) => { "On the blocklist feed (last active " (when(t)) ")." }
                    None => { "Not on the blocklist feed." }
                }
                " "
                @match &s.allowlisted_by {
                    Some(n) => { "Allowlisted (" (n) "): never made into campaigns, alerted or published." }
                    None => { "Not allowlisted." }
                }
            }
            p { "Scanned " (s.pcs.len()) " campus PCs in the last 30 days." }
            h2 { "Campaigns" }
            (campaign_table(&s.campaigns))
            h2 { "Scans" }
            (episodes_table(&s.scans))
        },
    )
}

pub fn search(
    ctx: &PageContext,
    form: &SearchForm,
    result: Option<&SearchResult>,
    error: Option<&str>,
) -> Markup {
    let query = |page: u64| {
        format!(
            "since={}&pc={}&source={}&port={}&scan_type={}&page={page}",
            urlencode(&form.since),
            urlencode(&form.pc),
            urlencode(&form.source),
            urlencode(&form.port),
            urlencode(&form.scan_type)
        )
    };
    layout(
        Some(ctx),
        "Search",
        html! {
            h1 { "Search scans" }
            form.search method="get" action="/search" {
                label { "Time range " input name="since" value=(form.since) placeholder="24h"; }
                label { "PC " input name="pc" value=(form.pc) placeholder="agent id"; }
                label { "Source " input name="source" value=(form.source) placeholder="198.51.100.0/24"; }
                label { "Port " input name="port" value=(form.port) inputmode="numeric"; }
                label { "Scan type " select name="scan_type" {
                    option value="" { "any" }
                    @for t in SCAN_TYPES { option value=(t) selected[*t == form.scan_type] { (t) } }
                } }
                button type="submit" { "Search" }
            }
            @if let Some(e) = error { p.error { (e) } }
            @if let Some(r) = result {
                p { @if r.total >= 65_536 { "About " } (r.total) " scans. " a #csv href={ "/search.csv?" (query(0)) } { "Export as CSV" } }
                (episodes_table(&r.episodes))
                nav.pages {
                    @if r.page > 0 { a href={ "/search?" (query(r.page - 1)) } { "← newer" } }
                    " page " (r.page + 1) " of " (r.pages.max(1)) " "
                    @if r.page + 1 < r.pages { a href={ "/search?" (query(r.page + 1)) } { "older →" } }
                }
            }
        },
    )
}

pub fn agents(ctx: &PageContext, a: &AgentsView) -> Markup {
    layout(
        Some(ctx),
        "Agents",
        html! {
            h1 { "Agents" }
            table.agents { thead { tr { th { "Agent" } th { "Host name" } th { "Group" } th { "Version" } th { "Status" } th { "Last heard" } th { "Waiting" } th { "Dropped" } th { "" } } }
                tbody { @for x in &a.agents { tr {
                    td { a.host-link href={ "/hosts/" (x.agent_id) } { (x.agent_id) } }
                    td { (x.hostname) } td { (x.group) } td { (x.version) }
                    td { @if x.revoked { "revoked" } @else { (x.status) } }
                    td { @if x.last_seen > 0 { (when(x.last_seen)) } }
                    td { (x.pending_events) } td { (x.events_dropped) }
                    td { @if !x.revoked {
                        form method="post" action={ "/agents/" (x.agent_id) "/revoke" } {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button.danger type="submit" { "Revoke" }
                        }
                    } }
                } } } }
            h2 { "Enrollment tokens" }
            form #new-token method="post" action="/agents/tokens" {
                input type="hidden" name="csrf" value=(ctx.csrf);
                label { "Group (site) " input name="group" required pattern="[A-Za-z0-9._\\-]{1,128}" placeholder="library"; }
                label { "Valid for (days) " input name="days" value="7" inputmode="numeric"; }
                label { "Up to this many PCs " input name="max_uses" value="100" inputmode="numeric"; }
                button #create-token type="submit" { "Create token" }
            }
            table.tokens { thead { tr { th { "Token" } th { "Group" } th { "Expires" } th { "Uses" } th { "State" } th { "" } } }
                tbody { @for t in &a.tokens { tr { td { (t.token_id) } td { (t.group) } td { (when(t.expires_at)) }
                    td { (t.uses) " of " (t.max_uses) } td.token-state { (t.state.label()) }
                    td { @if !t.revoked {
                        form method="post" action={ "/agents/tokens/" (t.token_id) "/revoke" } {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button.danger type="submit" { "Revoke" }
                        }
                    } } } } } }
        },
    )
}

/// A new token, shown once.
pub fn new_token(
    ctx: &PageContext,
    token: &str,
    group: &str,
    max_uses: u32,
    expires_at: u32,
) -> Markup {
    layout(
        Some(ctx),
        "New enrollment token",
        html! {
            h1 { "New enrollment token" }
            p { "Put this token in the agent configuration (" code { "collector.token" } ") of the PCs of group "
                strong { (group) } ". Up to " (max_uses) " PCs can enroll with it until " (when(expires_at)) "." }
            p.error { "It is shown only now: copy it before leaving this page." }
            pre #token { (token) }
            p { a href="/agents" { "Back to the agents" } }
        },
    )
}

pub fn audit(ctx: &PageContext, rows: &[AuditRow], page: u64) -> Markup {
    layout(
        Some(ctx),
        "Audit log",
        html! {
            h1 { "Audit log" }
            table.audit { thead { tr { th { "When" } th { "Who" } th { "Role" } th { "What" } th { "On" } th { "Details" } th { "From" } } }
                tbody { @for r in rows { tr {
                    td { (when(r.at)) } td { (r.actor) } td { (r.role) } td.action { (r.action) }
                    td { (r.target) } td { (r.detail) } td { (r.source_ip) }
                } } } }
            nav.pages {
                @if page > 0 { a href={ "/audit?page=" (page - 1) } { "← newer" } }
                " page " (page + 1) " "
                @if rows.len() as u64 == AUDIT_ROWS { a href={ "/audit?page=" (page + 1) } { "older →" } }
            }
        },
    )
}

/// Percent-encodes a query value.
pub fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The stylesheet, served from /static/console.css.
pub const CSS: &str = include_str!("console.css");
