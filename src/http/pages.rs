//! The customer pages (gateway-http.md): `/pay/{id}` (sign in), `/pay/{id}/login`,
//! `/pay/{id}/code` (the one page that takes the code), `/pay/{id}/resend` and `/pay/{id}/result`.
//! Server-rendered HTML from the templates in `templates/pay/`, no JavaScript. Every form carries a
//! CSRF token bound to a `payhub_csrf` cookie and the payment; the browser that passes the
//! password step gets a `payhub_session` cookie (`HttpOnly; SameSite=Strict`, `Secure` over TLS)
//! scoped to that payment's path. Bad input gets a calm page with a 4xx, never a 5xx.

mod render;

use actix::{Addr, MailboxError};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use deadpool_postgres::Pool;
use payhub_actors::clock::SharedClock;
use payhub_actors::domain::{Msisdn, OnlineId, PaymentStatus};
use payhub_actors::keyed_hash::HashKey;
use payhub_actors::password::PASSWORD_MAX_BYTES;
use payhub_actors::secret::Secret;
use payhub_actors::transaction::actor::{Login, Resend, SubmitCode, ViewPayment};
use payhub_actors::transaction::code::{browser_session_token, resends_left};
use payhub_actors::transaction::registry::{Lookup, Peek};
use payhub_actors::transaction::view::{
    PaymentView, RouteOption, ViewWithRoutes, load_view, route_options,
};
use payhub_actors::transaction::{
    ChannelChoice, CodeReply, LoginReply, PaymentError, PaymentRegistry, PaymentSettings,
    ResendReply, TransactionActor,
};
use render::{Page, Templates};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

pub const CSRF_COOKIE: &str = "payhub_csrf";
pub const SESSION_COOKIE: &str = "payhub_session";
/// Largest form a customer page accepts.
pub const FORM_MAX_BYTES: usize = 4 * 1024;
/// Longest code accepted in the form (the configured length is 6..=8).
pub const CODE_INPUT_MAX_CHARS: usize = 16;
/// Longest terminal id taken from a form.
const TERMINAL_ID_MAX_CHARS: usize = 64;
/// How long a page waits for the view of a payment whose actor is busy with a step (a password
/// hash, a debit) before it reads the row instead.
pub const ACTOR_VIEW_WAIT_MAX_MS: u64 = 100;
/// How long the code page waits for the debit's outcome before it shows the payment in progress
/// (a bank slow to answer, then a reversal, can take minutes); the debit goes on regardless.
pub const CODE_STEP_WAIT_MAX_MS: u64 = 20_000;
/// Views asked of payments' actors and not yet taken, all payments together: one asked while an
/// actor runs a step waits in its mailbox after the page stopped waiting for it. Past this, pages
/// read the row.
pub const VIEWS_QUEUED_MAX: usize = 1_024;
/// How often a result page of a payment in progress reloads itself.
pub const IN_PROGRESS_REFRESH_S: u64 = 3;

/// What the pages need.
#[derive(Clone)]
pub struct PagesState {
    pub registry: Addr<PaymentRegistry>,
    pub pool: Pool,
    pub hash_key: HashKey,
    pub clock: SharedClock,
    pub allow_unregistered_receiver: bool,
    /// See [`CODE_STEP_WAIT_MAX_MS`] (shorter in tests).
    pub code_step_wait_ms: u64,
    /// `payments.code_resends_max`: whether the code page offers another code.
    pub code_resends_max: u32,
    /// Places for views asked of payments' actors and not yet taken ([`VIEWS_QUEUED_MAX`]).
    views_queued: Arc<tokio::sync::Semaphore>,
    templates: &'static Templates,
}

impl PagesState {
    pub fn new(
        registry: Addr<PaymentRegistry>,
        pool: Pool,
        hash_key: HashKey,
        clock: SharedClock,
        allow_unregistered_receiver: bool,
    ) -> Self {
        Self {
            registry,
            pool,
            hash_key,
            clock,
            allow_unregistered_receiver,
            code_step_wait_ms: CODE_STEP_WAIT_MAX_MS,
            code_resends_max: PaymentSettings::default().code_resends_max,
            views_queued: Arc::new(tokio::sync::Semaphore::new(VIEWS_QUEUED_MAX)),
            templates: Templates::shared(),
        }
    }
}

