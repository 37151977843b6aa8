//! `engage topics`: manage the topics engage writes.

use std::path::PathBuf;

use crate::config::Config;

/// `engage topics`'s command line.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Create the output topics (scores, alerts, dead letters) and the state
    /// changelog that do not exist.
    Create {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs `engage topics create`: prints the topics created as JSON.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.action {
        Action::Create { config } => {
            let config = Config::load(config.as_deref())?;
            let created = crate::kafka::create_output_topics(&config).await?;
            println!("{}", serde_json::json!({ "created": created }));
            Ok(())
        }
    }
}
