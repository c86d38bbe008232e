use clap::Parser;

/// Schedules Bulkhead instances onto hosts and replaces them safely.
#[derive(Parser, Debug)]
#[command(name = "bulkhead-controller", version = bulkhead_controller::VERSION)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    println!("bulkhead-controller {}", bulkhead_controller::VERSION);
    Ok(())
}
