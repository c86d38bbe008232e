//! `-o table|json|yaml` for the subcommands whose output is data.

use serde::Serialize;

/// How to print data.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Columns (or a tree) for people.
    #[default]
    Table,
    /// JSON, for programs.
    Json,
    /// YAML, for programs.
    Yaml,
}

/// Prints `data` as JSON or YAML, or `table` (already rendered) for `Format::Table`.
pub fn print<T: Serialize>(
    format: Format,
    data: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => table(),
        Format::Json => serde_json::to_string_pretty(data)? + "\n",
        Format::Yaml => serde_yaml::to_string(data)?,
    };
    print!("{text}");
    Ok(())
}
