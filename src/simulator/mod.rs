//! Placeholder until the simulator lands.

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub listen: String,
}

pub async fn serve(_args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("the simulator is not built yet")
}