/// The pages as a configurator for the HTTPS server builder (or any actix-web `App`).
pub fn configure(
    state: PagesState,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + Sync + 'static {
    move |cfg: &mut web::ServiceConfig| {
        let form_errors = state.templates;
        // A scope of their own, so the pages' form limits and state leave other routes alone.
        cfg.service(
            web::scope("/pay")
                .app_data(web::Data::new(state.clone()))
                .app_data(
                    web::FormConfig::default()
                        .limit(FORM_MAX_BYTES)
                        .error_handler(move |err, _req| {
                            let page = render::message(
                                form_errors,
                                StatusCode::BAD_REQUEST,
                                "This form could not be read",
                                "Please go back, reload the page and try again.",
                                None,
                            );
                            actix_web::error::InternalError::from_response(err, page).into()
                        }),
                )
                .route("/{id}", web::get().to(pay_page))
                .route("/{id}/login", web::post().to(login))
                .route("/{id}/login", web::get().to(back_to_the_payment))
                .route("/{id}/code", web::get().to(code_page))
                .route("/{id}/code", web::post().to(submit_code))
                .route("/{id}/resend", web::post().to(resend))
                .route("/{id}/resend", web::get().to(back_to_the_payment))
                .route("/{id}/result", web::get().to(result_page))
                // A browser that asks for anything else under /pay gets a page, not JSON.
                .default_service(web::to(no_page)),
        );
    }
}

/// The answer to a request under `/pay` still unanswered at `http.request_deadline_ms`: a page,
/// like every answer under `/pay`, never the API's JSON.
pub fn deadline_passed(path: &str) -> HttpResponse {
    let templates = Templates::shared();
    let payment = path
        .strip_prefix("/pay/")
        .and_then(|rest| rest.split('/').next())
        .filter(|id| payhub_actors::ids::is_payment_id(id))
        .map(|id| format!("/pay/{id}"));
    render::message(
        templates,
        StatusCode::REQUEST_TIMEOUT,
        "This is taking too long",
        "The gateway could not finish this step in time. Your payment may still be going ahead: \
         open the payment page again to see where it stands.",
        payment.as_deref().map(|p| (p, "Back to the payment")),
    )
}

async fn no_page(state: web::Data<PagesState>) -> HttpResponse {
    render::not_found(state.templates)
}

// ---- handlers -----------------------------------------------------------------------------------

async fn pay_page(
    req: HttpRequest,
    state: web::Data<PagesState>,
    id: web::Path<String>,
) -> HttpResponse {
    let ctx = match Ctx::load(&req, &state, &id, ActorUse::IfRunning).await {
        Ok(ctx) => ctx,
        Err(page) => return page,
    };
    match ctx.view.status {
        PaymentStatus::AwaitingCustomer => {
            ctx.login_page(StatusCode::OK, None, &LoginForm::default())
        }
        PaymentStatus::AwaitingCode if ctx.has_session() => see_other(&ctx.path("/code")),
        // The browser that signed in, without its session cookie (the sign-in's answer was
        // lost): signing in again gives it back (`SignedInAgain`).
        PaymentStatus::AwaitingCode if ctx.signed_in_here() => {
            ctx.login_page(StatusCode::OK, None, &LoginForm::default())
        }
        PaymentStatus::AwaitingCode => ctx.waiting_for_the_code(),
        _ => see_other(&ctx.path("/result")),
    }
}

/// The address of a page that answered a form (a wrong password, a resend), reloaded or opened
/// anew: the payment's page, which shows where the payment stands now.
async fn back_to_the_payment(state: web::Data<PagesState>, id: web::Path<String>) -> HttpResponse {
    match payhub_actors::ids::is_payment_id(&id) {
        true => see_other(&format!("/pay/{id}")),
        false => render::not_found(state.templates),
    }
}

// No `Debug`: it holds what the customer typed (a password, a code, a CSRF token).
#[derive(Default, Deserialize)]
#[serde(default)]
struct LoginForm {
    csrf_token: String,
    identity: String,
    password: String,
    channel: String,
    terminal: String,
    receiver: String,
}

