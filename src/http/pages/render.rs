//! Templates (files in `templates/pay/`, embedded at build time) and the responses built from them.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use minijinja::{Environment, Value, context};
use payhub_actors::domain::PaymentStatus;
use payhub_actors::transaction::view::PaymentView;

const TEMPLATES: [(&str, &str); 5] = [
    (
        "pay/base.html",
        include_str!("../../../templates/pay/base.html"),
    ),
    (
        "pay/login.html",
        include_str!("../../../templates/pay/login.html"),
    ),
    (
        "pay/code.html",
        include_str!("../../../templates/pay/code.html"),
    ),
    (
        "pay/result.html",
        include_str!("../../../templates/pay/result.html"),
    ),
    (
        "pay/message.html",
        include_str!("../../../templates/pay/message.html"),
    ),
];

pub struct Templates(Environment<'static>);

impl Templates {
    /// The process's one set, compiled at first use: the pages and the request deadline's page
    /// (answered outside the pages' scope) share it.
    pub fn shared() -> &'static Templates {
        static SHARED: std::sync::OnceLock<Templates> = std::sync::OnceLock::new();
        SHARED.get_or_init(Templates::new)
    }

    fn new() -> Self {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are part of the build; a broken one is a programming error.
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        Self(env)
    }

    fn render(&self, name: &str, ctx: Value) -> Result<String, minijinja::Error> {
        self.0.get_template(name)?.render(ctx)
    }
}

/// A page about one payment.
pub struct Page<'a> {
    templates: &'a Templates,
    payment: Value,
}

impl<'a> Page<'a> {
    pub fn new(templates: &'a Templates, view: &PaymentView) -> Self {
        Self {
            templates,
            payment: context! {
                id => view.id,
                merchant_name => view.merchant_name,
                amount => view.amount_text(),
                description => view.description,
            },
        }
    }

    pub fn render(&self, status: StatusCode, name: &str, extra: Value) -> HttpResponse {
        let ctx = context! { payment => self.payment, ..extra };
        html(self.templates, status, name, ctx)
    }
}

fn html(templates: &Templates, status: StatusCode, name: &str, ctx: Value) -> HttpResponse {
    match templates.render(name, ctx) {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("Cache-Control", "no-store"))
            .insert_header(("X-Frame-Options", "DENY"))
            .insert_header(("Referrer-Policy", "no-referrer"))
            .insert_header((
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                 frame-ancestors 'none'",
            ))
            .body(body),
        Err(e) => {
            tracing::error!(template = name, error = %e, "template failed");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("This page could not be shown. Please try again.")
        }
    }
}

/// A page with a heading and a sentence, about no payment in particular.
pub fn message(
    templates: &Templates,
    status: StatusCode,
    heading: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> HttpResponse {
    let ctx = context! {
        heading,
        message => text,
        link => link.map(|l| l.0),
        link_text => link.map(|l| l.1),
    };
    html(templates, status, "pay/message.html", ctx)
}

pub fn not_found(templates: &Templates) -> HttpResponse {
    message(
        templates,
        StatusCode::NOT_FOUND,
        "Payment not found",
        "This payment link is not valid. Please go back to the shop and start the payment again.",
        None,
    )
}

pub fn unavailable(templates: &Templates, detail: &str) -> HttpResponse {
    tracing::error!(%detail, "customer page unavailable");
    message(
        templates,
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The payment service cannot answer right now. Nothing was charged by this step; \
         please try again in a minute.",
        None,
    )
}

/// Heading, tone (css class) and sentence for the result page.
pub fn outcome_text(v: &PaymentView) -> (&'static str, &'static str, String) {
    match v.status {
        PaymentStatus::Succeeded => (
            "Payment complete",
            "ok",
            format!("You paid {} to {}.", v.amount_text(), v.merchant_name),
        ),
        PaymentStatus::Expired => (
            "Payment expired",
            "error",
            "This payment was not completed in time. Nothing was charged.".into(),
        ),
        PaymentStatus::Failed => ("Payment not completed", "error", failure_text(v)),
        PaymentStatus::Processing => (
            "Payment in progress",
            "info",
            "Your bank is confirming the payment. This page updates itself in a moment.".into(),
        ),
        PaymentStatus::AwaitingCustomer | PaymentStatus::AwaitingCode => (
            "Payment not finished",
            "info",
            "This payment is still waiting for you. Go back to the payment page to continue."
                .into(),
        ),
    }
}

fn failure_text(v: &PaymentView) -> String {
    match v.failure_code.as_deref() {
        Some("authentication_failed") => {
            "The payment was stopped after too many unsuccessful sign-ins. Nothing was charged."
                .into()
        }
        Some("code_attempts_exceeded") => {
            "The payment was stopped after too many wrong codes. Nothing was charged.".into()
        }
        Some("code_expired") => {
            "The authorization code expired before it was entered. Nothing was charged.".into()
        }
        Some("bank_declined") => format!(
            "Your bank declined the payment{}. Nothing was charged.",
            v.bank_response_code
                .as_deref()
                .map(|c| format!(" (reason {c}{})", decline_reason(c)))
                .unwrap_or_default()
        ),
        Some("bank_unavailable") => "Your bank could not confirm the payment. If any amount was \
                                     taken, it is returned automatically."
            .into(),
        _ => "The payment could not be completed. Nothing was charged.".into(),
    }
}

fn decline_reason(code: &str) -> &'static str {
    match code {
        "51" => ": insufficient funds",
        "61" => ": exceeds the amount limit",
        "57" => ": not permitted for this account",
        "14" => ": invalid account",
        "05" => ": do not honour",
        _ => "",
    }
}
