//! `payhub serve` and `payhub migrate`: start-up and wiring.

use crate::config::Config;
use std::path::Path;

pub async fn migrate(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let pool = payhub_actors::store::pool(&config.database.url, 1)?;
    let applied = payhub_actors::store::migrate(&pool).await?;
    println!("{{\"applied\":{applied}}}");
    Ok(())
}

pub async fn run(config: &Path) -> anyhow::Result<()> {
    let _config = Config::load(config)?;
    anyhow::bail!("`payhub serve` is not built yet (issue 2)")
}