async fn login(
    req: HttpRequest,
    state: web::Data<PagesState>,
    id: web::Path<String>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    // Only a post from this payment's own page starts its actor: an actor waiting for the
    // customer lives until the payment expires, and each counts against `in_flight_max`.
    let csrf_cookie = req.cookie(CSRF_COOKIE);
    let csrf_cookie = csrf_cookie.as_ref().map(|c| c.value());
    let from_its_page = csrf_cookie.is_some_and(|c| csrf_valid(&state, &id, c, &form.csrf_token));
    let actor_use = if from_its_page {
        ActorUse::Start
    } else {
        ActorUse::IfRunning
    };
    let ctx = match Ctx::load(&req, &state, &id, actor_use).await {
        Ok(ctx) => ctx,
        Err(page) => return page,
    };
    // The check `csrf_ok` makes, made above (a token is only ever issued for a well-formed
    // cookie, which `Ctx::load` keeps).
    if !from_its_page {
        return ctx.stale_form();
    }
    // Awaiting its code: a sign-in posted again, which the actor answers (`SignedInAgain`).
    if !matches!(
        ctx.view.status,
        PaymentStatus::AwaitingCustomer | PaymentStatus::AwaitingCode
    ) {
        return see_other(&ctx.path(""));
    }
    let (identity, choice) = match parse_login(&form, state.allow_unregistered_receiver) {
        Ok(parsed) => parsed,
        Err(problem) => {
            return ctx.login_page(StatusCode::UNPROCESSABLE_ENTITY, Some(problem), &form);
        }
    };
    let msg = Login {
        identity,
        password: Secret::new(form.password.clone()),
        choice,
        session: ctx.browser_session(),
    };
    let reply = match ctx.actor().await {
        Ok(actor) => actor.send(msg).await,
        Err(e) => return ctx.payment_error(e),
    };
    match flatten(reply) {
        Ok(
            LoginReply::CodeSent { .. }
            | LoginReply::CodeNotDelivered { .. }
            | LoginReply::SignedInAgain,
        ) => ctx.to_the_code_page(),
        Ok(LoginReply::BadCredentials { attempts_left }) => {
            let text = format!(
                "The online ID or mobile number, or the password, is not right. \
                 {} left for this payment.",
                tries(attempts_left)
            );
            ctx.login_page(StatusCode::UNAUTHORIZED, Some(text), &form)
        }
        Ok(LoginReply::Locked { retry_after_s }) => {
            let text = format!(
                "Too many failed sign-ins for this identity. It is locked for now; \
                 please try again in {}.",
                minutes_text(retry_after_s)
            );
            ctx.login_page(StatusCode::TOO_MANY_REQUESTS, Some(text), &form)
        }
        Ok(LoginReply::Finished(_)) => see_other(&ctx.path("/result")),
        Err(Failure::Payment(e)) => ctx.payment_error(e),
        Err(Failure::Gone) => see_other(&ctx.path("")),
    }
}

async fn code_page(
    req: HttpRequest,
    state: web::Data<PagesState>,
    id: web::Path<String>,
) -> HttpResponse {
    let ctx = match Ctx::load(&req, &state, &id, ActorUse::IfRunning).await {
        Ok(ctx) => ctx,
        Err(page) => return page,
    };
    match ctx.view.status {
        PaymentStatus::AwaitingCode if ctx.has_session() => {
            ctx.code_page(StatusCode::OK, None, None).await
        }
        PaymentStatus::AwaitingCode if ctx.signed_in_here() => {
            ctx.login_page(StatusCode::OK, None, &LoginForm::default())
        }
        PaymentStatus::AwaitingCode => ctx.wrong_session(),
        PaymentStatus::AwaitingCustomer => see_other(&ctx.path("")),
        _ => see_other(&ctx.path("/result")),
    }
}

// No `Debug`: it holds what the customer typed (a password, a code, a CSRF token).
#[derive(Default, Deserialize)]
#[serde(default)]
struct CodeForm {
    csrf_token: String,
    code: String,
}

