//! `engage run`: the processor, with its ops endpoint and the customer
//! API, until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::engine::store::Store;
use crate::pipeline::Status;

/// `engage run`'s command line.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (see engage.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs the pipeline, the ops endpoint and the customer API until a
/// signal or a fatal error.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    let shutdown = crate::shutdown::on_signals().context("installing signal handlers")?;
    let store = Arc::new(Store::new());
    let status = Arc::new(Status::new());
    let http = crate::http::start(&config, &status, &shutdown).await?;
    let api = crate::api::start(&config, store.clone(), status.clone(), shutdown.clone())
        .context("starting the customer API ([api])")?;
    if let Some(api) = &api {
        // The input consumer publishes it to the other instances.
        config.api.advertised_url = api.advertised_url().to_string();
    }
    let result = crate::pipeline::run(config, store, status, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    if let Some(api) = api {
        api.stopped().await;
    }
    result?;
    Ok(())
}
