//! `GET` and `POST /unsubscribe/{tenant}/{contact}/{token}`: the engine's unsubscribe links.
//!
//! A `GET` only shows a page with a button, because mail scanners and link previews fetch
//! links in messages without anyone clicking them. The `POST` unsubscribes: it is what the
//! page's button sends and what a mailbox provider sends for an RFC 8058 one-click
//! unsubscribe, both with the body `List-Unsubscribe=One-Click`. An invalid token, an unknown
//! contact and a deleted tenant get the same 404, so links cannot be probed.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use followup_core::domain::Contact;
use followup_core::ids::{ContactId, TenantId};
use followup_core::suppression::{Suppression, SuppressionKind, SuppressionReason};
use followup_core::template::escape_html;

use super::AppState;
use super::error::ApiError;

/// The body of an RFC 8058 one-click unsubscribe request.
const ONE_CLICK_BODY: &str = "List-Unsubscribe=One-Click";

/// Maximum body of an unsubscribe request, in bytes.
const MAX_BODY_BYTES: usize = 1_024;

/// The contact a valid link names, with its tenant's name.
struct LinkTarget {
    tenant: TenantId,
    tenant_name: String,
    contact: Contact,
}

/// Checks the link's token and returns the contact it names; `None` for anything invalid.
async fn target(
    state: &AppState,
    (tenant, contact, token): &(String, String, String),
) -> Result<Option<LinkTarget>, ApiError> {
    let (Ok(tenant), Ok(contact)) = (tenant.parse::<TenantId>(), contact.parse::<ContactId>())
    else {
        return Ok(None);
    };
    let store = state.engine.store();
    let Some(record) = store.tenant(tenant).await? else {
        return Ok(None);
    };
    let Ok(key) = state.engine.sealed_store().tenant_key(tenant).await else {
        return Ok(None);
    };
    if !key.verify_unsubscribe_token(tenant, contact, token) {
        return Ok(None);
    }
    let found = store.contacts(tenant, vec![contact]).await?.pop();
    Ok(found.map(|contact| LinkTarget { tenant, tenant_name: record.name, contact }))
}

fn page(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"robots\" \
         content=\"noindex\"><title>{title}</title></head><body><h1>{title}</h1>{body}</body>\
         </html>"
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(html)
}

fn not_found() -> HttpResponse {
    let body = "<p>This unsubscribe link is not valid. Use the link in the latest email.</p>";
    page(actix_web::http::StatusCode::NOT_FOUND, "Link not valid", body)
}

/// `GET`: the confirmation page. Unsubscribes nobody.
pub async fn show(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let Some(target) = target(&state, &path).await? else {
        return Ok(not_found());
    };
    let mut sender = String::new();
    escape_html(&target.tenant_name, &mut sender);
    let body = format!(
        "<p>Stop receiving emails from {sender}?</p><form method=\"post\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form>"
    );
    Ok(page(actix_web::http::StatusCode::OK, "Unsubscribe", &body))
}

/// `POST`: unsubscribes the contact's email address.
pub async fn unsubscribe(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let Some(target) = target(&state, &path).await? else {
        return Ok(not_found());
    };
    let one_click = body.len() <= MAX_BODY_BYTES
        && String::from_utf8_lossy(&body).split('&').any(|pair| pair == ONE_CLICK_BODY);
    if !one_click {
        return Err(ApiError::BadRequest(format!(
            "an unsubscribe request needs the form body {ONE_CLICK_BODY} (RFC 8058)"
        )));
    }
    let now = state.engine.clock().now();
    let reason = SuppressionReason::Unsubscribed;
    let entry = match &target.contact.email {
        Some(email) => {
            let email = email.to_lowercase();
            Suppression::new(target.tenant, SuppressionKind::Email, email, reason, now)
        }
        // A link goes out only in an email, so a contact without an address is a hand-edited
        // record; it is stopped as a whole.
        None => Suppression::of_contact(target.tenant, target.contact.id, reason, now),
    };
    state.engine.store().put_suppressions(target.tenant, vec![entry]).await?;
    tracing::info!(tenant = %target.tenant, contact = %target.contact.id, "contact unsubscribed by link");
    let body = "<p>You will receive no more emails from this sender.</p>";
    Ok(page(actix_web::http::StatusCode::OK, "Unsubscribed", body))
}