async fn submit_code(
    req: HttpRequest,
    state: web::Data<PagesState>,
    id: web::Path<String>,
    form: web::Form<CodeForm>,
) -> HttpResponse {
    let (ctx, session) = match Ctx::load_for_session_form(&req, &state, &id, &form.csrf_token).await
    {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let code: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.is_empty() || code.chars().count() > CODE_INPUT_MAX_CHARS {
        let problem = "Enter the code exactly as you received it.".to_string();
        return ctx
            .code_page(StatusCode::UNPROCESSABLE_ENTITY, Some(problem), None)
            .await;
    }
    let msg = SubmitCode {
        session: Secret::new(session),
        code: Secret::new(code),
    };
    let wait = std::time::Duration::from_millis(state.code_step_wait_ms);
    let reply = match ctx.actor().await {
        Ok(actor) => match tokio::time::timeout(wait, actor.send(msg)).await {
            Ok(reply) => reply,
            // The actor goes on with the debit; the result page says so and reloads itself.
            Err(_elapsed) => return see_other(&ctx.path("/result")),
        },
        Err(e) => return ctx.payment_error(e),
    };
    match flatten(reply) {
        Ok(CodeReply::Wrong { attempts_left }) => {
            let text = format!("That code is not right. {} left.", tries(attempts_left));
            ctx.reload_view()
                .await
                .code_page(StatusCode::UNPROCESSABLE_ENTITY, Some(text), None)
                .await
        }
        Ok(CodeReply::NoLiveCode) => {
            let text = "There is no code waiting for this payment. Choose where to send one.";
            ctx.reload_view()
                .await
                .code_page(StatusCode::CONFLICT, Some(text.into()), None)
                .await
        }
        Ok(CodeReply::Finished(_)) => see_other(&ctx.path("/result")),
        Err(Failure::Payment(e)) => ctx.payment_error(e),
        Err(Failure::Gone) => see_other(&ctx.path("/result")),
    }
}

// No `Debug`: it holds what the customer typed (a password, a code, a CSRF token).
#[derive(Default, Deserialize)]
#[serde(default)]
struct ResendForm {
    csrf_token: String,
    /// `sms` or `terminal:<id>`; empty for the same channel as before.
    route: String,
}

async fn resend(
    req: HttpRequest,
    state: web::Data<PagesState>,
    id: web::Path<String>,
    form: web::Form<ResendForm>,
) -> HttpResponse {
    let (ctx, session) = match Ctx::load_for_session_form(&req, &state, &id, &form.csrf_token).await
    {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let choice = match parse_route(&form.route) {
        Ok(choice) => choice,
        Err(problem) => {
            return ctx
                .code_page(StatusCode::UNPROCESSABLE_ENTITY, Some(problem), None)
                .await;
        }
    };
    let msg = Resend {
        session: Secret::new(session),
        choice,
    };
    let reply = match ctx.actor().await {
        Ok(actor) => actor.send(msg).await,
        Err(e) => return ctx.payment_error(e),
    };
    let (status, error, info) = match flatten(reply) {
        Ok(ResendReply::Sent { destination }) => (
            StatusCode::OK,
            None,
            Some(format!(
                "A new code was sent ({destination}). The earlier code no longer works."
            )),
        ),
        Ok(ResendReply::NotDelivered { reason }) => (StatusCode::OK, Some(reason), None),
        Ok(ResendReply::TooSoon { wait_s }) => (
            StatusCode::TOO_MANY_REQUESTS,
            Some(format!(
                "A new code can be sent in {wait_s} seconds. Codes can take a moment to arrive."
            )),
            None,
        ),
        Ok(ResendReply::Exhausted) => (
            StatusCode::TOO_MANY_REQUESTS,
            Some(exhausted_text(&ctx.view, ctx.state.clock.now())),
            None,
        ),
        Err(Failure::Payment(e)) => return ctx.payment_error(e),
        Err(Failure::Gone) => return see_other(&ctx.path("/result")),
    };
    ctx.reload_view().await.code_page(status, error, info).await
}

/// What a customer whose code has lapsed can do. A lapsed code is still taken (it ends the
/// payment, `code_expired`), so the page says so before the customer types it.
fn lapsed_text(none_left: bool) -> String {
    if none_left {
        "Your code has expired and no new one can be sent, so this payment can no longer be paid \
         here: you can go back to the merchant to pay again."
            .to_string()
    } else {
        "Your code has expired. Ask for a new one below: a code entered now would end this \
         payment unpaid."
            .to_string()
    }
}

/// Why no new code comes; with the code lapsed too, that the payment cannot be completed.
fn exhausted_text(view: &PaymentView, now: chrono::DateTime<chrono::Utc>) -> String {
    if code_lapsed(view, now) {
        lapsed_text(true)
    } else {
        "No more codes can be sent for this payment.".to_string()
    }
}

/// Whether the payment's code was sent and has lapsed (its hash and expiry go together).
fn code_lapsed(view: &PaymentView, now: chrono::DateTime<chrono::Utc>) -> bool {
    view.has_live_code && view.code_expires_at.is_some_and(|at| at <= now)
}

async fn result_page(
    req: HttpRequest,
    state: web::Data<PagesState>,
    id: web::Path<String>,
) -> HttpResponse {
    match Ctx::load(&req, &state, &id, ActorUse::IfRunning).await {
        Ok(ctx) => ctx.result_page(),
        Err(page) => page,
    }
}

// ---- input --------------------------------------------------------------------------------------

fn parse_login(form: &LoginForm, allow_receiver: bool) -> Result<(String, ChannelChoice), String> {
    let identity = OnlineId::parse(&form.identity)
        .map_err(|_| "Enter your online ID or registered mobile number (up to 64 characters).")?;
    let password_len = form.password.len();
    if password_len == 0 || password_len > PASSWORD_MAX_BYTES {
        return Err("Enter your password.".into());
    }
    let terminal = form.terminal.trim();
    if terminal.chars().count() > TERMINAL_ID_MAX_CHARS {
        return Err("The terminal name is too long.".into());
    }
    let choice = match form.channel.as_str() {
        "" | "sms" => {
            let receiver = match form.receiver.trim() {
                "" => None,
                _ if !allow_receiver => None,
                r => Some(Msisdn::parse(r).map_err(
                    |_| "Enter the other mobile number in international form: the country code and number, optionally after a '+'.",
                )?),
            };
            // `terminal` names which registered mobile gets the SMS, when there are several.
            ChannelChoice::Sms {
                receiver,
                mobile: (!terminal.is_empty()).then(|| terminal.to_string()),
            }
        }
        "terminal" => ChannelChoice::Terminal {
            terminal: (!terminal.is_empty()).then(|| terminal.to_string()),
        },
        _ => return Err("Choose SMS or your terminal for the code.".into()),
    };
    Ok((identity.as_str().to_string(), choice))
}

/// A route as the code page offers it (`RouteOption::value`): `sms`, `sms:<mobile terminal id>`
/// or `terminal:<id>`.
fn parse_route(route: &str) -> Result<Option<ChannelChoice>, String> {
    let id = |t: &str| {
        (!t.is_empty() && t.chars().count() <= TERMINAL_ID_MAX_CHARS).then(|| t.to_string())
    };
    let route = route.trim();
    if route.is_empty() {
        return Ok(None);
    }
    let choice = match route.split_once(':') {
        None if route == "sms" => Some(ChannelChoice::Sms {
            receiver: None,
            mobile: None,
        }),
        Some(("sms", t)) => id(t).map(|t| ChannelChoice::Sms {
            receiver: None,
            mobile: Some(t),
        }),
        Some(("terminal", t)) => id(t).map(|t| ChannelChoice::Terminal { terminal: Some(t) }),
        _ => None,
    };
    choice
        .map(Some)
        .ok_or_else(|| "Choose one of the offered ways to receive the code.".into())
}

// ---- per-request context ------------------------------------------------------------------------

/// One request's view of its payment, cookies and tokens.
struct Ctx {
    state: web::Data<PagesState>,
    view: PaymentView,
    /// The code page's routes, when the payment's actor knows them.
    routes: Option<Vec<RouteOption>>,
    secure: bool,
    /// The CSRF cookie's value; freshly drawn (and set on the response) when the browser had none.
    csrf_cookie: String,
    csrf_is_new: bool,
    session: Option<String>,
}

enum Failure {
    Payment(PaymentError),
    /// The payment's actor stopped (it just became final): the row tells the rest.
    Gone,
}

fn flatten<T>(reply: Result<Result<T, PaymentError>, MailboxError>) -> Result<T, Failure> {
    match reply {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Payment(e)),
        Err(_) => Err(Failure::Gone),
    }
}

impl Ctx {
    /// For a form that only the browser which passed the password step may post (code, resend):
    /// the page context and that browser's session token, or the page that refuses the post.
    async fn load_for_session_form(
        req: &HttpRequest,
        state: &web::Data<PagesState>,
        id: &str,
        csrf_token: &str,
    ) -> Result<(Ctx, String), HttpResponse> {
        let ctx = Ctx::load(req, state, id, ActorUse::IfRunning).await?;
        if !ctx.csrf_ok(csrf_token) {
            return Err(ctx.stale_form());
        }
        // Checked here as well as by the actor: the pages answered before it (a malformed code
        // or route) show the customer's routes, which only the signed-in browser may see.
        match ctx.session.clone() {
            Some(session) if ctx.has_session() => Ok((ctx, session)),
            _ => Err(ctx.wrong_session()),
        }
    }

    async fn load(
        req: &HttpRequest,
        state: &web::Data<PagesState>,
        id: &str,
        actor_use: ActorUse,
    ) -> Result<Ctx, HttpResponse> {
        let templates = state.templates;
        if !payhub_actors::ids::is_payment_id(id) {
            return Err(render::not_found(templates));
        }
        let (view, routes) = match current_view(state, id, actor_use).await {
            Ok(Some(view)) => view,
            Ok(None) => return Err(render::not_found(templates)),
            Err(e) => return Err(render::unavailable(templates, &e)),
        };
        let (csrf_cookie, csrf_is_new) = match req.cookie(CSRF_COOKIE) {
            Some(c)
                if c.value().len() == 32 && c.value().bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                (c.value().to_string(), false)
            }
            _ => (hex::encode(payhub_actors::ids::os_random::<16>()), true),
        };
        let session = req
            .cookie(SESSION_COOKIE)
            .map(|c| c.value().to_string())
            .filter(|v| v.len() <= 128);
        Ok(Ctx {
            state: state.clone(),
            view,
            routes,
            secure: req.app_config().secure(),
            csrf_cookie,
            csrf_is_new,
            session,
        })
    }

    async fn reload_view(mut self) -> Self {
        if let Ok(Some((view, routes))) =
            current_view(&self.state, &self.view.id, ActorUse::IfRunning).await
        {
            self.view = view;
            self.routes = routes;
        }
        self
    }

    fn path(&self, suffix: &str) -> String {
        format!("/pay/{}{suffix}", self.view.id)
    }

    fn has_session(&self) -> bool {
        self.session
            .as_deref()
            .is_some_and(|s| self.view.session_matches(&self.state.hash_key, s))
    }

    /// Whether this browser passed the password step (its session is the one its CSRF cookie
    /// gives), whether or not it holds the session cookie.
    fn signed_in_here(&self) -> bool {
        !self.csrf_is_new
            && self
                .view
                .session_matches(&self.state.hash_key, self.browser_session().expose())
    }

    fn csrf_token(&self) -> String {
        let input = format!("{}\0{}", self.view.id, self.csrf_cookie);
        hex::encode(self.state.hash_key.hash(
            payhub_actors::transaction::code::CSRF_PURPOSE,
            input.as_bytes(),
        ))
    }

    fn csrf_ok(&self, token: &str) -> bool {
        !self.csrf_is_new && csrf_valid(&self.state, &self.view.id, &self.csrf_cookie, token)
    }

    fn cookie<'c>(&self, name: &'c str, value: String, path: String) -> Cookie<'c> {
        Cookie::build(name, value)
            .path(path)
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure)
            .finish()
    }

    /// This browser's session token for this payment (from its CSRF cookie).
    fn browser_session(&self) -> Secret<String> {
        browser_session_token(&self.state.hash_key, &self.view.id, &self.csrf_cookie)
    }

    /// The code page, with this browser's session cookie: after its password step passed, and
    /// again when the same browser posts the sign-in again with the password (a double click, an
    /// answer lost on the way).
    fn to_the_code_page(&self) -> HttpResponse {
        let session = self.browser_session();
        let cookie = self.cookie(SESSION_COOKIE, session.expose().clone(), self.path(""));
        let mut response = see_other(&self.path("/code"));
        let _ = response.add_cookie(&cookie);
        response
    }

    /// Finishes a page: the CSRF cookie when it is new.
    fn finish(&self, mut response: HttpResponse) -> HttpResponse {
        if self.csrf_is_new {
            let mut cookie = self.cookie(CSRF_COOKIE, self.csrf_cookie.clone(), "/pay".into());
            // Sent on arrival from the merchant's site too, so that it is not replaced then (the
            // forms of other open pages, and the browser's session, hang on it). Other sites
            // still cannot post with it: Lax is sent on top-level GETs only, and a post needs
            // the token of this site's page as well.
            cookie.set_same_site(SameSite::Lax);
            let _ = response.add_cookie(&cookie);
        }
        response
    }

    async fn actor(&self) -> Result<Addr<TransactionActor>, PaymentError> {
        match self.state.registry.send(Lookup(self.view.id.clone())).await {
            Ok(found) => found,
            Err(_) => Err(PaymentError::Busy),
        }
    }

    fn page(&self) -> Page<'_> {
        Page::new(self.state.templates, &self.view)
    }

    /// The sign-in form; once the code is on its way (a sign-in again, by the browser that
    /// signed in), identity and password only.
    fn login_page(
        &self,
        status: StatusCode,
        error: Option<String>,
        form: &LoginForm,
    ) -> HttpResponse {
        let page = self.page().render(
            status,
            "pay/login.html",
            minijinja::context! {
                error,
                again => self.view.status == PaymentStatus::AwaitingCode,
                csrf_token => self.csrf_token(),
                identity => form.identity.trim(),
                channel => form.channel,
                terminal => form.terminal,
                receiver => form.receiver,
                allow_unregistered_receiver => self.state.allow_unregistered_receiver,
            },
        );
        self.finish(page)
    }

    async fn code_page(
        &self,
        status: StatusCode,
        error: Option<String>,
        info: Option<String>,
    ) -> HttpResponse {
        let routes = match (&self.routes, &self.view.customer_id) {
            (Some(routes), _) => routes.clone(),
            (None, Some(customer)) => read_routes(&self.state.pool, customer).await,
            (None, None) => Vec::new(),
        };
        let now = self.state.clock.now();
        // The code lasts no longer than the payment, and is never said to.
        let valid_for = self
            .view
            .code_expires_at
            .map(|at| at.min(self.view.expires_at))
            .filter(|at| *at > now)
            .map(|at| validity_text(u64::try_from((at - now).num_seconds()).unwrap_or(0)));
        let v = &self.view;
        // As the resend step decides: once a code went out, only `code_resends_max` more.
        let none_left = v.code_sends > 0
            && v.has_live_code
            && !resends_left(v.code_sends, self.state.code_resends_max);
        let info = match (&error, info) {
            (None, None) if code_lapsed(v, now) => Some(lapsed_text(none_left)),
            (_, info) => info,
        };
        let error = error.or_else(|| {
            (!self.view.has_live_code)
                .then(|| self.view.code_delivery_error.clone())
                .flatten()
        });
        let page = self.page().render(
            status,
            "pay/code.html",
            minijinja::context! {
                error,
                info,
                csrf_token => self.csrf_token(),
                has_live_code => self.view.has_live_code,
                valid_for,
                can_send => !none_left,
                routes,
            },
        );
        self.finish(page)
    }

    fn result_page(&self) -> HttpResponse {
        let v = &self.view;
        let (heading, tone, message) = render::outcome_text(v);
        let page = self.page().render(
            StatusCode::OK,
            "pay/result.html",
            minijinja::context! {
                heading,
                tone,
                message,
                approval_code => v.approval_code,
                return_url => v.status.is_final().then_some(v.return_url.as_str()),
                refresh_s => (v.status == PaymentStatus::Processing).then_some(IN_PROGRESS_REFRESH_S),
            },
        );
        self.finish(page)
    }

    fn message(&self, status: StatusCode, heading: &str, text: &str) -> HttpResponse {
        let page = self.page().render(
            status,
            "pay/message.html",
            minijinja::context! { heading, message => text },
        );
        self.finish(page)
    }

    /// A message page with one link onward: `(path under the payment, its text)`.
    fn message_with_link(
        &self,
        status: StatusCode,
        heading: &str,
        text: &str,
        (link, link_text): (&str, &str),
    ) -> HttpResponse {
        let page = self.page().render(
            status,
            "pay/message.html",
            minijinja::context! { heading, message => text, link => self.path(link), link_text },
        );
        self.finish(page)
    }

    /// The payment page of a payment waiting for its code, opened without its session cookie:
    /// in another browser, or on arrival from the merchant's site (a strict cookie is not sent
    /// then, but is on this page's link).
    fn waiting_for_the_code(&self) -> HttpResponse {
        self.message_with_link(
            StatusCode::OK,
            "Waiting for the code",
            "This payment waits for its authorization code. If you signed in in this browser, \
             continue to the code page; otherwise enter the code in the browser you signed in \
             with.",
            ("/code", "Continue to the code page"),
        )
    }

    fn stale_form(&self) -> HttpResponse {
        self.message_with_link(
            StatusCode::FORBIDDEN,
            "Please try again",
            "This form has expired or did not come from this page. Open the payment page again \
             and repeat the step.",
            ("", "Back to the payment"),
        )
    }

    fn wrong_session(&self) -> HttpResponse {
        self.message(
            StatusCode::FORBIDDEN,
            "Use the browser you signed in with",
            "The authorization code can only be entered in the browser that signed in for this \
             payment, on this payment's code page.",
        )
    }

    fn payment_error(&self, e: PaymentError) -> HttpResponse {
        match e {
            PaymentError::NotFound => render::not_found(self.state.templates),
            PaymentError::WrongSession => self.wrong_session(),
            PaymentError::WrongState(PaymentStatus::AwaitingCustomer) => see_other(&self.path("")),
            PaymentError::WrongState(PaymentStatus::AwaitingCode) => see_other(&self.path("/code")),
            PaymentError::WrongState(_) => see_other(&self.path("/result")),
            PaymentError::Busy => self.message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy right now",
                "The gateway is handling many payments. Please try again in a minute.",
            ),
            PaymentError::Storage(detail) => {
                tracing::error!(payment = %self.view.id, %detail, "payment step failed");
                render::unavailable(self.state.templates, &detail)
            }
        }
    }
}

