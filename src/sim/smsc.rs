//! `payhub smsc-sim` (issue 5): an SMPP v3.4 SMSC simulator on rusmpp's codec. It accepts
//! `bind_transceiver` (refusing a wrong system id or password with ESME_RINVSYSID /
//! ESME_RINVPASWD), answers `submit_sm` with a message id, sends delivery receipts, answers
//! `enquire_link` and `unbind`, prints each message, and lists them at `GET /messages`.
//! Switches make it throttle, answer an error, stall or drop, from flags or at run time
//! (`POST /switches`). Tests start it in-process with [`start`].

mod http;
mod smpp;
pub mod state;

pub use state::{SimMessage, SimStats, Switches};

use crate::cli::output;
use anyhow::Context as _;
use state::SimState;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct SmscSimArgs {
    /// SMPP listen address; port 0 picks a free port (printed).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The system id ESMEs must bind with.
    #[arg(long)]
    pub system_id: String,
    /// The password ESMEs must bind with.
    #[arg(long)]
    pub password: String,
    /// HTTP listen address for `GET /messages` and `POST /switches`.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Answer ESME_RTHROTTLED (0x58) to the next N submit_sm.
    #[arg(long, default_value_t = 0)]
    pub throttle_next: u32,
    /// Answer ESME_RMSGQFUL (0x14) to the next N submit_sm.
    #[arg(long, default_value_t = 0)]
    pub queue_full_next: u32,
    /// Answer this command_status to every submit_sm (decimal or 0x-hex; 0 = off).
    #[arg(long, value_parser = parse_status, default_value = "0")]
    pub error_status: u32,
    /// Wait this long before answering each submit_sm, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Close the connection instead of answering the next N submit_sm.
    #[arg(long, default_value_t = 0)]
    pub drop_next: u32,
    /// Send no delivery receipts.
    #[arg(long)]
    pub no_receipts: bool,
    /// The stat: of delivery receipts (DELIVRD, UNDELIV, …).
    #[arg(long, default_value = "DELIVRD", value_parser = parse_stat)]
    pub receipt_stat: String,
    /// Wait this long before sending each receipt, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub receipt_delay_ms: u64,
    /// Send enquire_link to each bound ESME this often, in milliseconds (0 = never).
    #[arg(long, default_value_t = 0)]
    pub enquire_link_interval_ms: u64,
}

fn parse_status(value: &str) -> Result<u32, String> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => value.parse(),
    };
    parsed.map_err(|_| format!("`{value}` is not a command_status (decimal or 0x-hex)"))
}

fn parse_stat(value: &str) -> Result<String, String> {
    crate::channels::smpp::receipt::STATES
        .into_iter()
        .find(|s| *s == value)
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "`{value}` is not a receipt state; one of {}",
                crate::channels::smpp::receipt::STATES.join(", ")
            )
        })
}

impl SmscSimArgs {
    fn switches(&self) -> Switches {
        Switches {
            throttle_next: self.throttle_next,
            queue_full_next: self.queue_full_next,
            error_status: self.error_status,
            delay_ms: self.delay_ms,
            drop_next: self.drop_next,
            receipts: !self.no_receipts,
            receipt_stat: self.receipt_stat.clone(),
            receipt_delay_ms: self.receipt_delay_ms,
            enquire_link_interval_ms: self.enquire_link_interval_ms,
        }
    }
}

/// How to start a simulator in-process. `Debug` leaves out the password.
#[derive(Clone)]
pub struct SmscSimOptions {
    pub listen: SocketAddr,
    pub http: Option<SocketAddr>,
    pub system_id: String,
    pub password: String,
    pub switches: Switches,
    /// Print each accepted message on standard output.
    pub print: bool,
}

impl std::fmt::Debug for SmscSimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmscSimOptions")
            .field("listen", &self.listen)
            .field("http", &self.http)
            .field("system_id", &self.system_id)
            .field("switches", &self.switches)
            .field("print", &self.print)
            .finish_non_exhaustive()
    }
}

impl SmscSimOptions {
    /// Loopback, any free ports, HTTP on, receipts on, quiet.
    pub fn loopback(system_id: &str, password: &str) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listen: any,
            http: Some(any),
            system_id: system_id.into(),
            password: password.into(),
            switches: Switches::default(),
            print: false,
        }
    }
}

/// A running simulator: its addresses, what it received, and its switches.
pub struct SmscSim {
    smpp_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    state: Arc<SimState>,
    stop: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
    http: Option<actix_web::dev::ServerHandle>,
}

impl std::fmt::Debug for SmscSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmscSim")
            .field("smpp_addr", &self.smpp_addr)
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

/// Binds the SMPP listener (and the HTTP one when asked) and starts serving. Must run inside an
/// actix system (the HTTP side is actix-web).
pub async fn start(options: SmscSimOptions) -> anyhow::Result<SmscSim> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("smsc-sim: binding SMPP listener {}", options.listen))?;
    let smpp_addr = listener.local_addr()?;
    let state = Arc::new(SimState::new(
        options.system_id,
        options.password,
        options.switches,
        options.print,
    ));
    let (http_addr, http) = match options.http {
        Some(listen) => {
            let (addr, handle) = http::start(listen, state.clone())
                .with_context(|| format!("smsc-sim: binding HTTP listener {listen}"))?;
            (Some(addr), Some(handle))
        }
        None => (None, None),
    };
    let (stop, stop_rx) = watch::channel(false);
    let accepting = tokio::spawn(smpp::accept(listener, state.clone(), stop_rx));
    Ok(SmscSim {
        smpp_addr,
        http_addr,
        state,
        stop,
        accepting,
        http,
    })
}

impl SmscSim {
    pub fn smpp_addr(&self) -> SocketAddr {
        self.smpp_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<SimMessage> {
        self.state.messages()
    }

    /// The newest message accepted for `destination` that `wanted` accepts.
    pub fn newest_message_to(
        &self,
        destination: &str,
        wanted: impl Fn(&SimMessage) -> bool,
    ) -> Option<SimMessage> {
        self.state.newest_message_to(destination, wanted)
    }

    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    pub fn switches(&self) -> Switches {
        self.state.switches()
    }

    pub fn set_switches(&self, switches: Switches) {
        self.state.set_switches(switches);
    }

    /// Changes some switches, keeping the others.
    pub fn update_switches(&self, change: impl FnOnce(&mut Switches)) {
        let mut switches = self.state.switches();
        change(&mut switches);
        self.state.set_switches(switches);
    }

    /// Closes the listeners and every connection, as an SMSC going down would.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.accepting.await;
        if let Some(http) = self.http {
            http.stop(true).await;
        }
    }
}

/// `payhub smsc-sim`: serves until Ctrl-C.
pub async fn run(args: SmscSimArgs) -> anyhow::Result<()> {
    let options = SmscSimOptions {
        listen: args.listen,
        http: args.http,
        system_id: args.system_id.clone(),
        password: args.password.clone(),
        switches: args.switches(),
        print: true,
    };
    let sim = start(options).await?;
    let mut shutdown = crate::serve::ShutdownSignal::install();
    output::note(format!("smsc-sim: SMPP listening on {}", sim.smpp_addr()));
    if let Some(http) = sim.http_addr() {
        output::note(format!(
            "smsc-sim: HTTP listening on http://{http} (GET /messages, POST /switches)"
        ));
    }
    shutdown.wait().await;
    sim.stop().await;
    Ok(())
}
