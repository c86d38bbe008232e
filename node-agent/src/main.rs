use clap::Parser;

/// Starts the Bulkhead instances bound to this host, isolated, and reports what the kernel
/// enforces.
#[derive(Parser, Debug)]
#[command(name = "bulkhead-node-agent", version = bulkhead_node_agent::VERSION)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    println!("bulkhead-node-agent {}", bulkhead_node_agent::VERSION);
    Ok(())
}