/// Whether `token` is the CSRF token of payment `id` for the browser holding `csrf_cookie`.
fn csrf_valid(state: &PagesState, id: &str, csrf_cookie: &str, token: &str) -> bool {
    let Ok(bytes) = hex::decode(token.trim()) else {
        return false;
    };
    let input = format!("{id}\0{csrf_cookie}");
    state.hash_key.verify(
        payhub_actors::transaction::code::CSRF_PURPOSE,
        input.as_bytes(),
        &bytes,
    )
}

/// Where a page's view of its payment comes from.
#[derive(Debug, Clone, Copy)]
enum ActorUse {
    /// A step that needs the payment's actor anyway (the login): start it and ask it.
    Start,
    /// Ask the actor if it already runs; read the row otherwise.
    IfRunning,
}

/// The payment as its pages show it, with the code page's routes when its actor knows them: from
/// the actor when it runs (or `ActorUse::Start` starts it), read from the row otherwise.
async fn current_view(
    state: &PagesState,
    id: &str,
    actor_use: ActorUse,
) -> Result<Option<ViewWithRoutes>, String> {
    let registry = &state.registry;
    let actor = match actor_use {
        ActorUse::Start => registry
            .send(Lookup(id.to_owned()))
            .await
            .ok()
            .and_then(Result::ok),
        ActorUse::IfRunning => registry.send(Peek(id.to_owned())).await.ok().flatten(),
    };
    if let Some(actor) = actor
        && let Ok(admitted) = state.views_queued.clone().try_acquire_owned()
    {
        let wait = Duration::from_millis(ACTOR_VIEW_WAIT_MAX_MS);
        let asked = actor.send(ViewPayment {
            admitted: Some(admitted),
        });
        if let Ok(Ok(Some(seen))) = tokio::time::timeout(wait, asked).await {
            return Ok(Some(seen));
        }
    }
    Ok(read_view(&state.pool, id).await?.map(|view| (view, None)))
}

