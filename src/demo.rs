//! `payhub demo`: the whole system on one machine with no set-up (issue 7). PostgreSQL from
//! `DATABASE_URL` or a private cluster in the demo's own folder, migrations, two bank simulators,
//! the SMSC simulator, the terminal switch with one simulated dedicated terminal, the gateway on
//! TLS, a sample merchant and two sample customers; one payment end to end as a self-check; then
//! serving until Ctrl-C and a clean shutdown.

use anyhow::Context;
use payhub_actors::store::local_cluster::{ClusterOptions, LocalCluster};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its PostgreSQL cluster, certificates and configuration.
    #[arg(long, default_value = ".payhub-demo")]
    pub dir: PathBuf,
    /// Run the self-check payment, then stop instead of serving until Ctrl-C.
    #[arg(long)]
    pub check_only: bool,
}

/// The demo's database: the operator's own, or a private cluster stopped when the demo ends.
pub struct DemoDatabase {
    pub url: String,
    pub cluster: Option<LocalCluster>,
}

impl DemoDatabase {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(Self { url, cluster: None });
        }
        let data = absolute(&dir.join("pg"))?;
        let cluster = LocalCluster::start(&data, ClusterOptions::DEMO)
            .with_context(|| format!("starting PostgreSQL in {}", data.display()))?;
        Ok(Self {
            url: cluster.url("postgres"),
            cluster: Some(cluster),
        })
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current folder")?
        .join(path))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the demo folder {}", args.dir.display()))?;
    let db = DemoDatabase::open(&args.dir)?;
    let pool = payhub_actors::store::pool(&db.url, 4)?;
    payhub_actors::store::migrate(&pool)
        .await
        .context("applying migrations")?;
    println!("PostgreSQL ready at {}", db.url);
    anyhow::bail!("the rest of `payhub demo` is not built yet (issue 7)")
}
