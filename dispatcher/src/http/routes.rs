//! Every route of the server, in one place. docs/openapi.yaml describes each of them, and a
//! test checks the two against each other.

use actix_web::{HttpResponse, web};

use super::AppState;
use super::error::route_not_found;
use super::{
    account_api, admin_api, admin_stream, billing_api, clock_api, forecast_api, operator_actions,
    stops_api, tenant_api, unsubscribe_page, usage_api, webhooks,
};

/// Registers every route on an actix-web app.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/admin/v1/tenants", web::post().to(admin_api::create_tenant))
        .route("/admin/v1/tenants", web::get().to(admin_api::list_tenants))
        .route("/admin/v1/snapshot", web::get().to(admin_api::snapshot))
        .route("/admin/v1/stream", web::get().to(admin_stream::stream))
        .route("/admin/v1/tenant-summaries", web::get().to(admin_api::tenant_summaries))
        .route("/admin/v1/tenants/{id}/detail", web::get().to(admin_api::tenant_detail))
        .route(
            "/admin/v1/tenants/{id}/follow-up-counts",
            web::get().to(admin_api::tenant_follow_up_counts),
        )
        .route("/admin/v1/tenants/{id}/pause", web::post().to(operator_actions::pause_tenant))
        .route("/admin/v1/tenants/{id}/resume", web::post().to(operator_actions::resume_tenant))
        .route(
            "/admin/v1/tenants/{id}/connections/{provider}/pause",
            web::post().to(operator_actions::pause_connection),
        )
        .route(
            "/admin/v1/tenants/{id}/connections/{provider}/resume",
            web::post().to(operator_actions::resume_connection),
        )
        .route(
            "/admin/v1/tenants/{id}/schedules/{schedule}",
            web::delete().to(operator_actions::cancel_schedule),
        )
        .route("/admin/v1/dead-letters", web::get().to(operator_actions::dead_letters))
        .route("/admin/v1/dead-letters/retry", web::post().to(operator_actions::retry_dead_letters))
        .route("/admin/v1/audit", web::get().to(operator_actions::audit_log))
        .route("/admin/v1/cluster", web::get().to(admin_api::cluster))
        .route("/admin/v1/keys/rotate", web::post().to(admin_api::rotate_keys))
        .route("/admin/v1/clock", web::get().to(clock_api::get_clock))
        .route("/admin/v1/clock/run", web::post().to(clock_api::run_clock))
        .route("/admin/v1/fakes", web::get().to(clock_api::get_fakes))
        .route("/admin/v1/usage", web::get().to(usage_api::all_usage))
        .route("/admin/v1/tenants/{id}/plan", web::put().to(usage_api::change_plan))
        .route("/admin/v1/tenants/{id}/stripe-customer", web::put().to(billing_api::link_customer))
        .route("/admin/v1/tenants/{id}/billing", web::get().to(billing_api::tenant_billing))
        .route("/admin/v1/tenants/{id}/billing/sync", web::post().to(billing_api::sync_billing))
        .route("/v1/usage", web::get().to(usage_api::own_usage))
        .route("/v1/billing", web::get().to(billing_api::own_billing))
        .route("/v1/sequences", web::post().to(tenant_api::create_sequence))
        .route("/v1/sequences", web::get().to(tenant_api::list_sequences))
        .route("/v1/sequences/{id}", web::get().to(tenant_api::get_sequence))
        .route("/v1/schedules", web::get().to(tenant_api::find_schedules))
        .route("/v1/schedules/bulk", web::post().to(tenant_api::bulk_upload))
        .route("/v1/schedules/{id}", web::get().to(tenant_api::get_schedule))
        .route("/v1/schedules/{id}", web::delete().to(tenant_api::cancel_schedule))
        .route("/v1/connections", web::get().to(tenant_api::list_connections))
        .route("/v1/connections/{provider}", web::put().to(tenant_api::put_connection))
        .route("/v1/contacts/stop", web::post().to(stops_api::stop_named_contacts))
        .route("/v1/contacts/{id}/stop", web::post().to(stops_api::stop_contact))
        .route("/v1/suppressions", web::get().to(stops_api::list_suppressions))
        .route("/v1/suppressions", web::post().to(stops_api::import_suppressions))
        .route("/v1/suppressions/remove", web::post().to(stops_api::remove_suppressions))
        .route("/v1/forecast", web::post().to(forecast_api::forecast_sequence))
        .route("/v1/forecast/upload", web::post().to(forecast_api::forecast_upload))
        .route("/v1/settings", web::get().to(stops_api::get_settings))
        .route("/v1/settings", web::put().to(stops_api::put_settings))
        .route("/unsubscribe/{tenant}/{contact}/{token}", web::get().to(unsubscribe_page::show))
        .route(
            "/unsubscribe/{tenant}/{contact}/{token}",
            web::post().to(unsubscribe_page::unsubscribe),
        )
        .route("/webhooks/stripe", web::post().to(webhooks::stripe_event))
        .route("/webhooks/twilio/{connection}/status", web::post().to(webhooks::twilio_status))
        .route("/webhooks/twilio/{connection}/inbound", web::post().to(webhooks::twilio_inbound))
        .route("/v1/tenant", web::delete().to(account_api::delete_tenant))
        .route("/v1/export", web::get().to(account_api::export))
        .default_service(web::to(route_not_found));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready once the engine has started (the server only answers after recovery finished), while
/// the store answers and the actors run; 503 naming each failing check otherwise, and from the
/// moment a stop begins.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let failing = state.engine.readiness().await;
    if failing.is_empty() {
        return HttpResponse::Ok().content_type("text/plain").body("ready\n");
    }
    let lines: String =
        failing.iter().map(|(check, reason)| format!("not ready: {check}: {reason}\n")).collect();
    HttpResponse::ServiceUnavailable().content_type("text/plain").body(lines)
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    admin_api::publish_gauges(&state).await;
    match &state.metrics {
        Some(handle) => {
            HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render())
        }
        None => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("metrics recorder not installed in this process\n"),
    }
}