async fn read_view(pool: &Pool, id: &str) -> Result<Option<PaymentView>, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    load_view(&client, id).await.map_err(|e| e.to_string())
}

async fn read_routes(pool: &Pool, customer_id: &str) -> Vec<RouteOption> {
    let Ok(client) = pool.get().await else {
        return Vec::new();
    };
    route_options(&client, customer_id)
        .await
        .unwrap_or_default()
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .insert_header(("Cache-Control", "no-store"))
        .finish()
}

fn minutes_text(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds} seconds"),
        60..=119 => "1 minute".into(),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

/// How long a code can still be entered, rounded down: never more than it can.
fn validity_text(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds} seconds"),
        60..=119 => "1 minute".into(),
        s => format!("{} minutes", s / 60),
    }
}

/// "1 try", "2 tries".
fn tries(left: u32) -> String {
    format!("{left} {}", if left == 1 { "try" } else { "tries" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_forms_are_parsed_with_clear_problems() {
        let mut form = LoginForm {
            identity: "alice".into(),
            password: "pw".into(),
            channel: "terminal".into(),
            terminal: "Desk".into(),
            ..LoginForm::default()
        };
        let (id, choice) = parse_login(&form, false).unwrap();
        assert_eq!(id, "alice");
        assert_eq!(
            choice,
            ChannelChoice::Terminal {
                terminal: Some("Desk".into())
            }
        );
        form.channel = "pigeon".into();
        assert!(parse_login(&form, false).is_err());
        form.channel = "sms".into();
        form.receiver = "+86 138".into();
        // The receiver is ignored unless the policy allows it.
        assert!(parse_login(&form, false).is_ok());
        assert!(parse_login(&form, true).is_err());
        form.identity = String::new();
        assert!(parse_login(&form, false).is_err());
    }

    #[test]
    fn routes_parse() {
        assert_eq!(parse_route(""), Ok(None));
        assert_eq!(
            parse_route("sms"),
            Ok(Some(ChannelChoice::Sms {
                receiver: None,
                mobile: None
            }))
        );
        assert_eq!(
            parse_route("sms:trm_1"),
            Ok(Some(ChannelChoice::Sms {
                receiver: None,
                mobile: Some("trm_1".into())
            }))
        );
        assert_eq!(
            parse_route("terminal:trm_2"),
            Ok(Some(ChannelChoice::Terminal {
                terminal: Some("trm_2".into())
            }))
        );
        assert!(parse_route("terminal:").is_err());
        assert!(parse_route("sms:").is_err());
        assert!(parse_route("carrier pigeon").is_err());
    }
}
